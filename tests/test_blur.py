"""lib_seg.blur against independent restatements: a brute-force dense operator, the official SEG blur, the paper's
identity on attention logits, half precision, and a grid too large for any N x N operator.

Tolerances, from the arithmetic (u = unit round-off: 2^-53 float64, 2^-24 float32, 2^-11 float16, 2^-8 bfloat16):
- operator entries and float64 blurs are sums of at most N = h·w positively weighted terms of size ≤ max|q|
  (≈ 4 here); each side is within ~N·u·max|q| ≲ 3e-14 of the exact value, so 1e-12 (or 1e-13 for the 1-D
  operator, whose entries are ≤ 1) holds with a factor ≥ 10 (seen: ≤ 6.2e-14 on every kernel);
- float32 blurs: inputs and operator rounded (2u) plus two separable passes of ≤ h and ≤ w terms, so
  (2 + h + w)·u·max|q| (seen: ≤ 5.2e-7 against a bound of ≥ 5e-6);
- half precision is computed in float32 and rounded once at the end: ≤ u of the value; 4u is asserted.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lib_seg import blur
from lib_seg.blur import blur_operator, blur_queries

SIGMAS = [0.3, 1.0, 3.0, 10.0, 100.0, 1e4, math.inf]
GRIDS = [(8, 8), (6, 10), (5, 13), (1, 7)]


# ---------------------------------------------------------------------------------------------------------------
# Independent restatements


def mirrored_index_table(n):
    """Where each position of one period (2n) of the half-sample mirrored extension c b a | a b c | c b a reads from."""
    table = []
    for r in range(2 * n):
        table.append(r if r < n else 2 * n - 1 - r)
    return np.array(table)


def brute_force_operator_1d(n, sigma):
    """Blur a 1-D signal of length n with a long, explicitly sampled Gaussian (12 sigma either side, far past where
    it underflows in float64), reading outside the signal through the mirror. Row i of the result holds the weight
    every input position receives for output i."""
    if math.isinf(sigma):
        return np.full((n, n), 1.0 / n)
    radius = int(math.ceil(12 * sigma)) + 1
    offsets = np.arange(-radius, radius + 1)
    gauss = np.exp(-offsets.astype(np.float64) ** 2 / (2 * sigma ** 2))
    gauss /= gauss.sum()
    table = mirrored_index_table(n)
    op = np.zeros((n, n))
    for i in range(n):
        np.add.at(op[i], table[(i - offsets) % (2 * n)], gauss)
    return op


def dense_operator_2d(grid, sigma):
    """The full (h*w) x (h*w) operator on row-major tokens: blur along rows and columns independently."""
    h, w = grid
    return np.kron(brute_force_operator_1d(h, sigma), brute_force_operator_1d(w, sigma))


def dense_blur(q, grid, sigma):
    op = torch.from_numpy(dense_operator_2d(grid, sigma)).to(q.dtype)
    return torch.einsum("nm,bmc->bnc", op, q)


def official_seg_blur(q, height, width, sigma):
    """The blur of the official SEG-SDXL pipeline, restated. Kernel length: ceil(6 sigma) + 1, raised by one if even,
    then capped to the height (the height itself when odd, height + 1 when even; the official code assumes a square
    grid). Weights: a Gaussian sampled at integer offsets from the kernel centre, divided by their sum over the
    kernel; the 2-D kernel is the outer product. The (channels, height, width) image is padded by half the kernel
    with whole-sample reflection (d c b | a b c d | c b a) and convolved channel by channel."""
    k = math.ceil(6 * sigma) + 1
    if k % 2 == 0:
        k += 1
    k = min(k, height - (height % 2 - 1))
    offsets = torch.arange(k, dtype=torch.float32) - (k - 1) / 2
    g = torch.exp(-0.5 * (offsets / sigma) ** 2)
    g = g / g.sum()
    kernel = torch.outer(g, g)
    b, n, c = q.shape
    image = q.permute(0, 2, 1).reshape(b, c, height, width)
    image = F.pad(image, (k // 2, k // 2, k // 2, k // 2), mode="reflect")
    out = F.conv2d(image, kernel.expand(c, 1, k, k), groups=c)
    return out.reshape(b, c, n).permute(0, 2, 1)


def random_queries(grid, batch=2, channels=3, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, grid[0] * grid[1], channels, generator=generator, dtype=torch.float64).to(dtype)


# ---------------------------------------------------------------------------------------------------------------
# The operator


@pytest.mark.parametrize("n", [1, 2, 5, 8, 13, 64])
@pytest.mark.parametrize("sigma", SIGMAS + [0.01, 7.9, 8.0, 8.1])
def test_operator_matches_brute_force_fold(n, sigma):
    op = blur_operator(n, sigma)
    assert op.dtype == torch.float64 and op.shape == (n, n)
    reference = brute_force_operator_1d(n, sigma)
    np.testing.assert_allclose(op.numpy(), reference, rtol=1e-9, atol=1e-13)  # entries ≤ 1, n ≤ 64 terms
    np.testing.assert_allclose(op.sum(dim=1).numpy(), 1.0, atol=1e-14)  # ≤ 64 terms: ≤ 64·u ≈ 7e-15
    assert torch.equal(op, op.T)


@pytest.mark.parametrize("n", [3, 16, 100])
def test_direct_sum_and_theta_dual_agree_where_both_converge(n):
    """The two ways of evaluating the folded Gaussian are used on either side of sigma = n; check them on both sides.
    At small sigma the dual's terms cancel, so it is only accurate in absolute terms there (hence the switch)."""
    period = 2 * n
    for sigma in [n / 8, n / 4, n / 2, n, 2 * n, 8 * n]:
        direct = blur._periodic_gaussian_direct(period, sigma)
        dual = blur._periodic_gaussian_dual(period, sigma)
        direct, dual = (direct / direct.sum()).numpy(), (dual / dual.sum()).numpy()
        # the dual cancels terms of size ~1 at small sigma: absolute agreement to ~10 u there
        np.testing.assert_allclose(direct, dual, rtol=1e-12, atol=1e-15)
        if sigma >= n / 2:  # no cancellation: both are sums of ≤ ~100 positive terms, ≤ 100·u ≈ 1e-14 relative
            np.testing.assert_allclose(direct, dual, rtol=1e-11)


def test_operator_tends_to_uniform_and_inf_is_exactly_uniform():
    assert torch.equal(blur_operator(7, math.inf), torch.full((7, 7), 1 / 7, dtype=torch.float64))
    # at sigma = 1e6 the deviation from uniform (~exp(-2π²σ²/P²)) underflows: only round-off of 1/7 is left
    assert torch.allclose(blur_operator(7, 1e6), blur_operator(7, math.inf), rtol=0, atol=1e-15)


# ---------------------------------------------------------------------------------------------------------------
# blur_queries against the dense operator


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("sigma", SIGMAS)
def test_blur_matches_dense_operator_fp64(grid, sigma):
    q = random_queries(grid)
    out = blur_queries(q, grid, sigma)
    assert out.shape == q.shape and out.dtype == torch.float64
    torch.testing.assert_close(out, dense_blur(q, grid, sigma), rtol=0, atol=1e-12)


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("sigma", SIGMAS)
def test_blur_matches_dense_operator_fp32(grid, sigma):
    q = random_queries(grid)
    out = blur_queries(q.float(), grid, sigma)
    assert out.dtype == torch.float32
    bound = (2 + grid[0] + grid[1]) * 2.0 ** -24 * q.abs().max().item()  # see the module docstring
    torch.testing.assert_close(out.double(), dense_blur(q, grid, sigma), rtol=0, atol=bound)


def test_inf_is_the_exact_spatial_mean():
    q = random_queries((6, 10), dtype=torch.float32)
    out = blur_queries(q, (6, 10), math.inf)
    assert torch.equal(out, q.mean(dim=1, keepdim=True).expand_as(q))


def test_batch_rows_and_channels_are_blurred_independently():
    grid = (5, 13)
    q = random_queries(grid, batch=3, channels=4)
    whole = blur_queries(q, grid, 2.0)
    for b in range(3):
        for c in range(4):
            alone = blur_queries(q[b:b + 1, :, c:c + 1], grid, 2.0)
            torch.testing.assert_close(whole[b:b + 1, :, c:c + 1], alone, rtol=0, atol=1e-14)


# ---------------------------------------------------------------------------------------------------------------
# Agreement with the official blur where its kernel fits


@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.0])
def test_interior_agrees_with_official_blur(sigma):
    h, w = 32, 48
    q = random_queries((h, w), batch=2, channels=8, dtype=torch.float32)
    ours = blur_queries(q, (h, w), sigma).reshape(2, h, w, 8)
    theirs = official_seg_blur(q, h, w, sigma).reshape(2, h, w, 8)
    margin = math.ceil(3 * sigma)
    inner = (slice(None), slice(margin, h - margin), slice(margin, w - margin))
    difference = (ours[inner] - theirs[inner]).norm() / theirs[inner].norm()
    assert difference < 0.01, f"interior relative error {difference:.4%} at sigma={sigma}"


# ---------------------------------------------------------------------------------------------------------------
# Continuity toward sigma = inf


def deviation_from_mean(q, grid, sigma):
    """max |blur - spatial mean| relative to the query's spatial range, worst over batch and channels."""
    out = blur_queries(q, grid, sigma)
    spread = q.amax(dim=1) - q.amin(dim=1)
    return ((out - q.mean(dim=1, keepdim=True)).abs().amax(dim=1) / spread).max().item()


def test_large_sigma_is_within_one_percent_of_the_mean():
    grid = (64, 96)
    q = random_queries(grid, channels=4)
    assert deviation_from_mean(q, grid, 1e4) < 0.01


def test_approach_to_the_mean_is_monotone():
    # A long axis (period 6000) so the approach is still visible at sigma = 1000.
    grid = (4, 3000)
    q = random_queries(grid, batch=1, channels=2)
    deviations = [deviation_from_mean(q, grid, s) for s in [10.0, 100.0, 1000.0, 1e4]]
    assert all(a > b for a, b in zip(deviations, deviations[1:])), deviations
    assert deviations[-1] < 0.01
    assert deviation_from_mean(q, grid, math.inf) < 1e-12


# ---------------------------------------------------------------------------------------------------------------
# Half precision


@pytest.mark.parametrize("dtype,tolerance", [(torch.float16, 4 * 2.0 ** -11), (torch.bfloat16, 4 * 2.0 ** -8)])
@pytest.mark.parametrize("sigma", [0.5, 3.0, 1e4, math.inf])
def test_half_precision_keeps_dtype_and_matches_fp32(dtype, tolerance, sigma):
    grid = (16, 24)
    q = (random_queries(grid, channels=8) * 4).to(dtype)
    out = blur_queries(q, grid, sigma)
    assert out.dtype == dtype and out.device == q.device and out.shape == q.shape
    reference = blur_queries(q.float(), grid, sigma)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), reference, rtol=tolerance, atol=tolerance * reference.abs().max().item())


def test_large_values_do_not_overflow_in_fp16():
    grid = (8, 8)
    q = torch.full((1, 64, 2), 60000.0, dtype=torch.float16)
    for sigma in [1.0, 1e4, math.inf]:
        out = blur_queries(q, grid, sigma)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, q, rtol=2 * 2.0 ** -11, atol=0)  # a constant blurs to itself, rounded


# ---------------------------------------------------------------------------------------------------------------
# Cost and caching


def test_large_grid_runs_with_small_separable_operators():
    """256 x 256 tokens: an N x N fp32 operator would take 17 GB. Only the two 256 x 256 factors may exist."""
    grid = (256, 256)
    q = torch.randn(1, 256 * 256, 4)
    blur._separable_operators.cache_clear()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        out = blur_queries(q, grid, 4.0)
    assert out.shape == q.shape
    largest_allocation = max(e.cpu_memory_usage for e in prof.events())
    assert largest_allocation <= q.numel() * 8, largest_allocation  # a couple of query-sized buffers at most
    b_h, b_w = blur._separable_operators(256, 256, 4.0, q.device, torch.float32)
    assert b_h.shape == (256, 256) and b_w.shape == (256, 256)
    info = blur._separable_operators.cache_info()
    assert info.currsize == 1 and info.hits >= 1


def test_operator_cache_is_bounded_and_keyed_by_dtype():
    assert blur._separable_operators.cache_info().maxsize is not None
    assert blur._blur_operator_cached.cache_info().maxsize is not None
    blur._separable_operators.cache_clear()
    grid = (6, 10)
    q = random_queries(grid)
    blur_queries(q, grid, 2.0)
    blur_queries(q.float(), grid, 2.0)
    blur_queries(q.half(), grid, 2.0)  # computed in fp32: shares the fp32 entry
    assert blur._separable_operators.cache_info().currsize == 2


# ---------------------------------------------------------------------------------------------------------------
# The paper's identity: blurring queries == blurring the attention logits along the query axis


@pytest.mark.parametrize("sigma", [0.7, 3.0, math.inf])
def test_blurred_queries_give_blurred_logits(sigma):
    grid = (6, 10)
    q = random_queries(grid, batch=2, channels=5, seed=1)
    k = random_queries((1, 11), batch=2, channels=5, seed=2)
    logits_from_blurred_queries = blur_queries(q, grid, sigma) @ k.transpose(1, 2)
    # Each column of the logits (one key) is a signal over the query grid; blur it with the dense operator.
    op = torch.from_numpy(dense_operator_2d(grid, sigma))
    blurred_logits = op @ (q @ k.transpose(1, 2))
    torch.testing.assert_close(logits_from_blurred_queries, blurred_logits, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize("sigma", [0.0, -1.0, math.nan, -math.inf])
def test_rejects_non_positive_or_nan_sigma(sigma):
    with pytest.raises(ValueError, match="sigma"):
        blur_queries(torch.zeros(1, 4, 1), (2, 2), sigma)
    with pytest.raises(ValueError, match="sigma"):
        blur_operator(4, sigma)


def test_rejects_a_grid_that_does_not_match_the_tokens():
    with pytest.raises(ValueError, match=r"15 tokens.*4x4.*16"):
        blur_queries(torch.zeros(1, 15, 1), (4, 4), 1.0)


@pytest.mark.parametrize("sigma", [5e-324, 1e-320, 1e-300, 1e-160, 1e-3])
def test_tiny_sigma_is_the_identity_not_nan(sigma):
    # Found by the API fuzz (issue 22): with exp(-x^2 / (2 sigma^2)), 2 sigma^2 underflows to 0 below ~1e-154 and
    # the centre tap became 0/0 = NaN. A vanishing blur is the identity, exactly (every other tap is exp(-inf)).
    assert torch.equal(blur_operator(5, sigma), torch.eye(5, dtype=torch.float64))
    q = torch.randn(2, 12, 3)
    assert torch.equal(blur_queries(q, (3, 4), sigma), q)
