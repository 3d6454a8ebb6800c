"""Follows modules/sd_samplers_common.py of A1111 1.10.1 (the parts the CFG denoiser calls)."""
from modules import shared


class InterruptedException(BaseException):
    pass


def store_latent(decoded):
    pass


def apply_refiner(cfg_denoiser, sigma=None):
    """Switch to the refiner model once step / total_steps reaches p.refiner_switch_at."""
    p = cfg_denoiser.p
    completed_ratio = cfg_denoiser.step / cfg_denoiser.total_steps
    switch_at = getattr(p, "refiner_switch_at", None)
    refiner = getattr(p, "refiner_model", None)
    if switch_at is not None and completed_ratio < switch_at:
        return False
    if refiner is None or shared.sd_model is refiner:
        return False
    p.extra_generation_params["Refiner switch at"] = switch_at
    shared.sd_model = refiner  # reload_model_weights(info=refiner) with a model of another config
    cfg_denoiser.update_inner_model()
    return True
