"""Guidance arithmetic for SEG: pure functions on model predictions.

They work in any prediction space in which the host's classifier-free guidance is linear (eps, x0/denoised, v),
because SEG adds one more linear term of the same form as CFG's.
"""
from typing import Optional, Sequence

import torch

# Progress values come from step / (total - 1); allow for float rounding at the interval ends.
_PROGRESS_TOLERANCE = 1e-9


def seg_term(cond: torch.Tensor, seg: torch.Tensor, scale: float) -> torch.Tensor:
    """The SEG guidance term ``scale * (cond - seg)``.

    ``cond`` is the prediction with the normal (unblurred) attention, ``seg`` the prediction with blurred
    self-attention queries, both for the same prompt.
    """
    return scale * (cond - seg)


def guide(cond: torch.Tensor, seg: torch.Tensor, scale: float,
          uncond: Optional[torch.Tensor] = None, cfg_scale: float = 1.0) -> torch.Tensor:
    """Guided prediction.

    Without ``uncond``:  ``cond + s * (cond - seg)``  (SEG alone, as with CFG scale 1).
    With ``uncond``:     ``uncond + w * (cond - uncond) + s * (cond - seg)``  (CFG scale w plus SEG scale s).
    """
    if uncond is None:
        return cond + seg_term(cond, seg, scale)
    return uncond + cfg_scale * (cond - uncond) + seg_term(cond, seg, scale)


def weighted_seg_term(conds: torch.Tensor, segs: torch.Tensor, weights: Sequence[float],
                      scale: float) -> torch.Tensor:
    """SEG term for K composed (AND) prompts: ``scale * sum_k weights[k] * (conds[k] - segs[k])``.

    ``conds`` and ``segs`` are (K, ...) stacks; the result has shape ``conds.shape[1:]``. This mirrors how
    A1111 combines the per-prompt CFG terms of an AND prompt.
    """
    if conds.shape != segs.shape:
        raise ValueError(f"SEG: cond and seg stacks differ in shape: {tuple(conds.shape)} vs {tuple(segs.shape)}")
    weights = [float(x) for x in weights]
    if len(weights) != conds.shape[0]:
        raise ValueError(f"SEG: {len(weights)} prompt weights for {conds.shape[0]} predictions")
    w = torch.tensor(weights, dtype=conds.dtype, device=conds.device).reshape((-1,) + (1,) * (conds.dim() - 1))
    return scale * (w * (conds - segs)).sum(dim=0)


def rescale(guided: torch.Tensor, reference: torch.Tensor, phi: float) -> torch.Tensor:
    """Guidance rescale (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed").

    ``out = phi * guided * std(reference) / std(guided) + (1 - phi) * guided``, std taken per sample over all
    non-batch dims. It pulls the guided prediction's scale back to that of ``reference`` (normally the
    conditional prediction) to undo the over-exposure strong guidance causes. ``phi = 0`` returns ``guided``
    itself (the same object); a sample whose guided std is 0 is left unchanged rather than divided by zero.
    """
    if phi == 0:
        return guided
    dims = tuple(range(1, guided.dim()))
    std_guided = guided.std(dim=dims, keepdim=True)
    std_reference = reference.std(dim=dims, keepdim=True)
    ratio = torch.where(std_guided > 0, std_reference / std_guided, torch.ones_like(std_guided))
    return phi * (guided * ratio) + (1 - phi) * guided


def rescale_denoised(x: torch.Tensor, sigma: torch.Tensor, guided: torch.Tensor, cond: torch.Tensor,
                     phi: float) -> torch.Tensor:
    """``rescale`` for hosts that combine guidance on denoised images (x0 = x - sigma * eps, as the
    WebUIs' k-diffusion samplers do): the rescale is defined on the noise prediction, so convert to eps,
    rescale against the conditional eps, and convert back. sigma: one value per row of x."""
    if phi == 0:
        return guided
    s = sigma.reshape(-1, *([1] * (x.dim() - 1))).to(guided.dtype)
    eps = rescale((x - guided) / s, (x - cond) / s, phi)
    return x - eps * s


def sampler_step(call: int, calls_total: int, steps: Optional[int] = None) -> tuple:
    """``(step, steps)``: the sampler step that model call ``call`` (0-based) belongs to, and the step count.

    The WebUIs count denoiser calls (``CFGDenoiser.step``) against ``total_steps``, which is ``steps`` for
    first-order samplers and ``2 * steps`` for second-order ones (Heun, DPM2, DPM++ SDE, ...). Those make
    two calls per step but one in the last, 2n - 1 in all, so call progress never reaches 1 and "the last
    step" would never come. Mapping call k to step ``k * steps // total_steps`` (k // 2 there) gives the
    same interval the same steps on every sampler. Without ``steps`` the calls are the steps."""
    calls_total = int(calls_total)
    if not steps or int(steps) >= calls_total:
        return min(int(call), calls_total - 1), calls_total
    steps = int(steps)
    return min(int(call) * steps // calls_total, steps - 1), steps


def step_is_active(step: int, total: int, start: float, end: float) -> bool:
    """Whether SEG applies at sampling step ``step`` (0-based) of ``total``.

    Progress is ``p = step / (total - 1)`` (``p = 0`` when ``total == 1``), so the first step is at 0 and the
    last at 1. SEG is active iff ``start <= p <= end``, both ends inclusive (with a 1e-9 tolerance for float
    rounding): start=0, end=1 covers every step, and start == end selects the step(s) at exactly that progress.
    """
    if total < 1:
        raise ValueError(f"SEG: total steps must be >= 1, got {total}")
    p = 0.0 if total == 1 else step / (total - 1)
    return start - _PROGRESS_TOLERANCE <= p <= end + _PROGRESS_TOLERANCE
