"""`python -m lib_seg.demo --evaluate`: score each sampling setting over several seeds.

Per setting and seed, N samples from that seed's noise (every setting gets the same noise, so differences
between rows of one seed come from guidance alone):
- asymmetry: the mean |x - mirror(x)| / 2 of the samples (data.asymmetry; exactly 0 for real images): the
  exact structure score of mirror digits;
- FD: Fréchet distance between the classifier's penultimate features of the samples and of a fixed set of
  real images (an FID in miniature);
- class accuracy, for conditional settings: the fraction the classifier reads as the requested digit.
Every number is reported as its mean over the seeds ± the seed-to-seed standard deviation, and each SEG row
says whether it beats the same run without SEG by more than that spread.
"""
import json
import statistics
import time

import torch

from ..params import format_sigma
from .classifier import features_and_predictions
from .data import NUM_CLASSES, asymmetry, reference_images
from .metrics import class_accuracy, frechet_distance_from_stats, gaussian_stats
from .sample import Setting, initial_noise, sample, seg_settings

METRICS = ("asymmetry", "fd", "accuracy")
REAL_PER_GLYPH = 2   # the reference: every real glyph at 2 seeded random places (3594 images)


def real_reference(classifier, n, seeds):
    """Feature statistics of the real reference set, and what N *other* real images score against it per
    seed (a floor for FD at this N: a finite sample of the data itself does not score 0)."""
    images, _ = reference_images(per_glyph=REAL_PER_GLYPH, seed=0)
    stats = gaussian_stats(features_and_predictions(classifier, images)[0])
    floor = []
    for seed in seeds:
        generator = torch.Generator().manual_seed(10_000 + seed)
        indices = torch.randint(0, len(images) // REAL_PER_GLYPH, (n,), generator=generator)
        fresh, _ = reference_images(indices, seed=10_000 + seed)
        floor.append(frechet_distance_from_stats(*gaussian_stats(features_and_predictions(classifier, fresh)[0]), *stats))
    return stats, floor


def sample_in_chunks(model, setting, labels, noise, steps, sampler, chunk=200):
    out = [sample(model, setting, labels[i:i + chunk], steps=steps, sampler=sampler, noise=noise[i:i + chunk])
           for i in range(0, len(labels), chunk)]
    return torch.cat(out)


def score(classifier, images, labels, conditional, real_stats):
    features, predicted = features_and_predictions(classifier, images)
    return {"asymmetry": float(asymmetry(images).mean()),
            "fd": frechet_distance_from_stats(*gaussian_stats(features), *real_stats),
            "accuracy": class_accuracy(predicted, labels) if conditional else None}


def spread(values):
    """-> (mean, seed-to-seed standard deviation; 0 for one seed)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(per_seed):
    """{metric: [value per seed]} -> {metric: [mean, sd]} (None where the metric does not apply)."""
    return {m: (list(spread(v)) if v[0] is not None else None) for m, v in per_seed.items()}


def beats(row, baseline, metric, lower_is_better=True):
    """SEG beats its baseline on `metric` by more than the seed spread of either: the improvement of the
    means exceeds the larger of the two standard deviations."""
    (m, s), (m0, s0) = row["summary"][metric], baseline["summary"][metric]
    gain = (m0 - m) if lower_is_better else (m - m0)
    return gain > max(s, s0)


def paired_difference(row, baseline, metric):
    """[mean, sd] over seeds of (row − baseline) for `metric`. Both ran from the same noise per seed, so
    the seed-to-seed noise they share cancels: a smaller spread than either row's own, for the same N."""
    return list(spread([a - b for a, b in zip(row["per_seed"][metric], baseline["per_seed"][metric])]))


def setting_record(setting):
    return {"setting": setting.name, "conditional": setting.conditional, "cfg_scale": setting.cfg_scale,
            "perturbed_only": setting.perturbed_only,
            "seg_scale": setting.seg.scale if setting.seg.active else 0.0,
            "seg_sigma": format_sigma(setting.seg.sigma) if setting.seg.active else "",
            "seg_layers": setting.seg.layers if setting.seg.active else "",
            "seg_mode": setting.seg.mode if setting.seg.active else "",
            "seg_interval": [setting.seg.start, setting.seg.end] if setting.seg.active else None,
            "oseg_reference": _oseg_reference(setting)}


def _oseg_reference(setting):
    """The decomposition an OSEG row ran with: its own, or the switch as it stood (None for other rows)."""
    if not (setting.seg.active and setting.seg.mode == "orthogonal"):
        return None
    from .. import oseg
    return setting.oseg_reference or oseg.REFERENCE


def seg_counterpart(row, rows):
    """The SEG (blur) row an OSEG row is compared with: same conditioning, CFG, scale, σ, layers and steps, and the
    same kind (guided, or prediction alone); None for other rows or if the settings hold none."""
    if row.get("seg_mode") != "orthogonal":
        return None
    same = ("conditional", "cfg_scale", "perturbed_only", "seg_scale", "seg_sigma", "seg_layers", "seg_interval")
    return next((b for b in rows if b["seg_mode"] == "blur" and all(b[k] == row[k] for k in same)), None)


def _layers_cell(row):
    """The layers, and the part of the steps SEG acted in when that is not all of them."""
    interval = row.get("seg_interval")
    if not row["seg_layers"] or not interval or interval == [0.0, 1.0]:
        return row["seg_layers"] or "—"
    return f"{row['seg_layers']}, steps {interval[0]:g}–{interval[1]:g}"


def evaluate(model, classifier, settings, n=200, seeds=(0, 1, 2), steps=16, sampler="dpmpp_2m", log=print):
    """-> report: one row per setting with per-seed scores and their mean ± sd; each SEG row is compared
    with the row of the same conditioning and CFG scale without SEG (`baseline`, `beats_*`)."""
    real_stats, floor = real_reference(classifier, n, seeds)
    labels = torch.arange(n) % NUM_CLASSES
    noises = {seed: initial_noise(n, seed) for seed in seeds}
    rows = []
    for setting in settings:
        start = time.time()
        per_seed = {m: [] for m in METRICS}
        for seed in seeds:
            images = sample_in_chunks(model, setting, labels, noises[seed], steps, sampler)
            for metric, value in score(classifier, images, labels, setting.conditional, real_stats).items():
                per_seed[metric].append(value)
        row = setting_record(setting)
        row.update(per_seed=per_seed, summary=summarise(per_seed), seconds=round(time.time() - start, 1))
        rows.append(row)
        log("  " + line_of(row))
    compare(rows)
    return {"n": n, "seeds": list(seeds), "steps": steps, "sampler": sampler,
            "real_floor_fd": list(spread(floor)), "real_floor_fd_per_seed": floor, "rows": rows}


def compare(rows):
    """Compare each SEG row with its own no-SEG baseline (same conditioning and CFG scale), if the rows hold one,
    and each OSEG row with its SEG counterpart: paired differences and the ✓ verdicts, in place."""
    for row in rows:
        for key in [k for k in row if k.startswith(("delta_", "beats_")) or k in ("baseline", "vs_seg")]:
            del row[key]
        baseline = next((b for b in rows if not b["seg_sigma"] and b["conditional"] == row["conditional"]
                         and b["cfg_scale"] == row["cfg_scale"]), None)
        if row["seg_sigma"] and baseline is not None:
            row["baseline"] = baseline["setting"]
            row["delta_asymmetry"] = paired_difference(row, baseline, "asymmetry")
            row["delta_fd"] = paired_difference(row, baseline, "fd")
            if not row["perturbed_only"]:  # a diagnostic, not a way of sampling anyone would choose
                row["beats_asymmetry"] = beats(row, baseline, "asymmetry")
                row["beats_fd"] = beats(row, baseline, "fd")
        seg = seg_counterpart(row, rows)
        if seg is not None:  # OSEG − SEG, from the same noise per seed
            row["vs_seg"] = seg["setting"]
            row["delta_asymmetry_vs_seg"] = paired_difference(row, seg, "asymmetry")
            row["delta_fd_vs_seg"] = paired_difference(row, seg, "fd")
            if row["conditional"]:
                row["delta_accuracy_vs_seg"] = paired_difference(row, seg, "accuracy")
    return rows


def merge_reports(reports):
    """One report from runs of the same settings, N, steps and sampler on disjoint seeds (e.g. run side by side
    on two cores): the per-seed scores joined in the order given, then summarised and compared as one run would
    be. Every seed's samples depend on that seed alone, so the result equals a single run over all the seeds."""
    first = reports[0]
    same = ("n", "steps", "sampler")
    for other in reports[1:]:
        if any(other[k] != first[k] for k in same) or \
                [r["setting"] for r in other["rows"]] != [r["setting"] for r in first["rows"]]:
            raise ValueError("merge: the reports differ in settings, N, steps or sampler")
    seeds = [seed for report in reports for seed in report["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"merge: seeds overlap: {seeds}")
    rows = []
    for parts in zip(*(report["rows"] for report in reports)):
        row = {k: v for k, v in parts[0].items() if k not in ("per_seed", "summary", "seconds")}
        row["per_seed"] = {m: [v for part in parts for v in part["per_seed"][m]] for m in METRICS}
        row["summary"] = summarise(row["per_seed"])
        row["seconds"] = round(sum(part["seconds"] for part in parts), 1)
        rows.append(row)
    floor = [v for report in reports for v in report["real_floor_fd_per_seed"]]
    merged = {k: v for k, v in first.items() if k not in ("rows", "seeds", "seconds", "command")}
    merged.update(seeds=seeds, real_floor_fd=list(spread(floor)), real_floor_fd_per_seed=floor, rows=compare(rows),
                  merged_from=[{"command": r.get("command"), "seeds": r["seeds"], "seconds": r.get("seconds")}
                               for r in reports])
    return merged


def ablation_settings(sigmas, scales, layers, interval=(0.0, 1.0)):
    """Unconditional σ × scale grid (the paper's ablation), plus the no-SEG baseline."""
    rows = [Setting("unconditional", False)]
    rows += [Setting(f"+ SEG s={scale:g} sigma={format_sigma(sigma)}", False, seg=seg_settings(scale, sigma, layers, interval))
             for scale in scales for sigma in sigmas]
    return rows


def _pm(pair, digits):
    return "—" if pair is None else f"{pair[0]:.{digits}f} ± {pair[1]:.{digits}f}"


def line_of(row):
    s = row["summary"]
    acc = "" if s["accuracy"] is None else f"  accuracy {_pm(s['accuracy'], 3)}"
    return f"{row['setting']:<34} asymmetry {_pm(s['asymmetry'], 4)}  FD {_pm(s['fd'], 2)}{acc}  ({row['seconds']:.0f}s)"


def _verdict(row, key):
    if key not in row:
        return ""
    return " ✓" if row[key] else ""


def _delta(row, key, digits):
    return f"{row[key][0]:+.{digits}f} ± {row[key][1]:.{digits}f}" if key in row else ""


def markdown_table(report):
    """One line per row. With OSEG rows, two more columns: their paired difference from the SEG row of the same
    σ (OSEG − SEG); a report without OSEG rows gives the table it always did."""
    oseg = any("vs_seg" in row for row in report["rows"])
    extra = " Δ asymmetry vs SEG (paired) | Δ FD vs SEG (paired) |" if oseg else ""
    lines = ["| setting | CFG | SEG scale | SEG σ | layers | asymmetry ↓ | FD ↓ | class accuracy ↑ "
             "| Δ asymmetry (paired) | Δ FD (paired) |" + extra,
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- | --- |" if oseg else "")]
    for row in report["rows"]:
        s = row["summary"]
        cfg = f"{row['cfg_scale']:g}" if row["conditional"] else "— (null token)"
        seg_scale = "(alone)" if row.get("perturbed_only") else f"{row['seg_scale']:g}" if row["seg_sigma"] else "—"
        line = (f"| {row['setting']} | {cfg} | {seg_scale} | {row['seg_sigma'] or '—'} | {_layers_cell(row)} | "
                f"{_pm(s['asymmetry'], 4)}{_verdict(row, 'beats_asymmetry')} | {_pm(s['fd'], 2)}{_verdict(row, 'beats_fd')} | "
                f"{_pm(s['accuracy'], 3)} | {_delta(row, 'delta_asymmetry', 4)} | {_delta(row, 'delta_fd', 2)} |")
        if oseg:
            line += f" {_delta(row, 'delta_asymmetry_vs_seg', 4)} | {_delta(row, 'delta_fd_vs_seg', 2)} |"
        lines.append(line)
    lines.append(f"| *real images (N of them vs the reference set)* | | | | | 0 | {_pm(report['real_floor_fd'], 2)} | | | |"
                 + (" | |" if oseg else ""))
    return "\n".join(lines)


def ablation_table(report, metric="asymmetry", digits=4):
    """σ down, scale across, `metric` mean ± sd in the cells; the baseline (no SEG) in the caption."""
    rows = [r for r in report["rows"] if r["seg_sigma"]]
    sigmas = list(dict.fromkeys(r["seg_sigma"] for r in rows))
    scales = list(dict.fromkeys(r["seg_scale"] for r in rows))
    cell = {(r["seg_sigma"], r["seg_scale"]): r for r in rows}
    lines = ["| σ \\ SEG scale | " + " | ".join(f"{s:g}" for s in scales) + " |", "| --- |" + " --- |" * len(scales)]
    for sigma in sigmas:
        cells = []
        for scale in scales:
            r = cell.get((sigma, scale))
            cells.append("" if r is None else _pm(r["summary"][metric], digits) + _verdict(r, "beats_" + metric))
        lines.append(f"| {sigma} | " + " | ".join(cells) + " |")
    base = next((r for r in report["rows"] if not r["seg_sigma"]), None)
    if base is not None:
        lines.append(f"\nwithout SEG: {_pm(base['summary'][metric], digits)}")
    return "\n".join(lines)


def describe_run(report):
    total = f", {report['seconds']:.0f} s in total" if "seconds" in report else ""
    return (f"N = {report['n']} samples per setting and seed, seeds {', '.join(map(str, report['seeds']))} "
            f"(mean ± seed-to-seed standard deviation), {report['sampler']} with {report['steps']} steps "
            f"(Karras sigmas){total}. ✓: beats the same run without SEG by more than the larger of the two spreads. "
            f"Δ (paired): the per-seed difference from that run (same noise), mean ± its seed-to-seed sd."
            + (" Δ vs SEG: an OSEG row minus the SEG row of the same σ, paired the same way."
               if any("vs_seg" in row for row in report["rows"]) else ""))


def write_report(report, markdown_path, json_path, ablation=False):
    text = markdown_table(report) + "\n\n" + describe_run(report) + "\n"
    if ablation:
        text += "\nAsymmetry ↓ (σ × scale)\n\n" + ablation_table(report) + "\n\nFD ↓ (σ × scale)\n\n" + \
            ablation_table(report, "fd", 2) + "\n"
    with open(markdown_path, "w", encoding="utf-8") as f:
        f.write(text)
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    return text
