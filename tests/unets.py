"""Small UNets built from the real Stability AI ``ldm`` code (stable-diffusion-sdkit wheel), random weights.

Same block layout as the real models (blocks, where attention sits, transformers per block, so every layer
name and token grid is the real one), far fewer channels, so a forward pass takes milliseconds on a CPU. The
widths stay distinct between the upper and lower levels (32, 32, 64, 64): doubling at every level as the real
models do made a float64 forward twice as costly, for no check that depends on it. SD1.5-like attention has
2 heads (of 16 and 32 channels): more than one, so a head mixed up with another or with the tokens still
changes the output, while each softmax over the 256 tokens of the top level runs twice per layer instead of
4 times (SD1.5's own 8 heads would buy no check and cost most of the suite's time).
"""
import torch
from ldm.modules.diffusionmodules.openaimodel import UNetModel

CONTEXT_DIM = 32


class _UNet(UNetModel):
    """The ldm UNetModel, unchanged but for one thing: this ldm version's SpatialTransformer indexes
    ``context`` per transformer block (``context[i]``), so with transformer_depth > 1 it needs a list;
    SDXL's sgm code broadcasts one tensor instead. Hosts pass one tensor, so do that here."""

    def forward(self, x, timesteps=None, context=None, y=None, **kwargs):
        if isinstance(context, torch.Tensor) and self._depth > 1:
            context = [context] * self._depth
        return super().forward(x, timesteps=timesteps, context=context, y=y, **kwargs)


def _build(depth, in_channels=4, **config):
    model = _UNet(transformer_depth=depth, context_dim=[CONTEXT_DIM] * depth, use_spatial_transformer=True,
                  use_checkpoint=False, legacy=False, image_size=32, in_channels=in_channels, out_channels=4,
                  **config)
    model._depth = depth
    model.dtype = torch.get_default_dtype()  # ldm casts its input to this: float64 inside precision.float64()
    # ldm zero-initialises the output conv and every transformer's proj_out (a fresh UNet predicts 0 and its
    # attention has no effect); give those weights values so attention changes show in the output.
    generator = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.normal_(0.0, 0.05, generator=generator)
    return model.eval()


def sd15_like(seed=0, transformer_depth=1, in_channels=4):
    """SD1.5's layout: attention at the first three levels, 2 res blocks per level -> d0-d5, m0, u0-u8.
    in_channels 9: an inpainting UNet (latent + mask + masked image), 8: an InstructPix2Pix one."""
    torch.manual_seed(seed)
    return _build(transformer_depth, in_channels=in_channels, model_channels=32, attention_resolutions=[4, 2, 1], num_res_blocks=2,
                  channel_mult=[1, 1, 2, 2], num_heads=2)


def sdxl_like(seed=0):
    """SDXL's layout: no attention at the first level, two transformers per block (d0-d3, m0, u0-u5),
    and a per-row vector input ``y`` standing in for SDXL's pooled 'vector' conditioning (this ldm
    version's "continuous" label embedding takes a (batch, 1) vector)."""
    torch.manual_seed(seed)
    return _build(2, model_channels=32, attention_resolutions=[4, 2], num_res_blocks=2, channel_mult=[1, 1, 2],
                  num_head_channels=8, num_classes="continuous", use_linear_in_transformer=True)
