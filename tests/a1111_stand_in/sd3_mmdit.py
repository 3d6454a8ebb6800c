"""Follows modules/models/sd3/mmdit.py, sd3_impls.py and sd3_model.py of A1111 1.10.1 (SD3 Medium), restated at a
tiny size. What SEG depends on is as the host has it: this module imports ``attention`` from other_impls, and
``block_mixing`` (context tokens first, then image) calls that module global once per joint block with
QK-normed q and k; ``JointBlock.forward`` runs as ``block(context, x, c=c_mod)``; the last block's context side
is pre_only. The model lives at ``sd_model.model.diffusion_model``; ``sd_model.create_denoiser()`` gives the
CFG denoiser a k-diffusion DiscreteSchedule over the flow sigmas (shift 3) whose forward calls
``sd_model.apply_model(x, sigma, cond)`` with cond = {crossattn, vector}; the prediction is denoised as
x - sigma * output. The blocks' internals are the Forge stand-in's (tests/forge_stand_in/mmditx.py), which
restates the same SD3 code."""
import torch
from torch import nn

import lib_seg.kdiffusion
from forge_stand_in.mmditx import DismantledBlock, MMDiTX
from .sd3_other_impls import attention

_, external = lib_seg.kdiffusion.load()


def block_mixing(context, x, context_block, x_block, c):
    context_qkv, context_intermediates = context_block.pre_attention(context, c)
    x_qkv, x_intermediates = x_block.pre_attention(x, c)
    q, k, v = (torch.cat((context_qkv[t], x_qkv[t]), dim=1) for t in range(3))
    attn = attention(q, k, v, x_block.attn.num_heads)
    n_context = context_qkv[0].shape[1]
    context_attn, x_attn = attn[:, :n_context], attn[:, n_context:]
    context = None if context_block.pre_only else context_block.post_attention(context_attn, *context_intermediates)
    return context, x_block.post_attention(x_attn, *x_intermediates)


class JointBlock(nn.Module):
    def __init__(self, hidden_size, num_heads, pre_only):
        super().__init__()
        self.context_block = DismantledBlock(hidden_size, num_heads, pre_only=pre_only)
        self.x_block = DismantledBlock(hidden_size, num_heads)

    def forward(self, *args, **kwargs):
        return block_mixing(*args, context_block=self.context_block, x_block=self.x_block, **kwargs)


class MMDiT(MMDiTX):
    def __init__(self, depth=3, hidden_size=32, num_heads=2, context_dim=32, adm_dim=1):
        super().__init__(depth=depth, hidden_size=hidden_size, num_heads=num_heads, context_dim=context_dim,
                         adm_dim=adm_dim, x_block_self_attn_layers=())
        self.joint_blocks = nn.ModuleList([JointBlock(hidden_size, num_heads, pre_only=i == depth - 1)
                                           for i in range(depth)])


class BaseModel(nn.Module):
    def __init__(self, shift=3.0):
        super().__init__()
        self.diffusion_model = MMDiT().eval()
        self.conditioning_key = "crossattn"
        t = torch.arange(1, 1001, dtype=torch.float64) / 1000
        self.register_buffer("sigmas", (shift * t / (1 + (shift - 1) * t)).to(torch.get_default_dtype()))

    def apply_model(self, x, sigma, c_crossattn=None, y=None):
        out = self.diffusion_model(x, sigma * 1000, context=c_crossattn, y=y)
        return x - out * sigma[:, None, None, None]


class SD3Denoiser(external.DiscreteSchedule):
    def __init__(self, inner_model, sigmas):
        super().__init__(sigmas, quantize=False)
        self.inner_model = inner_model

    def forward(self, input, sigma, **kwargs):
        return self.inner_model.apply_model(input, sigma, **kwargs)


class SD3Model(nn.Module):
    is_sd3 = True
    is_sdxl = is_sd1 = is_sd2 = False
    cond_stage_key = "txt"
    parameterization = "eps"

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.model = BaseModel()

    def apply_model(self, x, t, cond):
        return self.model.apply_model(x, t, c_crossattn=cond["crossattn"], y=cond["vector"])

    def create_denoiser(self):
        return SD3Denoiser(self, self.model.sigmas)
