"""A test-install-only probe for A1111 1.10: records every UNet call of a generation and serves the record.

Installed by `build.sh --probe` as extensions/seg-probe (never in a user's WebUI). It changes nothing in
the computation: a forward pre-hook on the loaded UNet (also the refiner's, hooked when the model
switches) appends (denoiser step, rows, latent h, w, checkpoint) and returns None.

    GET  /seg-probe/calls          -> {"calls": [[step, rows, h, w, checkpoint], ...]}
    POST /seg-probe/reset
"""
from modules import script_callbacks, shared

CALLS = []
_hooked = set()
_state = {"step": None}


def _record(module, args):
    x = args[0]
    CALLS.append([_state["step"], int(x.shape[0]), int(x.shape[-2]), int(x.shape[-1]),
                  getattr(getattr(shared.sd_model, "sd_checkpoint_info", None), "name", None)])


def _on_cfg_denoiser(params):
    _state["step"] = int(getattr(params.denoiser, "step", -1))
    unet = getattr(getattr(shared.sd_model, "model", None), "diffusion_model", None)
    if unet is not None and id(unet) not in _hooked:
        _hooked.add(id(unet))
        unet.register_forward_pre_hook(_record)


def _routes(demo, app):
    app.add_api_route("/seg-probe/calls", lambda: {"calls": CALLS}, methods=["GET"])
    app.add_api_route("/seg-probe/reset", lambda: CALLS.clear() or {"ok": True}, methods=["POST"])


script_callbacks.on_cfg_denoiser(_on_cfg_denoiser, name="seg-probe")
script_callbacks.on_app_started(_routes)
