"""The host-free CFG+SEG denoiser under a real k-diffusion sampler on the real ldm UNet."""
import math

import pytest
import torch

from lib_seg.denoiser import SegCFGDenoiser
from lib_seg.params import SegSettings
from ldm_wrap import denoiser_for, sampling
from precision import assert_same_arithmetic, float64
from unets import CONTEXT_DIM, sd15_like

STEPS = 4


def _sample(unet, settings, cfg_scale=5.0, separate_pass=False, batch=2, hw=(24, 16), with_uncond=True, steps=STEPS):
    denoiser = denoiser_for(unet).to(next(unet.parameters()).dtype)
    sigmas = denoiser.get_sigmas(steps)
    torch.manual_seed(0)
    x = torch.randn(batch, 4, *hw) * sigmas[0]
    cond = torch.randn(batch, 7, CONTEXT_DIM)
    uncond = torch.zeros(batch, 7, CONTEXT_DIM) if with_uncond else None
    model = SegCFGDenoiser(denoiser, unet, settings, cfg_scale=cfg_scale, total_steps=steps,
                           separate_pass=separate_pass)
    with torch.no_grad(), model:
        out = sampling.sample_euler(model, x, sigmas, extra_args={"cond": cond, "uncond": uncond}, disable=True)
    return out, model


def plain_cfg(unet, cfg_scale=5.0, batch=2, hw=(24, 16), steps=STEPS):
    """CFG written out independently, for the bit-identity check of a disabled SEG."""
    denoiser = denoiser_for(unet).to(next(unet.parameters()).dtype)
    sigmas = denoiser.get_sigmas(steps)
    torch.manual_seed(0)
    x = torch.randn(batch, 4, *hw) * sigmas[0]
    cond = torch.randn(batch, 7, CONTEXT_DIM)
    uncond = torch.zeros(batch, 7, CONTEXT_DIM)

    def model(x, sigma, cond, uncond):
        out = denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), cond=torch.cat([cond, uncond]))
        c, u = out.chunk(2)
        return u + (c - u) * cfg_scale

    with torch.no_grad():
        return sampling.sample_euler(model, x, sigmas, extra_args={"cond": cond, "uncond": uncond}, disable=True)


def test_disabled_is_bit_identical_to_plain_cfg():
    unet = sd15_like()
    out, model = _sample(unet, SegSettings(enabled=False))
    assert torch.equal(out, plain_cfg(unet))
    assert model.unet_rows == STEPS * 4


@pytest.mark.parametrize("sigma", [4.0, math.inf])
def test_batched_equals_separate_pass_with_one_call_per_step(sigma):
    # 2 steps: the rows are laid out the same way at every call, and the second step takes the first one's result in
    settings, steps = SegSettings(enabled=True, sigma=sigma), 2
    with float64():  # same arithmetic in two orders: compared in float64 (tests/precision.py says why)
        unet = sd15_like()
        batched, one_call = _sample(unet, settings, steps=steps)
        separate, two_calls = _sample(unet, settings, separate_pass=True, steps=steps)
        assert_same_arithmetic(batched, separate, effect_from=plain_cfg(unet, steps=steps))
    assert (one_call.unet_calls, one_call.unet_rows) == (steps, steps * 6)  # 2B + B rows, one call
    assert (two_calls.unet_calls, two_calls.unet_rows) == (2 * steps, steps * 6)


def test_without_cfg_and_outside_the_interval():
    unet = sd15_like()
    out, model = _sample(unet, SegSettings(enabled=True, start=0.5, end=1.0), cfg_scale=1.0, with_uncond=False)
    # steps 0, 1 of 4 inactive (1 row-set each), steps 2, 3 active (cond + SEG)
    assert (model.unet_calls, model.unet_rows) == (STEPS, 2 * (2 + 4))
    assert torch.isfinite(out).all()


def test_patches_are_gone_after_an_exception():
    unet = sd15_like()
    model = SegCFGDenoiser(denoiser_for(unet), unet, SegSettings(enabled=True), cfg_scale=5.0)
    with pytest.raises(RuntimeError), model:
        assert any("forward" in vars(m) for m in unet.modules())
        raise RuntimeError("interrupted")
    assert not any("forward" in vars(m) or m._forward_pre_hooks for m in unet.modules())


def test_rescale_changes_the_guided_result_only_when_asked():
    unet = sd15_like()
    plain, _ = _sample(unet, SegSettings(enabled=True, scale=5.0))
    rescaled, _ = _sample(unet, SegSettings(enabled=True, scale=5.0, rescale=0.7))
    assert torch.isfinite(rescaled).all() and (plain - rescaled).abs().max() > 1e-4
