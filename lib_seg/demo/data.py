"""Mirror digits: scikit-learn's bundled 8x8 digits (1797, no download) drawn into the left half of a 32x32
image and mirrored into the right half, in [-1, 1].

Why mirrored: a sample is right only if its two halves agree pixel for pixel, up to 31 pixels apart. A small
UNet's convolutions see a few pixels; what carries that agreement across the image is self-attention (at
16x16 and 8x8 here). So smoothing self-attention, which SEG does, is a perturbation of exactly the global
structure, and that structure has an exact score: `asymmetry` is 0 for every real image.

Each image is a glyph (the digit resized to 24x12) at a random place in the 32x16 half (9 x 5 offsets), so
the model sees 45 variants of each digit and cannot get symmetry right by memorising 1797 images.
"""
import numpy as np
import torch
import torch.nn.functional as F

IMAGE_SIZE = 32
NUM_CLASSES = 10
GLYPH_SHAPE = (24, 12)                 # (height, width) of a digit inside the left half
HALF_SHAPE = (IMAGE_SIZE, IMAGE_SIZE // 2)
OFFSETS = (HALF_SHAPE[0] - GLYPH_SHAPE[0] + 1, HALF_SHAPE[1] - GLYPH_SHAPE[1] + 1)  # (9, 5) places


def load_glyphs():
    """-> (glyphs float32 [1797, 1, 24, 12] ink in [0, 1], labels int64 [1797]), always in the same order."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    small = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]  # 0..16 ink -> 0..1
    # Bicubic keeps strokes smooth; clamp its overshoot back into the ink range.
    glyphs = F.interpolate(small, size=GLYPH_SHAPE, mode="bicubic", align_corners=False).clamp(0.0, 1.0)
    return glyphs.contiguous(), torch.from_numpy(digits.target.astype(np.int64))


def mirror_images(glyphs, offsets):
    """glyphs (n, 1, 24, 12) in [0, 1], offsets int (n, 2) of (dy, dx) -> images (n, 1, 32, 32) in [-1, 1]:
    the glyph placed at the offset in the left half, the right half its mirror image."""
    half = torch.zeros((len(glyphs), 1) + HALF_SHAPE)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        half[i, :, dy:dy + GLYPH_SHAPE[0], dx:dx + GLYPH_SHAPE[1]] = glyphs[i]
    return torch.cat([half, half.flip(-1)], dim=-1) * 2.0 - 1.0


def random_offsets(n, generator):
    return torch.stack([torch.randint(0, OFFSETS[0], (n,), generator=generator),
                        torch.randint(0, OFFSETS[1], (n,), generator=generator)], dim=1)


def random_batch(glyphs, labels, indices, generator):
    """Training images for the glyphs at `indices`, each at a random place -> (images, labels)."""
    return mirror_images(glyphs[indices], random_offsets(len(indices), generator)), labels[indices]


def reference_images(indices=None, per_glyph=1, seed=0):
    """A fixed set of real images (every glyph, or those at `indices`, `per_glyph` times at seeded random
    places) -> (images, labels): what samples are scored against."""
    glyphs, labels = load_glyphs()
    indices = torch.arange(len(glyphs)) if indices is None else indices
    indices = indices.repeat(per_glyph)
    return random_batch(glyphs, labels, indices, torch.Generator().manual_seed(seed))


def asymmetry(images):
    """Per image: the mean |x - mirror(x)| / 2 over its pixels, in units of the ink range [0, 1] (images in
    [-1, 1]). 0 for every real image; 1 for an image whose left half is all ink and right half empty."""
    images = images.float().clamp(-1.0, 1.0)
    return ((images - images.flip(-1)).abs() / 2.0).mean(dim=(1, 2, 3))


def train_test_split(n, test_fraction=0.2, seed=0):
    """Fixed random split of indices 0..n-1 -> (train, test) index tensors."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = int(round(n * test_fraction))
    return order[n_test:], order[:n_test]
