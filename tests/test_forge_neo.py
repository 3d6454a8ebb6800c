"""Forge Neo (WebUI-Neo-Forge 7862a96): the sampler's own model options (tests/forge_stand_in/neo.py), and Neo's
Flux attention signature, on the Forge adapter (lib_seg/hosts/forge.py) with the Flux and SD1.5 stand-ins."""
import pytest
import torch

from forge_stand_in import flux as host_flux
from forge_stand_in.neo import NeoProcessing
from lib_seg.hosts import forge as forge_host
from test_dit import flux_conds, flux_world, on, sample_with_seg
from test_forge import SegScript as UnetSegScript, conds, world

pytestmark = pytest.mark.usefixtures("float64_module")


def neo_generate(settings=None, *, sampler="euler_cfg_pp", cfg_scale=1.5, sd_model=None):
    """One Flux txt2img through Neo's denoiser and sampler; returns (latent, model calls' rows, p, script)."""
    sd_model = sd_model or flux_world()[0]
    cond, uncond = flux_conds()
    p = NeoProcessing(sd_model, cond, uncond, cfg_scale=cfg_scale, latent_hw=(12, 10), sampler=sampler)
    out, calls, script = sample_with_seg(p, settings)
    return out, calls, p, script


@pytest.mark.parametrize("cfg_scale", [1.5, 3.0])
def test_cfgpp_sampler_keeps_seg_guidance(cfg_scale):
    """Neo's CFG++ samplers replace the patcher's post-CFG list with their own: SEG's term is put back in front,
    every step's SEG rows are used (nothing left in the stash) and the image changes. (At CFG 1 Neo's
    processing.py drops the negative conditioning before sampling, CFG++ or not: cond + SEG rows, as measured in
    the real host; this stand-in's Processing always passes an uncond, so CFG 1 is not modelled here.)"""
    sd_model, patcher = flux_world()
    plain, plain_calls, _, _ = neo_generate(cfg_scale=cfg_scale, sd_model=sd_model)
    got, calls, p, script = neo_generate(on(layers="mid", sigma=2.0, scale=3.0), cfg_scale=cfg_scale,
                                         sd_model=sd_model)
    assert plain_calls == [2] * 4 and calls == [3] * 4
    patch = script.adapter.last_patch
    assert patch.stash == []  # the post-CFG function took every step's pair
    assert (got - plain).abs().max() > 1e-3
    assert "forward" not in vars(p.sampler.model_wrap_cfg)  # the denoiser is the host's again
    assert sd_model.forge_objects.unet is patcher and patcher.model_options == {"transformer_options": {}}


def test_without_the_fix_neo_drops_seg_guidance(monkeypatch):
    """What the host does on its own (the reason for ForgeAdapter._keep_post_cfg): SEG rows computed every step,
    their term never added, the image that of no SEG."""
    monkeypatch.setattr(forge_host.ForgeAdapter, "_keep_post_cfg", lambda self, p, registry, patch: None)
    sd_model, _ = flux_world()
    plain, _, _, _ = neo_generate(sd_model=sd_model)
    got, calls, _, script = neo_generate(on(layers="mid", sigma=2.0, scale=3.0), sd_model=sd_model)
    assert calls == [3] * 4 and len(script.adapter.last_patch.stash) == 4
    torch.testing.assert_close(got, plain)


def test_neo_plain_sampler_is_forge_s_path():
    """Without sampler options Neo's denoiser is Forge's: the same SEG image, bit for bit."""
    from test_dit import generate as forge_generate
    sd_model, _ = flux_world()
    settings = on(layers="all", sigma=2.0, scale=3.0)
    neo, calls, _, _ = neo_generate(settings, sampler="euler", cfg_scale=3.0, sd_model=sd_model)
    forge, forge_calls, _ = forge_generate(settings, cfg_scale=3.0, sd_model=sd_model)
    assert calls == forge_calls == [3] * 4 and torch.equal(neo, forge)


def test_cfgpp_on_a_unet_keeps_seg_guidance():
    """The same on an SD1.5 UNet (Neo keeps SD1.5 / SDXL): the post-CFG term is used every step."""
    sd_model, _ = world("forge")
    cond, uncond = conds()
    runs = {}
    for name, settings in (("plain", None), ("seg", on(layers="mid", sigma=2.0, scale=3.0))):
        p = NeoProcessing(sd_model, cond, uncond, cfg_scale=1.5, sampler="euler_cfg_pp")
        script = UnetSegScript("forge", settings) if settings else None
        if script:
            p.scripts.append(script)
        try:
            runs[name] = p.sample()
        finally:
            if script:
                script.postprocess(p)
    assert script.adapter.last_patch.stash == []
    assert (runs["seg"] - runs["plain"]).abs().max() > 1e-3


def test_neo_flux_attention_signature(monkeypatch):
    """Neo's backend/nn/flux.py ``attention(q, k, v, pe, mask=None, transformer_options={})`` hands
    ``attention_function(q, k, v, heads, skip_reshape=True, mask=mask, transformer_options=...)`` two more keywords
    than Forge's: the wrapper passes them through, and SEG gives the image of Forge's signature."""
    from test_dit import generate as forge_generate
    settings = on(layers="j0-2, s1", sigma=2.0, scale=3.0)
    sd_model, _ = flux_world()
    forge_image, _, _ = forge_generate(settings, cfg_scale=3.0, sd_model=sd_model)
    seen = []
    host_function = host_flux.attention_function

    def attention_function(q, k, v, heads, mask=None, skip_reshape=False, transformer_options=None):
        seen.append(transformer_options)
        return host_function(q, k, v, heads, mask=mask, skip_reshape=skip_reshape)

    def attention(q, k, v, pe, mask=None, transformer_options={}):
        q, k = host_flux.apply_rope(q, k, pe)
        return host_flux.attention_function(q, k, v, q.shape[1], skip_reshape=True, mask=mask,
                                            transformer_options=transformer_options)

    attention.__module__ = host_flux.__name__  # defined in flux.py, as in the host
    monkeypatch.setattr(host_flux, "attention_function", attention_function)
    monkeypatch.setattr(host_flux, "attention", attention)
    neo_image, calls, _ = forge_generate(settings, cfg_scale=3.0, sd_model=sd_model)
    assert calls == [3] * 4 and seen and all(o == {} for o in seen)
    assert torch.equal(neo_image, forge_image)
    assert host_flux.attention_function is attention_function  # the wrapper is gone after the pass
