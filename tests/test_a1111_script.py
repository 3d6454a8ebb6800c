"""The entry script on the A1111 1.10.1 stand-in: API args (positional, named, invalid), infotext
write and paste, X/Y/Z axes, the --seg-disable flag."""
import types

import pytest
import torch

from a1111_stand_in import harness as H
from a1111_stand_in.fixtures import host, sd15  # noqa: F401 (pytest fixtures)
from test_a1111_pass import run


def generate(host, model, script_args):
    from modules import processing
    host.use_model(model)
    c, uc = H.conds([[(1, 1.0)]], [2])
    p = processing.StableDiffusionProcessingTxt2Img(c, uc, scripts=host.runner, script_args=script_args)
    counter = H.CallCounter(model.model.diffusion_model)
    try:
        return processing.process_images(p), counter.calls, p
    finally:
        counter.close()


def test_title_and_api_name_do_not_collide(host):
    assert host.ui.TITLE == "Smoothed Energy Guidance (SEG)"
    assert host.ui.API_NAME == "smoothed energy guidance (seg)" != "smoothed energy guidance"
    other = types.SimpleNamespace()  # another extension's script with the plain title, listed first

    class Plain(host.scripts.Script):
        def title(self):
            return "Smoothed Energy Guidance"

        def show(self, is_img2img):
            return host.scripts.AlwaysVisible
    runner = host.make_runner(other_scripts=[Plain()])
    assert runner.title_map[host.ui.API_NAME].title() == host.ui.TITLE
    assert other is not None


def test_api_positional_and_named_args_give_the_same_image(host, sd15):
    positional = host.api_args({"Smoothed Energy Guidance (SEG)": {"args": [True, 3, "inf", "mid"]}})
    named = host.api_args({"smoothed energy guidance (seg)": {"args": [
        {"enabled": True, "scale": 3, "sigma": "inf", "layers": "mid"}]}})
    a, calls_a, p = generate(host, sd15, positional)
    b, calls_b, _ = generate(host, sd15, named)
    assert calls_a == calls_b == [3] * 4
    assert torch.equal(a.samples, b.samples)
    assert p.extra_generation_params == {"SEG scale": "3", "SEG sigma": "inf", "SEG layers": "mid"}


@pytest.mark.parametrize("args,words", [
    ([True, 30.0], ["SEG scale", "scale", "0 to 20"]),
    ([{"enabled": True, "sigma": -1}], ["SEG sigma", "sigma", "> 0"]),
    ([{"enabled": True, "layers": "x9"}], ["SEG layers", "layers"]),
    ([{"enabled": True, "start": 0.8, "end": 0.2}], ["start", "end"]),
    ([{"enabld": True}], ["enabld", "accepted names"]),
])
def test_api_invalid_values_are_refused_and_change_nothing(host, sd15, args, words, capsys):
    from lib_seg import hooks, params
    from modules import api
    census = H.hook_census(sd15), H.callback_census()
    clean, _, _ = generate(host, sd15, host.api_args({host.ui.API_NAME: {"args": [True]}}))
    bad = host.api_args({host.ui.API_NAME: {"args": args}})
    capsys.readouterr()
    with pytest.raises(params.SegParamError) as refused:
        generate(host, sd15, bad)
    for word in words:
        assert word in str(refused.value)
    # the API answers 422 (invalid input) with the message and prints no traceback: one console line in all
    status, body = api.handle_exception(refused.value)
    assert status == 422 and body["detail"] == str(refused.value) == body["errors"]
    assert capsys.readouterr().out == f"[SEG] refused: {refused.value}\n"
    assert (H.hook_census(sd15), H.callback_census()) == census and not hooks._LIVE
    again, _, _ = generate(host, sd15, host.api_args({host.ui.API_NAME: {"args": [True]}}))
    assert torch.equal(clean.samples, again.samples)   # the server stays usable, nothing leaked


def test_empty_or_short_args_are_disabled_or_defaults(host, sd15):
    from modules import processing
    host.use_model(sd15)
    c, uc = H.conds([[(1, 1.0)]], [2])
    runner = host.runner
    script = runner.title_map[host.ui.API_NAME]
    p = processing.StableDiffusionProcessingTxt2Img(c, uc, scripts=runner, script_args=())
    assert script.args_to > len(p.script_args)  # Forge's early requests: no args at all
    processing.process_images(p)
    assert not p.extra_generation_params


def test_infotext_written_and_pasted_back(host, sd15):
    from lib_seg import params
    args = [True, 4.5, "16", "d0-3, m0", 0.1, 0.9, 0.5]
    _, _, p = generate(host, sd15, host.script_args(args))
    info = p.extra_generation_params
    assert info == {"SEG scale": "4.5", "SEG sigma": "16", "SEG layers": "d0-3, m0", "SEG start": "0.1",
                    "SEG end": "0.9", "SEG rescale": "0.5"}
    # as the WebUI writes it (values with commas JSON-quoted) and parses it back
    import json
    text = ", ".join(f"{k}: {json.dumps(v) if ',' in v else v}" for k, v in info.items())
    fields = dict(part.split(": ", 1) for part in _split(text))
    pasted = [host.ui.paste_value(param.name, fields) for param in params.PARAMS]
    defaults = [host.ui.control_value(param, param.default) for param in params.PARAMS[len(args):]]
    assert pasted == args[:2] + ["16"] + args[3:] + defaults
    assert params.settings_from_args(pasted) == params.settings_from_args(args)


@pytest.mark.parametrize("hires", ["same", "own", "off"])
def test_mode_and_hires_override_infotext_written_and_pasted_back(host, sd15, hires):
    """Positional args in UI order (the original seven, then mode and the hires override); keys of the
    override only when it is on and the generation has a hires pass; paste restores every control."""
    from lib_seg import params
    args = [True, 2.5, "4", "mid", 0, 1, 0, "identity", hires, 1.5, "inf", "d4-5", "blur"]
    _, _, p = run(host, sd15, args, enable_hr=True, hr_scale=1.5, steps=2)
    info = p.extra_generation_params
    expected = {"SEG scale": "2.5", "SEG sigma": "4", "SEG layers": "mid", "SEG mode": "identity"}
    if hires == "off":
        expected["SEG hires"] = "off"
    if hires == "own":
        expected.update({"SEG hires": "own", "SEG hires scale": "1.5", "SEG hires sigma": "inf",
                         "SEG hires layers": "d4-5"})
    assert info == expected
    pasted = [host.ui.paste_value(param.name, info) for param in params.PARAMS]
    restored = params.settings_from_args(pasted)
    assert (restored.mode, restored.hires) == ("identity", hires)
    if hires == "own":
        assert restored == params.settings_from_args(args)
    _, _, p = run(host, sd15, args, steps=2)  # no hires pass: nothing about it in the infotext
    assert p.extra_generation_params == {k: v for k, v in expected.items() if not k.startswith("SEG hires")}


def _split(text):
    out, depth, current = [], False, ""
    for ch in text:
        if ch == '"':
            depth = not depth
        if ch == "," and not depth:
            out.append(current.strip())
            current = ""
        else:
            current += ch
    return out + [current.strip()]


def test_paste_without_seg_keys_turns_seg_off_and_leaves_the_rest(host):
    assert host.ui.paste_value("enabled", {"Steps": "20"}) is False
    assert host.ui.paste_value("scale", {"Steps": "20"}) is None
    fields = {"SEG scale": "2", "SEG sigma": "inf", "SEG layers": "mid"}
    assert host.ui.paste_value("start", fields) == 0.0 and host.ui.paste_value("sigma", fields) == "inf"


class AxisOption:
    """scripts/xyz_grid.py's AxisOption (1.10.1): label, type, apply, format_value, confirm, cost, choices."""

    def __init__(self, label, type, apply, format_value=None, confirm=None, cost=0.0, choices=None):
        self.label, self.type, self.apply = label, type, apply
        self.format_value, self.confirm, self.cost, self.choices = format_value, confirm, cost, choices


def test_xyz_axes_registered_apply_and_enable(host, sd15):
    from modules import script_callbacks, scripts
    xyz = types.ModuleType("xyz_grid.py")
    xyz.AxisOption = AxisOption
    xyz.axis_options = [AxisOption("Nothing", str, lambda p, x, xs: None)]
    scripts.scripts_data.append(scripts.ScriptClassData(object, "/webui/scripts/xyz_grid.py", "/webui", xyz))
    try:
        script_callbacks.before_ui_callback()
        script_callbacks.before_ui_callback()  # idempotent
    finally:
        scripts.scripts_data.pop()
    labels = [o.label for o in xyz.axis_options]
    assert labels == ["Nothing", "SEG scale", "SEG sigma", "SEG layers", "SEG start", "SEG end", "SEG rescale",
                      "SEG perturbation", "SEG hires pass", "SEG hires scale", "SEG hires sigma", "SEG hires layers",
                      "SEG hires perturbation", "SEG enabled"]
    axis = {o.label: o for o in xyz.axis_options}
    axis["SEG sigma"].confirm(None, ["inf", "4", "∞"])
    with pytest.raises(ValueError, match="SEG sigma"):
        axis["SEG sigma"].confirm(None, ["inf", "-2"])
    assert "inf" in axis["SEG sigma"].choices()

    from modules import processing
    host.use_model(sd15)
    c, uc = H.conds([[(1, 1.0)]], [2])
    base = processing.StableDiffusionProcessingTxt2Img(c, uc, scripts=host.runner, script_args=host.script_args([False]))
    import copy
    cell = copy.copy(base)
    axis["SEG sigma"].apply(cell, "inf", ["inf", "4"])
    axis["SEG scale"].apply(cell, 5.0, [5.0])
    other = copy.copy(base)
    axis["SEG sigma"].apply(other, "4", ["inf", "4"])
    assert not getattr(base, host.ui.OVERRIDES_ATTR, None)   # each cell has its own overrides
    counter = H.CallCounter(sd15.model.diffusion_model)
    try:
        processing.process_images(cell)
    finally:
        counter.close()
    assert counter.calls == [3] * 4     # enabled by the axis although the accordion is off
    assert cell.extra_generation_params["SEG sigma"] == "inf"
    assert cell.extra_generation_params["SEG scale"] == "5"
    off = copy.copy(base)
    axis["SEG enabled"].apply(off, "False", ["True", "False"])
    processing.process_images(off)
    assert "SEG scale" not in off.extra_generation_params


def test_disable_flag_hides_the_script(host):
    host.shared.cmd_opts.seg_disable = True
    try:
        script = host.script_class()
        assert script.show(False) is False
    finally:
        host.shared.cmd_opts.seg_disable = False
    assert host.script_class().show(False) is host.scripts.AlwaysVisible


def test_preload_and_install(capsys):
    import argparse
    import importlib.util
    import os
    root = H.ROOT
    spec = importlib.util.spec_from_file_location("seg_preload", os.path.join(root, "preload.py"))
    preload = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(preload)
    parser = argparse.ArgumentParser()
    preload.preload(parser)
    assert parser.parse_args(["--seg-disable"]).seg_disable is True
    spec = importlib.util.spec_from_file_location("seg_install", os.path.join(root, "install.py"))
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    assert "nothing to install" in capsys.readouterr().out
    assert run  # shared helpers come from test_a1111_pass
