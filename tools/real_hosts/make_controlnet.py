"""Write a random-weight ControlNet in the original (LDM, ``control_model.*``) key layout, for real-host runs.

    python tools/real_hosts/make_controlnet.py [--arch sd15|sdxl] [--base CHECKPOINT.safetensors]
                                              [--out FILE] [--seed N] [--strength S] [--dtype fp16|fp32]

Both hosts read this layout (the one lllyasviel's ControlNet 1.0 / 1.1 .pth and .safetensors files use):
- sd-webui-controlnet (scripts/controlnet_model_guess.py, build_model_by_guess): strips ``control_model.``,
  needs ``input_hint_block.0.weight``; no ``label_emb.0.0.bias`` means the SD1.5 config (context_dim read from
  ``input_blocks.5.1.transformer_blocks.0.attn2.to_k.weight``), otherwise SDXL, full when
  ``input_blocks.8.1.transformer_blocks.9.norm3.weight`` exists; loads with strict=False, so a missing key
  would silently stay at its initial value (zero for the zero convs): every key is written.
- Forge / reForge (modules_forge/supported_controlnet.py): ``control_model.zero_convs.0.0.weight`` marks the
  layout; the config is guessed from the encoder keys like a UNet's (huggingface_guess / model_detection), so
  the encoder must have exactly the SD1.5 or SDXL UNet's input/middle blocks.
The network: the UNet's encoder (time_embed, SDXL's label_emb, input_blocks, middle_block), a hint encoder
(``input_hint_block``: 3x3 convs 3->16->16->32/2->32->96/2->96->256/2->model_channels, at keys 0, 2, ..., 14),
one 1x1 ``zero_convs.i.0`` per input block and ``middle_block_out.0``. The key list is generated here from
the UNet's block rules (tests/test_make_controlnet.py checks the SD1.5 encoder against the ldm UNetModel's).

Weights: encoder copied from --base (an SD checkpoint's ``model.diffusion_model.*``) when given, as a
ControlNet is initialised from its UNet, else random; convs/linears N(0, 1/fan_in), norms 1/0. The zero convs
(all zero in an untrained ControlNet, which would have no effect) get N(0, (strength)^2 / fan_in), so the
residuals are about `strength` times the encoder's activations and the control shows in the image.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hosts import hosts_dir  # noqa: E402  (installs folder: $SEG_HOSTS_DIR, else <checkout>/../hosts)

ARCHS = {
    # model_channels, channel_mult, attention levels -> transformer depth, middle depth, context, heads/linear
    "sd15": dict(mc=320, mult=(1, 2, 4, 4), depth={0: 1, 1: 1, 2: 1}, mid_depth=1, context=768, linear=False,
                 adm=None),
    "sdxl": dict(mc=320, mult=(1, 2, 4), depth={1: 2, 2: 10}, mid_depth=10, context=2048, linear=True, adm=2816),
}
NUM_RES_BLOCKS = 2
HINT_CHANNELS = (3, 16, 16, 32, 32, 96, 96, 256)


def _resblock(prefix, cin, cout, emb):
    keys = {f"{prefix}.in_layers.0.weight": (cin,), f"{prefix}.in_layers.0.bias": (cin,),
            f"{prefix}.in_layers.2.weight": (cout, cin, 3, 3), f"{prefix}.in_layers.2.bias": (cout,),
            f"{prefix}.emb_layers.1.weight": (cout, emb), f"{prefix}.emb_layers.1.bias": (cout,),
            f"{prefix}.out_layers.0.weight": (cout,), f"{prefix}.out_layers.0.bias": (cout,),
            f"{prefix}.out_layers.3.weight": (cout, cout, 3, 3), f"{prefix}.out_layers.3.bias": (cout,)}
    if cin != cout:
        keys.update({f"{prefix}.skip_connection.weight": (cout, cin, 1, 1), f"{prefix}.skip_connection.bias": (cout,)})
    return keys


def _transformer(prefix, c, depth, context, linear):
    proj = (c, c) if linear else (c, c, 1, 1)
    keys = {f"{prefix}.norm.weight": (c,), f"{prefix}.norm.bias": (c,),
            f"{prefix}.proj_in.weight": proj, f"{prefix}.proj_in.bias": (c,),
            f"{prefix}.proj_out.weight": proj, f"{prefix}.proj_out.bias": (c,)}
    for k in range(depth):
        b = f"{prefix}.transformer_blocks.{k}"
        for attn, kv in (("attn1", c), ("attn2", context)):
            keys.update({f"{b}.{attn}.to_q.weight": (c, c), f"{b}.{attn}.to_k.weight": (c, kv),
                         f"{b}.{attn}.to_v.weight": (c, kv), f"{b}.{attn}.to_out.0.weight": (c, c),
                         f"{b}.{attn}.to_out.0.bias": (c,)})
        keys.update({f"{b}.ff.net.0.proj.weight": (8 * c, c), f"{b}.ff.net.0.proj.bias": (8 * c,),
                     f"{b}.ff.net.2.weight": (c, 4 * c), f"{b}.ff.net.2.bias": (c,)})
        for n in (1, 2, 3):
            keys.update({f"{b}.norm{n}.weight": (c,), f"{b}.norm{n}.bias": (c,)})
    return keys


def encoder_shapes(arch):
    """{key: shape} of the UNet encoder a ControlNet copies (no prefix), plus the input blocks' channels."""
    a = ARCHS[arch]
    mc, emb = a["mc"], 4 * a["mc"]
    keys = {"time_embed.0.weight": (emb, mc), "time_embed.0.bias": (emb,),
            "time_embed.2.weight": (emb, emb), "time_embed.2.bias": (emb,)}
    if a["adm"]:
        keys.update({"label_emb.0.0.weight": (emb, a["adm"]), "label_emb.0.0.bias": (emb,),
                     "label_emb.0.2.weight": (emb, emb), "label_emb.0.2.bias": (emb,)})
    keys.update({"input_blocks.0.0.weight": (mc, 4, 3, 3), "input_blocks.0.0.bias": (mc,)})
    channels, ch, index = [mc], mc, 1
    for level, mult in enumerate(a["mult"]):
        for _ in range(NUM_RES_BLOCKS):
            out = mult * mc
            keys.update(_resblock(f"input_blocks.{index}.0", ch, out, emb))
            ch = out
            if level in a["depth"]:
                keys.update(_transformer(f"input_blocks.{index}.1", ch, a["depth"][level], a["context"], a["linear"]))
            channels.append(ch)
            index += 1
        if level != len(a["mult"]) - 1:
            keys.update({f"input_blocks.{index}.0.op.weight": (ch, ch, 3, 3), f"input_blocks.{index}.0.op.bias": (ch,)})
            channels.append(ch)
            index += 1
    keys.update(_resblock("middle_block.0", ch, ch, emb))
    keys.update(_transformer("middle_block.1", ch, a["mid_depth"], a["context"], a["linear"]))
    keys.update(_resblock("middle_block.2", ch, ch, emb))
    return keys, channels


def controlnet_shapes(arch):
    """{key: shape} of the whole ControlNet, without the ``control_model.`` prefix."""
    keys, channels = encoder_shapes(arch)
    mc = ARCHS[arch]["mc"]
    hint = list(HINT_CHANNELS) + [mc]
    for i in range(len(hint) - 1):
        keys.update({f"input_hint_block.{2 * i}.weight": (hint[i + 1], hint[i], 3, 3),
                     f"input_hint_block.{2 * i}.bias": (hint[i + 1],)})
    for i, ch in enumerate(channels):
        keys.update({f"zero_convs.{i}.0.weight": (ch, ch, 1, 1), f"zero_convs.{i}.0.bias": (ch,)})
    keys.update({"middle_block_out.0.weight": (channels[-1], channels[-1], 1, 1),
                 "middle_block_out.0.bias": (channels[-1],)})
    return keys



def make(arch, seed=0, strength=0.3, base=None, dtype=torch.float16):
    shapes = controlnet_shapes(arch)
    base_weights = {}
    if base:
        from safetensors import safe_open
        with safe_open(base, "pt") as f:
            for key in f.keys():
                if key.startswith("model.diffusion_model."):
                    short = key[len("model.diffusion_model."):]
                    if short in shapes and tuple(f.get_slice(key).get_shape()) == shapes[short]:
                        base_weights[short] = f.get_tensor(key)
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        if key in base_weights:
            value = base_weights[key].float()
        elif key.endswith(".bias"):
            value = torch.zeros(shape)
        elif len(shape) == 1:  # norm weights
            value = torch.ones(shape)
        else:
            fan_in = 1
            for s in shape[1:]:
                fan_in *= s
            std = (strength if key.startswith(("zero_convs", "middle_block_out")) else 1.0) / fan_in ** 0.5
            value = torch.randn(shape, generator=generator) * std
        out["control_model." + key] = value.to(dtype).contiguous()
    return out, len(base_weights)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=sorted(ARCHS), default="sd15")
    parser.add_argument("--base", help="an SD checkpoint (.safetensors) to copy the encoder from")
    # Not under the checkpoint folder: the hosts list every .safetensors below --ckpt-dir (recursively) as a
    # checkpoint, and a ControlNet sorted first there would be loaded as the default model.
    parser.add_argument("--out", help="output file (default <hosts>/controlnet-models/seg_test_<arch>.safetensors; <hosts>: $SEG_HOSTS_DIR, else <checkout>/../hosts)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strength", type=float, default=0.3, help="scale of the zero convs (see above)")
    parser.add_argument("--dtype", choices=("fp16", "fp32"), default="fp16")
    args = parser.parse_args(argv)
    from safetensors.torch import save_file
    out = args.out or str(hosts_dir() / "controlnet-models" / f"seg_test_{args.arch}.safetensors")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    weights, copied = make(args.arch, args.seed, args.strength, args.base,
                           torch.float16 if args.dtype == "fp16" else torch.float32)
    save_file(weights, out, metadata={"format": "pt", "note": f"random-weight test ControlNet ({args.arch})"})
    total = sum(t.numel() for t in weights.values())
    print(f"wrote {out}: {len(weights)} tensors, {total / 1e6:.1f} M parameters, {copied} encoder tensors from the base")


if __name__ == "__main__":
    main()
