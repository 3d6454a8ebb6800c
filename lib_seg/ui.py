"""Gradio controls, infotext paste fields, X/Y/Z plot axes and hover hints, all generated from
``lib_seg.params.PARAMS``.

Host-neutral: used unchanged by A1111 1.9/1.10 (gradio 3.41) and Forge/reForge (gradio 4). It imports no
host module: scripts/seg.py hands in what it needs (the InputAccordion class, the loaded scripts' data).

One control per parameter, in table order, so the script's argument list (and the API's positional
``args``) is exactly ``PARAMS`` order.
"""
import json
import os
from collections.abc import Mapping

from . import params as P

TITLE = "Smoothed Energy Guidance (SEG)"
HIRES_LABEL = "SEG hires fix pass"
# The WebUI API addresses always-on scripts by their lowercased title.
API_NAME = TITLE.lower()
# X/Y/Z axis values land on the processing object under this attribute (see xyz_overrides()).
OVERRIDES_ATTR = "seg_xyz_overrides"


# ---------------------------------------------------------------- controls

def control_value(param, value):
    """A parameter value as its control holds it (sigma and layers are text in dropdowns)."""
    if param.kind == "sigma":
        return P.format_sigma(value)
    return value


def _elem_id(script, name):
    try:
        return script.elem_id(name) if script is not None else None
    except Exception:  # a host without elem_id()
        return None


def build(script=None, is_img2img=False, input_accordion=None):
    """Create the controls inside the current gr.Blocks context. Returns the list of controls in
    PARAMS order and sets ``script.infotext_fields`` / ``script.paste_field_names``.

    input_accordion: the host's InputAccordion class (A1111 1.7+, Forge), whose header checkbox holds the
    enable state; without one, a checkbox inside a closed gr.Accordion."""
    import gradio as gr

    accordion_cls = input_accordion or None
    controls = {}
    enabled = P.PARAM_BY_NAME["enabled"]

    def rest():
        with gr.Row():
            controls["scale"] = _make(gr, script, P.PARAM_BY_NAME["scale"])
            controls["sigma"] = _make(gr, script, P.PARAM_BY_NAME["sigma"])
        with gr.Row():
            controls["layers"] = _make(gr, script, P.PARAM_BY_NAME["layers"])
        with gr.Row():
            controls["start"] = _make(gr, script, P.PARAM_BY_NAME["start"])
            controls["end"] = _make(gr, script, P.PARAM_BY_NAME["end"])
        with gr.Row():
            controls["rescale"] = _make(gr, script, P.PARAM_BY_NAME["rescale"])
        with gr.Row():
            controls["mode"] = _make(gr, script, P.PARAM_BY_NAME["mode"])
        # img2img has no hires fix: the group stays (the argument list is the same in both tabs), hidden.
        with gr.Accordion(HIRES_LABEL, open=False, visible=not is_img2img, elem_id=_elem_id(script, "hires_accordion")):
            controls["hires"] = _make(gr, script, P.PARAM_BY_NAME["hires"])
            with gr.Row():
                controls["hr_scale"] = _make(gr, script, P.PARAM_BY_NAME["hr_scale"])
                controls["hr_sigma"] = _make(gr, script, P.PARAM_BY_NAME["hr_sigma"])
            with gr.Row():
                controls["hr_layers"] = _make(gr, script, P.PARAM_BY_NAME["hr_layers"])
                controls["hr_mode"] = _make(gr, script, P.PARAM_BY_NAME["hr_mode"])
        # σ means nothing to identity attention: grey it out while that mode is chosen (also after a paste).
        for mode, sigma in (("mode", "sigma"), ("hr_mode", "hr_sigma")):
            controls[mode].change(fn=sigma_update, inputs=[controls[mode]], outputs=[controls[sigma]],
                                  show_progress="hidden")

    if accordion_cls is not None:
        with accordion_cls(enabled.default, label=TITLE, elem_id=_elem_id(script, "accordion")) as accordion:
            controls["enabled"] = accordion
            rest()
    else:
        with gr.Accordion(TITLE, open=False, elem_id=_elem_id(script, "accordion")):
            controls["enabled"] = gr.Checkbox(value=enabled.default, label=enabled.label,
                                              elem_id=_elem_id(script, "enabled"))
            rest()

    ordered = [controls[p.name] for p in P.PARAMS]
    if script is not None:
        script.infotext_fields = infotext_fields(controls)
        script.paste_field_names = paste_field_names()
    return ordered


def _make(gr, script, param):
    elem_id = _elem_id(script, param.name)
    if param.kind == "float":
        return gr.Slider(minimum=param.minimum, maximum=param.maximum, step=param.step, value=param.default,
                         label=param.label, elem_id=elem_id)
    if param.kind in ("sigma", "layers"):
        return gr.Dropdown(choices=list(param.choices), value=control_value(param, param.default),
                           allow_custom_value=True, label=param.label, elem_id=elem_id)
    if param.kind == "choice":
        return gr.Radio(choices=list(zip(param.choice_labels, param.choices)), value=param.default,
                        label=param.label, elem_id=elem_id)
    raise ValueError(f"no control for parameter kind {param.kind!r}")


def sigma_update(mode):
    """The update of a sigma control when its mode control changes: editable only for blurred queries."""
    import gradio as gr
    return gr.update(interactive=mode in P.BLUR_MODES)  # sigma is the blur's alone


# ---------------------------------------------------------------- infotext

# The parsed infotext last reported as unusable: the host pastes one infotext through every control's paster,
# and one message per paste is enough (held, not its id, so a new infotext is never mistaken for it).
_last_unusable = [None]


def _pasted(fields):
    """Parsed infotext -> {name: value} of every SEG parameter (empty when the infotext has no SEG key,
    or an unusable value, which is reported once per infotext instead of pasted)."""
    try:
        return P.settings_from_infotext(fields)
    except P.SegParamError as error:
        if _last_unusable[0] is not fields:
            _last_unusable[0] = fields
            print(f"[SEG] not pasting SEG parameters: {error}")
        return {}


def paste_value(name, fields):
    """The value the control of parameter `name` gets when `fields` (a parsed infotext) is pasted:
    every SEG control is restored when any SEG key is present (keys left out mean the default); without
    SEG keys, SEG is switched off and the other controls are left alone (None = leave unchanged)."""
    values = _pasted(fields)
    if not values:
        return False if name == "enabled" else None
    return control_value(P.PARAM_BY_NAME[name], values[name])


def infotext_fields(controls):
    """(component, key-or-function) pairs for the host's paste machinery, one per control."""
    return [(controls[p.name], _paster(p.name)) for p in P.PARAMS]


def _paster(name):
    def paste(fields):
        return paste_value(name, fields)
    paste.__name__ = f"paste_seg_{name}"
    return paste


def paste_field_names():
    """Infotext keys carried by the WebUI's "Send to txt2img/img2img" buttons."""
    return [p.infotext for p in P.PARAMS if p.infotext]


# ---------------------------------------------------------------- X/Y/Z plot

# One axis per parameter, labelled like its control; "SEG enabled" last, as a plot rarely sweeps it.
AXES = tuple((p.label, p.name) for p in sorted(P.PARAMS, key=lambda p: p.name == "enabled"))


def _axis_apply(name):
    def apply(p, value, values):
        # A new dict each time: X/Y/Z applies axes to shallow copies of one processing object.
        overrides = dict(getattr(p, OVERRIDES_ATTR, None) or {})
        overrides[name] = P.parse_value(name, value)
        if name != "enabled":
            overrides.setdefault("enabled", True)  # choosing a SEG axis turns SEG on for the plot
        if name in P.HIRES_FIELDS:
            overrides.setdefault("hires", "own")  # and a hires axis the hires pass's own settings
        setattr(p, OVERRIDES_ATTR, overrides)
    return apply


def _axis_confirm(name):
    def confirm(p, values):
        for value in values:  # raises SegParamError naming the field before the plot starts
            P.parse_value(name, value)
    return confirm


def _axis_format(name):
    param = P.PARAM_BY_NAME[name]

    def format_value(p, opt, value):
        shown = P.format_sigma(P.parse_sigma(value)) if param.kind == "sigma" else value
        return f"{opt.label}: {shown}"
    return format_value


def make_axis_options(axis_option):
    """AxisOption objects for the given AxisOption class (from the loaded xyz_grid script)."""
    options = []
    for label, name in AXES:
        param = P.PARAM_BY_NAME[name]
        if param.kind == "float":
            options.append(axis_option(label, float, _axis_apply(name), confirm=_axis_confirm(name)))
        elif param.kind == "choice":
            options.append(axis_option(label, str, _axis_apply(name), confirm=_axis_confirm(name),
                                       choices=lambda c=list(param.choices): c))
        elif param.kind == "bool":
            options.append(axis_option(label, str, _axis_apply(name), choices=lambda: ["True", "False"],
                                       confirm=_axis_confirm(name)))
        else:
            choices = list(param.choices)
            options.append(axis_option(label, str, _axis_apply(name), format_value=_axis_format(name),
                                       confirm=_axis_confirm(name), choices=lambda c=choices: c))
    return options


def find_xyz_module(scripts_data):
    """The loaded X/Y/Z plot script module among the host's ``modules.scripts.scripts_data``."""
    for data in scripts_data:
        if os.path.basename(getattr(data, "path", "") or "") == "xyz_grid.py":
            return data.module
    return None


def register_xyz_axes(scripts_data):
    """Add the SEG axes to the X/Y/Z plot (once), given the host's ``modules.scripts.scripts_data``.
    Returns the number of axes added."""
    module = find_xyz_module(scripts_data)
    if module is None or not hasattr(module, "axis_options") or not hasattr(module, "AxisOption"):
        return 0
    existing = {getattr(option, "label", None) for option in module.axis_options}
    new = [o for o in make_axis_options(module.AxisOption) if o.label not in existing]
    module.axis_options.extend(new)
    return len(new)


def xyz_overrides(p):
    """Values set on `p` by SEG X/Y/Z axes ({} if none)."""
    return dict(getattr(p, OVERRIDES_ATTR, None) or {})


def settings_for(p, args):
    """The SegSettings of one generation: the script arguments, overridden by X/Y/Z axis values.
    Raises SegParamError.

    The API copies ``alwayson_scripts`` args positionally over the UI defaults, so a named object
    arrives as the first argument followed by default values: the object alone is the request."""
    args = list(args) if args is not None else []
    if args and isinstance(args[0], Mapping):
        args = args[:1]
    settings = P.settings_from_args(args)
    overrides = xyz_overrides(p)
    if not overrides:
        return settings
    return P.settings_from_args({**settings.as_dict(), **overrides})


# ---------------------------------------------------------------- hover hints

HINTS_JS = "javascript/seg_hints.js"


def hints():
    """Control label -> hover text (the WebUI's ``titles`` table is keyed by label)."""
    out = {TITLE: "Smoothed Energy Guidance: guide away from a prediction made with blurred self-attention "
                  "queries (Hong, NeurIPS 2024)."}
    out[HIRES_LABEL] = ("A separate SEG setting for the hires fix's second pass (off by default: that pass uses "
                        "the settings above).")
    for param in P.PARAMS:
        out[param.label] = param.hint
    return out


def hints_js():
    """The content of javascript/seg_hints.js (a test keeps the file in sync)."""
    body = json.dumps(hints(), indent=4, ensure_ascii=False)
    return ("// Generated from lib_seg/params.py by lib_seg.ui.hints_js(); tests/test_ui.py keeps it in sync.\n"
            "// Hover hints for the SEG controls through the WebUI's `titles` table (javascript/hints.js).\n"
            "(function() {\n"
            f"    var segHints = {_indent(body)};\n"
            "    if (typeof titles === \"undefined\") {\n"
            "        window.titles = {};\n"
            "    }\n"
            "    Object.assign(titles, segHints);\n"
            "})();\n")


def _indent(text):
    return text.replace("\n", "\n    ")
