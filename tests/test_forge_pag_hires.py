"""Identity-attention mode (PAG) and the hires-fix override on the Forge / reForge stand-in
(tests/forge_stand_in), real ldm UNets.

Batched-vs-separate comparisons run in float64 with the bound of tests/precision.py (the in_float64 fixture);
each also asserts an effect above EFFECT of the scale. The hires-override and chaining checks compare bit for bit
or count rows, which holds in any dtype: they run in float32, at a quarter of the cost.
"""
import pytest
import torch

from forge_stand_in.unet import attention_function, stand_in_attention
from forge_stand_in.webui import Processing
from lib_seg.layers import select_layers
from lib_seg.params import SegSettings
from precision import assert_effect, assert_same_arithmetic
from test_forge import FLAVORS, _one_evaluation, assert_clean, conds, generate, unet_for, world

EFFECT = 1e-2


def _identity_reference(flavor, settings, x, sigma, cond, uncond, cfg_scale, arch="sd15", with_uncond=True):
    """Separate, unbatched UNet evaluations; the PAG prediction from attn1 replace patches written here that
    return v (the host applies to_out after a replace patch, as Forge's own PAG relies on)."""
    kmodel = unet_for(flavor, arch)
    keys = [layer.patch_key for layer in select_layers(kmodel.diffusion_model, settings.layers)]

    def identity(q, k, v, extra):
        return v

    def predict(context, pag=False):
        options = {"patches_replace": {"attn1": {key: identity for key in keys}}} if pag else {}
        extra = {"c_crossattn": context["crossattn"], "y": context["vector"]} if isinstance(context, dict) \
            else {"c_crossattn": context}
        return kmodel.apply_model(x, sigma.expand(x.shape[0]), transformer_options=options, **extra)

    def take(value, rows):
        return {k: v[rows] for k, v in value.items()} if isinstance(value, dict) else value[rows]

    tensor, conds_list = cond
    guided = predict(uncond) if with_uncond else 0
    first = True
    for k in range(len(conds_list[0])):
        rows = [per_image[k][0] for per_image in conds_list]
        w = conds_list[0][k][1]
        c, s = predict(take(tensor, rows)), predict(take(tensor, rows), pag=True)
        if with_uncond:
            guided = guided + cfg_scale * w * (c - predict(uncond)) + settings.scale * w * (c - s)
        else:  # CFG 1: the host skips the uncond pass and the result is the (weighted) cond prediction
            guided = (c if first else guided + c) + settings.scale * w * (c - s)
        first = False
    return guided


def _sdxl_conds(batch, weights, seed=1, tokens=8):
    (tensor, conds_list), uncond = conds(batch, weights, seed, tokens)
    g = torch.Generator().manual_seed(seed + 100)
    return ({"crossattn": tensor, "vector": torch.randn(tensor.shape[0], 1, generator=g)}, conds_list), \
        {"crossattn": uncond, "vector": torch.randn(uncond.shape[0], 1, generator=g)}


@pytest.mark.parametrize("flavor, arch, weights, max_chunks", [
    ("forge", "sd15", (1.0,), None), ("reforge", "sd15", (0.7, 0.5), None),
    ("forge", "sd15", (0.6, 0.4), 1), ("reforge", "sdxl", (1.0,), None), ("forge", "sdxl", (1.0,), 1)])
def test_identity_rows_equal_separate_passes(in_float64, flavor, arch, weights, max_chunks):
    """One denoiser evaluation, batch 2, non-square: uncond + w (cond − uncond) + s (cond − pag) from separate
    passes; max_chunks=1 is the hosts' low-memory split (one chunk per UNet call)."""
    settings = SegSettings(enabled=True, scale=2.5, layers="m0, u0-u2", mode="identity")
    cond, uncond = conds(2, weights) if arch == "sd15" else _sdxl_conds(2, weights)
    x = torch.randn(2, 4, 16, 24, generator=torch.Generator().manual_seed(3)) * 3
    sigma = torch.tensor([3.0])
    got = _one_evaluation(flavor, settings, x, sigma.expand(2), cond, uncond, 6.0, max_chunks=max_chunks, arch=arch)
    want = _identity_reference(flavor, settings, x, sigma, cond, uncond, 6.0, arch=arch)
    assert_same_arithmetic(got, want)
    blur = _one_evaluation(flavor, SegSettings(enabled=True, scale=2.5, layers="m0, u0-u2"), x, sigma.expand(2),
                           cond, uncond, 6.0, arch=arch)
    plain = _one_evaluation(flavor, SegSettings(), x, sigma.expand(2), cond, uncond, 6.0, arch=arch)
    assert_effect(got, plain, EFFECT)
    assert_effect(got, blur, EFFECT)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_identity_rows_at_cfg_1(in_float64, flavor):
    """CFG 1: the host skips the uncond pass; the call holds the cond rows and the PAG rows only."""
    settings = SegSettings(enabled=True, scale=3.0, layers="all", mode="identity")
    cond, uncond = conds(2, (1.0,))
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(4)) * 3
    sigma = torch.tensor([2.0])
    unet = unet_for(flavor).diffusion_model
    unet._forge_calls = []
    got = _one_evaluation(flavor, settings, x, sigma.expand(2), cond, uncond, 1.0)
    calls, unet._forge_calls = unet._forge_calls, None
    assert calls == [4]
    want = _identity_reference(flavor, settings, x, sigma, cond, uncond, 1.0, with_uncond=False)
    assert_same_arithmetic(got, want)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_identity_mode_chains_an_existing_attention_patch_for_the_other_rows(flavor):
    """Another extension's attn1 replace patch keeps serving the cond/uncond rows; the PAG rows give v."""
    seen = []

    def other(q, k, v, extra):
        seen.append(q.shape[0])
        return attention_function(q, k, v, extra["n_heads"])

    sd_model, patcher = world(flavor)
    for layer in select_layers(patcher.model.diffusion_model, "m0"):
        patcher.set_model_attn1_replace(other, *layer.patch_key)
    settings = SegSettings(enabled=True, layers="m0", mode="identity")
    script = PassScript(flavor, settings)
    cond, uncond = conds(2, (1.0,))
    p = Processing(sd_model, cond, uncond, batch_size=2, flavor=flavor)
    p.scripts.append(script)
    try:
        p.sample()
    finally:
        script.postprocess(p)
    assert seen and set(seen) == {4}  # cond + uncond rows of 2 images; the 2 PAG rows never reach it


# ---------------------------------------------------------------- hires-fix override

class PassScript:
    """What scripts/seg.py does on these hosts: the pass's settings from SegSettings.for_pass(p.is_hr_pass),
    start when they are active, stop in postprocess; records the first pass's output."""

    def __init__(self, flavor, settings):
        from lib_seg.hosts import forge as forge_host
        self.adapter = forge_host.ForgeAdapter(flavor, attention=stand_in_attention)
        self.settings = settings
        self.passes = []  # (is_hr_pass, settings the pass ran with, or None)

    def process_before_every_sampling(self, p):
        this_pass = self.settings.for_pass(p.is_hr_pass)
        self.passes.append((p.is_hr_pass, this_pass if this_pass.active else None))
        if this_pass.active:
            self.adapter.start(p, this_pass)

    def postprocess(self, p):
        self.adapter.stop(p)


@pytest.fixture
def first_pass_samples(monkeypatch):
    from forge_stand_in import webui
    seen = []
    sample = webui.KDiffusionSampler.sample

    def recording(self, *args, **kwargs):
        out = sample(self, *args, **kwargs)
        seen.append(out.clone())
        return out
    monkeypatch.setattr(webui.KDiffusionSampler, "sample", recording)
    return seen


HIRES = dict(latent_hw=(16, 16), hr_latent_hw=(24, 24), hr_steps=3)
MAIN = dict(enabled=True, scale=3.0, sigma=2.0, layers="mid, u0")


@pytest.mark.parametrize("flavor", FLAVORS)
def test_hires_override_changes_only_the_second_pass(flavor, first_pass_samples):
    runs = {}
    for name, settings in {"same": SegSettings(**MAIN),
                           "own": SegSettings(**MAIN, hires="own", hr_scale=1.5, hr_layers="m0"),
                           "pag": SegSettings(**MAIN, hires="own", hr_mode="identity"),
                           "off": SegSettings(**MAIN, hires="off"),
                           "own_equal": SegSettings(**MAIN, hires="own", hr_scale=3.0, hr_sigma=2.0,
                                                    hr_layers="mid, u0")}.items():
        sd_model, patcher = world(flavor)
        script = PassScript(flavor, settings)
        out, calls, p = generate(flavor, sd_model=sd_model, script=script, batch=2, **HIRES)
        assert_clean(sd_model, patcher, p)
        assert p.is_hr_pass is False
        runs[name] = out, calls, script.passes
    assert len(first_pass_samples) == 5 and all(torch.equal(first_pass_samples[0], f) for f in first_pass_samples)
    hires_steps = 2  # 3 steps at denoising 0.6 -> 2 sampler steps
    assert runs["same"][1] == [6] * 4 + [6] * hires_steps
    assert runs["off"][1] == [6] * 4 + [4] * hires_steps  # no SEG rows in the second pass
    assert runs["own"][1] == [6] * 4 + [6] * hires_steps
    own_passes = runs["own"][2]
    assert [hr for hr, _ in own_passes] == ([False, True, True] if flavor == "forge" else [False, True])
    assert own_passes[-1][1].scale == 1.5 and own_passes[-1][1].layers == "m0"
    first = own_passes[0][1]
    assert (first.scale, first.sigma, first.layers, first.mode) == (3.0, 2.0, "mid, u0", "blur")
    for a, b in (("own", "same"), ("off", "same"), ("pag", "same"), ("own", "off")):
        assert not torch.equal(runs[a][0], runs[b][0])
    assert torch.equal(runs["own_equal"][0], runs["same"][0])  # own settings equal to the main ones: as off
