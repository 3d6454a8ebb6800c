"""Tolerances for the test suite, each derived from the arithmetic it bounds, and float64 runs of the
real ldm UNet for the claims that two evaluation orders compute the same numbers.

Why float64 for those claims (batched vs separate pass, chunked vs whole batch, 154 vs 77 tokens, the
σ = ∞ single-query shortcut vs full attention, blurring to_q's input vs its output): in float32 they differ
by round-off that depends on the CPU's kernels: a batch of 6 rows and two batches of 3 run through
different GEMM blockings, and AVX2, AVX-512 and the default kernels block differently. Through a small
UNet and 4 sampler steps that is up to ~50 float32 units of round-off relative to the output's scale
(1.6e-4 at a scale of 59, seen on an AVX2-only CPU), only ~1000x below SEG's own effect in these tiny
models, too close to tell a bug from a kernel. In float64 the same amplification is ~50 x 2^-53 ≈ 6e-15
relative, so a bound of REL64 = 1e-9 of the scale holds on any kernel with a factor 1e5 to spare, and
every such test also asserts that SEG's effect is > 1e-3 relative, a factor 1e6 above the bound: a
wrong row, a missing blur or a wrong sign fails by six orders of magnitude.

ldm hard-codes float32 in three places (GroupNorm32 normalises in float32, CrossAttention casts q and k
to float32 for the logits, timestep_embedding builds its sinusoids in float32); ``float64()`` makes each
compute in its input's dtype instead. All three are no-ops for a float32 model, which every other test
uses as is.
"""
import contextlib
import math

import torch

REL64 = 1e-9
"""Bound on |a − b| / max(|a|, 1) for float64 evaluations of the same arithmetic in another order (above)."""

MIN_EFFECT = 1e-3
"""SEG's effect, relative to the scale, must exceed this in every equality test: REL64 x 1e6."""


def assert_same_arithmetic(a, b, effect_from=None):
    """`a` and `b` (float64) are one computation evaluated in two orders: equal to REL64 of their scale.
    If `effect_from` is given (the result without SEG), SEG's effect on `a` must be ≥ MIN_EFFECT of the
    scale, so the equality is not vacuous."""
    assert a.dtype == b.dtype == torch.float64, "order-equality checks run in float64 (see tests/precision.py)"
    scale = max(a.abs().max().item(), 1.0)
    error = (a - b).abs().max().item()
    assert error <= REL64 * scale, f"max difference {error:.3g} at scale {scale:.3g} (bound {REL64:g} x scale)"
    if effect_from is not None:
        effect = (a - effect_from).abs().max().item()
        assert effect >= MIN_EFFECT * scale, f"SEG's effect {effect:.3g} is below {MIN_EFFECT:g} x scale {scale:.3g}"


def _timestep_embedding_in_dtype(timesteps, dim, max_period=10000, repeat_only=False):
    """ldm's sinusoidal embedding, computed in the timesteps' floating dtype instead of float32."""
    if repeat_only:
        return timesteps[:, None].expand(-1, dim)
    dtype = timesteps.dtype if timesteps.is_floating_point() else torch.get_default_dtype()
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=dtype, device=timesteps.device) / half)
    args = timesteps[:, None].to(dtype) * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


@contextlib.contextmanager
def float64():
    """Inside: new tensors and the test UNets (tests/unets.py) default to float64, and ldm's float32 casts
    follow the input's dtype. Build the models inside."""
    from ldm.modules import attention
    from ldm.modules.diffusionmodules import openaimodel, util

    saved = (torch.get_default_dtype(), attention._ATTN_PRECISION, util.GroupNorm32.forward,
             openaimodel.timestep_embedding, util.timestep_embedding)
    torch.set_default_dtype(torch.float64)
    attention._ATTN_PRECISION = "as-input"        # anything but "fp32": no q/k cast
    util.GroupNorm32.forward = torch.nn.GroupNorm.forward
    openaimodel.timestep_embedding = util.timestep_embedding = _timestep_embedding_in_dtype
    try:
        yield
    finally:
        (dtype, attention._ATTN_PRECISION, util.GroupNorm32.forward, openaimodel.timestep_embedding,
         util.timestep_embedding) = saved
        torch.set_default_dtype(dtype)


def assert_effect(changed, unchanged, at_least=MIN_EFFECT):
    """A perturbation moved `changed` away from `unchanged` by more than `at_least` of the scale."""
    scale = max(unchanged.abs().max().item(), 1.0)
    change = (changed - unchanged).abs().max().item()
    assert change > at_least * scale, f"changed by only {change:.3g} at scale {scale:.3g} (need > {at_least:g} x scale)"
