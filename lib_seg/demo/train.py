"""Rebuild the shipped weights: `python -m lib_seg.demo.train` (about 10 minutes on 2 CPU cores).

Fixed seeds, fixed step counts (not time budgets), one CPU thread: the same machine gives the same
files. One thread because reductions then run in a fixed order, and because on a shared 2-core machine
two OpenMP threads that keep waiting for each other ran 3-5x slower than one.
Another CPU type or torch version may round differently and produce a slightly different file (and hash).
"""
import argparse
import hashlib
import math
import os
import time

import torch

from . import CLASSIFIER_PATH, DENOISER_PATH
from .classifier import DigitClassifier
from .data import load_digits_32, train_test_split
from .model import NULL_LABEL, DigitDenoiser, parameter_count, sample_training_sigmas

DENOISER_STEPS = 700
DENOISER_BATCH = 32
DENOISER_LR = 2e-3
LABEL_DROPOUT = 0.15  # fraction of rows trained with the null token, so CFG has an unconditional model
CLASSIFIER_EPOCHS = 12
TRAIN_THREADS = 1


def sha256_of(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def save(module, path):
    from safetensors.torch import save_file
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, path)
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB, sha256 {sha256_of(path)})", flush=True)


def cosine_lr(step, total, peak, warmup=50):
    """Linear warmup, then cosine decay to zero: with so few steps, ending at lr 0 does EMA's job."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def shift_augment(images, generator, max_shift=2):
    """Random translations of up to max_shift pixels (background -1 fills in), so the classifier
    judges shapes rather than exact positions."""
    padded = torch.nn.functional.pad(images, [max_shift] * 4, value=-1.0)
    out = torch.empty_like(images)
    size = images.shape[-1]
    offsets = torch.randint(0, 2 * max_shift + 1, (len(images), 2), generator=generator)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, dy:dy + size, dx:dx + size]
    return out


def train_classifier(images, labels, epochs=CLASSIFIER_EPOCHS, batch=64, seed=0):
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    train_idx, test_idx = train_test_split(len(images))
    model = DigitClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for epoch in range(epochs):
        order = train_idx[torch.randperm(len(train_idx), generator=generator)]
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            x = shift_augment(images[idx], generator)
            x = x + 0.05 * torch.randn(x.shape, generator=generator)  # tolerate slightly noisy samples
            loss = torch.nn.functional.cross_entropy(model(x), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(images[test_idx]).argmax(1) == labels[test_idx]).float().mean().item()
    print(f"classifier: {parameter_count(model)} parameters, held-out accuracy {accuracy:.3f}", flush=True)
    return model


def train_denoiser(images, labels, steps=DENOISER_STEPS, batch=DENOISER_BATCH, lr=DENOISER_LR, seed=0):
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = DigitDenoiser()
    print(f"denoiser: {parameter_count(model)} parameters, {steps} steps of {batch}", flush=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    start_time, running = time.time(), None
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, steps, lr)
        idx = torch.randint(0, len(images), (batch,), generator=generator)
        rows_labels = labels[idx].clone()
        rows_labels[torch.rand(batch, generator=generator) < LABEL_DROPOUT] = NULL_LABEL
        sigma = sample_training_sigmas(batch, generator)
        noise = torch.randn(images[idx].shape, generator=generator)
        loss = model.loss(images[idx], sigma, model.context(rows_labels), noise)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if (step + 1) % 50 == 0 or step + 1 == steps:
            print(f"  step {step + 1}/{steps}  loss {running:.4f}  {time.time() - start_time:.0f}s", flush=True)
    return model.eval(), running


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=DENOISER_STEPS)
    parser.add_argument("--batch", type=int, default=DENOISER_BATCH)
    parser.add_argument("--denoiser-out", default=DENOISER_PATH)
    parser.add_argument("--classifier-out", default=CLASSIFIER_PATH)
    parser.add_argument("--skip-classifier", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(TRAIN_THREADS)
    images, labels = load_digits_32()
    t0 = time.time()
    if not args.skip_classifier:
        save(train_classifier(images, labels), args.classifier_out)
    print(f"classifier done in {time.time() - t0:.0f}s", flush=True)
    model, final_loss = train_denoiser(images, labels, steps=args.steps, batch=args.batch)
    save(model, args.denoiser_out)
    print(f"done in {time.time() - t0:.0f}s, final (smoothed) denoiser loss {final_loss:.4f}", flush=True)


if __name__ == "__main__":
    main()
