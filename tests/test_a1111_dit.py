"""SD3 in A1111 1.10.1 (issue 19): SEG, PAG and skip-layer guidance through the A1111 adapter's batch (the SEG
rows in the CFG denoiser's call) on a stand-in of A1111's SD3 code (tests/a1111_stand_in/sd3_mmdit.py), with
the real k-diffusion sampler over the model's own flow sigmas."""
import pytest
import torch

from a1111_stand_in import harness as H, sd3_other_impls
from a1111_stand_in.fixtures import host, clean_host  # noqa: F401 (pytest fixtures)
from a1111_stand_in.sd3_mmdit import SD3Model
from precision import assert_same_arithmetic, float64
from test_a1111_pass import run

pytestmark = pytest.mark.usefixtures("float64_module", "clean_host")


@pytest.fixture(scope="module")
def sd3():
    with float64():
        return SD3Model()


def sd3_run(host, model, args, batch=1, **kw):
    c, uc = H.sdxl_conds([[(1 + 2 * i, 1.0)] for i in range(batch)], [2 + 2 * i for i in range(batch)])
    return run(host, model, args, c, uc, batch_size=batch, width=80, height=96, **kw)


@pytest.mark.parametrize("args", [
    {"layers": "mid", "sigma": "inf"}, {"layers": "j0-1", "sigma": "1.5"}, {"layers": "all", "mode": "identity"},
    {"layers": "j1", "mode": "skip"}, {"layers": "j0-1", "mode": "orthogonal", "sigma": "2"}])
@pytest.mark.parametrize("cfg_scale", [1.0, 5.0])
def test_sd3_one_call_per_step_with_seg_rows(host, sd3, args, cfg_scale):
    from lib_seg import hooks
    census = H.hook_census(sd3), H.callback_census()
    plain, plain_calls, _ = sd3_run(host, sd3, [False], cfg_scale=cfg_scale)
    got, calls, p = sd3_run(host, sd3, [{"enabled": True, **args}], cfg_scale=cfg_scale)
    assert calls == [n + 1 for n in plain_calls] and plain_calls == [2] * 4
    assert (got - plain).abs().max() > 1e-3 * max(plain.abs().max().item(), 1.0)
    assert p.extra_generation_params["SEG layers"] == args["layers"]
    assert (H.hook_census(sd3), H.callback_census()) == census and not hooks._LIVE
    import a1111_stand_in.sd3_mmdit as mmdit
    assert mmdit.attention is sd3_other_impls.attention


def test_sd3_chunked_equals_batched_and_disabled_is_bit_identical(host, sd3):
    from modules import shared
    args = [{"enabled": True, "layers": "j0-1", "sigma": "2"}]
    batched, _, _ = sd3_run(host, sd3, args, batch=2)
    shared.opts.batch_cond_uncond = False
    chunked, calls, _ = sd3_run(host, sd3, args, batch=2)
    assert calls == [2, 2, 2] * 4
    shared.opts.batch_cond_uncond = True
    plain, _, _ = sd3_run(host, sd3, [False], batch=2)
    assert_same_arithmetic(batched, chunked, effect_from=plain)
    again, _, _ = sd3_run(host, sd3, [False], batch=2)
    assert torch.equal(plain, again)


def test_sd3_refuses_unet_blocks_and_unet_models_refuse_skip(host, sd3):
    from lib_seg import params
    with pytest.raises(params.SegParamError, match=r"'d0', not in this model.*SD3 has j0-j2"):
        sd3_run(host, sd3, [{"enabled": True, "layers": "d0"}])
    with pytest.raises(params.SegParamError, match="skip"):
        run(host, H.sd_model(), [{"enabled": True, "mode": "skip"}])
