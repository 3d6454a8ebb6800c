"""Follows modules/models/sd3/other_impls.py of A1111 1.10.1: ``attention(q, k, v, heads, mask=None)`` on
(rows, tokens, heads * dim) tensors (v may also be (rows, tokens, heads, dim)), plain scaled-dot-product."""
import torch


def attention(q, k, v, heads, mask=None):
    b, _, dim_head = q.shape
    dim_head //= heads
    q, k, v = [t.view(b, -1, heads, dim_head).transpose(1, 2) for t in (q, k, v)]
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(b, -1, heads * dim_head)
