"""Other A1111 extensions that run the UNet in a way SEG's extra batch rows cannot share.

SEG adds copies of the cond rows to the host's batch. Most extensions never notice (sd-webui-controlnet in
its usual modes gives the copies exactly the cond rows' control, because it recognises cond rows by a mark
in their text conditioning, which the copies carry). A few features read the batch by row *position* or
replace self-attention themselves; with them SEG would be silently wrong or crash, so SEG steps aside for
that generation (``conflict(p)`` names the reason; the caller prints it and writes no SEG infotext).

Looked up through the scripts' own objects in ``p.scripts.alwayson_scripts``, by attribute, never by import.
"""

# sd-webui-controlnet (Mikubill, scripts/enums.py BatchOption.SEPARATE)
_CN_SEPARATE = "Each ControlNet unit for each image in a batch"


def conflict(p, host="a1111", settings=None):
    """A one-line reason why SEG cannot run in this generation, or None."""
    if host == "a1111":
        reason = _dynamic_thresholding(p)
        if reason:
            return reason
    for script in getattr(getattr(p, "scripts", None), "alwayson_scripts", None) or ():
        reason = _regional_prompter(script)
        if not reason and host == "a1111":
            reason = _controlnet(script, settings) or _tiled_diffusion(script, p)
        if reason:
            return reason
    return None


def _dynamic_thresholding(p):
    """sd-dynamic-thresholding (73e4e045) on A1111: its CFG denoiser (``main_class`` = its settings) overrides
    combine_denoised and takes every row before the last B as cond rows, so SEG rows would enter its CFG as
    extra AND sub-prompts. (On Forge its built-in counterpart works on the host's cond/uncond predictions.)"""
    denoiser = getattr(getattr(p, "sampler", None), "model_wrap_cfg", None)
    if getattr(denoiser, "main_class", None) is not None and "combine_denoised" in vars(type(denoiser)):
        return "Dynamic Thresholding combines every row before the uncond rows as a cond row"
    return None


def _regional_prompter(script):
    """sd-webui-regional-prompter (be623452): active for this generation once its process ran; it splits
    rows into cond/uncond halves in cross-attention and reorders rows by position in latent mode."""
    if getattr(script, "active", False) is True and callable(getattr(script, "title", None)) \
            and script.title() == "Regional Prompter":
        return "Regional Prompter splits and reorders the batch rows by position"
    return None


def _controlnet(script, settings=None):
    """sd-webui-controlnet (scripts/hook.py, v1.1.455): its hook for this generation is ``latest_network``,
    installed in Script.process (or before_process_batch with a refiner), so before SEG starts."""
    network = getattr(script, "latest_network", None)
    state = getattr(script, "ui_batch_option_state", None)
    if network is None or not isinstance(state, (list, tuple)) or len(state) < 2:
        return None
    params = getattr(network, "control_params", None) or []
    if state[1]:
        # StyleAlign runs the self-attention of all cond rows as one sequence: SEG rows would share it.
        return "ControlNet's batch option 'style align' shares self-attention across the batch rows"
    if any(getattr(getattr(param, "control_model_type", None), "name", "") == "AttentionInjection" for param in params):
        # reference_* preprocessors replace every self-attention with their own (keys from a reference pass).
        return "a ControlNet reference preprocessor replaces the model's self-attention"
    if state[0] == _CN_SEPARATE and len(params) > 1:
        # k-th cond row gets unit k mod n: SEG copies sit at other positions and would get other units.
        return "ControlNet's batch option 'Each ControlNet unit for each image' assigns units by row position"
    partial = settings is not None and (settings.start > 0 or settings.end < 1)
    names = [str((getattr(param, "preprocessor", None) or {}).get("name", "")) for param in params]
    if partial and any("inpaint_only" in name or "colorfix" in name for name in names):
        # These cache a latent with as many rows as the first UNet call had; SEG active on only part of the
        # steps changes the row count between calls, and the cached latent no longer broadcasts.
        return "ControlNet's inpaint_only / colorfix preprocessors need the same rows in every step (SEG start/end)"
    for param in params:
        for hint in (getattr(param, "hint_cond", None), getattr(param, "hr_hint_cond", None)):
            if getattr(hint, "ndim", 0) == 4 and hint.shape[0] > 1:
                # One control image per batch row (batch / AnimateDiff inputs): SEG rows have none.
                return "ControlNet has one control image per batch row"
    return None


def _tiled_diffusion(script, p):
    """Tiled Diffusion / DemoFusion (multidiffusion-upscaler-for-automatic1111, 22798f68): the sampler its
    create_sampler hijack made for this pass is its delegate's ``sampler_raw``; the delegate replaced the
    k-diffusion model's forward and runs the UNet once per batch of tiles, each tile holding all rows, so
    SEG's position-based rows would match the first tile only."""
    delegate = getattr(script, "delegate", None)
    sampler = getattr(p, "sampler", None)
    if delegate is None or sampler is None or getattr(delegate, "sampler_raw", None) is not sampler:
        return None
    return f"{script.title()} runs the UNet tile by tile"


def forge_reference(model_options):
    """Forge / reForge's reference_* preprocessors (extensions-builtin/forge_preprocessor_reference, loaded as
    module ``forge_reference.py``) replace every attn1 and rebuild each call's output as one block of ALL cond
    rows per cond chunk: with SEG's extra cond chunk the output has more rows than the call (a crash; the hosts
    hit the same with AND prompts)."""
    replace = ((model_options.get("transformer_options") or {}).get("patches_replace") or {}).get("attn1") or {}
    functions = list(replace.values()) + list(model_options.get("conditioning_modifiers") or [])
    if any("reference" in str(getattr(fn, "__module__", "")) for fn in functions):
        return "a ControlNet reference preprocessor replaces the model's self-attention"
    return None


# ---------------------------------------------------------------- features that reshape a layer's tokens

def token_merging_a1111(sd_model, unet):
    """tomesd as A1111 applies it (``sd_models.apply_token_merging`` before each pass, ``merge_attn=True``): the
    ratio in ``sd_model.applied_token_merged_ratio``, its arguments in ``unet._tome_info``. Returns the largest
    downsampling factor whose self-attention gets merged tokens, or None when token merging is off."""
    if not getattr(sd_model, "applied_token_merged_ratio", 0):
        return None
    args = (getattr(unet, "_tome_info", None) or {}).get("args") or {}
    if args.get("merge_attn") is False:
        return None
    return int(args.get("max_downsample", 1))


def token_merging_forge(model_options):
    """Forge's / reForge's ``TomePatcher`` (backend/misc/tomesd.py, ldm_patched/contrib/nodes_tomesd.py): an attn1
    patch that merges the queries of the layers at the latent's full size (its max_downsample is fixed at 1)."""
    patches = ((model_options.get("transformer_options") or {}).get("patches") or {}).get("attn1_patch") or []
    return 1 if any(getattr(fn, "__name__", "") == "tomesd_m" for fn in patches) else None


def hypertiled(module):
    """A1111's built-in Hypertile (extensions-builtin/hypertile): it wraps a layer's instance ``forward`` once and
    splits its tokens into tiles whenever ``enabled`` is set for the pass (before SEG starts: in its
    process / before_hr)."""
    params = getattr(module, "__webui_hypertile_params", None)
    return bool(getattr(params, "enabled", False))


def intact_layers(layers, merged_downsample=None, tiled=frozenset()):
    """Split the selected layers into those whose attention sees the whole token grid and a one-line reason per
    feature for the others. Token merging hands a layer at downsampling factor 2**level <= merged_downsample
    fewer tokens than its grid has; Hypertile attends tile by tile. SEG's blur, and the batch rows it relies
    on, are defined on the whole grid, so those layers are left alone. Returns (kept, reasons)."""
    merged = [layer for layer in layers if merged_downsample is not None and 2 ** layer.level <= merged_downsample]
    tiles = [layer for layer in layers if layer.name in tiled and layer not in merged]
    reasons = []
    for feature, affected in (("token merging merges the tokens of", merged), ("Hypertile tiles", tiles)):
        if affected:
            labels = ", ".join(dict.fromkeys(layer.label for layer in affected))
            reasons.append(f"{feature} {labels}")
    gone = {layer.name for layer in merged + tiles}
    return [layer for layer in layers if layer.name not in gone], reasons
