"""seg-probe: records every UNet call of a Forge / reForge test install (a harness tool, not part of the
extension). It wraps the host's model ``apply_model`` (the function every batched UNet call of
``calc_cond_uncond_batch`` ends in, with or without a model-function wrapper) and only reads its
arguments, so images are unchanged. "x0" is a short hash of the first row's input latent: equal for
bit-identical inputs (e.g. the first pass of two hires-fix generations).

    GET  /seg-probe/calls   -> {"calls": [{"rows", "seg_rows", "cond_or_uncond", "sigma", "latent", "x0"}...]}
    POST /seg-probe/clear
"""
import hashlib
import threading

try:  # Forge (2024+ backend)
    from backend.modules.k_model import KModel as _Model
except ImportError:  # reForge
    from ldm_patched.modules.model_base import BaseModel as _Model

from modules import script_callbacks

_lock = threading.Lock()
_calls = []
_original = _Model.apply_model


def _record(x, t, transformer_options):
    options = transformer_options or {}
    seg = options.get("seg_rows")
    entry = {
        "rows": int(x.shape[0]),
        "seg_rows": [seg.start, seg.stop] if isinstance(seg, slice) else None,
        "cond_or_uncond": [int(v) for v in options.get("cond_or_uncond", [])],
        "sigma": float(t.reshape(-1)[0]) if hasattr(t, "reshape") else float(t),
        "latent": [int(v) for v in x.shape[-2:]],
        "x0": hashlib.sha1(x[0].detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:16],
    }
    with _lock:
        _calls.append(entry)


def apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
    try:
        _record(x, t, transformer_options)
    except Exception as error:  # a probe must never break a generation
        print(f"[seg-probe] could not record a call: {error!r}")
    return _original(self, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)


_Model.apply_model = apply_model


def _routes(_demo, app):
    @app.get("/seg-probe/calls")
    def calls():
        with _lock:
            return {"calls": list(_calls)}

    @app.post("/seg-probe/clear")
    def clear():
        with _lock:
            _calls.clear()
        return {"ok": True}


script_callbacks.on_app_started(_routes)
print(f"[seg-probe] recording UNet calls of {_Model.__module__}.{_Model.__name__}.apply_model")
