"""The hosts' sampling function, restated: how cond entries become batched UNet calls and how CFG and the
pre/post-CFG hooks run (Forge backend/sampling/sampling_function.py + condition.py; reForge
ldm_patched/modules/samplers.py + modules_forge/forge_sampler.py). Areas, masks, hooks and
timestep ranges are not modelled (the WebUI front ends do not set them for plain prompts); the ControlNet
chain is (control computed per batched call before the wrapper, see controlnet.py).
"""
import math

import torch


def _repeat_rows(t, rows):
    if t.shape[0] >= rows:
        return t[:rows]
    return t.repeat([math.ceil(rows / t.shape[0])] + [1] * (t.dim() - 1))[:rows]


class Condition:
    """A per-row conditioning tensor ('y', 'c_concat'): repeated/cut to the call's batch, concatenated
    only with equal shapes."""

    def __init__(self, cond):
        self.cond = cond

    def process_cond(self, batch_size):
        return type(self)(_repeat_rows(self.cond, batch_size))

    def can_concat(self, other):
        return self.cond.shape == other.cond.shape

    def concat(self, others):
        return torch.cat([self.cond] + [o.cond for o in others])


class ConditionCrossAttn(Condition):
    """Text embeddings: different token lengths still batch together when their least common multiple
    is at most 4x the shorter one; the shorter ones are then tiled along the tokens."""

    def can_concat(self, other):
        a, b = self.cond.shape, other.cond.shape
        if a == b:
            return True
        if a[0] != b[0] or a[2] != b[2]:
            return False
        return math.lcm(a[1], b[1]) // min(a[1], b[1]) <= 4

    def concat(self, others):
        conds = [self.cond] + [o.cond for o in others]
        length = 1
        for c in conds:
            length = math.lcm(length, c.shape[1])
        return torch.cat([c.repeat(1, length // c.shape[1], 1) for c in conds])


def compile_conditions(cond):
    """One entry (dict) holding the model conds of a (rows, tokens, channels) tensor or an SDXL-style dict."""
    if isinstance(cond, torch.Tensor):
        return [{"cross_attn": cond, "model_conds": {"c_crossattn": ConditionCrossAttn(cond)}}]
    model_conds = {"c_crossattn": ConditionCrossAttn(cond["crossattn"]), "y": Condition(cond["vector"])}
    if "guidance" in cond:  # Flux dev: KModel.extra_conds adds the distilled guidance per row
        model_conds["guidance"] = Condition(cond["guidance"])
    return [{"cross_attn": cond["crossattn"], "pooled_output": cond["vector"], "model_conds": model_conds}]


def compile_weighted_conditions(cond, conds_list):
    """AND prompts: conds_list[b] = [(row, weight), ...] per image; sub-prompt k of every image becomes one
    entry whose 'strength' is the weight (of the last image, as the hosts do)."""
    entries = []
    for per_prompt in zip(*conds_list):
        rows = [row for row, _ in per_prompt]
        weight = per_prompt[-1][1]
        feed = {k: v[rows] for k, v in cond.items()} if isinstance(cond, dict) else cond[rows]
        entry = compile_conditions(feed)[0]
        entry["strength"] = weight
        entries.append(entry)
    return entries


def _area_and_mult(entry, x_in):
    strength = entry.get("strength", 1.0)
    conditioning = {k: v.process_cond(batch_size=x_in.shape[0]) for k, v in entry["model_conds"].items()}
    return x_in, torch.ones_like(x_in) * strength, conditioning


def _can_concat(a, b):
    if a[0].shape != b[0].shape or a[2].keys() != b[2].keys():
        return False
    return all(a[2][k].can_concat(b[2][k]) for k in a[2])


def calc_cond_uncond_batch(model, cond, uncond, x_in, timestep, model_options, flavor="forge", max_chunks=None,
                           control=None):
    """Evaluate cond and uncond entries in as few UNet calls as memory allows (max_chunks stands in for
    the free-memory test); returns (cond_pred, uncond_pred), each a mult-weighted mean of its entries."""
    sums = [torch.zeros_like(x_in), torch.zeros_like(x_in)]
    counts = [torch.ones_like(x_in) * 1e-37, torch.ones_like(x_in) * 1e-37]
    queue = [(_area_and_mult(e, x_in), 0) for e in cond]
    if uncond is not None:
        queue += [(_area_and_mult(e, x_in), 1) for e in uncond]

    while queue:
        first = queue[0][0]
        candidates = [i for i in range(len(queue)) if _can_concat(queue[i][0], first)]
        candidates.reverse()  # the batch is taken from the back of the queue
        batch = candidates[:1]
        for divisor in range(1, len(candidates) + 1):
            amount = candidates[:len(candidates) // divisor]
            if max_chunks is None or len(amount) <= max_chunks:
                batch = amount
                break
        inputs, mults, conditionings, labels = [], [], [], []
        for i in batch:
            (input_x, mult, conditioning), label = queue.pop(i)
            inputs.append(input_x)
            mults.append(mult)
            conditionings.append(conditioning)
            labels.append(label)

        chunks = len(labels)
        input_x = torch.cat(inputs)
        c = {k: conditionings[0][k].concat([d[k] for d in conditionings[1:]]) for k in conditionings[0]}
        timestep_ = torch.cat([timestep] * chunks)
        options = dict(model_options.get("transformer_options", {}))
        options["cond_or_uncond"] = labels[:]
        options["sigmas"] = timestep
        if flavor == "forge":
            b = timestep.shape[0]
            options["cond_mark"] = torch.tensor([label for label in labels for _ in range(b)]).to(timestep)
            options["cond_indices"] = [r for i, label in enumerate(labels) if label == 0 for r in range(i * b, (i + 1) * b)]
            options["uncond_indices"] = [r for i, label in enumerate(labels) if label == 1 for r in range(i * b, (i + 1) * b)]
        else:
            options["uuids"] = [f"entry-{i}" for i in batch]
        c["transformer_options"] = options
        if control is not None:
            unit = control
            while unit is not None:
                unit.transformer_options = options
                unit = unit.previous_controlnet
            c["control"] = control.get_control(input_x, timestep_, dict(c), chunks)
            c["control_model"] = control

        if "model_function_wrapper" in model_options:
            output = model_options["model_function_wrapper"](
                model.apply_model, {"input": input_x, "timestep": timestep_, "c": c, "cond_or_uncond": labels})
        else:
            output = model.apply_model(input_x, timestep_, **c)
        for out, mult, label in zip(output.chunk(chunks), mults, labels):
            sums[label] += out * mult
            counts[label] += mult
    return sums[0] / counts[0], sums[1] / counts[1]


def sampling_function(model, x, timestep, uncond, cond, cond_scale, model_options, flavor="forge", max_chunks=None,
                      control=None):
    """cfg1 optimization, pre-CFG hooks, batched evaluation, CFG with AND weights, post-CFG hooks."""
    edit_strength = sum(entry.get("strength", 1) for entry in cond)
    skip_uncond = math.isclose(cond_scale, 1.0) and not model_options.get("disable_cfg1_optimization", False)
    uncond_ = None if skip_uncond else uncond

    if flavor == "forge":
        for fn in model_options.get("sampler_pre_cfg_function", []):
            model, cond, uncond_, x, timestep, model_options = fn(model, cond, uncond_, x, timestep, model_options)
    cond_pred, uncond_pred = calc_cond_uncond_batch(model, cond, uncond_, x, timestep, model_options, flavor, max_chunks,
                                                     control)
    if flavor == "reforge":
        for fn in model_options.get("sampler_pre_cfg_function", []):
            args = {"conds": [cond, uncond_], "conds_out": [cond_pred, uncond_pred], "cond_scale": cond_scale,
                    "timestep": timestep, "input": x, "sigma": timestep, "model": model, "model_options": model_options}
            cond_pred, uncond_pred = fn(args)
            x = args["input"]

    # With the uncond skipped its prediction is all zeros (nothing was accumulated), which the CFG
    # formula turns into edit_strength * cond_pred.
    if not math.isclose(edit_strength, 1.0):
        result = uncond_pred + (cond_pred - uncond_pred) * cond_scale * edit_strength
    else:
        result = uncond_pred + (cond_pred - uncond_pred) * cond_scale

    for fn in model_options.get("sampler_post_cfg_function", []):
        args = {"denoised": result, "cond": cond, "uncond": uncond if flavor == "forge" else uncond_, "model": model,
                "uncond_denoised": uncond_pred, "cond_denoised": cond_pred, "sigma": timestep,
                "model_options": model_options, "input": x}
        if flavor == "reforge":
            args["cond_scale"] = cond_scale
        result = fn(args)
    return result
