"""The batched SEG pass on the A1111 1.10.1 stand-in (tests/a1111_stand_in), real ldm UNets, real
k-diffusion samplers: UNet calls and rows per step, agreement with an independent separate-pass
reference, every host path of CFGDenoiser.forward, and cleanup."""

import pytest
import torch

from a1111_stand_in import harness as H
from a1111_stand_in.fixtures import host, sd15, sd15_64, clean_host  # noqa: F401 (pytest fixtures)
from precision import assert_same_arithmetic

# The tests that compare batched, chunked and separate evaluations of the same arithmetic run in float64
# (tests/precision.py says why): the in_float64 fixture and the float64 model sd15_64, or a model built inside.
# The others count rows, compare bit for bit or assert an effect, which hold in any dtype: float32, about half
# the cost of a float64 UNet call.
pytestmark = pytest.mark.usefixtures("clean_host")

SEG_ALL4 = [True, 3.0, "4", "all"]


def run(host, model, args, c=None, uc=None, scripts=True, img2img=None, **kw):
    """One txt2img (or img2img) generation; returns (samples, UNet rows per call, p)."""
    from modules import processing
    host.use_model(model)
    if c is None:
        c, uc = H.conds([[(1, 1.0)]], [2])
    runner = host.runner if scripts else None
    script_args = host.script_args(args) if scripts else ()
    if img2img is not None:
        p = processing.StableDiffusionProcessingImg2Img(c, uc, scripts=runner, script_args=script_args, **img2img, **kw)
    else:
        p = processing.StableDiffusionProcessingTxt2Img(c, uc, scripts=runner, script_args=script_args, **kw)
    counter = H.CallCounter(model.model.diffusion_model)
    try:
        samples = processing.process_images(p).samples
    finally:
        counter.close()
    return samples, counter.calls, p


def reference(model, c_tensor, uc_tensor, settings, steps=4, cfg=5.0, width=128, height=128, seeds=(1,), sdxl=False):
    """Independent path: lib_seg.denoiser with the SEG rows in a SEPARATE UNet call, same sampler/noise."""
    from lib_seg import kdiffusion, params
    from lib_seg.denoiser import SegCFGDenoiser
    sampling, external = kdiffusion.load()
    wrap = external.CompVisDenoiser(model, quantize=False)

    def denoiser(x, sigma, cond):
        if sdxl:
            return wrap(x, sigma, cond=cond)
        return wrap(x, sigma, cond={"c_crossattn": [cond], "c_concat": [x.new_zeros(x.shape[0], 5, 1, 1)]})

    settings = params.settings_from_args(settings)
    x = torch.stack([torch.randn((4, height // 8, width // 8), generator=torch.Generator().manual_seed(s)) for s in seeds])
    sigmas = wrap.get_sigmas(steps)
    seg = SegCFGDenoiser(denoiser, model.model.diffusion_model, settings, cfg_scale=cfg, total_steps=steps,
                         separate_pass=True)
    with torch.no_grad(), seg:
        return sampling.sample_euler(lambda x, s: seg(x, s, c_tensor, uc_tensor), x * sigmas[0], sigmas, disable=True)


def test_one_unet_call_per_active_step_with_3b_rows(host, sd15):
    c, uc = H.conds([[(1, 1.0)], [(3, 1.0)]], [2, 4])
    plain, calls_plain, _ = run(host, sd15, [False], c, uc, batch_size=2)
    seg, calls, p = run(host, sd15, SEG_ALL4, c, uc, batch_size=2)
    assert calls_plain == [4] * 4          # 2B rows: cond + uncond
    assert calls == [6] * 4                # one call per step, 3B rows: cond + SEG + uncond
    assert not torch.equal(plain, seg)
    assert p.extra_generation_params["SEG sigma"] == "4"


@pytest.mark.parametrize("sigma,layers", [("4", "all"), ("inf", "mid"), ("1", "d0-3, u4")])
def test_matches_separate_pass_reference(host, in_float64, sd15_64, sigma, layers):
    args = [True, 2.5, sigma, layers]
    c, uc = H.conds([[(1, 1.0)]], [2])
    batched, _, _ = run(host, sd15_64, args, c, uc)
    ref = reference(sd15_64, H.text(1)[None], H.text(2)[None], args)
    plain, _, _ = run(host, sd15_64, [False], c, uc)
    assert_same_arithmetic(batched, ref, effect_from=plain)


def test_chunked_evaluation_equals_batched(host, in_float64, sd15_64):
    from modules import shared
    c, uc = H.conds([[(1, 1.0)], [(3, 1.0)]], [2, 4])
    batched, _, _ = run(host, sd15_64, SEG_ALL4, c, uc, batch_size=2)
    shared.opts.batch_cond_uncond = False
    chunked, calls, _ = run(host, sd15_64, SEG_ALL4, c, uc, batch_size=2)
    assert calls == [2, 2, 2] * 4          # chunks of B rows, in row order; the middle one is all SEG rows
    assert_same_arithmetic(batched, chunked)


@pytest.mark.parametrize("batch_cond_uncond", [True, False])
def test_different_token_lengths_evaluated_apart(host, in_float64, sd15_64, batch_cond_uncond):
    """cond of 154 tokens vs uncond of 77: the host evaluates the cond rows (+ SEG rows) and the uncond
    rows in separate calls. Every token repeated twice leaves cross-attention unchanged, so the result
    must match the 77-token run."""
    from modules import shared
    shared.opts.batch_cond_uncond = batch_cond_uncond
    c77, uc = H.conds([[(1, 1.0)], [(3, 1.0)]], [2, 4])
    doubled = [[(H.text(1).repeat_interleave(2, 0), 1.0)], [(H.text(3).repeat_interleave(2, 0), 1.0)]]
    c154, _ = H.conds(doubled, [2, 4])
    expected, _, _ = run(host, sd15_64, SEG_ALL4, c77, uc, batch_size=2)
    got, calls, _ = run(host, sd15_64, SEG_ALL4, c154, uc, batch_size=2)
    assert calls == ([4, 2] if batch_cond_uncond else [2, 2, 2]) * 4
    assert_same_arithmetic(expected, got)


def test_cfg_scale_1(host, in_float64, sd15_64):
    args = [True, 3.0, "2", "all"]
    c, uc = H.conds([[(1, 1.0)]], [2])
    got, calls, _ = run(host, sd15_64, args, c, uc, cfg_scale=1.0)
    ref = reference(sd15_64, H.text(1)[None], H.text(2)[None], args, cfg=1.0)
    plain, _, _ = run(host, sd15_64, [False], c, uc, cfg_scale=1.0)
    assert calls == [3] * 4
    assert_same_arithmetic(got, ref, effect_from=plain)


def test_skip_early_cfg_drops_uncond_rows_not_seg_rows(host, sd15):
    from modules import shared
    shared.opts.skip_early_cond = 0.5      # steps 0, 1, 2 (step / total <= 0.5) run without uncond
    c, uc = H.conds([[(1, 1.0)], [(3, 1.0)]], [2, 4])
    plain, calls_plain, _ = run(host, sd15, [False], c, uc, batch_size=2)
    seg, calls, p = run(host, sd15, SEG_ALL4, c, uc, batch_size=2)
    assert calls_plain == [2, 2, 2, 4]
    assert calls == [4, 4, 4, 6]
    assert p.extra_generation_params["Skip Early CFG"] == 0.5
    assert not torch.equal(plain, seg)


def test_ngms_alternating_uncond_skip(host, sd15):
    c, uc = H.conds([[(1, 1.0)]], [2])
    _, calls, p = run(host, sd15, SEG_ALL4, c, uc, s_min_uncond=100.0)
    assert calls == [3, 2, 3, 2]           # odd steps skip the uncond row
    assert "NGMS" in p.extra_generation_params


def test_and_prompts_rows_and_weights(host, sd15):
    c, uc = H.conds([[(1, 0.7), (5, 0.5)], [(3, 1.0)]], [2, 4])
    plain, calls_plain, _ = run(host, sd15, [False], c, uc, batch_size=2)
    seg, calls, _ = run(host, sd15, SEG_ALL4, c, uc, batch_size=2)
    assert calls_plain == [5] * 4          # 3 cond rows + 2 uncond
    assert calls == [8] * 4                # + 3 SEG rows, one per sub-prompt
    assert not torch.equal(plain, seg)


def test_and_term_uses_host_weights(host, in_float64):
    """on_cfg_after_cfg adds s * sum_k w_k (cond_k - seg_k) per image, with the host's conds_list."""
    from lib_seg.hosts.a1111 import SamplingPass
    from modules import prompt_parser, script_callbacks as cb
    from lib_seg import params
    settings = params.settings_from_args([True, 2.0])
    sp = SamplingPass.__new__(SamplingPass)
    sp.settings, sp.closed = settings, False
    sp.session = type("S", (), {"end_step": lambda self: None})()
    conds_list = [[(0, 0.7), (1, 0.5)], [(2, 1.0)]]
    x_out = torch.randn(8, 4, 2, 2)        # 3 cond, 3 SEG, 2 uncond
    denoiser = type("D", (), {"mask": None})()
    sp.step = (3, 2, conds_list, denoiser, torch.randn(2, 4, 2, 2), torch.ones(2))
    sp.on_cfg_denoised(cb.CFGDenoisedParams(x_out, 0, 4, None))
    denoised = torch.randn(2, 4, 2, 2)
    after = cb.AfterCFGCallbackParams(denoised.clone(), 0, 4)
    sp.on_cfg_after_cfg(after)
    cond, seg = x_out[:3], x_out[3:6]
    expected = torch.stack([denoised[0] + 2.0 * (0.7 * (cond[0] - seg[0]) + 0.5 * (cond[1] - seg[1])),
                            denoised[1] + 2.0 * (cond[2] - seg[2])])
    assert torch.allclose(after.x, expected, atol=1e-6)  # float64 (in_float64), 4 ops per element: ~1e-15
    assert prompt_parser  # the weights come from the host's multicond batch (see and_weights)


def test_and_weights_from_multicond(host):
    from lib_seg.hosts.a1111 import and_weights
    c, _ = H.conds([[(1, 0.7), (5, 0.5)], [(3, 1.0)]], [2, 4])
    denoiser = type("D", (), {"sampler": type("S", (), {"sampler_extra_args": {"cond": c}})()})()
    assert and_weights(denoiser, 2, 3) == [[(0, 0.7), (1, 0.5)], [(2, 1.0)]]


def test_sdxl_dict_conditioning(host, in_float64):
    model = H.sd_model("sdxl")
    c, uc = H.sdxl_conds([[(1, 1.0)]], [2])
    args = [True, 3.0, "2", "all"]
    got, calls, _ = run(host, model, args, c, uc)
    cond = {"crossattn": H.text(1, sdxl=True)["crossattn"][None], "vector": H.text(1, sdxl=True)["vector"][None]}
    uncond = {"crossattn": H.text(2, sdxl=True)["crossattn"][None], "vector": H.text(2, sdxl=True)["vector"][None]}
    ref = reference(model, cond, uncond, args, sdxl=True)
    plain, _, _ = run(host, model, [False], c, uc)
    assert calls == [3] * 4
    assert_same_arithmetic(got, ref, effect_from=plain)


def test_non_square(host, in_float64, sd15_64):
    args = [True, 3.0, "2", "all"]
    c, uc = H.conds([[(1, 1.0)]], [2])
    got, calls, _ = run(host, sd15_64, args, c, uc, width=128, height=192)
    ref = reference(sd15_64, H.text(1)[None], H.text(2)[None], args, width=128, height=192)
    plain, _, _ = run(host, sd15_64, [False], c, uc, width=128, height=192)
    assert got.shape[-2:] == (24, 16)
    assert_same_arithmetic(got, ref, effect_from=plain)


def test_hires_second_pass_new_grid_and_cleanup(host, sd15):
    from lib_seg import hooks
    before = H.hook_census(sd15)
    plain, _, _ = run(host, sd15, [False], enable_hr=True, hr_scale=1.5, steps=3)
    got, calls, _ = run(host, sd15, [True, 3.0, "2", "all"], enable_hr=True, hr_scale=1.5, steps=3)
    assert got.shape[-2:] == (24, 24)
    assert calls == [3] * 3 + [3] * 2       # first pass 3 steps, hires pass img2img steps, all batched
    assert not torch.equal(plain, got)
    assert H.hook_census(sd15) == before and not hooks._LIVE


def test_edit_model_skipped_with_notice(host, capsys):
    model = H.sd_model(conditioning_key="hybrid", cond_stage_key="edit")
    init = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(9))
    image_cond = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(8))  # the encoded input image
    img2img = dict(init_latent=init, image_cfg_scale=1.5, image_conditioning=image_cond)
    plain, calls_plain, _ = run(host, model, [False], img2img=img2img)
    capsys.readouterr()
    got, calls, p = run(host, model, SEG_ALL4, img2img=img2img)
    out = capsys.readouterr().out
    assert "[SEG] skipped" in out and "edit" in out and out.count("\n") == 1
    assert torch.equal(plain, got) and calls == calls_plain == [3] * len(calls)
    assert "SEG scale" not in p.extra_generation_params


def test_inpainting_model_image_cond_rows_and_mask(host):
    model = H.sd_model(conditioning_key="hybrid")
    init = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(9))
    image_cond = torch.randn(2, 5, 16, 16, generator=torch.Generator().manual_seed(8))
    c, uc = H.conds([[(1, 1.0)], [(3, 1.0)]], [2, 4])
    keep_all = torch.ones(1, 1, 16, 16)
    half = torch.zeros(1, 1, 16, 16)
    half[..., :8] = 1.0
    base = dict(init_latent=init, image_conditioning=image_cond, denoising_strength=0.75)
    plain_full, _, _ = run(host, model, [False], c, uc, batch_size=2, img2img={**base, "mask": keep_all})
    seg_full, calls, _ = run(host, model, SEG_ALL4, c, uc, batch_size=2, img2img={**base, "mask": keep_all})
    assert all(n == 6 for n in calls)
    assert torch.equal(plain_full, seg_full)       # SEG goes only through nmask: nothing changes where kept
    plain, _, _ = run(host, model, [False], c, uc, batch_size=2, img2img={**base, "mask": half})
    seg, _, _ = run(host, model, SEG_ALL4, c, uc, batch_size=2, img2img={**base, "mask": half})
    assert torch.equal(plain[..., :8], seg[..., :8])
    assert (plain[..., 8:] - seg[..., 8:]).abs().max() > 1e-3


def test_mask_before_denoising(host, sd15):
    from modules.sd_samplers_cfg_denoiser import CFGDenoiser
    init = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(9))
    mask = torch.ones(1, 1, 16, 16)
    CFGDenoiser.mask_before_denoising = True
    try:
        _, calls, _ = run(host, sd15, SEG_ALL4, img2img=dict(init_latent=init, mask=mask))
    finally:
        del CFGDenoiser.mask_before_denoising
    assert all(n == 3 for n in calls)


def test_outside_interval_no_seg_rows(host, sd15):
    _, calls, p = run(host, sd15, [True, 3.0, "4", "all", 0.5, 1.0])
    assert calls == [2, 2, 3, 3]           # progress 0, 1/3 (off), 2/3, 1 (on)
    assert p.extra_generation_params["SEG start"] == "0.5"
    _, calls, _ = run(host, sd15, [True, 3.0, "4", "all", 0.0, 0.0])
    assert calls == [3, 2, 2, 2]


def test_schedule_follows_sampler_steps_for_second_order_samplers(host, sd15):
    """Heun makes 5 denoiser calls for 3 steps (two per step, one in the last) against total_steps 6: the
    interval maps onto sampler steps 0, 0, 1, 1, 2, so steps 0 and 1 (progress 0, 0.5) carry SEG rows."""
    _, calls, _ = run(host, sd15, [True, 3.0, "4", "all", 0.0, 0.5], sampler_name="Heun", steps=3)
    assert calls == [3, 3, 3, 3, 2]


@pytest.mark.parametrize("sampler_name,expected", [("Euler", [2, 2, 3]), ("Heun", [2, 2, 2, 2, 3])])
def test_last_step_only_fires_on_every_sampler(host, sd15, sampler_name, expected):
    """start = end = 1 is the last sampler step, whatever the calls per step (issue 23, item 3)."""
    _, calls, _ = run(host, sd15, [True, 3.0, "4", "all", 1.0, 1.0], sampler_name=sampler_name, steps=3)
    assert calls == expected


@pytest.mark.parametrize("args", [None, [], [False], [True, 0.0], [False, 3.0, "4", "all"]])
def test_disabled_is_bit_identical_to_no_extension(host, sd15, args):
    from lib_seg import hooks
    c, uc = H.conds([[(1, 1.0)], [(3, 1.0)]], [2, 4])
    without, calls_without, _ = run(host, sd15, [], c, uc, scripts=False, batch_size=2)
    census = H.hook_census(sd15), H.callback_census()
    got, calls, p = run(host, sd15, args or [], c, uc, scripts=args is not None, batch_size=2)
    assert torch.equal(without, got) and calls == calls_without
    assert not any(k.startswith("SEG") for k in p.extra_generation_params)
    assert (H.hook_census(sd15), H.callback_census()) == census and not hooks._LIVE


def test_cleanup_after_exception_inside_a_step(host, sd15):
    from lib_seg import hooks
    census = H.hook_census(sd15), H.callback_census()
    clean, _, _ = run(host, sd15, SEG_ALL4)
    n = {"calls": 0}

    def fail(module, args):
        n["calls"] += 1
        if n["calls"] == 2:
            raise RuntimeError("boom inside a step")
    handle = sd15.model.diffusion_model.register_forward_pre_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            run(host, sd15, SEG_ALL4)
    finally:
        handle.remove()
    assert (H.hook_census(sd15), H.callback_census()) == census and not hooks._LIVE
    again, _, _ = run(host, sd15, SEG_ALL4)
    assert torch.equal(clean, again)


def test_cleanup_after_interrupt(host, sd15):
    from lib_seg import hooks
    from modules import script_callbacks, shared
    census = H.hook_census(sd15), H.callback_census()
    clean, _, _ = run(host, sd15, SEG_ALL4)

    def interrupt_at_step_2(params):
        if params.denoiser.step == 2:
            shared.state.interrupted = True
    script_callbacks.on_cfg_denoiser(interrupt_at_step_2)
    try:
        _, calls, _ = run(host, sd15, SEG_ALL4)
    finally:
        script_callbacks.remove_callbacks_for_function(interrupt_at_step_2)
        # (the stand-in's 1.9-style removal leaves this callback in the length-keyed ordered cache: the
        # adapter must not be fooled by that on the next generation)
        shared.state.interrupted = False
    assert calls == [3, 3, 3]
    assert (H.hook_census(sd15), H.callback_census()) == census and not hooks._LIVE
    again, _, _ = run(host, sd15, SEG_ALL4)
    assert torch.equal(clean, again)


def test_consecutive_generations_do_not_reuse_stale_callbacks(host, sd15):
    """1.10 caches sorted callback lists by length: a second generation must run its own callbacks."""
    first, _, _ = run(host, sd15, [True, 3.0, "4", "all"])
    second, _, _ = run(host, sd15, [True, 6.0, "4", "all"])
    again_first, _, _ = run(host, sd15, [True, 3.0, "4", "all"])
    assert torch.equal(first, again_first) and not torch.equal(first, second)


def test_refiner_switch_patches_the_refiner_unet_too(host, sd15):
    from lib_seg import hooks
    refiner = H.sd_model(seed=5)
    census = H.hook_census(sd15, refiner), H.callback_census()
    seen = H.CallCounter(refiner.model.diffusion_model)
    try:
        plain, _, _ = run(host, sd15, [False], refiner_model=refiner, refiner_switch_at=0.5)
        seen.calls.clear()
        got, calls, p = run(host, sd15, SEG_ALL4, refiner_model=refiner, refiner_switch_at=0.5)
    finally:
        seen.close()
    assert calls == [3, 3] and seen.calls == [3, 3]
    assert not torch.equal(plain, got)
    assert (H.hook_census(sd15, refiner), H.callback_census()) == census and not hooks._LIVE


def test_bad_layers_refuse_the_generation_and_unsupported_model_is_skipped(host, sd15, capsys):
    """A layer spec the model lacks is bad input: the generation fails with the message (the API returns
    it to the client), before any UNet call, leaving nothing behind; the next generation is unaffected."""
    from lib_seg import hooks
    from lib_seg.params import SegParamError
    census = (H.hook_census(sd15), H.callback_census())
    plain, _, _ = run(host, sd15, [False])
    with pytest.raises(SegParamError) as refused:
        run(host, sd15, [True, 3.0, "inf", "u12"])
    message = str(refused.value)
    assert "SEG layers" in message and "'u12'" in message and "u0-u8" in message
    from modules import api
    assert api.handle_exception(refused.value)[0] == 422  # invalid input, not a server fault
    assert (H.hook_census(sd15), H.callback_census()) == census and not hooks._LIVE
    again, calls, _ = run(host, sd15, [False])
    assert torch.equal(again, plain) and calls == [2] * 4

    class NoUNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = torch.nn.Module()
            self.model.diffusion_model = torch.nn.Linear(1, 1)
            self.cond_stage_key = "txt"
    from lib_seg.hosts import get_adapter
    from lib_seg import params
    p = type("P", (), {"sd_model": NoUNet(), "sampler": None})()
    assert get_adapter().start(p, params.settings_from_args([True])) is False
    assert "neither an LDM-style UNet nor SD3 transformer blocks" in capsys.readouterr().out


def test_rescale_changes_the_result_and_keeps_one_call(host, sd15):
    plain_seg, _, _ = run(host, sd15, SEG_ALL4)
    rescaled, calls, p = run(host, sd15, SEG_ALL4 + [0.0, 1.0, 0.7])
    assert calls == [3] * 4 and p.extra_generation_params["SEG rescale"] == "0.7"
    assert torch.isfinite(rescaled).all() and not torch.equal(plain_seg, rescaled)


def test_rescale_on_timestep_samplers_works_on_the_noise_prediction(host, in_float64, sd15_64, monkeypatch):
    """DDIM/PLMS/UniPC (CFGDenoiserTimesteps): the rows and the after-CFG x are eps and "sigma" is the timestep,
    so the rescale is guidance.rescale of the guided eps against the cond eps, with no x0 conversion (issue 23,
    item 2). Every step's result is checked against that formula on the rows the host evaluated."""
    from lib_seg import guidance
    from modules import sd_samplers_cfg_denoiser as host_denoiser
    rows, results = [], []
    denoised_callback, after_callback = host_denoiser.cfg_denoised_callback, host_denoiser.cfg_after_cfg_callback

    def record_rows(params):
        rows.append(params.x.clone())
        denoised_callback(params)

    def record_result(params):
        host_cfg = params.x.clone()
        after_callback(params)
        results.append((host_cfg, params.x.clone()))

    monkeypatch.setattr(host_denoiser, "cfg_denoised_callback", record_rows)
    monkeypatch.setattr(host_denoiser, "cfg_after_cfg_callback", record_result)
    _, calls, p = run(host, sd15_64, [True, 10.0, "4", "all", 0.0, 1.0, 0.7], sampler_name="DDIM")
    assert calls == [3] * 3 and p.extra_generation_params["SEG rescale"] == "0.7"   # DDIM: steps - 1 calls
    for x_out, (host_cfg, ours) in zip(rows, results, strict=True):
        cond, seg = x_out[0:1], x_out[1:2]           # [cond | SEG | uncond] rows, batch 1
        guided = host_cfg + 10.0 * (cond - seg)
        assert_same_arithmetic(ours, guidance.rescale(guided, cond, 0.7), effect_from=guided)


def test_refiner_without_the_layers_ends_seg_at_the_switch_and_says_so(host, capsys):
    """A spec that fits the base model but not the refiner (real run: `m0.2-5` on SDXL base, whose middle
    block has 10 transformers, vs the refiner's 4): one notice, no SEG rows on the refiner's steps (they
    would only cost a UNet's worth of rows for a zero term), and the infotext says SEG was off there."""
    import unets
    from sd_model import SDModel
    base, refiner = SDModel(unets.sd15_like(3, transformer_depth=2)), H.sd_model(seed=5)
    seen = H.CallCounter(refiner.model.diffusion_model)
    try:
        _, calls, p = run(host, base, [True, 3.0, "4", "m0.1"], refiner_model=refiner, refiner_switch_at=0.5)
    finally:
        seen.close()
    assert calls == [3, 3] and seen.calls == [2, 2]
    assert p.extra_generation_params.get("SEG refiner") == "off"
    assert capsys.readouterr().out.count("refiner") == 1


def test_refiner_with_the_layers_says_seg_ran_there(host, sd15):
    refiner = H.sd_model(seed=5)
    _, _, p = run(host, sd15, SEG_ALL4, refiner_model=refiner, refiner_switch_at=0.5)
    assert p.extra_generation_params.get("SEG refiner") == "on"
