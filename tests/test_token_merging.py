"""SEG beside features that reshape a self-attention layer's tokens (issue 23, items 1 and 5): token merging
(tomesd, as A1111 applies it with the tomesd package; Forge's / reForge's TomePatcher) and A1111's built-in
Hypertile. SEG never fails the generation: it acts on the layers whose grid is intact and leaves the others
alone with one console line, or steps aside when no selected layer is intact; the hires pass that steps aside
keeps the first pass's infotext and says 'SEG hires: off'."""
import pytest
import torch

from a1111_stand_in import harness as H, hypertile_ext
from a1111_stand_in.fixtures import host, sd15, clean_host  # noqa: F401 (pytest fixtures)
from test_a1111_pass import run

pytestmark = pytest.mark.usefixtures("clean_host")

TOME = {"token_merging_ratio": 0.5}


def tome(ratio=0.5, hr=0.0):
    from modules import shared
    shared.opts.token_merging_ratio, shared.opts.token_merging_ratio_hr = ratio, hr


def seg_keys(p):
    return {k: v for k, v in p.extra_generation_params.items() if k.startswith("SEG")}


# ---------------------------------------------------------------- A1111 + tomesd

def test_a1111_token_merging_merges_the_top_layers(host, sd15):
    """The stand-in really merges: tomesd changes the image, and only while the generation runs."""
    plain, _, _ = run(host, sd15, [False])
    tome()
    merged, _, _ = run(host, sd15, [False])
    assert not torch.equal(plain, merged)
    assert getattr(sd15, "applied_token_merged_ratio", 0) == 0


@pytest.mark.parametrize("mode", ["blur", "identity"])
def test_a1111_token_merging_seg_acts_on_intact_layers(host, sd15, capsys, mode):
    tome()
    merged, _, _ = run(host, sd15, [False])
    got, calls, p = run(host, sd15, [{"enabled": True, "sigma": "4", "layers": "all", "mode": mode}])
    assert calls == [3] * 4 and not torch.equal(got, merged)
    assert "token merging merges the tokens of d0, d1, u6, u7, u8: SEG leaves those layers alone in this pass" \
        in capsys.readouterr().out
    assert seg_keys(p)["SEG layers"] == "all"
    again, _, _ = run(host, sd15, [{"enabled": True, "sigma": "4", "layers": "all", "mode": mode}])
    assert torch.equal(got, again)


def test_a1111_token_merging_every_selected_layer_merged_steps_aside(host, sd15, capsys):
    from lib_seg import hooks
    census = H.hook_census(sd15), H.callback_census()
    tome()
    merged, _, _ = run(host, sd15, [False])
    got, calls, p = run(host, sd15, [True, 3.0, "4", "d0-1, u8"])
    assert torch.equal(got, merged) and calls == [2] * 4 and not seg_keys(p)
    assert "skipped in this pass: token merging merges the tokens of d0, d1, u8, which is every layer of " \
           "'d0-1, u8'" in capsys.readouterr().out
    assert (H.hook_census(sd15), H.callback_census()) == census and not hooks._LIVE


def test_a1111_hires_pass_that_steps_aside_keeps_the_first_pass_infotext(host, sd15, capsys):
    """Token merging in the hires pass only (its own ratio): SEG on d0-1 runs in the first pass, steps aside in
    the second; the infotext keeps the first pass's keys, adds 'SEG hires: off' and reproduces the image."""
    tome(ratio=0.0, hr=0.5)
    hires = dict(enable_hr=True, hr_scale=1.5, steps=3)
    args = [True, 3.0, "4", "d0-1"]
    got, calls, p = run(host, sd15, args, **hires)
    assert calls == [3] * 3 + [2] * 2
    assert seg_keys(p) == {"SEG scale": "3", "SEG sigma": "4", "SEG layers": "d0-1", "SEG hires": "off"}
    assert "skipped in the hires pass" in capsys.readouterr().out
    pasted = [host.ui.paste_value(param.name, p.extra_generation_params) for param in host.params.PARAMS]
    again, calls_again, _ = run(host, sd15, pasted, **hires)
    assert torch.equal(got, again) and calls_again == calls
    tome(ratio=0.0, hr=0.0)
    untouched, _, _ = run(host, sd15, [False], **hires)
    assert not torch.equal(got, untouched)


# ---------------------------------------------------------------- A1111 + Hypertile

@pytest.fixture
def hypertile(sd15):
    unet = sd15.model.diffusion_model
    yield lambda enable: hypertile_ext.hook_model(unet, 128, 128, enable)
    hypertile_ext.unhook_model(unet)


def test_a1111_hypertile_enabled_seg_steps_aside_and_hypertile_still_runs(host, sd15, hypertile, capsys):
    plain, _, _ = run(host, sd15, [False])
    hypertile(True)
    tiled, _, _ = run(host, sd15, [False])
    got, calls, p = run(host, sd15, [True, 3.0, "4", "mid, d4"])
    assert not torch.equal(plain, tiled)
    assert torch.equal(got, tiled) and calls == [2] * 4 and not seg_keys(p)
    assert "skipped in this pass: Hypertile tiles d4, m0" in capsys.readouterr().out


def test_a1111_hypertile_hooked_but_off_seg_runs_through_its_wrapper(host, sd15, hypertile):
    """Hypertile's wrappers stay on the layers once made; off for this pass they pass through, and SEG's patch
    calls them for every call it leaves alone: the same image as without them."""
    args = [True, 3.0, "4", "all"]
    expected, _, _ = run(host, sd15, args)
    hypertile(True)
    hypertile(False)
    got, calls, _ = run(host, sd15, args)
    assert torch.equal(got, expected) and calls == [3] * 4


# ---------------------------------------------------------------- Forge / reForge + TomePatcher

FLAVORS = ("forge", "reforge")


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("mode", ["blur", "identity"])
def test_forge_token_merging_seg_acts_on_intact_layers(flavor, mode, capsys):
    from test_forge import generate, on
    merged, _, _ = generate(flavor, token_merging_ratio=0.5)
    got, calls, p = generate(flavor, on(sigma=4.0, layers="all", mode=mode), token_merging_ratio=0.5)
    assert calls == [3] * 4 and not torch.equal(got, merged)
    assert "token merging merges the tokens of d0, d1, u6, u7, u8: SEG leaves those layers alone" \
        in capsys.readouterr().out


@pytest.mark.parametrize("flavor", FLAVORS)
def test_forge_token_merging_every_selected_layer_merged_steps_aside(flavor, capsys):
    from test_forge import generate, on, world, assert_clean
    sd_model, patcher = world(flavor)
    merged, _, _ = generate(flavor, token_merging_ratio=0.5)
    got, calls, p = generate(flavor, on(sigma=4.0, layers="d0"), sd_model=sd_model, token_merging_ratio=0.5)
    assert torch.equal(got, merged) and calls == [2] * 4
    assert "skipped in this pass: token merging merges the tokens of d0" in capsys.readouterr().out
