"""Forge (2024+ ``backend``) and reForge (``ldm_patched``): SEG through the UNet patcher, batched.

Both hosts evaluate a step's conditional and unconditional rows in ``calc_cond_uncond_batch`` /
``calc_cond_batch``, which hands every batched UNet call to ``model_options["model_function_wrapper"]``
together with ``cond_or_uncond`` (one 0/1 label per chunk of B rows). Per sampling pass we patch a
clone of ``p.sd_model.forge_objects.unet``:

* model-function wrapper: on an active step, append a copy of the conditional chunks to the call
  (every per-row tensor in ``c`` duplicated, ``transformer_options`` marking the SEG rows), run the
  UNet once, cut the SEG rows' output off and keep it, return the original rows so the host's CFG
  sees exactly what it would without us;
* attn1 replace patches on the selected layers: the host's own attention function, with the SEG
  rows' queries smoothed (``lib_seg.attention.attend_smoothed``), or in ``identity`` mode the SEG rows'
  values passed through (``attend_identity``; the host applies to_out); the token grid comes from the
  ``original_shape`` the UNet puts into ``transformer_options`` (non-square, hires passes);
* post-CFG function: add ``s * sum_k w_k (cond_k - seg_k)`` (AND prompts weighted as the host
  weights its cond entries) and the optional rescale. Registered without
  ``disable_cfg1_optimization``, so at CFG 1 the host still skips the negative pass and the call
  holds only cond + SEG rows.

The clone goes into ``p.sd_model.forge_objects`` and the original comes back when the sampler
returns or raises (the sampler's ``sample``/``sample_img2img`` are wrapped for that pass) and in
``stop``. Both hosts also reset ``forge_objects`` themselves before every sampling pass.

The refiner: both hosts' ``sd_samplers_common.apply_refiner`` loads it mid-sampling as a new model with
fresh ``forge_objects`` (none of our patches). We wrap that function for the pass: after a switch the
same patches go onto the refiner's UNet (same spec, its own layers; infotext "SEG refiner: on"), or, when
the spec does not fit the refiner, SEG ends there with one console line ("SEG refiner: off").
"""
import math
from dataclasses import dataclass

import torch

from .. import dit, oseg, prefix
from .. import layers as seg_layers
from ..attention import attend_identity, attend_smoothed
from ..grid import token_grid
from ..guidance import rescale_denoised, sampler_step, step_is_active, weighted_seg_term
from ..hooks import HookRegistry
from ..params import SegParamError
from ..session import has_rows
from . import REFINER_KEY, dit_patches, neighbours

# transformer_options key: the SEG rows (a slice of the UNet call's batch) of the current call.
SEG_ROWS_KEY = "seg_rows"
# transformer_options key: the rows whose attention is perturbed, when they are not just the SEG rows (OSEG also
# perturbs the uncond rows, which are not next to the SEG rows in the hosts' chunk order): a LongTensor.
PERTURBED_ROWS_KEY = "seg_perturbed_rows"
_PER_CHUNK_KEYS = ("uuids",)
_PREFIX = "[SEG]"
_printed_once = set()


def _print_once(key, message):
    if key not in _printed_once:
        _printed_once.add(key)
        print(f"{_PREFIX} {message}")


class _CannotBatch(Exception):
    pass


@dataclass(frozen=True)
class ModelCall:
    """The model call in progress that holds SEG rows: which rows, at which latent size, after how many text
    tokens (a DiT's joint sequences put the text first). Transformer patches read it (lib_seg/hosts/dit_patches.py)."""
    seg: slice
    latent_hw: tuple
    text_tokens: int
    perturbed: object = None  # the rows whose attention is perturbed (slice or LongTensor); None: the SEG rows
    copies: object = None     # lib_seg.prefix.Copies: the SEG rows copy these rows (shared prefix); None: no copies

    def __post_init__(self):
        if self.perturbed is None:
            object.__setattr__(self, "perturbed", self.seg)


def _text_tokens(c):
    context = c.get("c_crossattn")
    return int(context.shape[1]) if isinstance(context, torch.Tensor) and context.dim() == 3 else 0


def host_attention(host):
    """The host's own attention function, as ``attention(q, k, v, heads, extra_options)``. Looked up
    at call time, because the hosts pick their optimized variant at import."""
    if host == "forge":
        from backend import attention as module  # noqa: the host's package

        return lambda q, k, v, heads, extra: module.attention_function(q, k, v, heads)
    from ldm_patched.ldm.modules import attention as module  # noqa: the host's package

    def attention(q, k, v, heads, extra):
        precision = extra.get("attn_precision")
        if precision is None:
            return module.optimized_attention(q, k, v, heads)
        return module.optimized_attention(q, k, v, heads, attn_precision=precision)

    return attention


def _is_ldm_unet(diffusion_model):
    return hasattr(diffusion_model, "input_blocks") and hasattr(diffusion_model, "middle_block")


class SegPatch:
    """The SEG patches of one sampling pass on one UNet patcher clone.

    attention(q, k, v, heads, extra_options) runs the host's attention; progress() -> (call, total calls,
    sampler steps or None) or None says where the sampler is (None: treat every step as active).
    """

    def __init__(self, settings, attention, progress=None):
        self.settings = settings
        self.attention = attention
        self.progress = progress
        self.stash = []  # (step, cond_out, seg_out) per conditional chunk, in call order
        self.calls = []  # (rows, seg slice or None) per UNet call, for tests and diagnostics
        self.call = None  # ModelCall while a call with SEG rows runs
        self.post_cfg_function = None  # the post-CFG function of the latest apply() (ForgeAdapter._keep_post_cfg)

    # ---- installation -------------------------------------------------------------------------
    def apply(self, unet_patcher, selected=()):
        """Return a clone of unet_patcher with every SEG patch set; unet_patcher is left unchanged. ``selected``:
        the UNet self-attention layers to patch (a DiT's blocks are patched by lib_seg/hosts/dit_patches.py)."""
        clone = unet_patcher.clone()
        options = clone.model_options
        previous_wrapper = options.get("model_function_wrapper")
        existing = options.get("transformer_options", {}).get("patches_replace", {}).get("attn1", {})
        for layer in selected:
            key = layer.patch_key
            clone.set_model_attn1_replace(self._attn1(existing.get(key)), *key)
        clone.set_model_unet_function_wrapper(self._wrapper(previous_wrapper))
        self.post_cfg_function = self._post_cfg()
        clone.set_model_sampler_post_cfg_function(self.post_cfg_function, disable_cfg1_optimization=False)
        options["memory_peak_estimation_modifier"] = _memory_estimate(
            options.get("memory_peak_estimation_modifier"), clone.model)
        return clone

    def _step_active(self):
        where = self.progress() if self.progress is not None else None
        if where is None or where[1] is None:
            return True
        step, total = sampler_step(*where)
        return step_is_active(step, total, self.settings.start, self.settings.end)

    # Closures rather than bound methods: the patcher's clone() deep-copies model_options, and a deep
    # copy of a bound method would copy this object (and split the stash in two).
    def _attn1(self, previous):
        sigma, mode = self.settings.sigma, self.settings.mode
        attention = self.attention

        def seg_attn1(q, k, v, extra_options):
            heads = extra_options["n_heads"]

            def attend(q_rows, kv_rows):
                if previous is not None:
                    return previous(q_rows, k[kv_rows], v[kv_rows], extra_options)
                return attention(q_rows, k[kv_rows], v[kv_rows], heads, extra_options)

            seg = extra_options.get(SEG_ROWS_KEY)
            rows = extra_options.get(PERTURBED_ROWS_KEY, seg) if mode == "orthogonal" else seg
            if not has_rows(rows, q.shape[0]):
                if previous is not None:
                    return previous(q, k, v, extra_options)
                return attention(q, k, v, heads, extra_options)
            shape = extra_options["original_shape"]
            try:
                if v.shape[1] != q.shape[1]:  # queries merged by another patch (token merging): no identity
                    raise ValueError(f"SEG: {q.shape[1]} queries for {v.shape[1]} values")
                grid = token_grid((shape[-2], shape[-1]), q.shape[1])
            except ValueError as error:  # never fail the image: this call's layer stays unperturbed
                _print_once("unperturbed", f"left a layer unperturbed: {error}")
                return attend(q, slice(0, q.shape[0]))
            if mode == "identity":  # the SEG rows output their values; the host applies to_out after us
                return attend_identity(attend, lambda rows: v[rows], q, seg)
            if mode == "orthogonal":
                perturbed = q.clone()
                perturbed[rows] = oseg.merge_heads(oseg.orthogonal_blur(
                    oseg.split_heads(q[rows], heads), oseg.split_heads(k[rows], heads), grid, sigma))
                return attend(perturbed, slice(0, q.shape[0]))
            return attend_smoothed(attend, q, seg, grid, sigma)

        return seg_attn1

    def _wrapper(self, previous):
        patch = self

        def run(apply_model, args):
            if previous is not None:
                return previous(apply_model, args)
            return apply_model(args["input"], args["timestep"], **args["c"])

        def seg_model_function_wrapper(apply_model, args):
            labels = list(args["cond_or_uncond"])
            x = args["input"]
            n = x.shape[0]
            if 0 not in labels or n % len(labels) or not patch._step_active():
                patch.calls.append((n, None))
                return run(apply_model, args)
            b = n // len(labels)
            cond_chunks = [i for i, label in enumerate(labels) if label == 0]
            rows = torch.cat([torch.arange(i * b, (i + 1) * b, device=x.device) for i in cond_chunks])
            seg = slice(n, n + len(rows))
            perturbed = patch._perturbed_rows(labels, b, seg, x.device)
            try:
                c = _extend_c(args["c"], n, rows, seg, labels, cond_chunks, b, perturbed)
            except _CannotBatch as why:
                return patch._separate_pass(run, apply_model, args, rows, b, cond_chunks, str(why))
            extended = {"input": torch.cat([x, x[rows]]), "timestep": _extend_rows(args["timestep"], n, rows),
                        "c": c, "cond_or_uncond": labels + [0] * len(cond_chunks)}
            patch.calls.append((seg.stop, seg))
            patch.call = ModelCall(seg, tuple(x.shape[-2:]), _text_tokens(args["c"]), perturbed,
                                   prefix.Copies(seg, rows))
            try:
                out = run(apply_model, extended)
            finally:
                patch.call = None
            for j, i in enumerate(cond_chunks):
                patch._keep(out[i * b:(i + 1) * b], out[n + j * b:n + (j + 1) * b])
            return out[:n]

        return seg_model_function_wrapper

    def _separate_pass(self, run, apply_model, args, rows, b, cond_chunks, why):
        """Where a call cannot be extended: the normal call, then one more for the SEG rows alone."""
        _print_once("separate-pass", f"this UNet call could not be batched ({why}); SEG runs as a separate pass here.")
        n = args["input"].shape[0]
        # Taken before the host's call: its UNet pops the ControlNet residual lists it is given.
        c = {key: _take_rows(value, n, rows) for key, value in args["c"].items() if key != "transformer_options"}
        self.calls.append((n, None))
        uncond = self._perturbed_rows(list(args["cond_or_uncond"]), b, slice(0, 0), args["input"].device)
        if isinstance(uncond, torch.Tensor):  # OSEG: the host's own call perturbs its uncond rows
            options = {**args["c"].get("transformer_options", {}), PERTURBED_ROWS_KEY: uncond}
            args = {**args, "c": {**args["c"], "transformer_options": options}}
            self.call = ModelCall(slice(0, 0), tuple(args["input"].shape[-2:]), _text_tokens(args["c"]), uncond)
        try:
            out = run(apply_model, args)
        finally:
            self.call = None
        options = dict(args["c"].get("transformer_options", {}))
        options.pop(PERTURBED_ROWS_KEY, None)
        options["cond_or_uncond"] = [0] * len(cond_chunks)
        options[SEG_ROWS_KEY] = slice(0, len(rows))
        c["transformer_options"] = options
        seg_args = {"input": args["input"][rows], "timestep": args["timestep"][rows], "c": c,
                    "cond_or_uncond": [0] * len(cond_chunks)}
        self.calls.append((len(rows), slice(0, len(rows))))
        self.call = ModelCall(slice(0, len(rows)), tuple(args["input"].shape[-2:]), _text_tokens(c))
        try:
            seg_out = run(apply_model, seg_args)
        finally:
            self.call = None
        for j, i in enumerate(cond_chunks):
            self._keep(out[i * b:(i + 1) * b], seg_out[j * b:(j + 1) * b])
        return out

    def _perturbed_rows(self, labels, b, seg, device):
        """The rows of a call whose attention is perturbed: the SEG rows, and with OSEG the uncond rows too."""
        if self.settings.mode != "orthogonal" or 1 not in labels:
            return seg
        uncond = [r for i, label in enumerate(labels) if label != 0 for r in range(i * b, (i + 1) * b)]
        return torch.tensor(uncond + list(range(seg.start, seg.stop)), device=device)

    def copies(self):
        """The copies of the model call in progress (its SEG rows and their cond rows), for the shared prefix."""
        return None if self.call is None else self.call.copies

    def _keep(self, cond_out, seg_out):
        self.stash.append((self._where(), cond_out, seg_out))

    def _where(self):
        return self.progress() if self.progress is not None else None

    def _post_cfg(self):
        patch = self

        def seg_post_cfg_function(args):
            denoised = args["denoised"]
            # Only this step's host evaluation: its cond chunks come first. A post-CFG guidance with its own
            # pass (Forge's PAG, sd-perturbed-attention) runs that pass through our wrapper too, before us in
            # this step or after us (then its pair is left from the previous step); neither belongs here.
            where, stashed, patch.stash = patch._where(), patch.stash, []
            pairs = [(cond, seg) for step, cond, seg in stashed if step == where]
            if args.get("cond"):
                pairs = pairs[:len(args["cond"])]
            if not pairs:
                return denoised
            weights = _cond_weights(args.get("cond"), len(pairs))
            conds = torch.stack([cond for cond, _ in pairs])
            segs = torch.stack([seg for _, seg in pairs])
            guided = denoised + weighted_seg_term(conds, segs, weights, patch.settings.scale).to(denoised.dtype)
            # The hosts combine guidance on denoised images; rescale is defined on the noise prediction.
            return rescale_denoised(args["input"], args["sigma"], guided, args["cond_denoised"],
                                    patch.settings.rescale)

        return seg_post_cfg_function


def _memory_estimate(previous, model):
    """Both hosts reserve GPU memory before sampling from an estimate for a batch of cond + uncond rows
    (sampling_prepare asks for 2B rows); SEG adds B more. A closure, not a bound method: clone() deep-copies
    model_options, and a deep copy of a bound method would copy the whole model."""

    def seg_memory_estimate(input_shape):
        shape = [input_shape[0] + (input_shape[0] + 1) // 2] + list(input_shape[1:])
        return previous(shape) if previous is not None else model.memory_required(input_shape=shape)

    return seg_memory_estimate


def _cond_weights(cond_entries, n_pairs):
    """The weight of each conditional chunk, in the order the wrapper saw them.

    The hosts build one cond entry per AND sub-prompt (``strength`` = its weight), queue them in list
    order ahead of the uncond entries and pop every batch from the back of the queue, so chunks arrive
    in reverse list order. Equal weights (the usual case) need no order at all."""
    strengths = [float(entry.get("strength", 1.0)) for entry in (cond_entries or [])]
    if len(strengths) == n_pairs:
        return list(reversed(strengths))
    if strengths and all(math.isclose(w, strengths[0]) for w in strengths):
        return [strengths[0]] * n_pairs
    mean = sum(strengths) / len(strengths) if strengths else 1.0
    _print_once("weights", f"could not match {n_pairs} conditional predictions to {len(strengths)} prompt "
                           "weights; SEG weights them equally.")
    return [mean] * n_pairs


def _extend_rows(value, n, rows):
    return torch.cat([value, value[rows]])


def _take_rows(value, n, rows):
    if isinstance(value, torch.Tensor):
        return value[rows] if value.dim() > 0 and value.shape[0] == n else value
    if isinstance(value, dict):
        return {k: _take_rows(v, n, rows) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_take_rows(v, n, rows) for v in value)
    return value


def _extend_value(value, n, rows):
    """Per-row tensors (first dim = the call's rows) get the SEG copies appended; containers are
    walked (ControlNet residuals: dict of lists of tensors); anything else is shared."""
    if isinstance(value, torch.Tensor):
        if value.dim() > 0 and value.shape[0] == n:
            return torch.cat([value, value[rows]])
        return value
    if isinstance(value, dict):
        return {k: _extend_value(v, n, rows) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_extend_value(v, n, rows) for v in value)
    return value


def _extend_c(c, n, rows, seg, labels, cond_chunks, b, perturbed=None):
    extended = {}
    for key, value in c.items():
        if key == "transformer_options":
            extended[key] = _extend_transformer_options(value, n, rows, seg, labels, cond_chunks, b, perturbed)
        elif key == "control_model":
            extended[key] = value
        else:
            try:
                extended[key] = _extend_value(value, n, rows)
            except Exception as error:  # a per-row object we cannot extend
                raise _CannotBatch(f"{key}: {error}") from error
    if "transformer_options" not in extended:
        raise _CannotBatch("the host passed no transformer_options")
    return extended


def _extend_transformer_options(options, n, rows, seg, labels, cond_chunks, b, perturbed=None):
    options = dict(options)
    new_labels = labels + [0] * len(cond_chunks)
    # Per-chunk lists follow the chunks (reForge: uuids). Only known keys: other lists in the options,
    # such as Forge's block_modifiers, merely happen to be lists.
    for key in _PER_CHUNK_KEYS:
        value = options.get(key)
        if isinstance(value, list) and len(value) == len(labels):
            options[key] = value + [value[i] for i in cond_chunks]
    options["cond_or_uncond"] = new_labels
    if "cond_mark" in options and isinstance(options["cond_mark"], torch.Tensor):
        options["cond_mark"] = _extend_rows(options["cond_mark"], n, rows)
    if "cond_indices" in options or "uncond_indices" in options:  # Forge: row indices by label
        options["cond_indices"] = [r for i, label in enumerate(new_labels) if label == 0 for r in range(i * b, (i + 1) * b)]
        options["uncond_indices"] = [r for i, label in enumerate(new_labels) if label != 0 for r in range(i * b, (i + 1) * b)]
    options[SEG_ROWS_KEY] = seg
    if isinstance(perturbed, torch.Tensor):
        options[PERTURBED_ROWS_KEY] = perturbed
    return options


def _denoiser_progress(p):
    """(call, total calls, sampler steps) from the WebUI's CFG denoiser: its own call counter, as on A1111
    (``steps`` is set by launch_sampling; second-order samplers make about two calls per step)."""
    denoiser = getattr(getattr(p, "sampler", None), "model_wrap_cfg", None)
    if denoiser is None or getattr(denoiser, "total_steps", None) is None:
        return None
    return denoiser.step, denoiser.total_steps, getattr(denoiser, "steps", None)


class ForgeAdapter:
    """start/stop per sampling pass (see lib_seg.hosts); one adapter serves Forge and reForge."""

    def __init__(self, host="forge", attention=None, samplers_common=None):
        self.name = host
        self._attention = attention
        self._samplers_common = samplers_common  # the host's modules.sd_samplers_common (imported lazily)
        self._open = None  # (p, registry, patch) of the pass in progress
        self.last_patch = None

    def attention(self):
        if self._attention is None:
            self._attention = host_attention(self.name)
        return self._attention

    def start(self, p, settings):
        self.stop(p)
        forge_objects = p.sd_model.forge_objects
        unet = forge_objects.unet
        diffusion_model = unet.model.diffusion_model
        transformer = not _is_ldm_unet(diffusion_model)
        if transformer and not dit.is_dit(diffusion_model):
            print(f"{_PREFIX} this model ({type(diffusion_model).__name__}) has neither UNet blocks nor Flux/Chroma/"
                  "SD3 transformer blocks; generating without SEG.")
            return False
        if not transformer and settings.mode == "skip":
            raise SegParamError(dit.SKIP_ON_UNET)
        reason = neighbours.conflict(p, host=self.name, settings=settings) or neighbours.forge_reference(unet.model_options)
        if reason:
            print(f"{_PREFIX} skipped for this generation: {reason}.")
            return False
        if unet.model_options.get("tiled_diffusion"):
            # The built-in MultiDiffusion's wrapper runs the UNet per batch of tiles, each tile holding all
            # rows: the SEG rows' slice would cover the first tile only.
            print(f"{_PREFIX} skipped for this generation: MultiDiffusion (tiled diffusion) runs the UNet tile by tile.")
            return False
        if transformer:
            return self._start_dit(p, settings, forge_objects, unet, diffusion_model)
        try:
            selected = seg_layers.select_layers(diffusion_model, settings.layers)
        except ValueError as error:
            raise SegParamError(str(error)) from None
        selected, reasons = neighbours.intact_layers(selected, neighbours.token_merging_forge(unet.model_options))
        if reasons:
            this_pass = "the hires pass" if getattr(p, "is_hr_pass", False) else "this pass"
            if not selected:
                print(f"{_PREFIX} skipped in {this_pass}: {'; '.join(reasons)}, which is every layer of "
                      f"'{settings.layers}'.")
                return False
            print(f"{_PREFIX} {'; '.join(reasons)}: SEG leaves those layers alone in {this_pass}.")
        patch = SegPatch(settings, self.attention(), progress=lambda: _denoiser_progress(p))
        registry = HookRegistry("seg-forge")
        try:
            _patch_unet(registry, patch, forge_objects, unet, selected)
            self._guard_sampler(p, registry)
            self._keep_post_cfg(p, registry, patch)
            self._follow_refiner(p, registry, patch)
        except Exception:
            registry.remove_all()
            raise
        self._open = (p, registry, patch)
        self.last_patch = patch
        return True

    def _start_dit(self, p, settings, forge_objects, unet, diffusion_model):
        """Flux, Chroma, SD3: the same batch and guidance, attention reached through the blocks (dit_patches)."""
        try:
            blocks = dit.select_blocks(diffusion_model, settings.layers, type(diffusion_model).__name__)
        except ValueError as error:
            raise SegParamError(str(error)) from None
        patch = SegPatch(settings, self.attention(), progress=lambda: _denoiser_progress(p))
        registry = HookRegistry("seg-forge")
        try:
            dit_patches.install(registry, diffusion_model, blocks, settings.mode, settings.sigma, lambda: patch.call)
            prefix.install(registry, diffusion_model, prefix.dit_prefix(dit.dit_blocks(diffusion_model), blocks),
                           patch.copies, prefix.foreign_patches(unet.model_options), check_hooks=False)
            registry.replace(forge_objects, "unet", patch.apply(unet))
            self._guard_sampler(p, registry)
            self._keep_post_cfg(p, registry, patch)
        except dit_patches.Unsupported as why:
            registry.remove_all()
            print(f"{_PREFIX} this model ({type(diffusion_model).__name__}) is not one SEG knows how to reach ({why}; "
                  "it knows Flux, Chroma and SD3); generating without SEG.")
            return False
        except Exception:
            registry.remove_all()
            raise
        self._open = (p, registry, patch)
        self.last_patch = patch
        return True

    def _guard_sampler(self, p, registry):
        """End the pass when the sampler returns or raises, whichever sampling entry the host uses."""
        sampler = getattr(p, "sampler", None)
        if sampler is None:
            return
        for name in ("sample", "sample_img2img"):
            original = getattr(sampler, name, None)
            if original is None:
                continue

            def guarded(*args, _original=original, **kwargs):
                try:
                    return _original(*args, **kwargs)
                finally:
                    self.stop(p)

            registry.replace(sampler, name, guarded)

    def _keep_post_cfg(self, p, registry, patch):
        """Keep SEG's post-CFG function when a sampler hands the denoiser model options of its own.

        Forge Neo (7862a96, modules/sd_samplers_cfg_denoiser.py CFGDenoiser.forward) passes the sampler's
        ``model_options`` keyword to ``sampling_function(..., extra_model_options=...)``, which copies the UNet
        patcher's options and ``update()``s them with it. Its CFG++ samplers (modules/sd_samplers_cfgpp.py, through
        backend/patcher/base.py set_model_options_post_cfg_function) send a ``sampler_post_cfg_function`` list
        holding their own function only, so the patcher's list, SEG's function with it, would be replaced: SEG
        rows computed every step and never used. For the pass, the denoiser's forward puts SEG's function back in
        front of such a list (other extensions' functions are left as the host leaves them). Forge and reForge
        pass no such keyword: nothing changes there."""
        denoiser = getattr(getattr(p, "sampler", None), "model_wrap_cfg", None)
        original = getattr(denoiser, "forward", None)
        if original is None:
            return

        def forward(*args, **kwargs):
            options = kwargs.get("model_options")
            ours = patch.post_cfg_function
            if isinstance(options, dict) and ours is not None and "sampler_post_cfg_function" in options:
                theirs = list(options["sampler_post_cfg_function"] or [])
                if ours not in theirs:
                    kwargs["model_options"] = dict(options, sampler_post_cfg_function=[ours] + theirs)
            return original(*args, **kwargs)

        registry.replace(denoiser, "forward", forward)

    def samplers_common(self):
        if self._samplers_common is None:
            try:
                from modules import sd_samplers_common
            except ImportError:  # not inside a WebUI
                return None
            self._samplers_common = sd_samplers_common
        return self._samplers_common

    def _follow_refiner(self, p, registry, patch):
        """Wrap the host's apply_refiner for this pass: patch the refiner's UNet after a switch."""
        common = self.samplers_common()
        original = getattr(common, "apply_refiner", None)
        if original is None:
            return

        def apply_refiner(cfg_denoiser, *args, **kwargs):
            switched = original(cfg_denoiser, *args, **kwargs)
            if switched:
                self._patch_refiner(p, registry, patch)
            return switched

        registry.replace(common, "apply_refiner", apply_refiner)

    def _patch_refiner(self, p, registry, patch):
        forge_objects = p.sd_model.forge_objects
        unet = forge_objects.unet
        try:
            if not _is_ldm_unet(unet.model.diffusion_model):
                raise ValueError(f"{type(unet.model.diffusion_model).__name__} has no UNet blocks")
            selected = seg_layers.select_layers(unet.model.diffusion_model, patch.settings.layers)
        except ValueError as error:
            # The base model's patches went with it: the refiner's steps run without SEG rows.
            print(f"{_PREFIX} SEG ends at the refiner switch: {error}")
            p.extra_generation_params[REFINER_KEY] = "off"
            return
        _patch_unet(registry, patch, forge_objects, unet, selected)
        p.extra_generation_params[REFINER_KEY] = "on"

    def stop(self, p=None):
        opened, self._open = self._open, None
        if opened is None:
            return
        try:
            opened[1].remove_all()
        except Exception as error:  # never raise from cleanup
            print(f"{_PREFIX} cleanup failed: {error!r}")


def _patch_unet(registry, patch, forge_objects, unet, selected):
    """A UNet's patched clone into forge_objects, and its shared prefix (full rows when another extension's
    patches are in the patcher); the base model's and the refiner's alike."""
    blocked = prefix.foreign_patches(unet.model_options)
    registry.replace(forge_objects, "unet", patch.apply(unet, selected))
    model = unet.model.diffusion_model
    prefix.install(registry, model, prefix.unet_prefix(model, selected), patch.copies, blocked, check_hooks=False)


def create_adapter(host):
    return ForgeAdapter(host)
