"""SEG, PAG and skip-layer guidance inside transformer (DiT / MMDiT) blocks: Flux, Chroma, SD3.

What SEG means in a joint text+image attention (the design of issue 19):

* only the *image* tokens' queries of the guidance rows are blurred, over the image's patch grid (h x w patches,
  row-major, from the latent size and the patch size); text queries, any further tokens (e.g. reference-image
  tokens appended after the image) and every key and value stay as they are;
* the blur applies to the queries as they enter the dot product, after QK-norm and RoPE: the logits of a query
  are linear in it, so blurring those queries is blurring the logits over the image grid (the paper's
  equivalence); sigma = inf gives every image query the image's mean query;
* PAG ("identity"): the guidance rows' image tokens output their own value; text tokens attend as usual;
* skip (skip-layer guidance, SD3.5's SLG and ComfyUI's SkipLayerGuidanceDiT): a selected block returns its input
  in the guidance rows.

Blocks are named like UNet blocks in the layer grammar (lib_seg/layers.py): ``jN`` for joint / double-stream
blocks (``joint_blocks.N``, ``double_blocks.N``), ``sN`` for single-stream ones (``single_blocks.N``); presets
``mid`` (the middle joint block), ``all``, ``joint``, ``single``. Everything here is host-free.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from . import layers as _layers, oseg
from .attention import SHORTCUT_MIN_TOKENS
from .blur import blur_queries
from .session import has_rows

_BLOCK = re.compile(r"(?:^|\.)(double_blocks|joint_blocks|single_blocks)\.(\d+)$")
_KIND = {"double_blocks": "joint", "joint_blocks": "joint", "single_blocks": "single"}
_PREFIX = {"joint": "j", "single": "s"}
DIT_PRESETS = ("mid", "all", "joint", "single")
# Skip-layer guidance is defined on transformer blocks; on a UNet the mode is refused with this message.
SKIP_ON_UNET = ("SEG perturbation (mode): got 'skip', which skips transformer blocks of Flux, Chroma or SD3 models; "
                "accepted for this UNet model: blur, identity")


@dataclass(frozen=True)
class DiTBlock:
    name: str    # qualified module name, e.g. "double_blocks.7"
    label: str   # "j7" | "s12"
    kind: str    # "joint" | "single"
    index: int


def dit_blocks(model_or_names) -> list[DiTBlock]:
    """The transformer blocks of a DiT, joint ones first, each in index order."""
    names = [name for name, _ in model_or_names.named_modules()] if hasattr(model_or_names, "named_modules") \
        else list(model_or_names)
    found = {}
    for name in names:
        match = _BLOCK.search(name)
        if match:
            kind = _KIND[match.group(1)]
            found.setdefault((kind != "joint", int(match.group(2))), (name, kind))
    return [DiTBlock(name, f"{_PREFIX[kind]}{index}", kind, index) for (_, index), (name, kind) in sorted(found.items())]


def is_dit(model) -> bool:
    return bool(dit_blocks(model))


def describe(blocks: list[DiTBlock]) -> str:
    parts = []
    for kind in ("joint", "single"):
        count = sum(block.kind == kind for block in blocks)
        prefix = _PREFIX[kind]
        if count:
            parts.append(f"{prefix}0" if count == 1 else f"{prefix}0-{prefix}{count - 1}")
    return ", ".join(parts)


def select_blocks(model_or_names, spec: str = _layers.DEFAULT_SPEC, model_name=None) -> list[DiTBlock]:
    """The blocks ``spec`` picks, in model order. Raises ValueError naming what this model has."""
    items = _layers._parse_items(spec)
    blocks = dit_blocks(model_or_names)
    owner = f"{model_name} has" if model_name else "this model has"
    # name only the presets that select something here (SD3 has no single-stream blocks)
    presets = [p for p in DIT_PRESETS if p != "single" or any(b.kind == "single" for b in blocks)]
    available = f"{owner} {describe(blocks)} (presets {', '.join(presets)})"
    joint = [b for b in blocks if b.kind == "joint"] or blocks
    by_label = {b.label: b for b in blocks}
    chosen = set()
    for item in items:
        if item.preset == "mid":
            chosen.add(joint[len(joint) // 2].name)
        elif item.preset in ("all", "joint", "single"):
            chosen.update(b.name for b in blocks if item.preset in ("all", b.kind))
        elif item.preset:
            raise ValueError(f"{_layers.FIELD}: got {item.preset!r}, a UNet preset; accepted: {available}")
        else:
            if item.prefix not in ("j", "s"):
                raise ValueError(f"{_layers.FIELD}: got {item.text()!r}, not in this model; accepted: "
                                 f"{available}")
            if item.k_first is not None:
                raise ValueError(f"{_layers.FIELD}: got {item.text()!r}; a transformer block has no blocks inside "
                                 f"it; accepted: {available}")
            for number in range(item.first, item.last + 1):
                label = f"{item.prefix}{number}"
                if label not in by_label:
                    raise ValueError(f"{_layers.FIELD}: got {label!r}, not in this model; accepted: {available}")
                chosen.add(by_label[label].name)
    selected = [b for b in blocks if b.name in chosen]
    if not selected:
        raise ValueError(f"{_layers.FIELD}: got {_layers.parse_spec(spec)!r}, which selects no block; accepted: {available}")
    return selected


def patch_grid(latent_hw, patch_size=2):
    """(h, w) of the image tokens: the latent padded up to whole patches (Flux, Chroma and SD3 pad so)."""
    h, w = (int(v) for v in latent_hw)
    return -(-h // patch_size), -(-w // patch_size)


def perturbed_attention(attend, q, k, v, seg, image, grid, mode, sigma, shortcut=True):
    """Joint attention of one call with the guidance rows ``seg`` perturbed (a slice; OSEG: also a LongTensor,
    as it perturbs the uncond rows too).

    q, k, v: (rows, heads, tokens, head_dim) as they enter the dot product (after QK-norm and RoPE).
    attend(q, k, v) -> (rows, tokens, heads * head_dim): the host's attention. image: the slice of tokens that
    are the generated image, on ``grid`` (h, w) row-major. mode "blur": those rows' image queries blurred by
    sigma (inf: their mean); "identity": those rows' image tokens output their own value. Other modes and calls
    without guidance rows attend unchanged."""
    if not has_rows(seg) or mode not in ("blur", "identity", "orthogonal"):
        return attend(q, k, v)
    if mode == "orthogonal":  # the image queries' part orthogonal to the head's mean key, blurred
        perturbed = q.clone()
        perturbed[seg, :, image] = oseg.orthogonal_blur(q[seg][:, :, image], k[seg], grid, sigma)
        return attend(perturbed, k, v)
    rows, heads, _, dim = q.shape
    n_seg, n_image = seg.stop - seg.start, image.stop - image.start
    if n_image != grid[0] * grid[1]:
        raise ValueError(f"SEG: {n_image} image tokens for a {grid[0]}x{grid[1]} patch grid")
    if mode == "identity":
        out = attend(q, k, v)
        own = v[seg, :, image].transpose(1, 2).reshape(n_seg, n_image, heads * dim).to(out.dtype)
        perturbed = torch.cat([out[seg, :image.start], own, out[seg, image.stop:]], dim=1)
        return torch.cat([out[:seg.start], perturbed, out[seg.stop:]])
    if math.isinf(sigma) and shortcut and n_image >= SHORTCUT_MIN_TOKENS:
        mean = q[seg, :, image].mean(dim=2, keepdim=True, dtype=torch.promote_types(q.dtype, torch.float32))
        short = torch.cat([q[seg, :, :image.start], mean.to(q.dtype), q[seg, :, image.stop:]], dim=2)
        out_seg = attend(short, k[seg], v[seg])
        out_seg = torch.cat([out_seg[:, :image.start], out_seg[:, image.start:image.start + 1].expand(-1, n_image, -1),
                             out_seg[:, image.start + 1:]], dim=1)
        parts = [attend(q[:seg.start], k[:seg.start], v[:seg.start])] if seg.start > 0 else []
        parts.append(out_seg)
        if seg.stop < rows:
            parts.append(attend(q[seg.stop:], k[seg.stop:], v[seg.stop:]))
        return torch.cat(parts)
    # Each (row, head) is blurred on its own: fold heads into blur_queries' batch axis.
    queries = q[seg, :, image].reshape(n_seg * heads, n_image, dim)
    blurred = blur_queries(queries, grid, sigma).reshape(n_seg, heads, n_image, dim)
    q_seg = torch.cat([q[seg, :, :image.start], blurred, q[seg, :, image.stop:]], dim=2)
    return attend(torch.cat([q[:seg.start], q_seg, q[seg.stop:]]), k, v)


def guidance_inputs(inputs, seg):
    """Copies of the guidance rows of a block's inputs (a tensor or a tuple of tensors, None kept), taken before
    the block runs: a block may update its input in place (Forge Neo's Chroma blocks use ``addcmul_``), and
    skip-layer guidance must give those rows the input as it was."""
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(guidance_inputs(i, seg) for i in inputs)
    if inputs is None or seg is None or seg.stop <= seg.start:
        return None
    return inputs[seg].clone()


def skip_rows(outputs, kept, seg):
    """Skip-layer guidance: the block's outputs with the guidance rows replaced by ``kept``, those rows' inputs
    (``guidance_inputs``). outputs and kept: a tensor or matching tuples of tensors (e.g. (img, txt))."""
    if isinstance(outputs, (tuple, list)):
        return type(outputs)(skip_rows(o, i, seg) for o, i in zip(outputs, kept))
    if outputs is None or kept is None:
        return outputs
    return torch.cat([outputs[:seg.start], kept.to(outputs.dtype), outputs[seg.stop:]])
