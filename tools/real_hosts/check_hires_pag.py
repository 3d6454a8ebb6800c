"""Issue-13 checks in a real test install (A1111, Forge or reForge started with the harness's probe).

    python3 tools/real_hosts/check_hires_pag.py --url http://127.0.0.1:7860 [--checkpoint NAME] [--json out.json]

Hires override (SEG on, hires fix x1.5 Latent, 2 second-pass steps), three generations that differ only in
the override: "same", "own" (scale 6, sigma 1), "off". Passes when
- the first pass is untouched: every first-pass UNet call and the first second-pass call got bit-identical
  latents in all three (the probe's hash of row 0), so the override acts on the second pass only;
- the final images differ pairwise; the second pass has SEG rows with "same"/"own" and none with "off";
- "own" and "off" are reproduced bit-identically from their infotext (which names the override).
Perturbation mode (no hires): SEG blur (sigma inf and 2), identity (PAG), then blur again. Passes when
identity changes the image, differs from both blur images, is reproduced from its infotext ("SEG mode:
identity"), and the blur images after it are bit-identical to the ones before it.
Standard library only (uses lib_seg.selfcheck's HTTP client and PNG decoder).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (SEG_API_NAME, Api, changes, compare, decode_image, describe_difference, probe_calls,  # noqa: E402
                    probe_reset)

BASE = {"prompt": "a lighthouse on a rocky coast", "negative_prompt": "", "seed": 20240801, "steps": 4,
        "cfg_scale": 5, "width": 128, "height": 128, "sampler_name": "Euler", "send_images": True,
        "save_images": False}
# Forge's API hires pass needs hr_additional_modules; A1111 and reForge ignore it.
HIRES = dict(enable_hr=True, hr_scale=1.5, hr_upscaler="Latent", hr_second_pass_steps=2, denoising_strength=0.6,
             hr_additional_modules=["Use same choices"])
SEG = {"enabled": True, "scale": 3, "sigma": "inf", "layers": "mid"}


class Run:
    def __init__(self, images, infotext, calls):
        self.images, self.infotext, self.calls = images, infotext, calls


def calls_of(api):
    """[(latent h, w, rows, fingerprint)] of the UNet calls the probe saw (common.probe_calls, any host)."""
    return [(c["latent"], c["rows"], c["fingerprint"]) for c in probe_calls(api)]


class Checker:
    def __init__(self, url):
        self.api = Api(url, timeout=3600)
        self.record = {"url": url, "runs": {}, "checks": []}
        if not probe_reset(self.api):
            raise SystemExit("no probe: start the host with the harness's probe (harness.py start --probe)")

    def generate(self, label, payload):
        probe_reset(self.api)
        reply = self.api.post("/sdapi/v1/txt2img", payload)
        if reply.status != 200:
            raise SystemExit(f"{label}: HTTP {reply.status}: {reply.message()}")
        info = json.loads(reply.json["info"])
        run = Run([decode_image(b) for b in reply.json["images"]], info["infotexts"][0], calls_of(self.api))
        self.record["runs"][label] = {"infotext": run.infotext, "calls": run.calls,
                                      "seconds": round(reply.seconds, 1)}
        print(f"  {label}: {reply.seconds:.0f} s, {len(run.calls)} UNet calls", flush=True)
        return run

    def seg(self, label, hires_fix=False, **fields):
        body = dict(BASE, **(HIRES if hires_fix else {}))
        body["alwayson_scripts"] = {SEG_API_NAME: {"args": [dict(SEG, **fields)]}}
        return self.generate(label, body)

    def from_infotext(self, label, run):
        # hr_sampler_name: A1111 1.10 pastes a missing "Hires sampler" as "Use same sampler", which its API then
        # rejects; a field set in the request wins over the infotext.
        again = self.generate(label, {"infotext": run.infotext, "styles": [], "send_images": True,
                                      "save_images": False, "hr_sampler_name": BASE["sampler_name"]})
        return compare(run.images[0], again.images[0])

    def report(self, name, problems, detail):
        status = "FAIL" if problems else "PASS"
        self.record["checks"].append({"name": name, "status": status, "problems": problems, "detail": detail})
        print(f"{status} {name}: " + ("; ".join(problems) if problems else detail), flush=True)

    def hires(self):
        runs = {mode: self.seg(f"hires {mode}", hires_fix=True, hires=mode, hr_scale=6, hr_sigma=1)
                for mode in ("same", "own", "off")}
        first = runs["same"].calls[0][0]
        problems = []
        passes = {}
        for mode, run in runs.items():
            one = [c for c in run.calls if c[0] == first]
            two = [c for c in run.calls if c[0] != first]
            passes[mode] = (one, two)
            if not one or not two:
                problems.append(f"{mode}: expected calls at two latent sizes, got {sorted({c[0] for c in run.calls})}")
        if problems:
            return self.report("hires override", problems, "")
        if any(c[2] is None for run in runs.values() for c in run.calls):
            return self.report("hires override", ["the probe records no latent fingerprints (an older probe: "
                                                  "restart the server with this checkout's probe)"], "")
        ref_one, ref_two = passes["same"]
        for mode in ("own", "off"):
            one, two = passes[mode]
            if [c[2] for c in one] != [c[2] for c in ref_one]:
                problems.append(f"{mode}: first-pass latents differ from 'same'")
            if two[0][2] != ref_two[0][2]:
                problems.append(f"{mode}: the second pass starts from other latents than with 'same'")
        rows = {mode: sorted({c[1] for c in passes[mode][1]}) for mode in runs}
        first_rows = sorted({c[1] for c in ref_one})
        # one SEG row more than "off" in the second pass (A1111: cond, uncond, SEG; Forge/reForge run the hires
        # pass at their own "Hires CFG Scale", 1 unless set, so cond and SEG only)
        if len(rows["off"]) != 1 or rows["own"] != rows["same"] or rows["same"] != [rows["off"][0] + 1]:
            problems.append(f"rows per second-pass call {rows} (first pass {first_rows}); expected one SEG row "
                            "more with same/own than with off")
        for a, b in (("same", "own"), ("same", "off"), ("own", "off")):
            if compare(runs[a].images[0], runs[b].images[0])["identical"]:
                problems.append(f"final images of {a} and {b} are bit-identical")
        for mode, key in (("own", "SEG hires: own"), ("off", "SEG hires: off")):
            if key not in runs[mode].infotext:
                problems.append(f"{mode}: infotext lacks '{key}'")
            again = self.from_infotext(f"hires {mode} from infotext", runs[mode])
            if not again["identical"]:
                problems.append(f"{mode} from its infotext: {describe_difference(again)}")
        size = runs["same"].images[0].size
        detail = (f"{len(ref_one)} first-pass calls with identical latents in same/own/off, second pass rows "
                  f"{rows}, final {size[0]}x{size[1]} images pairwise different, own/off reproduced from infotext")
        self.report("hires override", problems, detail)

    def mode(self):
        plain = self.generate("no SEG", dict(BASE))
        blur = {s: self.seg(f"blur sigma {s}", sigma=s) for s in ("inf", "2")}
        pag = self.seg("identity", mode="identity")
        problems = []
        vs_plain = compare(plain.images[0], pag.images[0])
        if not changes(vs_plain):
            problems.append(f"identity vs no SEG: {describe_difference(vs_plain)}")
        for s, run in blur.items():
            if compare(run.images[0], pag.images[0])["identical"]:
                problems.append(f"identity is bit-identical to blur sigma {s}")
        if "SEG mode: identity" not in pag.infotext:
            problems.append("infotext lacks 'SEG mode: identity'")
        again = self.from_infotext("identity from infotext", pag)
        if not again["identical"]:
            problems.append(f"identity from its infotext: {describe_difference(again)}")
        for s, run in blur.items():
            after = self.seg(f"blur sigma {s} after identity", sigma=s)
            if not compare(run.images[0], after.images[0])["identical"]:
                problems.append(f"blur sigma {s} after identity differs from before")
            if "SEG mode" in run.infotext:
                problems.append(f"blur sigma {s}: infotext names a mode")
        rows = sorted({c[1] for c in pag.calls})
        if rows != [3]:
            problems.append(f"identity rows per call {rows}, expected [3]")
        self.report("perturbation mode", problems,
                    f"identity vs no SEG: {describe_difference(vs_plain)}; differs from blur inf and 2; reproduced "
                    "from its infotext; blur images after it bit-identical to before; one call of 3 rows per step")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:7860")
    ap.add_argument("--checkpoint", help="select this checkpoint first (POST /sdapi/v1/options)")
    ap.add_argument("--json", help="write the record here")
    args = ap.parse_args()
    checker = Checker(args.url)
    if args.checkpoint:
        checker.api.post("/sdapi/v1/options", {"sd_model_checkpoint": args.checkpoint})
    checker.hires()
    checker.mode()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(checker.record, f, indent=1)
    return 1 if any(c["status"] == "FAIL" for c in checker.record["checks"]) else 0


if __name__ == "__main__":
    sys.exit(main())
