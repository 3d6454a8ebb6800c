"""The hosts' built-in ControlNet path, restated in our own words (no host code copied).

Forge (commit dfdcbab685e57677014f05a3309b48cc87383167):
- extensions-builtin/sd_forge_controlnet/scripts/controlnet.py, process_unit_before_every_sampling: per unit,
  strength = weight; "My prompt is more important" sets positive and negative advanced weighting to the soft
  per-layer scales (0.825 ** k, k = 12 .. 1 for the 12 skip residuals; middle 1.0, SDXL 0.825 ** 3);
  "ControlNet is more important" sets positive = soft scales and negative = all zeros; "Balanced" none.
- modules_forge/supported_controlnet.py + backend/patcher/controlnet.py, apply_controlnet_advanced: a copy of
  the ControlNet with the hint and those weightings is linked in front of the UnetPatcher clone's
  ``controlnet_linked_list`` (add_patched_controlnet; clone() shares the list).
- backend/sampling/sampling_function.py: every cond/uncond entry gets ``control`` = that list; in
  calc_cond_uncond_batch, per batched call, the chain's ``transformer_options`` is set to the call's options
  (cond_or_uncond, sigmas, cond_mark = 1 for uncond rows) and ``c['control'] =
  control.get_control(input_x, timestep_, c, len(cond_or_uncond))`` is computed BEFORE the
  model_function_wrapper sees the call (``c['control_model']`` = the chain).
- backend/patcher/controlnet.py, ControlNet.get_control: previous units first; the hint is resized to the
  latent * 8 and broadcast to the call's rows (broadcast_image_to: per-image hints repeat per chunk); the
  ControlNet runs on the model input (x / sqrt(sigma^2 + 1)), the discrete timestep, c_crossattn and y;
  control_merge: the last output is 'middle', the others 'output' in input-block order, each * strength;
  compute_controlnet_weighting: per row, positive * (1 - cond_mark) + negative * cond_mark; then the
  previous units' residuals are added.
- backend/nn/unet.py, apply_control: after the middle block and on every skip connection taken by an output
  block, the LAST remaining entry of that list is popped and added (``h += ctrl`` in a try/except that
  prints "warning control could not be applied" and goes on without it).
reForge (commit 3b56b268ad9158ee8b30900973b6ccda4ec22241): the same flow through ldm_patched/modules/samplers.py
(get_control(..., transformer_options)) and ldm_patched/modules/controlnet.py, whose control_merge applies the
strength only: modules_forge/controlnet.py stores the advanced weightings on the ControlNet but nothing in
ldm_patched reads them, so the control modes change nothing there (flavor="reforge").
"""
import torch

BALANCED, PROMPT, CONTROL = "Balanced", "My prompt is more important", "ControlNet is more important"


def soft_weighting(is_sdxl):
    scales = [0.825 ** float(12 - i) for i in range(12)]
    return {"input": list(scales), "middle": [0.825 ** 3 if is_sdxl else 1.0], "output": list(scales)}


def zero_weighting():
    return {"input": [0.0] * 12, "middle": [0.0], "output": [0.0] * 12}


def _broadcast_hint(hint, rows, chunks):
    if hint.shape[0] == 1:
        return hint
    per_chunk = rows // chunks
    hint = hint[:per_chunk]
    if per_chunk > hint.shape[0]:
        hint = torch.cat([hint] * (per_chunk // hint.shape[0]) + [hint[:per_chunk % hint.shape[0]]])
    return hint if hint.shape[0] == rows else torch.cat([hint] * chunks)


class StandInControlNet:
    def __init__(self, model, kmodel, flavor="forge"):
        self.model = model          # tests/controlnet_like.TinyControlNet
        self.kmodel = kmodel        # for calculate_input / timestep (model_sampling_current)
        self.flavor = flavor
        self.hint = None
        self.strength = 1.0
        self.positive = self.negative = None
        self.previous_controlnet = None
        self.transformer_options = {}

    def copy_with(self, hint, strength, positive, negative):
        c = StandInControlNet(self.model, self.kmodel, self.flavor)
        c.hint, c.strength, c.positive, c.negative = hint, strength, positive, negative
        return c

    def get_control(self, x_noisy, t, cond, batched_number):
        previous = None
        if self.previous_controlnet is not None:
            previous = self.previous_controlnet.get_control(x_noisy, t, cond, batched_number)
        hint = _broadcast_hint(self.hint, x_noisy.shape[0], batched_number)
        sigma = t
        x_in = x_noisy / ((sigma ** 2 + 1) ** 0.5)[:, None, None, None]
        outputs = self.model(x=x_in, hint=hint, timesteps=self.kmodel.schedule.sigma_to_t(sigma),
                             context=cond["c_crossattn"], y=cond.get("y"))
        out = {"input": [], "middle": [outputs[-1] * self.strength],
               "output": [o * self.strength for o in outputs[:-1]]}
        if self.flavor == "forge":
            out = self._weighting(out)
        if previous is not None:
            for key in ("input", "middle", "output"):
                mine = out[key]
                for i, value in enumerate(previous[key]):
                    if i >= len(mine):
                        mine.append(value)
                    elif value is not None:
                        mine[i] = value if mine[i] is None else mine[i] + value
        return out

    def _weighting(self, control):
        if self.positive is None and self.negative is None:
            return control
        cond_mark = self.transformer_options["cond_mark"]  # 1 for uncond rows
        for key, values in control.items():
            for i, signal in enumerate(values):
                positive = (self.positive or {}).get(key, [])
                negative = (self.negative or {}).get(key, [])
                p = positive[i] if i < len(positive) else 1.0
                n = negative[i] if i < len(negative) else 1.0
                weight = p * (1.0 - cond_mark) + n * cond_mark
                values[i] = signal * weight[:, None, None, None]
        return control


def apply_controlnet(unet_patcher, controlnet, hint, strength=1.0, mode=BALANCED, is_sdxl=False):
    """The unit's process_before_every_sampling: a patcher clone with the unit in front of its chain."""
    positive = negative = None
    if mode == CONTROL:
        positive, negative = soft_weighting(is_sdxl), zero_weighting()
    elif mode == PROMPT:
        positive, negative = soft_weighting(is_sdxl), soft_weighting(is_sdxl)
    unit = controlnet.copy_with(hint, strength, positive, negative)
    clone = unet_patcher.clone()
    clone.add_patched_controlnet(unit)
    return clone


class ControlNetScript:
    """sd_forge_controlnet's always-on script, reduced to what it does before every sampling pass."""

    def __init__(self, units, is_sdxl=False):
        self.units = units  # [(StandInControlNet, hint, strength, mode)]
        self.is_sdxl = is_sdxl

    def process_before_every_sampling(self, p):
        for controlnet, hint, strength, mode in self.units:
            forge_objects = p.sd_model.forge_objects
            forge_objects.unet = apply_controlnet(forge_objects.unet, controlnet, hint, strength, mode, self.is_sdxl)

    def postprocess(self, p):
        pass


def control_hooks(unet, control):
    """apply_control on the ldm UNet of the stand-in: returns the hook handles (remove them after the call)."""

    def take(name):
        values = control.get(name) if control is not None else None
        return values.pop() if values else None

    def add(h, ctrl):
        try:
            return h + ctrl
        except RuntimeError:
            print("warning control could not be applied", tuple(h.shape), tuple(ctrl.shape))
            return h

    def after_input(module, args, out):
        ctrl = take("input")
        return out if ctrl is None else add(out, ctrl)

    def after_middle(module, args, out):
        ctrl = take("middle")
        return out if ctrl is None else add(out, ctrl)

    def before_output(module, args):
        ctrl = take("output")
        if ctrl is None:
            return None
        x = args[0]
        skip = x[:, x.shape[1] - ctrl.shape[1]:]  # the decoder input is cat([h, skip])
        return (torch.cat([x[:, :x.shape[1] - ctrl.shape[1]], add(skip, ctrl)], dim=1),) + tuple(args[1:])

    handles = [b.register_forward_hook(after_input) for b in unet.input_blocks]
    handles.append(unet.middle_block.register_forward_hook(after_middle))
    handles += [b.register_forward_pre_hook(before_output) for b in unet.output_blocks]
    return handles
