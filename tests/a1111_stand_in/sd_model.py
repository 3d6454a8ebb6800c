"""What k-diffusion's CompVisDenoiser calls inside A1111 1.10.1, on the real ldm UNets of tests/unets.py.
Follows ldm/models/diffusion/ddpm.py (LatentDiffusion.apply_model, DiffusionWrapper: "crossattn",
"hybrid" = c_concat channels prepended) and modules/sd_models_xl.py (SDXL: dict with crossattn/vector)."""
import torch


class DiffusionWrapper(torch.nn.Module):
    def __init__(self, unet, conditioning_key):
        super().__init__()
        self.diffusion_model = unet
        self.conditioning_key = conditioning_key


class SDModel(torch.nn.Module):
    def __init__(self, unet, conditioning_key="crossattn", cond_stage_key="txt", is_sdxl=False, context_dim=32):
        super().__init__()
        self.model = DiffusionWrapper(unet, conditioning_key)
        self.cond_stage_key = cond_stage_key
        self.is_sdxl = is_sdxl
        self.is_sd1 = not is_sdxl
        self.parameterization = "eps"
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, 0).to(torch.get_default_dtype()))
        self.cond_stage_model_empty_prompt = torch.zeros(1, 77, context_dim)

    def apply_model(self, x, t, cond):
        unet = self.model.diffusion_model
        if self.is_sdxl:
            return unet(x, t, context=cond["crossattn"], y=cond["vector"])
        context = torch.cat(cond["c_crossattn"], 1)
        if self.model.conditioning_key == "hybrid":
            x = torch.cat([x] + cond["c_concat"], dim=1)
        return unet(x, t, context=context)
