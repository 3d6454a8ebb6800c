"""A ControlNet-shaped residual producer for the small test UNets of tests/unets.py.

A real ControlNet (cldm.ControlNet, as sd-webui-controlnet's scripts/cldm.py and Forge's backend/nn/cnets/cldm.py
build it) copies the UNet's encoder, adds a hint encoder, and returns one residual per UNet input block (its
output's shape; 12 for SD1.5, 9 for SDXL) plus one for the middle block, each a function of the row's latent,
timestep, text context (and SDXL's vector) and the hint image. The hosts then add residual i to the skip
connection of input block i and the last one to the middle block's output. This stand-in keeps exactly that
interface and those dependencies, with a few convolutions instead of an encoder copy, so a forward pass
costs next to nothing. Random weights, fixed by a seed.
"""
import torch
import torch.nn.functional as F
from ldm.modules.diffusionmodules import util as ldm_util  # looked up per call (tests/precision.py swaps it)


def residual_shapes(unet):
    """(channels, downscale) of every input block's output and of the middle block's, from one dry run."""
    shapes = []
    hooks = [m.register_forward_hook(lambda m, a, out: shapes.append((out.shape[1], 16 // out.shape[-1])))
             for m in list(unet.input_blocks) + [unet.middle_block]]
    try:
        with torch.no_grad():
            y = torch.zeros(1, 1) if unet.num_classes is not None else None
            unet(torch.zeros(1, unet.in_channels, 16, 16), torch.zeros(1), context=torch.zeros(1, 8, 32), y=y)
    finally:
        for h in hooks:
            h.remove()
    return shapes


class TinyControlNet(torch.nn.Module):
    def __init__(self, unet, seed=0, context_dim=32, gain=0.5):
        super().__init__()
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            self.shapes = residual_shapes(unet)
            self.hint_block = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.time = torch.nn.Linear(16, 8)
            self.text = torch.nn.Linear(context_dim, 8)
            self.vector = torch.nn.Linear(1, 8) if unet.num_classes is not None else None
            self.heads = torch.nn.ModuleList(torch.nn.Conv2d(4 + 8, c, 1) for c, _ in self.shapes)
        finally:
            torch.random.set_rng_state(generator_state)
        self.gain = gain
        self.eval()

    @property
    def n_residuals(self):
        return len(self.shapes)

    def forward(self, x, hint, timesteps, context, y=None):
        """x: (rows, 4+, h, w) latent; hint: (1 or rows, 3, H, W) image in [0, 1] at any size; timesteps:
        (rows,); context: (rows, tokens, context_dim). Returns the list of residuals, input blocks first."""
        rows, (h, w) = x.shape[0], x.shape[-2:]
        hint = F.interpolate(hint.to(x.dtype), size=(8 * h, 8 * w), mode="nearest")
        features = F.avg_pool2d(self.hint_block(hint), 8)
        if features.shape[0] != rows:
            features = features.expand(rows, -1, -1, -1)
        modulation = self.time(ldm_util.timestep_embedding(timesteps, 16)) + self.text(context.mean(dim=1))
        if self.vector is not None and y is not None:
            modulation = modulation + self.vector(y)
        features = features * (1 + torch.tanh(modulation))[:, :, None, None]
        features = torch.cat([x[:, :4], features], dim=1)
        return [self.gain * head(F.avg_pool2d(features, down) if down > 1 else features)
                for head, (_, down) in zip(self.heads, self.shapes)]


def hint_image(seed=5, size=128):
    """A control image: a few bright rectangles on black, like an edge or segmentation map."""
    g = torch.Generator().manual_seed(seed)
    image = torch.zeros(1, 3, size, size)
    for _ in range(4):
        y0, x0 = (int(v) for v in torch.randint(0, size * 3 // 4, (2,), generator=g))
        image[:, :, y0:y0 + size // 4, x0:x0 + size // 6] = torch.rand(3, 1, 1, generator=g)
    return image
