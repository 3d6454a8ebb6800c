"""Which self-attention layers SEG blurs, on UNets with the LDM layout.

LDM-layout UNets (SD1.x/2.x, SDXL; also Forge's UNet, which keeps the same module names) hold their
transformers under ``input_blocks.I``, ``middle_block.1`` and ``output_blocks.I``; every self-attention
is ``<block>.<j>.transformer_blocks.K.attn1``. Everything here works on module *names*, so it serves a
``torch.nn.Module`` and a bare list of names alike.

Spec grammar (compatible with sd-perturbed-attention's ``unet_block_list``):

* presets ``mid`` (default), ``down``, ``up``, ``all``;
* or a comma-separated list of items ``d0``, ``d0-d3`` / ``d0-3``, ``m0``, ``u0.4``, ``d2.2-9``.
  ``d``/``m``/``u`` = input/middle/output; the number counts only blocks that contain self-attention
  (so SD1.5 has d0-d5, m0, u0-u8 and SDXL d0-d3, m0, u0-u5); ``.K`` (or ``.K-L``) picks transformers
  inside the block, all of them when omitted. Presets may also appear as list items.

Case and spaces are ignored. An empty spec means the default, ``mid``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Optional, Union

DEFAULT_SPEC = "mid"
PRESETS = ("mid", "down", "up", "all", "joint", "single")  # the last two name transformer (DiT) blocks

SECTIONS = ("input", "middle", "output")
_PREFIX_OF_SECTION = {"input": "d", "middle": "m", "output": "u"}
_SECTION_OF_PREFIX = {v: k for k, v in _PREFIX_OF_SECTION.items()}
_SECTIONS_OF_PRESET = {"mid": ("middle",), "down": ("input",), "up": ("output",), "all": SECTIONS,
                       "joint": (), "single": ()}
_SECTION_OF_CONTAINER = {"input_blocks": "input", "middle_block": "middle", "output_blocks": "output"}

# A self-attention module name, anywhere under an optional prefix such as "diffusion_model.".
_ATTN1_NAME = re.compile(
    r"(?:^|\.)(input_blocks|middle_block|output_blocks)\.(\d+)\.(?:.+\.)?transformer_blocks\.(\d+)\.attn1$")

# The LDM layout's resolution changes: a Downsample (``.op``) opens an input block, an Upsample (``.conv``) closes
# an output block. They give each attention layer its level: 0 at the latent's full size, +1 per halving.
_DOWNSAMPLE = re.compile(r"(?:^|\.)input_blocks\.(\d+)\.\d+\.op$")
_UPSAMPLE = re.compile(r"(?:^|\.)output_blocks\.(\d+)\.\d+\.conv$")

# One list item: d0 | d0-3 | d0-d3 | u0.4 | d2.2-9 (the back-reference lets "d0-d3" repeat its letter).
# d/m/u: UNet blocks; j/s: a DiT's joint (double-stream) and single-stream blocks (lib_seg/dit.py).
_ITEM = re.compile(r"^([dmujs])(\d+)(?:-\1?(\d+))?(?:\.(\d+)(?:-(\d+))?)?$")

# How errors name the field: its label and API name, as lib_seg.params does for every parameter.
FIELD = "SEG layers (layers)"
GRAMMAR_HINT = ("mid, down, up, all, or a comma list of blocks such as d0-3, m0, u0.4, d2.2-9; on transformer "
                "models (Flux, Chroma, SD3) mid, all, joint, single, or blocks such as j7-9, s0-37")


@dataclass(frozen=True)
class SelfAttention:
    """One self-attention module and the labels hosts key patches by."""
    name: str               # qualified module name, e.g. "middle_block.1.transformer_blocks.0.attn1"
    label: str              # "d2" | "m0" | "u4": counts only blocks with self-attention
    section: str            # "input" | "middle" | "output"
    block_index: int        # index in input_blocks / output_blocks; 0 for the middle block
    transformer_index: int  # K in transformer_blocks.K
    level: int = 0          # resolution level: 0 = the latent's full size, 1 = half of it, ...

    @property
    def patch_key(self):
        """(section, block_index, transformer_index), the key Forge/ComfyUI attention patches use."""
        return self.section, self.block_index, self.transformer_index


@dataclass(frozen=True)
class _Item:
    """One parsed list item: a preset, or a block range with an optional transformer range."""
    preset: Optional[str] = None
    prefix: str = ""
    first: int = 0
    last: int = 0
    k_first: Optional[int] = None
    k_last: Optional[int] = None

    def text(self):
        if self.preset:
            return self.preset
        blocks = f"{self.prefix}{self.first}" + (f"-{self.last}" if self.last != self.first else "")
        if self.k_first is None:
            return blocks
        return blocks + f".{self.k_first}" + (f"-{self.k_last}" if self.k_last != self.k_first else "")


def _parse_items(spec: str) -> list[_Item]:
    if not isinstance(spec, str):
        raise ValueError(f"{FIELD}: expected text, got {type(spec).__name__}; accepted: {GRAMMAR_HINT}")
    compact = re.sub(r"\s+", "", spec).lower()
    if not compact:
        compact = DEFAULT_SPEC
    items = []
    for raw in compact.split(","):
        if raw in PRESETS:
            items.append(_Item(preset=raw))
            continue
        match = _ITEM.match(raw)
        if match is None:
            where = "" if raw == compact else f" in {spec!r}"
            shown = repr(raw) if raw else "an empty item"
            raise ValueError(f"{FIELD}: can't read {shown}{where}; accepted: {GRAMMAR_HINT}")
        prefix, first, last, k_first, k_last = match.groups()
        first = int(first)
        last = first if last is None else int(last)
        if last < first:
            raise ValueError(f"{FIELD}: range {raw!r} runs backwards; write the smaller index first")
        if k_first is not None:
            k_first = int(k_first)
            k_last = k_first if k_last is None else int(k_last)
            if k_last < k_first:
                raise ValueError(f"{FIELD}: transformer range in {raw!r} runs backwards; write the smaller index first")
        items.append(_Item(prefix=prefix, first=first, last=last, k_first=k_first, k_last=k_last))
    return items


def parse_spec(spec: str) -> str:
    """Check the syntax of ``spec`` (not whether the blocks exist) and return its normal form:
    lower case, no spaces, ``d0-d3`` written ``d0-3``, items joined by ``", "``. Raises ValueError."""
    return ", ".join(item.text() for item in _parse_items(spec))


def _names_of(unet_or_names) -> list[tuple[str, object]]:
    """(name, module or None) pairs; a module lets us skip blocks whose self-attention is disabled."""
    if hasattr(unet_or_names, "named_modules"):
        return list(unet_or_names.named_modules())
    if isinstance(unet_or_names, (str, bytes)):
        raise TypeError("expected a UNet module or an iterable of module names, got a single string")
    return [(name, None) for name in unet_or_names]


def _self_attention_disabled(model, name: str) -> bool:
    """ldm's BasicTransformerBlock(disable_self_attn=True) turns attn1 into a second cross-attention."""
    parent_name = name.rsplit(".", 1)[0]
    try:
        parent = model.get_submodule(parent_name)
    except AttributeError:
        return False
    return bool(getattr(parent, "disable_self_attn", False))


def self_attention_layers(unet_or_names: Union[Iterable[str], object]) -> list[SelfAttention]:
    """Every self-attention layer, in model order (input, middle, output; by block, then K), no duplicates."""
    model = unet_or_names if hasattr(unet_or_names, "named_modules") else None
    found = {}
    named = _names_of(unet_or_names)
    downsamples = sorted({int(m.group(1)) for name, _ in named for m in [_DOWNSAMPLE.search(name)] if m})
    upsamples = sorted({int(m.group(1)) for name, _ in named for m in [_UPSAMPLE.search(name)] if m})

    def level(section, block):
        if section == "input":
            return sum(d <= block for d in downsamples)
        if section == "middle":
            return len(downsamples)
        return len(downsamples) - sum(u < block for u in upsamples)

    for name, _module in named:
        match = _ATTN1_NAME.search(name)
        if match is None:
            continue
        if model is not None and _self_attention_disabled(model, name):
            continue
        container, block, k = match.groups()
        section = _SECTION_OF_CONTAINER[container]
        key = (SECTIONS.index(section), int(block), int(k))
        found.setdefault(key, (name, section))

    layers = []
    counters = {section: -1 for section in SECTIONS}
    previous_block = {}
    for (_, block, k), (name, section) in sorted(found.items()):
        # d/m/u numbers count blocks that have self-attention, in order, whatever their raw index.
        if previous_block.get(section) != block:
            counters[section] += 1
            previous_block[section] = block
        label = f"{_PREFIX_OF_SECTION[section]}{counters[section]}"
        block_index = 0 if section == "middle" else block
        layers.append(SelfAttention(name, label, section, block_index, k, level(section, block)))
    return layers


def _blocks_by_label(layers: list[SelfAttention]) -> dict[str, list[SelfAttention]]:
    blocks: dict[str, list[SelfAttention]] = {}
    for layer in layers:
        blocks.setdefault(layer.label, []).append(layer)
    return blocks


def _describe_layers(layers: list[SelfAttention]) -> str:
    parts = []
    for section in SECTIONS:
        count = len({layer.label for layer in layers if layer.section == section})
        prefix = _PREFIX_OF_SECTION[section]
        if count == 1:
            parts.append(f"{prefix}0")
        elif count > 1:
            parts.append(f"{prefix}0-{prefix}{count - 1}")
    return ", ".join(parts) if parts else "no self-attention layers"


def describe(unet_or_names) -> str:
    """The blocks this model has, in spec syntax, e.g. "d0-d5, m0, u0-u8" for SD1.5."""
    return _describe_layers(self_attention_layers(unet_or_names))


def select_layers(unet_or_names, spec: str = DEFAULT_SPEC, model_name: Optional[str] = None) -> list[SelfAttention]:
    """The self-attention layers ``spec`` picks, in model order without duplicates.

    Raises ValueError for bad syntax, for blocks or transformer indices this model lacks (the message
    says what the model has), and when the selection is empty."""
    items = _parse_items(spec)
    layers = self_attention_layers(unet_or_names)
    blocks = _blocks_by_label(layers)
    owner = f"{model_name} has" if model_name else "this model has"
    available = f"{owner} {_describe_layers(layers)}"

    chosen = set()
    for item in items:
        if item.preset:
            chosen.update(layer.name for layer in layers if layer.section in _SECTIONS_OF_PRESET[item.preset])
            continue
        for number in range(item.first, item.last + 1):
            label = f"{item.prefix}{number}"
            block = blocks.get(label)
            if block is None:
                raise ValueError(f"{FIELD}: got {label!r}, not in this model; accepted: {available}")
            if item.k_first is None:
                chosen.update(layer.name for layer in block)
                continue
            by_k = {layer.transformer_index: layer for layer in block}
            for k in range(item.k_first, item.k_last + 1):
                if k not in by_k:
                    ks = sorted(by_k)
                    has = f"{label}.{ks[0]}" + (f"-{ks[-1]}" if len(ks) > 1 else "")
                    raise ValueError(f"{FIELD}: got '{label}.{k}', not in this model; accepted: its block {label} "
                                     f"has transformers {has} ({available})")
                chosen.add(by_k[k].name)

    selected = [layer for layer in layers if layer.name in chosen]
    if not selected:
        raise ValueError(f"{FIELD}: got {parse_spec(spec)!r}, which selects no self-attention layer; "
                         f"accepted: {available}")
    return selected


def select_self_attention(unet_or_names, spec: str = DEFAULT_SPEC, model_name: Optional[str] = None) -> list[str]:
    """Qualified names of the selected self-attention modules, in model order."""
    return [layer.name for layer in select_layers(unet_or_names, spec, model_name)]
