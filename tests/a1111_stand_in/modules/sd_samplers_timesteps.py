"""Follows modules/sd_samplers_timesteps.py and sd_samplers_timesteps_impl.py (``ddim``) of A1111 1.10.1: the
timestep samplers (DDIM, DDIM CFG++, PLMS, UniPC). What differs from the k-diffusion samplers for an extension:
the CFG denoiser's inner model returns the noise prediction (eps) and takes the integer timestep where the
k-diffusion wrapper takes sigma, so the rows, ``on_cfg_denoised``'s x and ``on_cfg_after_cfg``'s x are eps; the
inpainting mask is blended before denoising. Only DDIM with eta 0 is reproduced (the others drive the same
denoiser)."""
import torch

from modules import sd_samplers_common, shared
from modules.sd_samplers_cfg_denoiser import CFGDenoiser
from modules.shared import state


class CompVisTimestepsDenoiser(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.inner_model = model

    def forward(self, input, timesteps, **kwargs):
        return self.inner_model.apply_model(input, timesteps, **kwargs)


class CFGDenoiserTimesteps(CFGDenoiser):
    def __init__(self, sampler):
        super().__init__(sampler)
        self.alphas = shared.sd_model.alphas_cumprod
        self.mask_before_denoising = True

    def get_pred_x0(self, x_in, x_out, sigma):
        a_t = self.alphas[sigma.to(dtype=int)][:, None, None, None]
        return (x_in - (1 - a_t).sqrt() * x_out) / a_t.sqrt()

    @property
    def inner_model(self):
        if self.model_wrap is None:
            self.model_wrap = CompVisTimestepsDenoiser(shared.sd_model)
        return self.model_wrap


def ddim(model, x, timesteps, extra_args, callback=None):
    """sd_samplers_timesteps_impl.ddim with eta = 0: one denoiser call per timestep but the first (t = 1), from
    the last down: steps - 1 calls, though launch_sampling counts ``steps``."""
    alphas_cumprod = model.inner_model.inner_model.alphas_cumprod
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))]
    s_in = x.new_ones((x.shape[0],))
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = model(x, timesteps[index].item() * s_in, **extra_args)
        a_t, a_prev = alphas[index].item(), alphas_prev[index].item()
        pred_x0 = (x - (1 - a_t) ** 0.5 * e_t) / a_t ** 0.5
        x = a_prev ** 0.5 * pred_x0 + (1 - a_prev) ** 0.5 * e_t
        if callback is not None:
            callback({"x": x, "i": i, "denoised": pred_x0})
    return x


class CompVisSampler:
    def __init__(self, name, sd_model):
        self.func = ddim  # Sampler.__init__ keeps the sampling function as ``func``
        self.model_wrap_cfg = CFGDenoiserTimesteps(self)
        self.model_wrap = self.model_wrap_cfg.inner_model
        self.sampler_extra_args = {}
        self.last_latent = None
        self.p = None

    def callback_state(self, d):
        state.sampling_step = d["i"]

    def launch_sampling(self, steps, func):
        self.model_wrap_cfg.steps = steps
        self.model_wrap_cfg.total_steps = steps  # first order
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

    @staticmethod
    def get_timesteps(steps):
        return torch.clip(torch.arange(0, 1000, 1000 // steps) + 1, 0, 999)

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        steps = steps or p.steps
        timesteps = self.get_timesteps(steps)
        self.initialize(p)
        self.last_latent = x
        self.sampler_extra_args = {"cond": conditioning, "image_cond": image_conditioning, "uncond": unconditional_conditioning,
                                   "cond_scale": p.cfg_scale, "s_min_uncond": self.s_min_uncond}
        return self.launch_sampling(steps, lambda: self.func(self.model_wrap_cfg, x, timesteps, self.sampler_extra_args,
                                                        callback=self.callback_state))


def create_sampler(name, sd_model):
    return CompVisSampler(name, sd_model)
