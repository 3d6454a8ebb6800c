"""The SEG attention patch on the real ldm UNet: only SEG rows change, exactly as the method says."""
import math

import pytest
import torch

from lib_seg.attention import SHORTCUT_MIN_TOKENS, attend_smoothed, patch_ldm_self_attention
from lib_seg.blur import blur_queries
from lib_seg.hooks import HookRegistry
from lib_seg.layers import select_self_attention
from lib_seg.params import SegSettings
from lib_seg.session import SegSession
from precision import MIN_EFFECT, assert_same_arithmetic
from unets import CONTEXT_DIM, sd15_like

# Every check here compares two evaluation orders of the same arithmetic (shortcut vs full attention, blurred input
# vs blurred projection, patched vs plain rows), so the module runs in float64 with the bound of tests/precision.py;
# models are built inside. Bit-identity claims hold in any dtype.
pytestmark = pytest.mark.usefixtures("float64_module")


def plain_attention(q, k, v):
    weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1)
    return weights @ v


@pytest.mark.parametrize("grid", [(4, 6), (16, 20)])  # below and above SHORTCUT_MIN_TOKENS
@pytest.mark.parametrize("seg", [slice(2, 4), slice(0, 2), slice(3, 5), slice(0, 5)])
@pytest.mark.parametrize("sigma", [1.0, 3.0, math.inf])
def test_attend_smoothed_matches_attention_on_blurred_queries(sigma, seg, grid):
    torch.manual_seed(0)
    rows, (h, w), c = 5, grid, 8
    q, k, v = (torch.randn(rows, h * w, c) for _ in range(3))

    out = attend_smoothed(lambda qr, kv: plain_attention(qr, k[kv], v[kv]), q, seg, (h, w), sigma)

    expected = plain_attention(q, k, v)
    if math.isinf(sigma):  # the unshortcut computation: every query replaced by the mean, N of them
        blurred = q[seg].mean(dim=1, keepdim=True).expand(-1, h * w, -1)
    else:
        blurred = blur_queries(q[seg], (h, w), sigma)
    expected[seg] = plain_attention(blurred, k[seg], v[seg])
    assert_same_arithmetic(out, expected)


def test_infinite_sigma_shortcut_equals_full_attention_on_ldm_attention():
    unet = sd15_like()
    attn = unet.middle_block[1].transformer_blocks[0].attn1
    torch.manual_seed(1)
    n = SHORTCUT_MIN_TOKENS
    x = torch.randn(4, n, attn.to_q.in_features)
    seg = slice(1, 3)
    with torch.no_grad():
        shortcut = attend_smoothed(lambda qr, kv: attn(qr, context=x[kv]), x, seg, (16, n // 16), math.inf)
        full = attn(torch.cat([x[:1], x[seg].mean(1, keepdim=True).expand(-1, n, -1), x[3:]]), context=x)
    assert_same_arithmetic(shortcut, full)


def _run(unet, x, context, session=None, seg=None):
    if session is not None:
        session.set_call(seg, x.shape[-2:])
    with torch.no_grad():
        return unet(x, torch.full((x.shape[0],), 500.0), context=context)


@pytest.mark.parametrize("sigma", [2.0, math.inf])
@pytest.mark.parametrize("spec", ["mid", "d4-5,u0.0"])
def test_only_seg_rows_change_on_the_real_unet(sigma, spec):
    unet = sd15_like(transformer_depth=2) if "." in spec else sd15_like()
    torch.manual_seed(2)
    # 16 x 32: a non-square grid at every level (mid 2 x 4), SEG's effect on its row 2.2x MIN_EFFECT at mid (32 x 24
    # gave 1.4x at three times the float64 cost, most of it the unselected 768-token level-0 attention)
    x = torch.randn(1, 4, 16, 32).repeat(3, 1, 1, 1)  # cond, its SEG copy, another cond
    x[2] += 0.5
    context = torch.randn(3, 7, CONTEXT_DIM)
    context[1] = context[0]
    baseline = _run(unet, x, context)

    session = SegSession(SegSettings(enabled=True, sigma=sigma, layers=spec))
    modules = dict(unet.named_modules())
    with session:
        patch_ldm_self_attention(session.registry, [modules[n] for n in select_self_attention(unet, spec)], session)
        patched = _run(unet, x, context, session, slice(1, 2))
        no_seg_rows = _run(unet, x, context, session, slice(0, 0))

    assert_same_arithmetic(patched[[0, 2]], baseline[[0, 2]])
    scale = baseline.abs().max()
    assert (patched[1] - baseline[1]).abs().max() > MIN_EFFECT * scale  # the SEG row did change
    assert torch.equal(no_seg_rows, baseline)  # no SEG rows in the call: untouched, bit for bit
    assert not any("forward" in vars(m) for m in unet.modules())
    assert torch.equal(_run(unet, x, context), baseline)


def test_blurring_the_input_equals_blurring_the_query_projection():
    """The wrapper blurs attn1's input; the paper blurs q = to_q(x). Same thing, checked on the real UNet
    against a forward hook on to_q that blurs the SEG rows' queries."""
    unet = sd15_like()
    torch.manual_seed(3)
    x = torch.randn(2, 4, 16, 24)  # m0's grid 2 x 3 (40 x 24, 5 x 3, cost 8x more for a smaller effect)
    context = torch.randn(2, 7, CONTEXT_DIM)
    name = select_self_attention(unet, "m0")[0]
    attn = dict(unet.named_modules())[name]
    grid = (16 // 8, 24 // 8)

    def blur_q_rows(module, args, q):
        return torch.cat([q[:1], blur_queries(q[1:], grid, 1.5)])

    registry = HookRegistry()
    registry.forward_hook(attn.to_q, blur_q_rows)
    via_to_q = _run(unet, x, context)
    registry.remove_all()

    session = SegSession(SegSettings(enabled=True, sigma=1.5, layers="m0"))
    with session:
        patch_ldm_self_attention(session.registry, [attn], session)
        via_input = _run(unet, x, context, session, slice(1, 2))
    assert_same_arithmetic(via_input, via_to_q, effect_from=_run(unet, x, context))


def test_foreign_hooks_on_the_projections_keep_the_batch_in_one_call(capsys):
    """sd-webui-incantations hooks to_q and splits its output in two halves: it must always see the
    whole batch (the σ = ∞ shortcut would call it with single rows); a notice says both act."""
    unet = sd15_like()
    attn = unet.middle_block[1].transformer_blocks[0].attn1
    torch.manual_seed(4)
    n = SHORTCUT_MIN_TOKENS
    x = torch.randn(3, n, attn.to_q.in_features)
    seen_rows = []
    attn.to_q.register_forward_hook(lambda m, a, out: seen_rows.append(out.shape[0]))
    session = SegSession(SegSettings(enabled=True, sigma=math.inf))
    with session, torch.no_grad():
        patch_ldm_self_attention(session.registry, [attn], session)
        session.set_call(slice(1, 2), (16, n // 16))
        out = attn(x)
        out_again = attn(x)
    assert seen_rows == [3, 3]
    assert capsys.readouterr().out.count("another extension") == 1
    expected = attend_smoothed(lambda q, kv: type(attn).forward(attn, q, x[kv]), x, slice(1, 2), (16, n // 16),
                               math.inf, shortcut=False)
    assert_same_arithmetic(out, expected)
    assert torch.equal(out, out_again)
