"""AUTOMATIC1111 stable-diffusion-webui 1.9 / 1.10: the batched SEG pass through the CFG denoiser callbacks.

Host behaviour this relies on (modules/sd_samplers_cfg_denoiser.py, CFGDenoiser.forward, 1.10.1):
- rows are [cond rows (image i repeated once per AND sub-prompt) | B uncond rows] when
  ``on_cfg_denoiser`` runs, and the callback may replace x, image_cond, sigma and text_cond;
- afterwards the host may drop the last B rows (skip early CFG / NGMS), pads cond vs uncond token
  lengths or evaluates them in separate calls, and with ``batch_cond_uncond`` off evaluates chunks of B
  rows, always in row order; ``combine_denoised`` reads only ``x_out[cond_index]`` and the last B rows;
- the inpainting mask is blended into ``denoised`` before ``on_cfg_after_cfg`` unless
  ``mask_before_denoising``; edit (InstructPix2Pix) models use a 3-way layout that must not change;
- the denoiser counts its own calls (``step``) against ``total_steps``; ``sampling_step`` lags.

So in an active step we insert a copy of every cond row right after the cond rows ([Nc, 2Nc) are the
SEG rows), let a UNet forward pre-hook map each UNet call to its rows by position, read the SEG rows in
``on_cfg_denoised`` and add ``s * sum_k w_k (cond_k - seg_k)`` (the host's AND weights) to the denoised
result in ``on_cfg_after_cfg``. The host works in denoised (x0) space; SEG's term is affine with
coefficients summing to one, so it holds there exactly.
"""
import copy

import torch

from .. import dit, guidance, prefix
from ..attention import patch_ldm_self_attention
from ..hooks import remove_leftovers
from ..layers import describe, select_layers
from ..params import SegParamError
from ..session import NO_ROWS, SegSession
from . import REFINER_KEY, dit_patches, neighbours

PREFIX = "[SEG]"


def notice(message):
    print(f"{PREFIX} {message}")


def create_adapter(host="a1111"):
    return A1111Adapter()


# ---------------------------------------------------------------- conditioning rows

def cond_rows(cond):
    """Number of rows of a text conditioning: a tensor, or SDXL's dict (crossattn, vector)."""
    if isinstance(cond, dict):
        return next(iter(cond.values())).shape[0]
    return cond.shape[0]


def repeat_cond(cond, n):
    """`cond` with its first n rows duplicated right after them (tensor or dict of tensors).
    A dict keeps its type (A1111's DictWithShape): a shallow copy with new tensors."""
    if isinstance(cond, dict):
        out = copy.copy(cond)
        for key, value in cond.items():
            out[key] = torch.cat([value[:n], value[:n], value[n:]])
        return out
    return torch.cat([cond[:n], cond[:n], cond[n:]])


def and_weights(denoiser, n_images, n_cond):
    """Per image, the list of (cond row, weight) the host combines (its ``conds_list``), taken from the
    multicond conditioning the sampler holds; None if it can't be known."""
    cond = getattr(getattr(denoiser, "sampler", None), "sampler_extra_args", {}).get("cond")
    batch = getattr(cond, "batch", None)
    if batch is not None and len(batch) == n_images:
        out, index = [], 0
        for prompts in batch:
            out.append([(index + k, float(getattr(c, "weight", 1.0))) for k, c in enumerate(prompts)])
            index += len(prompts)
        if index == n_cond:
            return out
    if n_cond == n_images:
        return [[(i, 1.0)] for i in range(n_images)]
    return None


# ---------------------------------------------------------------- the adapter

class A1111Adapter:
    name = "a1111"

    def __init__(self):
        self.pass_ = None

    def start(self, p, settings):
        self.stop(p)
        model = getattr(p, "sd_model", None)
        if getattr(model, "cond_stage_key", None) == "edit":
            notice("skipped: InstructPix2Pix-style edit models are not supported.")
            return False
        reason = neighbours.conflict(p, settings=settings)
        if reason:
            notice(f"skipped for this generation: {reason}.")
            return False
        unet = _unet_of(model)
        if unet is None:
            transformer = _transformer_of(model)
            if transformer is None:
                notice("skipped: this model has neither an LDM-style UNet nor SD3 transformer blocks.")
                return False
            try:
                blocks = dit.select_blocks(transformer, settings.layers, "SD3")
            except ValueError as error:
                raise SegParamError(str(error)) from None
            return self._begin(p, settings, transformer, blocks)
        if settings.mode == "skip":
            raise SegParamError(dit.SKIP_ON_UNET)
        try:
            layers = select_layers(unet, settings.layers, _model_name(model))
        except ValueError as error:
            raise SegParamError(str(error)) from None
        if not layers:
            notice(f"skipped: SEG layers '{settings.layers}' selects no self-attention in this model "
                   f"(it has {describe(unet) or 'none'}).")
            return False
        modules = dict(unet.named_modules())
        layers, reasons = neighbours.intact_layers(
            layers, neighbours.token_merging_a1111(model, unet),
            {layer.name for layer in layers if neighbours.hypertiled(modules[layer.name])})
        if reasons:
            this_pass = "the hires pass" if getattr(p, "is_hr_pass", False) else "this pass"
            if not layers:
                notice(f"skipped in {this_pass}: {'; '.join(reasons)}, which is every layer of '{settings.layers}'.")
                return False
            notice(f"{'; '.join(reasons)}: SEG leaves those layers alone in {this_pass}.")
        return self._begin(p, settings, unet, layers)

    def _begin(self, p, settings, unet, layers):
        self.pass_ = SamplingPass(p, settings, unet, layers)
        try:
            self.pass_.install()
        except dit_patches.Unsupported as why:
            self.stop(p)
            notice(f"skipped: this model ({type(unet).__name__}) is not one SEG knows how to reach ({why}).")
            return False
        except Exception:
            self.stop(p)
            raise
        return True

    def stop(self, p=None):
        current, self.pass_ = self.pass_, None
        if current is not None:
            current.close()
        remove_leftovers()


def _unet_of(model):
    unet = getattr(getattr(model, "model", None), "diffusion_model", None)
    if unet is None or not hasattr(unet, "input_blocks") or not hasattr(unet, "middle_block"):
        return None
    return unet


def _transformer_of(model):
    """SD3's MMDiT (modules/models/sd3: ``sd_model.model.diffusion_model`` with ``joint_blocks``), or None."""
    transformer = getattr(getattr(model, "model", None), "diffusion_model", None)
    return transformer if transformer is not None and dit.is_dit(transformer) else None


def _model_name(model):
    if getattr(model, "is_sdxl", False):
        return "SDXL"
    if getattr(model, "is_sd2", False):
        return "SD2"
    if getattr(model, "is_sd1", False):
        return "SD1.5"
    return None


class SamplingPass:
    """Everything of one sampling pass (first pass or hires pass): a SegSession owning every patch."""

    def __init__(self, p, settings, unet, layers):
        self.p = p
        self.settings = settings
        self.session = SegSession(settings)
        self.unet = unet
        self.layers = layers
        self.patched_unets = set()
        self.step = None      # the current active step: (Nc, B, conds_list, denoiser, x, sigma) or None
        self.seg_out = None   # (cond rows, seg rows) of the current step
        self.closed = False
        self.refiner_off = False  # the refiner lacks the layers: no SEG after the switch

    # -- installation
    def install(self):
        from modules import script_callbacks
        registry = self.session.registry
        self._patch_unet(self.unet, self.layers)
        for register, fn in ((script_callbacks.on_cfg_denoiser, self.on_cfg_denoiser),
                             (script_callbacks.on_cfg_denoised, self.on_cfg_denoised),
                             (script_callbacks.on_cfg_after_cfg, self.on_cfg_after_cfg)):
            register(fn, name="seg")
            registry.on_remove(_remover(script_callbacks, fn), "WebUI callback")
        _drop_ordered_cache(script_callbacks)
        sampler = getattr(self.p, "sampler", None)
        if sampler is not None:
            for attr in ("sample", "sample_img2img"):
                if hasattr(sampler, attr):
                    registry.replace(sampler, attr, self._closing(getattr(sampler, attr)))

    def _patch_unet(self, unet, layers):
        modules = dict(unet.named_modules())
        registry = self.session.registry
        registry.forward_pre_hook(unet, self._on_unet_call)
        if layers and isinstance(layers[0], dit.DiTBlock):  # SD3: attention through the blocks
            s = self.settings
            dit_patches.install(registry, unet, layers, s.mode, s.sigma, lambda: self.session.call)
            prefix.install(registry, unet, prefix.dit_prefix(dit.dit_blocks(unet), layers), self._copies)
            self.patched_unets.add(id(unet))
            return
        patch_ldm_self_attention(registry, [modules[layer.name] for layer in layers], self.session)
        prefix.install(registry, unet, prefix.unet_prefix(unet, layers), self._copies)
        self.patched_unets.add(id(unet))

    def _copies(self):
        call = self.session.call
        return None if call is None else call.copies

    def _closing(self, sample):
        def sample_then_close(*args, **kwargs):
            try:
                return sample(*args, **kwargs)
            finally:
                self.close()
        return sample_then_close

    def close(self):
        if not self.closed:
            self.closed = True
            self.step = self.seg_out = None
            self.session.close()

    # -- per UNet call
    def _on_unet_call(self, module, args):
        x = args[0]
        self.session.begin_call(x.shape[0], x.shape[-2:])

    def _follow_model_switch(self):
        """The refiner swaps the model mid-sampling; patch the new UNet too (removed with the rest)."""
        try:
            from modules import shared
            unet = _unet_of(shared.sd_model)
        except Exception:
            return
        if unet is None or id(unet) in self.patched_unets:
            return
        try:
            layers = select_layers(unet, self.settings.layers, _model_name(shared.sd_model))
        except ValueError as error:
            # SEG ends at the switch: no SEG rows on the refiner (they would cost rows for a zero term).
            notice(f"SEG ends at the refiner switch: {error}")
            self.patched_unets.add(id(unet))
            self.refiner_off = True
            self.p.extra_generation_params[REFINER_KEY] = "off"
            return
        self.unet = unet
        self._patch_unet(unet, layers)
        self.p.extra_generation_params[REFINER_KEY] = "on"

    # -- the three CFG denoiser callbacks
    def _ours(self, denoiser):
        owner = getattr(denoiser, "p", None)
        return not self.closed and (owner is None or owner is self.p)

    def on_cfg_denoiser(self, params):
        self.step = self.seg_out = None
        if not self._ours(params.denoiser):
            return
        self._follow_model_switch()
        denoiser = params.denoiser
        n_rows = params.x.shape[0]
        n_cond = cond_rows(params.text_cond)
        n_images = cond_rows(params.text_uncond)
        step, total = _sampler_progress(denoiser, params)
        self.session.begin_step(n_rows, NO_ROWS)
        if self.refiner_off or n_rows != n_cond + n_images or not self.session.step_active(step, total):
            return  # outside the interval, or a layout we don't know (edit model's 3-way): no SEG rows
        conds_list = and_weights(denoiser, n_images, n_cond)
        if conds_list is None:
            return

        def dup(t):
            return torch.cat([t[:n_cond], t[:n_cond], t[n_cond:]])

        # Build everything first, then replace: a failure halfway would leave the host a broken batch.
        x, sigma = dup(params.x), dup(params.sigma)
        image_cond = dup(params.image_cond) if params.image_cond is not None and \
            params.image_cond.shape[0] == n_rows else params.image_cond
        text_cond = repeat_cond(params.text_cond, n_cond)
        params.x, params.sigma, params.image_cond, params.text_cond = x, sigma, image_cond, text_cond
        # OSEG perturbs the uncond rows too (its CFG uses the perturbed uncond): they follow the SEG rows.
        perturbed_stop = n_rows + n_cond if self.settings.mode == "orthogonal" else 2 * n_cond
        self.session.begin_step(n_rows + n_cond, slice(n_cond, perturbed_stop),
                                copies=prefix.Copies(slice(n_cond, 2 * n_cond), slice(0, n_cond)))
        # The last B rows hold each image's latent and sigma once (the rescale needs them).
        self.step = (n_cond, n_images, conds_list, denoiser, params.x[-n_images:], params.sigma[-n_images:])

    def on_cfg_denoised(self, params):
        if self.step is None or self.closed:
            return
        n_cond = self.step[0]
        x_out = params.x
        self.seg_out = (x_out[:n_cond].clone(), x_out[n_cond:2 * n_cond].clone())

    def on_cfg_after_cfg(self, params):
        try:
            if self.step is None or self.seg_out is None or self.closed:
                return
            n_cond, n_images, conds_list, denoiser, x_img, sigma_img = self.step
            cond, seg = self.seg_out
            denoised = params.x
            if denoised.shape[0] != n_images:
                return
            s = self.settings.scale
            terms = []
            for rows in conds_list:
                index = [i for i, _ in rows]
                terms.append(guidance.weighted_seg_term(cond[index], seg[index], [w for _, w in rows], s))
            term = torch.stack(terms).to(denoised.dtype)
            guided = denoised + term
            if self.settings.rescale > 0:
                reference = torch.stack([cond[rows[0][0]] for rows in conds_list]).to(denoised.dtype)
                if _predicts_noise(denoiser):
                    guided = guidance.rescale(guided, reference, self.settings.rescale)
                else:
                    guided = guidance.rescale_denoised(x_img.to(denoised.dtype), sigma_img, guided, reference,
                                                       self.settings.rescale)
            mask = getattr(denoiser, "mask", None)
            if mask is not None and not getattr(denoiser, "mask_before_denoising", False):
                # The host already blended the original latent into `denoised`; change only the part it keeps.
                guided = denoised + (guided - denoised) * denoiser.nmask
            params.x = guided
        finally:
            self.step = self.seg_out = None
            self.session.end_step()


def _sampler_progress(denoiser, params):
    """(sampler step, steps) of this denoiser call, from the denoiser's own call counter (sampling_step lags)."""
    return guidance.sampler_step(int(getattr(denoiser, "step", params.sampling_step)),
                                 int(getattr(denoiser, "total_steps", None) or params.total_sampling_steps),
                                 getattr(denoiser, "steps", None))


def _predicts_noise(denoiser):
    """A1111's timestep samplers (DDIM, DDIM CFG++, PLMS, UniPC: ``CFGDenoiserTimesteps``, which converts the
    output to x0 itself in ``get_pred_x0``) combine guidance on the noise prediction, and their "sigma" is the
    integer timestep; the k-diffusion ones combine denoised images. The rescale is defined on the noise."""
    return any(cls.__name__ == "CFGDenoiserTimesteps" for cls in type(denoiser).__mro__)


def _drop_ordered_cache(script_callbacks):
    """1.10 caches each category's sorted callback list and reuses it while the list LENGTH is unchanged;
    after another extension removed a callback the 1.9 way, a cache of equal length could hold its stale
    entry instead of ours. Dropping the cached CFG lists makes the host rebuild them from the real ones."""
    cache = getattr(script_callbacks, "ordered_callbacks_map", None)
    if isinstance(cache, dict):
        for category in ("cfg_denoiser", "cfg_denoised", "cfg_after_cfg"):
            cache.pop(category, None)


def _remover(script_callbacks, fn):
    def remove():
        script_callbacks.remove_callbacks_for_function(fn)
        # 1.10 caches the sorted callback lists by length; make sure no stale entry of ours stays there.
        for ordered in (getattr(script_callbacks, "ordered_callbacks_map", None) or {}).values():
            for entry in [c for c in ordered if getattr(c, "callback", None) == fn]:
                ordered.remove(entry)
    return remove
