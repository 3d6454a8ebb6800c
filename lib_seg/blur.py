"""Gaussian blur of attention queries over their token grid (the "smoothed energy" of SEG).

The blur is an exact sampled Gaussian with a half-sample symmetric mirror boundary (``c b a | a b c | c b a``,
period ``P = 2n``). Folding the infinite Gaussian onto one period gives, for a grid axis of length ``n``::

    B[i, j] = (T(i - j) + T(i + j + 1)) / Z,   T(d) = sum_k g(d + P k),   g(x) = exp(-x^2 / (2 sigma^2)),
    Z = sum_{m in Z} g(m) = sum_{d=0}^{P-1} T(d)

Nothing is truncated, so every row sums to 1 for every sigma and ``B -> 1/n`` continuously as sigma grows
(the half-sample mirror is the extension for which that limit is exactly uniform). ``T`` is evaluated in
float64 either by the direct lattice sum (few terms for small sigma) or by its Poisson/theta dual (few terms
for large sigma)::

    T(d) = sqrt(2 pi) sigma / P * (1 + 2 sum_{f>=1} exp(-2 pi^2 sigma^2 f^2 / P^2) cos(2 pi f d / P))

The 2-D blur is separable, ``out = B_h . Q . B_w^T`` per channel: two small matmuls, never an N x N operator.
"""
import functools
import math

import torch

# exp(-x) < 1e-17 for x > 40: terms beyond that do not change a float64 sum.
_NEGLIGIBLE_EXPONENT = 40.0
_HALF_DTYPES = (torch.float16, torch.bfloat16)


def _check_sigma(sigma):
    sigma = float(sigma)
    if math.isnan(sigma) or sigma <= 0:
        raise ValueError(f"SEG blur sigma must be > 0 or inf, got {sigma}")
    return sigma


def _periodic_gaussian_direct(period, sigma):
    """T(d) for d = 0..period-1 by summing g over every lattice point d + period*k with non-negligible weight."""
    radius = sigma * math.sqrt(2 * _NEGLIGIBLE_EXPONENT)
    reach = int(math.ceil(radius / period)) + 1
    d = torch.arange(period, dtype=torch.float64)
    k = torch.arange(-reach, reach + 1, dtype=torch.float64)
    x = d[:, None] + period * k[None, :]
    # (x / sigma) first: 2 sigma^2 underflows to 0 for sigma below ~1e-154, and 0/0 at x = 0 would give NaN.
    return torch.exp(-0.5 * (x / sigma) ** 2).sum(dim=1)


def _periodic_gaussian_dual(period, sigma):
    """T(d) up to the constant factor sqrt(2 pi) sigma / P (which the normalisation cancels), by Poisson summation."""
    frequencies = int(math.ceil(period * math.sqrt(_NEGLIGIBLE_EXPONENT / 2) / (math.pi * sigma))) + 1
    f = torch.arange(1, frequencies + 1, dtype=torch.float64)
    d = torch.arange(period, dtype=torch.float64)
    weights = torch.exp(-2 * (math.pi * sigma * f / period) ** 2)
    waves = torch.cos(2 * math.pi * d[:, None] * f[None, :] / period)
    return 1 + 2 * (waves * weights[None, :]).sum(dim=1)


def _periodic_gaussian(period, sigma):
    # The direct sum needs ~sigma/P terms and the dual ~P/sigma; switching at sigma = P/2 keeps both to a handful
    # and keeps the dual away from small sigma, where its terms would cancel.
    if sigma <= period / 2:
        return _periodic_gaussian_direct(period, sigma)
    return _periodic_gaussian_dual(period, sigma)


@functools.lru_cache(maxsize=64)
def _blur_operator_cached(n, sigma):
    if math.isinf(sigma):
        return torch.full((n, n), 1.0 / n, dtype=torch.float64)
    period = 2 * n
    t = _periodic_gaussian(period, sigma)
    # T is even; averaging T(d) with T(-d) removes summation-order rounding, so B is exactly symmetric.
    t = (t + t[(-torch.arange(period)) % period]) / 2
    # Z = sum of T over one period: the rows below take each residue mod P exactly once, so they sum to 1.
    t = t / t.sum()
    # Sliding windows over two periods give both parts without an n x n index tensor:
    # window s holds tt[s + j], so T(i - j) = T(j - i) = window P - i and T(i + j + 1) = window i + 1.
    windows = torch.cat([t, t]).unfold(0, n, 1)
    return windows[period - n + 1:period + 1].flip(0) + windows[1:n + 1]


def blur_operator(n: int, sigma: float) -> torch.Tensor:
    """The n x n float64 1-D blur operator ``B`` (rows sum to 1); ``out = B @ x`` blurs x along its first axis."""
    n = int(n)
    if n < 1:
        raise ValueError(f"SEG blur: grid size must be >= 1, got {n}")
    return _blur_operator_cached(n, _check_sigma(sigma)).clone()


@functools.lru_cache(maxsize=32)
def _separable_operators(h, w, sigma, device, dtype):
    """(B_h, B_w) for one grid, sigma, device and compute dtype; small, so a bounded cache is cheap."""
    return (_blur_operator_cached(h, sigma).to(device=device, dtype=dtype),
            _blur_operator_cached(w, sigma).to(device=device, dtype=dtype))


def _compute_dtype(dtype):
    # Half-precision inputs are blurred in fp32: the sums of many small weights would lose precision in fp16/bf16.
    return torch.float32 if dtype in _HALF_DTYPES else dtype


def blur_queries(q: torch.Tensor, grid, sigma: float) -> torch.Tensor:
    """Blur queries ``q`` (batch, tokens, channels) over their token grid ``(h, w)`` (row-major tokens).

    sigma > 0 gives the exact mirrored Gaussian blur described in the module docstring; sigma = inf gives the
    exact spatial mean of each (batch, channel), broadcast to every token. The result has q's shape, dtype
    and device; each batch row and channel is blurred independently.
    """
    sigma = _check_sigma(sigma)
    h, w = int(grid[0]), int(grid[1])
    if q.dim() != 3:
        raise ValueError(f"SEG blur: queries must be (batch, tokens, channels), got shape {tuple(q.shape)}")
    if h < 1 or w < 1 or q.shape[1] != h * w:
        raise ValueError(f"SEG blur: {q.shape[1]} tokens do not fill a {h}x{w} grid ({h * w} tokens)")
    compute = _compute_dtype(q.dtype)
    if math.isinf(sigma):
        mean = q.to(compute).mean(dim=1, keepdim=True).to(q.dtype)
        return mean.expand_as(q).contiguous()
    b_h, b_w = _separable_operators(h, w, sigma, q.device, compute)
    batch, _, channels = q.shape
    x = q.to(compute)
    # Along h: (h, h) @ (batch, h, w*C). Along w: (w, w) @ (batch*h, w, C). Both keep tokens row-major.
    x = torch.matmul(b_h, x.reshape(batch, h, w * channels))
    x = torch.matmul(b_w, x.reshape(batch * h, w, channels))
    return x.reshape(batch, h * w, channels).to(q.dtype)
