"""A stand-in for the parts of Forge and reForge that the SEG adapter (lib_seg/hosts/forge.py) touches.

Written from reading the hosts' sources; behaviour restated in our own words, no host code copied.

Forge: lllyasviel/stable-diffusion-webui-forge, commit dfdcbab685e57677014f05a3309b48cc87383167 (2025-06-26)
  backend/patcher/base.py, backend/patcher/unet.py   -> patcher.py (clone deep-copies model_options,
      set_model_attn1_replace / patch_replace copies the nested dicts, post-CFG list, wrapper slot)
  backend/sampling/sampling_function.py, backend/sampling/condition.py -> sampling.py (cond entries,
      calc_cond_uncond_batch queue/batching/pop order, transformer_options keys, model_function_wrapper,
      cfg1 optimization, pre/post-CFG hooks, AND weights as entry strength)
  backend/nn/unet.py, backend/attention.py, backend/modules/k_model.py -> unet.py (original_shape, block,
      block_index, n_heads/dim_head in extra_options, attn1 replace lookup, KModel.apply_model)
  modules/processing.py, modules/sd_samplers_kdiffusion.py, modules/sd_samplers_cfg_denoiser.py,
  modules/sd_samplers_common.py -> webui.py (forge_objects reset before each pass, hires pass calling
      process_before_every_sampling twice, CFGDenoiser step/total_steps, sample / sample_img2img)
reForge: Panchovix/stable-diffusion-webui-reForge, commit 3b56b268ad9158ee8b30900973b6ccda4ec22241 (2026-03-11)
  ldm_patched/modules/samplers.py (calc_cond_batch, cfg_function, sampling_function),
  ldm_patched/modules/model_patcher.py, ldm_patched/ldm/modules/attention.py (optimized_attention,
  attn_precision in extra_options), ldm_patched/ldm/modules/diffusionmodules/openaimodel.py,
  modules_forge/forge_sampler.py (cond entries with strength), modules/processing.py
  -> the flavor="reforge" branches of the same modules.

The UNet itself is the real ldm UNetModel (stable-diffusion-sdkit); unet.py adds the glue that makes it
behave like Forge's UNet towards attention patches.
"""
