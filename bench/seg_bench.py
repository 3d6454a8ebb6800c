"""What SEG costs per sampling step, on the real SD1.5 UNet architecture.

    python -m bench.seg_bench                      # CUDA if present, else CPU; latents 16x16 and 32x32
    python -m bench.seg_bench --quick              # ~1 minute on a CPU: 16x16 only, 2 runs, no memory pass
    python -m bench.seg_bench --device cuda --latent 64 --runs 20 --json seg_bench.json
    python -m bench.seg_bench --model sdxl         # SDXL's UNet layout, or --model flux: a Flux-shaped DiT

The UNet is ldm's UNetModel with SD1.5's configuration (random weights: speed does not depend on them);
fp32 on the CPU, fp16 on CUDA. One "step" is one call of the guided denoiser, batch B = 1:

- bare UNet with 2 and 3 rows: the floor; a batched extra prediction cannot cost less than UNet(3) / UNet(2);
- CFG only; CFG + SEG batched ([cond | SEG | uncond] in one UNet call, this project) at sigma = inf and 4;
  the same at sigma = inf without the single-query shortcut; CFG + SEG as a separate second UNet call
  (the approach of the existing Forge/ComfyUI implementations); SEG without CFG ([cond | SEG]);
- CFG + PAG (identity-attention mode, same layers) batched and as a separate second UNet call (the way Forge's
  built-in PAG and sd-perturbed-attention run it);
- the batched step with full rows (the shared prefix off: every SEG row through every block, as before issue 21),
  against which the default batched step's shared prefix is measured; CFG + OSEG batched at sigma = 4.

Timing: every variant runs once per round, rounds rotate the order (drift and other jobs on the machine hit all
variants alike), warm-up rounds are discarded; medians, min/max and per-round ratios (each variant against
CFG-only of the same round) are reported. Peak memory: on CUDA max_memory_allocated over the step; on the CPU a
fresh subprocess (so the timing process's allocator state does not hide anything) with glibc returning freed
blocks to the OS, the kernel's peak-RSS mark reset before each variant (/proc/self/clear_refs) and the peak RSS
over the step minus the RSS before it reported.

--model sdxl / flux (issue 21): the shared prefix per step on SDXL's layout and on a Flux-shaped DiT, CFG 5 (and
CFG 1 for the DiT), against full rows, a separate pass and two floors; bench/layouts.py says what they run.

This file is the command; what it runs is in bench/cases.py, how it times in bench/timing.py, the memory pass in
bench/memory.py, the engine checks in bench/checks.py and the table in bench/report.py.
"""
import argparse
import json
import os
import sys
import time

import torch

from bench import layouts, timing
from bench.cases import (CONFIGS, CRITERION_SLACK, SIGMA, VARIANTS, Bench, blur_cost, build_unet, denoiser_for,
                         shortcut_layers)
from bench.checks import blur_cache_check, check_rows, count_host_ops
from bench.memory import memory_cpu_subprocess, memory_cuda, memory_worker  # noqa: F401 (tests call it from here)
from bench.report import machine_info, print_report
from bench.timing import Probe, log, paired_ratio, summarize, time_variants
from lib_seg.layers import select_layers


# ----------------------------------------------------------------------------------------------- main

def bench_latent(unet, denoiser, args, device, dtype, latent, memory, budget=None):
    bench = Bench(unet, denoiser, args.config, device, dtype, latent)
    keys = [key for key, *_ in VARIANTS]
    selected = {layer.name for layer in select_layers(unet, bench.layers)}
    log(f"latent {latent}x{latent}: probe step")
    probe = Probe(bench)
    bench.run("batched_s4", inside=probe)
    limits = (10, 50) if bench.cuda else (3, 10)
    rounds, outputs = time_variants(bench, keys, args.runs, args.warmup, budget, limits)
    variants = {}
    for key, label, rows, calls in VARIANTS:
        v = summarize([r[key] for r in rounds])
        v.update(label=label, rows=rows, unet_calls=calls, ratio_to_cfg=paired_ratio(rounds, key, "cfg"),
                 ratio_of_medians_to_cfg=None)
        if memory and key in memory:
            v["peak_mib"] = memory[key]
        variants[key] = v
    for v in variants.values():
        v["ratio_of_medians_to_cfg"] = v["median_s"] / variants["cfg"]["median_s"]
    unet_ratio = paired_ratio(rounds, "unet3", "unet2")
    batched_ratio = variants["batched"]["ratio_to_cfg"]
    criterion = {
        "batched_over_cfg": batched_ratio, "unet_3_over_2": unet_ratio, "limit": CRITERION_SLACK * unet_ratio,
        "within_limit": batched_ratio <= CRITERION_SLACK * unet_ratio,
        "batched_over_cfg_of_medians": variants["batched"]["ratio_of_medians_to_cfg"],
        "unet_3_over_2_of_medians": variants["unet3"]["median_s"] / variants["unet2"]["median_s"],
        "batched_over_separate": paired_ratio(rounds, "batched", "separate"),
    }
    # PAG rows: the same criterion (batched costs what its extra row costs, and less than a separate pass)
    pag_ratio = variants["pag_batched"]["ratio_to_cfg"]
    criterion.update(pag_batched_over_cfg=pag_ratio, pag_within_limit=pag_ratio <= CRITERION_SLACK * unet_ratio,
                     pag_batched_over_separate=paired_ratio(rounds, "pag_batched", "pag_separate"))
    # The shared prefix (issue 21): the batched step with the SEG rows skipping the blocks before the first
    # perturbed layer, against the same step with full rows; the goal for SD1.5 mid is <= 1.30 x CFG.
    criterion.update(shared_over_full=paired_ratio(rounds, "batched", "batched_full"),
                     full_over_cfg=variants["batched_full"]["ratio_to_cfg"],
                     oseg_batched_over_cfg=variants["oseg_batched"]["ratio_to_cfg"])
    criterion["within_limit_of_medians"] = (criterion["batched_over_cfg_of_medians"]
                                            <= CRITERION_SLACK * criterion["unet_3_over_2_of_medians"])
    criterion["batched_faster_than_separate"] = (criterion["batched_over_separate"] < 1
                                                 and variants["batched"]["median_s"] < variants["separate"]["median_s"])
    log(f"latent {latent}x{latent}: blur and shortcut micro-benchmarks")
    blur = blur_cost(bench, probe, selected)
    blur["fraction_selected_sigma4"] = blur["selected_sigma4_s"] / variants["batched_s4"]["median_s"]
    blur["fraction_selected_inf"] = blur["selected_inf_mean_s"] / variants["batched"]["median_s"]
    blur["fraction_all_sigma4"] = blur["all_layers_sigma4_s"] / variants["batched_s4"]["median_s"]
    blur["target_met"] = blur["fraction_selected_sigma4"] <= 0.01
    cfg_out = outputs["cfg"].float()
    shortcut = {
        "step_with_s": variants["batched"]["median_s"], "step_without_s": variants["batched_noshortcut"]["median_s"],
        "step_ratio": paired_ratio(rounds, "batched", "batched_noshortcut"),
        "step_max_abs_diff": (outputs["batched"].float() - outputs["batched_noshortcut"].float()).abs().max().item(),
        "seg_effect_max_abs": (outputs["batched"].float() - cfg_out).abs().max().item(),
        "layers": shortcut_layers(bench, probe, selected),
    }
    # the batched PAG rows compute what the separate pass computes (to fp32 round-off)
    pag = {"batched_vs_separate_max_abs_diff":
           (outputs["pag_batched"].float() - outputs["pag_separate"].float()).abs().max().item(),
           "pag_effect_max_abs": (outputs["pag_batched"].float() - cfg_out).abs().max().item()}
    for layer in shortcut["layers"]["per_layer"].values():
        layer.pop("module", None)
    return {"runs": len(rounds), "warmup": args.warmup, "variants": variants, "unet_3_over_2": unet_ratio,
            "criterion": criterion, "blur": blur, "shortcut": shortcut, "pag": pag, "unet_split": probe.unet_split(),
            "rounds_s": rounds, "selected_layers": sorted(selected)}, bench


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench.seg_bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:1")
    parser.add_argument("--latent", type=int, nargs="+", default=None, help="square latent sizes (default 16 32)")
    parser.add_argument("--runs", type=int, default=None,
                        help="timed rounds per latent (default: as many as fit --budget, 3-10 on CPU, 10-50 on CUDA)")
    parser.add_argument("--budget", type=float, default=540.0,
                        help="seconds the whole run should take when --runs is not given (default 540)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed warm-up rounds (default 1; CUDA 3)")
    parser.add_argument("--json", default="seg_bench.json", help="where to write the results (default seg_bench.json)")
    parser.add_argument("--quick", action="store_true", help="about a minute on a CPU: smallest latent, 2 runs, "
                        "no memory pass, no engine checks")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--clock", choices=sorted(timing.CLOCKS), default="wall",
                        help="wall (default) or cpu: this process's CPU time, for a machine shared with other jobs "
                             "(meaningful with --threads 1; CUDA always uses wall time)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--model", default="sd15", choices=("sd15", "sdxl", "flux"),
                        help="sd15 (default: the full SD1.5 benchmark), sdxl (SDXL's UNet layout) or flux (a "
                             "Flux-shaped DiT): the last two time the shared prefix against full rows and the floors, "
                             "32x32 by default")
    parser.add_argument("--config", default=None, choices=sorted(CONFIGS) + sorted(layouts.CONFIGS),
                        help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default=None, choices=("float16", "float32", "float64"), help=argparse.SUPPRESS)
    parser.add_argument("--memory-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--micro-scale", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.config is None:
        args.config = args.model
    elif args.model != "sd15" and layouts.MODEL_OF_CONFIG.get(args.config) != args.model or \
            args.model == "sd15" and args.config not in CONFIGS:
        parser.error(f"--config {args.config} is not a configuration of --model {args.model}")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = torch.device(args.device).type == "cuda"
    if args.latent is None:
        args.latent = [16] if args.quick else [32] if args.model != "sd15" else [16, 32]
    if args.quick:
        args.runs = 2 if args.runs is None else args.runs
        args.warmup = 0 if args.warmup is None else args.warmup  # the probe step warms up
    if args.warmup is None:
        args.warmup = 1 if args.quick or not cuda else 3
    if args.threads is None:
        args.threads = torch.get_num_threads()
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.memory_worker:
        memory_worker(args)
        return None
    started = time.perf_counter()
    timing.MICRO_SCALE[0] = args.micro_scale
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        args.clock = "wall"
    timing.CLOCK[0] = timing.CLOCKS[args.clock]
    dtype = torch.float16 if cuda else torch.float32
    if args.dtype:
        dtype = getattr(torch, args.dtype)
    torch.set_num_threads(args.threads)
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    if not cuda and args.threads > 1 and load > 0.5:
        log(f"load average {load:.1f} with {args.threads} threads: other jobs are running; threads that wait for "
            "each other suffer most from that (consider --threads 1)")
    if args.model != "sd15":
        return _main_layouts(args, argv, device, dtype, started)
    result = {"machine": machine_info(device, args.threads),
              "command": "python -m bench.seg_bench " + " ".join(sys.argv[1:] if argv is None else argv),
              "model": f"ldm UNetModel, config {args.config}: {CONFIGS[args.config]}, random weights, {dtype}",
              "clock": args.clock, "step": f"one guided denoiser call, B=1, k-diffusion sigma {SIGMA}", "layers": "mid", "latents": {}}

    memory = {}
    if not args.no_memory and not args.quick and not cuda:
        log("peak memory: fresh subprocess, every variant once")
        mem = memory_cpu_subprocess(args)
        result["memory_cpu"] = mem
        if "error" in mem:
            log(f"memory measurement failed: {mem['error']}")
        memory = {int(k): v for k, v in mem.get("latents", {}).items()}

    log(f"building the {args.config} UNet on {device} ({dtype})")
    start = time.perf_counter()
    unet = build_unet(args.config, device, dtype)
    denoiser = denoiser_for(unet, device)
    result["build_s"] = time.perf_counter() - start

    benches = {}
    for i, latent in enumerate(args.latent):
        # the time left, shared among the remaining latents by area^0.75 (small latents are overhead-bound),
        # less ~20 s each for the probe step and micro-benchmarks and 15 s for the engine checks
        weights = [size ** 1.5 for size in args.latent[i:]]
        left = args.budget - (time.perf_counter() - started) - 20 * len(weights) - 15
        budget = max(0.0, left) * weights[0] / sum(weights)
        r, bench = bench_latent(unet, denoiser, args, device, dtype, latent, memory.get(latent), budget)
        benches[latent] = bench
        result["latents"][str(latent)] = r
    if cuda and not args.no_memory:
        for latent, bench in benches.items():
            for key, peak in memory_cuda(bench).items():
                result["latents"][str(latent)]["variants"][key]["peak_mib"] = peak
    if not args.quick:
        log("engine checks: rows per call, host ops per step, blur cache")
        # Model-independent bookkeeping: checked on the tiny UNet (same block layout), which takes a second.
        tiny = build_unet("tiny", device, dtype)
        tiny_denoiser = denoiser_for(tiny, device)
        result["checks"] = {"model": "tiny (same block layout as SD1.5, 32 channels), latent 8x8",
                            "rows": check_rows(tiny, tiny_denoiser, "tiny", device, dtype),
                            "host_ops_per_step": count_host_ops(Bench(tiny, tiny_denoiser, "tiny", device, dtype, 8)),
                            "blur_cache": blur_cache_check(device, dtype if cuda else torch.float32)}
    result["total_s"] = time.perf_counter() - started

    print_report(result, args, device)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
    return result


def _main_layouts(args, argv, device, dtype, started):
    """--model sdxl / flux: the shared prefix on SDXL's layout or a Flux-shaped DiT (bench/layouts.py)."""
    result = {"machine": machine_info(device, args.threads),
              "command": "python -m bench.seg_bench " + " ".join(sys.argv[1:] if argv is None else argv),
              "clock": args.clock, "layers": layouts.LAYERS, "latents": {}}
    layouts.run_layouts(args, device, dtype, result, started)
    result["total_s"] = time.perf_counter() - started
    header = (f"SEG benchmark: {result['model']}\n{result['step']}\n{result['machine']['cpu']}, nproc "
              f"{result['machine']['nproc']}, torch {torch.__version__}, {args.threads} threads, device {device}, "
              f"{args.clock} clock")
    print(header + layouts.format_layout_table(result))
    print(f"\ntotal {result['total_s']:.0f} s; JSON: {args.json}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
    return result


if __name__ == "__main__":
    main()
