"""The shared prefix (issue 21): blocks before the first perturbed layer compute the SEG rows as copies of their
cond rows. Exact (float64: equal to the full rows within REL64) for every preset and a spec starting in the input
blocks, on SD1.5 and SDXL layouts, through the A1111 and Forge/reForge stand-ins and the DiTs; and it really skips
the work (rows seen inside a shared block); a call without the SEG rows' sources runs the full rows."""
import pytest
import torch

from a1111_stand_in import harness as H
from a1111_stand_in.fixtures import host, sd15, clean_host  # noqa: F401 (pytest fixtures)
from lib_seg import layers, prefix
from precision import assert_same_arithmetic
from test_a1111_pass import run

pytestmark = pytest.mark.usefixtures("float64_module", "clean_host")

# Sampler steps of the equality runs: the prefix acts the same way at every UNet call, and two steps still feed a
# second call the first one's result (a wrong copy there would compound); SEG's effect stays above MIN_EFFECT.
STEPS = 2


def test_where_the_prefix_ends(sd15):
    unet = sd15.model.diffusion_model
    ends = {spec: prefix.unet_prefix(unet, layers.select_layers(unet, spec)) for spec in ("mid", "d2, u4", "u0", "all")}
    assert ends["mid"] == [f"input_blocks.{i}" for i in range(12)]
    assert ends["d2, u4"] == [f"input_blocks.{i}" for i in range(4)]
    assert ends["u0"][-4:] == ["middle_block", "output_blocks.0", "output_blocks.1", "output_blocks.2"]
    assert ends["all"] == ["input_blocks.0"]
    from lib_seg import dit
    blocks = dit.dit_blocks([f"double_blocks.{i}" for i in range(3)] + [f"single_blocks.{i}" for i in range(2)])
    assert prefix.dit_prefix(blocks, dit.select_blocks(blocks and [b.name for b in blocks], "s1")) == \
        ["double_blocks.0", "double_blocks.1", "double_blocks.2", "single_blocks.0"]


def _rows_inside(module):
    """Rows each call of `module`'s first child sees (inside the block's forward, after the shared wrapper).
    A global hook: a hook on the module itself is another extension's to SEG, which then shares nothing."""
    seen, child = [], module[0]
    handle = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda m, args: seen.append(args[0].shape[0]) if m is child else None)
    return seen, handle


@pytest.mark.parametrize("model", ["sd15", "sdxl"])
@pytest.mark.parametrize("spec", ["mid", "down", "up", "all", "d2, u4"])
def test_a1111_shared_equals_full_rows(host, sd15, model, spec):
    m = sd15 if model == "sd15" else H.sd_model("sdxl")
    c, uc = (H.conds if model == "sd15" else H.sdxl_conds)([[(1, 1.0)], [(3, 1.0)]], [2, 4])
    args = [{"enabled": True, "sigma": "2", "layers": spec}]
    shared, calls, _ = run(host, m, args, c, uc, batch_size=2, steps=STEPS)
    with prefix.disabled():
        full, _, _ = run(host, m, args, c, uc, batch_size=2, steps=STEPS)
    plain, _, _ = run(host, m, [False], c, uc, batch_size=2, steps=STEPS)
    assert calls == [6] * STEPS
    assert_same_arithmetic(shared, full, effect_from=plain)


def test_a1111_shared_blocks_skip_the_seg_rows_and_chunked_calls_run_full_rows(host, sd15):
    from modules import shared as host_shared
    unet = sd15.model.diffusion_model
    seen, handle = _rows_inside(unet.input_blocks[4])
    after, handle_after = _rows_inside(unet.output_blocks[0])
    try:
        run(host, sd15, [{"enabled": True, "layers": "mid"}])
        assert seen == [2] * 4 and after == [3] * 4         # shared: cond + uncond; after the middle: 3 rows
        seen.clear()
        host_shared.opts.batch_cond_uncond = False          # chunks of B rows: the SEG chunk lacks its cond row
        run(host, sd15, [{"enabled": True, "layers": "mid"}])
        assert seen == [1, 1, 1] * 4
    finally:
        handle.remove()
        handle_after.remove()


@pytest.mark.parametrize("flavor", ["forge", "reforge"])
@pytest.mark.parametrize("spec,mode", [("mid", "blur"), ("d2, u4", "identity"), ("up", "orthogonal")])
def test_forge_shared_equals_full_rows_and_skips_the_work(flavor, spec, mode):
    from lib_seg.params import SegSettings
    from test_forge import generate, world
    sd_model, _ = world(flavor)
    unet = sd_model.forge_objects_original.unet.model.diffusion_model
    settings = SegSettings(enabled=True, sigma=2.0, layers=spec, mode=mode)
    seen, handle = _rows_inside(unet.input_blocks[1])
    try:
        shared, calls, _ = generate(flavor, settings, batch=2, sd_model=sd_model, steps=STEPS)
    finally:
        handle.remove()
    assert calls == [6] * STEPS and seen == [4] * STEPS     # 2B rows in the shared input block
    with prefix.disabled():
        full, _, _ = generate(flavor, settings, batch=2, sd_model=sd_model, steps=STEPS)
    plain, _, _ = generate(flavor, None, batch=2, sd_model=sd_model, steps=STEPS)
    assert_same_arithmetic(shared, full, effect_from=plain)


@pytest.mark.parametrize("family", ["flux", "chroma", "sd3"])
def test_dit_shared_equals_full_rows(family):
    from lib_seg.params import SegSettings
    from test_dit import generate
    from test_dit import flux_world
    settings = SegSettings(enabled=True, sigma=2.0, layers="j2" if family != "chroma" else "j1")
    sd_model, _ = flux_world(family=family)
    model = sd_model.forge_objects_original.unet.model.diffusion_model
    first = model.joint_blocks[0].x_block.attn.qkv if family == "sd3" else model.double_blocks[0].img_attn.qkv
    seen = []
    handle = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda m, args: seen.append(args[0].shape[0]) if m is first else None)
    try:
        shared, calls, _ = generate(settings, batch=2, cfg_scale=4.0, family=family, sd_model=sd_model)
    finally:
        handle.remove()
    assert seen == [4] * 4   # the first block, shared: cond + uncond rows only
    with prefix.disabled():
        full, _, _ = generate(settings, batch=2, cfg_scale=4.0, family=family)
    plain, _, _ = generate(batch=2, cfg_scale=4.0, family=family)
    assert calls == [6] * 4
    assert_same_arithmetic(shared, full, effect_from=plain)


def test_a1111_another_extensions_hook_in_the_prefix_means_full_rows(host, sd15):
    unet = sd15.model.diffusion_model
    seen = []
    foreign = unet.input_blocks[4][0].register_forward_hook(lambda m, args, out: seen.append(out.shape[0]))
    try:
        run(host, sd15, [{"enabled": True, "layers": "mid"}])
    finally:
        foreign.remove()
    assert seen == [3] * 4   # the SEG rows went through the hooked block: no sharing


@pytest.mark.parametrize("flavor", ["forge", "reforge"])
def test_forge_another_extensions_patch_means_full_rows_and_token_merging_does_not(flavor):
    from lib_seg.params import SegSettings
    from test_forge import generate, world
    seen = []

    def recording_patch(q, k, v, extra_options):
        seen.append(q.shape[0])
        return q, k, v
    recording_patch.__name__ = "another_extensions_attn1_patch"
    sd_model, patcher = world(flavor)
    patcher.set_model_attn1_patch(recording_patch)
    sd_model.forge_objects_after_applying_lora.unet = sd_model.forge_objects.unet = patcher
    generate(flavor, SegSettings(enabled=True, layers="mid"), sd_model=sd_model)
    assert set(seen) == {3}   # every attention call held the SEG row: full rows
    assert prefix.foreign_patches({"transformer_options": {"patches": {"attn1_patch": [recording_patch]}}})
    from forge_stand_in.tomesd import TomePatcher
    merged = TomePatcher().patch(world(flavor)[1], 0.5)
    assert prefix.foreign_patches({"transformer_options": {"patches": merged.model_options["transformer_options"]["patches"]}}) is None
