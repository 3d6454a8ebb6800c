"""SEG rows per UNet call in a running real host started with the harness's probe (any host: A1111, Forge,
reForge). Folds a1111/run_checks.py and forge/check.py into one check.

    python3 tools/real_hosts/harness.py check rows --host a1111 [-- --family sd15|sdxl] [--only mid,all]
        [--checkpoint NAME] [--refiner NAME] [--steps 4] [--json out.json]

Each "on" case runs the same request without and with SEG (same seed) and passes when SEG changes the image,
every sampler step is one UNet call, and every step's call holds exactly one SEG row per image more than
without SEG (none in the refiner's steps when the layer spec does not fit the refiner, whose infotext must then
say "SEG refiner: off"). "replay" cases are "on" cases whose image must also come back bit-identical from a request that
carries only its infotext. "off" cases (SEG disabled, plain again) must be bit-identical to the plain image and
carry no SEG keys; "refused" cases must get HTTP 422 and leave the server answering.
Printed per case: pixels changed (by > 1 and > 8 grey levels), rows per step without and with SEG, seconds.
Standard library only (numpy speeds the pixel statistics when present).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: E402
import hosts as H  # noqa: E402

SEG_ON = {"enabled": True, "scale": 3, "sigma": "inf", "layers": "mid"}
REFINER = "seg-random-sdxl-refiner.safetensors"


def cases(family, refiner=None):
    """(name, endpoint, request changes, SEG fields or None, expect: on | off | refused, refiner_rows)."""
    t2i, i2i = "txt2img", "img2img"
    hires = dict(enable_hr=True, hr_scale=1.5, hr_upscaler="Latent", hr_second_pass_steps=2, denoising_strength=0.6,
                 hr_sampler_name="Euler")
    blocks = ["m0.2-5", "d2.1"] if family == "sdxl" else ["d1.0", "d2, m0", "u0.0"]
    bad_layers = "m0.12" if family == "sdxl" else "m0.2-5"
    out = [
        ("disabled", t2i, {}, {"enabled": False}, "off", None),
        ("mid", t2i, {}, {}, "on", None),
        ("all", t2i, {}, {"layers": "all"}, "on", None),
        *[(b, t2i, {}, {"layers": b}, "on", None) for b in blocks],
        ("sigma 2", t2i, {}, {"sigma": 2}, "on", None),
        ("128x192", t2i, {"width": 128, "height": 192}, {}, "on", None),
        ("batch 2", t2i, {"batch_size": 2}, {}, "on", None),
        ("CFG 1", t2i, {"cfg_scale": 1}, {}, "on", None),
        ("hires fix", t2i, hires, {}, "on", None),
        ("img2img", i2i, {"denoising_strength": 0.75}, {}, "on", None),
        ("bad sigma", t2i, {}, {"sigma": -1}, "refused", None),
        (f"bad layers {bad_layers}", t2i, {}, {"layers": bad_layers}, "refused", None),
        # OSEG (issue 20): one extra row per image like SEG, and the image made again from its infotext alone
        ("orthogonal", t2i, {}, {"mode": "orthogonal", "sigma": 4}, "replay", None),
        ("orthogonal CFG 1", t2i, {"cfg_scale": 1}, {"mode": "orthogonal"}, "on", None),
        ("plain again", t2i, {}, None, "off", None),
    ]
    if refiner:  # last: the generation after a refiner run reloads the base model
        switch = {"refiner_checkpoint": refiner, "refiner_switch_at": 0.5}
        out += [("refiner", t2i, switch, {}, "on", None),
                ("refiner m0.2-5", t2i, switch, {"layers": "m0.2-5"}, "on", 0)]
    return out


class Rows:
    def __init__(self, api, host, base):
        self.api, self.host, self.base = api, host, base
        self.probe = common.probe_reset(api)
        self.plain = None

    def run(self, endpoint, changes, seg):
        body = dict(self.base, **changes)
        if seg is not None:
            body["alwayson_scripts"] = {common.SEG_API_NAME: {"args": [dict(SEG_ON, **seg)]}}
        if endpoint == "img2img":
            body["init_images"] = [self.plain_b64]
        if self.probe:
            common.probe_reset(self.api)
        reply = self.api.post(f"/sdapi/v1/{endpoint}", H.request(self.host, body))
        calls = common.probe_calls(self.api) if self.probe else None
        return reply, calls

    def case(self, name, endpoint, changes, seg, expect, refiner_rows):
        rec = {"case": name, "expect": expect}
        if expect == "refused":
            reply, _ = self.run(endpoint, changes, seg)
            alive = self.api.get("/sdapi/v1/samplers").status < 500
            rec.update(status=reply.status, message=reply.message(), alive=alive,
                       ok=reply.status == 422 and alive)
            return rec
        if expect == "off":
            reply, calls = self.run(endpoint, changes, seg)
            if reply.status != 200:
                return dict(rec, ok=False, error=f"HTTP {reply.status}: {reply.message()}")
            image, info = common.images(reply)[0], common.infotext(reply)
            same = common.compare(self.plain, image)["identical"]
            seg_calls = [c for c in calls or [] if c["seg_rows"]]
            rec.update(identical_to_plain=same, seg_in_infotext="SEG scale" in info, seconds=round(reply.seconds, 1),
                       ok=same and "SEG scale" not in info and not seg_calls)
            return rec
        base, calls0 = self.run(endpoint, changes, None)
        with_seg, calls1 = self.run(endpoint, changes, seg)
        if base.status != 200 or with_seg.status != 200:
            return dict(rec, ok=False, error=[f"HTTP {r.status}: {r.message()}" for r in (base, with_seg)])
        a, b = common.images(base), common.images(with_seg)
        info = common.infotext(with_seg)
        changed = [common.fraction_over(x, y, 1) for x, y in zip(a, b)]
        changed8 = [common.fraction_over(x, y, 8) for x, y in zip(a, b)]
        keys = {k.strip(): v.strip() for k, v in (kv.split(":", 1) for kv in info.split(", ")
                                                  if kv.startswith("SEG") and ":" in kv)}
        rec.update(pixels_changed=[round(x, 4) for x in changed], pixels_changed_gt8=[round(x, 4) for x in changed8],
                   seconds=[round(base.seconds, 1), round(with_seg.seconds, 1)], infotext_seg=keys)
        problems = [] if min(changed) > 0 else ["SEG changed nothing"]
        if "SEG scale" not in keys:
            problems.append("no SEG keys in the infotext")
        if calls1 is not None:
            s0, s1 = common.steps_of(calls0), common.steps_of(calls1)
            n_cond = changes.get("batch_size", self.base.get("batch_size", 1))
            switch = changes.get("refiner_checkpoint")
            expected = []
            for i, step in enumerate(s1):
                on_refiner = switch and (step[0]["checkpoint"] == switch if step[0]["checkpoint"] is not None
                                         else i >= len(s1) * changes.get("refiner_switch_at", 1))
                expected.append(refiner_rows if on_refiner and refiner_rows is not None else n_cond)
            extra = [sum(c["rows"] for c in y) - sum(c["rows"] for c in x) for x, y in zip(s0, s1)]
            rec.update(rows_per_step_without=[[c["rows"] for c in s] for s in s0],
                       rows_per_step_with=[[c["rows"] for c in s] for s in s1], expected_extra_rows=expected)
            if len(s0) != len(s1):
                problems.append(f"{len(s0)} steps without SEG, {len(s1)} with")
            if any(len(s) != 1 for s in s1):
                problems.append(f"UNet calls per step with SEG: {sorted({len(s) for s in s1})}")
            if extra != expected:
                problems.append(f"extra rows per step {extra}, expected {expected}")
        if refiner_rows == 0 and keys.get("SEG refiner") != "off":
            problems.append("infotext lacks 'SEG refiner: off'")
        if expect == "replay":  # the request is the infotext alone: the host pastes SEG's settings from it
            again, _ = self.run(endpoint, dict(changes, infotext=info), None)
            same = again.status == 200 and all(common.compare(x, y)["identical"]
                                               for x, y in zip(b, common.images(again)))
            rec.update(replayed_identical=same)
            if not same:
                problems.append(f"the infotext replay differs (HTTP {again.status})")
        rec.update(ok=not problems, problems=problems)
        return rec


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:7860")
    ap.add_argument("--family", default="sd15", choices=["sd15", "sdxl"])
    ap.add_argument("--forge", action="store_true", help="the request quirks of Forge / reForge")
    ap.add_argument("--checkpoint", help="select this checkpoint first")
    ap.add_argument("--refiner", help="also the refiner switch at 0.5 with this checkpoint (SDXL), last")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--only", help="comma-separated case names")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    api = common.Api(args.url, timeout=3600)
    host = H.HOSTS["forge" if args.forge else "a1111"]
    if args.checkpoint:
        api.post("/sdapi/v1/options", {"sd_model_checkpoint": args.checkpoint})
    base = {"prompt": "a photograph of a cat", "negative_prompt": "", "seed": 1, "steps": args.steps,
            "sampler_name": "Euler", "cfg_scale": 5, "width": 128, "height": 128, "batch_size": 1, "n_iter": 1,
            "send_images": True, "save_images": False}
    check = Rows(api, host, base)
    plain = api.post("/sdapi/v1/txt2img", H.request(host, dict(base)))
    if plain.status != 200:
        raise SystemExit(f"plain txt2img: HTTP {plain.status}: {plain.message()}")
    check.plain, check.plain_b64 = common.images(plain)[0], plain.json["images"][0]
    if not check.probe:
        print("no probe loaded (start the host with --probe): rows are not checked, only pixels and infotext")
    results = []
    for name, endpoint, changes, seg, expect, refiner_rows in cases(args.family, args.refiner):
        if args.only and name not in args.only.split(","):
            continue
        rec = check.case(name, endpoint, changes, seg, expect, refiner_rows)
        results.append(rec)
        shown = {k: v for k, v in rec.items() if k not in ("case", "ok", "expect")}
        print(f"{'PASS' if rec['ok'] else 'FAIL'} {args.family} {name}: {json.dumps(shown)}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print(f"{sum(r['ok'] for r in results)} passed, {sum(not r['ok'] for r in results)} failed")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
