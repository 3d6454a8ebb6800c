"""Orthogonal SEG (issue 20): the decomposition (lib_seg/oseg.py), OSEG's attention on the real ldm UNet, and
its guidance (the uncond rows perturbed too) against a separate-pass reference on the A1111 and Forge stand-ins."""
import math

import pytest
import torch

from a1111_stand_in import harness as H
from a1111_stand_in.fixtures import host, sd15, clean_host  # noqa: F401 (pytest fixtures)
from lib_seg import oseg
from lib_seg.blur import blur_queries
from precision import REL64, assert_same_arithmetic
from test_a1111_pass import reference, run

pytestmark = pytest.mark.usefixtures("float64_module", "clean_host")


def _qk(rows=2, heads=3, tokens=12, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(rows, heads, tokens, dim, generator=g, dtype=torch.float64)
    k = torch.randn(rows, heads, tokens, dim, generator=g, dtype=torch.float64) + 2.0  # a common key direction
    return q, k


@pytest.mark.parametrize("reference_", oseg.REFERENCES)
def test_the_two_parts_sum_back_to_the_query_and_the_second_is_orthogonal(reference_):
    q, k = _qk()
    parallel, orthogonal = oseg.decompose(q, k, reference_)
    assert_same_arithmetic(parallel + orthogonal, q)
    u = (k if reference_ == "key" else q).mean(dim=2, keepdim=True)
    u = u / u.norm(dim=-1, keepdim=True)
    assert (orthogonal * u).sum(-1).abs().max() <= REL64 * q.abs().max()
    assert_same_arithmetic(parallel, (q * u).sum(-1, keepdim=True) * u)


def test_orthogonal_blur_keeps_the_parallel_part_and_blurs_the_rest():
    q, k = _qk(tokens=12)
    grid = (3, 4)
    parallel, orthogonal = oseg.decompose(q, k)
    for sigma in (0.5, 2.0, math.inf):
        got = oseg.orthogonal_blur(q, k, grid, sigma)
        expected = parallel + blur_queries(orthogonal.reshape(6, 12, 8), grid, sigma).reshape(q.shape)
        assert_same_arithmetic(got, expected)
    assert_same_arithmetic(oseg.orthogonal_blur(q, k, grid, 1e-3), q)      # sigma -> 0: the queries themselves
    flat = oseg.orthogonal_blur(q, k, grid, math.inf) - parallel            # sigma = inf: the grid mean
    assert_same_arithmetic(flat, orthogonal.mean(dim=2, keepdim=True).expand_as(flat))
    with pytest.raises(ValueError, match="OSEG reference"):
        oseg.decompose(q, k, "value")


def test_zero_mean_key_leaves_every_query_orthogonal():
    q, _ = _qk()
    k = torch.zeros_like(q)
    parallel, orthogonal = oseg.decompose(q, k)
    assert torch.equal(parallel, torch.zeros_like(q)) and torch.equal(orthogonal, q)


# ---------------------------------------------------------------- on the A1111 stand-in and the real ldm UNet


def test_oseg_attention_rows_equal_a_dense_restatement(sd15):
    """One ldm self-attention with OSEG's rows: q, k, v, the decomposition along the mean key, the blur as a
    dense matrix over the 16 x 16 grid, softmax(q k^T / sqrt(d)) v, to_out; written out here independently."""
    from lib_seg.attention import _orthogonal_rows
    from lib_seg.blur import blur_operator
    module = sd15.model.diffusion_model.input_blocks[1][1].transformer_blocks[0].attn1
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 256, module.to_q.in_features, generator=g, dtype=torch.float64)
    sigma = 1.7
    got = _orthogonal_rows(module, x, (16, 16), sigma)
    h = module.heads
    q, k, v = (p(x).reshape(2, 256, h, -1).permute(0, 2, 1, 3) for p in (module.to_q, module.to_k, module.to_v))
    u = k.mean(2, keepdim=True)
    u = u / u.norm(dim=-1, keepdim=True)
    par = (q * u).sum(-1, keepdim=True) * u
    dense = torch.kron(blur_operator(16, sigma), blur_operator(16, sigma)).to(x.dtype)  # row-major grid
    q2 = par + dense @ (q - par)
    weights = torch.softmax(q2 @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    expected = module.to_out((weights @ v).permute(0, 2, 1, 3).reshape(2, 256, -1))
    assert_same_arithmetic(got, expected)


ARGS = [{"enabled": True, "scale": 2.5, "sigma": "2", "layers": "d0-1, m0", "mode": "orthogonal"}]
# Sampler steps of the batched-vs-separate equality checks: which rows OSEG perturbs is decided the same way at every
# UNet call, and a second step already takes the first one's result in.
STEPS = 2


def test_a1111_oseg_three_rows_and_equals_the_separate_pass_reference(host, sd15):
    """At CFG 5: 3 rows per image in one call (cond, OSEG copy, uncond made with OSEG's attention), and the result
    is eps = U' + w (C - U') + s (C - C') as the separate-pass reference computes it (lib_seg.denoiser, which
    perturbs its uncond rows and evaluates the OSEG copy in a second call)."""
    c, uc = H.conds([[(1, 1.0)]], [2])
    batched, calls, p = run(host, sd15, ARGS, c, uc, steps=STEPS)
    assert calls == [3] * STEPS and p.extra_generation_params["SEG mode"] == "orthogonal"
    ref = reference(sd15, H.text(1)[None], H.text(2)[None], ARGS, steps=STEPS)
    plain, _, _ = run(host, sd15, [False], c, uc, steps=STEPS)
    assert_same_arithmetic(batched, ref, effect_from=plain)
    blur = dict(ARGS[0], mode="blur")
    seg, _, _ = run(host, sd15, [blur], c, uc, steps=STEPS)
    assert (seg - batched).abs().max() > 1e-3 * plain.abs().max()   # not SEG


def test_a1111_oseg_with_sigma_to_zero_is_plain_cfg(host, sd15):
    c, uc = H.conds([[(1, 1.0)]], [2])
    plain, _, _ = run(host, sd15, [False], c, uc)
    tiny, _, _ = run(host, sd15, [dict(ARGS[0], sigma="0.001")], c, uc)
    assert_same_arithmetic(tiny, plain)


def test_a1111_oseg_perturbs_the_uncond_rows(host, sd15, monkeypatch):
    """The uncond rows' prediction differs from an unperturbed uncond: OSEG's CFG is not the host's plain CFG."""
    from modules import sd_samplers_cfg_denoiser as host_denoiser
    rows = []
    original = host_denoiser.cfg_denoised_callback
    monkeypatch.setattr(host_denoiser, "cfg_denoised_callback", lambda params: (rows.append(params.x.clone()),
                                                                                original(params))[1])
    c, uc = H.conds([[(1, 1.0)]], [2])
    run(host, sd15, ARGS, c, uc, steps=1)
    run(host, sd15, [dict(ARGS[0], mode="blur")], c, uc, steps=1)
    oseg_rows, seg_rows = rows
    assert_same_arithmetic(oseg_rows[0], seg_rows[0])                  # cond: untouched by either
    assert (oseg_rows[2] - seg_rows[2]).abs().max() > 1e-3             # uncond: perturbed by OSEG only


@pytest.mark.parametrize("flavor", ["forge", "reforge"])
def test_forge_oseg_batched_equals_separate_pass(flavor, monkeypatch):
    """Forge/reForge order a call's chunks uncond-first or cond-first; OSEG's perturbed rows (uncond chunks and the
    appended SEG rows) are named by index. Batched (one call) equals the separate pass (host call with its uncond
    perturbed, then the OSEG copy alone), batch 2, CFG 5."""
    from lib_seg.hosts import forge as forge_host
    from lib_seg.params import SegSettings
    from test_forge import generate
    settings = SegSettings(enabled=True, scale=2.5, sigma=2.0, layers="d0-1, m0", mode="orthogonal")
    batched, calls, _ = generate(flavor, settings, batch=2, steps=STEPS)

    def cannot_batch(*args, **kwargs):
        raise forge_host._CannotBatch("test: separate pass")
    monkeypatch.setattr(forge_host, "_extend_c", cannot_batch)
    separate, separate_calls, _ = generate(flavor, settings, batch=2, steps=STEPS)
    plain, _, _ = generate(flavor, None, batch=2, steps=STEPS)
    assert calls == [6] * STEPS and separate_calls == [4, 2] * STEPS
    assert_same_arithmetic(batched, separate, effect_from=plain)
