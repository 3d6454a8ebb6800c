"""SEG beside ControlNet in a running real host, through its API: A1111 + sd-webui-controlnet, or Forge's
built-in ControlNet. Prints one line per check with its numbers; --json writes everything.

    <host venv>/bin/python tools/real_hosts/controlnet/check_controlnet.py --url http://127.0.0.1:7880 \
        --model seg_test_sd15 [--forge] [--probe] [--size 128] [--steps 4] [--json out.json]

Checks (random weights, preprocessor "None", the control image sent in the request, nothing downloaded):
- no blur: ControlNet only vs ControlNet + SEG (sigma 0.001, scale 10, all layers) must agree within one grey
  level (the SEG rows compute exactly what the cond rows do when they get the same control), for each control
  mode, batch 2, CFG 1, two units, hires fix;
- ControlNet's effect: ControlNet on vs off differ; SEG's effect: SEG (sigma 2, scale 3) vs ControlNet only differ;
- --probe: the harness probe (tools/real_hosts/*/probe) lists UNet calls: one call per sampling step.
--forge adds what Forge's API needs (hires: hr_additional_modules; infotext-free requests).
"""
import argparse
import base64
import io
import json
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: E402  (the self-check's API client and pixel comparison)

SEG = common.SEG_API_NAME
MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")


def control_image(size, seed):
    """A few bright rectangles on black (like an edge / segmentation map), as base64 PNG."""
    rng = np.random.default_rng(seed)
    image = np.zeros((size, size, 3), np.uint8)
    for _ in range(4):
        y, x = rng.integers(0, size * 3 // 4, 2)
        image[y:y + size // 4, x:x + size // 6] = rng.integers(60, 255, 3)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


class Runner:
    def __init__(self, args):
        self.args = args
        self.api = common.Api(args.url, timeout=3600)
        self.records = []
        self.failures = 0

    def unit(self, mode="Balanced", seed=5, weight=1.0):
        image = control_image(self.args.size, seed)
        return {"enabled": True, "module": "None" if self.args.forge else "none", "model": self.args.model,
                "weight": weight, "image": image, "control_mode": mode, "resize_mode": "Just Resize",
                "processor_res": self.args.size, "pixel_perfect": False, "guidance_start": 0.0, "guidance_end": 1.0}

    def generate(self, units=(), seg=None, **overrides):
        body = {"prompt": "a house by a lake", "negative_prompt": "blurry", "seed": 1234, "steps": self.args.steps,
                "width": self.args.size, "height": self.args.size, "cfg_scale": 5.0, "sampler_name": "Euler",
                "batch_size": 1, "send_images": True, "save_images": False, "alwayson_scripts": {}}
        body.update(overrides)
        if body.get("enable_hr") and self.args.forge:
            body.setdefault("hr_additional_modules", ["Use same choices"])
        if units:
            body["alwayson_scripts"]["controlnet"] = {"args": list(units)}
        body["alwayson_scripts"][SEG] = {"args": [dict({"enabled": True}, **seg) if seg else {"enabled": False}]}
        if self.args.probe:
            common.probe_reset(self.api)
        reply = self.api.post("/sdapi/v1/txt2img", body)
        if reply.status != 200:
            raise RuntimeError(f"HTTP {reply.status}: {reply.message(400)}")
        images = common.images(reply)[:body["batch_size"]]
        info = json.loads(reply.json.get("info") or "{}")
        calls = common.probe_calls(self.api) if self.args.probe else None
        return images, info, calls

    def check(self, name, ok, **numbers):
        self.records.append(dict(check=name, ok=bool(ok), **numbers))
        self.failures += not ok
        print(f"{'PASS' if ok else 'FAIL'}  {name}  " + "  ".join(f"{k}={v}" for k, v in numbers.items()), flush=True)


NO_BLUR = {"scale": 10, "sigma": "0.001", "layers": "all"}
BLUR = {"scale": 3, "sigma": "2", "layers": "all"}


def run(args):
    r = Runner(args)

    def same_within_one(name, units, **kw):
        only, _, _ = r.generate(units, **kw)
        seg, info, calls = r.generate(units, seg=NO_BLUR, **kw)
        diff = max(common.max_abs(a, b) for a, b in zip(seg, only))
        extra = {}
        if calls is not None:
            extra["unet_calls"] = len(calls)
        r.check(f"no-blur SEG = ControlNet only ({name})", diff <= 1, max_grey_diff=diff,
                seg_in_infotext="SEG scale" in json.dumps(info), **extra)
        return only

    wanted = set(args.checks.split(","))
    if "balanced" in wanted or "effects" in wanted:
        base = same_within_one("Balanced", [r.unit()])
    if "effects" in wanted:
        plain, _, _ = r.generate(())
        vs_plain = common.compare(base[0], plain[0])
        r.check("ControlNet changes the image", common.max_abs(base[0], plain[0]) > 8,
                max_grey_diff=common.max_abs(base[0], plain[0]), mean_abs=round(vs_plain["mean_abs"], 2))
        blurred, info, calls = r.generate([r.unit()], seg=BLUR)
        vs_base = common.compare(blurred[0], base[0])
        r.check("SEG (sigma 2, scale 3) changes the ControlNet image", common.max_abs(blurred[0], base[0]) > 8,
                max_grey_diff=common.max_abs(blurred[0], base[0]), mean_abs=round(vs_base["mean_abs"], 2),
                unet_calls=None if calls is None else len(calls), steps=args.steps)
    if "modes" in wanted:
        for mode in MODES[1:]:
            same_within_one(mode, [r.unit(mode)])
    if "batch" in wanted:
        same_within_one("batch 2", [r.unit()], batch_size=2)
    if "cfg1" in wanted:
        same_within_one("CFG 1", [r.unit()], cfg_scale=1.0)
    if "units" in wanted:
        same_within_one("two units, ControlNet is more important + My prompt", [r.unit(MODES[2]), r.unit(MODES[1], seed=9)])
    if "hires" in wanted:
        same_within_one("hires fix", [r.unit()], enable_hr=True, hr_scale=1.5, hr_second_pass_steps=2,
                        denoising_strength=0.5, hr_upscaler="Latent")
    return r


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:7880")
    parser.add_argument("--model", default="seg_test_sd15", help="the ControlNet model's name in the host")
    parser.add_argument("--forge", action="store_true")
    parser.add_argument("--probe", action="store_true")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--checks", default="balanced,effects,modes,batch,cfg1,units,hires",
                        help="comma-separated subset of: balanced, effects, modes, batch, cfg1, units, hires")
    parser.add_argument("--json")
    args = parser.parse_args()
    r = run(args)
    print(f"{len(r.records) - r.failures}/{len(r.records)} checks passed")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r.records, f, indent=2)
    sys.exit(1 if r.failures else 0)


if __name__ == "__main__":
    main()
