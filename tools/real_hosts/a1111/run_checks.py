"""Drive a running A1111 test install (built with --probe) through its API and print what SEG did.

    <a1111>/venv/bin/python tools/real_hosts/a1111/run_checks.py --url http://127.0.0.1:7860 \
        [--family sd15|sdxl] [--only NAME,...] [--json out.json]

Each case runs the same request without and with SEG (same seed) and reports: the fraction of pixels
that differ, the UNet calls the probe recorded per denoiser step with their rows, and the SEG keys of
the infotext. A case fails when SEG changes nothing, when an active step takes more than one UNet call,
or when the SEG rows are missing from it (rows with SEG = rows without + cond rows), except in the refiner's
steps when the layer spec does not fit the refiner: there SEG must end at the switch (no SEG rows) and the
infotext must say "SEG refiner: off".
Needs numpy and Pillow (the host's venv has both).
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

TITLE = "smoothed energy guidance (seg)"


def call(url, path, payload=None, timeout=3600):
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url + path, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def images(resp):
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(b.split(",", 1)[-1]))).convert("RGB"))
            for b in resp["images"]]


def run(url, endpoint, payload, seg):
    body = dict(payload)
    if seg is not None:
        body["alwayson_scripts"] = {TITLE: {"args": [dict(seg, enabled=True)]}}
    call(url, "/seg-probe/reset", {})
    t = time.time()
    status, resp = call(url, f"/sdapi/v1/{endpoint}", body)
    took = time.time() - t
    if status != 200:
        return {"status": status, "error": resp}
    calls = call(url, "/seg-probe/calls")[1]["calls"]
    info = json.loads(resp["info"])
    return {"status": 200, "images": images(resp), "calls": calls, "seconds": round(took, 1),
            "infotext": info["infotexts"][0]}


def per_step(calls):
    """[(step, [rows of each call], checkpoint)] in order; the step number restarts with each pass."""
    out = []
    for step, rows, h, w, ckpt, *_ in calls:
        if out and out[-1][0] == step and out[-1][2] == ckpt:
            out[-1][1].append(rows)
        else:
            out.append((step, [rows], ckpt))
    return out


def case(url, name, endpoint, payload, seg, n_cond, refiner_rows=None):
    """refiner_rows: the SEG rows expected in the refiner's steps (default n_cond; 0 when the spec does not fit
    the refiner, where SEG ends at the switch)."""
    base = run(url, endpoint, payload, None)
    with_seg = run(url, endpoint, payload, seg)
    rec = {"case": name, "seg": seg}
    if base["status"] != 200 or with_seg["status"] != 200:
        rec.update(ok=False, error=[base.get("error"), with_seg.get("error")])
        return rec
    diffs = [np.abs(a.astype(int) - b.astype(int)).max(-1) for a, b in zip(base["images"], with_seg["images"])]
    frac = [float((d > 0).mean()) for d in diffs]
    frac8 = [float((d > 8).mean()) for d in diffs]
    steps0, steps1 = per_step(base["calls"]), per_step(with_seg["calls"])
    one_call = all(len(r) == 1 for _, r, _ in steps1)
    extra = [sum(r1) - sum(r0) for (_, r0, _), (_, r1, _) in zip(steps0, steps1)]
    refiner = payload.get("refiner_checkpoint")
    expected = [refiner_rows if refiner_rows is not None and ckpt == refiner else n_cond for _, _, ckpt in steps1]
    seg_keys = {k.strip(): v for k, v in (kv.split(":", 1) for kv in with_seg["infotext"].split(", ")
                                          if kv.startswith("SEG") and ":" in kv)}
    rec.update(
        pixels_changed=frac, pixels_changed_gt8=frac8, seconds=[base["seconds"], with_seg["seconds"]],
        rows_per_step_without=[r for _, r, _ in steps0], rows_per_step_with=[r for _, r, _ in steps1],
        checkpoints=sorted({c for _, _, c in steps1}, key=str), extra_rows_per_step=extra,
        one_unet_call_per_step=one_call, infotext_seg=seg_keys, infotext=with_seg["infotext"],
        expected_extra_rows=expected,
        ok=bool(min(frac) > 0 and one_call and extra and extra == expected and len(steps0) == len(steps1)
                and (refiner_rows != 0 or seg_keys.get("SEG refiner", "").strip() == "off")),
    )
    return rec


def cases(family):
    size = {"width": 128, "height": 128}
    common = {"prompt": "a photograph of a cat", "negative_prompt": "", "seed": 1, "steps": 4,
              "sampler_name": "Euler", "cfg_scale": 5}
    t2i = dict(common, **size)
    grey = base64.b64encode(_png(np.full((128, 128, 3), 127, np.uint8))).decode()
    i2i = dict(common, **size, init_images=[grey], denoising_strength=0.75)
    out = [
        ("mid", "txt2img", t2i, {"layers": "mid"}, 1),
        ("all", "txt2img", t2i, {"layers": "all"}, 1),
        ("128x192", "txt2img", dict(t2i, width=128, height=192), {"layers": "mid"}, 1),
        ("batch 2", "txt2img", dict(t2i, batch_size=2), {"layers": "mid"}, 2),
        ("CFG 1", "txt2img", dict(t2i, cfg_scale=1), {"layers": "mid"}, 1),
        ("hires fix", "txt2img", dict(t2i, enable_hr=True, hr_scale=1.5, hr_upscaler="Latent",
                                      hr_second_pass_steps=2, denoising_strength=0.6), {"layers": "mid"}, 1),
        ("img2img", "img2img", i2i, {"layers": "mid"}, 1),
        ("sigma 2", "txt2img", t2i, {"layers": "mid", "sigma": 2}, 1),
    ]
    if family == "sdxl":
        out[0:0] = [("m0.2-5", "txt2img", t2i, {"layers": "m0.2-5"}, 1),
                    ("d2.1", "txt2img", t2i, {"layers": "d2.1"}, 1),
                    ("refiner", "txt2img", dict(t2i, refiner_checkpoint="seg-random-sdxl-refiner.safetensors",
                                                refiner_switch_at=0.5), {"layers": "mid"}, 1),
                    ("refiner m0.2-5", "txt2img", dict(t2i, refiner_checkpoint="seg-random-sdxl-refiner.safetensors",
                                                       refiner_switch_at=0.5), {"layers": "m0.2-5"}, 1, 0)]
    else:
        out[0:0] = [("d1.0", "txt2img", t2i, {"layers": "d1.0"}, 1)]
    return out


def _png(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:7860")
    ap.add_argument("--family", default="sd15", choices=["sd15", "sdxl"])
    ap.add_argument("--only", help="comma-separated case names")
    ap.add_argument("--json")
    args = ap.parse_args()
    results = []
    for name, endpoint, payload, seg, *rows in cases(args.family):
        if args.only and name not in args.only.split(","):
            continue
        rec = case(args.url, name, endpoint, payload, seg, *rows)
        results.append(rec)
        short = {k: rec.get(k) for k in ("pixels_changed", "pixels_changed_gt8", "rows_per_step_without",
                                         "rows_per_step_with", "expected_extra_rows", "checkpoints", "infotext_seg", "seconds",
                                         "error")}
        print(f"{'PASS' if rec['ok'] else 'FAIL'} {args.family} {name}: {json.dumps(short)}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    sys.exit(0 if all(r["ok"] for r in results) else 1)


if __name__ == "__main__":
    main()
