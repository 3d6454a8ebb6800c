"""Follows modules/sd_samplers.py of A1111 1.10.1: ``create_sampler`` picks the k-diffusion or the timestep
sampler class by the sampler's name."""
from modules import sd_samplers_kdiffusion, sd_samplers_timesteps

TIMESTEP_SAMPLERS = ("DDIM",)


def create_sampler(name, sd_model):
    if name in TIMESTEP_SAMPLERS:
        return sd_samplers_timesteps.create_sampler(name, sd_model)
    return sd_samplers_kdiffusion.create_sampler(name, sd_model)
