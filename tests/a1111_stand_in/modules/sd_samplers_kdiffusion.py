"""Follows modules/sd_samplers_kdiffusion.py (and the Sampler base in sd_samplers_common.py) of A1111 1.10.1:
how a k-diffusion sampler drives the CFG denoiser."""
import lib_seg.kdiffusion

from modules import sd_samplers_common, shared
from modules.sd_samplers_cfg_denoiser import CFGDenoiser
from modules.shared import state

sampling, external = lib_seg.kdiffusion.load()

SAMPLERS = {  # name: (k-diffusion function, second order). A second-order sampler's total_steps is 2 * steps
    # (sd_samplers_common.SamplerData.total_steps), though Heun makes 2n - 1 calls (one in its last step).
    "Euler": ("sample_euler", False),
    "Heun": ("sample_heun", True),
}


class CFGDenoiserKDiffusion(CFGDenoiser):
    @property
    def inner_model(self):
        if self.model_wrap is None:  # a model that brings its own denoiser (SD3) is asked for it
            create = getattr(shared.sd_model, "create_denoiser", None)
            self.model_wrap = create() if create is not None else external.CompVisDenoiser(shared.sd_model, quantize=False)
        return self.model_wrap


class KDiffusionSampler:
    def __init__(self, name, sd_model):
        funcname, self.second_order = SAMPLERS[name]
        self.func = getattr(sampling, funcname)
        self.model_wrap_cfg = CFGDenoiserKDiffusion(self)
        self.model_wrap = self.model_wrap_cfg.inner_model
        self.sampler_extra_args = {}
        self.last_latent = None
        self.p = None

    def callback_state(self, d):
        state.sampling_step = d["i"]  # updated after each step: the callbacks see a lagging value

    def launch_sampling(self, steps, func):
        self.model_wrap_cfg.steps = steps
        self.model_wrap_cfg.total_steps = steps * 2 if self.second_order else steps
        state.sampling_steps = steps
        state.sampling_step = 0
        try:
            return func()
        except sd_samplers_common.InterruptedException:
            return self.last_latent

    def initialize(self, p):
        self.p = p
        self.model_wrap_cfg.p = p
        self.model_wrap_cfg.mask = getattr(p, "mask", None)
        self.model_wrap_cfg.nmask = getattr(p, "nmask", None)
        self.model_wrap_cfg.step = 0
        self.model_wrap_cfg.image_cfg_scale = getattr(p, "image_cfg_scale", None)
        self.s_min_uncond = getattr(p, "s_min_uncond", 0.0)

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        steps = steps or p.steps
        sigmas = self.model_wrap.get_sigmas(steps)
        x = x * sigmas[0]
        self.initialize(p)
        self.last_latent = x
        self.sampler_extra_args = {"cond": conditioning, "image_cond": image_conditioning, "uncond": unconditional_conditioning,
                                   "cond_scale": p.cfg_scale, "s_min_uncond": self.s_min_uncond}
        return self.launch_sampling(steps, lambda: self.func(self.model_wrap_cfg, x, sigmas, extra_args=self.sampler_extra_args,
                                                             disable=True, callback=self.callback_state))

    def sample_img2img(self, p, x, noise, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        steps = steps or p.steps
        t_enc = max(1, int(min(p.denoising_strength, 0.999) * steps))
        sigmas = self.model_wrap.get_sigmas(steps)
        sigma_sched = sigmas[steps - t_enc - 1:]
        xi = x + noise * sigma_sched[0]
        self.initialize(p)
        self.model_wrap_cfg.init_latent = x
        self.last_latent = x
        self.sampler_extra_args = {"cond": conditioning, "image_cond": image_conditioning, "uncond": unconditional_conditioning,
                                   "cond_scale": p.cfg_scale, "s_min_uncond": self.s_min_uncond}
        return self.launch_sampling(t_enc + 1, lambda: self.func(self.model_wrap_cfg, xi, sigma_sched, extra_args=self.sampler_extra_args,
                                                                 disable=True, callback=self.callback_state))


def create_sampler(name, sd_model):
    return KDiffusionSampler(name, sd_model)
