"""SEG on a transformer model (Flux, Chroma, SD3) in a running Forge-style host (Forge, Forge Neo) started with the
harness's probe and --tiny-dit, with a tiny random checkpoint (tools/real_hosts/make_dit_checkpoints.py): one model
call per sampler step with the SEG rows in it, images changed by SEG (blur, identity, skip) and bit-identical without
it, infotext round-trips, a non-square and an odd latent size, hires fix, img2img, batch 2, CFG 1 and CFG > 1,
refusals (HTTP 422). Prints one line per case and a summary; --json writes the full record.

    python3 tools/real_hosts/harness.py check dit --host forge [-- --family flux|chroma|sd3
        [--checkpoint NAME] [--only a,b] [--json out.json]]

Each case: name, endpoint, request changes, what SEG should do (None: off; "on"; "refused"; "roundtrip": the
request is only {"infotext": <the infotext of another case>, "styles": []} and must give that case's image bit for
bit; HOST_500: the same request, which the host itself answers with HTTP 500, with or without SEG), the case whose
image it is compared with, and the model calls expected per step (Chroma's T5 has no fixed
length: a negative prompt whose token count does not divide into the prompt's runs as a separate call in Forge,
with or without SEG). The API client, image decoding and comparison and the probe's records are the harness's
shared ones (common.py). Standard library only (numpy speeds the pixel statistics when present).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: E402
import hosts as H  # noqa: E402

SEG = common.SEG_API_NAME
CHECKPOINTS = {"flux": "seg-random-flux-dev.safetensors", "chroma": "seg-random-chroma.safetensors",
               "sd3": "seg-random-sd3.safetensors"}
A1111_CHECKPOINTS = {"sd3": "seg-random-sd3-a1111.safetensors"}  # SD3 Medium's layout: A1111 1.10.1 has no QK-norm


def seg(**fields):
    return {SEG: {"args": [dict({"enabled": True}, **fields)]}}



FAMILIES = {
    # negative prompt, block lists the model has, specs it lacks, odd latent size supported by the host
    "flux": dict(negative="blurry", blocks=["j0-2, s1", "single", "all"], bad=["d0", "j99", "m0"], odd=True),
    # T5 without padding: the prompt is 9 + 1 tokens; 'blurry, dark' 4 + 1 (repeated to 10 by Forge, one call),
    # 'blurry' 2 + 1 (lcm 30 > 4 x 3: Forge runs cond and uncond as two calls). Forge Neo pads Chroma's T5 by one
    # token (diffusion_engine/chroma.py min_padding=1): 11 and 6 (lcm 66 > 4 x 6: two calls), so on Neo the
    # negative prompt is NEO_CHROMA_NEGATIVE (9 + 2, as long as the prompt: one call); 'blurry' stays two calls (11, 4).
    "chroma": dict(negative="blurry, dark", blocks=["j0-2, s1", "single", "all"], bad=["d0", "j99", "m0"], odd=True),
    # SD3 has joint blocks only; its MMDiTX does not pad an odd latent (it fails without SEG too)
    "sd3": dict(negative="blurry", blocks=["j0-2", "all"], bad=["d0", "j99", "s0"], odd=False),
}


NEO_CHROMA_NEGATIVE = "blurry, dark, low quality, noisy"

# A replay Forge itself refuses (HTTP 500 with this message), SEG or not: the expected answer, not a failure.
HOST_500 = "host 500"
HOST_500_MESSAGE = "bad sampler name: Use same sampler"


def cases_for(family, host="forge", cfgpp=False):
    """The cases for one family on one host (A1111: SD3 only, with T5 off). cfgpp: the host has Forge Neo's
    "Euler CFG++" sampler (its own post-CFG function, sent with the sampler's model options)."""
    f = FAMILIES[family]
    hires = dict({"enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Latent", "hr_second_pass_steps": 2,
                  "denoising_strength": 0.6})
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
        # Forge's API, and A1111 1.10.1's (seen in the real host with SD3), takes the infotext's defaults 'Use same
        # sampler' / 'Use same scheduler' (what an infotext without 'Hires sampler' / 'Hires schedule type' means) as
        # names: HTTP 500 'bad sampler name: Use same sampler', and in Forge, with the sampler named, an all-black
        # image (without SEG too; modules/txt2img.py maps them to None for the UI only). A field set in the request
        # wins over the infotext, so the second pair names sampler and scheduler. The first pair checks that host
        # behaviour (HOST_500): answered 500 with that message, without SEG as with it.
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
    # T5 on (the hosts' option sd3_enable_t5, off by default: T5 is then zeros, not run); not in A1111, whose T5 is
    # full size by its own config and whose T5 tokenizer is the harness's stand-in (a1111/hf_offline.py)
    if family == "sd3" and host != "a1111":
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


def request_for(name, endpoint, changes, expect, base, results, host):
    """The request body of one case, or (None, why) when a case it builds on is missing."""
    if expect in ("roundtrip", HOST_500):
        source_name, extra = (changes, {}) if isinstance(changes, str) else changes
        if source_name not in results:
            return None, f"needs {source_name!r}"
        body = dict({"infotext": results[source_name]["infotext"], "send_images": True, "save_images": False}, **extra)
    else:
        body = dict(base, **changes)
    if endpoint == "img2img":
        if "plain" not in results:
            return None, "needs 'plain'"
        body = dict(body, init_images=[results["plain"]["b64"][0]], denoising_strength=0.5)
    return H.request(host, body), None


def run_case(api, probe, case, base, results, host):
    """One case: (record, printed line); a passing image case's images go into `results` under its name."""
    name, endpoint, changes, expect, reference, per_step_expected = case
    body, why = request_for(name, endpoint, changes, expect, base, results, host)
    if body is None:
        return None, f"skip {name}: {why}"
    if probe:
        common.probe_reset(api)
    reply = api.post(f"/sdapi/v1/{endpoint}", body)
    calls = (common.probe_calls(api) or []) if probe else []
    groups = common.steps_of(calls)
    entry = {"case": name, "status": reply.status, "seconds": round(reply.seconds, 1), "expect": expect,
             "steps": [[{"rows": c["rows"], "seg": c["seg_rows"], "labels": c["labels"], "latent": list(c["latent"])}
                        for c in g] for g in groups]}
    problems = []
    if expect == HOST_500:
        detail = reply.message()
        entry["answer"] = detail
        if reply.status != 500 or HOST_500_MESSAGE not in detail:
            problems.append(f"HTTP {reply.status}, expected the host's own 500 '{HOST_500_MESSAGE}': {detail[:300]}")
        # the first pass runs; the host fails when it sets up the hires pass's sampler
        line = (f"HTTP {reply.status} (the host's own refusal, as without SEG) after {len(calls)} model calls: "
                f"{detail[:120]}")
    elif expect == "refused":
        entry["answer"] = reply.message()
        if reply.status != 422:
            problems.append(f"HTTP {reply.status}, not 422")
        if calls:
            problems.append(f"{len(calls)} model calls")
        alive = api.get("/sdapi/v1/options").status
        if alive != 200:
            problems.append(f"server answers {alive} after the refusal")
        line = f"HTTP {reply.status}: {entry['answer'][:200]}"
    elif reply.status != 200:
        entry["answer"] = reply.message()
        problems.append(f"HTTP {reply.status}: {entry['answer'][:2000]}")
        line = ""
    else:
        entry["infotext"] = common.infotext(reply)
        results[name] = {"b64": reply.json["images"], "px": common.images(reply), "infotext": entry["infotext"],
                         "steps": entry["steps"]}
        problems, line = judge(name, expect, reference, per_step_expected, groups, probe, entry, results,
                               body.get("batch_size", 1))
    entry["problems"] = problems
    return entry, (f"{'FAIL' if problems else 'ok  '} {name:22s} {entry['seconds']:7.1f}s  {line}"
                   + (f"  <- {'; '.join(problems)}" if problems else ""))


def count_seg_steps(name, expect, reference, groups, entry, results, images):
    """The steps whose model call carries SEG rows. Forge's probe marks them; A1111's counts rows only, so there a
    step carries them when it has one row per image more than the same step of the reference without SEG (a
    round-trip: as many as its original, when its calls are the original's)."""
    if any(c["labels"] is not None for g in groups for c in g):
        return sum(1 for g in groups if any(c["seg_rows"] for c in g))
    ref = results.get(reference) if reference != name else None
    if ref is None:
        return 0
    if expect == "roundtrip":
        return ref["seg_steps"] if entry["steps"] == ref["steps"] else 0
    return sum(1 for now, then in zip(entry["steps"], ref["steps"])
               if sum(c["rows"] for c in now) - sum(c["rows"] for c in then) == images)


def judge(name, expect, reference, per_step_expected, groups, probe, entry, results, images):
    """The problems of an answered image case: model calls per step, SEG rows, infotext, pixels vs its reference."""
    problems = []
    has_seg = "SEG scale" in entry["infotext"]
    per_step = sorted({len(g) for g in groups})
    seg_steps = count_seg_steps(name, expect, reference, groups, entry, results, images)
    results[name]["seg_steps"] = seg_steps
    entry["calls_per_step"] = per_step
    if probe and per_step != [per_step_expected]:
        problems.append(f"model calls per step {per_step}, expected {per_step_expected}")
    on = expect == "on" or (expect == "roundtrip" and "SEG scale" in results.get(reference, {}).get("infotext", ""))
    if on:
        if not has_seg:
            problems.append("no SEG in the infotext")
        if probe and seg_steps != len(groups):
            problems.append(f"{seg_steps} of {len(groups)} steps carry SEG rows")
    else:
        if has_seg:
            problems.append("SEG in the infotext")
        if probe and seg_steps:
            problems.append(f"{seg_steps} steps carry SEG rows")
    rows = ", ".join(f"{c['rows']}r" + (f"(seg {c['seg_rows'][0]}:{c['seg_rows'][1]})" if c["seg_rows"] else "")
                     + f"{c['labels']}" for c in (groups[0] if groups else []))
    line = (f"{len(groups)} steps, calls/step {per_step}, step 1: {rows}, latents "
            f"{sorted({tuple(c['latent']) for g in groups for c in g})}")
    if reference and reference in results and reference != name:
        ref, now = results[reference], results[name]
        if len(ref["px"]) != len(now["px"]):
            problems.append(f"{len(now['px'])} images, {reference} had {len(ref['px'])}")
        stats = [common.compare(a, b) for a, b in zip(ref["px"], now["px"])]
        entry["changed_vs"] = [reference, stats]
        if expect == "on" and any(s["identical"] for s in stats):
            problems.append(f"an image identical to {reference}")
        if expect in (None, "roundtrip") and not all(s["identical"] for s in stats):
            problems.append(f"differs from {reference}: {[common.describe_difference(s) for s in stats]}")
        if expect == "roundtrip" and entry["steps"] != ref["steps"]:
            problems.append("model calls differ from the original's")
        worst = max(stats, key=lambda s: (s["mean_abs"] is None, s["mean_abs"] or 0))
        line += f", vs {reference}: {common.describe_difference(worst)}"
    return problems, line


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:7870")
    ap.add_argument("--host", default="forge", choices=sorted(H.HOSTS), help="whose request quirks to use")
    ap.add_argument("--family", choices=list(FAMILIES), required=True)
    ap.add_argument("--checkpoint", help="default: the family's file from make_dit_checkpoints.py")
    ap.add_argument("--pid", type=int, help="the server's process: its peak resident memory is recorded")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--only", help="comma separated case names (and the cases they compare with)")
    ap.add_argument("--json")
    ap.add_argument("--negative", help="the negative prompt of every case but 'uneven' (default: the family's; "
                                       f"Forge Neo + Chroma: {NEO_CHROMA_NEGATIVE!r}, see FAMILIES)")
    args = ap.parse_args(argv)
    api, host = common.Api(args.url, timeout=3600), H.host(args.host)
    if args.family not in ("sd3",) and host.name == "a1111":
        raise SystemExit(f"--family {args.family}: A1111 1.10.1 runs SD3 only among these")

    checkpoint = args.checkpoint or (A1111_CHECKPOINTS if host.name == "a1111" else CHECKPOINTS)[args.family]
    reply = api.post("/sdapi/v1/options", dict(host.checkpoint_fields, sd_model_checkpoint=checkpoint))
    if reply.status != 200:
        raise SystemExit(f"selecting the checkpoint: HTTP {reply.status}: {reply.message()}")
    negative = args.negative or (NEO_CHROMA_NEGATIVE if (host.name, args.family) == ("forge-neo", "chroma")
                                 else FAMILIES[args.family]["negative"])
    base = {"prompt": "a lighthouse on a cliff", "negative_prompt": negative, "seed": 1234,
            "steps": args.steps, "sampler_name": "Euler", "scheduler": "Simple", "cfg_scale": 3, "width": 128,
            "height": 192, "batch_size": 1, "n_iter": 1, "send_images": True, "save_images": False}
    samplers = api.get("/sdapi/v1/samplers").json or []
    cfgpp = any(isinstance(x, dict) and x.get("name") == "Euler CFG++" for x in samplers)
    cases = cases_for(args.family, host.name, cfgpp)  # the host's own hires and infotext fields come from its description
    if args.only:
        wanted = {name.strip() for name in args.only.split(",")}
        keep = set(wanted) | {"plain"}  # img2img starts from it
        for name, _, changes, _, reference, _ in cases:
            if name in wanted:
                source = changes if isinstance(changes, str) else changes[0] if isinstance(changes, tuple) else None
                keep.update(x for x in (reference, source) if x)
        cases = [case for case in cases if case[0] in keep]

    probe = common.probe_reset(api)
    if not probe:
        print("no probe loaded (start the host with --probe): model calls are not checked, only pixels and infotext")
    results, record = {}, []
    for case in cases:
        entry, line = run_case(api, probe, case, base, results, host)
        print(line, flush=True)
        if entry is not None:
            record.append(entry)

    # the three perturbations differ from each other on the same seed
    for a, b in (("mid", "mid identity"), ("mid", "mid skip"), ("mid identity", "mid skip"), ("mid", "sigma 2")):
        if a in results and b in results:
            stats = common.compare(results[a]["px"][0], results[b]["px"][0])
            ok = not stats["identical"]
            print(f"{'ok  ' if ok else 'FAIL'} {a} vs {b}: {common.describe_difference(stats)}")
            record.append({"case": f"{a} vs {b}", **stats, "problems": [] if ok else ["same"]})
    if args.pid:
        peak = common.peak_rss_mb(args.pid)
        print(f"server peak RSS (VmHWM): {peak} MiB")
        record.append({"case": "peak rss MiB", "value": peak, "problems": []})
    failures = sum(bool(r["problems"]) for r in record)
    print(f"{len(record) - failures} passed, {failures} failed")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1, default=str)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
