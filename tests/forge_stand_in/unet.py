"""The real ldm UNet made to behave like Forge's / reForge's UNet towards attention patches.

Forge's UNet (backend/nn/unet.py; reForge: ldm_patched/.../openaimodel.py + attention.py) threads a
``transformer_options`` dict through every block: the UNet's forward records ``original_shape`` (the
input's shape) and resets ``transformer_index``; each input/middle/output block sets ``block`` to
(section, index) before it runs; each SpatialTransformer sets ``block_index`` to the transformer's
position before calling it; the BasicTransformerBlock builds ``extra_options`` from every option except
``patches``/``patches_replace``, adds ``n_heads`` and ``dim_head`` (reForge also ``attn_precision``),
then looks up an attn1 replacement under (section, index, block_index), falling back to
(section, index). With one it projects q/k/v itself (k, v from the normed input for self-attention),
calls the replacement and applies to_out; without one the attention module runs the host's attention
function. The ldm modules do not pass such a dict, so install_forge_glue() keeps it on the UNet object
(set for the duration of one forward by run_unet) and uses forward pre-hooks for block/block_index and
an instance-level attn1 forward for the lookup. Installed once per test UNet, never removed.
"""
import torch
import torch.nn.functional as F
from ldm.modules.attention import BasicTransformerBlock, SpatialTransformer

from lib_seg.kdiffusion import load

from .controlnet import control_hooks

_, external = load()


def attention_function(q, k, v, heads, mask=None, attn_precision=None):
    """The host's attention on projected (rows, tokens, heads*dim) tensors (Forge attention_pytorch-like)."""
    rows, _, inner = q.shape
    d = inner // heads
    q, k, v = (t.reshape(t.shape[0], -1, heads, d).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(rows, -1, heads * d)


def stand_in_attention(q, k, v, heads, extra_options):
    """What lib_seg.hosts.forge.host_attention returns inside the hosts, for this stand-in."""
    return attention_function(q, k, v, heads, attn_precision=extra_options.get("attn_precision"))


def _options(unet):
    return unet._forge_transformer_options


def install_forge_glue(unet, flavor="forge"):
    if getattr(unet, "_forge_glue", None) is not None:
        return unet
    unet._forge_glue = flavor
    unet._forge_transformer_options = {}

    def set_block(section, index):
        def hook(module, args):
            _options(unet)["block"] = (section, index)
        return hook

    for i, block in enumerate(unet.input_blocks):
        block.register_forward_pre_hook(set_block("input", i))
    unet.middle_block.register_forward_pre_hook(set_block("middle", 0))
    for i, block in enumerate(unet.output_blocks):
        block.register_forward_pre_hook(set_block("output", i))

    for module in unet.modules():
        if isinstance(module, SpatialTransformer):
            for k, block in enumerate(module.transformer_blocks):
                block.register_forward_pre_hook(_set_block_index(unet, k))
        if isinstance(module, BasicTransformerBlock):
            module.attn1.forward = _attn1_forward(unet, module, flavor)
    return unet


def _set_block_index(unet, k):
    def hook(module, args):
        _options(unet)["block_index"] = k
    return hook


def _attn1_forward(unet, block, flavor):
    attn = block.attn1

    def forward(x, context=None, mask=None):
        options = _options(unet)
        extra = {k: v for k, v in options.items() if k not in ("patches", "patches_replace")}
        extra["n_heads"] = attn.heads
        extra["dim_head"] = attn.to_q.out_features // attn.heads
        if flavor == "reforge":
            extra["attn_precision"] = None
        section = options.get("block")
        replace = options.get("patches_replace", {}).get("attn1", {})
        key = None if section is None else (section[0], section[1], options.get("block_index", 0))
        if key not in replace:
            key = section
        source = x if context is None else context
        value = source
        patches = options.get("patches", {})
        for patch in patches.get("attn1_patch", []):  # on the normed input, before the projections
            x, source, value = patch(x, source, value, extra)
        q, k, v = attn.to_q(x), attn.to_k(source), attn.to_v(value)
        if key in replace:
            out = replace[key](q, k, v, extra)
        else:
            out = attention_function(q, k, v, attn.heads, mask)
        out = attn.to_out(out)
        for patch in patches.get("attn1_output_patch", []):
            out = patch(out, extra)
        return out

    return forward


class KModel(torch.nn.Module):
    """Forge's KModel / reForge's BaseModel.apply_model for an eps-prediction SD model: scale the input by
    1/sqrt(sigma^2+1), concat c_concat, sigma -> discrete timestep, run the UNet with transformer_options,
    return the denoised prediction x - sigma * eps."""

    def __init__(self, unet, flavor="forge"):
        super().__init__()
        self.diffusion_model = install_forge_glue(unet, flavor) if hasattr(unet, "input_blocks") else unet
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.schedule = external.DiscreteSchedule(((1 - alphas_cumprod) / alphas_cumprod).sqrt().to(torch.get_default_dtype()),
                                                 quantize=False)
        self.unet_calls = []  # rows of every UNet call

    def apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        sigma = t
        xc = x / ((sigma ** 2 + 1) ** 0.5)[:, None, None, None]
        if c_concat is not None:
            xc = torch.cat([xc, c_concat], dim=1)
        timesteps = self.schedule.sigma_to_t(sigma)
        eps = run_unet(self.diffusion_model, xc, timesteps, c_crossattn, transformer_options, control=control, **kwargs)
        return x - eps * sigma[:, None, None, None]

    def memory_required(self, input_shape):
        return 0


def run_unet(unet, x, timesteps, context, transformer_options, y=None, control=None, **ignored):
    unet_calls = getattr(unet, "_forge_calls", None)
    if unet_calls is not None:
        unet_calls.append(int(x.shape[0]))
    if not hasattr(unet, "_forge_transformer_options"):  # a DiT-like stand-in: no patches to consult
        return unet(x, timesteps, context=context, y=y)
    transformer_options["original_shape"] = list(x.shape)
    transformer_options["transformer_index"] = 0
    previous = unet._forge_transformer_options
    unet._forge_transformer_options = transformer_options
    handles = control_hooks(unet, control) if control is not None else []
    try:
        return unet(x, timesteps, context=context, y=y)
    finally:
        unet._forge_transformer_options = previous
        for handle in handles:
            handle.remove()
