"""The WebUI side around the patcher: forge_objects, the CFG denoiser, the k-diffusion sampler and the
txt2img (+ hires) flow, as far as a script's process_before_every_sampling is concerned.

- processing.py: before every sampling pass the host resets ``sd_model.forge_objects`` to a shallow copy
  of ``forge_objects_after_applying_lora`` and then calls the scripts' process_before_every_sampling.
  ``sample_hr_pass`` sets ``p.is_hr_pass`` True first and back to False at its end (Forge dfdcbab6
  modules/processing.py, reForge 3b56b268 the same), so the scripts' hooks of the hires pass see it.
  Forge's hires pass calls process_before_every_sampling once before that reset and once after it;
  reForge resets first and calls it once.
- sd_samplers_cfg_denoiser.py: the denoiser reads ``forge_objects.unet`` on every call, turns the A1111
  conds into cond entries (AND weights as strengths) and calls the sampling function; ``step`` counts
  its calls and ``total_steps`` is set by launch_sampling (x2 for second-order samplers).
- sd_samplers_kdiffusion.py: sample() noises with sigmas[0] and runs the sampler on the full schedule;
  sample_img2img() runs on the tail of the schedule, t_enc + 1 entries.
"""
import copy

import torch

from lib_seg.kdiffusion import load

from . import sd_samplers_common
from .sampling import compile_conditions, compile_weighted_conditions, sampling_function

k_sampling, _ = load()


class ForgeObjects:
    def __init__(self, unet):
        self.unet = unet

    def shallow_copy(self):
        return copy.copy(self)


class SDModel:
    def __init__(self, unet_patcher):
        self.forge_objects_original = ForgeObjects(unet_patcher)
        self.forge_objects_after_applying_lora = self.forge_objects_original.shallow_copy()
        self.forge_objects = self.forge_objects_original.shallow_copy()


class CFGDenoiser:
    def __init__(self, sampler, flavor):
        self.sampler = sampler
        self.flavor = flavor
        self.step = 0
        self.steps = None         # sampler steps of the pass (launch_sampling)
        self.total_steps = None   # expected denoiser calls: steps, x2 for second-order samplers
        self.max_chunks = None
        self.on_call = None  # test hook: called with the step number before each evaluation
        self.p = None

    def __call__(self, x, sigma, cond, uncond, cond_scale):
        if self.on_call is not None:
            self.on_call(self.step)
        if self.p is not None:
            sd_samplers_common.apply_refiner(self, x)  # may swap the model (A1111-style refiner)
        unet = self.sampler.sd_model.forge_objects.unet
        tensor, conds_list = cond
        entries = compile_weighted_conditions(tensor, conds_list)
        denoised = sampling_function(unet.model, x, sigma, compile_conditions(uncond), entries, cond_scale,
                                     unet.model_options, self.flavor, self.max_chunks,
                                     control=getattr(unet, "controlnet_linked_list", None))
        self.step += 1
        return denoised


class KDiffusionSampler:
    def __init__(self, sd_model, flavor="forge", sampler="euler"):
        self.sd_model = sd_model
        self.func = getattr(k_sampling, f"sample_{sampler}")
        self.second_order = sampler in ("heun", "dpm_2")
        self.model_wrap_cfg = CFGDenoiser(self, flavor)

    def get_sigmas(self, steps):
        return self.sd_model.forge_objects.unet.model.schedule.get_sigmas(steps)

    def launch_sampling(self, steps, func):
        self.model_wrap_cfg.step = 0
        self.model_wrap_cfg.steps = steps
        self.model_wrap_cfg.total_steps = steps * 2 if self.second_order else steps
        return func()

    def _extra(self, p, c, uc):
        return {"cond": c, "uncond": uc, "cond_scale": p.cfg_scale}

    def sample(self, p, x, c, uc, steps=None):
        steps = steps or p.steps
        sigmas = self.get_sigmas(steps)
        x = x * sigmas[0]
        return self.launch_sampling(steps, lambda: self.func(self.model_wrap_cfg, x, sigmas, extra_args=self._extra(p, c, uc), disable=True))

    def sample_img2img(self, p, x, noise, c, uc, steps=None):
        steps = steps or p.steps
        t_enc = int(min(p.denoising_strength, 0.999) * steps)
        sigmas = self.get_sigmas(steps)
        schedule = sigmas[steps - t_enc - 1:]
        xi = x + noise * schedule[0]
        return self.launch_sampling(t_enc + 1, lambda: self.func(self.model_wrap_cfg, xi, schedule, extra_args=self._extra(p, c, uc), disable=True))


class Processing:
    """txt2img with an optional hires pass; `scripts` are objects with process_before_every_sampling(p)."""

    sampler_class = KDiffusionSampler  # a host variant's sampler (forge_stand_in/neo.py)

    def __init__(self, sd_model, cond, uncond, *, latent_hw=(16, 16), batch_size=1, steps=4, cfg_scale=5.0,
                 flavor="forge", sampler="euler", hr_latent_hw=None, hr_steps=3, denoising_strength=0.6, seed=0,
                 refiner=None, refiner_switch_at=None, token_merging_ratio=0.0, token_merging_ratio_hr=0.0):
        self.sd_model, self.c, self.uc = sd_model, cond, uncond
        self.latent_hw, self.batch_size, self.steps, self.cfg_scale = latent_hw, batch_size, steps, cfg_scale
        self.flavor, self.sampler_name, self.seed = flavor, sampler, seed
        self.hr_latent_hw, self.hr_steps, self.denoising_strength = hr_latent_hw, hr_steps, denoising_strength
        self.refiner, self.refiner_switch_at = refiner, refiner_switch_at  # refiner: an SDModel
        self.token_merging_ratio, self.token_merging_ratio_hr = token_merging_ratio, token_merging_ratio_hr
        self.extra_generation_params = {}
        self.scripts = []
        self.sampler = None
        self.is_hr_pass = False  # processing.py: True from the start of sample_hr_pass to its end

    def _apply_token_merging(self, ratio):
        """modules/sd_models.apply_token_merging: right after the forge_objects reset, before the scripts."""
        if ratio > 0:
            from .tomesd import TomePatcher
            self.sd_model.forge_objects.unet = TomePatcher().patch(model=self.sd_model.forge_objects.unet, ratio=ratio)

    def _before_sampling(self):
        for script in self.scripts:
            script.process_before_every_sampling(self)

    def sample(self):
        self.sampler = self.sampler_class(self.sd_model, self.flavor, self.sampler_name)
        self.sampler.model_wrap_cfg.p = self
        generator = torch.Generator().manual_seed(self.seed)
        x = torch.randn((self.batch_size, 4) + tuple(self.latent_hw), generator=generator)
        self.sd_model.forge_objects = self.sd_model.forge_objects_after_applying_lora.shallow_copy()
        self._apply_token_merging(self.token_merging_ratio)
        self._before_sampling()
        samples = self.sampler.sample(self, x, self.c, self.uc)
        if self.hr_latent_hw is None:
            return samples
        self.is_hr_pass = True
        samples = torch.nn.functional.interpolate(samples, size=tuple(self.hr_latent_hw), mode="bilinear")
        noise = torch.randn(samples.shape, generator=generator)
        if self.flavor == "forge":
            self._before_sampling()
        self.sd_model.forge_objects = self.sd_model.forge_objects_after_applying_lora.shallow_copy()
        self._apply_token_merging(self.token_merging_ratio_hr or self.token_merging_ratio)
        self._before_sampling()
        samples = self.sampler.sample_img2img(self, samples, noise, self.c, self.uc, steps=self.hr_steps)
        self.is_hr_pass = False
        return samples
