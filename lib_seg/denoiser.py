"""CFG + SEG for k-diffusion samplers without a WebUI (the demo and the benchmark).

The same engine the WebUI adapters use: a SegSession, the ldm attention patch, the call cursor, and the
guidance formulas. The step's batch is laid out as the WebUIs do, [cond | SEG copies of cond | uncond],
and evaluated in one UNet call (or, for comparison, with the SEG rows in a separate second call, the way
existing Forge/ComfyUI implementations work).
"""
import torch

from . import guidance, prefix
from .attention import patch_ldm_self_attention
from .layers import select_layers
from .session import NO_ROWS, SegSession


def _cat_conds(conds):
    """Concatenate conditionings along rows: tensors, or dicts of tensors (SDXL-style)."""
    if isinstance(conds[0], dict):
        return {key: torch.cat([c[key] for c in conds]) for key in conds[0]}
    return torch.cat(conds)


class SegCFGDenoiser:
    """Wraps `denoiser(x, sigma, cond=...) -> denoised` into `model(x, sigma, cond=, uncond=None)`.

    unet: the ldm UNetModel inside `denoiser` whose self-attention layers SEG patches.
    total_steps: number of denoiser calls of the run (for the active interval); None = every call.
    separate_pass: evaluate the SEG rows in a second UNet call instead of batching them.
    Use as a context manager: patches are installed on enter and removed on exit.
    """

    def __init__(self, denoiser, unet, settings, cfg_scale=1.0, total_steps=None, separate_pass=False):
        self.denoiser = denoiser
        self.unet = unet
        self.cfg_scale = cfg_scale
        self.total_steps = total_steps
        self.separate_pass = separate_pass
        self.session = SegSession(settings)
        self.step = 0
        self.unet_calls = 0
        self.unet_rows = 0

    def __enter__(self):
        session = self.session
        session.registry.forward_pre_hook(self.unet, self._on_unet_call)
        if session.settings.active:
            modules = dict(self.unet.named_modules())
            layers = select_layers(self.unet, session.settings.layers)
            patch_ldm_self_attention(session.registry, [modules[layer.name] for layer in layers], session)
            prefix.install(session.registry, self.unet, prefix.unet_prefix(self.unet, layers),
                           lambda: None if session.call is None else session.call.copies)
        return self

    def __exit__(self, *exc_info):
        self.session.close()
        return False

    def _on_unet_call(self, module, args):
        x = args[0]
        self.unet_calls += 1
        self.unet_rows += x.shape[0]
        self.session.begin_call(x.shape[0], x.shape[-2:])

    def _active(self):
        total = self.total_steps if self.total_steps is not None else self.step + 1
        return self.session.step_active(min(self.step, total - 1), total)

    def perturbed(self, x, sigma, cond):
        """The SEG rows' prediction alone: one denoiser call with every row through the perturbed attention
        (the separate pass; also the demo's diagnostic of what SEG guides away from)."""
        self.session.begin_step(x.shape[0], slice(0, x.shape[0]))
        out = self.denoiser(x, sigma, cond=cond)
        self.session.end_step()
        return out

    def __call__(self, x, sigma, cond, uncond=None):
        settings = self.session.settings
        use_cfg = uncond is not None and self.cfg_scale != 1.0
        seg = self._active()
        n = x.shape[0]
        sigma = sigma.expand(n) if sigma.ndim == 0 else sigma
        groups = [(x, sigma, cond)]
        if seg and not self.separate_pass:
            groups.append((x, sigma, cond))
        if use_cfg:
            groups.append((x, sigma, uncond))
        x_in = torch.cat([g[0] for g in groups])
        sigma_in = torch.cat([g[1] for g in groups])
        cond_in = _cat_conds([g[2] for g in groups])

        seg_rows = slice(n, 2 * n) if seg and not self.separate_pass else NO_ROWS
        if seg and settings.mode == "orthogonal" and use_cfg:  # OSEG's CFG uses the perturbed uncond
            seg_rows = slice(n, x_in.shape[0]) if not self.separate_pass else slice(n, 2 * n)
        copies = prefix.Copies(slice(n, 2 * n), slice(0, n)) if seg and not self.separate_pass else None
        self.session.begin_step(x_in.shape[0], seg_rows, copies)
        out = self.denoiser(x_in, sigma_in, cond=cond_in)
        self.session.end_step()
        if seg and self.separate_pass:
            seg_out = self.perturbed(x, sigma, cond)

        cond_out = out[:n]
        uncond_out = out[-n:] if use_cfg else None
        if not seg:
            guided = guidance.guide(cond_out, cond_out, 0.0, uncond_out, self.cfg_scale)
        else:
            if not self.separate_pass:
                seg_out = out[n:2 * n]
            guided = guidance.guide(cond_out, seg_out, settings.scale, uncond_out, self.cfg_scale)
            if settings.rescale > 0:
                guided = guidance.rescale_denoised(x, sigma, guided, cond_out, settings.rescale)
        self.step += 1
        return guided
