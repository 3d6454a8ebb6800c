"""Forge Neo: where its sampling path differs from Forge dfdcbab6 for an extension, restated in our words.

Host: papaioannou-themistoklis/WebUI-Neo-Forge, commit 7862a9646a01c7268bec3a425d3ea80598d72e48 (2025-10-05), a fork
of Haoming02's Forge ``neo`` branch.

- modules/sd_samplers_cfg_denoiser.py, ``CFGDenoiser.forward(x, sigma, uncond, cond, cond_scale, s_min_uncond,
  image_cond, **kwargs)``: the sampler's ``model_options`` keyword (an empty dict when absent) goes to
  ``sampling_function(..., extra_model_options=...)``.
- backend/sampling/sampling_function.py, ``sampling_function``: the options it works with are a shallow copy of the
  UNet patcher's ``model_options``, ``update()``d with the extra ones: a key the sampler sends replaces the
  patcher's entry as a whole (lists are not merged).
- modules/sd_samplers_cfgpp.py, ``sample_euler_cfg_pp`` (and the other five CFG++ samplers that
  modules_forge/forge_alter_samplers.py registers as "Euler CFG++", "DPM++ 2M CFG++", ...): copies
  ``extra_args.get("model_options", {})`` (empty: the k-diffusion extra args carry none), adds its own post-CFG
  function through backend/patcher/base.py ``set_model_options_post_cfg_function(..., disable_cfg1_optimization=True)``
  (that function keeps ``args["uncond_denoised"]`` and returns ``args["denoised"]`` unchanged), and then each step
  calls the denoiser with those options, takes the direction from the kept uncond prediction and steps from the
  guided one: ``x = denoised + (x - uncond_denoised) / sigma * sigma_next``.

(At CFG 1 modules/processing.py sets the negative conditioning to None before sampling, so even a CFG++
sampler's denoiser calls hold cond rows only; the Processing of this stand-in does not model that.)

So on Neo, with a CFG++ sampler, the patcher's ``sampler_post_cfg_function`` list (an extension's guidance term) is
not called at all; the patcher's other options (``model_function_wrapper``, ``transformer_options``) still apply.
"""
from .sampling import compile_conditions, compile_weighted_conditions, sampling_function
from . import sd_samplers_common
from .webui import CFGDenoiser, KDiffusionSampler, Processing


class NeoCFGDenoiser(CFGDenoiser):
    """Called like a torch module (``__call__`` -> ``forward``), with the sampler's keywords."""

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, x, sigma, cond, uncond, cond_scale, **kwargs):
        if self.on_call is not None:
            self.on_call(self.step)
        if self.p is not None:
            sd_samplers_common.apply_refiner(self, x)
        unet = self.sampler.sd_model.forge_objects.unet
        model_options = dict(unet.model_options or {})
        model_options.update(kwargs.get("model_options", {}) or {})
        tensor, conds_list = cond
        entries = compile_weighted_conditions(tensor, conds_list)
        denoised = sampling_function(unet.model, x, sigma, compile_conditions(uncond), entries, cond_scale,
                                     model_options, self.flavor, self.max_chunks,
                                     control=getattr(unet, "controlnet_linked_list", None))
        self.step += 1
        return denoised


def sample_euler_cfg_pp(model, x, sigmas, extra_args=None, disable=None):
    extra_args = {} if extra_args is None else extra_args
    kept = [None]

    def post_cfg_function(args):
        kept[0] = args["uncond_denoised"]
        return args["denoised"]

    model_options = dict(extra_args.get("model_options", {}))
    model_options["sampler_post_cfg_function"] = model_options.get("sampler_post_cfg_function", []) + [post_cfg_function]
    model_options["disable_cfg1_optimization"] = True
    extra_args = dict(extra_args, model_options=model_options)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        x = denoised + (x - kept[0]) / sigmas[i] * sigmas[i + 1]
    return x


class NeoKDiffusionSampler(KDiffusionSampler):
    def __init__(self, sd_model, flavor="forge", sampler="euler"):
        cfgpp = sampler.endswith("_cfg_pp")
        super().__init__(sd_model, flavor, sampler[:-len("_cfg_pp")] if cfgpp else sampler)
        if cfgpp:
            self.func = sample_euler_cfg_pp
        self.model_wrap_cfg = NeoCFGDenoiser(self, flavor)


class NeoProcessing(Processing):
    sampler_class = NeoKDiffusionSampler
