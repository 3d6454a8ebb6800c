"""Follows A1111 1.10.1's built-in Hypertile (extensions-builtin/hypertile/hypertile.py, ``hypertile_hook_model`` and
``self_attn_forward``): the first time it is enabled it wraps every listed attn1's *instance* ``forward`` once and
for all, keeping the previous forward in ``module.__webui_hypertile_params``; each pass then sets ``enabled``. An
enabled wrapper splits the tokens into nh x nw tiles that become extra batch rows, attends per tile and puts the
tiles back. The stand-in hooks every attn1 of the UNet and always uses 2 x 2 tiles when both sides are even (the
host picks random divisors of the grid near its tile size)."""
import math

from einops import rearrange

PARAMS = "__webui_hypertile_params"


class HypertileParams:
    forward = None
    enabled = False
    aspect_ratio = 1.0


def _self_attn_forward(params):
    def wrapper(*args, **kwargs):
        if not params.enabled:
            return params.forward(*args, **kwargs)
        x = args[0]
        hw = x.size(1)
        h = int(round(math.sqrt(hw / params.aspect_ratio)))
        w = hw // h
        nh = nw = 2 if h % 2 == 0 and w % 2 == 0 and h * w == hw else 1
        if nh * nw > 1:
            x = rearrange(x, "b (nh h nw w) c -> (b nh nw) (h w) c", h=h // nh, w=w // nw, nh=nh, nw=nw)
        out = params.forward(x, *args[1:], **kwargs)
        if nh * nw > 1:
            out = rearrange(out, "(b nh nw) hw c -> b nh nw hw c", nh=nh, nw=nw)
            out = rearrange(out, "b nh nw (h w) c -> b (nh h nw w) c", h=h // nh, w=w // nw)
        return out
    return wrapper


def hook_model(unet, width, height, enable):
    """hypertile_hook_model on the UNet: wrap once, then set ``enabled`` and the aspect ratio for this pass."""
    for name, module in unet.named_modules():
        if not name.endswith("attn1"):
            continue
        params = getattr(module, PARAMS, None)
        if params is None:
            if not enable:
                continue
            params = HypertileParams()
            setattr(module, PARAMS, params)
            params.forward = module.forward
            module.forward = _self_attn_forward(params)
        params.aspect_ratio = width / height
        params.enabled = enable


def unhook_model(unet):
    """Not something the host does (its wrappers stay for the process); lets a test return the UNet as it was."""
    for module in unet.modules():
        if hasattr(module, PARAMS):
            delattr(module, PARAMS)
            del module.forward
