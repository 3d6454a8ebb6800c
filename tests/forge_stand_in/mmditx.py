"""Follows Forge dfdcbab6 backend/nn/mmditx.py (MMDiTX: SD3 / SD3.5), restated in our words at a tiny size.
What SEG's patches depend on is kept as the host has it:

* ``block_mixing(context, x, context_block, x_block, c)`` builds the joint sequence context first, then image,
  and calls the module global ``attention(q, k, v, heads)`` with q and k of shape (rows, tokens, heads * dim)
  after the per-head RMS QK-norm (SD3.5) and v of shape (rows, tokens, heads, dim); SD3.5 Medium's first blocks
  run a second self-attention over the image tokens alone (``x_block_self_attn``) through the same global;
* the last block's context side is ``pre_only`` and returns context None;
* ``JointBlock.forward`` is called as ``block(context, x, c=c_mod)``; positions are a learned table added to
  the patch embeddings (no RoPE); the latent is cut into 2 x 2 patches, row-major.
"""
import math

import torch
from torch import nn


def attention(q, k, v, heads, mask=None):
    b, _, dim_head = q.shape
    dim_head //= heads
    q, k, v = (t.view(b, -1, heads, dim_head).transpose(1, 2) for t in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(b, -1, heads * dim_head)


def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class RMSNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class SelfAttention(nn.Module):
    def __init__(self, dim, num_heads, pre_only=False):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.ln_q, self.ln_k = RMSNorm(self.head_dim), RMSNorm(self.head_dim)
        self.pre_only = pre_only
        if not pre_only:
            self.proj = nn.Linear(dim, dim)

    def pre_attention(self, x):
        q, k, v = self.qkv(x).reshape(x.shape[0], x.shape[1], 3, -1, self.head_dim).movedim(2, 0)
        return self.ln_q(q).reshape(q.shape[0], q.shape[1], -1), self.ln_k(k).reshape(q.shape[0], q.shape[1], -1), v


class DismantledBlock(nn.Module):
    def __init__(self, hidden_size, num_heads, pre_only=False, x_block_self_attn=False):
        super().__init__()
        self.pre_only, self.x_block_self_attn = pre_only, x_block_self_attn
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(hidden_size, num_heads, pre_only=pre_only)
        if x_block_self_attn:
            self.attn2 = SelfAttention(hidden_size, num_heads)
        if not pre_only:
            self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
            self.mlp = nn.Sequential(nn.Linear(hidden_size, 2 * hidden_size), nn.GELU(approximate="tanh"),
                                     nn.Linear(2 * hidden_size, hidden_size))
        n_mods = 2 if pre_only else (9 if x_block_self_attn else 6)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, n_mods * hidden_size))

    def pre_attention(self, x, c):
        if self.pre_only:
            shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
            return self.attn.pre_attention(modulate(self.norm1(x), shift, scale)), None
        mods = self.adaLN_modulation(c).chunk(9 if self.x_block_self_attn else 6, dim=1)
        normed = self.norm1(x)
        qkv = self.attn.pre_attention(modulate(normed, mods[0], mods[1]))
        if self.x_block_self_attn:
            qkv2 = self.attn2.pre_attention(modulate(normed, mods[6], mods[7]))
            return qkv, qkv2, (x, mods[2], mods[3], mods[4], mods[5], mods[8])
        return qkv, (x, mods[2], mods[3], mods[4], mods[5])

    def post_attention(self, attn, x, gate_msa, shift_mlp, scale_mlp, gate_mlp, attn2=None, gate_msa2=None):
        x = x + gate_msa.unsqueeze(1) * self.attn.proj(attn)
        if attn2 is not None:
            x = x + gate_msa2.unsqueeze(1) * self.attn2.proj(attn2)
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


def block_mixing(context, x, context_block, x_block, c):
    context_qkv, context_intermediates = context_block.pre_attention(context, c)
    if x_block.x_block_self_attn:
        x_qkv, x_qkv2, x_intermediates = x_block.pre_attention(x, c)
    else:
        x_qkv, x_intermediates = x_block.pre_attention(x, c)
    q, k, v = (torch.cat((context_qkv[i], x_qkv[i]), dim=1) for i in range(3))
    attn = attention(q, k, v, x_block.attn.num_heads)
    n_context = context_qkv[0].shape[1]
    context_attn, x_attn = attn[:, :n_context], attn[:, n_context:]
    context = None if context_block.pre_only else context_block.post_attention(context_attn, *context_intermediates)
    if x_block.x_block_self_attn:
        attn2 = attention(*x_qkv2, x_block.attn2.num_heads)
        x_in, gate_msa, shift_mlp, scale_mlp, gate_mlp, gate_msa2 = x_intermediates
        return context, x_block.post_attention(x_attn, x_in, gate_msa, shift_mlp, scale_mlp, gate_mlp, attn2, gate_msa2)
    return context, x_block.post_attention(x_attn, *x_intermediates)


class JointBlock(nn.Module):
    def __init__(self, hidden_size, num_heads, pre_only, x_block_self_attn=False):
        super().__init__()
        self.context_block = DismantledBlock(hidden_size, num_heads, pre_only=pre_only)
        self.x_block = DismantledBlock(hidden_size, num_heads, x_block_self_attn=x_block_self_attn)

    def forward(self, *args, **kwargs):
        return block_mixing(*args, context_block=self.context_block, x_block=self.x_block, **kwargs)


def timestep_embedding(t, dim, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=t.dtype) / half)
    args = t[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class MMDiTX(nn.Module):
    def __init__(self, in_channels=4, depth=4, hidden_size=32, num_heads=2, context_dim=32, adm_dim=8,
                 x_block_self_attn_layers=(0, 1), max_side=32):
        super().__init__()
        self.patch_size, self.out_channels = 2, in_channels
        self.x_embedder = nn.Conv2d(in_channels, hidden_size, kernel_size=2, stride=2)
        self.pos_embed = nn.Parameter(torch.randn(1, max_side * max_side, hidden_size) * 0.02)
        self.max_side = max_side
        self.t_embedder = nn.Sequential(nn.Linear(64, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))
        self.y_embedder = nn.Linear(adm_dim, hidden_size)
        self.context_embedder = nn.Linear(context_dim, hidden_size)
        self.joint_blocks = nn.ModuleList([
            JointBlock(hidden_size, num_heads, pre_only=i == depth - 1, x_block_self_attn=i in x_block_self_attn_layers)
            for i in range(depth)])
        self.final_norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.final_linear = nn.Linear(hidden_size, 4 * in_channels)

    def cropped_pos_embed(self, hw):
        h, w = (hw[0] + 1) // 2, (hw[1] + 1) // 2
        table = self.pos_embed.reshape(1, self.max_side, self.max_side, -1)
        return table[:, :h, :w].reshape(1, h * w, -1)

    def forward(self, x, t, y=None, context=None, control=None, transformer_options={}, **kwargs):
        hw = x.shape[-2:]
        x = torch.nn.functional.pad(x, (0, hw[1] % 2, 0, hw[0] % 2))
        x = self.x_embedder(x).flatten(2).transpose(1, 2) + self.cropped_pos_embed(hw)
        c = self.t_embedder(timestep_embedding(t, 64).to(x.dtype)) + self.y_embedder(y)
        context = self.context_embedder(context)
        for block in self.joint_blocks:
            context, x = block(context, x, c=c)
        x = self.final_linear(self.final_norm(x))
        h, w = (hw[0] + 1) // 2, (hw[1] + 1) // 2
        x = x.reshape(x.shape[0], h, w, 2, 2, self.out_channels)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], self.out_channels, 2 * h, 2 * w)[:, :, :hw[0], :hw[1]]


class SD3KModel(nn.Module):
    """Forge's KModel for SD3 (flow prediction with the discrete-flow timestep sigma * 1000): the input is not
    scaled, ``y`` is the pooled vector, denoised = x - sigma * prediction."""

    def __init__(self, seed=0, **config):
        super().__init__()
        torch.manual_seed(seed)
        self.diffusion_model = MMDiTX(**config).eval()
        from .flux import FlowSchedule
        self.schedule = FlowSchedule()

    def apply_model(self, x, t, c_crossattn=None, y=None, transformer_options={}, **kwargs):
        calls = getattr(self.diffusion_model, "_forge_calls", None)
        if calls is not None:
            calls.append(int(x.shape[0]))
        out = self.diffusion_model(x, t * 1000, y=y, context=c_crossattn, transformer_options=transformer_options)
        return x - out * t[:, None, None, None]

    def memory_required(self, input_shape):
        return 0
