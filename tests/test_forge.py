"""Forge / reForge adapter (lib_seg/hosts/forge.py) on the real ldm UNet, driven through a stand-in of the
hosts' patcher, sampling function, CFG denoiser and txt2img/hires flow (tests/forge_stand_in/)."""
import copy

import pytest
import torch

from forge_stand_in.patcher import UnetPatcher
from forge_stand_in.unet import KModel, attention_function, stand_in_attention
from forge_stand_in import sd_samplers_common
from forge_stand_in.webui import KDiffusionSampler, Processing, SDModel
from lib_seg.blur import blur_queries
from lib_seg.grid import token_grid
from lib_seg.hosts import forge as forge_host
from lib_seg.params import SegParamError, SegSettings
from precision import assert_same_arithmetic, float64
from unets import CONTEXT_DIM, sd15_like, sdxl_like

FLAVORS = ("forge", "reforge")
_HOST_APPLY_REFINER = sd_samplers_common.apply_refiner
_UNETS = {}


def unet_for(flavor, arch="sd15"):
    key = flavor, arch, torch.get_default_dtype()  # float64 inside precision.float64()
    if key not in _UNETS:
        _UNETS[key] = KModel(sd15_like(seed=0) if arch == "sd15" else sdxl_like(seed=0), flavor)
    return _UNETS[key]


def world(flavor, arch="sd15"):
    """A fresh patcher (host state) around a cached UNet; returns (sd_model, original patcher)."""
    patcher = UnetPatcher(unet_for(flavor, arch))
    return SDModel(patcher), patcher


def conds(batch=1, weights=(1.0,), seed=1, tokens=8):
    g = torch.Generator().manual_seed(seed)
    k = len(weights)
    tensor = torch.randn(batch * k, tokens, CONTEXT_DIM, generator=g)
    conds_list = [[(b * k + i, w) for i, w in enumerate(weights)] for b in range(batch)]
    uncond = torch.randn(batch, tokens, CONTEXT_DIM, generator=g)
    return (tensor, conds_list), uncond


class SegScript:
    """What scripts/seg.py does on these hosts: start the pass when SEG is active, stop in postprocess."""

    def __init__(self, flavor, settings, attention=stand_in_attention):
        self.adapter = forge_host.ForgeAdapter(flavor, attention=attention, samplers_common=sd_samplers_common)
        self.settings = settings
        self.started = []
        self.options_seen = []

    def process_before_every_sampling(self, p):
        if self.settings.active:
            self.started.append(self.adapter.start(p, self.settings))
            self.options_seen.append(p.sd_model.forge_objects.unet.model_options)

    def postprocess(self, p):
        self.adapter.stop(p)


def generate(flavor, settings=None, *, batch=1, weights=(1.0,), sd_model=None, script=None, **kwargs):
    if sd_model is None:
        sd_model, _ = world(flavor)
    cond, uncond = conds(batch, weights)
    p = Processing(sd_model, cond, uncond, batch_size=batch, flavor=flavor, **kwargs)
    if script is None and settings is not None:
        script = SegScript(flavor, settings)
    if script is not None:
        p.scripts.append(script)
    unet = sd_model.forge_objects_original.unet.model.diffusion_model
    unet._forge_calls = []
    try:
        out = p.sample()
    finally:
        if script is not None:
            script.postprocess(p)
    calls, unet._forge_calls = unet._forge_calls, None
    return out, calls, p


def on(**kw):
    return SegSettings(enabled=True, **kw)


def assert_clean(sd_model, patcher, p):
    """The host's objects are as before: the original patcher in place, its options without our entries,
    no instance-level overrides left on the sampler."""
    assert sd_model.forge_objects.unet is patcher
    assert patcher.model_options == {"transformer_options": {}}
    if p.sampler is not None:
        assert "sample" not in vars(p.sampler) and "sample_img2img" not in vars(p.sampler)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_disabled_is_bit_identical_and_installs_nothing(flavor):
    baseline, calls, _ = generate(flavor, batch=2)
    sd_model, patcher = world(flavor)
    for settings in (SegSettings(enabled=False), on(scale=0.0)):
        out, calls_off, p = generate(flavor, settings, batch=2, sd_model=sd_model)
        assert torch.equal(out, baseline)
        assert calls_off == calls == [4] * 4  # uncond + cond rows of 2 images, one call per step
        assert_clean(sd_model, patcher, p)


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("cfg_scale, rows", [(5.0, 6), (1.0, 4)])
def test_one_unet_call_per_step_with_seg_rows_batched(flavor, cfg_scale, rows):
    """Batch 2: cond 2 + uncond 2 + SEG 2 rows in one call; at CFG 1 the host still drops the uncond
    (no forced negative pass): cond 2 + SEG 2."""
    baseline, _, _ = generate(flavor, batch=2, cfg_scale=cfg_scale)
    sd_model, patcher = world(flavor)
    script = SegScript(flavor, on(scale=3.0, sigma=2.0, layers="mid,u0"))
    out, calls, p = generate(flavor, batch=2, cfg_scale=cfg_scale, sd_model=sd_model, script=script)
    assert calls == [rows] * 4
    patch = script.adapter.last_patch
    assert [seg for _, seg in patch.calls] == [slice(rows - 2, rows)] * 4
    assert not torch.equal(out, baseline) and torch.isfinite(out).all()
    assert_clean(sd_model, patcher, p)
    assert script.options_seen and all("disable_cfg1_optimization" not in o for o in script.options_seen)


def _one_evaluation(flavor, settings, x, sigma, cond, uncond, cfg_scale, max_chunks=None, arch="sd15"):
    sd_model, patcher = world(flavor, arch)
    p = Processing(sd_model, cond, uncond, flavor=flavor, cfg_scale=cfg_scale)
    p.sampler = KDiffusionSampler(sd_model, flavor)
    p.sampler.model_wrap_cfg.max_chunks = max_chunks
    adapter = forge_host.ForgeAdapter(flavor, attention=stand_in_attention)
    assert adapter.start(p, settings)
    try:
        return p.sampler.model_wrap_cfg(x, sigma, cond, uncond, cfg_scale)
    finally:
        adapter.stop(p)
        assert_clean(sd_model, patcher, p)


def _reference(flavor, settings, x, sigma, cond, uncond, cfg_scale, arch="sd15"):
    """The guidance from separate, unbatched UNet evaluations; the SEG prediction blurs the queries of every
    row in the selected layers with a patch written here (not the adapter's)."""
    kmodel = unet_for(flavor, arch)
    from lib_seg.layers import select_layers
    keys = [layer.patch_key for layer in select_layers(kmodel.diffusion_model, settings.layers)]

    def blurred(q, k, v, extra):
        shape = extra["original_shape"]
        return attention_function(blur_queries(q, token_grid(shape[-2:], q.shape[1]), settings.sigma), k, v, extra["n_heads"])

    def predict(context, seg=False):
        options = {"patches_replace": {"attn1": {key: blurred for key in keys}}} if seg else {}
        extra = {"c_crossattn": context["crossattn"], "y": context["vector"]} if isinstance(context, dict) else {"c_crossattn": context}
        return kmodel.apply_model(x, sigma.expand(x.shape[0]), transformer_options=options, **extra)

    def take(value, rows):
        return {k: v[rows] for k, v in value.items()} if isinstance(value, dict) else value[rows]

    tensor, conds_list = cond
    u = predict(uncond)
    guided = u.clone()
    for k in range(len(conds_list[0])):
        rows = [per_image[k][0] for per_image in conds_list]
        w = conds_list[0][k][1]
        c, s = predict(take(tensor, rows)), predict(take(tensor, rows), seg=True)
        guided += cfg_scale * w * (c - u) + settings.scale * w * (c - s)
    return guided


@pytest.mark.parametrize("flavor, sigma, weights, batch", [
    ("forge", 2.0, (1.0,), 2), ("reforge", float("inf"), (1.0,), 2),
    ("forge", float("inf"), (0.7, 0.5), 1), ("reforge", 4.0, (0.7, 0.5), 2)])
def test_batched_seg_equals_separate_passes(flavor, sigma, weights, batch):
    """One denoiser evaluation with the extension == uncond + w(cond - uncond) + s(cond - seg) computed from
    separate UNet passes, including AND prompts (per sub-prompt weights) and batch > 1, at a non-square size."""
    settings = on(scale=2.5, sigma=sigma, layers="m0,u0-u2")
    with float64():  # same arithmetic in two orders (tests/precision.py)
        cond, uncond = conds(batch, weights)
        x = torch.randn(batch, 4, 16, 24, generator=torch.Generator().manual_seed(3)) * 3
        sigma_t = torch.tensor([3.0])
        got = _one_evaluation(flavor, settings, x, sigma_t.expand(batch), cond, uncond, 6.0)
        want = _reference(flavor, settings, x, sigma_t, cond, uncond, 6.0)
        cfg_only = _reference(flavor, on(scale=0.0), x, sigma_t, cond, uncond, 6.0)
        assert_same_arithmetic(got, want, effect_from=cfg_only)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_low_memory_split_gives_the_same_result(flavor):
    """When memory makes the host evaluate one chunk per call, the SEG rows go with the cond call only."""
    settings = on(scale=2.0, sigma=2.0, layers="mid,up")
    with float64():  # same arithmetic in two orders (tests/precision.py)
        cond, uncond = conds(2, (0.6, 0.4))
        x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(4)) * 3
        sigma = torch.tensor([2.0, 2.0])
        unet = unet_for(flavor).diffusion_model
        unet._forge_calls = []
        split = _one_evaluation(flavor, settings, x, sigma, cond, uncond, 5.0, max_chunks=1)
        assert sorted(unet._forge_calls) == [2, 4, 4]  # uncond alone; each sub-prompt's cond with its SEG copy
        unet._forge_calls = None
        whole = _one_evaluation(flavor, settings, x, sigma, cond, uncond, 5.0)
        cfg_only = _one_evaluation(flavor, on(scale=0.0), x, sigma, cond, uncond, 5.0)
        assert_same_arithmetic(split, whole, effect_from=cfg_only)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_step_interval(flavor):
    """start=0.5 of 4 steps: progress 0, 1/3 without SEG rows, 2/3 and 1 with them."""
    _, calls, _ = generate(flavor, on(start=0.5), batch=2)
    assert calls == [4, 4, 6, 6]


@pytest.mark.parametrize("flavor", FLAVORS)
def test_non_square_and_hires_pass_get_their_own_grids(flavor):
    grids = []

    def recording_attention(q, k, v, heads, extra):
        grids.append((tuple(extra["original_shape"][-2:]), q.shape[1]))
        return stand_in_attention(q, k, v, heads, extra)

    sd_model, patcher = world(flavor)
    script = SegScript(flavor, on(sigma=1.0), attention=recording_attention)
    out, calls, p = generate(flavor, sd_model=sd_model, script=script, latent_hw=(16, 24), hr_latent_hw=(24, 32), hr_steps=3)
    assert out.shape == (1, 4, 24, 32)
    assert calls == [3] * 4 + [3] * 2  # hires: 3 steps at denoising 0.6 -> t_enc 1 -> 2 sampler steps
    seen = {(shape, n, token_grid(shape, n)) for shape, n in grids}
    assert seen == {((16, 24), 6, (2, 3)), ((24, 32), 12, (3, 4))}
    assert script.started == ([True, True, True] if flavor == "forge" else [True, True])
    assert_clean(sd_model, patcher, p)
    baseline, _, _ = generate(flavor, latent_hw=(16, 24), hr_latent_hw=(24, 32), hr_steps=3)
    assert not torch.equal(out, baseline)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_second_order_sampler_one_call_per_denoiser_call(flavor):
    _, calls, p = generate(flavor, on(), sampler="heun", steps=3)
    assert calls == [3] * p.sampler.model_wrap_cfg.step == [3] * 5


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("sampler,expected", [("euler", [2, 2, 3]), ("heun", [2, 2, 2, 2, 3])])
def test_last_step_only_fires_on_every_sampler(flavor, sampler, expected):
    """start = end = 1 is the last sampler step: Heun's 5 calls for 3 steps count against total_steps 6, so
    they are mapped onto steps 0, 0, 1, 1, 2 (issue 23, item 3)."""
    _, calls, _ = generate(flavor, on(start=1.0, end=1.0), sampler=sampler, steps=3)
    assert calls == expected


@pytest.mark.parametrize("flavor", FLAVORS)
def test_exception_mid_run_leaves_nothing_behind(flavor):
    sd_model, patcher = world(flavor)
    cond, uncond = conds()
    p = Processing(sd_model, cond, uncond, flavor=flavor)
    script = SegScript(flavor, on(sigma=2.0))
    p.scripts.append(script)

    real_sample = KDiffusionSampler.sample

    def failing_sample(self, *args, **kwargs):
        def boom(step):
            if step == 2:
                raise RuntimeError("interrupted")
        self.model_wrap_cfg.on_call = boom
        return real_sample(self, *args, **kwargs)

    KDiffusionSampler.sample = failing_sample
    try:
        with pytest.raises(RuntimeError, match="interrupted"):
            p.sample()  # no postprocess: only the adapter's own guard cleans up
    finally:
        KDiffusionSampler.sample = real_sample
    assert_clean(sd_model, patcher, p)
    baseline, _, _ = generate(flavor)
    again, _, _ = generate(flavor, sd_model=sd_model)
    assert torch.equal(again, baseline)
    seg_a, _, _ = generate(flavor, on(sigma=2.0), sd_model=sd_model)
    seg_b, _, _ = generate(flavor, on(sigma=2.0))
    assert torch.equal(seg_a, seg_b)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_existing_wrapper_and_attention_patch_are_chained(flavor):
    sd_model, patcher = world(flavor)
    seen_rows, attn_calls = [], []

    def other_wrapper(apply_model, args):
        seen_rows.append((args["input"].shape[0], list(args["cond_or_uncond"])))
        return apply_model(args["input"], args["timestep"], **args["c"])

    def other_attn1(q, k, v, extra):
        attn_calls.append(q.shape[0])
        return attention_function(q, k, v, extra["n_heads"])

    patcher.set_model_unet_function_wrapper(other_wrapper)
    patcher.set_model_attn1_replace(other_attn1, "middle", 0, 0)
    before = dict(patcher.model_options)
    generate(flavor, on(sigma=2.0), sd_model=sd_model)
    assert seen_rows == [(3, [1, 0, 0])] * 4
    assert attn_calls == [3] * 4
    assert patcher.model_options == before and sd_model.forge_objects.unet is patcher


@pytest.mark.parametrize("flavor", FLAVORS)
def test_dit_model_runs_without_seg_and_says_so_once(flavor, capsys):
    class TinyDiT(torch.nn.Module):  # SD3/Flux-like: no input_blocks / middle_block
        def __init__(self):
            super().__init__()
            self.double_blocks = torch.nn.ModuleList([torch.nn.Conv2d(4, 4, 1)])

        def forward(self, x, t, context=None, y=None):
            return self.double_blocks[0](x)

    torch.manual_seed(0)
    sd_model = SDModel(UnetPatcher(KModel(TinyDiT(), flavor)))
    baseline, _, _ = generate(flavor, sd_model=sd_model)
    capsys.readouterr()
    out, _, p = generate(flavor, on(), sd_model=sd_model)
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and "SEG" in printed[0] and "Flux" in printed[0]
    assert torch.equal(out, baseline)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_unknown_layer_is_refused_naming_the_field(flavor):
    """A layer spec the loaded model lacks is bad input: start() raises the message (scripts/seg.py makes
    the generation fail with it, so an API client sees it) and installs nothing."""
    sd_model, patcher = world(flavor)
    cond, uncond = conds(1, (1.0,))
    p = Processing(sd_model, cond, uncond, batch_size=1, flavor=flavor)
    with pytest.raises(SegParamError) as refused:
        forge_host.ForgeAdapter(flavor, attention=stand_in_attention).start(p, on(layers="u12"))
    message = str(refused.value)
    assert "'u12'" in message and "SEG layers" in message and "u0-u8" in message
    assert_clean(sd_model, patcher, p)


def test_post_cfg_rescales_in_noise_space():
    """Guidance rescale is defined on eps; the hosts' post-CFG function sees denoised images, so the
    term is converted with the step's input and sigma (as on A1111 and in lib_seg.denoiser)."""
    torch.manual_seed(6)
    patch = forge_host.SegPatch(on(scale=3.0, rescale=0.7), stand_in_attention)
    post_cfg = patch._post_cfg()
    # float64: the formula and its restatement reduce (std) in possibly different orders; in float64 that
    # is ≲ 120·2^-53 relative, far inside torch.testing's float64 defaults (1e-7)
    x, denoised, cond, seg = (torch.randn(2, 4, 6, 5, dtype=torch.float64) for _ in range(4))
    sigma = torch.tensor([2.0, 0.5], dtype=torch.float64)
    patch._keep(cond, seg)
    args = {"denoised": denoised, "cond_denoised": cond, "input": x, "sigma": sigma, "cond": None}
    out = post_cfg(args)
    s = sigma.view(-1, 1, 1, 1)
    guided = denoised + 3.0 * (cond - seg)
    eps, eps_cond = (x - guided) / s, (x - cond) / s
    dims = (1, 2, 3)
    ratio = eps_cond.std(dim=dims, keepdim=True) / eps.std(dim=dims, keepdim=True)
    expected = x - (0.7 * eps * ratio + 0.3 * eps) * s
    torch.testing.assert_close(out, expected)


def test_separate_pass_fallback_when_the_call_cannot_be_batched(capsys):
    """A call without transformer_options (no host here sends one, but a foreign wrapper might strip it)
    cannot carry the SEG rows: SEG runs in a second call, announced once."""
    patch = forge_host.SegPatch(on(sigma=2.0), stand_in_attention)
    kmodel = unet_for("forge")
    clone = patch.apply(UnetPatcher(kmodel), [])
    wrapper = clone.model_options["model_function_wrapper"]
    x = torch.randn(2, 4, 16, 16)
    context = torch.randn(2, 8, CONTEXT_DIM)
    args = {"input": x, "timestep": torch.full((2,), 2.0), "c": {"c_crossattn": context}, "cond_or_uncond": [1, 0]}
    out = wrapper(kmodel.apply_model, args)
    out2 = wrapper(kmodel.apply_model, args)
    assert out.shape == x.shape and torch.equal(out, out2)
    assert [rows for rows, _ in patch.calls] == [2, 1, 2, 1]
    assert len(patch.stash) == 2
    assert capsys.readouterr().out.count("separate pass") <= 1


def test_memory_estimate_counts_the_seg_rows_and_chains():
    """sampling_prepare estimates for 2B rows (cond + uncond); with SEG the call holds 3B."""
    kmodel = unet_for("forge")
    asked = []
    kmodel.memory_required = lambda input_shape: asked.append(list(input_shape)) or 1
    try:
        patcher = UnetPatcher(kmodel)
        clone = forge_host.SegPatch(on(), stand_in_attention).apply(patcher, [])
        clone.model_options["memory_peak_estimation_modifier"]([4, 4, 16, 16])
        assert asked == [[6, 4, 16, 16]] and "memory_peak_estimation_modifier" not in patcher.model_options
        patcher.model_options["memory_peak_estimation_modifier"] = lambda shape: asked.append(("other", shape[0])) or 2
        clone = forge_host.SegPatch(on(), stand_in_attention).apply(patcher, [])
        assert clone.model_options["memory_peak_estimation_modifier"]([2, 4, 8, 8]) == 2 and asked[-1] == ("other", 3)
        copy.deepcopy(clone.model_options)  # clones of the clone stay cheap: no bound methods inside
    finally:
        del kmodel.memory_required


@pytest.mark.parametrize("flavor", FLAVORS)
def test_sdxl_like_vector_rows_and_two_transformers_per_block(flavor):
    """SDXL: the pooled vector 'y' is per row and must follow the SEG copies; blocks hold two transformers,
    so patch keys (section, block, 1) are used too."""
    settings = on(scale=2.0, sigma=2.0, layers="m0,u0.1")
    with float64():  # same arithmetic in two orders (tests/precision.py)
        g = torch.Generator().manual_seed(5)
        batch, weights = 2, (0.8, 0.6)
        tensor = {"crossattn": torch.randn(batch * 2, 8, CONTEXT_DIM, generator=g),
                  "vector": torch.randn(batch * 2, 1, generator=g)}
        cond = (tensor, [[(b * 2 + i, w) for i, w in enumerate(weights)] for b in range(batch)])
        uncond = {"crossattn": torch.randn(batch, 8, CONTEXT_DIM, generator=g), "vector": torch.randn(batch, 1, generator=g)}
        x = torch.randn(batch, 4, 16, 24, generator=g) * 3
        got = _one_evaluation(flavor, settings, x, torch.full((batch,), 3.0), cond, uncond, 4.0, arch="sdxl")
        want = _reference(flavor, settings, x, torch.tensor([3.0]), cond, uncond, 4.0, arch="sdxl")
        cfg_only = _reference(flavor, on(scale=0.0), x, torch.tensor([3.0]), cond, uncond, 4.0, arch="sdxl")
        assert_same_arithmetic(got, want, effect_from=cfg_only)


def test_transformer_options_follow_the_extended_batch():
    """Labels, Forge's row indices/marks and reForge's uuids describe the extended call; other lists
    (e.g. Forge's block_modifiers) are left alone."""
    modifiers = [object(), object()]
    options = {"cond_or_uncond": [1, 0], "uuids": ["u", "c"], "block_modifiers": modifiers, "sigmas": torch.ones(2),
               "cond_mark": torch.tensor([1.0, 1.0, 0.0, 0.0]), "cond_indices": [2, 3], "uncond_indices": [0, 1]}
    rows = torch.tensor([2, 3])
    out = forge_host._extend_transformer_options(options, 4, rows, slice(4, 6), [1, 0], [1], 2)
    assert out["cond_or_uncond"] == [1, 0, 0] and out["uuids"] == ["u", "c", "c"]
    assert out["block_modifiers"] is modifiers and out[forge_host.SEG_ROWS_KEY] == slice(4, 6)
    assert out["cond_indices"] == [2, 3, 4, 5] and out["uncond_indices"] == [0, 1]
    assert out["cond_mark"].tolist() == [1, 1, 0, 0, 0, 0]
    assert options["cond_or_uncond"] == [1, 0]  # the host's dict is not modified


def _refiner_run(flavor, settings, base, refiner):
    """txt2img, 4 steps, the refiner taking over at half (Forge/reForge's apply_refiner stand-in)."""
    cond, uncond = conds()
    p = Processing(base, cond, uncond, flavor=flavor, refiner=refiner, refiner_switch_at=0.5)
    script = SegScript(flavor, settings) if settings is not None else None
    if script is not None:
        p.scripts.append(script)
    models = [m.forge_objects_original.unet.model.diffusion_model for m in (base, refiner)]
    for unet in models:
        unet._forge_calls = []
    try:
        out = p.sample()
    finally:
        if script is not None:
            script.postprocess(p)
    calls = [unet._forge_calls for unet in models]
    for unet in models:
        unet._forge_calls = None
    assert sd_samplers_common.apply_refiner is _HOST_APPLY_REFINER  # our wrapper is gone with the pass
    return out, calls, p


@pytest.mark.parametrize("flavor", FLAVORS)
def test_refiner_switch_continues_seg_on_the_refiner(flavor):
    """Forge and reForge load the refiner mid-sampling as a new model with fresh forge_objects: SEG must
    patch it too (rows 3 on the refiner's steps, 'SEG refiner: on'), and leave both models clean."""
    base, base_patcher = world(flavor)
    refiner_patcher = UnetPatcher(KModel(sd15_like(seed=5), flavor))
    refiner = SDModel(refiner_patcher)
    plain, plain_calls, _ = _refiner_run(flavor, None, base, refiner)
    assert plain_calls == [[2, 2], [2, 2]]
    base.forge_objects = base.forge_objects_original.shallow_copy()
    out, calls, p = _refiner_run(flavor, on(scale=3.0, sigma=2.0, layers="mid"), base, refiner)
    assert calls == [[3, 3], [3, 3]]
    assert p.extra_generation_params.get("SEG refiner") == "on"
    assert not torch.equal(out, plain)
    assert refiner.forge_objects.unet is refiner_patcher and refiner_patcher.model_options == {"transformer_options": {}}
    assert base_patcher.model_options == {"transformer_options": {}}


@pytest.mark.parametrize("flavor", FLAVORS)
def test_refiner_without_the_layers_ends_seg_at_the_switch_and_says_so(flavor, capsys):
    base = SDModel(UnetPatcher(KModel(sd15_like(seed=3, transformer_depth=2), flavor)))
    refiner_patcher = UnetPatcher(KModel(sd15_like(seed=5), flavor))
    refiner = SDModel(refiner_patcher)
    _, calls, p = _refiner_run(flavor, on(scale=3.0, sigma=4.0, layers="m0.1"), base, refiner)
    assert calls == [[3, 3], [2, 2]]
    assert p.extra_generation_params.get("SEG refiner") == "off"
    assert capsys.readouterr().out.count("SEG ends at the refiner switch") == 1
    assert refiner.forge_objects.unet is refiner_patcher and refiner_patcher.model_options == {"transformer_options": {}}
