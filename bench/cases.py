"""What the benchmark runs: the UNet (SD1.5's ldm configuration, random weights), the variants of one guided
step, and the engine's parts alone (the blur, the sigma = inf shortcut) on inputs recorded from a real step."""
import contextlib
import math
import statistics

import torch
from torch import nn

from bench.timing import OnDevice, clock, time_callable
from lib_seg import attention as seg_attention, prefix
from lib_seg.blur import blur_queries
from lib_seg.denoiser import SegCFGDenoiser
from lib_seg.grid import token_grid
from lib_seg.kdiffusion import compvis_denoiser
from lib_seg.params import SegSettings

# The ldm UNetModel configurations. sd15 is SD1.5's (v1-inference.yaml); tiny is for the smoke test.
CONFIGS = {
    "sd15": dict(model_channels=320, channel_mult=(1, 2, 4, 4), attention_resolutions=(4, 2, 1), num_res_blocks=2,
                 num_heads=8, context_dim=768, transformer_depth=1),
    "tiny": dict(model_channels=32, channel_mult=(1, 2, 4, 4), attention_resolutions=(4, 2, 1), num_res_blocks=2,
                 num_heads=4, context_dim=32, transformer_depth=1),
}
CONTEXT_TOKENS = 77
SIGMA = 2.0          # the noise level of the benchmarked step (mid-schedule for SD's k-diffusion sigmas)
CFG_SCALE = 7.5
SEG_SCALE = 3.0
FINITE_SIGMA = 4.0
SEG_ROWS = slice(1, 2)  # [cond | SEG | uncond], B = 1

# (key, label, rows, UNet calls)
VARIANTS = [
    ("unet2", "bare UNet, 2 rows", 2, 1),
    ("unet3", "bare UNet, 3 rows", 3, 1),
    ("cfg", "CFG only", 2, 1),
    ("batched", "CFG+SEG batched, σ=∞", 3, 1),
    ("batched_s4", f"CFG+SEG batched, σ={FINITE_SIGMA:g}", 3, 1),
    ("batched_noshortcut", "CFG+SEG batched, σ=∞ w/o shortcut", 3, 1),
    ("separate", "CFG+SEG separate pass, σ=∞", 3, 2),
    ("seg_nocfg", "SEG without CFG, σ=∞", 2, 1),
    ("pag_batched", "CFG+PAG batched (identity attn.)", 3, 1),
    ("pag_separate", "CFG+PAG separate pass", 3, 2),
    ("batched_full", "CFG+SEG batched, σ=∞, full rows", 3, 1),
    ("oseg_batched", f"CFG+OSEG batched, σ={FINITE_SIGMA:g}", 3, 1),
]
# Variants that run every row through every block (the shared prefix off, lib_seg/prefix.py): what the batched
# step cost before the prefix existed.
FULL_ROWS = ("batched_full",)
LABELS = {key: label for key, label, _, _ in VARIANTS}
CRITERION_SLACK = 1.03


# ----------------------------------------------------------------------------------------------- model

def build_unet(config="sd15", device="cpu", dtype=torch.float32, seed=0):
    """ldm's UNetModel with the named configuration and random weights, built once on `device`.

    Built on the meta device and filled in place (uniform +-1/sqrt(fan_in), PyTorch's default bound; norms at
    identity), which is much faster than ldm's init on a CPU. No layer is left at zero, unlike ldm's init
    (which zeroes every transformer's proj_out, so attention, and SEG with it, would not change the output).
    """
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    with torch.device("meta"):
        unet = UNetModel(image_size=32, in_channels=4, out_channels=4, use_spatial_transformer=True,
                         use_checkpoint=False, legacy=False, use_fp16=dtype == torch.float16, **CONFIGS[config])
    unet = unet.to_empty(device=device)
    randomize(unet, device, seed)
    return unet.to(dtype).eval().requires_grad_(False)


def randomize(model, device, seed=0):
    """Fill every parameter of `model` in place: Linear/Conv uniform +-1/sqrt(fan_in) (PyTorch's default bound),
    norms at identity (GroupNorm, LayerNorm, and RMS norms with a `scale` vector such as Flux's). Raises if a
    parameter is left over, so no layer silently keeps the meta device's garbage."""
    generator = torch.Generator(device=device).manual_seed(seed)
    done = set()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                bound = 1.0 / math.sqrt(module.weight[0].numel())
                module.weight.uniform_(-bound, bound, generator=generator)
                if module.bias is not None:
                    module.bias.uniform_(-bound, bound, generator=generator)
            elif isinstance(module, (nn.GroupNorm, nn.LayerNorm)):
                if module.weight is not None:
                    module.weight.fill_(1.0)
                    module.bias.zero_()
            elif type(module).__name__ == "RMSNorm" and isinstance(getattr(module, "scale", None), nn.Parameter):
                module.scale.fill_(1.0)
            else:
                continue
            done.update(id(p) for p in module.parameters(recurse=False))
    missed = [name for name, p in model.named_parameters() if id(p) not in done]
    if missed:
        raise RuntimeError(f"benchmark model: parameters left uninitialised: {missed[:5]}")
    return model


def denoiser_for(unet, device):
    return compvis_denoiser(unet).to(device)


# ------------------------------------------------------------------------------------------- variants

@contextlib.contextmanager
def shortcut_threshold(tokens):
    """Run with the engine's σ = ∞ shortcut taken from `tokens` tokens on (0: every layer; math.inf: never,
    i.e. every SEG query replaced by the exact spatial mean and one ordinary attention over all rows)."""
    threshold = seg_attention.SHORTCUT_MIN_TOKENS
    seg_attention.SHORTCUT_MIN_TOKENS = tokens
    try:
        yield
    finally:
        seg_attention.SHORTCUT_MIN_TOKENS = threshold


def without_infinite_sigma_shortcut():
    return shortcut_threshold(math.inf)


class Bench(OnDevice):
    """The model, one latent's inputs, and a callable per variant returning (seconds, output)."""

    def __init__(self, unet, denoiser, config, device, dtype, latent, layers="mid"):
        self.unet, self.denoiser, self.device, self.dtype = unet, denoiser, torch.device(device), dtype
        self.layers = layers
        self.cuda = self.device.type == "cuda"
        generator = torch.Generator().manual_seed(latent)
        context_dim = CONFIGS[config]["context_dim"]
        self.x = (torch.randn(1, 4, latent, latent, generator=generator) * SIGMA).to(self.device)
        self.sigma = torch.full((1,), SIGMA, device=self.device)
        self.cond = torch.randn(1, CONTEXT_TOKENS, context_dim, generator=generator).to(self.device)
        self.uncond = torch.randn(1, CONTEXT_TOKENS, context_dim, generator=generator).to(self.device) * 0.1
        # What the denoiser hands the UNet, for the bare-UNet variants.
        c_in = 1 / (SIGMA ** 2 + 1) ** 0.5
        t = denoiser.sigma_to_t(self.sigma)
        self.bare = {rows: (torch.cat([self.x * c_in] * rows), torch.cat([t] * rows),
                            torch.cat([self.cond, self.uncond, self.cond][:rows])) for rows in (2, 3)}
        on = dict(enabled=True, scale=SEG_SCALE, layers=layers)
        self.guided = {
            "cfg": (SegSettings(enabled=False), True, False, False),
            "batched": (SegSettings(sigma=math.inf, **on), True, False, False),
            "batched_s4": (SegSettings(sigma=FINITE_SIGMA, **on), True, False, False),
            "batched_noshortcut": (SegSettings(sigma=math.inf, **on), True, False, True),
            "separate": (SegSettings(sigma=math.inf, **on), True, True, False),
            "seg_nocfg": (SegSettings(sigma=math.inf, **on), False, False, False),
            # PAG: the same rows and layers, identity attention instead of blurred queries
            "pag_batched": (SegSettings(mode="identity", **on), True, False, False),
            "pag_separate": (SegSettings(mode="identity", **on), True, True, False),
            "batched_full": (SegSettings(sigma=math.inf, **on), True, False, False),
            "oseg_batched": (SegSettings(sigma=FINITE_SIGMA, mode="orthogonal", **on), True, False, False),
        }

    def model(self, key):
        settings, use_cfg, separate, _ = self.guided[key]
        return SegCFGDenoiser(self.denoiser, self.unet, settings, cfg_scale=CFG_SCALE if use_cfg else 1.0,
                              separate_pass=separate)

    def run(self, key, inside=None):
        """One step of variant `key`: (seconds, output). Patches are installed before the clock starts.
        inside: optional context manager entered around the timed call (probes)."""
        with torch.no_grad(), self.autocast(), contextlib.ExitStack() as stack:
            if key.startswith("unet"):
                x, t, c = self.bare[int(key[-1])]
                call = lambda: self.unet(x, t, context=c)  # noqa: E731
            else:
                _, use_cfg, _, unshortcut = self.guided[key]
                if unshortcut:
                    stack.enter_context(without_infinite_sigma_shortcut())
                if key in FULL_ROWS:
                    stack.enter_context(prefix.disabled())
                model = stack.enter_context(self.model(key))
                uncond = self.uncond if use_cfg else None
                call = lambda: model(self.x, self.sigma, cond=self.cond, uncond=uncond)  # noqa: E731
            if inside is not None:
                stack.enter_context(inside)
            self.sync()
            start = clock()
            out = call()
            self.sync()
            return clock() - start, out


# ------------------------------------------------------------------------------ the engine's parts alone

def blur_cost(bench, probe, selected):
    """Per-step cost of the blur on the SEG row's queries of the selected layers (and of all layers)."""
    shapes = []
    for name, entry in probe.attn.items():
        x = entry["x"]
        grid = token_grid(tuple(bench.x.shape[-2:]), x.shape[1])
        shapes.append((name, x[SEG_ROWS].clone(), grid))

    def blur(names, sigma):
        chosen = [(q, grid) for name, q, grid in shapes if name in names]

        def fn():
            for q, grid in chosen:
                blur_queries(q, grid, sigma)
        return fn

    def mean(names):
        # what the engine's sigma = inf path does instead of a blur: one mean query per SEG row
        chosen = [q for name, q, _ in shapes if name in names]

        def fn():
            for q in chosen:
                q.mean(dim=1, keepdim=True, dtype=torch.promote_types(q.dtype, torch.float32)).to(q.dtype)
        return fn

    everything = {name for name, _, _ in shapes}
    return {
        "selected_sigma4_s": time_callable(blur(selected, FINITE_SIGMA), bench.sync),
        "selected_inf_mean_s": time_callable(mean(selected), bench.sync),
        "all_layers_sigma4_s": time_callable(blur(everything, FINITE_SIGMA), bench.sync),
        "layers": {name: [list(q.shape), list(grid)] for name, q, grid in shapes if name in selected},
    }


def shortcut_layers(bench, probe, selected, reps=3):
    """Each self-attention layer on its recorded input (3 rows, SEG row 1): the engine's sigma = inf path with
    the single-query shortcut (forced on every layer) vs the same without it; times (medians of interleaved
    reps) and max abs diff. The engine itself uses it from SHORTCUT_MIN_TOKENS tokens on."""
    with shortcut_threshold(0):
        return _shortcut_layers(bench, probe, selected, reps)


def _shortcut_layers(bench, probe, selected, reps):
    rows = {}
    for name, entry in probe.attn.items():
        module, x = entry["module"], entry["x"]
        grid = token_grid(tuple(bench.x.shape[-2:]), x.shape[1])
        host_forward = type(module).forward

        def attend(q_rows, kv_rows, module=module, x=x, host_forward=host_forward):
            if q_rows is x:
                return host_forward(module, x, None)
            return host_forward(module, q_rows, x[kv_rows])

        def short(attend=attend, x=x, grid=grid):
            return seg_attention.attend_smoothed(attend, x, SEG_ROWS, grid, math.inf)

        def long(attend=attend, x=x, grid=grid):
            smoothed = blur_queries(x[SEG_ROWS], grid, math.inf)
            return attend(torch.cat([x[:SEG_ROWS.start], smoothed, x[SEG_ROWS.stop:]]), slice(0, x.shape[0]))

        with torch.no_grad(), bench.autocast():
            a, b = short(), long()
            diff = (a.float() - b.float()).abs().max().item()
            scale = b.float().abs().max().item()
            times = {"short": [], "long": []}
            for _ in range(reps):
                for which, fn in (("short", short), ("long", long)):
                    times[which].append(time_callable(fn, bench.sync, min_seconds=0.02, batches=1))
        rows[name] = {"tokens": x.shape[1], "channels": x.shape[2], "max_abs_diff": diff, "max_abs_out": scale,
                      "with_s": statistics.median(times["short"]), "without_s": statistics.median(times["long"]),
                      "selected": name in selected}
    total = lambda names, k: sum(rows[n][k] for n in names)  # noqa: E731
    return {"per_layer": rows,
            "selected_with_s": total(selected, "with_s"), "selected_without_s": total(selected, "without_s"),
            "all_with_s": total(rows, "with_s"), "all_without_s": total(rows, "without_s"),
            "max_abs_diff": max(r["max_abs_diff"] for r in rows.values())}
