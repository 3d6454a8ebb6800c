"""Tiny random-weight Flux (dev), Chroma and SD3 checkpoints with the real key layouts, for running SEG in a real
Forge on a CPU without downloading weights.

    <forge>/venv/bin/python tools/real_hosts/make_dit_checkpoints.py [--forge <hosts>/forge]
        [--out <hosts>/models] [--only flux,chroma,sd3] [--measure]
    <a1111>/venv/bin/python tools/real_hosts/make_dit_checkpoints.py --only sd3-a1111 [--a1111 <hosts>/a1111]

Run it with the Python of a Forge install built by tools/real_hosts/forge/build.sh: every key and shape comes from
instantiating Forge's own classes on the ``meta`` device (backend/nn/flux.py IntegratedFluxTransformer2DModel,
chroma.py IntegratedChromaTransformer2DModel, mmditx.py MMDiTX, t5.py IntegratedT5, clip.py IntegratedCLIP around
transformers' CLIPTextModel, vae.py IntegratedAutoencoderKL), with the text-encoder and VAE configs Forge ships in
backend/huggingface/<repo>/. One single file per family, in the prefixes Forge's loader splits
(``model.diffusion_model.``, ``text_encoders.clip_l|clip_g|t5xxl.``, ``vae.`` for Flux / Chroma,
``first_stage_model.`` for SD3), written tensor by tensor in fp16 by make_checkpoints.write_streaming.

Sizes (``SIZES``). SD3 is small by its keys alone: Forge's detection reads depth from x_embedder (hidden = 64 *
depth). Flux and Chroma are not: huggingface_guess 84826248 hard-codes Flux at hidden 3072, 24 heads, 19 + 38
blocks, context 4096, and Forge's loader hard-codes Chroma's approximator (3072 / 5120 / 5 layers); the T5 config
(d_model 4096, 24 layers) comes from a json file. These files are loaded small only with the harness override
tools/real_hosts/forge/tiny_dit (start.sh --tiny-dit), which sizes those configs from the weights' shapes. With
the override, a full-size checkpoint gets exactly the host's hard-coded values back (see that README).

Weights: PyTorch's default layer init (uniform +-1/sqrt(fan_in)), norms 1 / 0, embeddings N(0, 0.02), never zero.
Random attention is nearly uniform, and Flux / Chroma / SD3.5 normalise q and k per head (RMSNorm), so scaling the
qkv weights would not sharpen it: the QK-norm scales are set to ``SCALES["qk_norm"]`` (logits x qk_norm**2; SD3
without QK-norm: its q and k rows of qkv are scaled instead), attention output projections (double-block
``*_attn.proj``, the attention columns of single-block ``linear2``, SD3 ``attn.proj``) by ``SCALES["attn_out"]``,
and the VAE decoder's upsampling convs by ``SCALES["upsample"]``, so that SEG visibly changes pixels.
``--measure`` runs each transformer (Forge's class, fp32) on one random latent and reports how much its output
changes when the middle joint block's image queries are replaced by their mean (SEG at sigma = inf).
"""
import argparse
import contextlib
import math
import os
import sys
import time
import zlib

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_checkpoints as _mc  # noqa: E402  (write_streaming; the SD files' maker)
from hosts import hosts_dir  # noqa: E402  (installs folder: $SEG_HOSTS_DIR, else <checkout>/../hosts)

# The transformer sizes of the tiny checkpoints. hidden // heads = head dim; Flux's rope axes are derived from it
# (axes_for). Chroma's approximator output must equal hidden.
SIZES = {
    "flux": dict(hidden=256, heads=4, depth=4, single=4, mlp_ratio=4.0),
    "chroma": dict(hidden=256, heads=4, depth=4, single=4, mlp_ratio=4.0, approx_hidden=128, approx_layers=2),
    # SD3: depth d -> hidden 64 d, d heads (Forge's MMDiTX); pos_embed on a P x P patch grid (P >= latent / 2);
    # qk_norm "rms" as SD3.5 (Forge detects it from ln_q); attn2_layers: SD3.5-Medium's second attention, which
    # Forge turns on (layers 0-12) only when P == 384
    "sd3": dict(depth=4, pos_embed=32, qk_norm="rms"),
}
# T5 for Flux / Chroma: d_model = the transformer's context_in_dim. SD3 concatenates T5 with CLIP-L+G padded to
# 4096 features, so its T5 keeps d_model 4096 (two layers: Forge's loader refuses a T5 of 16 tensors or fewer with
# 'You do not have T5 state dict!', and one layer has 13); Forge runs it only with the option sd3_enable_t5.
T5_SIZES = {
    "flux": dict(d_model=64, num_layers=2, num_heads=4, d_ff=128),
    "chroma": dict(d_model=64, num_layers=2, num_heads=4, d_ff=128),
    "sd3": dict(d_model=4096, num_layers=2, num_heads=4, d_ff=64),
}
SCALES = {"qk_norm": 3.0, "attn_out": 4.0, "upsample": 2.0}
FILES = {"flux": "seg-random-flux-dev.safetensors", "chroma": "seg-random-chroma.safetensors",
         "sd3": "seg-random-sd3.safetensors",
         # the same SD3 without its T5: does Forge load SD3 without T5 (its sd35.py asks for all three encoders)?
         "sd3-no-t5": "seg-random-sd3-no-t5.safetensors",
         # SD3 Medium's layout (no QK-norm, no T5 in the file) from A1111 1.10.1's own classes (--a1111): the SD3
         # A1111 runs; its VAE keys are the original (ldm) ones, which A1111's SDVAE loads
         "sd3-a1111": "seg-random-sd3-a1111.safetensors"}
REPOS = {"flux": "black-forest-labs/FLUX.1-dev", "chroma": "Chroma", "sd3": "stabilityai/stable-diffusion-3-medium-diffusers"}


def axes_for(head_dim):
    """Flux's rope axes for a head dim: 1/8 for the (unused) first axis, the rest split between rows and columns,
    as the real [16, 56, 56] for 128. The override (tools/real_hosts/forge/tiny_dit) uses the same rule."""
    first = head_dim // 8
    rest = (head_dim - first) // 2
    axes = [first, rest, head_dim - first - rest]
    if any(a % 2 for a in axes):
        raise ValueError(f"head dim {head_dim}: rope axes {axes} must be even")
    return axes


def setup_forge(forge):
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    sys.argv = [sys.argv[0], "--always-cpu"]  # backend.args parses the command line at import
    if os.path.isdir(os.path.join(forge, "modules_forge", "packages")):
        # Forge Neo 7862a96 on the CPU picks attention_basic, whose get_attn_precision reads
        # args.dont_upcast_attention, an option Neo no longer defines (AttributeError): as start.sh, use PyTorch's
        sys.argv.append("--attention-pytorch")
    # Forge bundles gguf & co. in packages_3rdparty, Neo (gguf, huggingface_guess, k_diffusion) in modules_forge/packages
    for p in (forge, os.path.join(forge, "packages_3rdparty"), os.path.join(forge, "modules_forge", "packages")):
        if p not in sys.path:
            sys.path.insert(0, p)
    os.chdir(forge)


def read_config(forge, repo, component):
    import json
    with open(os.path.join(forge, "backend", "huggingface", repo, component, "config.json")) as f:
        return json.load(f)


def t5_config(forge, repo, component, sizes):
    config = read_config(forge, repo, component)
    config.update(sizes)
    return config


def setup_a1111(a1111):
    sys.argv = [sys.argv[0]]  # modules.shared parses the command line at import
    if a1111 not in sys.path:
        sys.path.insert(0, a1111)
    os.chdir(a1111)


def build_a1111_sd3(a1111):
    """{prefix: meta module} of an SD3 checkpoint as A1111 1.10.1 loads it, built by its own classes
    (modules/models/sd3): sd3_impls.BaseModel sizes MMDiT from x_embedder (depth, hidden 64 * depth), pos_embed
    (grid) and context_embedder; SDVAE; sd3_cond's CLIP-G and CLIP-L at their configs there. T5 is left out: A1111
    runs without it unless the option sd3_enable_t5 is on (then it would load T5-XXL at full size)."""
    setup_a1111(a1111)
    from modules import initialize  # the host's own import order (webui.py); sd3's modules alone import in a cycle
    with contextlib.redirect_stdout(sys.stderr):
        initialize.imports()
    from modules.models.sd3 import sd3_cond
    from modules.models.sd3.mmdit import MMDiT
    from modules.models.sd3.other_impls import SDClipModel, SDXLClipG
    from modules.models.sd3.sd3_impls import SDVAE

    d, grid = SIZES["sd3"]["depth"], SIZES["sd3"]["pos_embed"]
    with torch.device("meta"), torch.no_grad():  # as SD3Inferencer / SD3Cond build them (no_grad: in-place inits)
        return {
            "model.diffusion_model.": MMDiT(
                input_size=None, pos_embed_scaling_factor=None, pos_embed_offset=None, pos_embed_max_size=grid,
                patch_size=2, in_channels=16, depth=d, num_patches=grid * grid, adm_in_channels=2048,
                context_embedder_config={"target": "torch.nn.Linear",
                                         "params": {"in_features": 4096, "out_features": 64 * d}}),
            "text_encoders.clip_g.": SDXLClipG(sd3_cond.CLIPG_CONFIG, device="meta", dtype=torch.float32),
            "text_encoders.clip_l.": SDClipModel(layer="hidden", layer_idx=-2, device="meta", dtype=torch.float32,
                                                 layer_norm_hidden_state=False, return_projected_pooled=False,
                                                 textmodel_json_config=sd3_cond.CLIPL_CONFIG),
            "first_stage_model.": SDVAE(device="meta", dtype=torch.float32),
        }


def build(forge, family):
    """{prefix: meta module} of one family's checkpoint, built by Forge's classes."""
    from transformers import CLIPTextConfig, CLIPTextModel
    from backend.nn.clip import IntegratedCLIP
    from backend.nn.t5 import IntegratedT5
    from backend.nn.vae import IntegratedAutoencoderKL

    repo = REPOS[family]
    parts = {}
    with torch.device("meta"):
        if family in ("flux", "chroma"):
            s, t5 = SIZES[family], T5_SIZES[family]
            common = dict(in_channels=16, vec_in_dim=768, context_in_dim=t5["d_model"], hidden_size=s["hidden"],
                          mlp_ratio=s["mlp_ratio"], num_heads=s["heads"], depth=s["depth"],
                          depth_single_blocks=s["single"], axes_dim=axes_for(s["hidden"] // s["heads"]),
                          theta=10000, qkv_bias=True)
            if family == "flux":
                from backend.nn.flux import IntegratedFluxTransformer2DModel
                parts["model.diffusion_model."] = IntegratedFluxTransformer2DModel(
                    **host_kwargs(IntegratedFluxTransformer2DModel, common, guidance_embed=True))
                parts["text_encoders.clip_l."] = IntegratedCLIP(
                    CLIPTextModel, CLIPTextConfig.from_pretrained(os.path.join(forge, "backend/huggingface", repo,
                                                                               "text_encoder")),
                    add_text_projection=True)
                parts["text_encoders.t5xxl."] = IntegratedT5(t5_config(forge, repo, "text_encoder_2", t5))
            else:
                from backend.nn.chroma import IntegratedChromaTransformer2DModel
                parts["model.diffusion_model."] = IntegratedChromaTransformer2DModel(**host_kwargs(
                    IntegratedChromaTransformer2DModel, common, guidance_out_dim=s["hidden"],
                    guidance_hidden_dim=s["approx_hidden"], guidance_n_layers=s["approx_layers"]))
                parts["text_encoders.t5xxl."] = IntegratedT5(t5_config(forge, repo, "text_encoder", t5))
            parts["vae."] = IntegratedAutoencoderKL.from_config(
                IntegratedAutoencoderKL.load_config(os.path.join(forge, "backend/huggingface", repo, "vae")))
        else:
            from backend.nn.mmditx import MMDiTX
            s, t5 = SIZES["sd3"], T5_SIZES["sd3"]
            d, grid = s["depth"], s["pos_embed"]
            parts["model.diffusion_model."] = MMDiTX(
                input_size=None, patch_size=2, in_channels=16, depth=d, adm_in_channels=2048,
                context_embedder_config={"target": "torch.nn.Linear",
                                         "params": {"in_features": 4096, "out_features": 64 * d}},
                num_patches=grid * grid, pos_embed_max_size=grid, qk_norm=s["qk_norm"], out_channels=16)
            for name, component, cls in (("clip_l", "text_encoder", CLIPTextModel),
                                         ("clip_g", "text_encoder_2", CLIPTextModel)):
                config = CLIPTextConfig.from_pretrained(os.path.join(forge, "backend/huggingface", repo, component))
                parts[f"text_encoders.{name}."] = IntegratedCLIP(cls, config, add_text_projection=True)
            parts["text_encoders.t5xxl."] = IntegratedT5(t5_config(forge, repo, "text_encoder_3", t5))
            parts["first_stage_model."] = IntegratedAutoencoderKL.from_config(
                IntegratedAutoencoderKL.load_config(os.path.join(forge, "backend/huggingface", repo, "vae")))
    return parts


# Forge Neo's names for Chroma's approximator sizes (Forge dfdcbab6: guidance_*).
_NEO_APPROXIMATOR = {"guidance_out_dim": "out_dim", "guidance_hidden_dim": "hidden_dim", "guidance_n_layers": "n_layers"}


def host_kwargs(cls, common, **extra):
    """The constructor arguments of this host's Flux / Chroma class. Forge dfdcbab6 takes latent channels (x 4
    patch) and names Chroma's approximator guidance_*; Forge Neo also takes patch_size and out_channels, gives
    Chroma its 64 patch channels as in_channels and no vector input, and names the approximator in_dim (64: the
    16 + 16 + 32 timestep / guidance / index embedding), out_dim, hidden_dim, n_layers."""
    import inspect
    takes = inspect.signature(cls).parameters
    kwargs = dict(common, **extra)
    if "patch_size" in takes:
        kwargs["patch_size"] = 2
        if "in_dim" in takes:  # Neo's Chroma
            kwargs["in_channels"] = kwargs["in_channels"] * 4
            kwargs["in_dim"] = 64
            kwargs.update({_NEO_APPROXIMATOR[k]: kwargs.pop(k) for k in list(kwargs) if k in _NEO_APPROXIMATOR})
        kwargs["out_channels"] = kwargs["in_channels"]
    unknown = set(kwargs) - set(takes)
    kwargs = {k: v for k, v in kwargs.items() if k in takes}
    missing = [n for n, p in takes.items() if n != "self" and p.default is p.empty and n not in kwargs]
    if missing:
        raise SystemExit(f"{cls.__name__} of this host also needs {missing} (given {sorted(kwargs)}, dropped "
                         f"{sorted(unknown)}): make_dit_checkpoints.py does not know this host's version")
    return kwargs


def plan_of(parts):
    """[(key, shape, kind, fan_in)] of every tensor, with the kind the draw needs."""
    plan = []
    for prefix, model in parts.items():
        owners = {}
        for mname, module in model.named_modules():
            for pname, _ in module.named_parameters(recurse=False):
                owners[f"{mname}.{pname}" if mname else pname] = (module, pname)
        for key, t in model.state_dict(keep_vars=True).items():
            if key not in owners:
                plan.append((prefix + key, tuple(t.shape), "buffer", None))
                continue
            module, local = owners[key]
            cls = type(module).__name__.lower()
            kind, fan_in = "small", None
            if isinstance(module, torch.nn.Embedding):
                kind = "embedding"
            elif "norm" in cls:
                kind = "norm_weight" if local in ("weight", "scale") else "zero"
            elif local == "weight" and t.dim() >= 2:
                kind, fan_in = "linear", t[0].numel()
            elif local == "bias" and getattr(module, "weight", None) is not None and module.weight.dim() >= 2:
                kind, fan_in = "bias", module.weight[0].numel()
            elif local == "logit_scale":
                kind = "logit_scale"
            elif key.endswith("pos_embed") or key.endswith("register"):
                kind = "embedding"
            plan.append((prefix + key, tuple(t.shape), kind, fan_in))
    return plan


def scale(key, t, family):
    """The extra factor of a weight (see the module docstring)."""
    if key.endswith((".query_norm.scale", ".key_norm.scale", ".ln_q.weight", ".ln_k.weight")):
        return t * SCALES["qk_norm"]
    if key.endswith(("_attn.proj.weight", ".attn.proj.weight", ".attn2.proj.weight")):
        return t * SCALES["attn_out"]
    if not family.startswith("sd3") and key.endswith(".linear2.weight") and ".single_blocks." in key:
        hidden = t.shape[0]  # linear2 takes cat(attention, mlp): scale the attention's columns
        t = t.clone()
        t[:, :hidden] *= SCALES["attn_out"]
        return t
    no_qk_norm = family == "sd3-a1111" or (family == "sd3" and SIZES["sd3"]["qk_norm"] is None)
    if no_qk_norm and key.endswith((".attn.qkv.weight", ".attn2.qkv.weight")):
        t = t.clone()
        third = t.shape[0] // 3
        t[:2 * third] *= SCALES["qk_norm"]
        return t
    if ".decoder.up." in key and ".upsample.conv." in key:
        return t * SCALES["upsample"]
    return t


def draw(key, shape, kind, fan_in, seed):
    g = torch.Generator().manual_seed((zlib.crc32(key.encode()) ^ seed) & 0x7FFFFFFF)
    if kind == "norm_weight":
        return torch.ones(shape)
    if kind == "zero":
        return torch.zeros(shape)
    if kind == "embedding":
        return torch.randn(shape, generator=g) * 0.02
    if kind == "logit_scale":
        return torch.full(shape, math.log(1 / 0.07))
    if kind in ("linear", "bias"):
        return (torch.rand(shape, generator=g) * 2 - 1) / math.sqrt(fan_in)
    return (torch.rand(shape, generator=g) * 2 - 1) * 0.02


def make(forge, family, out, seed, a1111=None):
    name = family
    family = family.replace("-no-t5", "")
    parts = build_a1111_sd3(a1111) if family == "sd3-a1111" else build(forge, family)
    if name.endswith("-no-t5"):
        del parts["text_encoders.t5xxl."]
    plan = plan_of(parts)
    buffers = [k for k, _, kind, _ in plan if kind == "buffer"]

    def value(key, shape, kind, fan_in):
        if kind == "buffer":
            if key.endswith("position_ids"):
                return torch.arange(shape[-1], dtype=torch.int64).reshape(shape)
            if key.endswith("pos_embed"):  # MMDiTX registers pos_embed as a buffer; the checkpoints carry it
                return scale(key, draw(key, shape, "embedding", None, seed), family).float()
            raise ValueError(f"no value for buffer {key}")
        return scale(key, draw(key, shape, kind, fan_in, seed), family)

    path = os.path.join(out, FILES[name])
    _mc.write_streaming(path, plan, value)
    n = {prefix: sum(p.numel() for p in m.parameters()) for prefix, m in parts.items()}
    print(f"{name}: {path}  {len(plan)} tensors ({len(buffers)} buffers), "
          + ", ".join(f"{prefix.rstrip('.')} {v / 1e6:.1f} M" for prefix, v in n.items())
          + f"; {os.path.getsize(path) / 2**20:.0f} MiB")
    return path


def measure(forge, family, path, seed=1):
    """Relative change of the transformer's output when the middle joint block's image queries are replaced by
    their mean (SEG at sigma = inf, the guidance row alone), at sigma 0.6 on a 16 x 24 latent."""
    from safetensors.torch import load_file
    sd = load_file(path)
    model_sd = {k[len("model.diffusion_model."):]: v.float() for k, v in sd.items() if k.startswith("model.diffusion_model.")}
    parts = build(forge, family)
    model = parts["model.diffusion_model."].to_empty(device="cpu")
    model.load_state_dict(model_sd, strict=False)
    model.eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, 16, 24, generator=g)
    text = 256 if family != "chroma" else 8
    if family == "sd3":
        import backend.nn.mmditx as host
        context = torch.randn(1, 77 + 256, 4096, generator=g) * 0.5
        kwargs = dict(y=torch.randn(1, 2048, generator=g) * 0.5)
        t = torch.tensor([600.0])
        blocks = model.joint_blocks
    else:
        import backend.nn.flux as host
        context = torch.randn(1, text, T5_SIZES[family]["d_model"], generator=g) * 0.2
        kwargs = dict(y=torch.randn(1, 768, generator=g) * 0.5, guidance=torch.tensor([3.5])) if family == "flux" else {}
        t = torch.tensor([0.6])
        blocks = model.double_blocks
    mid = blocks[len(blocks) // 2]
    n_image = (16 // 2) * (24 // 2)
    state = {"on": False}
    name = "attention" if family == "sd3" else "attention_function"
    original = getattr(host, name)

    def perturbed(q, k, v, heads, *args, **kw):
        if state["on"]:
            if family == "sd3":  # (B, L, H*D), image tokens after the context
                q = q.clone()
                q[:, -n_image:] = q[:, -n_image:].mean(dim=1, keepdim=True)
            else:                # (B, H, L, D) post-RoPE, image tokens after the text
                q = q.clone()
                q[:, :, -n_image:] = q[:, :, -n_image:].mean(dim=2, keepdim=True)
        return original(q, k, v, heads, *args, **kw)

    forward = mid.forward

    def marked(*args, **kw):
        state["on"] = True
        try:
            return forward(*args, **kw)
        finally:
            state["on"] = False

    setattr(host, name, perturbed)
    try:
        with torch.no_grad():
            plain = model(x, t, context=context, **kwargs)
            mid.forward = marked
            seg = model(x, t, context=context, **kwargs)
    finally:
        setattr(host, name, original)
        del mid.forward
    change = float((seg - plain).norm() / plain.norm())
    print(f"{family}: output |eps_seg - eps| / |eps| = {change:.3f} (middle joint block, sigma = inf); "
          f"|eps| rms {float(plain.pow(2).mean().sqrt()):.3f}")
    return change


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--forge", default=str(hosts_dir() / "forge"), help="a Forge install (its classes and configs)")
    ap.add_argument("--a1111", default=str(hosts_dir() / "a1111"), help="an A1111 install (for sd3-a1111 only)")
    ap.add_argument("--out", default=str(hosts_dir() / "models"))
    ap.add_argument("--only", default="flux,chroma,sd3", help="comma-separated: " + ", ".join(FILES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--measure", action="store_true")
    ap.add_argument("--no-make", action="store_true", help="only --measure existing files")
    ap.add_argument("--scale", action="append", default=[], metavar="NAME=VALUE",
                    help="override a scale (" + ", ".join(f"{k}={v:g}" for k, v in SCALES.items()) + ")")
    args = ap.parse_args()
    for item in args.scale:
        name, _, value = item.partition("=")
        if name not in SCALES:
            sys.exit(f"--scale: unknown name {name!r}; accepted: {', '.join(SCALES)}")
        SCALES[name] = float(value)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    forge = os.path.abspath(args.forge)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    families = args.only.split(",")
    for family in families:
        if family not in FILES:
            sys.exit(f"--only: unknown family {family!r}; accepted: {', '.join(FILES)}")
    if "sd3-a1111" in families and len(families) > 1:
        sys.exit("--only sd3-a1111 runs alone (A1111's classes, with the A1111 venv's Python)")
    if families != ["sd3-a1111"]:
        with contextlib.redirect_stdout(sys.stderr):  # Forge's import-time device report
            setup_forge(forge)
            import backend.memory_management  # noqa: F401
    for family in families:
        t = time.time()
        if not args.no_make:
            make(forge, family, out, args.seed, os.path.abspath(args.a1111))
        if args.measure and family not in ("sd3-no-t5", "sd3-a1111"):
            measure(forge, family, os.path.join(out, FILES[family]))
        print(f"  {time.time() - t:.0f} s")


if __name__ == "__main__":
    main()
