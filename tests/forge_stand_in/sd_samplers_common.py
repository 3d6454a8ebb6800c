"""``modules/sd_samplers_common.apply_refiner`` of Forge (dfdcbab6, lines 166-211) and reForge (3b56b268,
lines 186-231), restated for the stand-in: the CFG denoiser calls it (as a module attribute) at the start of
every evaluation. Once the completed fraction ``step / total_steps`` reaches ``p.refiner_switch_at`` (and a
refiner is set and not already loaded), the host loads the refiner as the new ``shared.sd_model`` (which
``p.sd_model`` returns) with fresh ``forge_objects``, so no script patch of the base model is on it, records
"Refiner" in the infotext, rebuilds the conds and returns True; otherwise False. reForge may measure the
fraction by sigma instead (an option); the stand-in uses steps, Forge's only way.
"""


def apply_refiner(cfg_denoiser, x, sigma=None):
    p = cfg_denoiser.p
    if p.refiner is None or p.sd_model is p.refiner:
        return False
    if p.refiner_switch_at is not None and cfg_denoiser.step / cfg_denoiser.total_steps < p.refiner_switch_at:
        return False
    p.extra_generation_params["Refiner"] = "refiner"
    p.extra_generation_params["Refiner switch at"] = p.refiner_switch_at
    p.refiner.forge_objects = p.refiner.forge_objects_after_applying_lora.shallow_copy()
    p.sd_model = cfg_denoiser.sampler.sd_model = p.refiner
    return True
