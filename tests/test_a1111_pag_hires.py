"""Identity-attention mode (PAG) and the hires-fix override on the A1111 1.10.1 stand-in, through the entry
script (scripts/seg.py), on real ldm UNets and k-diffusion's Euler sampler.

Batched-vs-separate comparisons run in float64 with the bound of tests/precision.py (the in_float64 fixture and
the float64 model sd15_64); each also asserts an effect above EFFECT of the scale. The other checks compare bit
for bit or count rows, which holds in any dtype: they run in float32, at a quarter of the cost.
"""
import pytest
import torch

from a1111_stand_in import harness as H
from a1111_stand_in.fixtures import host, sd15, clean_host, sd15_64  # noqa: F401 (pytest fixtures)
from precision import assert_effect, assert_same_arithmetic
from test_a1111_pass import run

pytestmark = pytest.mark.usefixtures("clean_host")

EFFECT = 5e-3
# Sampler steps of the identity-vs-separate-pass equality checks: which rows return their value projection is
# decided the same way at every UNet call, and a second step already takes the first one's result in.
STEPS = 2


def identity_reference(model, cond, uncond, layers, scale, steps=4, cfg=5.0, size=(16, 16), seeds=(1,), sdxl=False):
    """Independent of lib_seg.attention: per Euler step, cond and uncond in one UNet call, then the cond rows
    again in a separate call with forward hooks making the selected attn1 layers return to_out(to_v(input));
    eps = uncond + w (cond - uncond) + s (cond - pag), as the host and the extension combine them."""
    from lib_seg import kdiffusion
    from lib_seg.layers import select_self_attention
    sampling, external = kdiffusion.load()
    wrap = external.CompVisDenoiser(model, quantize=False)
    unet = model.model.diffusion_model
    modules = dict(unet.named_modules())
    names = select_self_attention(unet, layers)

    def cat(a, b):
        return {k: torch.cat([a[k], b[k]]) for k in a} if sdxl else torch.cat([a, b])

    def denoise(x, sigma, c):
        if sdxl:
            return wrap(x, sigma, cond=c)
        return wrap(x, sigma, cond={"c_crossattn": [c], "c_concat": [x.new_zeros(x.shape[0], 5, 1, 1)]})

    def model_fn(x, sigma):
        n = x.shape[0]
        out = denoise(torch.cat([x, x]), torch.cat([sigma, sigma]), cat(cond, uncond))
        c, u = out[:n], out[n:]
        handles = [modules[name].register_forward_hook(lambda m, a, o: m.to_out(m.to_v(a[0]))) for name in names]
        try:
            pag = denoise(x, sigma, cond)
        finally:
            for handle in handles:
                handle.remove()
        return u + cfg * (c - u) + scale * (c - pag)

    x = torch.stack([torch.randn((4,) + size, generator=torch.Generator().manual_seed(s)) for s in seeds])
    sigmas = wrap.get_sigmas(steps)
    with torch.no_grad():
        return sampling.sample_euler(model_fn, x * sigmas[0], sigmas, disable=True)


def _two_images():
    c, uc = H.conds([[(1, 1.0)], [(3, 1.0)]], [2, 4])
    return c, uc, torch.stack([H.text(1), H.text(3)]), torch.stack([H.text(2), H.text(4)])


@pytest.mark.parametrize("layers", ["mid", "d0-3, u4"])
@pytest.mark.parametrize("batch_cond_uncond", [True, False])
def test_identity_mode_equals_separate_hooked_pass(host, in_float64, sd15_64, layers, batch_cond_uncond):
    """Batch 2; batch_cond_uncond off evaluates chunks of B rows, the middle chunk all PAG rows."""
    from modules import shared
    shared.opts.batch_cond_uncond = batch_cond_uncond
    c, uc, c_rows, uc_rows = _two_images()
    args = {"enabled": True, "scale": 2.5, "layers": layers, "mode": "identity"}
    got, calls, p = run(host, sd15_64, [args], c, uc, batch_size=2, steps=STEPS)
    assert calls == ([6] if batch_cond_uncond else [2, 2, 2]) * STEPS
    assert p.extra_generation_params["SEG mode"] == "identity"
    ref = identity_reference(sd15_64, c_rows, uc_rows, layers, 2.5, seeds=(1, 2), steps=STEPS)
    assert_same_arithmetic(got, ref)
    blur, _, _ = run(host, sd15_64, [{**args, "mode": "blur", "sigma": "inf"}], c, uc, batch_size=2, steps=STEPS)
    plain, _, _ = run(host, sd15_64, [False], c, uc, batch_size=2, steps=STEPS)
    assert_effect(got, plain, EFFECT)
    assert_effect(got, blur, EFFECT)


def test_identity_mode_at_cfg_1(host, in_float64, sd15_64):
    c, uc, c_rows, uc_rows = _two_images()
    args = [{"enabled": True, "scale": 3.0, "layers": "all", "mode": "identity"}]
    got, calls, _ = run(host, sd15_64, args, c, uc, batch_size=2, cfg_scale=1.0, steps=STEPS)
    assert calls == [6] * STEPS
    assert_same_arithmetic(got, identity_reference(sd15_64, c_rows, uc_rows, "all", 3.0, cfg=1.0, seeds=(1, 2), steps=STEPS))


def test_identity_mode_sdxl_layout(host, in_float64):
    model = H.sd_model("sdxl")
    c, uc = H.sdxl_conds([[(1, 1.0)], [(3, 1.0)]], [2, 4])

    def rows(seeds):
        texts = [H.text(s, sdxl=True) for s in seeds]
        return {k: torch.stack([t[k] for t in texts]) for k in texts[0]}
    args = [{"enabled": True, "scale": 2.0, "layers": "d2-3, m0", "mode": "identity"}]
    got, calls, _ = run(host, model, args, c, uc, batch_size=2, steps=STEPS)
    assert calls == [6] * STEPS
    ref = identity_reference(model, rows([1, 3]), rows([2, 4]), "d2-3, m0", 2.0, seeds=(1, 2), sdxl=True, steps=STEPS)
    assert_same_arithmetic(got, ref)
    plain, _, _ = run(host, model, [False], c, uc, batch_size=2, steps=STEPS)
    assert_effect(got, plain, EFFECT)


def test_identity_mode_reproduced_from_its_infotext_and_sigma_ignored(host, sd15):
    args = [True, 3.0, "4", "mid", 0, 1, 0, "identity"]
    first, _, p = run(host, sd15, args)
    pasted = [host.ui.paste_value(param.name, p.extra_generation_params) for param in host.params.PARAMS]
    again, _, _ = run(host, sd15, pasted)
    assert torch.equal(first, again)
    other_sigma, _, _ = run(host, sd15, [True, 3.0, "inf", "mid", 0, 1, 0, "identity"])
    assert torch.equal(first, other_sigma)


# ---------------------------------------------------------------- hires-fix override

@pytest.fixture
def first_pass_samples(monkeypatch):
    """The latents each txt2img first pass returns (before the hires pass upscales them)."""
    from modules import sd_samplers_kdiffusion
    seen = []
    sample = sd_samplers_kdiffusion.KDiffusionSampler.sample

    def recording(self, *args, **kwargs):
        out = sample(self, *args, **kwargs)
        seen.append(out.clone())
        return out
    monkeypatch.setattr(sd_samplers_kdiffusion.KDiffusionSampler, "sample", recording)
    return seen


MAIN = {"enabled": True, "scale": 3.0, "sigma": "2", "layers": "all"}
HIRES = dict(enable_hr=True, hr_scale=1.5, steps=3)


def test_hires_override_off_is_exactly_today(host, sd15, first_pass_samples):
    """Override off ("same"): the second pass runs with the main settings, bit for bit as without the
    override's fields; hr_* values are ignored then."""
    today, calls, _ = run(host, sd15, [True, 3.0, "2", "all", 0, 1, 0], **HIRES)
    same, calls_same, p = run(host, sd15, [{**MAIN, "hires": "same", "hr_scale": 9, "hr_layers": "mid"}], **HIRES)
    assert torch.equal(today, same) and calls == calls_same == [3] * 3 + [3] * 2
    assert "SEG hires" not in p.extra_generation_params


def test_hires_override_changes_only_the_second_pass(host, sd15, first_pass_samples):
    from lib_seg import hooks
    census = H.hook_census(sd15), H.callback_census()
    same, _, _ = run(host, sd15, [MAIN], **HIRES)
    own, calls_own, p = run(host, sd15, [{**MAIN, "hires": "own", "hr_scale": 1.5, "hr_sigma": "inf",
                                           "hr_layers": "mid"}], **HIRES)
    off, calls_off, p_off = run(host, sd15, [{**MAIN, "hires": "off"}], **HIRES)
    pag, _, _ = run(host, sd15, [{**MAIN, "hires": "own", "hr_mode": "identity", "hr_layers": "mid"}], **HIRES)
    first = first_pass_samples
    assert len(first) == 4 and all(torch.equal(first[0], f) for f in first[1:])  # first pass untouched
    assert calls_own == [3] * 3 + [3] * 2
    assert calls_off == [3] * 3 + [2] * 2  # no SEG rows in the second pass
    for a, b in ((own, same), (off, same), (own, off), (pag, own)):
        assert not torch.equal(a, b)
    assert p.extra_generation_params["SEG hires"] == "own" and p.extra_generation_params["SEG hires scale"] == "1.5"
    assert p_off.extra_generation_params["SEG hires"] == "off"
    assert (H.hook_census(sd15), H.callback_census()) == census and not hooks._LIVE


def test_hires_override_with_the_main_values_equals_override_off(host, sd15):
    same, _, _ = run(host, sd15, [MAIN], **HIRES)
    own, _, _ = run(host, sd15, [{**MAIN, "hires": "own", "hr_scale": 3.0, "hr_sigma": "2", "hr_layers": "all"}],
                    **HIRES)
    assert torch.equal(same, own)


def test_hires_only_seg_and_paste_round_trip(host, sd15, first_pass_samples):
    """Main scale 0 with own hires settings: SEG only in the second pass; the infotext brings it all back."""
    plain, _, _ = run(host, sd15, [False], **HIRES)
    args = [{"enabled": True, "scale": 0, "hires": "own", "hr_scale": 2.0, "hr_sigma": "4", "hr_layers": "d4-5"}]
    got, calls, p = run(host, sd15, args, **HIRES)
    assert calls == [2] * 3 + [3] * 2
    assert torch.equal(first_pass_samples[0], first_pass_samples[1]) and not torch.equal(plain, got)
    pasted = [host.ui.paste_value(param.name, p.extra_generation_params) for param in host.params.PARAMS]
    again, _, _ = run(host, sd15, pasted, **HIRES)
    assert torch.equal(got, again)


def test_hires_layers_the_model_lacks_refuse_the_generation(host, sd15):
    from lib_seg import hooks, params
    census = H.hook_census(sd15), H.callback_census()
    with pytest.raises(params.SegParamError, match="u12"):
        run(host, sd15, [{**MAIN, "hires": "own", "hr_layers": "u12"}], **HIRES)
    assert (H.hook_census(sd15), H.callback_census()) == census and not hooks._LIVE


def test_api_named_and_positional_override_and_old_payloads(host, sd15):
    """Named fields, positional in UI order, and a seven-value payload of earlier versions."""
    named = host.api_args({host.ui.API_NAME: {"args": [{**MAIN, "mode": "identity", "hires": "own", "hr_scale": 1.0}]}})
    positional = host.api_args({host.ui.API_NAME: {"args": [True, 3.0, "2", "all", 0, 1, 0, "identity", "own", 1.0]}})
    from lib_seg import params
    script = host.runner.title_map[host.ui.API_NAME]
    assert host.ui.settings_for(None, named[script.args_from:script.args_to]) == \
        host.ui.settings_for(None, positional[script.args_from:script.args_to])
    old = host.api_args({host.ui.API_NAME: {"args": [True, 3.0, "2", "all", 0, 1, 0]}})
    settings = host.ui.settings_for(None, old[script.args_from:script.args_to])
    assert settings == params.SegSettings(enabled=True, scale=3.0, sigma=2.0, layers="all")
    assert (settings.mode, settings.hires) == ("blur", "same")


def test_xyz_recipe_seg_sigmas_against_pag(host, sd15):
    """The README's grid: X = SEG sigma 1, 4, inf; Y = SEG perturbation blur, identity; accordion off. The blur
    row has three different images, the identity row one image three times (σ is ignored), unlike any blur cell."""
    import copy
    from modules import processing
    from test_a1111_script import AxisOption
    axes = {o.label: o for o in host.ui.make_axis_options(AxisOption)}
    host.use_model(sd15)
    c, uc = H.conds([[(1, 1.0)]], [2])
    base = processing.StableDiffusionProcessingTxt2Img(c, uc, scripts=host.runner, script_args=host.script_args([False]))
    grid = {}
    assert {"blur", "identity"} <= set(axes["SEG perturbation"].choices())
    for mode in ("blur", "identity"):
        for sigma in ("1", "4", "inf"):
            cell = copy.copy(base)
            axes["SEG sigma"].apply(cell, sigma, [])
            axes["SEG perturbation"].apply(cell, mode, [])
            grid[mode, sigma] = processing.process_images(cell).samples
            assert cell.extra_generation_params.get("SEG mode") == (None if mode == "blur" else "identity")
    blur = [grid["blur", s] for s in ("1", "4", "inf")]
    pag = [grid["identity", s] for s in ("1", "4", "inf")]
    assert all(torch.equal(pag[0], other) for other in pag[1:])
    assert not torch.equal(blur[0], blur[1]) and not torch.equal(blur[1], blur[2])
    assert not any(torch.equal(pag[0], b) for b in blur)
