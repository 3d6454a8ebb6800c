"""A stand-in for Tiled Diffusion (pkuliyi2015/multidiffusion-upscaler-for-automatic1111, commit
22798f6822bc9c8a905b51da8954ee313b973331), MultiDiffusion method with grid tiles, restated in our own words
from scripts/tilediffusion.py, tile_methods/abstractdiffusion.py, tile_methods/multidiffusion.py and
tile_utils/utils.py.

- ``Script.process`` replaces ``sd_samplers.create_sampler``; the sampler it creates gets a delegate whose
  ``hook()`` replaces ``sampler.model_wrap_cfg.inner_model.forward`` (the k-diffusion CompVisDenoiser, i.e.
  BELOW the CFG denoiser, after ``on_cfg_denoiser`` has laid out the step's rows) with ``kdiff_forward``;
  ``postprocess`` restores ``create_sampler``. The delegate is kept as ``Script.delegate``
  (``delegate.sampler_raw`` is the sampler).
- ``kdiff_forward`` -> ``sample_one_step``: at a latent size other than the one the delegate was set up
  for (the hires pass) it calls the original forward once; otherwise the latent is cut into overlapping
  tiles (``split_bboxes``: n = ceil((size - overlap) / (tile - overlap)) tiles per axis, evenly spread),
  taken ``tile_batch_size`` tiles at a time: ``x_tile`` = the tiles of all the step's rows, concatenated
  tile after tile (each tile holds all N rows), sigma and conditioning repeated per tile, image
  conditioning cropped when it has the latent's size; one original forward per tile batch; every output
  is added into a buffer and divided by the number of tiles covering each position.
"""
import math

import torch


def split_bboxes(h, w, tile_h, tile_w, overlap):
    def starts(size, tile):
        if size <= tile:
            return [0], size
        n = math.ceil((size - overlap) / (tile - overlap))
        step = (size - tile) / (n - 1) if n > 1 else 0
        return [int(i * step) for i in range(n)], tile

    rows, th = starts(h, tile_h)
    cols, tw = starts(w, tile_w)
    return [(slice(y, y + th), slice(x, x + tw)) for y in rows for x in cols]


class MultiDiffusionDelegate:
    def __init__(self, p, sampler, tile_h, tile_w, overlap, tile_batch_size):
        self.p, self.sampler_raw = p, sampler
        self.h, self.w = p.height // 8, p.width // 8
        self.bboxes = split_bboxes(self.h, self.w, tile_h, tile_w, overlap)
        self.batched = [self.bboxes[i:i + tile_batch_size] for i in range(0, len(self.bboxes), tile_batch_size)]
        self.calls = []  # rows per tile-batch call, for the tests

    def hook(self):
        inner = self.sampler_raw.model_wrap_cfg.inner_model
        self.original_forward = inner.forward
        inner.forward = self.kdiff_forward

    def kdiff_forward(self, x_in, sigma_in, cond):
        n, _, h, w = x_in.shape
        if (h, w) != (self.h, self.w):
            return self.original_forward(x_in, sigma_in, cond=cond)
        buffer = torch.zeros_like(x_in)
        weights = torch.zeros((1, 1, h, w), dtype=x_in.dtype)
        for boxes in self.batched:
            x_tile = torch.cat([x_in[:, :, ys, xs] for ys, xs in boxes])
            sigma_tile = sigma_in.repeat(len(boxes))
            cond_tile = {key: [self._tile(v, boxes, h, w) for v in value] if isinstance(value, list)
                         else self._tile(value, boxes, h, w) for key, value in cond.items()}
            self.calls.append(x_tile.shape[0])
            out = self.original_forward(x_tile, sigma_tile, cond=cond_tile)
            for i, (ys, xs) in enumerate(boxes):
                buffer[:, :, ys, xs] += out[i * n:(i + 1) * n]
                weights[:, :, ys, xs] += 1
        return buffer / weights

    @staticmethod
    def _tile(value, boxes, h, w):
        if value.dim() == 4 and tuple(value.shape[-2:]) == (h, w):
            return torch.cat([value[:, :, ys, xs] for ys, xs in boxes])
        return value.repeat([len(boxes)] + [1] * (value.dim() - 1))


class TiledDiffusionScript:
    filename = "extensions/multidiffusion-upscaler-for-automatic1111/scripts/tilediffusion.py"

    def __init__(self, tile=10, overlap=4, tile_batch_size=1):
        self.tile, self.overlap, self.tile_batch_size = tile, overlap, tile_batch_size
        self.delegate = None
        self._original_create = None

    def title(self):
        return "Tiled Diffusion"

    def show(self, is_img2img):
        from modules import scripts
        return scripts.AlwaysVisible

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        from modules import sd_samplers_kdiffusion
        self._original_create = sd_samplers_kdiffusion.create_sampler
        original = self._original_create

        def create_sampler_hijack(name, model):
            if self.delegate is not None and self.delegate.p is p:
                return self.delegate.sampler_raw  # the hires pass reuses the hooked sampler
            sampler = original(name, model)
            self.delegate = MultiDiffusionDelegate(p, sampler, self.tile, self.tile, self.overlap, self.tile_batch_size)
            self.delegate.hook()
            return sampler

        sd_samplers_kdiffusion.create_sampler = create_sampler_hijack

    def process_before_every_sampling(self, p, *args, **kwargs):
        pass

    def before_hr(self, p, *args):
        pass

    def postprocess(self, p, processed, *args):
        from modules import sd_samplers_kdiffusion
        if self._original_create is not None:
            sd_samplers_kdiffusion.create_sampler = self._original_create
        self.delegate = None
