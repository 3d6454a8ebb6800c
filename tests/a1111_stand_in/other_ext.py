"""Stand-ins for two more A1111 extensions, restated in our own words, only as far as SEG is concerned.

Dynamic Thresholding (mcmonkeyprojects/sd-dynamic-thresholding, commit 73e4e04565aa86237d66764ac58ffae1f7e40e48,
scripts/dynamic_thresholding.py + dynthres_core.py): in process_batch it swaps the sampler for one whose CFG
denoiser is ``CustomCFGDenoiser`` (a subclass of the host's, with ``main_class`` = its settings) overriding
``combine_denoised``: every row before the last B (``x_out[:-B]``) is taken as a cond row, reshaped to
(B, rows / B), weighted by ``conds_list`` and summed against the uncond rows, then thresholded. Only that
row handling is restated here (the thresholding is left out: mimic scale = CFG scale and percentile 1 make it
the identity).

Regional Prompter (hako-mikan/sd-webui-regional-prompter, commit be623452203b396ed87b85583a3cfd56e8157214,
scripts/rp.py): an always-on script titled "Regional Prompter" whose ``active`` is set in process; its
attention mode splits cross-attention rows into cond/uncond halves (``x.chunk(2)``, scripts/attention.py)
and its latent mode reorders rows by position in its own on_cfg_denoiser callback. Only the detectable
state is restated.
"""
import torch


class DynamicThresholdingScript:
    filename = "extensions/sd-dynamic-thresholding/scripts/dynamic_thresholding.py"

    def __init__(self):
        self._original = None

    def title(self):
        return "Dynamic Thresholding (CFG Scale Fix)"

    def show(self, is_img2img):
        from modules import scripts
        return scripts.AlwaysVisible

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        from modules import sd_samplers_kdiffusion
        self._original = original = sd_samplers_kdiffusion.create_sampler

        class CustomCFGDenoiser(sd_samplers_kdiffusion.CFGDenoiserKDiffusion):
            main_class = {"mimic_scale": p.cfg_scale}

            def combine_denoised(self, x_out, conds_list, uncond, cond_scale):
                b = uncond.shape[0]
                denoised_uncond = x_out[-b:]
                cond = x_out[:-b]
                weights = torch.tensor(conds_list).select(2, 1).reshape(b, -1, 1, 1, 1)
                stacked = cond.reshape((b, cond.shape[0] // b) + tuple(denoised_uncond.shape[1:]))
                return denoised_uncond + ((stacked - denoised_uncond.unsqueeze(1)) * weights).sum(1) * cond_scale

        def create_sampler(name, model):
            sampler = original(name, model)
            sampler.model_wrap_cfg = CustomCFGDenoiser(sampler)
            return sampler

        sd_samplers_kdiffusion.create_sampler = create_sampler

    def process_before_every_sampling(self, p, *args, **kwargs):
        pass

    def before_hr(self, p, *args):
        pass

    def postprocess(self, p, processed, *args):
        from modules import sd_samplers_kdiffusion
        if self._original is not None:
            sd_samplers_kdiffusion.create_sampler = self._original


class RegionalPrompterScript:
    filename = "extensions/sd-webui-regional-prompter/scripts/rp.py"

    def __init__(self, active=True):
        self.wanted, self.active = active, False

    def title(self):
        return "Regional Prompter"

    def show(self, is_img2img):
        from modules import scripts
        return scripts.AlwaysVisible

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        self.active = self.wanted

    def process_before_every_sampling(self, p, *args, **kwargs):
        pass

    def before_hr(self, p, *args):
        pass

    def postprocess(self, p, processed, *args):
        self.active = False
