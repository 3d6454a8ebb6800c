"""The shared prefix (issue 21): the SEG rows compute only the blocks their perturbation can change.

A SEG row is a copy of a cond row (same latent, timestep and text; ControlNet residuals copied too), so until
the first perturbed layer its activations are exactly the cond row's. Every block that runs before the block
holding that layer therefore runs on the other rows only, and the SEG rows' outputs (the hidden states, and in
a UNet the skip connections the output blocks read later) are copies of their cond rows' outputs. The batch
keeps its rows throughout, so nothing after the prefix notices.

``unet_prefix`` / ``dit_prefix`` say where the shared prefix ends for a layer selection; ``install`` wraps
those blocks' instance forward; ``shared_forward`` is the arithmetic of one wrapped call. Hosts only tell which
rows of the current call are copies of which (``Copies``), and only when the call holds both: a call that has
SEG rows without their cond rows (A1111's chunked evaluation, a separate pass) runs the full rows.
"""
import contextlib
import dataclasses
import logging
import re

import torch

log = logging.getLogger("seg")

ENABLED = True  # the benchmark and tests switch it off to compare with full rows (``disabled()``)

_UNET_BLOCK = re.compile(r"(?:^|\.)(input_blocks\.(\d+)|middle_block|output_blocks\.(\d+))$")


@contextlib.contextmanager
def disabled():
    global ENABLED
    previous, ENABLED = ENABLED, False
    try:
        yield
    finally:
        ENABLED = previous


@dataclasses.dataclass(frozen=True)
class Copies:
    """Rows of one model call that are copies of other rows of the same call: rows ``seg`` (a contiguous
    slice) copy rows ``source`` (a slice or LongTensor of the same length, outside ``seg``)."""
    seg: slice
    source: object


def _order(name):
    match = _UNET_BLOCK.search(name)
    if match.group(2) is not None:
        return 0, int(match.group(2))
    if match.group(3) is not None:
        return 2, int(match.group(3))
    return 1, 0


def unet_prefix(unet_or_names, selected):
    """Names of the LDM-layout UNet's top-level blocks (input_blocks.i, middle_block, output_blocks.j) that run
    before the block holding the first selected layer (lib_seg.layers.SelfAttention), in forward order."""
    names = [n for n, _ in unet_or_names.named_modules()] if hasattr(unet_or_names, "named_modules") else list(unet_or_names)
    blocks = sorted({name for name in names if _UNET_BLOCK.search(name)}, key=_order)
    firsts = []
    for layer in selected:
        container = next(b for b in blocks if layer.name.startswith(b + "."))
        firsts.append(_order(container))
    first = min(firsts)
    return [b for b in blocks if _order(b) < first]


def dit_prefix(blocks, selected):
    """Names of a DiT's blocks (lib_seg.dit.DiTBlock, in forward order: joint, then single) before the first
    selected one."""
    chosen = {b.name for b in selected}
    prefix = []
    for block in blocks:
        if block.name in chosen:
            break
        prefix.append(block.name)
    return prefix


def _rows(value, seg, n):
    """`value` without the rows `seg` (a slice) of every per-row tensor (first dimension n), containers walked.
    Two slices and a cat: no index tensors, so no host-to-device copies on a GPU."""
    if isinstance(value, torch.Tensor):
        if value.dim() == 0 or value.shape[0] != n:
            return value
        return value[:seg.start] if seg.stop >= n else torch.cat([value[:seg.start], value[seg.stop:]])
    if isinstance(value, (list, tuple)):
        return type(value)(_rows(v, seg, n) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: _rows(getattr(value, f.name), seg, n)
                                             for f in dataclasses.fields(value)})
    return value  # dicts (transformer_options) are the host's own state: passed as they are


def _assemble(out, copies, n):
    """Outputs computed on the rows outside copies.seg -> outputs of all n rows, the copies taken from their
    sources (whose positions shift down past the removed rows)."""
    if isinstance(out, (list, tuple)):
        return type(out)(_assemble(o, copies, n) for o in out)
    if not isinstance(out, torch.Tensor):
        return out
    seg, source = copies.seg, copies.source
    width = seg.stop - seg.start
    if isinstance(source, slice):  # A1111's layout: the sources lie wholly before or after the copies
        start = source.start if source.start < seg.start else source.start - width
        taken = out[start:start + width]
    else:
        taken = out[torch.where(source >= seg.stop, source - width, source)]
    return torch.cat([out[:seg.start], taken, out[seg.start:]])


def shared_forward(forward, args, kwargs, n_rows, copies):
    """forward(*args, **kwargs) of a call of n_rows rows, computed without the copy rows and completed by copying
    their sources' outputs: exactly what the full rows give, since a copy's inputs are its source's."""
    seg = copies.seg
    out = forward(*_rows(args, seg, n_rows), **{k: _rows(v, seg, n_rows) for k, v in kwargs.items()})
    return _assemble(out, copies, n_rows)


def foreign_hooks(model, names):
    """A reason the prefix blocks `names` may not be shared, or None: another extension hooks a module inside
    them (a torch hook or an instance forward), and may read or edit rows by position. A1111's Hypertile wrappers
    attend tile by tile within each row and are no such reason."""
    modules = dict(model.named_modules())
    for name in names:
        for inner_name, module in modules[name].named_modules():
            instance_forward = "forward" in vars(module) and not hasattr(module, "__webui_hypertile_params")
            if module._forward_hooks or module._forward_pre_hooks or instance_forward:
                return f"{name}.{inner_name}".rstrip(".") + " is hooked by another extension"
    return None


def foreign_patches(model_options):
    """A reason a Forge/reForge UNet's prefix may not be shared, or None: patches of other extensions in the
    patcher's transformer_options (they see the call's rows by chunk, cond_or_uncond). Token merging's patches
    work row by row and are no such reason."""
    options = model_options.get("transformer_options") or {}
    patches = {name: fns for name, fns in (options.get("patches") or {}).items() if fns}
    row_wise = ("tomesd_m", "tomesd_u")
    if any(getattr(fn, "__name__", "") not in row_wise for fns in patches.values() for fn in fns) or \
            any(options.get("patches_replace", {}).values()):
        return "another extension patches the model's attention"
    return None


def install(registry, model, names, current_copies, blocked=None, check_hooks=True):
    """Wrap the forward of the blocks `names` of model for one pass; current_copies() -> Copies of the call in
    progress, or None (then the block runs on every row). `blocked`: a reason not to share (full rows);
    check_hooks: also look for other extensions' torch hooks in the blocks (A1111's way of patching; Forge's
    extensions patch through the UNet patcher, see foreign_patches)."""
    blocked = blocked or (foreign_hooks(model, names) if check_hooks else None)
    if blocked:
        log.debug("SEG runs full rows (no shared prefix): %s", blocked)
        return
    modules = dict(model.named_modules())
    for name in names:
        module = modules[name]
        registry.replace(module, "forward", _wrapped(module.forward, current_copies))
    if names:
        log.debug("SEG shares %d blocks before the first perturbed layer: %s", len(names), ", ".join(names))


def _first_rows(args, kwargs):
    for value in list(args) + list(kwargs.values()):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return value.shape[0]
    return None


def _wrapped(forward, current_copies):
    def shared(*args, **kwargs):
        copies = current_copies() if ENABLED else None
        n_rows = _first_rows(args, kwargs) if copies is not None else None
        if copies is None or n_rows is None or copies.seg.stop > n_rows or copies.seg.stop <= copies.seg.start:
            return forward(*args, **kwargs)
        return shared_forward(forward, args, kwargs, n_rows, copies)
    return shared
