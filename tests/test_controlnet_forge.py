"""SEG beside the hosts' built-in ControlNet (Forge, reForge), on the stand-in of tests/forge_stand_in
(controlnet.py restates how the residuals are computed for the host's rows before the model-function
wrapper sees the call, weighted per row by the control mode, and popped into the UNet).

With sigma = 0.001 the blur is exactly the identity (off-diagonal weights exp(-1 / (2 * 0.001^2)) = 0), so
SEG rows that carry their cond rows' residuals are the same computation on the same inputs, and the
no-blur SEG image at scale 10 must equal the ControlNet-only image up to round-off.

Those comparisons run in float64 (the in_float64 fixture); the checks that compare bit for bit, count rows or
assert an effect far above round-off run in float32, at a quarter of the cost.
"""
import pytest
import torch

from controlnet_like import TinyControlNet, hint_image
from forge_stand_in import controlnet as CN
from forge_stand_in.patcher import UnetPatcher
from forge_stand_in.unet import stand_in_attention
from forge_stand_in.webui import Processing, SDModel
from lib_seg.hosts import forge as forge_host
from lib_seg.params import SegSettings
from precision import MIN_EFFECT, REL64
from test_forge import FLAVORS, conds, unet_for, SegScript

NO_BLUR = SegSettings(enabled=True, scale=10.0, sigma=0.001, layers="all")
SEG = SegSettings(enabled=True, scale=3.0, sigma=2.0, layers="all")
MODES = [CN.BALANCED, CN.PROMPT, CN.CONTROL]
# As tests/test_controlnet_a1111.py: float64, REL64 of the scale per evaluation order, (1 + 2 s) * REL64 for
# the no-blur SEG image at s = 10; effects above MIN_EFFECT.
TOLERANCE = (1 + 2 * 10) * REL64
# Sampler steps of the equality checks and of the check that shows their margin (as in test_controlnet_a1111.py).
STEPS = 2
_NETS = {}


def nets(flavor, arch="sd15"):
    key = flavor, arch, torch.get_default_dtype()
    if key not in _NETS:
        kmodel = unet_for(flavor, arch)
        _NETS[key] = [CN.StandInControlNet(TinyControlNet(kmodel.diffusion_model, seed=s), kmodel, flavor)
                               for s in (0, 1)]
    return _NETS[key]


def relative(a, b):
    return (a - b).abs().max().item() / max(b.abs().max().item(), 1.0)


def generate(flavor, settings=None, units=(), batch=1, cfg_scale=5.0, arch="sd15", hints=None, steps=4):
    """txt2img with the ControlNet script first, SEG second (both patch the pass's forge_objects.unet)."""
    patcher = UnetPatcher(unet_for(flavor, arch))
    sd_model = SDModel(patcher)
    cn_units = [(net, hint_image(seed=5 + i) if hints is None else hints, 1.0, mode)
                for i, (net, mode) in enumerate(units)]
    if arch == "sdxl":
        g = torch.Generator().manual_seed(3)
        tensor = {"crossattn": torch.randn(batch, 8, 32, generator=g), "vector": torch.randn(batch, 1, generator=g)}
        cond = (tensor, [[(b, 1.0)] for b in range(batch)])
        uncond = {"crossattn": torch.randn(batch, 8, 32, generator=g), "vector": torch.randn(batch, 1, generator=g)}
    else:
        cond, uncond = conds(batch)
    p = Processing(sd_model, cond, uncond, batch_size=batch, flavor=flavor, cfg_scale=cfg_scale, steps=steps)
    p.scripts.append(CN.ControlNetScript(cn_units, is_sdxl=arch == "sdxl"))
    seg = SegScript(flavor, settings, attention=stand_in_attention) if settings is not None else None
    if seg is not None:
        p.scripts.append(seg)
    unet = patcher.model.diffusion_model
    unet._forge_calls = []
    try:
        out = p.sample()
    finally:
        if seg is not None:
            seg.postprocess(p)
    calls, unet._forge_calls = unet._forge_calls, None
    return out, calls, seg


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("mode", MODES)
def test_no_blur_seg_equals_controlnet_only(in_float64, flavor, mode):
    units = [(nets(flavor)[0], mode)]
    only, _, _ = generate(flavor, None, units, steps=STEPS)
    seg, calls, script = generate(flavor, NO_BLUR, units, steps=STEPS)
    assert calls == [3] * STEPS                                      # one UNet call per step: + 1 SEG row
    assert [s for _, s in script.adapter.last_patch.calls] == [slice(2, 3)] * STEPS
    assert relative(seg, only) <= TOLERANCE
    plain, _, _ = generate(flavor, None, (), steps=STEPS)
    assert relative(only, plain) > MIN_EFFECT               # ControlNet's effect is there
    blurred, _, _ = generate(flavor, SEG, units, steps=STEPS)
    assert relative(blurred, only) > MIN_EFFECT             # and SEG's, with a real blur


@pytest.mark.parametrize("flavor", FLAVORS)
def test_seg_rows_without_control_would_fail_by_far(flavor, monkeypatch):
    """The margin of the check above: SEG rows appended with zero residuals instead of the cond rows'."""
    units = [(nets(flavor)[0], CN.BALANCED)]
    only, _, _ = generate(flavor, None, units, steps=STEPS)
    real_extend = forge_host._extend_value

    def no_control_for_seg_rows(value, n, rows):
        out = real_extend(value, n, rows)
        if isinstance(value, dict) and "middle" in value:
            out = {k: [torch.cat([v[:n], torch.zeros_like(v[n:])]) for v in vs] for k, vs in out.items()}
        return out

    monkeypatch.setattr(forge_host, "_extend_value", no_control_for_seg_rows)
    broken, _, _ = generate(flavor, NO_BLUR, units, steps=STEPS)
    assert relative(broken, only) > MIN_EFFECT


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("modes", [(CN.BALANCED, CN.CONTROL), (CN.PROMPT, CN.CONTROL)])
def test_batch_2_two_units(in_float64, flavor, modes):
    units = list(zip(nets(flavor), modes))
    only, _, _ = generate(flavor, None, units, batch=2, steps=STEPS)
    seg, calls, _ = generate(flavor, NO_BLUR, units, batch=2, steps=STEPS)
    assert calls == [6] * STEPS
    assert relative(seg, only) <= TOLERANCE
    one, _, _ = generate(flavor, None, units[:1], batch=2, steps=STEPS)
    assert relative(only, one) > MIN_EFFECT


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("mode", [CN.BALANCED, CN.CONTROL])
def test_cfg_1(in_float64, flavor, mode):
    """At CFG 1 the hosts drop the uncond rows: the call holds cond + SEG only."""
    units = [(nets(flavor)[0], mode)]
    only, calls_only, _ = generate(flavor, None, units, cfg_scale=1.0, steps=STEPS)
    seg, calls, _ = generate(flavor, NO_BLUR, units, cfg_scale=1.0, steps=STEPS)
    assert calls_only == [1] * STEPS and calls == [2] * STEPS
    assert relative(seg, only) <= TOLERANCE


@pytest.mark.parametrize("flavor", FLAVORS)
def test_one_hint_per_image(in_float64, flavor):
    """Per-image hints are broadcast per chunk by the host before the wrapper: the copies carry the right one."""
    hints = torch.cat([hint_image(seed=7), hint_image(seed=8)])
    units = [(nets(flavor)[0], CN.BALANCED)]
    only, _, _ = generate(flavor, None, units, batch=2, hints=hints, steps=STEPS)
    seg, calls, _ = generate(flavor, NO_BLUR, units, batch=2, hints=hints, steps=STEPS)
    assert calls == [6] * STEPS
    assert relative(seg, only) <= TOLERANCE


def test_sdxl_forge(in_float64):
    units = [(nets("forge", "sdxl")[0], CN.CONTROL)]
    only, _, _ = generate("forge", None, units, arch="sdxl")
    seg, calls, _ = generate("forge", NO_BLUR, units, arch="sdxl")
    assert calls == [3] * 4
    assert relative(seg, only) <= TOLERANCE
    plain, _, _ = generate("forge", None, (), arch="sdxl")
    assert relative(only, plain) > MIN_EFFECT


def test_control_modes_weight_rows_by_cond_mark():
    """The stand-in's own check: "ControlNet is more important" zeroes the uncond rows' residuals (Forge)."""
    net = nets("forge")[0]
    unit = net.copy_with(hint_image(), 1.0, CN.soft_weighting(False), CN.zero_weighting())
    unit.transformer_options = {"cond_mark": torch.tensor([1.0, 0.0])}
    x = torch.randn(2, 4, 16, 16)
    control = unit.get_control(x, torch.full((2,), 3.0), {"c_crossattn": torch.randn(2, 8, 32)}, 2)
    assert all(v[0].abs().max() == 0 and v[1].abs().max() > 0 for v in control["output"] + control["middle"])


def test_separate_pass_fallback_keeps_the_control(in_float64):
    """Where a call cannot be batched, SEG runs its rows in a second call. The hosts' UNet pops the residual
    lists it is given (apply_control), so the SEG call's residuals must be taken before the host's call runs:
    with no blur the SEG rows' output then equals the cond rows'."""
    kmodel = unet_for("forge")
    patch = forge_host.SegPatch(NO_BLUR, stand_in_attention)
    clone = patch.apply(UnetPatcher(kmodel), [])
    wrapper = clone.model_options["model_function_wrapper"]
    g = torch.Generator().manual_seed(2)
    x, context = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 8, 32, generator=g)
    sigma = torch.full((2,), 2.0)
    unit = nets("forge")[0].copy_with(hint_image(), 1.0, None, None)
    with torch.no_grad():
        control = unit.get_control(x, sigma, {"c_crossattn": context}, 2)
    # no transformer_options: what a foreign wrapper stripping them would hand on; it forces the fallback
    args = {"input": x, "timestep": sigma, "c": {"c_crossattn": context, "control": control}, "cond_or_uncond": [1, 0]}
    with torch.no_grad():
        wrapper(kmodel.apply_model, args)
    assert [rows for rows, _ in patch.calls] == [2, 1]
    (_, cond_out, seg_out), = patch.stash
    assert relative(seg_out, cond_out) <= REL64  # the same rows in another call: float64 round-off only


# ---------------------------------------------------------------- the built-in MultiDiffusion

class MultiDiffusionScript:
    """extensions-builtin/sd_forge_multidiffusion (Forge dfdcbab6; reForge 3b56b268 alike), restated: before every
    sampling pass, a patcher clone whose model-function wrapper cuts the call's latent into overlapping tiles,
    runs ``tile_batch_size`` tiles per call (tile after tile, each holding all the call's rows; text
    conditioning and timesteps repeated, ``c`` otherwise shared, transformer_options included), sums the
    outputs and divides by the tile count; ``model_options['tiled_diffusion'] = True``."""

    def __init__(self, tile=16, overlap=8, tile_batch_size=4):
        self.tile, self.overlap, self.tile_batch_size = tile, overlap, tile_batch_size

    def process_before_every_sampling(self, p):
        from a1111_stand_in.tiled_diffusion_ext import split_bboxes
        tile, overlap, per_call = self.tile, self.overlap, self.tile_batch_size

        def wrapper(model_function, args):
            x, t, c = args["input"], args["timestep"], args["c"]
            n, _, h, w = x.shape
            boxes = split_bboxes(h, w, tile, tile, overlap)
            buffer, count = torch.zeros_like(x), torch.zeros((1, 1, h, w))
            for i in range(0, len(boxes), per_call):
                batch = boxes[i:i + per_call]
                c_tile = dict(c, c_crossattn=c["c_crossattn"].repeat(len(batch), 1, 1))
                out = model_function(torch.cat([x[:, :, ys, xs] for ys, xs in batch]), t.repeat(len(batch)), **c_tile)
                for k, (ys, xs) in enumerate(batch):
                    buffer[:, :, ys, xs] += out[k * n:(k + 1) * n]
                    count[:, :, ys, xs] += 1
            return buffer / count

        clone = p.sd_model.forge_objects.unet.clone()
        clone.set_model_unet_function_wrapper(wrapper)
        clone.model_options["tiled_diffusion"] = True
        p.sd_model.forge_objects.unet = clone

    def postprocess(self, p):
        pass


def _tiled(flavor, settings):
    patcher = UnetPatcher(unet_for(flavor))
    sd_model = SDModel(patcher)
    cond, uncond = conds(1)
    p = Processing(sd_model, cond, uncond, flavor=flavor, latent_hw=(24, 24))
    p.scripts.append(MultiDiffusionScript())
    seg = SegScript(flavor, settings, attention=stand_in_attention)
    p.scripts.append(seg)
    unet = patcher.model.diffusion_model
    unet._forge_calls = []
    try:
        out = p.sample()
    finally:
        seg.postprocess(p)
    calls, unet._forge_calls = unet._forge_calls, None
    return out, calls, seg


@pytest.mark.parametrize("flavor", FLAVORS)
def test_multidiffusion_steps_aside(flavor, capsys):
    plain, plain_calls, _ = _tiled(flavor, SegSettings(enabled=False))
    capsys.readouterr()
    got, calls, seg = _tiled(flavor, SEG)
    assert seg.started == [False] and calls == plain_calls == [8] * 4   # 4 tiles x (cond + uncond), one call
    assert "[SEG] skipped for this generation: MultiDiffusion" in capsys.readouterr().out
    assert torch.equal(got, plain)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_multidiffusion_would_get_seg_on_one_tile_only(flavor, monkeypatch):
    """Why: without stepping aside SEG's wrapper runs first and extends the call to 3 rows; MultiDiffusion then
    runs 4 tiles x 3 rows in one call, but the SEG rows' slice in transformer_options still says rows 2..3,
    i.e. the first tile's SEG row only."""
    monkeypatch.setattr(forge_host.ForgeAdapter, "start", _start_ignoring_tiles)
    _, calls, seg = _tiled(flavor, SEG)
    assert calls == [12] * 4
    assert [s for _, s in seg.adapter.last_patch.calls] == [slice(2, 3)] * 4


_real_start = forge_host.ForgeAdapter.start


def _start_ignoring_tiles(self, p, settings):
    unet = p.sd_model.forge_objects.unet
    flag = unet.model_options.pop("tiled_diffusion")
    try:
        return _real_start(self, p, settings)
    finally:
        unet.model_options["tiled_diffusion"] = flag


# ---------------------------------------------------------------- a post-CFG guidance with its own UNet pass

class SeparatePassScript:
    """What Forge's built-in PAG (extensions-builtin/sd_forge_perturbed_attention) and sd-perturbed-attention
    (pamparamm, 904319bf, pag_nodes.py) do: a post-CFG function that evaluates the cond entries once more,
    through the host's calc_cond_(uncond_)batch with a copy of ``args['model_options']`` (so through every
    model-function wrapper in it). Its guidance term is left out here (scale 0): only the extra pass matters."""

    def __init__(self, flavor):
        self.flavor = flavor
        self.passes = 0

    def process_before_every_sampling(self, p):
        from forge_stand_in.sampling import calc_cond_uncond_batch
        script = self

        def post_cfg(args):
            calc_cond_uncond_batch(args["model"], args["cond"], None, args["input"], args["sigma"],
                                   dict(args["model_options"]), script.flavor)
            script.passes += 1
            return args["denoised"]

        clone = p.sd_model.forge_objects.unet.clone()
        clone.set_model_sampler_post_cfg_function(post_cfg)
        p.sd_model.forge_objects.unet = clone

    def postprocess(self, p):
        pass


def _with_separate_pass(flavor, settings, order):
    patcher = UnetPatcher(unet_for(flavor))
    sd_model = SDModel(patcher)
    cond, uncond = conds(2)
    p = Processing(sd_model, cond, uncond, batch_size=2, flavor=flavor)
    seg = SegScript(flavor, settings, attention=stand_in_attention)
    other = SeparatePassScript(flavor) if order else None
    p.scripts.extend([other, seg] if order == "before" else [seg, other] if order == "after" else [seg])
    try:
        return p.sample(), other
    finally:
        seg.postprocess(p)


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("order", ["before", "after"])
def test_a_foreign_pass_after_cfg_does_not_enter_the_seg_term(flavor, order):
    """The foreign pass goes through SEG's wrapper too (it is in model_options), which stashes a (cond, seg)
    pair for it. SEG's post-CFG function must use only the host's own cond chunks of the current step, whether
    the foreign post-CFG function runs before it (same step) or after it (its pair would reach the next step)."""
    alone, _ = _with_separate_pass(flavor, SEG, None)
    got, other = _with_separate_pass(flavor, SEG, order)
    assert other.passes == 4
    assert torch.equal(got, alone)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_hires_fix(in_float64, flavor):
    units = [(nets(flavor)[0], CN.PROMPT)]

    def run(settings):
        patcher = UnetPatcher(unet_for(flavor))
        cond, uncond = conds(1)
        p = Processing(SDModel(patcher), cond, uncond, flavor=flavor, hr_latent_hw=(24, 24), hr_steps=2)
        p.scripts.append(CN.ControlNetScript([(net, hint_image(), 1.0, mode) for net, mode in units]))
        seg = SegScript(flavor, settings, attention=stand_in_attention)
        p.scripts.append(seg)
        try:
            return p.sample()
        finally:
            seg.postprocess(p)

    only = run(SegSettings(enabled=False))
    assert relative(run(NO_BLUR), only) <= TOLERANCE


@pytest.mark.parametrize("flavor", FLAVORS)
def test_reference_preprocessor_steps_aside(flavor, capsys):
    """forge_preprocessor_reference (Forge dfdcbab6, forge_reference.py): set_model_replace_all(attn1_proc) and a
    conditioning modifier; attn1_proc returns all cond rows once per cond chunk, so an extra SEG chunk would make
    its output longer than the call. Detected by the module the patches come from; SEG steps aside."""
    def attn1_proc(q, k, v, extra_options):
        return stand_in_attention(q, k, v, extra_options["n_heads"], extra_options)

    attn1_proc.__module__ = "forge_reference.py"

    class ReferenceScript:
        def process_before_every_sampling(self, p):
            clone = p.sd_model.forge_objects.unet.clone()
            clone.set_model_attn1_replace(attn1_proc, "middle", 0, 0)
            p.sd_model.forge_objects.unet = clone

        def postprocess(self, p):
            pass

    patcher = UnetPatcher(unet_for(flavor))
    cond, uncond = conds(1)
    p = Processing(SDModel(patcher), cond, uncond, flavor=flavor)
    seg = SegScript(flavor, SEG, attention=stand_in_attention)
    p.scripts.extend([ReferenceScript(), seg])
    unet = patcher.model.diffusion_model
    unet._forge_calls = []
    try:
        p.sample()
    finally:
        seg.postprocess(p)
    calls, unet._forge_calls = unet._forge_calls, None
    assert seg.started == [False] and calls == [2] * 4
    assert "[SEG] skipped for this generation: a ControlNet reference preprocessor" in capsys.readouterr().out
