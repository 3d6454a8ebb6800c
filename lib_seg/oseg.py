"""Orthogonal Smoothed Energy Guidance (OSEG; seed 004, WACV 2026): blur only the part of each query that decides
which keys it prefers.

Design note (issue 20): which component is "orthogonal", and why.

The seed argues from the curvature of attention's energy E(q) = -logsumexp(q . k_i / sqrt(d)). Its Hessian is
(1/d) K (diag(A) - A A^T) K^T, bounded by C ||diag(A) - A A^T||, and uniform attention (A_i = 1/n, the flattest
landscape) comes from q . k_i being the same for every key ("Q orthogonal to every K_i"). Write each key as the
head's mean key plus a deviation, k_i = kbar + delta_i. Because (diag(A) - A A^T) 1 = 0, the mean key drops out
of the Hessian entirely, and q . kbar adds the same amount to every logit, which softmax ignores: the attention
weights, and so the curvature, depend on q only through q . delta_i. Keys of a trained attention head share a
large common direction (|kbar| is large next to the deviations), so we split each query along u = kbar / |kbar|:

    q = (q . u) u + q_perp,        q_perp . u = 0.

The parallel part is the query's share of the logit that is (nearly) common to all keys; the orthogonal part
q_perp is what aligns the query with the keys' differences and therefore what drives A away from uniform and
sets the curvature. OSEG blurs q_perp over the token grid with the same exact Gaussian as SEG (lib_seg/blur.py,
sigma in tokens, sigma = inf: the grid mean) and keeps q . u as it is:

    q' = (q . u) u + blur_sigma(q_perp).

This is "targeted blurring": SEG's blur also smooths the common part, which only rescales the logits' constant
share. sigma -> 0 gives q back; the two parts always sum back to q.

The other defensible reading takes u along the head's mean *query* instead (the query's own common direction).
It has no link to the logits' shift invariance, so the key reading is the one the seed's argument supports.
Both are here behind ``REFERENCE`` ("key" or "query") so they can be measured against each other
(lib_seg/demo/RESULTS.md has the comparison); "key" is the default.

Guidance (the seed's slides): eps = C + gamma (C - U_perturbed) + lambda (C - C_perturbed): the unconditional
prediction is made with the same perturbed attention. In the WebUIs' CFG, U + w (C - U) = C + (w - 1)(C - U), so
perturbing the uncond rows and leaving the host's CFG as it is gives exactly that formula with gamma = w - 1, in
the same three rows per image as CFG + SEG.
"""
import torch

from .blur import blur_queries

REFERENCES = ("key", "query")
REFERENCE = "key"


def decompose(q, k, reference=None):
    """(parallel, orthogonal) parts of the queries q: (rows, heads, tokens, dim), per row and head, along the unit
    direction of the head's mean key k: (rows, heads, keys, dim) (or of its mean query, reference "query").
    A zero mean leaves every query orthogonal (parallel part 0)."""
    reference = reference or REFERENCE
    if reference not in REFERENCES:
        raise ValueError(f"SEG: unknown OSEG reference {reference!r}; known: {', '.join(REFERENCES)}")
    accumulate = torch.promote_types(q.dtype, torch.float32)
    mean = (k if reference == "key" else q).mean(dim=2, keepdim=True, dtype=accumulate)
    norm = mean.norm(dim=-1, keepdim=True)
    u = torch.where(norm > 0, mean / norm.clamp_min(torch.finfo(accumulate).tiny), torch.zeros_like(mean))
    parallel = ((q.to(accumulate) * u).sum(dim=-1, keepdim=True) * u).to(q.dtype)
    return parallel, q - parallel


def orthogonal_blur(q, k, grid, sigma, reference=None):
    """OSEG's queries: q (rows, heads, tokens, dim) on the token grid (h, w), keys k (rows, heads, keys, dim) of
    the same rows; the orthogonal part blurred by sigma (inf: its grid mean), the parallel part kept."""
    parallel, orthogonal = decompose(q, k, reference)
    rows, heads, tokens, dim = q.shape
    blurred = blur_queries(orthogonal.reshape(rows * heads, tokens, dim), grid, sigma).reshape(q.shape)
    return parallel + blurred


def split_heads(t, heads):
    """(rows, tokens, heads * dim) -> (rows, heads, tokens, dim)."""
    return t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)


def merge_heads(t):
    """(rows, heads, tokens, dim) -> (rows, tokens, heads * dim)."""
    return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], -1)
