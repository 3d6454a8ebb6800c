"""The ldm UNet behind a k-diffusion CompVisDenoiser, as A1111 wraps its SD1.x models (eps prediction)."""
import torch
from torch import nn

from lib_seg.kdiffusion import load

sampling, external = load()


def sd_alphas_cumprod(steps=1000, beta_start=0.00085, beta_end=0.012):
    """Stable Diffusion's "scaled linear" schedule."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()


class LatentDiffusionLike(nn.Module):
    """What CompVisDenoiser needs of an ldm LatentDiffusion: apply_model and alphas_cumprod."""

    def __init__(self, unet):
        super().__init__()
        self.diffusion_model = unet
        self.register_buffer("alphas_cumprod", sd_alphas_cumprod())

    def apply_model(self, x, t, cond):
        if isinstance(cond, dict):
            return self.diffusion_model(x, t, context=cond["crossattn"], y=cond.get("vector"))
        return self.diffusion_model(x, t, context=cond)


def denoiser_for(unet):
    return external.CompVisDenoiser(LatentDiffusionLike(unet))
