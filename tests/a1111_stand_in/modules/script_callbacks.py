"""Follows modules/script_callbacks.py of A1111 1.10.1 (the parts the extension uses)."""
import dataclasses
import inspect

from modules import errors


class CFGDenoiserParams:
    def __init__(self, x, image_cond, sigma, sampling_step, total_sampling_steps, text_cond, text_uncond, denoiser=None):
        self.x = x
        self.image_cond = image_cond
        self.sigma = sigma
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps
        self.text_cond = text_cond
        self.text_uncond = text_uncond
        self.denoiser = denoiser


class CFGDenoisedParams:
    def __init__(self, x, sampling_step, total_sampling_steps, inner_model):
        self.x = x
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps
        self.inner_model = inner_model


class AfterCFGCallbackParams:
    def __init__(self, x, sampling_step, total_sampling_steps):
        self.x = x
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps


@dataclasses.dataclass
class ScriptCallback:
    script: str
    callback: object
    name: str = None


def add_callback(callbacks, fun, *, name=None, category="unknown"):
    stack = [x for x in inspect.stack() if x.filename != __file__]
    filename = stack[0].filename if stack else "unknown file"
    base = f"ext/{filename.rsplit('/', 1)[-1]}/{category}" + (f"/{name}" if name else "")
    unique, index = base, 0
    while any(c.name == unique for c in callbacks):
        index += 1
        unique = f"{base}-{index}"
    callbacks.append(ScriptCallback(filename, fun, unique))


callback_map = {f"callbacks_{k}": [] for k in (
    "app_started", "model_loaded", "ui_tabs", "ui_settings", "cfg_denoiser", "cfg_denoised", "cfg_after_cfg",
    "before_ui", "script_unloaded", "infotext_pasted")}

# 1.10: sorted lists are cached per category and reused while the list length is unchanged.
ordered_callbacks_map = {}


def ordered_callbacks(category):
    unordered = callback_map.get("callbacks_" + category, [])
    cached = ordered_callbacks_map.get(category)
    if cached is not None and len(cached) == len(unordered):
        return cached
    ordered_callbacks_map[category] = list(unordered)  # no order instructions in the stand-in
    return ordered_callbacks_map[category]


def clear_callbacks():
    for callbacks in callback_map.values():
        callbacks.clear()
    ordered_callbacks_map.clear()


def _run(category, *args):
    for c in ordered_callbacks(category):
        try:
            c.callback(*args)
        except Exception:
            errors.report(f"Error executing callback {category} for {c.script}", exc_info=True)


def cfg_denoiser_callback(params):
    _run("cfg_denoiser", params)


def cfg_denoised_callback(params):
    _run("cfg_denoised", params)


def cfg_after_cfg_callback(params):
    _run("cfg_after_cfg", params)


def before_ui_callback():
    for c in reversed(ordered_callbacks("before_ui")):
        try:
            c.callback()
        except Exception:
            errors.report("Error executing callback before_ui", exc_info=True)


def remove_callbacks_for_function(callback_func):
    # The form without clearing the ordered cache (the harsher of the variants seen in 1.9/1.10 trees).
    for callbacks in callback_map.values():
        for c in [c for c in callbacks if c.callback == callback_func]:
            callbacks.remove(c)


def on_cfg_denoiser(callback, *, name=None):
    add_callback(callback_map["callbacks_cfg_denoiser"], callback, name=name, category="cfg_denoiser")


def on_cfg_denoised(callback, *, name=None):
    add_callback(callback_map["callbacks_cfg_denoised"], callback, name=name, category="cfg_denoised")


def on_cfg_after_cfg(callback, *, name=None):
    add_callback(callback_map["callbacks_cfg_after_cfg"], callback, name=name, category="cfg_after_cfg")


def on_before_ui(callback, *, name=None):
    add_callback(callback_map["callbacks_before_ui"], callback, name=name, category="before_ui")


def on_script_unloaded(callback, *, name=None):
    add_callback(callback_map["callbacks_script_unloaded"], callback, name=name, category="script_unloaded")
