"""Self-attention with the SEG rows perturbed: their queries smoothed (SEG), or their attention replaced
by the identity (PAG: each token outputs its own value).

Blurring queries is linear over tokens with weights summing to one, so it commutes with the (affine,
per-token) query projection: blurring the attention input x before ``to_q`` equals blurring q after it.
That lets one function serve hosts that hand us projected q/k/v (Forge) and hosts where we wrap the
module's own forward (A1111, whose optimized attention variants all project x themselves).
"""
import math

import torch

from . import oseg
from .blur import blur_queries


# Below this many tokens the σ = ∞ shortcut's extra attention calls cost more than the tokens² work
# they save (bench/RESULTS.md: a loss on SD1.5's 16-token middle block, ~30 % faster at 1024 tokens).
SHORTCUT_MIN_TOKENS = 256


def attend_smoothed(attend, q, seg, grid, sigma, shortcut=True):
    """Attention for all rows of a call, with the rows in `seg` smoothed.

    q: (rows, tokens, channels) queries (or attention inputs) of the call.
    attend(q_rows, kv_rows) -> (len(q_rows), q_tokens, out_channels): the host's attention for the
    queries q_rows against the keys/values of the rows in the slice kv_rows.
    Finite sigma: one attention call, SEG rows' queries blurred. sigma = inf: every blurred query is
    the spatial mean, so every position gets the same output; on large grids the SEG rows attend with
    that single query and the result is broadcast, saving their tokens² work. Only slices of the
    contiguous SEG rows are used: no index tensors, no host-device traffic. shortcut=False keeps every
    row in one attention call.
    """
    n_rows, n_tokens = q.shape[0], q.shape[1]
    everything = slice(0, n_rows)
    if seg.stop <= seg.start:
        return attend(q, everything)
    if math.isinf(sigma):
        # mean in at least fp32: fp16 sums over thousands of tokens lose digits
        accumulate = torch.promote_types(q.dtype, torch.float32)
        smoothed = q[seg].mean(dim=1, keepdim=True, dtype=accumulate).to(q.dtype)
        if shortcut and n_tokens >= SHORTCUT_MIN_TOKENS:
            parts = [attend(q[:seg.start], slice(0, seg.start))] if seg.start > 0 else []
            parts.append(attend(smoothed, seg).expand(-1, n_tokens, -1))
            if seg.stop < n_rows:
                parts.append(attend(q[seg.stop:], slice(seg.stop, n_rows)))
            return torch.cat(parts)
        smoothed = smoothed.expand(-1, n_tokens, -1)
    else:
        smoothed = blur_queries(q[seg], grid, sigma)
    return attend(torch.cat([q[:seg.start], smoothed, q[seg.stop:]]), everything)


def attend_identity(attend, value, q, seg, split=True):
    """Attention for all rows of a call, with the rows in `seg` attending by the identity: each token's
    output is its own value (Perturbed-Attention Guidance's perturbation). value(rows) -> their value
    projection, in the form attend returns (through the output projection where attend includes it)."""
    return attend_replacing(attend, value, q, seg, split)


def attend_replacing(attend, value, q, seg, split=True):
    """Attention for all rows of a call, with the output of the rows in `seg` given by value(rows) (the rows
    in the slice `rows`) instead: PAG's identity, or OSEG's own attention with perturbed queries.

    q and attend(q_rows, kv_rows) as for attend_smoothed. The rows before and after `seg` attend as usual,
    in their own calls, so the SEG rows skip the host's attention work; split=False attends with every row in
    one call and replaces the SEG rows' part afterwards (for hooks that need the whole batch).
    """
    n_rows = q.shape[0]
    everything = slice(0, n_rows)
    if seg.stop <= seg.start:
        return attend(q, everything)
    if not split:
        out = attend(q, everything)
        return torch.cat([out[:seg.start], value(seg).to(out.dtype), out[seg.stop:]])
    parts = [attend(q[:seg.start], slice(0, seg.start))] if seg.start > 0 else []
    parts.append(value(seg))
    if seg.stop < n_rows:
        parts.append(attend(q[seg.stop:], slice(seg.stop, n_rows)))
    return torch.cat(parts)


def patch_ldm_self_attention(registry, modules, session):
    """Wrap the forward of ldm/sgm CrossAttention modules used as self-attention (attn1).

    The wrapper is an instance attribute calling the class's forward at call time, so whichever
    optimized forward the host installs on the class is what runs. Without SEG rows in the current
    call it passes the call through unchanged. session.settings.mode picks the perturbation.
    """
    for module in modules:
        registry.replace(module, "forward", _perturbed_forward(module, session))


def _foreign_projection_hooks(module):
    """Hooks another extension put on this attention's projections (e.g. sd-webui-incantations' own SEG
    on to_q). They expect the whole batch in one call, so the σ = ∞ split must not be used here."""
    projections = [getattr(module, name, None) for name in ("to_q", "to_k", "to_v")]
    return [type(p).__name__ for p in projections if p is not None and (p._forward_hooks or p._forward_pre_hooks)]


def _orthogonal_rows(module, x, grid, sigma):
    """ldm CrossAttention's self-attention for rows x with OSEG's queries (lib_seg/oseg.py): q, k, v projected,
    split into heads, the queries' orthogonal part blurred, softmax(q k^T / sqrt(d)) v in at least float32 (as
    ldm computes its logits), merged, then the output projection."""
    heads = module.heads
    q, k, v = (oseg.split_heads(proj(x), heads) for proj in (module.to_q, module.to_k, module.to_v))
    q = oseg.orthogonal_blur(q, k, grid, sigma)
    dtype = torch.promote_types(x.dtype, torch.float32)
    out = torch.nn.functional.scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype))
    return module.to_out(oseg.merge_heads(out).to(x.dtype))


def _perturbed_forward(module, session):
    warned = []
    # A forward another extension set on the instance (A1111's Hypertile wraps attn1 this way) still runs
    # for every call we leave alone; calls with SEG rows use the class's forward, whose arithmetic we know.
    previous = vars(module).get("forward")

    def forward(x, context=None, *args, **kwargs):
        call = session.call
        host_forward = type(module).forward
        # Only self-attention (no context) and only calls that hold SEG rows are changed.
        if call is None or not call.has_seg or context is not None or args or kwargs.get("mask") is not None:
            if previous is not None:
                return previous(x, context, *args, **kwargs)
            return host_forward(module, x, context, *args, **kwargs)

        def attend(q_rows, kv_rows):
            if q_rows is x:
                return host_forward(module, x, None, **kwargs)
            return host_forward(module, q_rows, x[kv_rows], **kwargs)

        foreign = _foreign_projection_hooks(module)
        if foreign and not warned:
            warned.append(True)
            print("[SEG] another extension hooks this model's self-attention (e.g. a second SEG or PAG "
                  "implementation); both act on the same batch, so results combine both methods.")
        mode, sigma = session.settings.mode, session.settings.sigma
        if mode == "identity":
            # Identity attention: the value projection, then the output projection as attention's forward does.
            return attend_identity(attend, lambda rows: module.to_out(module.to_v(x[rows])), x, call.seg,
                                   split=not foreign)
        try:
            grid = call.grid(x.shape[1])
        except ValueError as error:  # tokens that are no grid of this latent (merged, tiled): never fail the image
            if not warned:
                warned.append(True)
                print(f"[SEG] left one layer unperturbed: {error}")
            return host_forward(module, x, None, **kwargs)
        if mode == "orthogonal":  # our own attention for the perturbed rows: OSEG needs the queries per head
            return attend_replacing(attend, lambda rows: _orthogonal_rows(module, x[rows], grid, sigma), x, call.seg,
                                    split=not foreign)
        return attend_smoothed(attend, x, call.seg, grid, sigma, shortcut=not foreign)

    return forward
