"""Follows Forge dfdcbab6 backend/nn/flux.py (IntegratedFluxTransformer2DModel) and backend/attention.py
(attention_pytorch), restated in our words at a tiny size: what SEG's patches depend on is kept exactly as
the host has it:

* the module function ``attention(q, k, v, pe)`` applies RoPE to q and k, then calls the module global
  ``attention_function(q, k, v, heads, skip_reshape=True)`` on (rows, heads, tokens, head_dim) tensors, which
  returns (rows, tokens, heads * head_dim);
* a double-stream block computes image and text q/k/v (QK-norm per head), concatenates text then image along
  the tokens, attends once, splits back; it is called as ``block(img=, txt=, vec=, pe=)`` and returns (img, txt);
* a single-stream block runs on one (text, image) sequence, called as ``block(x, vec=, pe=)``;
* the model pads the latent to whole 2 x 2 patches (circular), image tokens row-major, RoPE ids (0, row, col),
  text ids zero; the prediction is cropped back to the latent size.
"""
import math

import torch
from einops import rearrange, repeat
from torch import nn


def attention_function(q, k, v, heads, mask=None, skip_reshape=False):
    if not skip_reshape:
        b, _, inner = q.shape
        q, k, v = (t.view(b, -1, heads, inner // heads).transpose(1, 2) for t in (q, k, v))
    b, _, _, dim = q.shape
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(b, -1, heads * dim)


def attention(q, k, v, pe):
    q, k = apply_rope(q, k, pe)
    return attention_function(q, k, v, q.shape[1], skip_reshape=True)


def rope(pos, dim, theta):
    scale = torch.arange(0, dim, 2, dtype=torch.float64) / dim
    out = pos.unsqueeze(-1).to(torch.float64) * (1.0 / theta ** scale).unsqueeze(0)
    out = torch.stack([torch.cos(out), -torch.sin(out), torch.sin(out), torch.cos(out)], dim=-1)
    return out.view(*out.shape[:-1], 2, 2).to(torch.get_default_dtype())


def apply_rope(xq, xk, freqs_cis):
    xq_ = xq.reshape(*xq.shape[:-1], -1, 1, 2)
    xk_ = xk.reshape(*xk.shape[:-1], -1, 1, 2)
    xq_out = freqs_cis[..., 0] * xq_[..., 0] + freqs_cis[..., 1] * xq_[..., 1]
    xk_out = freqs_cis[..., 0] * xk_[..., 0] + freqs_cis[..., 1] * xk_[..., 1]
    return xq_out.reshape(*xq.shape).type_as(xq), xk_out.reshape(*xk.shape).type_as(xk)


def timestep_embedding(t, dim, max_period=10000, time_factor=1000.0):
    t = time_factor * t
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=t.dtype) / half)
    args = t[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class EmbedND(nn.Module):
    def __init__(self, dim, theta, axes_dim):
        super().__init__()
        self.theta, self.axes_dim = theta, axes_dim

    def forward(self, ids):
        emb = torch.cat([rope(ids[..., i], self.axes_dim[i], self.theta) for i in range(ids.shape[-1])], dim=-3)
        return emb.unsqueeze(1)


class MLPEmbedder(nn.Module):
    def __init__(self, in_dim, hidden_dim):
        super().__init__()
        self.in_layer, self.silu, self.out_layer = nn.Linear(in_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim)

    def forward(self, x):
        return self.out_layer(self.silu(self.in_layer(x)))


class RMSNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(torch.mean(x ** 2, dim=-1, keepdim=True) + 1e-6) * self.scale


class QKNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.query_norm, self.key_norm = RMSNorm(dim), RMSNorm(dim)

    def forward(self, q, k, v):
        return self.query_norm(q).to(v), self.key_norm(k).to(v)


class Modulation(nn.Module):
    def __init__(self, dim, double):
        super().__init__()
        self.multiplier = 6 if double else 3
        self.lin = nn.Linear(dim, self.multiplier * dim)

    def forward(self, vec):
        return self.lin(nn.functional.silu(vec))[:, None, :].chunk(self.multiplier, dim=-1)


class SelfAttention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.norm = QKNorm(dim // num_heads)
        self.proj = nn.Linear(dim, dim)


def _qkv(attn, x):
    b, length, _ = x.shape
    q, k, v = attn.qkv(x).view(b, length, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = attn.norm(q, k, v)
    return q, k, v


class DoubleStreamBlock(nn.Module):
    def __init__(self, hidden_size, num_heads, mlp_ratio=2.0):
        super().__init__()
        mlp = int(hidden_size * mlp_ratio)
        self.num_heads = num_heads
        for side in ("img", "txt"):
            setattr(self, f"{side}_mod", Modulation(hidden_size, double=True))
            setattr(self, f"{side}_norm1", nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6))
            setattr(self, f"{side}_attn", SelfAttention(hidden_size, num_heads))
            setattr(self, f"{side}_norm2", nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6))
            setattr(self, f"{side}_mlp", nn.Sequential(nn.Linear(hidden_size, mlp), nn.GELU(approximate="tanh"),
                                                      nn.Linear(mlp, hidden_size)))

    def forward(self, img, txt, vec, pe):
        img_mod1, img_mod2 = self.img_mod(vec)[:3], self.img_mod(vec)[3:]
        txt_mod1, txt_mod2 = self.txt_mod(vec)[:3], self.txt_mod(vec)[3:]
        img_q, img_k, img_v = _qkv(self.img_attn, (1 + img_mod1[1]) * self.img_norm1(img) + img_mod1[0])
        txt_q, txt_k, txt_v = _qkv(self.txt_attn, (1 + txt_mod1[1]) * self.txt_norm1(txt) + txt_mod1[0])
        q, k, v = (torch.cat(pair, dim=2) for pair in ((txt_q, img_q), (txt_k, img_k), (txt_v, img_v)))
        attn = attention(q, k, v, pe=pe)
        txt_attn, img_attn = attn[:, :txt.shape[1]], attn[:, txt.shape[1]:]
        img = img + img_mod1[2] * self.img_attn.proj(img_attn)
        img = img + img_mod2[2] * self.img_mlp((1 + img_mod2[1]) * self.img_norm2(img) + img_mod2[0])
        txt = txt + txt_mod1[2] * self.txt_attn.proj(txt_attn)
        txt = txt + txt_mod2[2] * self.txt_mlp((1 + txt_mod2[1]) * self.txt_norm2(txt) + txt_mod2[0])
        return img, txt


class SingleStreamBlock(nn.Module):
    def __init__(self, hidden_size, num_heads, mlp_ratio=2.0):
        super().__init__()
        self.hidden_size, self.num_heads = hidden_size, num_heads
        self.mlp_hidden_dim = int(hidden_size * mlp_ratio)
        self.linear1 = nn.Linear(hidden_size, hidden_size * 3 + self.mlp_hidden_dim)
        self.linear2 = nn.Linear(hidden_size + self.mlp_hidden_dim, hidden_size)
        self.norm = QKNorm(hidden_size // num_heads)
        self.pre_norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp_act = nn.GELU(approximate="tanh")
        self.modulation = Modulation(hidden_size, double=False)

    def forward(self, x, vec, pe):
        shift, scale, gate = self.modulation(vec)
        qkv, mlp = torch.split(self.linear1((1 + scale) * self.pre_norm(x) + shift),
                               [3 * self.hidden_size, self.mlp_hidden_dim], dim=-1)
        q, k, v = qkv.view(qkv.size(0), qkv.size(1), 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k = self.norm(q, k, v)
        attn = attention(q, k, v, pe=pe)
        return x + gate * self.linear2(torch.cat((attn, self.mlp_act(mlp)), dim=2))


class LastLayer(nn.Module):
    def __init__(self, hidden_size, out_channels):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x, vec):
        shift, scale = self.adaLN_modulation(vec).chunk(2, dim=1)
        return self.linear((1 + scale[:, None, :]) * self.norm_final(x) + shift[:, None, :])


class IntegratedFluxTransformer2DModel(nn.Module):
    def __init__(self, in_channels=4, vec_in_dim=8, context_in_dim=32, hidden_size=32, num_heads=2, depth=3,
                 depth_single_blocks=4, axes_dim=(4, 6, 6), theta=10000, guidance_embed=True):
        super().__init__()
        self.in_channels = self.out_channels = in_channels * 4
        self.guidance_embed = guidance_embed
        self.pe_embedder = EmbedND(hidden_size // num_heads, theta, list(axes_dim))
        self.img_in = nn.Linear(self.in_channels, hidden_size)
        self.time_in = MLPEmbedder(256, hidden_size)
        self.vector_in = MLPEmbedder(vec_in_dim, hidden_size)
        self.guidance_in = MLPEmbedder(256, hidden_size) if guidance_embed else nn.Identity()
        self.txt_in = nn.Linear(context_in_dim, hidden_size)
        self.double_blocks = nn.ModuleList([DoubleStreamBlock(hidden_size, num_heads) for _ in range(depth)])
        self.single_blocks = nn.ModuleList([SingleStreamBlock(hidden_size, num_heads) for _ in range(depth_single_blocks)])
        self.final_layer = LastLayer(hidden_size, self.out_channels)

    def inner_forward(self, img, img_ids, txt, txt_ids, timesteps, y, guidance=None):
        img = self.img_in(img)
        vec = self.time_in(timestep_embedding(timesteps, 256).to(img.dtype))
        if self.guidance_embed:
            vec = vec + self.guidance_in(timestep_embedding(guidance, 256).to(img.dtype))
        vec = vec + self.vector_in(y)
        txt = self.txt_in(txt)
        pe = self.pe_embedder(torch.cat((txt_ids, img_ids), dim=1))
        for block in self.double_blocks:
            img, txt = block(img=img, txt=txt, vec=vec, pe=pe)
        img = torch.cat((txt, img), 1)
        for block in self.single_blocks:
            img = block(img, vec=vec, pe=pe)
        return self.final_layer(img[:, txt.shape[1]:, ...], vec)

    def forward(self, x, timestep, context, y, guidance=None, **kwargs):
        bs, _, h, w = x.shape
        x = torch.nn.functional.pad(x, (0, (2 - w % 2) % 2, 0, (2 - h % 2) % 2), mode="circular")
        img = rearrange(x, "b c (h ph) (w pw) -> b (h w) (c ph pw)", ph=2, pw=2)
        h_len, w_len = (h + 1) // 2, (w + 1) // 2
        img_ids = torch.zeros((h_len, w_len, 3))
        img_ids[..., 1] += torch.arange(h_len, dtype=img_ids.dtype)[:, None]
        img_ids[..., 2] += torch.arange(w_len, dtype=img_ids.dtype)[None, :]
        img_ids = repeat(img_ids, "h w c -> b (h w) c", b=bs)
        txt_ids = torch.zeros((bs, context.shape[1], 3))
        out = self.inner_forward(img, img_ids, context, txt_ids, timestep, y, guidance)
        return rearrange(out, "b (h w) (c ph pw) -> b c (h ph) (w pw)", h=h_len, w=w_len, ph=2, pw=2)[:, :, :h, :w]


class FluxKModel(nn.Module):
    """Forge's KModel for Flux (backend/modules/k_model.py with the flow predictor): the input is not scaled,
    the timestep is sigma, ``guidance`` and ``y`` come as per-row conds, denoised = x - sigma * prediction."""

    def __init__(self, seed=0, **config):
        super().__init__()
        torch.manual_seed(seed)
        self.diffusion_model = IntegratedFluxTransformer2DModel(**config).eval()
        self.schedule = FlowSchedule()

    def apply_model(self, x, t, c_crossattn=None, y=None, guidance=None, transformer_options={}, **kwargs):
        calls = getattr(self.diffusion_model, "_forge_calls", None)
        if calls is not None:
            calls.append(int(x.shape[0]))
        out = self.diffusion_model(x, t, context=c_crossattn, y=y, guidance=guidance,
                                   transformer_options=transformer_options)
        return x - out * t[:, None, None, None]

    def memory_required(self, input_shape):
        return 0


class FlowSchedule:
    """Rectified-flow sigmas from 1 to 0 (what the sampler needs of the schedule)."""

    def get_sigmas(self, steps):
        return torch.linspace(1.0, 0.0, steps + 1)
