"""The demo's diffusion model: the real ldm UNetModel, class-conditioned through cross-attention, wrapped
as a Karras et al. (2022, "EDM") denoiser in pixel space.

Conditioning: one learned 32-d token per digit 0-9 plus a learned null token (index 10) for the
unconditional branch, passed as a 1-token cross-attention context, the way SD passes text tokens.
Training drops labels to the null token, so the same model gives unconditional and CFG samples.
"""
import torch
from torch import nn

from .data import IMAGE_SIZE, NUM_CLASSES

CONTEXT_DIM = 32
NULL_LABEL = NUM_CLASSES  # index of the unconditional token
SIGMA_DATA = 0.5          # EDM's data std (our data is in [-1, 1], mostly -1 background)
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0

_SHARED = dict(image_size=IMAGE_SIZE, out_channels=1, model_channels=32, num_head_channels=16,
               use_spatial_transformer=True, transformer_depth=1, context_dim=CONTEXT_DIM,
               legacy=False, use_checkpoint=False)

# The shipped weights are "mirror". "coords16" is the second design tried for issue 12 (results in
# RESULTS.md): kept so that it can be retrained (`train --architecture coords16 --steps 3000`) and evaluated
# (`--weights`), not shipped, because its samples are worse and SEG's gain on it is small.
ARCHITECTURES = {
    # Levels 32/16/8. No res block on the way down at 32x32: that level is the most expensive per block and
    # the upscaled 8x8 digits carry little detail there; training time on 2 CPU cores rules. Self-attention
    # at 16x16 and 8x8 (downsample factors 2 and 4) plus the middle block (8x8).
    "mirror": dict(_SHARED, in_channels=1, channel_mult=(1, 1, 2), num_res_blocks=(0, 1, 1),
                   attention_resolutions=(2, 4)),
    # Levels 32/16 only, so that no 8x8 convolutions span the image and carry the symmetry instead of
    # attention; self-attention at 16x16 alone (d0, m0, u0-u1); two coordinate planes as extra input
    # channels (see coordinate_planes), so attention can find a pixel's mirror partner by position.
    "coords16": dict(_SHARED, in_channels=3, channel_mult=(1, 2), num_res_blocks=(0, 1),
                     attention_resolutions=(2,)),
}
DEFAULT_ARCHITECTURE = "mirror"


def coordinate_planes(size=IMAGE_SIZE):
    """(2, size, size): |x - axis| and y, both scaled to [-1, 1]. The first is mirror-invariant, so a pixel
    and its mirror partner carry the same position: ldm's attention has no position embedding of its own,
    and with these planes a query can find its partner by position, the match that smoothing queries undoes."""
    axis = (size - 1) / 2
    ramp = torch.arange(size, dtype=torch.float32)
    across = ((ramp - axis).abs() / axis) * 2 - 1  # 1 at the borders, about -1 at the axis
    down = (ramp - axis) / axis
    return torch.stack([across[None, :].expand(size, size), down[:, None].expand(size, size)])


def unet_input(x, planes):
    """The image, followed by the coordinate planes (2, H, W) when the architecture takes them (else None)."""
    if planes is None:
        return x
    return torch.cat([x, planes.to(x.dtype).expand(x.shape[0], -1, -1, -1)], dim=1)


def build_unet(architecture=DEFAULT_ARCHITECTURE):
    from ldm.modules.diffusionmodules.openaimodel import UNetModel
    return UNetModel(**ARCHITECTURES[architecture])


def unet_timestep(sigma):
    """EDM's noise input c_noise = ln(sigma)/4, times 1000 so it spans about the DDPM timestep range
    (0..1000) that the ldm sinusoidal embedding's frequencies were chosen for."""
    return 250.0 * torch.log(sigma)


class DigitDenoiser(nn.Module):
    """`model(x, sigma, cond=context) -> denoised x0`: a k-diffusion style denoiser.

    `cond` is the cross-attention context (B, 1, CONTEXT_DIM) from `context(labels)`; keeping the
    conditioning a plain tensor lets SegCFGDenoiser concatenate cond/SEG/uncond rows along dim 0.
    """

    def __init__(self, architecture=DEFAULT_ARCHITECTURE):
        super().__init__()
        self.architecture = architecture
        self.unet = build_unet(architecture)
        # Built once, moved with the module, not saved: the weights files hold only what was trained.
        with_planes = ARCHITECTURES[architecture]["in_channels"] > 1
        self.register_buffer("coordinates", coordinate_planes() if with_planes else None, persistent=False)
        self.label_embedding = nn.Embedding(NUM_CLASSES + 1, CONTEXT_DIM)

    def context(self, labels):
        """labels: int tensor (B,), NULL_LABEL for unconditional -> (B, 1, CONTEXT_DIM)."""
        return self.label_embedding(labels)[:, None, :]

    def null_context(self, n):
        return self.context(torch.full((n,), NULL_LABEL, dtype=torch.long, device=self.label_embedding.weight.device))

    @staticmethod
    def scalings(sigma):
        """EDM preconditioning -> (c_skip, c_out, c_in), each shaped (B, 1, 1, 1)."""
        sigma = sigma[:, None, None, None]
        total = sigma ** 2 + SIGMA_DATA ** 2
        return SIGMA_DATA ** 2 / total, sigma * SIGMA_DATA / total.sqrt(), 1.0 / total.sqrt()

    def forward(self, x, sigma, cond):
        c_skip, c_out, c_in = self.scalings(sigma)
        return c_skip * x + c_out * self.unet(unet_input(x * c_in, self.coordinates), unet_timestep(sigma), context=cond)

    def loss(self, clean, sigma, cond, noise):
        """EDM loss with its weighting folded in: MSE between the network output and its ideal target
        (clean - c_skip * noisy) / c_out, so every sigma contributes on the same scale."""
        c_skip, c_out, c_in = self.scalings(sigma)
        noisy = clean + noise * sigma[:, None, None, None]
        output = self.unet(unet_input(noisy * c_in, self.coordinates), unet_timestep(sigma), context=cond)
        target = (clean - c_skip * noisy) / c_out
        return (output - target).square().mean()


def sample_training_sigmas(n, generator, p_mean=-1.2, p_std=1.2):
    """EDM's log-normal training noise levels."""
    return torch.exp(p_mean + p_std * torch.randn(n, generator=generator))


def load_denoiser(path=None):
    """The shipped (or a given) weights, in eval mode; the architecture is read from the file's metadata
    (written by train.py; absent in files from before it was, which are the default architecture)."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    from . import DENOISER_PATH
    path = path or DENOISER_PATH
    with safe_open(path, framework="pt") as f:
        architecture = (f.metadata() or {}).get("architecture", DEFAULT_ARCHITECTURE)
    if architecture not in ARCHITECTURES:
        raise ValueError(f"{path}: unknown demo architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")
    model = DigitDenoiser(architecture)
    model.load_state_dict(load_file(path))
    return model.eval().requires_grad_(False)


def parameter_count(module):
    return sum(p.numel() for p in module.parameters())

