"""tools/real_hosts/make_controlnet.py: the ControlNet key layout the hosts load, checked against the real ldm UNet."""
import math
import os
import sys

import torch
from ldm.modules.diffusionmodules.openaimodel import UNetModel

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "real_hosts"))
import make_controlnet as M  # noqa: E402


def test_sd15_encoder_is_the_sd15_unets():
    """Same keys and shapes as the encoder half (time_embed, input_blocks, middle_block) of the ldm UNet in
    SD1.5's configuration (v1-inference.yaml), built on the meta device."""
    with torch.device("meta"):
        unet = UNetModel(image_size=32, in_channels=4, out_channels=4, model_channels=320,
                         attention_resolutions=[4, 2, 1], num_res_blocks=2, channel_mult=[1, 2, 4, 4], num_heads=8,
                         use_spatial_transformer=True, transformer_depth=1, context_dim=768, legacy=False)
    expected = {k: tuple(v.shape) for k, v in unet.state_dict().items()
                if k.startswith(("time_embed.", "input_blocks.", "middle_block."))}
    shapes, channels = M.encoder_shapes("sd15")
    assert shapes == expected
    assert channels == [320] * 4 + [640] * 3 + [1280] * 5


def test_sizes_and_the_keys_the_hosts_look_for():
    """Parameter counts of lllyasviel's SD1.5 ControlNets (361.3 M) and the SDXL ControlNet (1251.0 M); the
    keys sd-webui-controlnet and Forge use to recognise the layout and the architecture."""
    sd15, sdxl = M.controlnet_shapes("sd15"), M.controlnet_shapes("sdxl")
    assert round(sum(math.prod(s) for s in sd15.values()) / 1e5) == 3613
    assert round(sum(math.prod(s) for s in sdxl.values()) / 1e5) == 12510
    for shapes in (sd15, sdxl):
        assert "input_hint_block.0.weight" in shapes and "zero_convs.0.0.weight" in shapes
        assert "middle_block_out.0.weight" in shapes and "input_blocks.0.0.weight" in shapes
    assert "label_emb.0.0.bias" not in sd15 and sd15["input_blocks.5.1.transformer_blocks.0.attn2.to_k.weight"][1] == 768
    assert "label_emb.0.0.bias" in sdxl and "input_blocks.8.1.transformer_blocks.9.norm3.weight" in sdxl
    assert len([k for k in sd15 if k.startswith("zero_convs") and k.endswith("weight")]) == 12
    assert len([k for k in sdxl if k.startswith("zero_convs") and k.endswith("weight")]) == 9


def test_weights_are_non_trivial(tmp_path):
    """Every zero conv has non-zero weights (an all-zero one would make the ControlNet a no-op); the file
    round-trips through safetensors with the control_model. prefix."""
    from safetensors.torch import load_file
    out = tmp_path / "cn.safetensors"
    weights, copied = M.make("sd15", seed=1, strength=0.3, dtype=torch.float16)
    assert copied == 0
    assert all(weights[k].abs().max() > 0 for k in weights if "zero_convs" in k and k.endswith("weight"))
    from safetensors.torch import save_file
    save_file({k: v for k, v in weights.items() if "zero_convs.0" in k}, str(out))
    assert set(load_file(str(out))) == {"control_model.zero_convs.0.0.weight", "control_model.zero_convs.0.0.bias"}
