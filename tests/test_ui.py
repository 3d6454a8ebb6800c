"""lib_seg.ui on gradio 3.41 (A1111 1.10's version): controls generated from PARAMS, with and without
the host's InputAccordion; paste fields; the hover-hint file kept in sync with the table."""
import os

import gradio as gr
import pytest

from lib_seg import params as P
from lib_seg import ui

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeScript:
    is_img2img = False

    def elem_id(self, name):
        return f"script_txt2img_seg_{name}"


def input_accordion_class():
    from a1111_stand_in import harness
    harness.activate()
    try:
        from modules.ui_components import InputAccordion
        return InputAccordion
    finally:
        harness.deactivate()


@pytest.mark.parametrize("accordion", ["input_accordion", "fallback"])
def test_controls_follow_the_param_table(accordion):
    script = FakeScript()
    cls = input_accordion_class() if accordion == "input_accordion" else False
    with gr.Blocks():
        controls = ui.build(script, False, input_accordion=cls)
    assert len(controls) == len(P.PARAMS)
    for control, param in zip(controls, P.PARAMS):
        assert control.value == ui.control_value(param, param.default)
        if param.kind == "float":
            assert isinstance(control, gr.Slider)
            assert (control.minimum, control.maximum, control.step) == (param.minimum, param.maximum, param.step)
            assert control.label == param.label
        elif param.kind in ("sigma", "layers"):
            assert isinstance(control, gr.Dropdown) and control.label == param.label
            choices = [c[0] if isinstance(c, tuple) else c for c in control.choices]
            assert choices == list(param.choices)
        elif param.kind == "choice":  # a radio showing words, holding the API values
            assert isinstance(control, gr.Radio) and control.label == param.label
            assert [tuple(c) for c in control.choices] == list(zip(param.choice_labels, param.choices))
    enabled = controls[0]
    assert isinstance(enabled, gr.Checkbox) and enabled.value is False
    if accordion == "input_accordion":
        assert isinstance(enabled, cls) and enabled.label == ui.TITLE
    assert [f[0] for f in script.infotext_fields] == controls
    assert script.paste_field_names == ["SEG scale", "SEG sigma", "SEG layers", "SEG start", "SEG end", "SEG rescale",
                                        "SEG mode", "SEG hires", "SEG hires scale", "SEG hires sigma",
                                        "SEG hires layers", "SEG hires mode"]


def _dependencies(blocks):
    """(trigger id, event, input ids, output ids, fn) of every event listener of a gradio 3.41 Blocks."""
    out = []
    for dep, fn in zip(blocks.dependencies, blocks.fns):
        for target in dep["targets"]:
            trigger = target if isinstance(target, int) else target[0]
            event = dep.get("trigger") if isinstance(target, int) else target[1]
            out.append((trigger, event, dep["inputs"], dep["outputs"], fn.fn))
    return out


def test_hires_sub_group_is_collapsed_and_identity_greys_out_sigma():
    script = FakeScript()
    with gr.Blocks() as blocks:
        controls = dict(zip([p.name for p in P.PARAMS], ui.build(script, False, input_accordion=False)))
    hires_group = [b for b in blocks.blocks.values() if isinstance(b, gr.Accordion) and b.label == ui.HIRES_LABEL]
    assert len(hires_group) == 1 and hires_group[0].open is False  # collapsed, and the override is off by default
    assert controls["hires"].value == "same" and hires_group[0].visible
    with gr.Blocks() as img2img:
        ui.build(script, True, input_accordion=False)
    hidden = [b for b in img2img.blocks.values() if isinstance(b, gr.Accordion) and b.label == ui.HIRES_LABEL]
    assert len(hidden) == 1 and not hidden[0].visible  # no hires fix in img2img
    for mode, sigma in (("mode", "sigma"), ("hr_mode", "hr_sigma")):
        listeners = [d for d in _dependencies(blocks) if d[0] == controls[mode]._id]
        assert len(listeners) == 1
        _, event, inputs, outputs, fn = listeners[0]
        assert event == "change" and inputs == [controls[mode]._id] and outputs == [controls[sigma]._id]
        assert fn("identity")["interactive"] is False and fn("skip")["interactive"] is False and fn("blur")["interactive"] is True \
            and fn("orthogonal")["interactive"] is True


def test_sigma_choices_include_inf_and_paper_sweep():
    sigma = P.PARAM_BY_NAME["sigma"]
    assert ui.control_value(sigma, sigma.default) == "inf"
    for value in ("inf", "1", "4", "16", "64"):
        assert value in sigma.choices


def test_entry_script_ui_builds_inside_blocks():
    from a1111_stand_in import harness
    harness.activate()
    try:
        host = harness.Host()
        script = host.script_class()
        script.is_img2img = True
        with gr.Blocks():
            controls = script.ui(True)
        assert len(controls) == len(P.PARAMS)
        assert all(c.elem_id and c.elem_id.startswith("script_img2img_") for c in controls[1:])
        from modules.ui_components import InputAccordion
        assert isinstance(controls[0], InputAccordion)  # the entry script hands the host's class to ui.build
    finally:
        harness.deactivate()


def test_hints_file_in_sync_with_params():
    with open(os.path.join(ROOT, ui.HINTS_JS), encoding="utf-8") as f:
        assert f.read() == ui.hints_js(), "regenerate javascript/seg_hints.js from lib_seg.ui.hints_js()"
    hints = ui.hints()
    assert all(hints[p.label] == p.hint and p.hint for p in P.PARAMS)


def test_xyz_axis_options_with_any_axis_class():
    class Axis:
        def __init__(self, label, type, apply, format_value=None, confirm=None, cost=0.0, choices=None):
            self.label, self.type, self.apply, self.confirm, self.choices = label, type, apply, confirm, choices
            self.format_value = format_value
    options = {o.label: o for o in ui.make_axis_options(Axis)}

    class P_:
        pass
    p = P_()
    options["SEG layers"].apply(p, "d0-3, m0", [])
    options["SEG start"].apply(p, 0.25, [])
    assert getattr(p, ui.OVERRIDES_ATTR) == {"layers": P.parse_value("layers", "d0-3, m0"), "start": 0.25,
                                              "enabled": True}
    assert options["SEG sigma"].format_value(p, options["SEG sigma"], "∞") == "SEG sigma: inf"
    settings = ui.settings_for(p, [False])
    assert settings.enabled and settings.start == 0.25

    # the mode axis compares SEG and PAG; a hires axis turns the hires pass's own settings on
    assert options["SEG perturbation"].choices() == ["blur", "identity", "skip", "orthogonal"]
    options["SEG perturbation"].apply(p, "identity", [])
    options["SEG hires scale"].apply(p, 1.5, [])
    settings = ui.settings_for(p, [True, 3.0, "2"])
    assert (settings.mode, settings.hires, settings.hr_scale, settings.sigma) == ("identity", "own", 1.5, 2.0)
    q = P_()
    options["SEG hires pass"].apply(q, "off", [])
    options["SEG hires scale"].apply(q, 2.0, [])
    assert ui.settings_for(q, [True]).hires == "off"  # an explicit hires-pass axis value wins
    with pytest.raises(P.SegParamError, match="SEG perturbation"):
        options["SEG perturbation"].confirm(q, ["blur", "pag"])


def test_an_unusable_infotext_is_reported_once_per_paste_not_once_per_control(capsys):
    # The host calls every control's paster with the same parsed infotext (A1111 1.10.1
    # modules/infotext_utils.py connect_paste: `for output, key in paste_fields: ... v = key(params)`);
    # the real-host fuzz saw 13 identical lines per request before.
    pasters = [ui._paster(p.name) for p in P.PARAMS]
    for _ in range(2):  # two requests with the same bad value: one line each
        fields = {"SEG scale": "3", "SEG sigma": "-1"}
        values = [paste(fields) for paste in pasters]
        assert values[[p.name for p in P.PARAMS].index("enabled")] is False  # nothing pasted: SEG stays off
    lines = [line for line in capsys.readouterr().out.splitlines() if "not pasting" in line]
    assert len(lines) == 2 and "sigma" in lines[0]
