"""Sampling the demo model through the project's own CFG+SEG engine (lib_seg.denoiser.SegCFGDenoiser),
with a stock k-diffusion sampler: the same session, attention patch and guidance code the WebUI
adapters use, minus the WebUI."""
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional

import torch

from ..denoiser import SegCFGDenoiser
from ..kdiffusion import load as load_kdiffusion
from ..params import SegSettings, format_sigma
from .data import IMAGE_SIZE
from .model import SIGMA_MAX, SIGMA_MIN

SAMPLERS = ("dpmpp_2m", "euler", "heun")


@dataclass(frozen=True)
class Setting:
    """One way of sampling: a row of the demo grid, a line of the evaluation table."""
    name: str
    conditional: bool          # digits requested (CFG rows) or the null token (unconditional rows)
    cfg_scale: float = 1.0     # 1 = no CFG
    seg: SegSettings = SegSettings()
    # Sample from SEG's perturbed prediction alone (every row through the blurred attention, no guidance):
    # what SEG guides away from. A diagnostic: SEG can only add structure that this loses.
    perturbed_only: bool = False
    # OSEG's decomposition for this setting only ("key" or "query", lib_seg/oseg.py); None: the module's switch
    # as it stands. Lets one run score both decompositions from the same noise.
    oseg_reference: Optional[str] = None


class PerturbedDenoiser(SegCFGDenoiser):
    """The SEG rows' prediction as the whole step: the same session and attention patch as SEG's separate
    pass, applied to every row, and returned unguided."""

    def __call__(self, x, sigma, cond, uncond=None):
        sigma = sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma
        self.step += 1
        return self.perturbed(x, sigma, cond)


def denoiser_calls(sampler, steps):
    """How many times the sampler calls the denoiser (SEG's start/end interval counts these calls):
    Heun makes a second call on every step but the last, whose next sigma is 0."""
    return 2 * steps - 1 if sampler == "heun" else steps


def initial_noise(n, seed):
    """The starting noise x_T for n samples; the same seed gives every setting the same noise, so rows
    of the grid differ only by guidance."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((n, 1, IMAGE_SIZE, IMAGE_SIZE), generator=generator) * SIGMA_MAX


@torch.no_grad()
def sample(model, setting, labels, seed=0, steps=16, sampler="dpmpp_2m", callback=None, noise=None):
    """Samples for `labels` (int tensor; ignored for unconditional settings except for its length)
    -> images (n, 1, 32, 32) clamped to [-1, 1]."""
    sampling, _ = load_kdiffusion()
    n = len(labels)
    x = initial_noise(n, seed) if noise is None else noise
    sigmas = sampling.get_sigmas_karras(steps, SIGMA_MIN, SIGMA_MAX)
    null = model.null_context(n)
    if setting.conditional:
        cond, uncond = model.context(labels), (null if setting.cfg_scale != 1.0 else None)
    else:
        cond, uncond = null, None
    wrapper = PerturbedDenoiser if setting.perturbed_only else SegCFGDenoiser
    guided = wrapper(model, model.unet, setting.seg, cfg_scale=setting.cfg_scale,
                     total_steps=denoiser_calls(sampler, steps))
    with guided, _oseg_reference(setting.oseg_reference):
        step_fn = getattr(sampling, "sample_" + sampler)
        out = step_fn(guided, x, sigmas, extra_args={"cond": cond, "uncond": uncond},
                      callback=callback, disable=True)
    return out.clamp(-1.0, 1.0)


@contextmanager
def _oseg_reference(reference):
    """OSEG's internal switch (oseg.REFERENCE, read at every attention call) set for one sampling run."""
    from .. import oseg
    if reference is None:
        yield
        return
    if reference not in oseg.REFERENCES:
        raise ValueError(f"SEG: unknown OSEG reference {reference!r}; known: {', '.join(oseg.REFERENCES)}")
    previous, oseg.REFERENCE = oseg.REFERENCE, reference
    try:
        yield
    finally:
        oseg.REFERENCE = previous


def seg_settings(scale, sigma, layers, interval=(0.0, 1.0), mode="blur"):
    """SEG on `layers`; `interval` = (start, end), the fractions of the steps SEG acts in (params.py); mode
    "orthogonal" for OSEG."""
    return SegSettings(enabled=True, scale=scale, sigma=sigma, layers=layers, start=interval[0], end=interval[1],
                       mode=mode)


def perturbed_setting(sigma, layers, mode="blur", oseg_reference=None, interval=(0.0, 1.0)):
    """Sample SEG's (or, mode "orthogonal", OSEG's) perturbed prediction alone: what the guidance pushes away from."""
    name = "blurred" if mode == "blur" else "OSEG" + (f" {oseg_reference}" if oseg_reference else "")
    return Setting(f"{name} prediction alone sigma={format_sigma(sigma)}", False,
                   seg=seg_settings(1.0, sigma, layers, interval, mode), perturbed_only=True, oseg_reference=oseg_reference)


def _oseg_name(reference):
    return "OSEG" if reference is None else f"OSEG {reference}"


def demo_settings(sigmas, seg_scale, cfg_scale, layers, cfg_seg_sigma: Optional[float] = None, interval=(0.0, 1.0),
                  oseg=False, oseg_references=(None,), cfg=True):
    """The grid's rows / the table's lines: unconditional, + SEG at each sigma, CFG, CFG + SEG.
    CFG + SEG uses the largest sigma unless told otherwise (the paper's default is infinity). With `oseg`, OSEG
    rows beside the SEG ones: + OSEG at each sigma after the SEG rows, and CFG + OSEG last; one set per entry of
    `oseg_references` (None: the switch as it stands, rows named "OSEG"; "key"/"query": named "OSEG key" ...).
    `cfg=False` leaves out the CFG rows."""
    cfg_seg_sigma = max(sigmas) if cfg_seg_sigma is None else cfg_seg_sigma
    references = list(oseg_references) if oseg else []
    rows = [Setting("unconditional", False)]
    rows += [Setting(f"+ SEG sigma={format_sigma(s)}", False, seg=seg_settings(seg_scale, s, layers, interval)) for s in sigmas]
    for ref in references:
        rows += [Setting(f"+ {_oseg_name(ref)} sigma={format_sigma(s)}", False, oseg_reference=ref,
                         seg=seg_settings(seg_scale, s, layers, interval, "orthogonal")) for s in sigmas]
    if not cfg:
        return rows
    rows.append(Setting(f"CFG {cfg_scale:g}", True, cfg_scale=cfg_scale))
    rows.append(Setting(f"CFG {cfg_scale:g} + SEG sigma={format_sigma(cfg_seg_sigma)}", True, cfg_scale=cfg_scale,
                        seg=seg_settings(seg_scale, cfg_seg_sigma, layers, interval)))
    for ref in references:
        rows.append(Setting(f"CFG {cfg_scale:g} + {_oseg_name(ref)} sigma={format_sigma(cfg_seg_sigma)}", True,
                            cfg_scale=cfg_scale, oseg_reference=ref,
                            seg=seg_settings(seg_scale, cfg_seg_sigma, layers, interval, "orthogonal")))
    return rows
