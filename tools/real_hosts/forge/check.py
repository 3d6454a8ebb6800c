"""Drive a running Forge / reForge test install (start.sh --probe) through its API and check what SEG does
in the real host: one UNet call per step with the SEG rows in it, images changed by SEG and bit-identical
without it, refusals. Prints one line per case and a summary; --json writes the full record.

    <host venv>/bin/python tools/real_hosts/forge/check.py --url http://127.0.0.1:7870 \
        --checkpoint sd15-random.safetensors --family sd15 [--forge] [--pid PID] [--json out.json]

Needs numpy and Pillow (the host's venv has both). --family picks block lists the model has (SD1.5 has
one transformer per block, SDXL up to ten). --forge adds what Forge's API requires (hires:
hr_additional_modules). --pid: the server's PID, for its peak memory (VmHWM).
"""
import argparse
import base64
import io
import json
import sys
import time
import urllib.error
import urllib.request

import numpy as np
from PIL import Image

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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:7870")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--family", choices=["sd15", "sdxl"], required=True)
    ap.add_argument("--forge", action="store_true")
    ap.add_argument("--pid", type=int)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--only", help="comma separated case names")
    ap.add_argument("--refiner", help="also run the refiner switch (at 0.5) with this checkpoint, last")
    ap.add_argument("--json")
    args = ap.parse_args()
    url = args.url.rstrip("/")

    status, _ = call(url, "/sdapi/v1/options", {"sd_model_checkpoint": args.checkpoint})
    assert status == 200, status
    base = {"prompt": "a lighthouse on a cliff", "negative_prompt": "blurry", "seed": 1234, "steps": args.steps,
            "sampler_name": "Euler", "scheduler": "Automatic", "cfg_scale": 5, "width": 128, "height": 192,
            "batch_size": 1, "n_iter": 1, "send_images": True, "save_images": False}
    hires = {"enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Latent", "hr_second_pass_steps": 2,
             "denoising_strength": 0.6}
    if args.forge:
        hires["hr_additional_modules"] = ["Use same choices"]
    blocks = ["m0.2-5", "d2.1"] if args.family == "sdxl" else ["d2, m0", "u0.0"]
    bad_blocks = "m0.2-5" if args.family == "sd15" else "m0.12"

    cases = [  # name, request changes, what SEG should do: None (off), "on", "refused"
        ("plain", {}, None),
        ("disabled", {"alwayson_scripts": {SEG: {"args": [False]}}}, None),
        ("mid", {"alwayson_scripts": seg(layers="mid")}, "on"),
        ("all", {"alwayson_scripts": seg(layers="all")}, "on"),
        *[(f"blocks {b}", {"alwayson_scripts": seg(layers=b)}, "on") for b in blocks],
        ("sigma 2", {"alwayson_scripts": seg(layers="mid", sigma=2)}, "on"),
        ("batch 2 plain", {"batch_size": 2}, None),
        ("batch 2", {"batch_size": 2, "alwayson_scripts": seg()}, "on"),
        ("cfg 1 plain", {"cfg_scale": 1}, None),
        ("cfg 1", {"cfg_scale": 1, "alwayson_scripts": seg()}, "on"),
        ("hires plain", dict(hires), None),
        ("hires", dict(hires, alwayson_scripts=seg()), "on"),
        ("img2img plain", {}, None),
        ("img2img", {"alwayson_scripts": seg()}, "on"),
        ("bad sigma", {"alwayson_scripts": seg(sigma=-1)}, "refused"),
        (f"bad layers {bad_blocks}", {"alwayson_scripts": seg(layers=bad_blocks)}, "refused"),
        ("plain again", {}, None),
    ]
    if args.refiner:  # last: the generation after a refiner run reloads the base model
        switch = {"refiner_checkpoint": args.refiner, "refiner_switch_at": 0.5}
        cases += [("refiner plain", dict(switch), None),
                  ("refiner", dict(switch, alwayson_scripts=seg(layers="mid")), "on"),
                  # SDXL's refiner has 4 middle transformers: SEG ends at the switch (half the steps)
                  ("refiner m0.2-5", dict(switch, alwayson_scripts=seg(layers="m0.2-5")), "until switch")]
    if args.only:
        wanted = {name.strip() for name in args.only.split(",")}
        cases = [case for case in cases if case[0] in wanted or case[0].split(" ")[0] in wanted]

    have_probe = call(url, "/seg-probe/calls")[0] == 200
    images, record, failures = {}, [], 0
    for name, change, expect in cases:
        body = dict(base, **change)
        endpoint = "/sdapi/v1/txt2img"
        if name.startswith("img2img"):
            if "plain" not in images:
                print(f"{name}: skipped (needs the 'plain' image)")
                continue
            endpoint = "/sdapi/v1/img2img"
            body = dict(body, init_images=[images["plain"][1]], denoising_strength=0.5)
        if have_probe:
            call(url, "/seg-probe/clear", {})
        started = time.time()
        status, answer = call(url, endpoint, body)
        seconds = time.time() - started
        calls = call(url, "/seg-probe/calls")[1]["calls"] if have_probe else []
        groups = steps_of(calls)
        entry = {"case": name, "status": status, "seconds": round(seconds, 1), "expect": expect,
                 "steps": [[{"rows": c["rows"], "seg": c["seg_rows"], "labels": c["cond_or_uncond"],
                             "latent": c["latent"]} for c in g] for g in groups]}
        problems = []
        if expect == "refused":
            detail = answer if isinstance(answer, str) else json.dumps(answer)
            entry["answer"] = detail
            if status == 200:
                problems.append("not refused")
            # the server must still answer
            alive, _ = call(url, "/sdapi/v1/options")
            if alive != 200:
                problems.append(f"server answers {alive} after the refusal")
            line = f"HTTP {status}: {detail[:160]}"
        elif status != 200:
            problems.append(f"HTTP {status}: {str(answer)[:300]}")
            line = ""
        else:
            b64 = answer["images"][0]
            info = json.loads(answer["info"])
            images[name] = (pixels(b64), b64)
            entry["infotext"] = info.get("infotexts", [""])[0]
            has_seg = "SEG scale" in entry["infotext"]
            seg_calls = [c for g in groups for c in g if c["seg_rows"]]
            per_step = sorted({len(g) for g in groups})
            entry["calls_per_step"] = per_step
            if have_probe and per_step != [1]:
                problems.append(f"UNet calls per step: {per_step}")
            if expect in ("on", "until switch"):
                if not has_seg:
                    problems.append("no SEG in the infotext")
                want = len(groups) if expect == "on" else len(groups) // 2
                if have_probe and len(seg_calls) != want:
                    problems.append(f"{len(seg_calls)} of {len(groups)} steps carry SEG rows, expected {want}")
                if name.startswith("refiner"):
                    said = "on" if expect == "on" else "off"
                    if f"SEG refiner: {said}" not in entry["infotext"]:
                        problems.append(f"infotext lacks 'SEG refiner: {said}'")
                reference = {"img2img": "img2img plain", "batch 2": "batch 2 plain", "cfg 1": "cfg 1 plain",
                             "hires": "hires plain", "refiner": "refiner plain",
                             "refiner m0.2-5": "refiner plain"}.get(name, "plain")
            else:
                if has_seg:
                    problems.append("SEG in the infotext")
                if seg_calls:
                    problems.append(f"{len(seg_calls)} calls carry SEG rows")
                reference = "plain" if name in ("disabled", "plain again") else None
            if reference and reference in images and reference != name:
                a, b = images[reference][0], images[name][0]
                changed = float(np.mean(np.any(a != b, axis=-1))) if a.shape == b.shape else 1.0
                mean_abs = float(np.mean(np.abs(a.astype(int) - b.astype(int)))) if a.shape == b.shape else None
                entry["changed_vs"] = [reference, round(changed, 4), mean_abs]
                if expect in ("on", "until switch") and changed == 0:
                    problems.append(f"image identical to {reference}")
                if expect is None and changed != 0:
                    problems.append(f"image differs from {reference} in {changed:.2%} of pixels")
            rows = ", ".join(
                f"{c['rows']}r" + (f"(seg {c['seg_rows'][0]}:{c['seg_rows'][1]})" if c["seg_rows"] else "")
                for c in (groups[0] if groups else []))
            line = (f"{len(groups)} steps, calls/step {per_step}, step 1: {rows}, latents "
                    f"{sorted({tuple(c['latent']) for c in calls})}"
                    + (f", vs {entry['changed_vs'][0]}: {entry['changed_vs'][1]:.2%} px changed, mean |d| {entry['changed_vs'][2]:.2f}" if "changed_vs" in entry else ""))
        entry["problems"] = problems
        failures += bool(problems)
        record.append(entry)
        print(f"{'FAIL' if problems else 'ok  '} {name:18s} {seconds:7.1f}s  {line}" + (f"  <- {'; '.join(problems)}" if problems else ""))
        sys.stdout.flush()

    if args.pid:
        print(f"server peak RSS (VmHWM): {peak_rss_mib(args.pid)} MiB")
    print(f"{len(record) - failures} passed, {failures} failed")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
