"""A test-install-only probe for A1111 1.10: records every UNet call of a generation and serves the record.

Installed by `build.sh --probe` as extensions/seg-probe (never in a user's WebUI). It changes nothing in
the computation: a forward pre-hook on the loaded UNet (also the refiner's, hooked when the model
switches) appends (denoiser step, rows, latent h, w, checkpoint, fingerprint of row 0's latent) and returns
None. The fingerprint (a hash of the first row's input bytes) tells whether two generations fed the UNet the
same latents, e.g. in a hires fix's first pass.

    GET  /seg-probe/calls          -> {"calls": [[step, rows, h, w, checkpoint, fingerprint], ...]}
    POST /seg-probe/reset
"""
import hashlib

from modules import script_callbacks, shared

CALLS = []
_hooked = set()
_state = {"step": None}


def fingerprint(x):
    """A short hash of the first row's latent: equal for bit-identical inputs."""
    return hashlib.sha1(x[0].detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def _record(module, args):
    x = args[0]
    CALLS.append([_state["step"], int(x.shape[0]), int(x.shape[-2]), int(x.shape[-1]),
                  getattr(getattr(shared.sd_model, "sd_checkpoint_info", None), "name", None), fingerprint(x)])


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
