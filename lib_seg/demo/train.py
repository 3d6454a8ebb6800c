"""Rebuild the shipped weights: `python -m lib_seg.demo.train` (43 minutes on 2 shared CPU cores, one thread).

Fixed seeds, fixed step counts (not time budgets), one CPU thread: the same machine gives the same
files. One thread because reductions then run in a fixed order, and because on a shared 2-core machine
two OpenMP threads that keep waiting for each other ran 3-5x slower than one.
Another CPU type or torch version may round differently and produce a slightly different file (and hash).
"""
import argparse
import copy
import hashlib
import json
import math
import os
import time

import torch

from . import CLASSIFIER_PATH, CURVE_PATH, DENOISER_PATH
from .classifier import DigitClassifier
from .data import load_glyphs, random_batch, reference_images, train_test_split
from .model import (ARCHITECTURES, DEFAULT_ARCHITECTURE, NULL_LABEL, DigitDenoiser, parameter_count,
                    sample_training_sigmas)

DENOISER_STEPS = 4000
DENOISER_BATCH = 32
DENOISER_LR = 2e-3
WARMUP = 200
EMA_DECAY = 0.999     # the shipped weights are this average of the training weights (half-life ~700 steps)
LABEL_DROPOUT = 0.2   # fraction of rows trained with the null token: the unconditional model SEG is about
CLASSIFIER_EPOCHS = 40
TRAIN_THREADS = 1
VALIDATE_EVERY = 500
VALIDATION_ROWS = 256


def sha256_of(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def save(module, path, metadata=None):
    from safetensors.torch import save_file
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, path, metadata=metadata)
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB, sha256 {sha256_of(path)})", flush=True)


def cosine_lr(step, total, peak, warmup=WARMUP):
    """Linear warmup, then cosine decay to zero."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train_classifier(glyphs, labels, epochs=CLASSIFIER_EPOCHS, batch=64, seed=0):
    """A digit classifier on mirror digits at random places (its features score samples, evaluate.py)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    train_idx, test_idx = train_test_split(len(glyphs))
    model = DigitClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for epoch in range(epochs):
        order = train_idx[torch.randperm(len(train_idx), generator=generator)]
        for start in range(0, len(order), batch):
            x, y = random_batch(glyphs, labels, order[start:start + batch], generator)
            x = x + 0.05 * torch.randn(x.shape, generator=generator)  # tolerate slightly noisy samples
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        x, y = reference_images(test_idx, per_glyph=4, seed=1)
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    print(f"classifier: {parameter_count(model)} parameters, held-out accuracy {accuracy:.3f}", flush=True)
    return model


def validation_set(glyphs, labels, seed=1):
    """Fixed held-out rows (digits the denoiser never trains on, random places, log-normal sigmas, noise,
    a fifth of them with the null token): the same rows at every check, so the loss curve is comparable."""
    generator = torch.Generator().manual_seed(seed)
    _, test_idx = train_test_split(len(glyphs))
    idx = test_idx[torch.randint(0, len(test_idx), (VALIDATION_ROWS,), generator=generator)]
    images, rows_labels = random_batch(glyphs, labels, idx, generator)
    rows_labels = rows_labels.clone()
    rows_labels[::5] = NULL_LABEL
    return images, rows_labels, sample_training_sigmas(VALIDATION_ROWS, generator), torch.randn(images.shape, generator=generator)


@torch.no_grad()
def validation_loss(model, rows, chunk=64):
    images, rows_labels, sigma, noise = rows
    losses = [model.loss(images[i:i + chunk], sigma[i:i + chunk], model.context(rows_labels[i:i + chunk]),
                         noise[i:i + chunk]).item() for i in range(0, len(images), chunk)]
    return sum(losses) / len(losses)


def architecture_metadata(model):
    """Saved with the weights so load_denoiser builds the right UNet; the default architecture is saved
    without it, so the shipped file stays byte-identical to what this trainer wrote before variants existed."""
    return None if model.architecture == DEFAULT_ARCHITECTURE else {"architecture": model.architecture}


def train_denoiser(glyphs, labels, steps=DENOISER_STEPS, batch=DENOISER_BATCH, lr=DENOISER_LR, seed=0,
                   checkpoint_dir=None, architecture=DEFAULT_ARCHITECTURE):
    """Train on the 80 % training digits; returns (EMA model, loss curve). The curve has the smoothed
    training loss and, every VALIDATE_EVERY steps, the EMA model's loss on fixed held-out rows."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    train_idx, _ = train_test_split(len(glyphs))
    model = DigitDenoiser(architecture)
    ema = copy.deepcopy(model).requires_grad_(False)
    held_out = validation_set(glyphs, labels)
    print(f"denoiser: {parameter_count(model)} parameters, {steps} steps of {batch}", flush=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    start_time, running, curve = time.time(), None, []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, steps, lr)
        idx = train_idx[torch.randint(0, len(train_idx), (batch,), generator=generator)]
        images, rows_labels = random_batch(glyphs, labels, idx, generator)
        rows_labels = rows_labels.clone()
        rows_labels[torch.rand(batch, generator=generator) < LABEL_DROPOUT] = NULL_LABEL
        sigma = sample_training_sigmas(batch, generator)
        noise = torch.randn(images.shape, generator=generator)
        loss = model.loss(images, sigma, model.context(rows_labels), noise)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():  # EMA with a warm start: early on it follows the weights closely
            decay = min(EMA_DECAY, (1 + step) / (10 + step))
            for averaged, current in zip(ema.parameters(), model.parameters()):
                averaged.lerp_(current, 1.0 - decay)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        point = {"step": step + 1, "train_loss": round(running, 5), "seconds": round(time.time() - start_time, 1)}
        if (step + 1) % VALIDATE_EVERY == 0 or step + 1 == steps:
            point["held_out_loss"] = round(validation_loss(ema, held_out), 5)
            if checkpoint_dir:
                save(ema, os.path.join(checkpoint_dir, f"denoiser_{step + 1}.safetensors"), architecture_metadata(ema))
        if (step + 1) % 100 == 0 or "held_out_loss" in point:
            curve.append(point)
            held = f"  held-out {point['held_out_loss']:.4f}" if "held_out_loss" in point else ""
            print(f"  step {step + 1}/{steps}  loss {running:.4f}{held}  {point['seconds']:.0f}s", flush=True)
    return ema.eval(), curve


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=DENOISER_STEPS)
    parser.add_argument("--batch", type=int, default=DENOISER_BATCH)
    parser.add_argument("--denoiser-out", default=DENOISER_PATH)
    parser.add_argument("--classifier-out", default=CLASSIFIER_PATH)
    parser.add_argument("--curve-out", default=CURVE_PATH, help="the loss curve (JSON)")
    parser.add_argument("--checkpoint-dir", default=None, help="also save the EMA weights at every validation")
    parser.add_argument("--skip-classifier", action="store_true")
    parser.add_argument("--architecture", choices=sorted(ARCHITECTURES), default=DEFAULT_ARCHITECTURE,
                        help="UNet design (model.ARCHITECTURES); the shipped weights are the default")
    args = parser.parse_args(argv)
    torch.set_num_threads(TRAIN_THREADS)
    glyphs, labels = load_glyphs()
    t0 = time.time()
    if not args.skip_classifier:
        save(train_classifier(glyphs, labels), args.classifier_out)
    print(f"classifier done in {time.time() - t0:.0f}s", flush=True)
    model, curve = train_denoiser(glyphs, labels, steps=args.steps, batch=args.batch,
                                  checkpoint_dir=args.checkpoint_dir, architecture=args.architecture)
    save(model, args.denoiser_out, architecture_metadata(model))
    with open(args.curve_out, "w", encoding="utf-8") as f:
        json.dump({"steps": args.steps, "batch": args.batch, "seconds": round(time.time() - t0), "curve": curve}, f, indent=1)
    print(f"done in {time.time() - t0:.0f}s, final held-out loss {curve[-1]['held_out_loss']:.4f}", flush=True)


if __name__ == "__main__":
    main()
