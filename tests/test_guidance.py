"""lib_seg.guidance: every formula against an element-by-element restatement, rescale limits, active-step table.

All in float64 with a few operations per element (a std over ≤ 120 elements at most): round-off ≲ 1e-14, so
torch.testing's float64 defaults (rtol 1e-7, atol 1e-7) hold on any kernel and still catch any wrong term."""
import math

import pytest
import torch

from lib_seg import guidance
from lib_seg.guidance import guide, rescale, seg_term, step_is_active, weighted_seg_term

SHAPE = (2, 3, 4, 5)


def tensors(count, shape=SHAPE, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator, dtype=torch.float64) for _ in range(count)]


def elementwise(fn, *ts):
    """Apply a scalar formula element by element: a restatement that shares nothing with tensor broadcasting."""
    flat = [t.flatten().tolist() for t in ts]
    return torch.tensor([fn(*values) for values in zip(*flat)], dtype=torch.float64).reshape(ts[0].shape)


def test_seg_term():
    cond, seg = tensors(2)
    torch.testing.assert_close(seg_term(cond, seg, 2.5), elementwise(lambda c, s: 2.5 * (c - s), cond, seg))


def test_guide_without_uncond_is_seg_alone():
    cond, seg = tensors(2)
    torch.testing.assert_close(guide(cond, seg, 3.0), elementwise(lambda c, s: c + 3.0 * (c - s), cond, seg))


def test_guide_with_uncond_adds_cfg_and_seg():
    cond, seg, uncond = tensors(3)
    expected = elementwise(lambda c, s, u: u + 7.0 * (c - u) + 3.0 * (c - s), cond, seg, uncond)
    torch.testing.assert_close(guide(cond, seg, 3.0, uncond=uncond, cfg_scale=7.0), expected)


def test_guide_with_zero_scale_is_plain_cfg():
    cond, seg, uncond = tensors(3)
    torch.testing.assert_close(guide(cond, seg, 0.0, uncond=uncond, cfg_scale=5.0), uncond + 5.0 * (cond - uncond))


def test_weighted_seg_term_for_and_prompts():
    conds = torch.stack(tensors(3, seed=1))
    segs = torch.stack(tensors(3, seed=2))
    weights = [1.0, 0.5, -0.25]
    expected = torch.zeros(SHAPE, dtype=torch.float64)
    for k, weight in enumerate(weights):
        expected += elementwise(lambda c, s: 2.0 * weight * (c - s), conds[k], segs[k])
    torch.testing.assert_close(weighted_seg_term(conds, segs, weights, 2.0), expected)


def test_weighted_seg_term_with_one_prompt_is_seg_term():
    cond, seg = tensors(2)
    torch.testing.assert_close(weighted_seg_term(cond[None], seg[None], [1.0], 4.0), seg_term(cond, seg, 4.0))


def test_weighted_seg_term_checks_counts():
    conds = torch.stack(tensors(2))
    with pytest.raises(ValueError, match="3 prompt weights for 2"):
        weighted_seg_term(conds, conds, [1.0, 1.0, 1.0], 1.0)
    with pytest.raises(ValueError, match="shape"):
        weighted_seg_term(conds, conds[:1], [1.0, 1.0], 1.0)


def sample_std(values):
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


@pytest.mark.parametrize("phi", [0.3, 0.7, 1.0])
def test_rescale_matches_per_sample_restatement(phi):
    guided, reference = tensors(2)
    guided = guided * 3 + 1
    out = rescale(guided, reference, phi)
    for b in range(SHAPE[0]):
        g = guided[b].flatten().tolist()
        ratio = sample_std(reference[b].flatten().tolist()) / sample_std(g)
        expected = [phi * v * ratio + (1 - phi) * v for v in g]
        torch.testing.assert_close(out[b].flatten(), torch.tensor(expected, dtype=torch.float64))


def test_rescale_zero_is_identity_and_one_matches_reference_std():
    guided, reference = tensors(2)
    guided = guided * 5
    assert rescale(guided, reference, 0.0) is guided
    out = rescale(guided, reference, 1.0)
    torch.testing.assert_close(out.std(dim=(1, 2, 3)), reference.std(dim=(1, 2, 3)))


def test_rescale_leaves_a_constant_sample_alone():
    guided, reference = tensors(2)
    guided[0] = 2.0
    out = rescale(guided, reference, 1.0)
    assert torch.isfinite(out).all()
    assert torch.equal(out[0], guided[0])


# (total, start, end) -> the active steps
ACTIVE_TABLE = [
    (1, 0.0, 1.0, [0]),
    (1, 0.0, 0.0, [0]),
    (1, 0.5, 1.0, []),  # the only step is at progress 0
    (2, 0.0, 1.0, [0, 1]),
    (2, 0.0, 0.5, [0]),
    (2, 0.5, 1.0, [1]),
    (2, 1.0, 1.0, [1]),
    (10, 0.0, 1.0, list(range(10))),
    (10, 0.0, 0.0, [0]),
    (10, 1.0, 1.0, [9]),
    (10, 1 / 3, 1 / 3, [3]),  # start == end hits the step at exactly that progress (3/9)
    (10, 0.5, 1.0, [5, 6, 7, 8, 9]),
    (10, 0.0, 0.5, [0, 1, 2, 3, 4]),
    (10, 2 / 9, 5 / 9, [2, 3, 4, 5]),  # both ends inclusive
    (10, 0.25, 0.3, []),  # no step between 2/9 and 3/9
]


@pytest.mark.parametrize("total,start,end,expected", ACTIVE_TABLE)
def test_step_is_active_table(total, start, end, expected):
    assert [step for step in range(total) if step_is_active(step, total, start, end)] == expected


def test_step_is_active_rejects_zero_steps():
    with pytest.raises(ValueError, match="0"):
        step_is_active(0, 0, 0.0, 1.0)


def test_rescale_denoised_rescales_the_noise_prediction():
    torch.manual_seed(5)
    x = torch.randn(2, 4, 6, 5)
    sigma = torch.tensor([3.0, 0.5])
    cond, guided = torch.randn(2, 4, 6, 5), 3 * torch.randn(2, 4, 6, 5)
    s = sigma.view(-1, 1, 1, 1)
    expected_eps = guidance.rescale((x - guided) / s, (x - cond) / s, 0.7)
    out = guidance.rescale_denoised(x, sigma, guided, cond, 0.7)
    torch.testing.assert_close((x - out) / s, expected_eps)
    assert guidance.rescale_denoised(x, sigma, guided, cond, 0.0) is guided


@pytest.mark.parametrize("calls_total,steps,expected", [
    (4, 4, [0, 1, 2, 3]),                 # first order: a call is a step
    (6, 3, [0, 0, 1, 1, 2]),              # Heun / DPM2: 2n - 1 calls counted against 2n
    (5, None, [0, 1, 2, 3, 4]),           # no step count known: the calls are the steps
])
def test_sampler_step_maps_calls_onto_steps(calls_total, steps, expected):
    from lib_seg.guidance import sampler_step
    n = len(expected)
    mapped = [sampler_step(k, calls_total, steps) for k in range(n)]
    assert [step for step, _ in mapped] == expected
    assert {total for _, total in mapped} == {steps or calls_total}
    # the last call lands on the last step, so an interval ending at 1 reaches it
    assert mapped[-1][0] == mapped[-1][1] - 1
