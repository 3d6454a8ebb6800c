"""The embedded demo: shipped weights, Fréchet distance maths, and the demo/evaluation end to end
in a reduced setting (few steps, few samples)."""
import hashlib
import math
import os

import numpy as np
import pytest
import torch

from lib_seg.demo import CLASSIFIER_PATH, DENOISER_PATH
from lib_seg.demo import metrics

# Written by `python -m lib_seg.demo.train`; a change here means the shipped weights changed.
DENOISER_SHA256 = "29fd9c1ae21e2ab3822ad1a28c216251d6fdde242f56fc6eb9d1f89c884497d8"
CLASSIFIER_SHA256 = "274479eeac429c97aa2627042259414c8f759bce0cc82c975c5ebda9e3a30c54"


def sha256_of(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# ---- shipped weights -------------------------------------------------------------------------------

def test_shipped_weights_are_the_trained_ones_and_small():
    assert sha256_of(DENOISER_PATH) == DENOISER_SHA256
    assert sha256_of(CLASSIFIER_PATH) == CLASSIFIER_SHA256
    assert os.path.getsize(DENOISER_PATH) <= 5_000_000
    assert os.path.getsize(CLASSIFIER_PATH) <= 1_000_000


@pytest.fixture(scope="module")
def denoiser():
    from lib_seg.demo.model import load_denoiser
    return load_denoiser()


def test_denoiser_loads_into_the_real_ldm_unet_with_attention_where_seg_needs_it(denoiser):
    from ldm.modules.diffusionmodules.openaimodel import UNetModel
    from lib_seg.layers import describe
    assert isinstance(denoiser.unet, UNetModel)
    assert describe(denoiser.unet) == "d0-d1, m0, u0-u3"  # self-attention at 16x16 and 8x8, and the middle


def test_classifier_reads_real_digits():
    from lib_seg.demo.classifier import features_and_predictions, load_classifier
    from lib_seg.demo.data import load_digits_32, train_test_split
    images, labels = load_digits_32()
    _, test = train_test_split(len(images))
    features, predicted = features_and_predictions(load_classifier(), images[test])
    assert features.shape == (len(test), 64)
    assert metrics.class_accuracy(predicted, labels[test]) > 0.95


def test_digits_are_32x32_in_minus_one_to_one():
    from lib_seg.demo.data import load_digits_32
    images, labels = load_digits_32()
    assert images.shape == (1797, 1, 32, 32) and labels.shape == (1797,)
    assert images.min() == -1.0 and images.max() == 1.0


# ---- Fréchet distance ------------------------------------------------------------------------------
# float64 linear algebra on ≤ 8-dimensional covariances of condition ≲ 1e3: errors ≲ cond · 2^-53 · trace ≈ 1e-12,
# so the bounds below (1e-8 absolute, 1e-9 to 1e-6 relative) leave a factor ≥ 100 on any BLAS.

def test_frechet_distance_of_a_set_to_itself_is_zero():
    features = np.random.default_rng(0).normal(size=(500, 8))
    assert metrics.frechet_distance(features, features) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_grows_with_a_shift_by_its_squared_length():
    features = np.random.default_rng(1).normal(size=(400, 6))
    shift = np.array([0.5, 0, 0, 0, 0, 0])
    small = metrics.frechet_distance(features, features + shift)
    large = metrics.frechet_distance(features, features + 3 * shift)
    assert small == pytest.approx(0.25, rel=1e-6)  # same covariance: only |Δμ|² remains
    assert large == pytest.approx(2.25, rel=1e-6) and large > small


def test_frechet_distance_matches_the_gaussian_closed_form():
    # Diagonal (commuting) covariances: d² = |μ₁−μ₂|² + Σ (√a − √b)².
    m1, m2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    expected = 1 + 4 + (1 - 2) ** 2 + (2 - 1) ** 2 + 0
    assert metrics.frechet_distance_from_stats(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(expected, rel=1e-9)
    # 1-D: (m1 − m2)² + (s1 − s2)².
    assert metrics.frechet_distance_from_stats(0.0, 4.0, 3.0, 1.0) == pytest.approx(9 + 1, rel=1e-9)


def test_frechet_distance_agrees_with_scipy_sqrtm_for_non_commuting_covariances():
    from scipy.linalg import sqrtm
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    c1, c2 = x @ x.T + 0.1 * np.eye(5), y @ y.T + 0.1 * np.eye(5)
    m1, m2 = rng.normal(size=5), rng.normal(size=5)
    reference = np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * np.real(sqrtm(c1 @ c2)))
    assert metrics.frechet_distance_from_stats(m1, c1, m2, c2) == pytest.approx(reference, rel=1e-7)


def test_frechet_distance_from_samples_approaches_the_closed_form():
    rng = np.random.default_rng(3)
    first = rng.normal(0.0, 1.0, size=(20000, 2))
    second = rng.normal(1.0, 2.0, size=(20000, 2))
    # estimated from 20 000 samples: the standard error of |Δμ|² + covariance terms is ~1-2 % of 4, so 5 % is
    # several standard errors (the seed is fixed, so this is also deterministic)
    assert metrics.frechet_distance(first, second) == pytest.approx(2 * (1 + 1), rel=0.05)


# ---- sampling through the SEG engine ----------------------------------------------------------------

def test_seg_changes_samples_and_leaves_the_model_untouched_afterwards(denoiser):
    from lib_seg.demo.sample import Setting, sample, seg_settings
    labels = torch.arange(2)
    plain = sample(denoiser, Setting("plain", False), labels, steps=2)
    seg = sample(denoiser, Setting("seg", False, seg=seg_settings(3.0, math.inf, "mid")), labels, steps=2)
    again = sample(denoiser, Setting("plain", False), labels, steps=2)
    assert not torch.allclose(plain, seg, atol=1e-3)  # SEG moves samples in [-1, 1] by more than 1e-3
    assert torch.equal(plain, again)  # every patch removed when the pass ended


def test_demo_writes_a_labelled_grid(tmp_path):
    from PIL import Image
    from lib_seg.demo.__main__ import main
    out = tmp_path / "grid.png"
    main(["--steps", "2", "--columns", "2", "--sigmas", "inf", "--out", str(out)])
    width, height = Image.open(out).size
    assert width > 2 * 64 and height > 4 * 64  # 4 rows: unconditional, + SEG, CFG, CFG + SEG


def test_evaluate_reports_every_setting(tmp_path, denoiser):
    from lib_seg.demo.classifier import load_classifier
    from lib_seg.demo.evaluate import evaluate, markdown_table
    from lib_seg.demo.sample import demo_settings
    settings = demo_settings([math.inf], 3.0, 3.0, "mid")
    report = evaluate(denoiser, load_classifier(), settings, n=10, steps=2, log=lambda line: None)
    assert [row["setting"] for row in report["rows"]] == [s.name for s in settings]
    assert all(row["fd"] >= 0 for row in report["rows"])
    assert report["rows"][0]["accuracy"] is None and 0 <= report["rows"][-1]["accuracy"] <= 1
    assert markdown_table(report).count("\n") == len(settings) + 2
