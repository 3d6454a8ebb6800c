"""The shared prefix (issue 21) on SDXL's UNet layout and on a Flux-shaped DiT: one guided step with the SEG row
sharing the blocks before the first perturbed one, against the same step with full rows, a separate pass, and
two floors measured on the bare model:

- rows floor: the bare model with 3 rows against 2 (CFG 5), 2 against 1 (CFG 1): a whole extra row;
- blocks floor: the bare model with the extra row entering at the first perturbed block (the blocks before it run
  on the other rows only, lib_seg.prefix with a constant copy map and no SEG patches): what the shared step must
  compute at least, counted in blocks actually computed.

The models (random weights, speed does not depend on them):

- sdxl: ldm's UNetModel with SDXL's base configuration (model_channels 320, channel_mult 1,2,4, attention at the
  2nd and 3rd levels, 2 res blocks per level, 64-channel heads, linear proj_in/out, context 2048) and SDXL's
  transformer depths: 2 per attention block at the 2nd level, 10 at the 3rd level and in the middle block (this
  ldm version takes one depth for all levels: it is built with 10 and the 2nd level's transformers are cut to
  2). So the relative block costs are SDXL's. Left out: the pooled-text/size 'vector' embedding (one MLP on a
  2816-vector per row, not a block). The SpatialTransformers broadcast one context tensor to their blocks as
  sgm's do (ldm's wants a list).
- flux: the Flux stand-in of the tests (tests/forge_stand_in/flux.py, which follows Forge's
  backend/nn/flux.py: the blocks call the module's attention(q, k, v, pe), which calls attention_function, the
  function lib_seg/hosts/dit_patches.py wraps) at a small size: hidden 768, 6 heads of 128 (Flux's head size,
  RoPE axes 16/56/56), MLP ratio 4 (Flux's), 4 double + 8 single blocks (Flux's 1:2, 19 + 38 in the real one),
  16 latent channels, 256 T5 tokens (context 4096), vector 768, distilled guidance embedded. Default `mid`
  on a DiT = the middle joint block, here j2: the SEG row shares j0-j1 (Flux dev: j9, sharing j0-j8).

The guided steps run the extension's own code: SDXL through lib_seg.denoiser.SegCFGDenoiser (as the SD1.5
benchmark); the DiT through lib_seg.hosts.dit_patches.install and lib_seg.prefix.install with the Forge adapter's
ModelCall, batch [cond | SEG | uncond] (CFG 5) or [cond | SEG] (CFG 1, guidance-distilled Flux), the SEG term
added as lib_seg.guidance.guide does.
"""
import contextlib
import math

import torch

from bench.cases import SEG_SCALE, randomize
from bench.timing import OnDevice, clock, log, paired_ratio, summarize, time_variants
from lib_seg import dit, guidance, prefix
from lib_seg.hooks import HookRegistry
from lib_seg.hosts import dit_patches
from lib_seg.hosts.forge import ModelCall
from lib_seg.layers import select_layers
from lib_seg.params import SegSettings

CFG = 5.0
LAYERS = "mid"
UNET_SIGMA = 2.0   # k-diffusion sigma of the SDXL step (SD's schedule), as the SD1.5 benchmark
FLOW_SIGMA = 0.6   # the DiT's flow-matching sigma (= its timestep), mid-schedule
FLUX_GUIDANCE = 3.5

CONFIGS = {
    "sdxl": dict(kind="unet", model_channels=320, channel_mult=(1, 2, 4), attention_resolutions=(4, 2),
                 num_res_blocks=2, num_head_channels=64, context_dim=2048, depths=(0, 2, 10), context_tokens=77),
    # SDXL's layout and depths at half its channel widths (a quarter of its 2.6 G parameters, 2.6 GB in fp32 instead of
    # 10.4): the same heads (64-channel heads become 32-channel ones), the same token grids. Nearly all of a block's
    # work is linear layers and convolutions, whose cost scales with width² alike in every block, so the blocks'
    # relative costs stay SDXL's (GroupNorm and the attention product N²·C scale with width and weigh a little more).
    "sdxl_half": dict(kind="unet", model_channels=160, channel_mult=(1, 2, 4), attention_resolutions=(4, 2),
                      num_res_blocks=2, num_head_channels=32, context_dim=2048, depths=(0, 2, 10), context_tokens=77),
    "sdxl_tiny": dict(kind="unet", model_channels=32, channel_mult=(1, 2, 4), attention_resolutions=(4, 2),
                      num_res_blocks=2, num_head_channels=8, context_dim=32, depths=(0, 1, 2), context_tokens=7),
    "flux": dict(kind="dit", hidden_size=768, num_heads=6, depth=4, depth_single_blocks=8, axes_dim=(16, 56, 56),
                 mlp_ratio=4.0, in_channels=16, vec_in_dim=768, context_in_dim=4096, context_tokens=256),
    "flux_tiny": dict(kind="dit", hidden_size=32, num_heads=2, depth=2, depth_single_blocks=2, axes_dim=(4, 6, 6),
                      mlp_ratio=4.0, in_channels=4, vec_in_dim=8, context_in_dim=32, context_tokens=7),
}
MODEL_OF_CONFIG = {"sdxl": "sdxl", "sdxl_half": "sdxl", "sdxl_tiny": "sdxl", "flux": "flux", "flux_tiny": "flux"}

# (key, label, rows, model calls, baseline key of its ratio)
VARIANTS_CFG = [
    ("bare2", "bare model, 2 rows", 2, 1, None),
    ("bare3", "bare model, 3 rows", 3, 1, "bare2"),
    ("bare3_shared", "bare model, 3rd row from 1st perturbed block", 3, 1, "bare2"),
    ("cfg", "CFG only", 2, 1, None),
    ("shared", "CFG+SEG batched, shared prefix", 3, 1, "cfg"),
    ("full", "CFG+SEG batched, full rows", 3, 1, "cfg"),
    ("separate", "CFG+SEG separate pass", 3, 2, "cfg"),
]
VARIANTS_CFG1 = [
    ("bare1", "bare model, 1 row", 1, 1, None),
    ("bare2_1", "bare model, 2 rows", 2, 1, "bare1"),
    ("bare2_shared", "bare model, 2nd row from 1st perturbed block", 2, 1, "bare1"),
    ("cond", "cond only (CFG 1)", 1, 1, None),
    ("shared1", "cond+SEG batched, shared prefix", 2, 1, "cond"),
    ("full1", "cond+SEG batched, full rows", 2, 1, "cond"),
    ("separate1", "cond+SEG separate pass", 2, 2, "cond"),
]


def variants_of(model):
    return VARIANTS_CFG + (VARIANTS_CFG1 if model == "flux" else [])


# ----------------------------------------------------------------------------------------------- models

def _sdxl_spatial_transformer():
    from ldm.modules.attention import SpatialTransformer

    class BroadcastContextSpatialTransformer(SpatialTransformer):
        """ldm's SpatialTransformer, given one context tensor for all its blocks (as sgm's SDXL code does)."""

        def forward(self, x, context=None):
            if not isinstance(context, list):
                context = [context] * len(self.transformer_blocks)
            return super().forward(x, context=context)

    return BroadcastContextSpatialTransformer


def build_sdxl(config="sdxl", device="cpu", dtype=torch.float32, seed=0):
    """ldm's UNetModel in SDXL's layout, with SDXL's transformer depth per level (see the module docstring)."""
    from ldm.modules.diffusionmodules.openaimodel import UNetModel
    from ldm.modules.attention import SpatialTransformer

    c = dict(CONFIGS[config])
    depths = c.pop("depths")
    for key in ("kind", "context_tokens"):
        c.pop(key)
    deepest = max(depths)
    context_dim = [c.pop("context_dim")] * deepest
    with torch.device("meta"):
        unet = UNetModel(image_size=32, in_channels=4, out_channels=4, use_spatial_transformer=True,
                         use_checkpoint=False, legacy=False, use_fp16=dtype == torch.float16,
                         transformer_depth=deepest, context_dim=context_dim, use_linear_in_transformer=True, **c)
    level_of = {layer.name.rsplit(".transformer_blocks.", 1)[0]: layer.level
                for layer in _self_attention_layers(unet)}
    swapped = _sdxl_spatial_transformer()
    for name, module in unet.named_modules():
        if isinstance(module, SpatialTransformer):
            depth = depths[level_of[name]]
            module.transformer_blocks = module.transformer_blocks[:depth]
            module.__class__ = swapped
    unet = unet.to_empty(device=device)
    randomize(unet, device, seed)
    unet = unet.to(dtype).eval().requires_grad_(False)
    unet.dtype = dtype  # ldm casts its input to this (float16 or float32 by use_fp16); float64 in the smoke test
    return unet


def _self_attention_layers(unet):
    from lib_seg.layers import self_attention_layers
    return self_attention_layers(unet)


def _flux_module():
    """The tests' Flux stand-in (tests/forge_stand_in/flux.py), imported under its package name: the SEG patches
    find the attention function through the blocks' module (lib_seg/hosts/dit_patches.py)."""
    import importlib
    import os
    import sys

    tests = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
    if tests not in sys.path:
        sys.path.append(tests)
    return importlib.import_module("forge_stand_in.flux")


def build_flux(config="flux", device="cpu", dtype=torch.float32, seed=0):
    """The Flux stand-in's IntegratedFluxTransformer2DModel at the named size, its blocks at Flux's MLP ratio."""
    flux = _flux_module()
    c = CONFIGS[config]
    hidden, heads = c["hidden_size"], c["num_heads"]
    with torch.device("meta"):
        model = flux.IntegratedFluxTransformer2DModel(
            in_channels=c["in_channels"], vec_in_dim=c["vec_in_dim"], context_in_dim=c["context_in_dim"],
            hidden_size=hidden, num_heads=heads, depth=0, depth_single_blocks=0, axes_dim=c["axes_dim"],
            guidance_embed=True)
        # the stand-in's constructor keeps its blocks' MLP ratio at 2; Flux's is 4 (about half a block's cost)
        model.double_blocks = torch.nn.ModuleList(
            [flux.DoubleStreamBlock(hidden, heads, mlp_ratio=c["mlp_ratio"]) for _ in range(c["depth"])])
        model.single_blocks = torch.nn.ModuleList(
            [flux.SingleStreamBlock(hidden, heads, mlp_ratio=c["mlp_ratio"]) for _ in range(c["depth_single_blocks"])])
    model = model.to_empty(device=device)
    randomize(model, device, seed)
    return model.to(dtype).eval().requires_grad_(False)


def build_model(config, device, dtype):
    return (build_sdxl if CONFIGS[config]["kind"] == "unet" else build_flux)(config, device, dtype)


def parameter_count(model):
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------- the steps

@contextlib.contextmanager
def shared_blocks(model, names, copies):
    """The blocks `names` run without the rows copies.seg, which take their sources' outputs (lib_seg.prefix)."""
    registry = HookRegistry("seg-bench-floor")
    try:
        prefix.install(registry, model, names, lambda: copies, check_hooks=False)
        yield
    finally:
        registry.remove_all()


class DiTGuided:
    """One guided denoiser call on the DiT with the extension's DiT patches: [cond | SEG | uncond] (CFG) or
    [cond | SEG] (CFG 1) in one model call, or the SEG row in a second call (separate). Flow prediction:
    denoised = x - sigma * v, as Forge's Flux KModel."""

    def __init__(self, model, settings, cfg_scale, separate=False, text_tokens=0):
        self.model, self.settings, self.cfg_scale, self.separate = model, settings, cfg_scale, separate
        self.text_tokens = text_tokens
        self.call = None
        self.registry = HookRegistry("seg-bench-dit")

    def __enter__(self):
        if self.settings.active:
            blocks = dit.select_blocks(self.model, self.settings.layers)
            dit_patches.install(self.registry, self.model, blocks, self.settings.mode, self.settings.sigma,
                                lambda: self.call)
            prefix.install(self.registry, self.model, prefix.dit_prefix(dit.dit_blocks(self.model), blocks),
                           lambda: None if self.call is None else self.call.copies, check_hooks=False)
        return self

    def __exit__(self, *exc):
        self.registry.remove_all()
        return False

    def predict(self, x, sigma, cond, call=None):
        rows = x.shape[0]
        self.call = call
        try:
            v = self.model(x, sigma.expand(rows), context=cond["context"], y=cond["y"], guidance=cond["guidance"])
        finally:
            self.call = None
        return x - v * sigma.expand(rows)[:, None, None, None]

    def __call__(self, x, sigma, cond, uncond=None):
        use_cfg = uncond is not None and self.cfg_scale != 1.0
        seg = self.settings.active
        batched = seg and not self.separate
        groups = [cond] + ([cond] if batched else []) + ([uncond] if use_cfg else [])
        n = x.shape[0]
        x_in = torch.cat([x] * len(groups))
        cond_in = {key: torch.cat([g[key] for g in groups]) for key in cond}
        hw = tuple(x.shape[-2:])
        call = ModelCall(slice(n, 2 * n), hw, self.text_tokens, copies=prefix.Copies(slice(n, 2 * n), slice(0, n))) \
            if batched else None
        out = self.predict(x_in, sigma, cond_in, call)
        cond_out = out[:n]
        uncond_out = out[-n:] if use_cfg else None
        if not seg:
            return guidance.guide(cond_out, cond_out, 0.0, uncond_out, self.cfg_scale)
        if batched:
            seg_out = out[n:2 * n]
        else:
            seg_out = self.predict(x, sigma, cond, ModelCall(slice(0, n), hw, self.text_tokens))
        return guidance.guide(cond_out, seg_out, self.settings.scale, uncond_out, self.cfg_scale)


class LayoutBench(OnDevice):
    """The model, one latent's inputs, and a callable per variant returning (seconds, output), as bench.cases.Bench."""

    def __init__(self, model, config, device, dtype, latent, layers=LAYERS):
        self.model, self.config, self.device, self.dtype = model, config, torch.device(device), dtype
        self.kind = CONFIGS[config]["kind"]
        self.name = MODEL_OF_CONFIG[config]
        self.cuda = self.device.type == "cuda"
        self.layers = layers
        c = CONFIGS[config]
        g = torch.Generator().manual_seed(latent)
        on = dict(enabled=True, scale=SEG_SCALE, layers=layers, sigma=math.inf)
        self.settings = {"off": SegSettings(enabled=False), "on": SegSettings(**on)}

        def rand(*shape, scale=1.0):
            return (torch.randn(*shape, generator=g) * scale).to(self.device, dtype)

        tokens = c["context_tokens"]
        if self.kind == "unet":
            from bench.cases import denoiser_for
            self.denoiser = denoiser_for(model, self.device)
            self.x = rand(1, 4, latent, latent, scale=UNET_SIGMA)
            self.sigma = torch.full((1,), UNET_SIGMA, device=self.device, dtype=dtype)
            self.cond, self.uncond = rand(1, tokens, c["context_dim"]), rand(1, tokens, c["context_dim"], scale=0.1)
            selected = select_layers(model, layers)
            self.prefix = prefix.unet_prefix(model, selected)
            self.blocks = _unet_blocks(model)
            self.first_perturbed = self.blocks[len(self.prefix)]
            c_in = 1 / (UNET_SIGMA ** 2 + 1) ** 0.5
            t = self.denoiser.sigma_to_t(self.sigma)
            # the bare rows as a guided step lays them out: [cond | cond (the SEG row) | uncond]
            contexts = {2: [self.cond, self.uncond], 3: [self.cond, self.cond, self.uncond]}
            self.bare = {rows: (torch.cat([self.x * c_in] * rows), torch.cat([t] * rows), torch.cat(contexts[rows]))
                         for rows in (2, 3)}
        else:
            self.x = rand(1, c["in_channels"], latent, latent)
            self.sigma = torch.full((1,), FLOW_SIGMA, device=self.device, dtype=dtype)

            def cond_of(scale):
                return {"context": rand(1, tokens, c["context_in_dim"], scale=scale), "y": rand(1, c["vec_in_dim"]),
                        "guidance": torch.full((1,), FLUX_GUIDANCE, device=self.device, dtype=dtype)}

            self.cond, self.uncond = cond_of(1.0), cond_of(0.1)
            blocks = dit.dit_blocks(model)
            self.blocks = [b.name for b in blocks]
            self.prefix = prefix.dit_prefix(blocks, dit.select_blocks(model, layers))
            self.first_perturbed = self.blocks[len(self.prefix)]
            self.text_tokens = tokens

            def stack(conds):
                return {key: torch.cat([cnd[key] for cnd in conds]) for key in conds[0]}

            self.bare = {1: stack([self.cond]), 2: stack([self.cond, self.uncond]),
                         3: stack([self.cond, self.cond, self.uncond]), "2_1": stack([self.cond, self.cond])}

    # bare calls -------------------------------------------------------------------------------------
    def _bare_call(self, key):
        rows = {"bare1": 1, "bare2": 2, "bare3": 3, "bare3_shared": 3, "bare2_1": "2_1", "bare2_shared": "2_1"}[key]
        if self.kind == "unet":
            x, t, c = self.bare[rows]
            return lambda: self.model(x, t, context=c)  # noqa: E731
        cond = self.bare[rows]
        n = cond["y"].shape[0]
        x = torch.cat([self.x] * n)
        sigma = self.sigma.expand(n)
        return lambda: self.model(x, sigma, context=cond["context"], y=cond["y"], guidance=cond["guidance"])  # noqa: E731

    def _guided(self, key):
        seg = key not in ("cfg", "cond")
        settings = self.settings["on" if seg else "off"]
        cfg = 1.0 if key in ("cond", "shared1", "full1", "separate1") else CFG
        separate = key in ("separate", "separate1")
        if self.kind == "unet":
            from lib_seg.denoiser import SegCFGDenoiser
            model = SegCFGDenoiser(self.denoiser, self.model, settings, cfg_scale=cfg, separate_pass=separate)
        else:
            model = DiTGuided(self.model, settings, cfg, separate, self.text_tokens)
        uncond = self.uncond if cfg != 1.0 else None
        return model, lambda: model(self.x, self.sigma, cond=self.cond, uncond=uncond)  # noqa: E731

    def run(self, key, inside=None):
        """One step of variant `key`: (seconds, output); patches installed before the clock starts."""
        with torch.no_grad(), self.autocast(), contextlib.ExitStack() as stack:
            if key.startswith("bare"):
                if key.endswith("_shared"):
                    stack.enter_context(shared_blocks(self.model, self.prefix,
                                                      prefix.Copies(slice(1, 2), slice(0, 1))))
                call = self._bare_call(key)
            else:
                if key in ("full", "full1"):
                    stack.enter_context(prefix.disabled())
                model, call = self._guided(key)
                stack.enter_context(model)
            if inside is not None:
                stack.enter_context(inside)
            self.sync()
            start = clock()
            out = call()
            self.sync()
            return clock() - start, out


def _unet_blocks(unet):
    """The top-level blocks of an ldm UNet in forward order (input_blocks.i, middle_block, output_blocks.j)."""
    return ([f"input_blocks.{i}" for i in range(len(unet.input_blocks))] + ["middle_block"]
            + [f"output_blocks.{j}" for j in range(len(unet.output_blocks))])


@contextlib.contextmanager
def rows_seen(model, first_prefix_block, first_perturbed_block):
    """Rows entering (inside its forward, after the shared-prefix wrapper) the first block and the first perturbed
    block: global hooks, since a hook on the block itself would count as another extension's and stop sharing."""
    modules = dict(model.named_modules())
    firsts = {}
    for label, name in (("prefix", first_prefix_block), ("perturbed", first_perturbed_block)):
        block = modules[name]
        children = list(block.children())
        firsts[label] = children[0] if children else block
    seen = {"prefix": [], "perturbed": []}

    def hook(module, args):
        for label, child in firsts.items():
            if module is child and args and isinstance(args[0], torch.Tensor):
                seen[label].append(int(args[0].shape[0]))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


# ---------------------------------------------------------------------------------------------- measure

def _max_abs(a):
    return a.float().abs().max().item()


def _diff(a, b):
    return (a.float() - b.float()).abs().max().item()


def bench_layout(model, args, device, dtype, latent, budget=None):
    bench = LayoutBench(model, args.config, device, dtype, latent)
    variants_list = variants_of(bench.name)
    keys = [key for key, *_ in variants_list]
    # what the shared step really computes: rows through the first prefix block and the first perturbed one
    rows = {}
    for key in ("shared", "full") + (("shared1", "full1") if bench.name == "flux" else ()):
        with rows_seen(model, bench.prefix[0] if bench.prefix else bench.first_perturbed, bench.first_perturbed) as seen:
            bench.run(key)
        rows[key] = {k: v[:1] for k, v in seen.items()}
    limits = (10, 50) if bench.cuda else (3, 10)
    rounds, outputs = time_variants(bench, keys, args.runs, args.warmup, budget, limits)
    variants = {}
    for key, label, n_rows, calls, base in variants_list:
        v = summarize([r[key] for r in rounds])
        v.update(label=label, rows=n_rows, model_calls=calls, baseline=base,
                 ratio=paired_ratio(rounds, key, base) if base else 1.0)
        variants[key] = v

    def summary(shared, full, separate, cfg, bare_hi, bare_lo, bare_shared):
        out_full = outputs[full]
        return {
            "shared_over_base": variants[shared]["ratio"], "full_over_base": variants[full]["ratio"],
            "separate_over_base": variants[separate]["ratio"],
            "rows_floor": variants[bare_hi]["ratio"], "blocks_floor": variants[bare_shared]["ratio"],
            "shared_over_full": paired_ratio(rounds, shared, full),
            "shared_le_full": paired_ratio(rounds, shared, full) <= 1.0,
            # the shared step computes what the full-row step computes, the blocks floor what the bare 3-row
            # call computes (same arithmetic, fewer rows in some GEMMs): round-off apart, equal
            "shared_vs_full_max_abs_diff": _diff(outputs[shared], out_full), "output_scale": _max_abs(out_full),
            "seg_effect_max_abs": _diff(out_full, outputs[cfg]),
            "floor_vs_bare_max_abs_diff": _diff(outputs[bare_shared], outputs[bare_hi]),
            "bare_scale": _max_abs(outputs[bare_hi]),
        }

    result = {"runs": len(rounds), "warmup": args.warmup, "variants": variants, "rounds_s": rounds,
              "prefix_blocks": bench.prefix, "blocks": bench.blocks, "first_perturbed_block": bench.first_perturbed,
              "rows_seen": rows,
              "cfg5": summary("shared", "full", "separate", "cfg", "bare3", "bare2", "bare3_shared")}
    if bench.name == "flux":
        result["cfg1"] = summary("shared1", "full1", "separate1", "cond", "bare2_1", "bare1", "bare2_shared")
    return result


def describe_model(config, model, dtype):
    c = CONFIGS[config]
    name = MODEL_OF_CONFIG[config]
    shown = {k: v for k, v in c.items() if k != "kind"}
    what = ("ldm UNetModel in SDXL's layout" if name == "sdxl" else
            "Flux stand-in (tests/forge_stand_in/flux.py, Forge's flux.py code paths)")
    return f"{what}, config {config}: {shown}; {parameter_count(model) / 1e6:.1f} M parameters, random weights, {dtype}"


def format_layout_table(result):
    lines = []
    for latent, r in result["latents"].items():
        lines.append(f"\nlatent {latent}x{latent} (B=1, SEG layers '{LAYERS}' = first perturbed block "
                     f"{r['first_perturbed_block']}, σ=∞, SEG scale {SEG_SCALE:g}; {r['runs']} runs after "
                     f"{r['warmup']} warm-up round(s))")
        lines.append(f"shared prefix: {len(r['prefix_blocks'])} of {len(r['blocks'])} blocks "
                     f"({_span(r['prefix_blocks'])}); rows through the first block / the first perturbed block, "
                     + "; ".join(f"{k} {v['prefix']}/{v['perturbed']}" for k, v in r["rows_seen"].items()))
        lines.append(f"{'variant':46} {'rows':>4} {'calls':>5} {'median ms':>10} {'min-max ms':>17} "
                     f"{'spread':>7} {'ratio':>16}")
        for key, v in r["variants"].items():
            ratio = "1" if v["baseline"] is None else f"{v['ratio']:.3f} ÷{v['baseline']}"
            lines.append(f"{v['label']:46} {v['rows']:>4} {v['model_calls']:>5} {v['median_s'] * 1e3:10.1f} "
                         f"{v['min_s'] * 1e3:8.1f}-{v['max_s'] * 1e3:<8.1f} {v['spread'] * 100:6.1f}% {ratio:>16}")
        for name, title in (("cfg5", f"CFG {CFG:g}"), ("cfg1", "CFG 1")):
            if name not in r:
                continue
            s = r[name]
            lines.append(f"{title}: shared {s['shared_over_base']:.3f}, full {s['full_over_base']:.3f}, separate "
                         f"{s['separate_over_base']:.3f}; floors: rows {s['rows_floor']:.3f}, blocks "
                         f"{s['blocks_floor']:.3f}; shared/full {s['shared_over_full']:.3f}: shared "
                         f"{'<=' if s['shared_le_full'] else '>'} full")
            lines.append(f"  outputs: shared vs full max |diff| {s['shared_vs_full_max_abs_diff']:.2e} at scale "
                         f"{s['output_scale']:.3g} (SEG's own effect {s['seg_effect_max_abs']:.2e}); blocks floor "
                         f"vs bare rows {s['floor_vs_bare_max_abs_diff']:.2e} at scale {s['bare_scale']:.3g}")
    return "\n".join(lines)


def _span(names):
    if not names:
        return "none"
    return names[0] if len(names) == 1 else f"{names[0]} .. {names[-1]}"


def run_layouts(args, device, dtype, result, started):
    import time

    log(f"building the {args.config} model on {device} ({dtype})")
    start = time.perf_counter()
    model = build_model(args.config, device, dtype)
    result["build_s"] = time.perf_counter() - start
    result["model"] = describe_model(args.config, model, dtype)
    result["step"] = (f"one guided denoiser call, B=1, CFG {CFG:g} (and CFG 1 for the DiT), SEG σ=∞ scale "
                      f"{SEG_SCALE:g}, " + (f"k-diffusion sigma {UNET_SIGMA}" if CONFIGS[args.config]["kind"] == "unet"
                                           else f"flow sigma {FLOW_SIGMA}, distilled guidance {FLUX_GUIDANCE}"))
    for i, latent in enumerate(args.latent):
        weights = [size ** 1.5 for size in args.latent[i:]]
        left = args.budget - (time.perf_counter() - started) - 20 * len(weights)
        budget = max(0.0, left) * weights[0] / sum(weights)
        result["latents"][str(latent)] = bench_layout(model, args, device, dtype, latent, budget)
    return result
