"""Smoothed Energy Guidance (SEG) — the WebUI entry script (AUTOMATIC1111 1.9/1.10, Forge, reForge).

Thin on purpose: arguments -> SegSettings (lib_seg.params), controls/infotext/X/Y/Z (lib_seg.ui), and
the per-host sampling work behind one adapter (lib_seg.hosts). The method itself lives in lib_seg.
"""
import os
import sys
from dataclasses import replace

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from modules import script_callbacks, scripts, shared  # noqa: E402

from lib_seg import params as seg_params, ui as seg_ui  # noqa: E402
from lib_seg.hosts import get_adapter  # noqa: E402
from lib_seg.hosts.refusal import refusal  # noqa: E402

SETTINGS_ATTR = "seg_settings"
FIRST_PASS_ATTR = "seg_first_pass_ran"  # whether SEG ran in the first sampling pass of this generation


def _disabled_by_flag():
    return bool(getattr(getattr(shared, "cmd_opts", None), "seg_disable", False))


def _input_accordion():
    try:
        from modules.ui_components import InputAccordion
        return InputAccordion
    except ImportError:  # a host version without it: ui.build falls back to an accordion + checkbox
        return None


def _refuse(error, target, *methods):
    """Make the generation fail with `error` at the host's next step. Script hooks run inside the
    host's try/except (an error raised there would only be printed), so the refusal is raised from the
    processing step that follows them: ``p.setup_prompts`` for bad arguments, the sampler's entry points
    for a layer spec the loaded model lacks (known only once the model is). The API answers 422 with the
    message (lib_seg/hosts/refusal.py), the UI shows it; both objects are per generation, nothing outlives it."""
    error = refusal(error)

    def refuse(*args, **kwargs):
        raise error
    for method in methods:
        if target is not None and hasattr(target, method):
            setattr(target, method, refuse)


class Script(scripts.Script):
    def title(self):
        return seg_ui.TITLE

    def show(self, is_img2img):
        return False if _disabled_by_flag() else scripts.AlwaysVisible

    def ui(self, is_img2img):
        return seg_ui.build(self, is_img2img, input_accordion=_input_accordion())

    def before_process(self, p, *args):
        get_adapter().stop(p)  # whatever an aborted generation may have left
        setattr(p, SETTINGS_ATTR, None)
        try:
            settings = seg_ui.settings_for(p, args)
        except seg_params.SegParamError as error:
            _refuse(error, p, "setup_prompts")
            return
        setattr(p, SETTINGS_ATTR, settings)

    def process(self, p, *args):
        # A fresh dict: X/Y/Z shares one extra_generation_params between its cells (shallow copies of p),
        # so SEG keys of one cell must neither leak into the next nor be written into the shared one.
        settings = getattr(p, SETTINGS_ATTR, None)
        keys = {param.infotext for param in seg_params.PARAMS if param.infotext}
        info = {k: v for k, v in p.extra_generation_params.items() if k not in keys}
        if settings is not None and settings.active:
            info.update(seg_params.infotext(settings, hires_fix=bool(getattr(p, "enable_hr", False))))
        p.extra_generation_params = info

    def process_before_every_sampling(self, p, *args, **kwargs):
        settings = getattr(p, SETTINGS_ATTR, None)
        if settings is None or not settings.active:
            return
        # Every host sets p.is_hr_pass before calling this for the hires fix's second pass.
        hires_pass = bool(getattr(p, "is_hr_pass", False))
        this_pass = settings.for_pass(hires_pass)
        if not this_pass.active:
            return
        try:
            started = get_adapter().start(p, this_pass)
        except seg_params.SegParamError as error:
            _refuse(error, getattr(p, "sampler", None), "sample", "sample_img2img")
            started = False
        if not hires_pass:
            setattr(p, FIRST_PASS_ATTR, started)
        if not started:
            _write_declined(p, settings, hires_pass)

    def postprocess(self, p, processed, *args):
        get_adapter().stop(p)


def _write_declined(p, settings, hires_pass):
    """SEG stepped aside in this pass (the adapter printed why). Without a first pass that ran SEG, no SEG keys;
    when only the hires pass declined, the first pass's keys stay and 'SEG hires: off' says the second pass ran
    without SEG, so pasting the infotext reproduces the image."""
    for key in seg_params.infotext(settings):
        p.extra_generation_params.pop(key, None)
    if hires_pass and getattr(p, FIRST_PASS_ATTR, False):
        p.extra_generation_params.update(seg_params.infotext(replace(settings, hires="off")))


def _add_xyz_axes():
    seg_ui.register_xyz_axes(scripts.scripts_data)


if not _disabled_by_flag():
    script_callbacks.on_before_ui(_add_xyz_axes)
