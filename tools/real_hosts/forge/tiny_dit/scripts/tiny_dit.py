"""tiny-dit: a harness-only override for Forge test installs (tools/real_hosts/forge/start.sh --tiny-dit), not part
of the extension. It lets Forge dfdcbab6 and Forge Neo (WebUI-Neo-Forge 7862a96) load the tiny random Flux /
Chroma checkpoints of tools/real_hosts/make_dit_checkpoints.py at their own size.

Forge builds every model component in ``backend.loader.load_huggingface_component(guess, component_name,
lib_name, cls_name, repo_path, state_dict)``. This script wraps that one module function (forge_loader looks it up
as a module global at each call) and changes two things only, before calling the host's function:

* FluxTransformer2DModel / ChromaTransformer2DModel: the sizes in ``guess.unet_config`` (the dict the host then
  passes to IntegratedFluxTransformer2DModel / IntegratedChromaTransformer2DModel) are read from the weights'
  shapes instead of huggingface_guess's hard-coded Flux values (detection.py: hidden 3072, 24 heads, 19 + 38
  blocks, context 4096, vec 768, rope axes [16, 56, 56]) and Forge's hard-coded Chroma approximator
  (loader.py GuessChroma: 3072 / 5120 / 5 layers). Updated in place, so the model's ``config`` says the same.
  Neo's bundled huggingface_guess (modules_forge/packages/huggingface_guess/detection.py, Flux branch) already
  counts the blocks and reads Flux's in_channels / vec_in_dim, but still fixes hidden 3072, 24 heads, context 4096,
  rope axes, and Chroma's approximator under its own names (out_dim 3072, hidden_dim 5120, n_layers 5; in_dim 64
  and in_channels 64 are the real, fixed values): the approximator sizes go under whichever names the guess holds.
* T5EncoderModel: the config that the host reads from backend/huggingface/<repo>/<component>/config.json with
  ``read_arbitrary_config`` (T5-XXL: d_model 4096, 24 layers, 64 heads, d_ff 10240) gets d_model, num_layers,
  num_heads and d_ff from the weights (Forge's T5 takes head dim = d_model / num_heads).

For a full-size checkpoint the shapes give back exactly the host's values (checked in the README), so nothing
changes; detection (huggingface_guess.guess, Forge's Chroma special case), the engines (backend/diffusion_engine/
flux.py, chroma.py), the model classes and their forward, KModel, the sampling function and the text processing
are all the host's own.
"""
import backend.loader as _loader

_original = _loader.load_huggingface_component
_T5_PREFIX = "transformer.encoder."


def _count(keys, prefix):
    n = 0
    while any(k.startswith(f"{prefix}{n}.") for k in keys):
        n += 1
    return n


def axes_for(head_dim):
    """Flux's rope axes for a head dim: the real [16, 56, 56] for 128 (make_dit_checkpoints.axes_for)."""
    first = head_dim // 8
    rest = (head_dim - first) // 2
    return [first, rest, head_dim - first - rest]


# Chroma's approximator sizes: (Forge's unet_config names, Neo's).
APPROXIMATOR_NAMES = {"out": ("guidance_out_dim", "out_dim"), "hidden": ("guidance_hidden_dim", "hidden_dim"),
                      "layers": ("guidance_n_layers", "n_layers")}


def flux_sizes(sd, chroma, config=None):
    """The sizes huggingface_guess / Forge hard-code, read from a Flux or Chroma transformer's weights. ``config``:
    the host's guessed unet_config, which says under which names this host keeps Chroma's approximator sizes
    (Forge's when it holds none of them)."""
    hidden, patch_channels = sd["img_in.weight"].shape
    head_dim = sd["double_blocks.0.img_attn.norm.key_norm.scale"].shape[0]
    keys = list(sd.keys())
    sizes = {
        "context_in_dim": sd["txt_in.weight"].shape[1],
        "hidden_size": hidden,
        "mlp_ratio": sd["double_blocks.0.img_mlp.0.weight"].shape[0] / hidden,
        "num_heads": hidden // head_dim,
        "depth": _count(keys, "double_blocks."),
        "depth_single_blocks": _count(keys, "single_blocks."),
        "axes_dim": axes_for(head_dim),
    }
    if not chroma:  # both hosts' Flux takes latent channels (x 4 patch); their Chroma keeps the real 64
        sizes["in_channels"] = patch_channels // 4
    if "vector_in.in_layer.weight" in sd:
        sizes["vec_in_dim"] = sd["vector_in.in_layer.weight"].shape[1]
    if chroma:
        neo = config is not None and "out_dim" in config and "guidance_out_dim" not in config
        names = {what: pair[1] if neo else pair[0] for what, pair in APPROXIMATOR_NAMES.items()}
        sizes[names["out"]] = sd["distilled_guidance_layer.out_proj.weight"].shape[0]
        sizes[names["hidden"]] = sd["distilled_guidance_layer.in_proj.weight"].shape[0]
        sizes[names["layers"]] = _count(keys, "distilled_guidance_layer.layers.")
    return {k: (int(v) if isinstance(v, int) or hasattr(v, "__index__") else v) for k, v in sizes.items()}


def t5_sizes(sd):
    d_ff = sd[_T5_PREFIX + "block.0.layer.1.DenseReluDense.wi_0.weight"].shape[0] \
        if _T5_PREFIX + "block.0.layer.1.DenseReluDense.wi_0.weight" in sd \
        else sd[_T5_PREFIX + "block.0.layer.1.DenseReluDense.wi.weight"].shape[0]
    return {
        "d_model": int(sd[_T5_PREFIX + "final_layer_norm.weight"].shape[0]),
        "num_layers": _count(list(sd.keys()), _T5_PREFIX + "block."),
        "num_heads": int(sd[_T5_PREFIX + "block.0.layer.0.SelfAttention.relative_attention_bias.weight"].shape[1]),
        "d_ff": int(d_ff),
    }


def _plain(sd, key):
    """A plain floating tensor (not a GGUF / bnb quantised one, whose shapes are not the model's)."""
    import torch
    t = sd.get(key) if isinstance(sd, dict) else None
    return type(t) in (torch.Tensor, torch.nn.Parameter) and t.dtype.is_floating_point


def _changes(old, new):
    return {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}


def load_huggingface_component(guess, component_name, lib_name, cls_name, repo_path, state_dict):
    if cls_name in ("FluxTransformer2DModel", "ChromaTransformer2DModel") and _plain(state_dict, "img_in.weight"):
        sizes = flux_sizes(state_dict, chroma=cls_name == "ChromaTransformer2DModel", config=guess.unet_config)
        changed = _changes(guess.unet_config, sizes)
        if changed:
            print(f"[tiny-dit] {cls_name} sized from its weights: "
                  + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()))
        guess.unet_config.update(sizes)
    elif cls_name == "T5EncoderModel" and _plain(state_dict, _T5_PREFIX + "final_layer_norm.weight"):
        sizes = t5_sizes(state_dict)
        host_read = _loader.read_arbitrary_config

        def read_arbitrary_config(directory):
            config = host_read(directory)
            changed = _changes(config, sizes)
            if changed:
                print(f"[tiny-dit] T5 ({component_name}) sized from its weights: "
                      + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()))
            config.update(sizes)
            return config

        _loader.read_arbitrary_config = read_arbitrary_config
        try:
            return _original(guess, component_name, lib_name, cls_name, repo_path, state_dict)
        finally:
            _loader.read_arbitrary_config = host_read
    return _original(guess, component_name, lib_name, cls_name, repo_path, state_dict)


_loader.load_huggingface_component = load_huggingface_component
print("[tiny-dit] backend.loader.load_huggingface_component sizes Flux / Chroma transformers and T5 from their weights")
