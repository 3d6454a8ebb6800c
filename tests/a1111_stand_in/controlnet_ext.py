"""A stand-in for sd-webui-controlnet (Mikubill/sd-webui-controlnet, v1.1.455, commit
56cec5b2958edf3b1807b7e7b2b1b5186dbd2f81), restated in our own words from scripts/hook.py and
scripts/controlnet.py; only the ControlNet path of a plain unit (preprocessor "none") is reproduced.

What the extension does, and this stand-in with it:
- ``Script.process`` (controlnet.py, ``controlnet_hack`` -> ``controlnet_main_entry``) builds one set of
  parameters per enabled unit (weight; control mode "Balanced" / "My prompt is more important" /
  "ControlNet is more important" -> ``soft_injection`` = mode is not Balanced, ``cfg_injection`` = mode
  is ControlNet; the hint image, one image broadcast over the batch) and installs ``UnetHook.hook``
  (hook.py): ``p.sample`` is wrapped so the conditioning is *marked* before sampling, and the UNet's
  ``forward`` is replaced by an instance attribute (``model.forward = forward_webui``).
- Marking (``mark_prompt_context``): every ScheduledPromptConditioning of the positive prompt gets one
  extra leading token whose every value is +1024, the negative prompt's gets -1024. The CFG denoiser then
  stacks those rows like any other conditioning.
- The replaced forward (``unmark_prompt_context``): a row whose first context token is not within 1e-3
  of -1024 is a *cond* row (cond_mark 1), else uncond (cond_mark 0); the mark token is dropped from the
  context. Per active unit, the ControlNet runs on (x, hint, timesteps, context, y); with
  ``cfg_injection`` every residual is multiplied by cond_mark (uncond rows get no control); the per-layer
  scales are the weight, or with ``soft_injection`` weight * 0.825 ** (12 - i) for the 13 SD1.5 layers
  (SDXL: the first 10 of those 13 values); with the batch option "Each ControlNet unit for each image in a
  batch" (``batch_option_uint_separate``) the k-th cond row (and k-th uncond row) keeps only unit k mod
  n_units' residual; the units' residuals are summed. Then the UNet's own blocks run: residual i is added
  to the skip connection of input block i when the decoder takes it, the last one to the middle block's
  output.
- ``Script.postprocess`` restores the UNet's forward (``UnetHook.restore``) and ``p.sample`` stays wrapped
  (harmless: the object is discarded).
"""
import torch
from ldm.modules.diffusionmodules import util as ldm_util  # looked up per call (tests/precision.py swaps it)


POSITIVE_MARK = 1024.0
NEGATIVE_MARK = -POSITIVE_MARK
MARK_EPS = 1e-3
BALANCED, PROMPT, CONTROL = "Balanced", "My prompt is more important", "ControlNet is more important"
SEPARATE = "Each ControlNet unit for each image in a batch"
DEFAULT_BATCH = "All ControlNet units for all images in a batch"


class Unit:
    def __init__(self, model, hint, weight=1.0, control_mode=BALANCED, module="none"):
        self.model, self.hint, self.weight, self.control_mode = model, hint, weight, control_mode
        self.module = module  # the preprocessor's name (only "none" is restated)


class Params:
    """hook.ControlParams, the fields the ControlNet path reads."""

    def __init__(self, unit):
        self.control_model = unit.model
        self.preprocessor = {"name": unit.module}
        self.hint_cond = unit.hint
        self.weight = unit.weight
        self.soft_injection = unit.control_mode != BALANCED
        self.cfg_injection = unit.control_mode == CONTROL
        self.guidance_stopped = False
        self.control_model_type = type("ControlModelType", (), {"name": "ControlNet"})()


# ---------------------------------------------------------------- marking (hook.py)

def _is_marked(cond):
    return float((cond[..., 0, :].abs() - POSITIVE_MARK).abs().mean()) < MARK_EPS


def _mark_tensor(cond, positive):
    if _is_marked(cond):
        return cond
    return torch.cat([torch.zeros_like(cond[:1]) + (POSITIVE_MARK if positive else NEGATIVE_MARK), cond])


def mark(x, positive):
    from modules import prompt_parser  # the stand-in package, importable once harness.activate() ran
    if isinstance(x, list):
        for i in range(len(x)):
            x[i] = mark(x[i], positive)
        return x
    if isinstance(x, prompt_parser.MulticondLearnedConditioning):
        x.batch = mark(x.batch, positive)
        return x
    if isinstance(x, prompt_parser.ComposableScheduledPromptConditioning):
        x.schedules = mark(x.schedules, positive)
        return x
    if isinstance(x, prompt_parser.ScheduledPromptConditioning):
        if isinstance(x.cond, dict):
            cond = dict(x.cond, crossattn=_mark_tensor(x.cond["crossattn"], positive))
        else:
            cond = _mark_tensor(x.cond, positive)
        return prompt_parser.ScheduledPromptConditioning(x.end_at_step, cond)
    return x


def unmark(context):
    """(cond_mark (rows,1,1,1), uncond row indices, cond row indices, context without the mark token)."""
    if not _is_marked(context):
        return torch.ones(context.shape[0], 1, 1, 1, dtype=context.dtype), [], [], context
    distance = (context[:, 0, :] - NEGATIVE_MARK).abs().mean(dim=1)
    is_cond = (distance > MARK_EPS).to(context.dtype)
    flags = is_cond.tolist()
    return (is_cond[:, None, None, None], [i for i, f in enumerate(flags) if f < 0.5],
            [i for i, f in enumerate(flags) if f >= 0.5], context[:, 1:, :])


# ---------------------------------------------------------------- the replaced UNet forward (hook.py)

def _hooked_forward(unet, hook):
    is_sdxl = unet.num_classes is not None
    n_res = 10 if is_sdxl else 13

    def forward(x, timesteps=None, context=None, y=None, **kwargs):
        cond_mark, uc_indices, c_indices, context = unmark(context)
        hook.seen.append((x.shape[0], list(c_indices), list(uc_indices)))
        total = [0.0] * n_res
        for index, param in enumerate(hook.params):
            if param.guidance_stopped:
                continue
            control = param.control_model(x=x, hint=param.hint_cond, timesteps=timesteps, context=context, y=y)
            scales = [param.weight] * 13
            if param.cfg_injection:
                control = [c * cond_mark for c in control]
            if param.soft_injection:
                scales = [param.weight * 0.825 ** float(12 - i) for i in range(13)]
            scales = scales[:n_res]
            control = [c * s for c, s in zip(control, scales)]
            for i, item in enumerate(control):
                if hook.separate:
                    for pi, ci in enumerate(c_indices):
                        if pi % len(hook.params) != index:
                            item[ci] = 0
                    for pi, ci in enumerate(uc_indices):
                        if pi % len(hook.params) != index:
                            item[ci] = 0
                total[i] = item + total[i]

        emb = unet.time_embed(ldm_util.timestep_embedding(timesteps, unet.model_channels, repeat_only=False))
        if is_sdxl:
            emb = emb + unet.label_emb(y)
        ctx = [context] * unet._depth if unet._depth > 1 else context  # tests/unets.py: this ldm wants a list
        hs, h = [], x
        for module in unet.input_blocks:
            h = module(h, emb, ctx)
            hs.append(h)
        h = unet.middle_block(h, emb, ctx)
        h = h + total.pop()
        for module in unet.output_blocks:
            h = torch.cat([h, hs.pop() + total.pop()], dim=1)
            h = module(h, emb, ctx)
        return unet.out(h.type(x.dtype))

    return forward


class UnetHook:
    def __init__(self, params, separate=False, style_align=False):
        self.params = self.control_params = params
        self.separate = separate
        self.attention_auto_machine = type("AutoMachine", (), {"name": "StyleAlign" if style_align else "Read"})()
        self.attn_module_list = []
        self.seen = []  # (rows, cond row indices, uncond row indices) per hooked UNet call, for the tests
        self.model = None

    def hook(self, unet, p):
        self.model = unet
        if getattr(p, "sample_before_CN_hack", None) is None:
            p.sample_before_CN_hack = p.sample

        def process_sample(*args, **kwargs):
            mark(kwargs.get("conditioning", []), positive=True)
            mark(kwargs.get("unconditional_conditioning", []), positive=False)
            return p.sample_before_CN_hack(*args, **kwargs)

        p.sample = process_sample
        unet.forward = _hooked_forward(unet, self)

    def restore(self):
        if self.model is not None and "forward" in vars(self.model):
            del self.model.forward
        self.params = self.control_params = None


class ControlNetScript:
    """The extension's always-on script; its units are set on the object (the UI / API part is not restated)."""
    filename = "extensions/sd-webui-controlnet/scripts/controlnet.py"

    def __init__(self, units=(), batch_option=DEFAULT_BATCH, style_align=False):
        self.units = list(units)
        self.ui_batch_option_state = [batch_option, style_align]
        self.latest_network = None
        self.enabled_units = []

    def title(self):
        return "ControlNet"

    def show(self, is_img2img):
        from modules import scripts
        return scripts.AlwaysVisible

    def before_process(self, p, *args):
        pass

    def process_before_every_sampling(self, p, *args, **kwargs):
        pass

    def before_hr(self, p, *args):
        pass

    def process(self, p, *args, **kwargs):
        if self.latest_network is not None:
            self.latest_network.restore()
            self.latest_network = None
        self.enabled_units = list(self.units)
        separate = self.ui_batch_option_state[0] == SEPARATE
        style_align = self.ui_batch_option_state[1]
        if not self.enabled_units and not style_align:
            return
        self.latest_network = UnetHook([Params(u) for u in self.enabled_units], separate, style_align)
        self.latest_network.hook(p.sd_model.model.diffusion_model, p)

    def postprocess(self, p, processed, *args):
        self.enabled_units = []
        if self.latest_network is not None:
            self.latest_network.restore()
            self.latest_network = None
