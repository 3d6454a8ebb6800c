"""Follows modules/prompt_parser.py of A1111 1.10.1: the conditioning containers and the batch
reconstruction the CFG denoiser uses (one schedule entry per prompt is enough here)."""
import collections

import torch

ScheduledPromptConditioning = collections.namedtuple("ScheduledPromptConditioning", ["end_at_step", "cond"])


class ComposableScheduledPromptConditioning:
    def __init__(self, schedules, weight=1.0):
        self.schedules = schedules
        self.weight = weight


class MulticondLearnedConditioning:
    def __init__(self, shape, batch):
        self.shape = shape  # the shape of the prompts list: (batch,)
        self.batch = batch  # per image: the list of its AND sub-prompts


class DictWithShape(dict):
    def __init__(self, x, shape=None):
        super().__init__()
        self.update(x)

    @property
    def shape(self):
        return self["crossattn"].shape


def multicond(per_image):
    """Helper: per_image = [[(cond tensor or dict, weight), ...], ...] -> MulticondLearnedConditioning."""
    batch = [[ComposableScheduledPromptConditioning([ScheduledPromptConditioning(10 ** 9, c)], w) for c, w in prompts]
             for prompts in per_image]
    return MulticondLearnedConditioning((len(per_image),), batch)


def scheduled(conds):
    """Helper: a list of per-image conds -> the uncond container (list of schedules)."""
    return [[ScheduledPromptConditioning(10 ** 9, c)] for c in conds]


def _pick(schedules, step):
    for entry in schedules:
        if step <= entry.end_at_step:
            return entry.cond
    return schedules[-1].cond


def _stack(conds):
    if isinstance(conds[0], dict):
        keys = conds[0].keys()
        crossattn = _pad([c["crossattn"] for c in conds])
        out = {k: torch.stack([c[k] for c in conds]) for k in keys if k != "crossattn"}
        out["crossattn"] = crossattn
        return DictWithShape(out)
    return _pad(conds)


def _pad(tensors):
    # Rows of different token lengths are padded by repeating their last token vector.
    length = max(t.shape[0] for t in tensors)
    padded = [t if t.shape[0] == length else torch.vstack([t, t[-1:].repeat([length - t.shape[0], 1])]) for t in tensors]
    return torch.stack(padded)


def reconstruct_cond_batch(c, current_step):
    return _stack([_pick(schedules, current_step) for schedules in c])


def reconstruct_multicond_batch(c, current_step):
    tensors, conds_list = [], []
    for prompts in c.batch:
        conds_for_image = []
        for prompt in prompts:
            conds_for_image.append((len(tensors), prompt.weight))
            tensors.append(_pick(prompt.schedules, current_step))
        conds_list.append(conds_for_image)
    return conds_list, _stack(tensors)
