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

UNET_CONFIG = dict(
    image_size=IMAGE_SIZE, in_channels=1, out_channels=1, model_channels=32,
    # Levels 32/16/8. No res block on the way down at 32x32: that level is the most expensive per
    # block and the upscaled 8x8 digits carry little detail there; training time on 2 CPU cores rules.
    channel_mult=(1, 1, 2), num_res_blocks=(0, 1, 1),
    # Self-attention at 16x16 and 8x8 (downsample factors 2 and 4) plus the middle block (8x8).
    attention_resolutions=(2, 4), num_head_channels=16,
    use_spatial_transformer=True, transformer_depth=1, context_dim=CONTEXT_DIM,
    legacy=False, use_checkpoint=False,
)


def build_unet():
    from ldm.modules.diffusionmodules.openaimodel import UNetModel
    return UNetModel(**UNET_CONFIG)


def unet_timestep(sigma):
    """EDM's noise input c_noise = ln(sigma)/4, times 1000 so it spans about the DDPM timestep range
    (0..1000) that the ldm sinusoidal embedding's frequencies were chosen for."""
    return 250.0 * torch.log(sigma)


class DigitDenoiser(nn.Module):
    """`model(x, sigma, cond=context) -> denoised x0`: a k-diffusion style denoiser.

    `cond` is the cross-attention context (B, 1, CONTEXT_DIM) from `context(labels)`; keeping the
    conditioning a plain tensor lets SegCFGDenoiser concatenate cond/SEG/uncond rows along dim 0.
    """

    def __init__(self):
        super().__init__()
        self.unet = build_unet()
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
        return c_skip * x + c_out * self.unet(x * c_in, unet_timestep(sigma), context=cond)

    def loss(self, clean, sigma, cond, noise):
        """EDM loss with its weighting folded in: MSE between the network output and its ideal target
        (clean - c_skip * noisy) / c_out, so every sigma contributes on the same scale."""
        c_skip, c_out, c_in = self.scalings(sigma)
        noisy = clean + noise * sigma[:, None, None, None]
        output = self.unet(noisy * c_in, unet_timestep(sigma), context=cond)
        target = (clean - c_skip * noisy) / c_out
        return (output - target).square().mean()


def sample_training_sigmas(n, generator, p_mean=-1.2, p_std=1.2):
    """EDM's log-normal training noise levels."""
    return torch.exp(p_mean + p_std * torch.randn(n, generator=generator))


def load_denoiser(path=None):
    """The shipped (or a given) weights, in eval mode."""
    from safetensors.torch import load_file
    from . import DENOISER_PATH
    model = DigitDenoiser()
    model.load_state_dict(load_file(path or DENOISER_PATH))
    return model.eval().requires_grad_(False)


def parameter_count(module):
    return sum(p.numel() for p in module.parameters())

