"""`python -m lib_seg.demo --evaluate`: score each sampling setting with the digit classifier.

FD: Fréchet distance between the classifier's penultimate features of N samples and of the 1797 real
digits (lower = closer to the data distribution; an FID in miniature). Accuracy: for conditional
settings, the fraction of samples the classifier reads as the requested digit (N/10 per digit).
Every setting starts from the same N noise images, so differences come from guidance alone.
"""
import json
import time

import torch

from .classifier import features_and_predictions
from .data import NUM_CLASSES, load_digits_32, train_test_split
from .metrics import class_accuracy, frechet_distance, gaussian_stats, frechet_distance_from_stats
from .sample import initial_noise, sample
from ..params import format_sigma


def real_reference(classifier):
    """Feature statistics of all real digits, and the FD of the held-out 20% against the other 80%: what
    two finite samples of the *same* distribution score, a floor to read the other numbers against."""
    images, _ = load_digits_32()
    features, _ = features_and_predictions(classifier, images)
    train, test = train_test_split(len(images))
    floor = frechet_distance(features[test.numpy()], features[train.numpy()])
    return gaussian_stats(features), floor


def sample_in_chunks(model, setting, labels, noise, steps, sampler, chunk=200):
    out = [sample(model, setting, labels[i:i + chunk], steps=steps, sampler=sampler, noise=noise[i:i + chunk])
           for i in range(0, len(labels), chunk)]
    return torch.cat(out)


def evaluate(model, classifier, settings, n=1000, seed=0, steps=16, sampler="dpmpp_2m", log=print):
    real_stats, floor = real_reference(classifier)
    labels = torch.arange(n) % NUM_CLASSES
    noise = initial_noise(n, seed)
    rows = []
    for setting in settings:
        start = time.time()
        images = sample_in_chunks(model, setting, labels, noise, steps, sampler)
        features, predicted = features_and_predictions(classifier, images)
        row = {
            "setting": setting.name,
            "conditional": setting.conditional,
            "cfg_scale": setting.cfg_scale,
            "seg_scale": setting.seg.scale if setting.seg.active else 0.0,
            "seg_sigma": format_sigma(setting.seg.sigma) if setting.seg.active else "",
            "fd": frechet_distance_from_stats(*gaussian_stats(features), *real_stats),
            "accuracy": class_accuracy(predicted, labels) if setting.conditional else None,
            "seconds": round(time.time() - start, 1),
        }
        rows.append(row)
        acc = "" if row["accuracy"] is None else f"  accuracy {row['accuracy']:.3f}"
        log(f"  {setting.name:<28} FD {row['fd']:7.3f}{acc}  ({row['seconds']:.0f}s)")
    return {"n": n, "seed": seed, "steps": steps, "sampler": sampler, "real_floor_fd": floor, "rows": rows}


def markdown_table(report):
    lines = ["| setting | CFG | SEG scale | SEG σ | FD ↓ | class accuracy ↑ |", "| --- | --- | --- | --- | --- | --- |"]
    for row in report["rows"]:
        acc = "—" if row["accuracy"] is None else f"{row['accuracy']:.3f}"
        seg_scale = f"{row['seg_scale']:g}" if row["seg_sigma"] else "—"
        cfg = f"{row['cfg_scale']:g}" if row["conditional"] else "— (null token)"
        lines.append(f"| {row['setting']} | {cfg} | {seg_scale} | {row['seg_sigma'] or '—'} | {row['fd']:.3f} | {acc} |")
    lines.append(f"| *real digits: held-out 20% vs other 80%* | | | | {report['real_floor_fd']:.3f} | |")
    return "\n".join(lines)


def describe_run(report):
    total = f", {report['seconds']:.0f} s in total" if "seconds" in report else ""
    return (f"N = {report['n']} samples per setting, seed {report['seed']}, {report['sampler']} with "
            f"{report['steps']} steps (Karras sigmas){total}.")


def write_report(report, markdown_path, json_path):
    with open(markdown_path, "w", encoding="utf-8") as f:
        f.write(markdown_table(report) + "\n\n" + describe_run(report) + "\n")
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
