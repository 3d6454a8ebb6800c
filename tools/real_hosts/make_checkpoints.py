"""Random-weight checkpoints with the real key layouts of SD1.5, SDXL base, SDXL refiner and an
InstructPix2Pix-style SD1.5, for running the extension in real WebUIs without downloading weights.

    <a1111>/venv/bin/python tools/real_hosts/make_checkpoints.py [--a1111 <hosts>/a1111]
        [--out <hosts>/models]   (<hosts>: $SEG_HOSTS_DIR, else <checkout>/../hosts) [--only sd15,sdxl,...] [--measure]

Run it with the Python of an A1111 install built by tools/real_hosts/a1111/build.sh: the key list and
every shape come from instantiating the host's own model classes (`ldm` LatentDiffusion, `sgm`
DiffusionEngine, transformers' CLIPTextModel, open_clip's bigG) from the host's config yamls, on the
`meta` device, so nothing is typed by hand and no memory is spent on the model. Tensors are then drawn
one by one (a generator seeded from the key, so a file is the same whatever the order) and streamed into
an fp16 safetensors file: SDXL base never needs more memory than its largest tensor.

Weights follow PyTorch's default layer init (uniform ±1/sqrt(fan_in)), norms 1/0, embeddings N(0, 0.02),
and never zero: ldm zero-initialises the UNet's output conv and every transformer's proj_out, which
would make the UNet predict 0 and any guidance invisible. Random attention is nearly uniform, so SEG's
blur of the queries would change nothing: self-attention's q/k are scaled up (sharper softmax) and
the decoder's upsampling convs scaled so that latent detail reaches the pixels. `--measure` runs the
SD1.5 file through the real ldm classes and prints the fraction of pixels of a 128 px image that change
when the middle block's self-attention queries are replaced by their mean (SEG at sigma = inf).
"""
import argparse
import contextlib
import json
import math
import os
import struct
import sys
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hosts import hosts_dir  # noqa: E402  (installs folder: $SEG_HOSTS_DIR, else <checkout>/../hosts)

import torch

FAMILIES = {
    # name: (config yaml relative to the A1111 root, file written)
    "sd15": ("configs/v1-inference.yaml", "seg-random-sd15.safetensors"),
    "sd15-ip2p": ("configs/instruct-pix2pix.yaml", "seg-random-sd15-ip2p.safetensors"),
    "sdxl": ("repositories/generative-models/configs/inference/sd_xl_base.yaml", "seg-random-sdxl.safetensors"),
    "sdxl-refiner": ("repositories/generative-models/configs/inference/sd_xl_refiner.yaml",
                     "seg-random-sdxl-refiner.safetensors"),
}

# Scales applied on top of the default init (see the module docstring; measured with --measure).
SCALES = {
    "qk": 8.0,           # self-attention (attn1) to_q and to_k: logits x64, a sharp softmax
    "attn_out": 4.0,     # self-attention (attn1) to_out: its share of the residual stream
    "upsample": 2.0,     # VAE decoder upsample convs
}


def setup_host_imports(a1111):
    for p in (a1111, os.path.join(a1111, "repositories", "stable-diffusion-stability-ai"),
              os.path.join(a1111, "repositories", "generative-models")):
        if p not in sys.path:
            sys.path.insert(0, p)


@contextlib.contextmanager
def no_pretrained_weights():
    """Build the text encoders from their configs alone, as A1111's sd_disable_initialization does:
    CLIP-L from the `openai/clip-vit-large-patch14` config (HF files written by hf_offline.py), bigG
    from open_clip's bundled config, without a device move (the model lives on `meta`)."""
    import open_clip
    import transformers
    orig_clip = transformers.CLIPTextModel.from_pretrained
    orig_oc = open_clip.create_model_and_transforms

    def clip_from_config(name, *args, **kwargs):
        return transformers.CLIPTextModel(transformers.CLIPTextConfig.from_pretrained(name))

    def oc_without_pretrained(*args, pretrained=None, device=None, **kwargs):
        # open_clip moves the model to `device` (cpu by default): stay on the current default device
        return orig_oc(*args, pretrained=None, device=torch.empty(0).device, **kwargs)

    # ldm computes its noise schedule (persistent buffers) through numpy: do that on the CPU, so the
    # meta-device model holds the real values.
    import ldm.models.diffusion.ddpm as ddpm
    orig_schedule = ddpm.DDPM.register_schedule

    def schedule_on_cpu(*args, **kwargs):
        with torch.device("cpu"):
            return orig_schedule(*args, **kwargs)

    # sgm's DiscreteDenoiser likewise computes its sigmas through numpy (not saved: see tensor_plan)
    import sgm.modules.diffusionmodules.denoiser as sgm_denoiser
    orig_denoiser = sgm_denoiser.DiscreteDenoiser.__init__

    def denoiser_on_cpu(*args, **kwargs):
        with torch.device("cpu"):
            return orig_denoiser(*args, **kwargs)

    sgm_denoiser.DiscreteDenoiser.__init__ = denoiser_on_cpu
    transformers.CLIPTextModel.from_pretrained = clip_from_config
    open_clip.create_model_and_transforms = oc_without_pretrained
    ddpm.DDPM.register_schedule = schedule_on_cpu
    try:
        yield
    finally:
        transformers.CLIPTextModel.from_pretrained = orig_clip
        open_clip.create_model_and_transforms = orig_oc
        ddpm.DDPM.register_schedule = orig_schedule
        sgm_denoiser.DiscreteDenoiser.__init__ = orig_denoiser


def load_config(a1111, family):
    from omegaconf import OmegaConf
    cfg = OmegaConf.load(os.path.join(a1111, FAMILIES[family][0]))
    if family == "sd15-ip2p":
        # A1111's ddpm_edit.LatentDiffusion only adds training code; ldm's class has the same state.
        cfg.model.target = "ldm.models.diffusion.ddpm.LatentDiffusion"
    for sub in ("network_config", "unet_config"):
        if sub in cfg.model.params:
            cfg.model.params[sub].params.use_checkpoint = False
    cfg.model.params.pop("ckpt_path", None)
    return cfg


def build_meta_model(a1111, family):
    from ldm.util import instantiate_from_config as ldm_instantiate
    cfg = load_config(a1111, family)
    if cfg.model.target.startswith("sgm."):
        from sgm.util import instantiate_from_config
    else:
        instantiate_from_config = ldm_instantiate
    with no_pretrained_weights(), torch.device("meta"):
        model = instantiate_from_config(cfg.model)
    return model, cfg


def tensor_plan(model, cfg):
    """[(key, shape, kind, fan_in)] for every tensor of the state dict, from the meta model."""
    owners = {}
    for mname, module in model.named_modules():
        for pname, _ in module.named_parameters(recurse=False):
            owners[f"{mname}.{pname}" if mname else pname] = (module, pname)
        for bname, _ in module.named_buffers(recurse=False):
            owners[f"{mname}.{bname}" if mname else bname] = (module, bname)
    plan = []
    state = model.state_dict(keep_vars=True)
    for key, t in state.items():
        if key.startswith("denoiser."):
            continue  # sgm's sigma table: the hosts build it from their config, checkpoints don't carry it
        module, local = owners[key]
        is_param = isinstance(t, torch.nn.Parameter)
        kind = "buffer"
        fan_in = None
        if is_param:
            cls = type(module).__name__
            if isinstance(module, torch.nn.Embedding):
                kind = "embedding"
            elif isinstance(module, (torch.nn.GroupNorm, torch.nn.LayerNorm)) or "norm" in cls.lower():
                kind = "norm_weight" if local == "weight" else "zero"
            elif local == "in_proj_weight":     # nn.MultiheadAttention (open_clip)
                kind, fan_in = "linear", t.shape[1]
            elif local == "in_proj_bias":
                kind, fan_in = "bias", module.in_proj_weight.shape[1]
            elif local == "weight" and t.dim() >= 2:
                kind, fan_in = "linear", t[0].numel()
            elif local == "bias" and getattr(module, "weight", None) is not None and module.weight.dim() >= 2:
                kind, fan_in = "bias", module.weight[0].numel()
            elif local == "logit_scale":
                kind = "logit_scale"
            elif t.dim() == 2:               # open_clip positional_embedding, text_projection
                kind, fan_in = "linear", t.shape[0]
            else:
                kind = "small"
        plan.append((key, tuple(t.shape), kind, fan_in))
    return plan


def scale_for(key):
    """The extra factor a weight gets (1 for most)."""
    if ".attn1.to_q.weight" in key or ".attn1.to_k.weight" in key:
        return SCALES["qk"]
    if ".attn1.to_out.0." in key:
        return SCALES["attn_out"]
    if key.startswith("first_stage_model.decoder.up.") and ".upsample.conv." in key:
        return SCALES["upsample"]
    return 1.0


def buffer_values(model):
    """Persistent buffers with real values (ldm's noise schedule, built on the CPU) by key."""
    return {k: v for k, v in model.state_dict().items()
            if not isinstance(v, torch.nn.Parameter) and v.device.type != "meta"}


def draw(key, shape, kind, fan_in, seed):
    g = torch.Generator().manual_seed((zlib.crc32(key.encode()) ^ seed) & 0x7FFFFFFF)
    if kind == "norm_weight":
        t = torch.ones(shape)
    elif kind == "zero":
        t = torch.zeros(shape)
    elif kind == "embedding":
        t = torch.randn(shape, generator=g) * 0.02
    elif kind == "logit_scale":
        t = torch.full(shape, math.log(1 / 0.07))
    elif kind in ("linear", "bias"):
        bound = 1 / math.sqrt(fan_in)
        t = (torch.rand(shape, generator=g) * 2 - 1) * bound
    else:
        t = (torch.rand(shape, generator=g) * 2 - 1) * 0.02
    return t * scale_for(key)


DTYPES = {torch.float16: "F16", torch.float32: "F32", torch.int64: "I64"}


def write_streaming(path, plan, make):
    """A safetensors file written tensor by tensor: the header is known from the shapes alone."""
    header, offset, dtypes = {}, 0, {}
    for key, shape, kind, _ in plan:
        dtype = torch.float16 if kind != "buffer" else None
        dtypes[key] = dtype
    entries = []
    for key, shape, kind, fan_in in plan:
        t0 = make(key, shape, kind, fan_in) if kind == "buffer" else None
        dtype = t0.dtype if t0 is not None else torch.float16
        n = math.prod(shape) * torch.tensor([], dtype=dtype).element_size()
        header[key] = {"dtype": DTYPES[dtype], "shape": list(t0.shape if t0 is not None else shape),
                       "data_offsets": [offset, offset + n]}
        entries.append((key, shape, kind, fan_in, dtype))
        offset += n
    header["__metadata__"] = {"format": "pt", "made_by": "sd-webui-seg tools/real_hosts/make_checkpoints.py",
                              "note": "random weights, for tests only"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for key, shape, kind, fan_in, dtype in entries:
            t = make(key, shape, kind, fan_in).to(dtype).contiguous()
            f.write(t.numpy().tobytes() if dtype != torch.float16 else t.view(torch.int16).numpy().tobytes())
    os.replace(tmp, path)


def make(a1111, family, out, seed, suffix=""):
    model, cfg = build_meta_model(a1111, family)
    plan = tensor_plan(model, cfg)
    buffers = buffer_values(model)
    missing = [k for k, _, kind, _ in plan if kind == "buffer" and k not in buffers and not k.endswith("position_ids")]
    plan = [e for e in plan if e[2] != "buffer" or e[0] not in missing]   # e.g. none today; listed below

    def value(key, shape, kind, fan_in):
        if kind == "buffer":
            if key.endswith("position_ids"):
                return torch.arange(shape[-1], dtype=torch.int64).reshape(shape)
            return buffers[key].float()
        return draw(key, shape, kind, fan_in, seed)

    path = os.path.join(out, FAMILIES[family][1].replace(".safetensors", suffix + ".safetensors"))
    write_streaming(path, plan, value)
    n = sum(math.prod(s) for _, s, kind, _ in plan if kind != "buffer")
    print(f"{family}: {path}  {len(plan)} tensors, {n / 1e9:.3f} B parameters, "
          f"{os.path.getsize(path) / 2**30:.2f} GiB" + (f"; buffers left out: {missing}" if missing else ""))
    return path


def measure_sd15(a1111, path, steps=8, size=128, seed=1):
    """Fraction of pixels that change when the middle block's self-attention queries are replaced by
    their mean over the tokens (SEG at sigma = inf), through the real ldm LatentDiffusion."""
    from ldm.util import instantiate_from_config
    from safetensors.torch import load_file
    cfg = load_config(a1111, "sd15")
    with no_pretrained_weights():
        model = instantiate_from_config(cfg.model)
    model.load_state_dict({k: v.float() for k, v in load_file(path).items()}, strict=False)
    model.eval()
    model.cond_stage_model.device = "cpu"   # ldm's FrozenCLIPEmbedder defaults to cuda
    attn = model.model.diffusion_model.middle_block[1].transformer_blocks[0].attn1
    with torch.no_grad():
        cond = model.get_learned_conditioning(["a photograph of a cat"])
        ac = model.alphas_cumprod
        ts = torch.linspace(999, 0, steps + 1).round().long()
        sig = lambda t: ((1 - ac[t]) / ac[t]).sqrt()

        def sample(mean_queries):
            hook = None
            if mean_queries:
                hook = attn.to_q.register_forward_hook(lambda m, i, o: o.mean(dim=1, keepdim=True).expand_as(o))
            x = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(seed)) * sig(ts[0])
            for i in range(steps):
                s, s_next = sig(ts[i]), (sig(ts[i + 1]) if i + 1 < steps else torch.tensor(0.0))
                eps = model.apply_model(x / (s ** 2 + 1).sqrt(), ts[i:i + 1], cond)
                x = x + eps * (s_next - s)
            if hook:
                hook.remove()
            img = model.decode_first_stage(x)
            return ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[0]

        a, b = sample(False), sample(True)
    diff = (a.int() - b.int()).abs().amax(0)
    res = {f"> {t}/255": float((diff > t).float().mean()) for t in (0, 2, 8, 32)}
    res["mean |diff|/255"] = float(diff.float().mean())
    res["image std/255"] = float(a.float().std())
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a1111", default=str(hosts_dir() / "a1111"), help="an A1111 install (its configs and repositories)")
    ap.add_argument("--out", default=str(hosts_dir() / "models"))
    ap.add_argument("--only", default=",".join(FAMILIES), help="comma-separated: " + ", ".join(FAMILIES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--measure", action="store_true", help="measure the SEG pixel change on the SD1.5 file")
    ap.add_argument("--no-make", action="store_true", help="only --measure existing files")
    ap.add_argument("--scale", action="append", default=[], metavar="NAME=VALUE",
                    help="override a scale (" + ", ".join(f"{k}={v:g}" for k, v in SCALES.items()) + ")")
    ap.add_argument("--suffix", default="", help="added to the file names (trying other scales)")
    args = ap.parse_args()
    for item in args.scale:
        name, _, value = item.partition("=")
        if name not in SCALES:
            sys.exit(f"--scale: unknown name {name!r}; accepted: {', '.join(SCALES)}")
        SCALES[name] = float(value)
    os.environ.setdefault("HF_HOME", os.path.join(args.a1111, "hf"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    setup_host_imports(os.path.abspath(args.a1111))
    os.makedirs(args.out, exist_ok=True)
    for family in args.only.split(","):
        if family not in FAMILIES:
            sys.exit(f"--only: unknown family {family!r}; accepted: {', '.join(FAMILIES)}")
        if not args.no_make:
            t = time.time()
            make(args.a1111, family, args.out, args.seed, args.suffix)
            print(f"  {time.time() - t:.0f} s")
    if args.measure:
        res = measure_sd15(args.a1111, os.path.join(args.out, FAMILIES["sd15"][1]))
        print("SD1.5, 128 px, middle-block queries -> their mean; pixels changed:",
              ", ".join(f"{k}: {v:.4f}" for k, v in res.items()))


if __name__ == "__main__":
    main()
