"""Self-attention with the queries of the SEG rows smoothed.

Blurring queries is linear over tokens with weights summing to one, so it commutes with the (affine,
per-token) query projection: blurring the attention input x before ``to_q`` equals blurring q after it.
That lets one function serve hosts that hand us projected q/k/v (Forge) and hosts where we wrap the
module's own forward (A1111, whose optimized attention variants all project x themselves).
"""
import math

import torch

from .blur import blur_queries


def attend_smoothed(attend, q, seg, grid, sigma):
    """Attention for all rows of a call, with the rows in `seg` smoothed.

    q: (rows, tokens, channels) queries (or attention inputs) of the call.
    attend(q_rows, kv_rows) -> (len(q_rows), q_tokens, out_channels): the host's attention for the
    queries q_rows against the keys/values of rows kv_rows (a slice or an index tensor).
    Finite sigma: one attention call, SEG rows' queries blurred. sigma = inf: every blurred query is
    the spatial mean, so every position gets the same output; SEG rows attend with that single query
    and the result is broadcast, saving their tokens² work.
    """
    n_rows, n_tokens = q.shape[0], q.shape[1]
    everything = slice(0, n_rows)
    if seg.stop <= seg.start:
        return attend(q, everything)
    if not math.isinf(sigma):
        smoothed = blur_queries(q[seg], grid, sigma)
        return attend(torch.cat([q[:seg.start], smoothed, q[seg.stop:]]), everything)

    # mean in at least fp32: fp16 sums over thousands of tokens lose digits
    mean_query = q[seg].mean(dim=1, keepdim=True, dtype=torch.promote_types(q.dtype, torch.float32)).to(q.dtype)
    seg_out = attend(mean_query, seg).expand(-1, n_tokens, -1)
    if seg.stop - seg.start == n_rows:
        return seg_out.contiguous()
    others = torch.cat([torch.arange(0, seg.start, device=q.device), torch.arange(seg.stop, n_rows, device=q.device)])
    other_out = attend(q[others], others)
    out = other_out.new_empty((n_rows,) + tuple(other_out.shape[1:]))
    out[others] = other_out
    out[seg] = seg_out.to(out.dtype)
    return out


def patch_ldm_self_attention(registry, modules, session):
    """Wrap the forward of ldm/sgm CrossAttention modules used as self-attention (attn1).

    The wrapper is an instance attribute calling the class's forward at call time, so whichever
    optimized forward the host installs on the class is what runs. Without SEG rows in the current
    call it passes the call through unchanged.
    """
    for module in modules:
        registry.replace(module, "forward", _smoothed_forward(module, session))


def _smoothed_forward(module, session):
    def forward(x, context=None, *args, **kwargs):
        call = session.call
        host_forward = type(module).forward
        # Only self-attention (no context) and only calls that hold SEG rows are changed.
        if call is None or not call.has_seg or context is not None or args or kwargs.get("mask") is not None:
            return host_forward(module, x, context, *args, **kwargs)

        def attend(q_rows, kv_rows):
            if q_rows is x:
                return host_forward(module, x, None, **kwargs)
            return host_forward(module, q_rows, x[kv_rows], **kwargs)

        return attend_smoothed(attend, x, call.seg, call.grid(x.shape[1]), session.settings.sigma)

    return forward
