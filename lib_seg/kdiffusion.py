"""k-diffusion outside a WebUI (tests, demo, benchmark): its samplers, and a bare ldm UNet as its denoiser.

k-diffusion's package ``__init__`` imports its training code too (torchvision, clip, kornia, wandb ...),
none of which the samplers need, and PyPI's torchvision does not load beside the pinned CPU torch.
Inside a WebUI ``k_diffusion`` is already importable and is used as is. Elsewhere (tests, demo, benchmark)
the package is registered without running its ``__init__``, and ``k_diffusion.utils``' image import
(``torchvision.transforms.functional``, used only by its image helpers) gets an empty stand-in if missing.
"""
import importlib
import importlib.util
import sys
import types

import torch


def _register_bare_package():
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("k-diffusion is not installed: pip install --no-deps k-diffusion==0.1.1.post1")
    package = types.ModuleType("k_diffusion")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    sys.modules["k_diffusion"] = package
    if importlib.util.find_spec("torchvision") is None:
        functional = types.ModuleType("torchvision.transforms.functional")
        transforms = types.ModuleType("torchvision.transforms")
        transforms.functional = functional
        torchvision = types.ModuleType("torchvision")
        torchvision.transforms = transforms
        sys.modules.setdefault("torchvision", torchvision)
        sys.modules.setdefault("torchvision.transforms", transforms)
        sys.modules.setdefault("torchvision.transforms.functional", functional)


def load():
    """Return ``(sampling, external)``: k-diffusion's sampler and denoiser-wrapper modules."""
    if "k_diffusion" not in sys.modules:
        try:
            importlib.import_module("k_diffusion")
        except ImportError:
            for name in [n for n in sys.modules if n == "k_diffusion" or n.startswith("k_diffusion.")]:
                del sys.modules[name]
            _register_bare_package()
    return importlib.import_module("k_diffusion.sampling"), importlib.import_module("k_diffusion.external")


def sd_alphas_cumprod(steps=1000, beta_start=0.00085, beta_end=0.012):
    """Stable Diffusion's "scaled linear" noise schedule."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()


class LatentDiffusionLike(torch.nn.Module):
    """What k-diffusion's CompVisDenoiser needs of an ldm LatentDiffusion (apply_model, alphas_cumprod),
    around a bare UNet: how A1111 wraps SD1.x/2.x eps models. cond: a context tensor, or a dict with
    'crossattn' and an optional per-row 'vector' (SDXL-style)."""

    def __init__(self, unet):
        super().__init__()
        self.diffusion_model = unet
        self.register_buffer("alphas_cumprod", sd_alphas_cumprod())

    def apply_model(self, x, t, cond):
        if isinstance(cond, dict):
            return self.diffusion_model(x, t, context=cond["crossattn"], y=cond.get("vector"))
        return self.diffusion_model(x, t, context=cond)


def compvis_denoiser(unet):
    """A bare ldm UNet as a k-diffusion denoiser (x, sigma, cond=...) -> denoised, SD's schedule."""
    _, external = load()
    return external.CompVisDenoiser(LatentDiffusionLike(unet))
