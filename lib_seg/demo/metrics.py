"""Fréchet distance between two feature sets, each summarised as a Gaussian (mean, covariance):
d² = |μ₁ − μ₂|² + tr(Σ₁ + Σ₂ − 2 (Σ₁^½ Σ₂ Σ₁^½)^½), as in FID (Heusel et al. 2017), here on a small
digit classifier's features instead of Inception's."""
import numpy as np


def gaussian_stats(features):
    """features (n, d) -> (mean (d,), covariance (d, d)), float64, unbiased covariance."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _psd_sqrt(matrix):
    """Square root of a symmetric positive semi-definite matrix via its eigendecomposition; tiny negative
    eigenvalues from rounding are clipped to 0."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance_from_stats(mean1, cov1, mean2, cov2):
    """The squared Fréchet (2-Wasserstein) distance between N(mean1, cov1) and N(mean2, cov2).
    tr((Σ₁Σ₂)^½) is computed as tr((Σ₁^½ Σ₂ Σ₁^½)^½): same eigenvalues, but symmetric, so eigh is stable
    where sqrtm of the non-symmetric product can return complex noise."""
    mean1, mean2 = np.atleast_1d(mean1), np.atleast_1d(mean2)
    cov1, cov2 = np.atleast_2d(cov1), np.atleast_2d(cov2)
    root1 = _psd_sqrt(cov1)
    cross = np.trace(_psd_sqrt(root1 @ cov2 @ root1))
    distance = np.sum((mean1 - mean2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2.0 * cross
    return float(max(distance, 0.0))


def frechet_distance(features1, features2):
    """Fréchet distance between two sets of feature vectors (n1, d) and (n2, d)."""
    return frechet_distance_from_stats(*gaussian_stats(features1), *gaussian_stats(features2))


def class_accuracy(predicted, requested):
    """Fraction of samples the classifier reads as the digit that was asked for."""
    predicted, requested = np.asarray(predicted), np.asarray(requested)
    return float((predicted == requested).mean())
