"""Follows Forge dfdcbab6 backend/nn/chroma.py (IntegratedChromaTransformer2DModel), restated in our words at a
tiny size. As in the host: the module imports ``attention`` from flux.py (so the blocks' attention is flux's,
whose globals are flux's), the blocks take precomputed modulations instead of a vector (``block(img=, txt=,
mod=[(img_mod1, img_mod2), (txt_mod1, txt_mod2)], pe=)`` and ``block(x, mod=, pe=)``, each modulation a
shift/scale/gate dataclass with the batch dimension), the model has no pooled vector and no guidance input,
and its modulations come from an approximator fed with the timestep."""
from dataclasses import dataclass

import torch
from einops import rearrange, repeat
from torch import nn

from .flux import EmbedND, MLPEmbedder, SelfAttention, attention, timestep_embedding


@dataclass
class ModulationOut:
    shift: torch.Tensor
    scale: torch.Tensor
    gate: torch.Tensor


def _mlp(hidden_size):
    return nn.Sequential(nn.Linear(hidden_size, 2 * hidden_size), nn.GELU(approximate="tanh"),
                         nn.Linear(2 * hidden_size, hidden_size))


class DoubleStreamBlock(nn.Module):
    def __init__(self, hidden_size, num_heads):
        super().__init__()
        self.num_heads = num_heads
        for side in ("img", "txt"):
            setattr(self, f"{side}_norm1", nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6))
            setattr(self, f"{side}_attn", SelfAttention(hidden_size, num_heads))
            setattr(self, f"{side}_norm2", nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6))
            setattr(self, f"{side}_mlp", _mlp(hidden_size))

    def _qkv(self, attn, x):
        b, length, _ = x.shape
        q, k, v = attn.qkv(x).view(b, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k = attn.norm(q, k, v)
        return q, k, v

    def forward(self, img, txt, mod, pe):
        (img_mod1, img_mod2), (txt_mod1, txt_mod2) = mod
        img_q, img_k, img_v = self._qkv(self.img_attn, (1 + img_mod1.scale) * self.img_norm1(img) + img_mod1.shift)
        txt_q, txt_k, txt_v = self._qkv(self.txt_attn, (1 + txt_mod1.scale) * self.txt_norm1(txt) + txt_mod1.shift)
        q, k, v = (torch.cat(pair, dim=2) for pair in ((txt_q, img_q), (txt_k, img_k), (txt_v, img_v)))
        attn = attention(q, k, v, pe=pe)
        txt_attn, img_attn = attn[:, :txt.shape[1]], attn[:, txt.shape[1]:]
        img = img + img_mod1.gate * self.img_attn.proj(img_attn)
        img = img + img_mod2.gate * self.img_mlp((1 + img_mod2.scale) * self.img_norm2(img) + img_mod2.shift)
        txt = txt + txt_mod1.gate * self.txt_attn.proj(txt_attn)
        txt = txt + txt_mod2.gate * self.txt_mlp((1 + txt_mod2.scale) * self.txt_norm2(txt) + txt_mod2.shift)
        return img, txt


class SingleStreamBlock(nn.Module):
    def __init__(self, hidden_size, num_heads):
        super().__init__()
        from .flux import QKNorm
        self.hidden_size, self.num_heads = hidden_size, num_heads
        self.linear1 = nn.Linear(hidden_size, hidden_size * 3 + 2 * hidden_size)
        self.linear2 = nn.Linear(hidden_size + 2 * hidden_size, hidden_size)
        self.norm = QKNorm(hidden_size // num_heads)
        self.pre_norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp_act = nn.GELU(approximate="tanh")

    def forward(self, x, mod, pe):
        qkv, mlp = torch.split(self.linear1((1 + mod.scale) * self.pre_norm(x) + mod.shift),
                               [3 * self.hidden_size, 2 * self.hidden_size], dim=-1)
        q, k, v = qkv.view(qkv.size(0), qkv.size(1), 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k = self.norm(q, k, v)
        attn = attention(q, k, v, pe=pe)
        return x + mod.gate * self.linear2(torch.cat((attn, self.mlp_act(mlp)), dim=2))


class IntegratedChromaTransformer2DModel(nn.Module):
    def __init__(self, in_channels=4, context_in_dim=32, hidden_size=32, num_heads=2, depth=2,
                 depth_single_blocks=3, axes_dim=(4, 6, 6), theta=10000):
        super().__init__()
        self.in_channels = in_channels * 4
        self.pe_embedder = EmbedND(hidden_size // num_heads, theta, list(axes_dim))
        self.img_in = nn.Linear(self.in_channels, hidden_size)
        self.txt_in = nn.Linear(context_in_dim, hidden_size)
        n_mods = depth * 12 + depth_single_blocks * 3 + 2
        self.approximator = MLPEmbedder(256, n_mods * hidden_size)  # stands in for the distilled approximator
        self.n_mods, self.hidden_size = n_mods, hidden_size
        self.double_blocks = nn.ModuleList([DoubleStreamBlock(hidden_size, num_heads) for _ in range(depth)])
        self.single_blocks = nn.ModuleList([SingleStreamBlock(hidden_size, num_heads) for _ in range(depth_single_blocks)])
        self.final_norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.final_linear = nn.Linear(hidden_size, self.in_channels)

    def _modulations(self, timesteps):
        mods = self.approximator(timestep_embedding(timesteps, 256)).view(-1, self.n_mods, 1, self.hidden_size)
        taken = iter(range(self.n_mods))

        def one():
            return ModulationOut(*(mods[:, next(taken)] for _ in range(3)))
        doubles = [[(one(), one()), (one(), one())] for _ in self.double_blocks]
        singles = [one() for _ in self.single_blocks]
        return doubles, singles, mods[:, -2:]

    def forward(self, x, timestep, context, **kwargs):
        bs, _, h, w = x.shape
        x = torch.nn.functional.pad(x, (0, (2 - w % 2) % 2, 0, (2 - h % 2) % 2), mode="circular")
        img = self.img_in(rearrange(x, "b c (h ph) (w pw) -> b (h w) (c ph pw)", ph=2, pw=2))
        h_len, w_len = (h + 1) // 2, (w + 1) // 2
        img_ids = torch.zeros((h_len, w_len, 3))
        img_ids[..., 1] += torch.arange(h_len, dtype=img_ids.dtype)[:, None]
        img_ids[..., 2] += torch.arange(w_len, dtype=img_ids.dtype)[None, :]
        ids = torch.cat((torch.zeros((bs, context.shape[1], 3)), repeat(img_ids, "h w c -> b (h w) c", b=bs)), dim=1)
        pe = self.pe_embedder(ids)
        doubles, singles, final = self._modulations(timestep)
        txt = self.txt_in(context)
        for block, mod in zip(self.double_blocks, doubles):
            img, txt = block(img=img, txt=txt, mod=mod, pe=pe)
        img = torch.cat((txt, img), 1)
        for block, mod in zip(self.single_blocks, singles):
            img = block(img, mod=mod, pe=pe)
        img = img[:, txt.shape[1]:]
        out = self.final_linear((1 + final[:, 1]) * self.final_norm(img) + final[:, 0])
        return rearrange(out, "b (h w) (c ph pw) -> b c (h ph) (w pw)", h=h_len, w=w_len, ph=2, pw=2)[:, :, :h, :w]


class ChromaKModel(nn.Module):
    """Forge's KModel for Chroma: flow prediction, only the text conditioning."""

    def __init__(self, seed=0, **config):
        super().__init__()
        torch.manual_seed(seed)
        self.diffusion_model = IntegratedChromaTransformer2DModel(**config).eval()
        from .flux import FlowSchedule
        self.schedule = FlowSchedule()

    def apply_model(self, x, t, c_crossattn=None, transformer_options={}, **kwargs):
        calls = getattr(self.diffusion_model, "_forge_calls", None)
        if calls is not None:
            calls.append(int(x.shape[0]))
        return x - self.diffusion_model(x, t, context=c_crossattn, transformer_options=transformer_options) \
            * t[:, None, None, None]

    def memory_required(self, input_shape):
        return 0
