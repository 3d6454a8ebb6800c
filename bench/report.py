"""The benchmark's report: the machine, and the table printed for each latent."""
import os
import platform

import torch

from bench.cases import CFG_SCALE, CRITERION_SLACK, FINITE_SIGMA, SEG_SCALE, VARIANTS

# --------------------------------------------------------------------------------------------- report

def machine_info(device, threads):
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or cpu
    info = {"cpu": cpu, "nproc": os.cpu_count(), "torch_threads": threads, "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(), "device": str(device)}
    try:
        info["load_average_at_start"] = os.getloadavg()
    except OSError:
        pass
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def format_table(result):
    lines = []
    for latent, r in result["latents"].items():
        lines.append(f"\nlatent {latent}x{latent} (B=1, SEG layers '{result['layers']}', CFG {CFG_SCALE:g}, "
                     f"SEG scale {SEG_SCALE:g}; {r['runs']} runs after {r['warmup']} warm-up round(s))")
        lines.append(f"{'variant':36} {'rows':>4} {'calls':>5} {'median ms':>10} {'min-max ms':>15} "
                     f"{'spread':>7} {'ratio':>12} {'peak MiB':>9}")
        for key, label, rows, calls in VARIANTS:
            v = r["variants"][key]
            if key == "unet2":
                ratio = "1 (÷2 rows)"
            elif key == "unet3":
                ratio = f"{r['unet_3_over_2']:.3f} ÷2 rows"
            else:
                ratio = f"{v['ratio_to_cfg']:.3f} ×CFG"
            peak = v.get("peak_mib")
            peak = f"{peak:9.1f}" if isinstance(peak, (int, float)) else f"{'-':>9}"
            lines.append(f"{label:36} {rows:>4} {calls:>5} {v['median_s'] * 1e3:10.1f} "
                         f"{v['min_s'] * 1e3:7.1f}-{v['max_s'] * 1e3:<7.1f} {v['spread'] * 100:6.1f}% {ratio:>12} {peak}")
        c = r["criterion"]
        lines.append(f"criterion: batched/CFG {c['batched_over_cfg']:.3f} <= {CRITERION_SLACK} x UNet 3/2 rows "
                     f"{c['unet_3_over_2']:.3f} = {c['limit']:.3f}: {'holds' if c['within_limit'] else 'FAILS'}; "
                     f"batched/separate {c['batched_over_separate']:.3f}: "
                     f"{'batched faster' if c['batched_faster_than_separate'] else 'batched NOT faster'}")
        lines.append(f"PAG: batched/CFG {c['pag_batched_over_cfg']:.3f} <= {c['limit']:.3f}: "
                     f"{'holds' if c['pag_within_limit'] else 'FAILS'}; batched/separate "
                     f"{c['pag_batched_over_separate']:.3f}; output batched vs separate max |diff| "
                     f"{r['pag']['batched_vs_separate_max_abs_diff']:.2e} (PAG's own effect: max "
                     f"{r['pag']['pag_effect_max_abs']:.2e})")
        if "shared_over_full" in c:
            lines.append(f"shared prefix: batched/CFG {c['batched_over_cfg']:.3f} (goal <= 1.30) vs full rows "
                         f"{c['full_over_cfg']:.3f}; shared/full {c['shared_over_full']:.3f}; OSEG batched/CFG "
                         f"{c['oseg_batched_over_cfg']:.3f}")
        b = r["blur"]
        lines.append(f"blur per step: σ={FINITE_SIGMA:g} on selected layers {b['selected_sigma4_s'] * 1e6:.1f} µs "
                     f"= {b['fraction_selected_sigma4'] * 100:.3f}% of the σ={FINITE_SIGMA:g} batched step; σ=∞ mean "
                     f"{b['selected_inf_mean_s'] * 1e6:.1f} µs = {b['fraction_selected_inf'] * 100:.3f}%; "
                     f"all 16 layers at σ={FINITE_SIGMA:g}: {b['fraction_all_sigma4'] * 100:.2f}%")
        s = r["shortcut"]
        lines.append(f"σ=∞ shortcut: full step {s['step_without_s'] * 1e3:.1f} -> {s['step_with_s'] * 1e3:.1f} ms "
                     f"(paired ratio with/without {s['step_ratio']:.3f}), output max |diff| {s['step_max_abs_diff']:.2e} "
                     f"(SEG's own effect on the output: max {s['seg_effect_max_abs']:.2e}); attention alone, selected "
                     f"layers {s['layers']['selected_without_s'] * 1e3:.2f} -> {s['layers']['selected_with_s'] * 1e3:.2f} ms, "
                     f"all layers {s['layers']['all_without_s'] * 1e3:.2f} -> {s['layers']['all_with_s'] * 1e3:.2f} ms, "
                     f"max |diff| {s['layers']['max_abs_diff']:.2e}")
        u = r["unet_split"]
        lines.append(f"UNet time split (one 3-row step): input blocks {u['input_blocks'] * 100:.0f}%, middle "
                     f"{u['middle_block'] * 100:.0f}%, output blocks {u['output_blocks'] * 100:.0f}%")
    return "\n".join(lines)


def print_report(result, args, device):
    """The header, each latent's table and the engine checks, on stdout."""
    table = format_table(result)
    header = (f"SEG benchmark: {result['model']}\n{result['machine']['cpu']}, nproc {result['machine']['nproc']}, "
              f"torch {torch.__version__}, {args.threads} threads, device {device}, {args.clock} clock")
    print(header + table)
    if "checks" in result:
        print("\nrows per UNet call over 4 steps:", {k: v["rows_per_call"] for k, v in result["checks"]["rows"].items()})
        print("host-side ops per step:", result["checks"]["host_ops_per_step"])
        bc = result["checks"]["blur_cache"]
        print(f"blur operator cache: cold {bc['cold_s'] * 1e6:.0f} µs, warm {bc['warm_s'] * 1e6:.0f} µs, {bc['cache']}")
    print(f"\ntotal {result['total_s']:.0f} s; JSON: {args.json}")
