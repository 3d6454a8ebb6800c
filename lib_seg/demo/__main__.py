"""`python -m lib_seg.demo`: see what SEG does on a tiny digit diffusion model, no WebUI needed.

Writes one PNG grid, one row per setting: unconditional, + SEG at each sigma, CFG, CFG + SEG; every row
starts from the same noise. `--evaluate` scores the same settings instead (see evaluate.py), plus samples
from SEG's blurred prediction alone: what SEG guides away from.
"""
import argparse
import os
import sys
import time

import torch

from ..params import SegParamError, SegSettings, parse_sigma
from .sample import SAMPLERS, demo_settings, perturbed_setting, sample


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m lib_seg.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--steps", type=int, default=16, help="sampler steps (default 16)")
    p.add_argument("--sampler", choices=SAMPLERS, default="dpmpp_2m", help="k-diffusion sampler (default dpmpp_2m)")
    p.add_argument("--sigmas", default="1,4,16,inf", help="SEG blur sigmas for the unconditional rows (default 1,4,16,inf)")
    p.add_argument("--scale", type=float, default=3.0, help="SEG scale (default 3)")
    p.add_argument("--cfg", type=float, default=3.0, help="CFG scale of the conditional rows (default 3)")
    # `down` (16x16 and 8x8 on the way down), not the WebUI default `mid`: this model's 8x8 middle-block
    # attention hardly matters to its output (SEG there moves the scores by < 0.1 %), `up` and `all` overshoot.
    p.add_argument("--layers", default="down", help="SEG layers: down (default), mid, up, all, or a block list like d0,m0")
    p.add_argument("--start", type=float, default=0.0, help="SEG start: fraction of the steps before SEG acts (default 0)")
    p.add_argument("--end", type=float, default=1.0, help="SEG end: fraction of the steps after which SEG stops (default 1)")
    p.add_argument("--oseg", action="store_true",
                   help="add Orthogonal SEG rows beside the SEG ones (+ OSEG at each sigma, CFG + OSEG)")
    p.add_argument("--oseg-reference", default=None,
                   help="OSEG's decomposition: along the head's mean key (key, the default) or mean query (query) "
                        "(lib_seg/oseg.py); key,query scores both from the same noise, rows named 'OSEG key' / 'OSEG query'")
    p.add_argument("--no-cfg", action="store_true", help="leave out the CFG rows (CFG, CFG + SEG, CFG + OSEG)")
    p.add_argument("--columns", type=int, default=10, help="samples per row (default 10: digits 0-9 in CFG rows)")
    p.add_argument("--out", default="seg_demo.png", help="PNG to write (default ./seg_demo.png)")
    p.add_argument("--evaluate", action="store_true", help="score the settings instead of drawing them")
    p.add_argument("--n", type=int, default=200, help="--evaluate: samples per setting and seed (default 200)")
    p.add_argument("--seeds", default="0,1,2", help="--evaluate: noise seeds, each a full set of N samples (default 0,1,2)")
    p.add_argument("--ablation", action="store_true",
                   help="--evaluate: the unconditional sigma x scale grid (--sigmas x --ablation-scales) instead")
    p.add_argument("--ablation-scales", default="1,3,5", help="--ablation: SEG scales (default 1,3,5)")
    p.add_argument("--results", default="seg_eval", help="--evaluate: path prefix of the .md and .json reports (default ./seg_eval)")
    p.add_argument("--merge", default=None,
                   help="A.json,B.json: join --evaluate reports of the same settings run on disjoint seeds (side by side) "
                        "into one, compared as a single run would be, and write it to --results")
    p.add_argument("--weights", default=None, help="denoiser safetensors (default: the shipped one)")
    # One thread by default: this model's ops are small, and on a busy 2-core machine two OpenMP threads
    # waiting on each other took 265 s for the grid where one thread took 41 s.
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 0 = torch's choice)")
    args = p.parse_args(argv)
    try:
        args.sigma_list = [parse_sigma(s) for s in args.sigmas.split(",") if s.strip()]
        args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
        args.scale_list = [float(s) for s in args.ablation_scales.split(",") if s.strip()]
        # validate once, with SEG's own messages
        SegSettings(enabled=True, scale=args.scale, layers=args.layers, start=args.start, end=args.end)
        args.interval = (args.start, args.end)
        from ..oseg import REFERENCES
        args.oseg_references = [r.strip() for r in (args.oseg_reference or "").split(",") if r.strip()]
        unknown = [r for r in args.oseg_references if r not in REFERENCES]
        if unknown or len(set(args.oseg_references)) != len(args.oseg_references):
            raise ValueError(f"--oseg-reference: got {args.oseg_reference!r}; give key, query or key,query")
    except (SegParamError, ValueError) as error:
        p.error(str(error))
    return args


def draw_demo(model, settings, args, log=print):
    from .image_grid import draw_grid
    labels = torch.arange(args.columns) % 10
    rows = []
    for i, setting in enumerate(settings):
        start = time.time()
        images = sample(model, setting, labels, seed=args.seed, steps=args.steps, sampler=args.sampler)
        rows.append((setting.name, images))
        log(f"  [{i + 1}/{len(settings)}] {setting.name:<28} {time.time() - start:5.1f}s")
    title = (f"SEG demo: seed {args.seed}, {args.sampler} {args.steps} steps, SEG scale {args.scale:g}, "
             f"layers {args.layers}" + ("" if args.interval == (0.0, 1.0) else f", steps {args.start:g}-{args.end:g}")
             + "; CFG rows: digits 0-9")
    return draw_grid(rows, title)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from .. import oseg
    single = args.oseg_references[0] if len(args.oseg_references) == 1 else None
    previous, oseg.REFERENCE = oseg.REFERENCE, single or oseg.REFERENCE
    try:
        return _run(args)
    finally:
        oseg.REFERENCE = previous  # the switch is for this run only


def _merge(args):
    import json
    from .evaluate import merge_reports, write_report
    reports = []
    for path in args.merge.split(","):
        with open(path.strip(), encoding="utf-8") as f:
            reports.append(json.load(f))
    report = merge_reports(reports)
    report["command"] = "python -m lib_seg.demo " + " ".join(args.argv)
    report["seconds"] = max(r.get("seconds", 0.0) for r in reports)  # wall time of the runs side by side
    print(write_report(report, args.results + ".md", args.results + ".json", ablation=args.ablation))
    print(f"wrote {os.path.abspath(args.results)}.md and .json")
    return report


def _run(args):
    if args.merge:
        return _merge(args)
    start = time.time()
    from .model import load_denoiser
    model = load_denoiser(args.weights)
    # One reference: the run's switch (rows named "OSEG"); several: one set of rows per reference, each with its own.
    references = args.oseg_references if len(args.oseg_references) > 1 else [None]
    settings = demo_settings(args.sigma_list, args.scale, args.cfg, args.layers, interval=args.interval, oseg=args.oseg,
                             oseg_references=references, cfg=not args.no_cfg)
    if args.evaluate:
        from .classifier import load_classifier
        from .evaluate import ablation_settings, evaluate, write_report
        if args.ablation:
            settings = ablation_settings(args.sigma_list, args.scale_list, args.layers, args.interval)
        else:  # after the SEG rows: what SEG guides away from, sampled alone; the same for OSEG after its rows
            settings.insert(1 + len(args.sigma_list), perturbed_setting(max(args.sigma_list), args.layers))
            if args.oseg:
                for i, ref in enumerate(references):
                    at = 2 + (i + 2) * len(args.sigma_list) + i
                    settings.insert(at, perturbed_setting(max(args.sigma_list), args.layers, "orthogonal", ref))
        print(f"evaluating {len(settings)} settings, {args.n} samples each for seeds {args.seeds} ...", flush=True)
        report = evaluate(model, load_classifier(), settings, n=args.n, seeds=args.seed_list, steps=args.steps,
                          sampler=args.sampler, log=lambda line: print(line, flush=True))
        report["seconds"] = time.time() - start
        report["command"] = "python -m lib_seg.demo " + " ".join(args.argv)
        if args.oseg:
            from .. import oseg
            report["oseg_reference"] = oseg.REFERENCE
            report["oseg_references"] = [ref or oseg.REFERENCE for ref in references]
        os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
        print(write_report(report, args.results + ".md", args.results + ".json", ablation=args.ablation))
        print(f"wrote {os.path.abspath(args.results)}.md and .json")
        return report
    print(f"sampling {len(settings)} rows of {args.columns} ({args.sampler}, {args.steps} steps) ...", flush=True)
    grid = draw_demo(model, settings, args, log=lambda line: print(line, flush=True))
    grid.save(args.out)
    print(f"wrote {os.path.abspath(args.out)} in {time.time() - start:.1f}s")
    return args.out


if __name__ == "__main__":
    main()
