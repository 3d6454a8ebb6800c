"""SEG beside another extension in a real test install (issue 11), through the API and the harness's probe.

    python3 tools/real_hosts/check_neighbours.py --url http://127.0.0.1:7860 --log <server log> \
        --name "dynamic thresholding (cfg scale fix)" --args '[true, 7]' [--request '{"width": 256}'] \
        [--json out.json]

Four generations with one seed (Euler, 4 steps, CFG 5): plain, the extension only (``--args`` for its
``alwayson_scripts`` entry), SEG only, the extension + SEG. The outcome (README compatibility table):
- works: the extension's effect is kept (extension-only differs from plain), SEG changes the extension's
  image, its infotext has the SEG keys, and every sampler step with SEG is one UNet call holding one SEG row
  per image more than the extension-only run's call of that step;
- steps aside: the extension + SEG image is bit-identical to the extension-only one, its infotext has no SEG
  keys, and the server log gained exactly one "[SEG] skipped for this generation" line;
- anything else (an HTTP error, SEG on a part of the calls, extra calls) is a failure.
Standard library only (lib_seg.selfcheck's HTTP client and PNG decoder).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (SEG_API_NAME, Api, Log, changes, compare, decode_image, describe_difference,  # noqa: E402
                    probe_calls, probe_reset)

BASE = {"prompt": "a lighthouse on a rocky coast", "negative_prompt": "", "seed": 20240801, "steps": 4,
        "cfg_scale": 5, "width": 128, "height": 128, "sampler_name": "Euler", "send_images": True,
        "save_images": False}
SEG = {"enabled": True, "scale": 3, "sigma": "inf", "layers": "mid"}
SKIP_LINE = "[SEG] skipped for this generation"



def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:7860")
    ap.add_argument("--log", required=True, help="the server's console log (for SEG's notices)")
    ap.add_argument("--name", required=True, help="the extension's alwayson script name (lower case title)")
    ap.add_argument("--args", required=True, help="JSON list: its script args")
    ap.add_argument("--request", default="{}", help="JSON object: request fields for all four runs")
    ap.add_argument("--json")
    args = ap.parse_args()
    api = Api(args.url, timeout=3600)
    if not probe_reset(api):
        raise SystemExit("no probe: start the host with the harness's probe (harness.py start --probe)")
    log = Log(args.log)
    extension = {args.name: {"args": json.loads(args.args)}}
    base = dict(BASE, **json.loads(args.request))
    runs = {}
    for label, scripts in (("plain", {}), ("extension", extension), ("SEG", {SEG_API_NAME: {"args": [SEG]}}),
                           ("extension + SEG", dict(extension, **{SEG_API_NAME: {"args": [SEG]}}))):
        probe_reset(api)
        log.new()  # only this generation's lines
        reply = api.post("/sdapi/v1/txt2img", dict(base, alwayson_scripts=scripts))
        if reply.status != 200:
            print(f"FAIL {label}: HTTP {reply.status}: {reply.message()}")
            return 1
        calls = [c["rows"] for c in probe_calls(api)]
        info = json.loads(reply.json["info"])
        runs[label] = {"image": decode_image(reply.json["images"][0]), "infotext": info["infotexts"][0],
                       "rows": calls, "log": log.new(), "seconds": round(reply.seconds, 1)}
        print(f"  {label}: {reply.seconds:.0f} s, UNet call rows {calls}", flush=True)
    ext, both = runs["extension"], runs["extension + SEG"]
    effect = compare(runs["plain"]["image"], ext["image"])
    seg_vs_ext = compare(ext["image"], both["image"])
    skipped = both["log"].count(SKIP_LINE)
    n_images = base.get("batch_size", 1)
    record = {"name": args.name, "args": args.args, "request": base,
              "runs": {k: {kk: vv for kk, vv in v.items() if kk != "image"} for k, v in runs.items()},
              "extension_effect": effect, "seg_vs_extension": seg_vs_ext, "skip_notices": skipped}
    problems = []
    if not changes(effect):
        problems.append(f"the extension alone does nothing visible here ({describe_difference(effect)})")
    if seg_vs_ext["identical"] and "SEG scale:" not in both["infotext"] and skipped == 1:
        outcome = "steps aside"
        notice = next(line for line in both["log"].splitlines() if SKIP_LINE in line)
        detail = f"identical to the extension-only image, no SEG keys, one notice: {notice.strip()}"
    else:
        outcome = "works"
        if not changes(seg_vs_ext):
            problems.append(f"SEG vs extension only: {describe_difference(seg_vs_ext)}")
        if "SEG scale:" not in both["infotext"]:
            problems.append("no SEG keys in the infotext")
        if skipped:
            problems.append(f"{skipped} skip notice(s) although SEG changed the image")
        if len(both["rows"]) != len(ext["rows"]):
            problems.append(f"{len(both['rows'])} UNet calls with SEG, {len(ext['rows'])} without")
        elif any(b != e + n_images for b, e in zip(both["rows"], ext["rows"])):
            problems.append(f"rows per call {both['rows']} vs {ext['rows']} without SEG: not one SEG row per image "
                            "in every call")
        detail = (f"extension effect: {describe_difference(effect)}; SEG on top: {describe_difference(seg_vs_ext)}; "
                  f"rows per call {ext['rows']} -> {both['rows']}")
    record.update(outcome=outcome, problems=problems)
    print(f"{'FAIL' if problems else 'PASS'} {args.name}: {outcome}: {detail}" +
          (f"  <- {'; '.join(problems)}" if problems else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
