"""Drive a running Forge test install (start.sh --probe --tiny-dit) with a tiny random Flux, Chroma or SD3 checkpoint
(tools/real_hosts/make_dit_checkpoints.py) through its API, and check what SEG does on a DiT in the real host: one
model call per sampler step with the SEG rows in it, images changed by SEG (blur, identity, skip) and bit-identical
without it, infotext round-trips, a non-square and an odd latent size, hires fix, img2img, batch 2, CFG 1 and CFG > 1,
refusals (HTTP 422). Prints one line per case and a summary; --json writes the full record.

    <forge>/venv/bin/python tools/real_hosts/forge/check_dit.py --url http://127.0.0.1:7870 \
        --checkpoint seg-random-flux-dev.safetensors --family flux [--pid PID] [--json out.json] [--only a,b]

Each case: name, endpoint, request changes, what SEG should do (None: off; "on"; "refused"; "roundtrip": the
request is only {"infotext": <the infotext of another case>, "styles": []} and must give that case's image bit for
bit; HOST_500: the same request, which Forge itself answers with HTTP 500, with or without SEG), the case whose
image it is compared with, and the model calls expected per step (Chroma's T5 has no fixed
length: a negative prompt whose token count does not divide into the prompt's runs as a separate call in Forge,
with or without SEG).
"""
import argparse
import base64
import io
import json
import os
import sys
import time
import urllib.error
import urllib.request

import numpy as np
from PIL import Image

# The request, pixel and memory helpers of the former forge/check.py (its SD1.5/SDXL cases moved to
# checks/rows.py); this script's probe records are the raw ones, grouped by sigma.
SEG = "smoothed energy guidance (seg)"


def call(url, path, body=None, timeout=3600):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"},
                                     method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        text = error.read()
        try:
            return error.code, json.loads(text)
        except ValueError:
            return error.code, text.decode(errors="replace")


def pixels(b64):
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def steps_of(calls):
    """Group consecutive UNet calls by sigma: one group per sampler step (Euler calls the model once per step)."""
    groups = []
    for entry in calls:
        if groups and groups[-1][0]["sigma"] == entry["sigma"] and groups[-1][0]["latent"] == entry["latent"]:
            groups[-1].append(entry)
        else:
            groups.append([entry])
    return groups


def peak_rss_mib(pid):
    """The largest VmHWM of pid and its descendants (the recorded PID may be a wrapper such as flock)."""
    peak, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/status") as f:
                peak = max([peak] + [int(line.split()[1]) for line in f if line.startswith("VmHWM")])
            with open(f"/proc/{current}/task/{current}/children") as f:
                todo += [int(child) for child in f.read().split()]
        except OSError:
            pass
    return peak // 1024


def seg(**fields):
    return {SEG: {"args": [dict({"enabled": True}, **fields)]}}



FAMILIES = {
    # negative prompt, block lists the model has, specs it lacks, odd latent size supported by the host
    "flux": dict(negative="blurry", blocks=["j0-2, s1", "single", "all"], bad=["d0", "j99", "m0"], odd=True),
    # T5 without padding: the prompt is 9 + 1 tokens; 'blurry, dark' 4 + 1 (repeated to 10 by Forge, one call),
    # 'blurry' 2 + 1 (lcm 30 > 4 x 3: Forge runs cond and uncond as two calls). Forge Neo pads Chroma's T5 by one
    # token (diffusion_engine/chroma.py min_padding=1): 11 and 6 (lcm 66 > 4 x 6: two calls), so on Neo run with
    # --negative NEO_CHROMA_NEGATIVE (9 + 2, as long as the prompt: one call); 'blurry' stays two calls (11, 4).
    "chroma": dict(negative="blurry, dark", blocks=["j0-2, s1", "single", "all"], bad=["d0", "j99", "m0"], odd=True),
    # SD3 has joint blocks only; its MMDiTX does not pad an odd latent (it fails without SEG too)
    "sd3": dict(negative="blurry", blocks=["j0-2", "all"], bad=["d0", "j99", "s0"], odd=False),
}


NEO_CHROMA_NEGATIVE = "blurry, dark, low quality, noisy"

# A replay Forge itself refuses (HTTP 500 with this message), SEG or not: the expected answer, not a failure.
HOST_500 = "host 500"
HOST_500_MESSAGE = "bad sampler name: Use same sampler"


def cases_for(family, hires_extra, cfgpp=False):
    """cfgpp: the host has Forge Neo's "Euler CFG++" sampler (its own post-CFG function, sent with the sampler's
    model options, forces the uncond pass at any CFG: 2 rows, 3 with SEG)."""
    f = FAMILIES[family]
    hires = dict({"enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Latent", "hr_second_pass_steps": 2,
                  "denoising_strength": 0.6}, **hires_extra)
    c = [  # name, endpoint, changes, expect, reference, calls per step
        ("plain", "txt2img", {}, None, None, 1),
        ("disabled", "txt2img", {"alwayson_scripts": {SEG: {"args": [False]}}}, None, "plain", 1),
        ("mid", "txt2img", {"alwayson_scripts": seg(layers="mid")}, "on", "plain", 1),
        ("mid identity", "txt2img", {"alwayson_scripts": seg(layers="mid", mode="identity")}, "on", "plain", 1),
        ("mid skip", "txt2img", {"alwayson_scripts": seg(layers="mid", mode="skip")}, "on", "plain", 1),
        ("sigma 2", "txt2img", {"alwayson_scripts": seg(layers="mid", sigma=2)}, "on", "plain", 1),
        *[(f"layers {b}", "txt2img", {"alwayson_scripts": seg(layers=b)}, "on", "plain", 1) for b in f["blocks"]],
        ("roundtrip mid", "txt2img", "mid", "roundtrip", "mid", 1),
        ("roundtrip identity", "txt2img", "mid identity", "roundtrip", "mid identity", 1),
        ("roundtrip skip", "txt2img", "mid skip", "roundtrip", "mid skip", 1),
        ("roundtrip sigma 2", "txt2img", "sigma 2", "roundtrip", "sigma 2", 1),
        (f"roundtrip {f['blocks'][0]}", "txt2img", f"layers {f['blocks'][0]}", "roundtrip", f"layers {f['blocks'][0]}", 1),
        ("cfg 1 plain", "txt2img", {"cfg_scale": 1}, None, None, 1),
        ("cfg 1", "txt2img", {"cfg_scale": 1, "alwayson_scripts": seg()}, "on", "cfg 1 plain", 1),
        ("cfg 1 identity", "txt2img", {"cfg_scale": 1, "alwayson_scripts": seg(mode="identity")}, "on", "cfg 1 plain", 1),
        ("roundtrip cfg 1", "txt2img", "cfg 1", "roundtrip", "cfg 1", 1),
        ("square plain", "txt2img", {"width": 128, "height": 128}, None, None, 1),
        ("square", "txt2img", {"width": 128, "height": 128, "alwayson_scripts": seg()}, "on", "square plain", 1),
        ("batch 2 plain", "txt2img", {"batch_size": 2}, None, None, 1),
        ("batch 2", "txt2img", {"batch_size": 2, "alwayson_scripts": seg()}, "on", "batch 2 plain", 1),
        ("hires plain", "txt2img", dict(hires), None, None, 1),
        ("hires", "txt2img", dict(hires, alwayson_scripts=seg()), "on", "hires plain", 1),
        # Forge's API takes the infotext's defaults 'Use same sampler' / 'Use same scheduler' (what an infotext without
        # 'Hires sampler' / 'Hires schedule type' means) as names: HTTP 500 'bad sampler name: Use same sampler', and
        # with the sampler named, an all-black image (without SEG too; modules/txt2img.py maps them to None for the UI
        # only). A field set in the request wins over the infotext, so the second pair names sampler and scheduler.
        # The first pair checks that host behaviour (HOST_500): answered 500 with that message, without SEG as with it.
        ("roundtrip hires plain", "txt2img", "hires plain", HOST_500, "hires plain", None),
        ("roundtrip hires", "txt2img", "hires", HOST_500, "hires", None),
        ("roundtrip hires plain +names", "txt2img", ("hires plain", {"hr_sampler_name": "Euler", "hr_scheduler": "Simple"}), "roundtrip",
         "hires plain", 1),
        ("roundtrip hires +names", "txt2img", ("hires", {"hr_sampler_name": "Euler", "hr_scheduler": "Simple"}), "roundtrip", "hires", 1),
        ("img2img plain", "img2img", {}, None, None, 1),
        ("img2img", "img2img", {"alwayson_scripts": seg()}, "on", "img2img plain", 1),
        ("img2img skip", "img2img", {"alwayson_scripts": seg(mode="skip", layers="all")}, "on", "img2img plain", 1),
        ("bad sigma", "txt2img", {"alwayson_scripts": seg(sigma=-1)}, "refused", None, None),
        *[(f"bad layers {b}", "txt2img", {"alwayson_scripts": seg(layers=b)}, "refused", None, None) for b in f["bad"]],
        ("plain again", "txt2img", {}, None, "plain", 1),
    ]
    if f["odd"]:  # 136 x 200 px: a 17 x 25 latent, padded by the host to a 9 x 13 patch grid
        c[-1:-1] = [("odd plain", "txt2img", {"width": 136, "height": 200}, None, None, 1),
                    ("odd", "txt2img", {"width": 136, "height": 200, "alwayson_scripts": seg(layers="all")}, "on",
                     "odd plain", 1),
                    ("odd identity", "txt2img", {"width": 136, "height": 200,
                                                  "alwayson_scripts": seg(layers="all", mode="identity")}, "on",
                     "odd plain", 1)]
    if family == "sd3":  # T5 on (Forge's option sd3_enable_t5, off by default: T5 is then zeros, not run)
        t5 = {"override_settings": {"sd3_enable_t5": True}, "override_settings_restore_afterwards": True}
        c[-1:-1] = [("t5 plain", "txt2img", dict(t5), None, None, 1),
                    ("t5", "txt2img", dict(t5, alwayson_scripts=seg()), "on", "t5 plain", 1)]
    if cfgpp:  # SEG's guidance must survive the sampler's own post-CFG list (lib_seg/hosts/forge.py _keep_post_cfg)
        c[-1:-1] = [("cfg++ plain", "txt2img", {"sampler_name": "Euler CFG++", "cfg_scale": 1.5}, None, None, 1),
                    ("cfg++", "txt2img", {"sampler_name": "Euler CFG++", "cfg_scale": 1.5, "alwayson_scripts": seg()},
                     "on", "cfg++ plain", 1),
                    ("cfg++ cfg 1 plain", "txt2img", {"sampler_name": "Euler CFG++", "cfg_scale": 1}, None, None, 1),
                    ("cfg++ cfg 1", "txt2img", {"sampler_name": "Euler CFG++", "cfg_scale": 1,
                                                "alwayson_scripts": seg()}, "on", "cfg++ cfg 1 plain", 1)]
    if family == "chroma":  # cond and uncond of unequal text length: two calls per step in Forge
        c[-1:-1] = [("uneven plain", "txt2img", {"negative_prompt": "blurry"}, None, None, 2),
                    ("uneven", "txt2img", {"negative_prompt": "blurry", "alwayson_scripts": seg()}, "on",
                     "uneven plain", 2)]
    return c


def diff(a, b):
    if a.shape != b.shape:
        return 1.0, None
    return float(np.mean(np.any(a != b, axis=-1))), float(np.mean(np.abs(a.astype(int) - b.astype(int))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:7870")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--family", choices=list(FAMILIES), required=True)
    ap.add_argument("--pid", type=int)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--only", help="comma separated case names (and the cases they compare with)")
    ap.add_argument("--json")
    ap.add_argument("--negative", help="the negative prompt of every case but 'uneven' (default: the family's; "
                                       f"Forge Neo + Chroma: {NEO_CHROMA_NEGATIVE!r}, see FAMILIES)")
    args = ap.parse_args()
    url = args.url.rstrip("/")

    status, _ = call(url, "/sdapi/v1/options", {"sd_model_checkpoint": args.checkpoint,
                                                 "forge_additional_modules": []})
    assert status == 200, status
    base = {"prompt": "a lighthouse on a cliff", "negative_prompt": args.negative or FAMILIES[args.family]["negative"], "seed": 1234,
            "steps": args.steps, "sampler_name": "Euler", "scheduler": "Simple", "cfg_scale": 3, "width": 128,
            "height": 192, "batch_size": 1, "n_iter": 1, "send_images": True, "save_images": False}
    samplers = call(url, "/sdapi/v1/samplers")[1] or []
    cfgpp = any(isinstance(x, dict) and x.get("name") == "Euler CFG++" for x in samplers)
    cases = cases_for(args.family, {"hr_additional_modules": ["Use same choices"]}, cfgpp=cfgpp)
    if args.only:
        wanted = {name.strip() for name in args.only.split(",")}
        keep = set(wanted) | {"plain"}  # img2img starts from it
        for name, _, changes, _, reference, _ in cases:
            if name in wanted:
                source = changes if isinstance(changes, str) else changes[0] if isinstance(changes, tuple) else None
                keep.update(x for x in (reference, source) if x)
        cases = [case for case in cases if case[0] in keep]

    have_probe = call(url, "/seg-probe/calls")[0] == 200
    results, record, failures = {}, [], 0
    for name, endpoint, changes, expect, reference, per_step_expected in cases:
        problems = []
        if expect in ("roundtrip", HOST_500):
            source_name, extra = (changes, {}) if isinstance(changes, str) else changes
            source = results.get(source_name)
            if source is None:
                print(f"skip {name}: needs {source_name!r}")
                continue
            body = dict({"infotext": source["infotext"], "styles": [], "send_images": True, "save_images": False},
                        **extra)
        else:
            body = dict(base, **changes)
        if endpoint == "img2img":
            if "plain" not in results:
                print(f"skip {name}: needs 'plain'")
                continue
            body = dict(body, init_images=[results["plain"]["b64"][0]], denoising_strength=0.5)
        if have_probe:
            call(url, "/seg-probe/clear", {})
        started = time.time()
        status, answer = call(url, f"/sdapi/v1/{endpoint}", body)
        seconds = time.time() - started
        calls = call(url, "/seg-probe/calls")[1]["calls"] if have_probe else []
        groups = steps_of(calls)
        entry = {"case": name, "status": status, "seconds": round(seconds, 1), "expect": expect,
                 "steps": [[{"rows": c["rows"], "seg": c["seg_rows"], "labels": c["cond_or_uncond"],
                             "latent": c["latent"]} for c in g] for g in groups]}
        if expect == HOST_500:
            detail = answer if isinstance(answer, str) else json.dumps(answer)
            entry["answer"] = detail
            if status != 500 or HOST_500_MESSAGE not in detail:
                problems.append(f"HTTP {status}, expected the host's own 500 '{HOST_500_MESSAGE}': {detail[:300]}")
            # the first pass runs; the host fails when it sets up the hires pass's sampler
            line = (f"HTTP {status} (the host's own refusal, as without SEG) after {len(calls)} model calls: "
                    f"{detail[:120]}")
        elif expect == "refused":
            detail = answer if isinstance(answer, str) else json.dumps(answer)
            entry["answer"] = detail
            if status != 422:
                problems.append(f"HTTP {status}, not 422")
            if calls:
                problems.append(f"{len(calls)} model calls")
            alive, _ = call(url, "/sdapi/v1/options")
            if alive != 200:
                problems.append(f"server answers {alive} after the refusal")
            line = f"HTTP {status}: {detail[:200]}"
        elif status != 200:
            problems.append(f"HTTP {status}: {str(answer)[:2000]}")
            entry["answer"] = answer
            line = ""
        else:
            info = json.loads(answer["info"])
            entry["infotext"] = info.get("infotexts", [""])[0]
            results[name] = {"b64": answer["images"], "px": [pixels(b) for b in answer["images"]],
                             "infotext": entry["infotext"], "steps": entry["steps"]}
            has_seg = "SEG scale" in entry["infotext"]
            per_step = sorted({len(g) for g in groups})
            seg_steps = sum(1 for g in groups if any(c["seg_rows"] for c in g))
            entry["calls_per_step"] = per_step
            if have_probe and per_step != [per_step_expected]:
                problems.append(f"model calls per step {per_step}, expected {per_step_expected}")
            on = expect == "on" or (expect == "roundtrip" and "SEG scale" in results.get(reference, {}).get("infotext", ""))
            if on:
                if not has_seg:
                    problems.append("no SEG in the infotext")
                if have_probe and seg_steps != len(groups):
                    problems.append(f"{seg_steps} of {len(groups)} steps carry SEG rows")
            else:
                if has_seg:
                    problems.append("SEG in the infotext")
                if have_probe and seg_steps:
                    problems.append(f"{seg_steps} steps carry SEG rows")
            if reference and reference in results and reference != name:
                ref = results[reference]
                if len(ref["px"]) != len(results[name]["px"]):
                    problems.append(f"{len(results[name]['px'])} images, {reference} had {len(ref['px'])}")
                changes_px = [diff(a, b) for a, b in zip(ref["px"], results[name]["px"])]
                entry["changed_vs"] = [reference, changes_px]
                if expect == "on" and any(c == 0 for c, _ in changes_px):
                    problems.append(f"an image identical to {reference}")
                if expect in (None, "roundtrip") and any(c != 0 for c, _ in changes_px):
                    problems.append(f"differs from {reference}: {changes_px}")
                if expect == "roundtrip" and entry["steps"] != ref["steps"]:
                    problems.append("model calls differ from the original's")
            rows = ", ".join(f"{c['rows']}r" + (f"(seg {c['seg_rows'][0]}:{c['seg_rows'][1]})" if c["seg_rows"] else "")
                             + f"{c['cond_or_uncond']}" for c in (groups[0] if groups else []))
            line = (f"{len(groups)} steps, calls/step {per_step}, step 1: {rows}, latents "
                    f"{sorted({tuple(c['latent']) for c in calls})}")
            if "changed_vs" in entry:
                worst = max(entry["changed_vs"][1], key=lambda cm: cm[0])
                line += f", vs {reference}: {worst[0]:.2%} px changed, mean |d| {worst[1] if worst[1] is None else round(worst[1], 2)}"
        entry["problems"] = problems
        failures += bool(problems)
        record.append(entry)
        print(f"{'FAIL' if problems else 'ok  '} {name:22s} {seconds:7.1f}s  {line}"
              + (f"  <- {'; '.join(problems)}" if problems else ""))
        sys.stdout.flush()

    # the three perturbations differ from each other on the same seed
    for a, b in (("mid", "mid identity"), ("mid", "mid skip"), ("mid identity", "mid skip"), ("mid", "sigma 2")):
        if a in results and b in results:
            changed, mean = diff(results[a]["px"][0], results[b]["px"][0])
            ok = changed > 0
            failures += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {a} vs {b}: {changed:.2%} px differ, mean |d| {mean:.2f}")
            record.append({"case": f"{a} vs {b}", "changed": changed, "mean": mean, "problems": [] if ok else ["same"]})
    if args.pid:
        peak = peak_rss_mib(args.pid)
        print(f"server peak RSS (VmHWM): {peak} MiB")
        record.append({"case": "peak rss MiB", "value": peak, "problems": []})
    print(f"{len(record) - failures} passed, {failures} failed")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
