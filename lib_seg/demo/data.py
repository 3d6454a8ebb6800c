"""scikit-learn's bundled 8x8 digits (1797 images, no download), upscaled to 32x32 in [-1, 1].

32x32 so that the UNet's three levels are 32/16/8 and its middle block sees an 8x8 token grid, as
SEG's blur needs a spatial grid of some size to act on.
"""
import numpy as np
import torch
import torch.nn.functional as F

IMAGE_SIZE = 32
NUM_CLASSES = 10


def load_digits_32():
    """-> (images float32 [1797, 1, 32, 32] in [-1, 1], labels int64 [1797]), always in the same order."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    small = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]  # 0..16 ink -> 0..1
    # Bicubic keeps strokes smooth; clamp its overshoot back into the data range.
    big = F.interpolate(small, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bicubic", align_corners=False)
    images = big.clamp(0.0, 1.0) * 2.0 - 1.0
    return images.contiguous(), torch.from_numpy(digits.target.astype(np.int64))


def train_test_split(n, test_fraction=0.2, seed=0):
    """Fixed random split of indices 0..n-1 -> (train, test) index tensors."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = int(round(n * test_fraction))
    return order[n_test:], order[:n_test]
