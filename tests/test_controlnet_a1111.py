"""SEG beside sd-webui-controlnet on the A1111 1.10.1 stand-in (tests/a1111_stand_in/controlnet_ext.py restates
the extension's marking, its replaced UNet forward and its control modes), real ldm UNets, real k-diffusion.

The central check: with sigma = 0.001 the blur operator is exactly the identity (every off-diagonal weight is
exp(-1 / (2 * 0.001^2)) = 0 in float64), so a SEG row that gets the same control as the cond row it copies is
the same computation on the same inputs, and SEG at scale 10 adds 10 * (cond - seg) = 10 * (round-off)
to each step. A SEG row without its control would add 10 * (the control's whole effect).
"""
import pytest
import torch

from a1111_stand_in import controlnet_ext as CN
from a1111_stand_in import harness as H
from a1111_stand_in.fixtures import host, sd15, clean_host, sd15_64  # noqa: F401 (pytest fixtures)
from controlnet_like import TinyControlNet, hint_image
from precision import MIN_EFFECT, REL64, float64

pytestmark = pytest.mark.usefixtures("clean_host")

NO_BLUR = [True, 10.0, "0.001", "all"]
SEG = [True, 3.0, "2", "all"]
MODES = [CN.BALANCED, CN.PROMPT, CN.CONTROL]

# Two evaluations of the same rows at different batch positions may round differently (GEMM blocking): run in
# float64, bounded by REL64 of the scale (tests/precision.py). The guided step adds s * (cond - seg) with both
# terms carrying that error, and the reference run carries it once more: (1 + 2 s) * REL64 with s = 10.
# Every effect asserted (ControlNet's, SEG's, a SEG row left without control) exceeds MIN_EFFECT of the scale.
# The checks that compare bit for bit, count rows or assert such an effect hold in any dtype: float32.
TOLERANCE = (1 + 2 * 10) * REL64
# Sampler steps of the equality checks and of the check that shows their margin: the control a row gets is decided
# the same way at every UNet call, and a second step already takes the first one's result in; the effects asserted
# stay above MIN_EFFECT and the SEG row without control still fails by far.
STEPS = 2


@pytest.fixture(scope="module")
def nets(sd15):
    return TinyControlNet(sd15.model.diffusion_model, seed=0), TinyControlNet(sd15.model.diffusion_model, seed=1)


@pytest.fixture(scope="module")
def nets_64(sd15_64):
    with float64():
        return (TinyControlNet(sd15_64.model.diffusion_model, seed=0),
                TinyControlNet(sd15_64.model.diffusion_model, seed=1))


def relative(a, b):
    return (a - b).abs().max().item() / max(b.abs().max().item(), 1.0)


def units(nets, modes=(CN.BALANCED,), weight=1.0):
    return [CN.Unit(net, hint_image(seed=5 + i), weight, mode) for i, (net, mode) in enumerate(zip(nets, modes))]


def generate(host, model, seg_args, cn_units=(), prompts=((1,),), negative=(2,), batch_option=CN.DEFAULT_BATCH,
             style_align=False, **kw):
    """One txt2img generation with the ControlNet stand-in and SEG; fresh conds (marking changes them)."""
    from modules import processing
    host.use_model(model)
    c, uc = H.conds([[(s, 1.0) for s in image] for image in prompts], list(negative))
    cn = CN.ControlNetScript(cn_units, batch_option, style_align)
    runner = host.make_runner(other_scripts=[cn])
    p = processing.StableDiffusionProcessingTxt2Img(c, uc, scripts=runner, script_args=host.script_args(seg_args, runner),
                                                    batch_size=len(prompts), **kw)
    unet = model.model.diffusion_model
    counter = H.CallCounter(unet)
    seen = []
    original_process = cn.process

    def process(p, *args, **kwargs):
        original_process(p, *args, **kwargs)
        if cn.latest_network is not None:
            seen.append(cn.latest_network.seen)

    cn.process = process
    try:
        samples = processing.process_images(p).samples
    finally:
        counter.close()
    assert "forward" not in vars(unet)  # the ControlNet stand-in restored the UNet
    return samples, counter.calls, p, (seen[0] if seen else [])


@pytest.mark.parametrize("mode", MODES)
def test_no_blur_seg_equals_controlnet_only(host, in_float64, sd15_64, nets_64, mode):
    sd15, nets = sd15_64, nets_64
    cn_units = units(nets[:1], (mode,))
    only, _, _, _ = generate(host, sd15, [False], cn_units, steps=STEPS)
    seg, calls, p, seen = generate(host, sd15, NO_BLUR, cn_units, steps=STEPS)
    assert calls == [3] * STEPS                                   # one UNet call per step: cond + SEG + uncond
    assert [s[1] for s in seen] == [[0, 1]] * STEPS               # the SEG row carries the cond mark
    assert p.extra_generation_params["SEG scale"] == "10"
    assert relative(seg, only) <= TOLERANCE
    plain, _, _, _ = generate(host, sd15, [False], steps=STEPS)
    assert relative(only, plain) > MIN_EFFECT             # ControlNet's effect is there
    blurred, _, _, _ = generate(host, sd15, SEG, cn_units, steps=STEPS)
    assert relative(blurred, only) > MIN_EFFECT           # and SEG's, with a real blur


def test_seg_row_without_control_would_fail_by_far(host, sd15, nets, monkeypatch):
    """The margin of the check above: give the SEG row the uncond mark (what a layout that put SEG rows among
    the uncond rows would do). In "ControlNet is more important" mode it then gets no control at all."""
    from lib_seg.hosts import a1111
    cn_units = units(nets[:1], (CN.CONTROL,))
    only, _, _, _ = generate(host, sd15, [False], cn_units, steps=STEPS)
    real_repeat = a1111.repeat_cond

    def seg_rows_marked_uncond(cond, n):
        out = real_repeat(cond, n)
        out[n:2 * n, 0, :] = CN.NEGATIVE_MARK
        return out

    monkeypatch.setattr(a1111, "repeat_cond", seg_rows_marked_uncond)
    broken, _, _, seen = generate(host, sd15, NO_BLUR, cn_units, steps=STEPS)
    assert [s[1] for s in seen] == [[0]] * STEPS
    assert relative(broken, only) > MIN_EFFECT


@pytest.mark.parametrize("mode", [CN.BALANCED, CN.CONTROL])
def test_batch_2_two_units(host, in_float64, sd15_64, nets_64, mode):
    sd15, nets = sd15_64, nets_64
    cn_units = units(nets, (mode, CN.PROMPT))
    prompts, negative = ((1,), (3,)), (2, 4)
    only, _, _, _ = generate(host, sd15, [False], cn_units, prompts, negative, steps=STEPS)
    seg, calls, _, seen = generate(host, sd15, NO_BLUR, cn_units, prompts, negative, steps=STEPS)
    assert calls == [6] * STEPS
    assert [s[1] for s in seen] == [[0, 1, 2, 3]] * STEPS
    assert relative(seg, only) <= TOLERANCE
    one_unit, _, _, _ = generate(host, sd15, [False], cn_units[:1], prompts, negative, steps=STEPS)
    assert relative(only, one_unit) > MIN_EFFECT         # the second unit acts


@pytest.mark.parametrize("mode", [CN.BALANCED, CN.CONTROL])
def test_cfg_1(host, in_float64, sd15_64, nets_64, mode):
    sd15, nets = sd15_64, nets_64
    cn_units = units(nets[:1], (mode,))
    only, calls_only, _, _ = generate(host, sd15, [False], cn_units, cfg_scale=1.0, steps=STEPS)
    seg, calls, _, _ = generate(host, sd15, NO_BLUR, cn_units, cfg_scale=1.0, steps=STEPS)
    assert calls_only == [2] * STEPS and calls == [3] * STEPS        # A1111 still runs the uncond row at CFG 1
    assert relative(seg, only) <= TOLERANCE


def test_sdxl(host, in_float64):
    model = H.sd_model("sdxl")
    net = TinyControlNet(model.model.diffusion_model, seed=0)
    cn_units = [CN.Unit(net, hint_image(), 1.0, CN.PROMPT)]
    c, uc = H.sdxl_conds([[(1, 1.0)]], [2])

    def run(args, with_cn=True):
        from modules import processing
        host.use_model(model)
        cn = CN.ControlNetScript(cn_units if with_cn else [])
        runner = host.make_runner(other_scripts=[cn])
        c, uc = H.sdxl_conds([[(1, 1.0)]], [2])
        p = processing.StableDiffusionProcessingTxt2Img(c, uc, scripts=runner,
                                                        script_args=host.script_args(args, runner))
        return processing.process_images(p).samples

    only = run([False])
    assert relative(run(NO_BLUR), only) <= TOLERANCE
    assert relative(only, run([False], with_cn=False)) > MIN_EFFECT
    assert c is not None and uc is not None


# ---------------------------------------------------------------- features SEG must step aside for

def assert_stepped_aside(capsys, p, calls, rows_per_step, reason):
    assert calls == [rows_per_step] * 4                       # no SEG rows were added
    assert not any(key.startswith("SEG") for key in p.extra_generation_params)
    out = capsys.readouterr().out
    assert "[SEG] skipped for this generation" in out and reason in out


def test_unit_per_image_batch_option_steps_aside(host, sd15, nets, capsys):
    """"Each ControlNet unit for each image in a batch": the k-th cond row keeps unit k mod n. With 3 images
    and 2 units the SEG copies (cond rows 3, 4, 5) would get units 1, 0, 1 instead of 0, 1, 0."""
    cn_units = units(nets, (CN.BALANCED, CN.BALANCED))
    prompts, negative = ((1,), (3,), (5,)), (2, 4, 6)
    only, _, _, _ = generate(host, sd15, [False], cn_units, prompts, negative, batch_option=CN.SEPARATE)
    capsys.readouterr()
    seg, calls, p, _ = generate(host, sd15, NO_BLUR, cn_units, prompts, negative, batch_option=CN.SEPARATE)
    assert_stepped_aside(capsys, p, calls, 6, "assigns units by row position")
    assert torch.equal(seg, only)


def test_unit_per_image_would_be_wrong_without_stepping_aside(host, sd15, nets, monkeypatch):
    """The reason for the rule above, measured: let SEG run anyway and the no-blur image is far off."""
    from lib_seg.hosts import neighbours
    monkeypatch.setattr(neighbours, "conflict", lambda *args, **kwargs: None)
    cn_units = units(nets, (CN.BALANCED, CN.BALANCED))
    prompts, negative = ((1,), (3,), (5,)), (2, 4, 6)
    only, _, _, _ = generate(host, sd15, [False], cn_units, prompts, negative, batch_option=CN.SEPARATE)
    seg, calls, _, _ = generate(host, sd15, NO_BLUR, cn_units, prompts, negative, batch_option=CN.SEPARATE)
    assert calls == [9] * 4
    assert relative(seg, only) > MIN_EFFECT


def test_one_control_image_per_row_steps_aside(host, sd15, nets, capsys):
    """Batch/AnimateDiff inputs give one hint per row, [cond rows | uncond rows] (controlnet.py,
    ad_process_control); the ControlNet cannot broadcast 2B hints over 3B rows: without stepping aside the
    generation fails."""
    hints = torch.cat([hint_image(seed=7), hint_image(seed=8)] * 2)
    cn_units = [CN.Unit(nets[0], hints, 1.0, CN.BALANCED)]
    prompts, negative = ((1,), (3,)), (2, 4)
    only, _, _, _ = generate(host, sd15, [False], cn_units, prompts, negative)
    capsys.readouterr()
    seg, calls, p, _ = generate(host, sd15, NO_BLUR, cn_units, prompts, negative)
    assert_stepped_aside(capsys, p, calls, 4, "one control image per batch row")
    assert torch.equal(seg, only)


@pytest.mark.parametrize("feature", ["style align", "reference"])
def test_attention_sharing_features_step_aside(host, sd15, nets, capsys, feature):
    """Style align (one self-attention over all cond rows) and reference preprocessors (self-attention replaced
    with keys from a reference pass) are detected from the extension's own objects; their attention code is
    not restated here, only that SEG steps aside when they are on."""
    cn_units = units(nets[:1])
    cn = CN.ControlNetScript(cn_units, CN.DEFAULT_BATCH, style_align=feature == "style align")
    if feature == "reference":
        original = cn.process

        def process(p, *args):
            original(p, *args)
            cn.latest_network.params[0].control_model_type = type("T", (), {"name": "AttentionInjection"})()
        cn.process = process
    from modules import processing
    host.use_model(sd15)
    c, uc = H.conds([[(1, 1.0)]], [2])
    runner = host.make_runner(other_scripts=[cn])
    p = processing.StableDiffusionProcessingTxt2Img(c, uc, scripts=runner, script_args=host.script_args(NO_BLUR, runner))
    counter = H.CallCounter(sd15.model.diffusion_model)
    try:
        processing.process_images(p)
    finally:
        counter.close()
    assert_stepped_aside(capsys, p, counter.calls, 2, "self-attention")


# ---------------------------------------------------------------- Tiled Diffusion (multidiffusion-upscaler)

def _tiled_run(host, model, seg_args, tile_batch_size, capsys=None):
    from a1111_stand_in.tiled_diffusion_ext import TiledDiffusionScript
    from modules import processing
    host.use_model(model)
    c, uc = H.conds([[(1, 1.0)]], [2])
    tiled = TiledDiffusionScript(tile=16, overlap=8, tile_batch_size=tile_batch_size)
    runner = host.make_runner(other_scripts=[tiled])
    p = processing.StableDiffusionProcessingTxt2Img(c, uc, scripts=runner, script_args=host.script_args(seg_args, runner),
                                                    width=192, height=192)
    has_seg = []
    from lib_seg.hosts import a1111
    real_begin = a1111.SegSession.begin_call

    def begin_call(session, n_rows, latent_hw):
        call = real_begin(session, n_rows, latent_hw)
        has_seg.append(call.has_seg)
        return call

    a1111.SegSession.begin_call = begin_call
    try:
        samples = processing.process_images(p).samples
    finally:
        a1111.SegSession.begin_call = real_begin
    return samples, has_seg, p


@pytest.mark.parametrize("tile_batch_size", [1, 4])
def test_tiled_diffusion_steps_aside(host, sd15, capsys, tile_batch_size):
    """192 px = a 24x24 latent in 2x2 tiles of 16 (overlap 8). Tiled Diffusion calls the UNet per tile batch
    below the CFG denoiser; SEG steps aside and the image is Tiled Diffusion's own."""
    plain, _, _ = _tiled_run(host, sd15, [False], tile_batch_size)
    capsys.readouterr()
    got, has_seg, p = _tiled_run(host, sd15, SEG, tile_batch_size)
    assert not any(has_seg)
    assert not any(key.startswith("SEG") for key in p.extra_generation_params)
    assert "[SEG] skipped for this generation: Tiled Diffusion runs the UNet tile by tile" in capsys.readouterr().out
    assert torch.equal(got, plain)


@pytest.mark.parametrize("tile_batch_size, expected", [(1, [True, False, False, False]), (4, [False])])
def test_tiled_diffusion_would_get_seg_on_one_tile_only(host, sd15, monkeypatch, tile_batch_size, expected):
    """Why SEG steps aside: let it run and the row cursor gives SEG rows to the first tile's call only (tile
    batch 1), or to no call at all (4 tiles in one call of 4x the step's rows), while the infotext says SEG."""
    from lib_seg.hosts import neighbours
    monkeypatch.setattr(neighbours, "conflict", lambda *args, **kwargs: None)
    _, has_seg, p = _tiled_run(host, sd15, SEG, tile_batch_size)
    assert has_seg == expected * 4
    assert p.extra_generation_params["SEG sigma"] == "2"


# ---------------------------------------------------------------- Dynamic Thresholding, Regional Prompter

def _run_with(host, model, seg_args, other, prompts=((1,), (3,)), negative=(2, 4)):
    from modules import processing
    host.use_model(model)
    c, uc = H.conds([[(s, 1.0) for s in image] for image in prompts], list(negative))
    runner = host.make_runner(other_scripts=[other])
    p = processing.StableDiffusionProcessingTxt2Img(c, uc, scripts=runner, script_args=host.script_args(seg_args, runner),
                                                    batch_size=len(prompts))
    counter = H.CallCounter(model.model.diffusion_model)
    try:
        return processing.process_images(p).samples, counter.calls, p
    finally:
        counter.close()


def test_dynamic_thresholding_steps_aside(host, sd15, capsys):
    from a1111_stand_in.other_ext import DynamicThresholdingScript
    alone, _, _ = _run_with(host, sd15, [False], DynamicThresholdingScript())
    capsys.readouterr()
    got, calls, p = _run_with(host, sd15, NO_BLUR, DynamicThresholdingScript())
    assert_stepped_aside(capsys, p, calls, 4, "Dynamic Thresholding")
    assert torch.equal(got, alone)


def test_dynamic_thresholding_would_take_seg_rows_as_cond(host, sd15, monkeypatch):
    """Why: its combine_denoised reshapes x_out[:-B] (cond + SEG rows) to (B, 2) sub-prompts: image 0 gets
    the two cond rows, image 1 the two SEG rows. Even with no blur the image is far off."""
    from a1111_stand_in.other_ext import DynamicThresholdingScript
    from lib_seg.hosts import neighbours
    monkeypatch.setattr(neighbours, "conflict", lambda *args, **kwargs: None)
    alone, _, _ = _run_with(host, sd15, [False], DynamicThresholdingScript())
    got, calls, _ = _run_with(host, sd15, NO_BLUR, DynamicThresholdingScript())
    assert calls == [6] * 4
    assert relative(got, alone) > MIN_EFFECT


@pytest.mark.parametrize("active", [True, False])
def test_regional_prompter_active_steps_aside(host, sd15, capsys, active):
    from a1111_stand_in.other_ext import RegionalPrompterScript
    _, calls, p = _run_with(host, sd15, SEG, RegionalPrompterScript(active), prompts=((1,),), negative=(2,))
    if active:
        assert_stepped_aside(capsys, p, calls, 2, "Regional Prompter")
    else:
        assert calls == [3] * 4 and p.extra_generation_params["SEG sigma"] == "2"


def test_hires_fix(host, in_float64, sd15_64, nets_64):
    """Both passes (the hires one at 1.5x with its own control size): SEG copies get their control in each."""
    sd15, nets = sd15_64, nets_64
    cn_units = units(nets[:1], (CN.CONTROL,))
    hires = dict(enable_hr=True, hr_scale=1.5, hr_second_pass_steps=2, denoising_strength=0.5)
    only, calls_only, _, _ = generate(host, sd15, [False], cn_units, **hires)
    seg, calls, p, _ = generate(host, sd15, NO_BLUR, cn_units, **hires)
    assert calls_only == [2] * 6 and calls == [3] * 6
    assert relative(seg, only) <= TOLERANCE


@pytest.mark.parametrize("start, steps_aside", [(0.5, True), (0.0, False)])
def test_inpaint_only_with_a_partial_seg_interval_steps_aside(host, sd15, nets, capsys, start, steps_aside):
    """inpaint_only / colorfix cache a latent with the first UNet call's row count (hook.py,
    call_vae_using_process(batch_size=x.shape[0])); SEG on part of the steps changes the row count. Detected from
    the unit's preprocessor name; the preprocessors themselves are not restated."""
    cn_units = [CN.Unit(nets[0], hint_image(), 1.0, CN.BALANCED, module="inpaint_only+lama")]
    _, calls, p, _ = generate(host, sd15, [True, 3.0, "2", "all", start, 1.0], cn_units)
    if steps_aside:
        assert_stepped_aside(capsys, p, calls, 2, "inpaint_only")
    else:
        assert calls == [3] * 4
