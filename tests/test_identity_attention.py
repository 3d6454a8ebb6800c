"""Identity-attention mode (PAG's perturbation) on the real ldm UNet: the batched SEG rows equal a separate
UNet pass in which the selected self-attention layers return their value projection (through to_out), and
the other rows are untouched. Also the host-free denoiser in this mode.

Every batched-vs-separate comparison here runs in float64 with the bound of tests/precision.py (a module
fixture); each test also asserts the perturbation's effect exceeds EFFECT of the scale.
"""
import math

import pytest
import torch

from lib_seg.attention import attend_identity, patch_ldm_self_attention
from lib_seg.denoiser import SegCFGDenoiser
from lib_seg.layers import select_self_attention
from lib_seg.params import SegSettings
from lib_seg.session import SegSession
from ldm_wrap import denoiser_for, sampling
from precision import assert_effect, assert_same_arithmetic
from unets import CONTEXT_DIM, sd15_like, sdxl_like

# Batched vs separate evaluations of the same arithmetic: compared in float64 (tests/precision.py).
pytestmark = pytest.mark.usefixtures("float64_module")

EFFECT = 1e-2      # relative: the identity rows must differ from unperturbed ones by more than this


def value_projection_hooks(unet, spec):
    """The reference perturbation, written independently of lib_seg.attention: forward hooks making each
    selected attn1 return to_out(to_v(its input)), i.e. attention whose map is the identity."""
    modules = dict(unet.named_modules())
    return [modules[name].register_forward_hook(lambda m, args, out: m.to_out(m.to_v(args[0])))
            for name in select_self_attention(unet, spec)]


LAYOUTS = {"sd15": sd15_like, "sdxl": sdxl_like}


def _inputs(arch, batch):
    g = torch.Generator().manual_seed(5)
    # 16 x 40: non-square grids (mid 2 x 5) with PAG's effect at or above its size at 32 x 24 (sd15 mid: 1.8x EFFECT
    # vs 1.6x), for two thirds of the float64 cost (level 0 has 640 tokens instead of 768)
    x = torch.randn(batch, 4, 16, 40, generator=g)
    cond, uncond = torch.randn(batch, 7, CONTEXT_DIM, generator=g), torch.randn(batch, 7, CONTEXT_DIM, generator=g)
    y = torch.randn(batch, 1, generator=g) if arch == "sdxl" else None  # SDXL-like: a per-row vector input
    return x, cond, uncond, y


def _unet_call(unet, x, context, y):
    kwargs = {} if y is None else {"y": y}
    with torch.no_grad():
        return unet(x, torch.full((x.shape[0],), 500.0), context=context, **kwargs)


def _rep(t, n):
    return None if t is None else torch.cat([t] * n)


@pytest.mark.parametrize("arch, spec", [("sd15", "mid"), ("sd15", "all"), ("sdxl", "all"), ("sdxl", "d2-3, m0.1")])
@pytest.mark.parametrize("chunked", [False, True])
def test_identity_rows_equal_a_separate_pass_returning_the_value_projection(arch, spec, chunked):
    """Batch 2 laid out [cond | SEG | uncond] as the hosts do: in one call, or (chunked, as A1111 with
    batch_cond_uncond off) one call per chunk of B rows, the middle one all SEG rows."""
    unet = LAYOUTS[arch]()
    b = 2
    x, cond, uncond, y = _inputs(arch, b)
    plain = _unet_call(unet, torch.cat([x, x]), torch.cat([cond, uncond]), _rep(y, 2))
    handles = value_projection_hooks(unet, spec)
    try:
        reference = _unet_call(unet, x, cond, y)
    finally:
        for handle in handles:
            handle.remove()

    session = SegSession(SegSettings(enabled=True, mode="identity", layers=spec))
    modules = dict(unet.named_modules())
    with session:
        patch_ldm_self_attention(session.registry, [modules[n] for n in select_self_attention(unet, spec)], session)
        if chunked:
            outs = []
            for rows, seg, context in ((x, slice(0, 0), cond), (x, slice(0, b), cond), (x, slice(0, 0), uncond)):
                session.set_call(seg, rows.shape[-2:])
                outs.append(_unet_call(unet, rows, context, y))
            batched = torch.cat(outs)
        else:
            session.set_call(slice(b, 2 * b), x.shape[-2:])
            batched = _unet_call(unet, torch.cat([x, x, x]), torch.cat([cond, cond, uncond]), _rep(y, 3))

    assert_same_arithmetic(batched[b:2 * b], reference)
    assert_effect(reference, plain[:b], EFFECT)
    # the cond and uncond rows attend as without the extension
    assert_same_arithmetic(batched[:b], plain[:b])
    assert_same_arithmetic(batched[2 * b:], plain[b:])
    assert not any("forward" in vars(m) for m in unet.modules())


def test_attend_identity_rows_and_the_unsplit_form():
    """Every position of the SEG rows, and only of them, gets its own value; the unsplit form (for foreign
    hooks that need the whole batch) gives the same result."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(5, 12, 8) for _ in range(3))

    def attend(q_rows, kv_rows):
        weights = torch.softmax(q_rows @ k[kv_rows].transpose(1, 2) / math.sqrt(8), dim=-1)
        return weights @ v[kv_rows]

    expected = attend(q, slice(0, 5))
    for seg in (slice(0, 2), slice(2, 4), slice(3, 5), slice(0, 5), slice(2, 2)):
        expected_seg = expected.clone()
        expected_seg[seg] = v[seg]
        for split in (True, False):
            out = attend_identity(attend, lambda rows: v[rows], q, seg, split=split)
            assert_same_arithmetic(out, expected_seg)


def test_sigma_is_ignored_in_identity_mode():
    unet = sd15_like()
    x, cond, _, _ = _inputs("sd15", 1)
    outs = []
    for sigma in (1.0, math.inf):
        session = SegSession(SegSettings(enabled=True, mode="identity", sigma=sigma, layers="all"))
        with session:
            modules = dict(unet.named_modules())
            patch_ldm_self_attention(session.registry, [modules[n] for n in select_self_attention(unet, "all")],
                                     session)
            session.set_call(slice(1, 2), x.shape[-2:])
            outs.append(_unet_call(unet, torch.cat([x, x]), torch.cat([cond, cond]), None))
    assert torch.equal(outs[0], outs[1])


# ---------------------------------------------------------------- the host-free denoiser (demo, benchmark)

STEPS = 4


def _sample_identity_reference(unet, spec, scale, x, sigmas, cond):
    """CFG 1 (no uncond pass): eps = cond + s (cond - pag), the PAG prediction from a separate UNet call with
    the value-projection hooks, sampled with the same Euler sampler."""
    denoiser = denoiser_for(unet).to(torch.get_default_dtype())

    def model(x, sigma):
        c = denoiser(x, sigma, cond=cond)
        handles = value_projection_hooks(unet, spec)
        try:
            pag = denoiser(x, sigma, cond=cond)
        finally:
            for handle in handles:
                handle.remove()
        return c + scale * (c - pag)

    with torch.no_grad():
        return sampling.sample_euler(model, x, sigmas, disable=True)


def test_denoiser_identity_batched_equals_separate_reference_at_cfg_1():
    """lib_seg.denoiser batched ([cond | PAG] in one call), batch 2, CFG 1, over 4 Euler steps, against the
    hooked separate pass. Round-off of a step's guided prediction can be up to (1 + 2s) = 6 times that of one
    UNet output, but it enters the sample scaled by the step size and the sample is dominated by the noise
    it starts from: measured 1.5e-6 to 1.7e-6 of the sample's scale (AVX-512, AVX2, default kernels),
    inside the float64 bound; the guidance changes the sample by 0.13 of its scale."""
    unet = sd15_like()
    settings = SegSettings(enabled=True, mode="identity", layers="d4-5, m0", scale=2.5)
    denoiser = denoiser_for(unet).to(torch.get_default_dtype())
    sigmas = denoiser.get_sigmas(STEPS)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 24, 16, generator=g) * sigmas[0]
    cond = torch.randn(2, 7, CONTEXT_DIM, generator=g)
    model = SegCFGDenoiser(denoiser, unet, settings, cfg_scale=1.0, total_steps=STEPS)
    with torch.no_grad(), model:
        batched = sampling.sample_euler(model, x, sigmas, extra_args={"cond": cond}, disable=True)
    assert (model.unet_calls, model.unet_rows) == (STEPS, STEPS * 4)  # one call per step: 2 cond + 2 PAG rows
    reference = _sample_identity_reference(unet, settings.layers, settings.scale, x, sigmas, cond)
    plain = SegCFGDenoiser(denoiser, unet, SegSettings(), cfg_scale=1.0, total_steps=STEPS)
    with torch.no_grad(), plain:
        unguided = sampling.sample_euler(plain, x, sigmas, extra_args={"cond": cond}, disable=True)
    assert_same_arithmetic(batched, reference)
    assert_effect(batched, unguided, EFFECT)
