"""Follows modules/processing.py of A1111 1.10.1: the order in which process_images calls script hooks,
prepares conds and runs the sampler (first pass; hires second pass at another size; img2img with an
inpainting mask). Everything unrelated (VAE, saving, face restoration, styles, ...) is left out."""
import torch

from modules import sd_models, sd_samplers, shared
from modules.shared import state


class Processed:
    def __init__(self, p, samples):
        self.samples = samples
        self.extra_generation_params = dict(p.extra_generation_params)


def _noise(seeds, shape):
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])


class StableDiffusionProcessing:
    def __init__(self, c, uc, *, width=128, height=128, steps=4, cfg_scale=5.0, batch_size=1, seed=1,
                 sampler_name="Euler", scripts=None, script_args=(), s_min_uncond=0.0,
                 refiner_model=None, refiner_switch_at=None):
        self.c, self.uc = c, uc
        self.width, self.height = width, height
        self.steps, self.cfg_scale, self.batch_size = steps, cfg_scale, batch_size
        self.seeds = [seed + i for i in range(batch_size)]
        self.sampler_name = sampler_name
        self.scripts = scripts
        self.script_args = tuple(script_args)
        self.s_min_uncond = s_min_uncond
        self.refiner_model, self.refiner_switch_at = refiner_model, refiner_switch_at
        self.extra_generation_params = {}
        self.token_merging_ratio = self.token_merging_ratio_hr = 0.0
        self.sampler = None
        self.is_hr_pass = False
        self.mask = self.nmask = None

    @property
    def sd_model(self):
        return shared.sd_model

    def setup_prompts(self):
        self.all_prompts = ["prompt"] * self.batch_size

    def get_token_merging_ratio(self, for_hr=False):
        if for_hr:
            return self.token_merging_ratio_hr or shared.opts.token_merging_ratio_hr or self.token_merging_ratio \
                or shared.opts.token_merging_ratio
        return self.token_merging_ratio or shared.opts.token_merging_ratio

    def get_conds(self):
        return self.c, self.uc

    def init(self):
        pass

    def txt2img_image_conditioning(self, x):
        if self.sd_model.model.conditioning_key == "hybrid":  # inpainting model, no mask: full mask + empty image
            cond = x.new_zeros(x.shape[0], 5, x.shape[2], x.shape[3])
            cond[:, 0] = 1.0
            return cond
        return x.new_zeros(x.shape[0], 5, 1, 1)  # ignored by crossattn models


def process_images(p):
    # Token merging is applied to the model around the whole generation (and again for the hires pass).
    sd_models.apply_token_merging(p.sd_model, p.get_token_merging_ratio())
    try:
        return process_images_inner(p)
    finally:
        sd_models.apply_token_merging(p.sd_model, 0)


def process_images_inner(p):
    if p.scripts is not None:
        p.scripts.before_process(p)
    p.setup_prompts()
    if p.scripts is not None:
        p.scripts.process(p)
    with torch.no_grad():
        p.init()
        samples = p.sample(conditioning=p.c, unconditional_conditioning=p.uc)
    res = Processed(p, samples)
    if p.scripts is not None:
        p.scripts.postprocess(p, res)
    return res


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    def __init__(self, c, uc, *, enable_hr=False, hr_scale=1.5, hr_second_pass_steps=0, denoising_strength=0.6, **kw):
        super().__init__(c, uc, **kw)
        self.enable_hr, self.hr_scale, self.hr_second_pass_steps = enable_hr, hr_scale, hr_second_pass_steps
        self.denoising_strength = denoising_strength

    def sample(self, conditioning, unconditional_conditioning):
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        x = _noise(self.seeds, (4, self.height // 8, self.width // 8))
        if self.scripts is not None:
            self.scripts.process_before_every_sampling(self, x=x, noise=x, c=conditioning, uc=unconditional_conditioning)
        samples = self.sampler.sample(self, x, conditioning, unconditional_conditioning,
                                      image_conditioning=self.txt2img_image_conditioning(x))
        if not self.enable_hr or state.interrupted:
            return samples
        return self.sample_hr_pass(samples)

    def sample_hr_pass(self, samples):
        self.is_hr_pass = True
        target = (int(self.height * self.hr_scale) // 8, int(self.width * self.hr_scale) // 8)
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        samples = torch.nn.functional.interpolate(samples, size=target, mode="nearest")
        image_conditioning = self.txt2img_image_conditioning(samples)
        noise = _noise(self.seeds, samples.shape[1:])
        sd_models.apply_token_merging(self.sd_model, self.get_token_merging_ratio(for_hr=True))
        if self.scripts is not None:
            self.scripts.before_hr(self)
            self.scripts.process_before_every_sampling(self, x=samples, noise=noise, c=self.c, uc=self.uc)
        samples = self.sampler.sample_img2img(self, samples, noise, self.c, self.uc,
                                              steps=self.hr_second_pass_steps or self.steps,
                                              image_conditioning=image_conditioning)
        sd_models.apply_token_merging(self.sd_model, self.get_token_merging_ratio())
        self.sampler = None
        self.is_hr_pass = False
        return samples


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    def __init__(self, c, uc, *, init_latent, mask=None, denoising_strength=0.75, image_cfg_scale=None,
                 image_conditioning=None, **kw):
        super().__init__(c, uc, **kw)
        self.init_latent = init_latent
        self.latent_mask = mask
        self.denoising_strength = denoising_strength
        self.image_cfg_scale = image_cfg_scale
        self.given_image_conditioning = image_conditioning

    def get_token_merging_ratio(self, for_hr=False):
        return self.token_merging_ratio or shared.opts.token_merging_ratio_img2img or shared.opts.token_merging_ratio

    def init(self):
        self.image_cfg_scale = self.image_cfg_scale if self.sd_model.cond_stage_key == "edit" else None
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        if self.latent_mask is not None:  # 1 = keep the original, as p.mask in the WebUI
            self.mask = self.latent_mask
            self.nmask = 1.0 - self.latent_mask
        if self.given_image_conditioning is not None:
            self.image_conditioning = self.given_image_conditioning
        else:
            self.image_conditioning = self.txt2img_image_conditioning(self.init_latent)

    def sample(self, conditioning, unconditional_conditioning):
        x = _noise(self.seeds, self.init_latent.shape[1:])
        if self.scripts is not None:
            self.scripts.process_before_every_sampling(self, x=self.init_latent, noise=x, c=conditioning,
                                                       uc=unconditional_conditioning)
        samples = self.sampler.sample_img2img(self, self.init_latent, x, conditioning, unconditional_conditioning,
                                              image_conditioning=self.image_conditioning)
        if self.mask is not None:
            samples = samples * self.nmask + self.init_latent * self.mask
        return samples
