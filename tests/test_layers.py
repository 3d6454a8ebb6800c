"""Layer selection on small UNets built from the real ldm code (tests/unets.py)."""
import pytest

import unets
from lib_seg.layers import describe, parse_spec, select_layers, select_self_attention, self_attention_layers

# Raw input_blocks / output_blocks indices holding attention, per layout (from the ldm UNet construction).
SD15_INPUT = [1, 2, 4, 5, 7, 8]
SD15_OUTPUT = [3, 4, 5, 6, 7, 8, 9, 10, 11]
SDXL_INPUT = [4, 5, 7, 8]
SDXL_OUTPUT = [0, 1, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def sd15():
    return unets.sd15_like()


@pytest.fixture(scope="module")
def sd15_deep():
    return unets.sd15_like(transformer_depth=2)


@pytest.fixture(scope="module")
def sdxl():
    return unets.sdxl_like()


def _attn1(container, block, k=0):
    prefix = "middle_block.1" if container == "middle_block" else f"{container}.{block}.1"
    return f"{prefix}.transformer_blocks.{k}.attn1"


def _check_names(model, names):
    modules = dict(model.named_modules())
    assert all(name in modules and name.endswith("attn1") for name in names)
    order = [name for name, _ in model.named_modules()]
    assert names == sorted(set(names), key=order.index), "model order, no duplicates"


def test_all_layers_and_labels(sd15, sd15_deep, sdxl):
    layers = self_attention_layers(sd15)
    assert [layer.label for layer in layers] == [f"d{i}" for i in range(6)] + ["m0"] + [f"u{i}" for i in range(9)]
    assert [layer.name for layer in layers if layer.section == "input"] == [_attn1("input_blocks", b) for b in SD15_INPUT]
    assert [layer.block_index for layer in layers if layer.section == "output"] == SD15_OUTPUT
    middle = [layer for layer in layers if layer.section == "middle"]
    assert [(m.name, m.block_index, m.transformer_index) for m in middle] == [(_attn1("middle_block", 0), 0, 0)]
    assert middle[0].patch_key == ("middle", 0, 0)
    assert len(self_attention_layers(sd15_deep)) == 32
    assert len(self_attention_layers(sdxl)) == 22  # (4 + 1 + 6) blocks x 2 transformers
    _check_names(sd15, [layer.name for layer in layers])


def test_describe(sd15, sd15_deep, sdxl):
    assert describe(sd15) == "d0-d5, m0, u0-u8"
    assert describe(sd15_deep) == "d0-d5, m0, u0-u8"
    assert describe(sdxl) == "d0-d3, m0, u0-u5"
    assert describe([]) == "no self-attention layers"


@pytest.mark.parametrize("spec, expected", [
    ("mid", [("middle_block", 0)]),
    ("", [("middle_block", 0)]),  # empty = default
    ("down", [("input_blocks", b) for b in SD15_INPUT]),
    ("up", [("output_blocks", b) for b in SD15_OUTPUT]),
    ("d0-d3", [("input_blocks", b) for b in SD15_INPUT[:4]]),
    ("d0-3", [("input_blocks", b) for b in SD15_INPUT[:4]]),
    (" D1 , m0,U8 ", [("input_blocks", 2), ("middle_block", 0), ("output_blocks", 11)]),
    ("u8, d0, d0", [("input_blocks", 1), ("output_blocks", 11)]),  # model order, duplicates dropped
    ("mid, u0", [("middle_block", 0), ("output_blocks", 3)]),      # presets mix with items
])
def test_select_sd15(sd15, spec, expected):
    names = select_self_attention(sd15, spec)
    assert names == [_attn1(container, block) for container, block in expected]
    _check_names(sd15, names)


def test_all_preset_is_every_layer(sd15, sdxl):
    for model in (sd15, sdxl):
        assert select_self_attention(model, "all") == [layer.name for layer in self_attention_layers(model)]
        assert select_self_attention(model, "down, mid, up") == select_self_attention(model, "all")


def test_transformer_indices(sd15_deep, sdxl):
    assert select_self_attention(sd15_deep, "m0.1") == [_attn1("middle_block", 0, 1)]
    assert select_self_attention(sd15_deep, "m0") == [_attn1("middle_block", 0, 0), _attn1("middle_block", 0, 1)]
    assert select_self_attention(sd15_deep, "d2.0-1") == [_attn1("input_blocks", 4, 0), _attn1("input_blocks", 4, 1)]
    chosen = select_layers(sdxl, "u0.1, d1-2.0")
    assert [(c.label, c.section, c.block_index, c.transformer_index) for c in chosen] == [
        ("d1", "input", 5, 0), ("d2", "input", 7, 0), ("u0", "output", 0, 1)]
    assert chosen[-1].patch_key == ("output", 0, 1)
    _check_names(sdxl, [c.name for c in chosen])


def test_names_work_without_a_module(sdxl):
    """Hosts may only have names (Forge's UNet uses the same ones); prefixes are kept as given."""
    names = ["diffusion_model." + name for name, _ in sdxl.named_modules()]
    assert select_self_attention(names, "m0.1") == ["diffusion_model." + _attn1("middle_block", 0, 1)]
    assert describe(reversed(names)) == "d0-d3, m0, u0-u5"  # order of input does not matter
    with pytest.raises(TypeError):
        self_attention_layers("middle_block.1.transformer_blocks.0.attn1")


def test_disabled_self_attention_is_not_counted():
    # disable_self_attn makes attn1 a cross-attention: the first level's blocks drop out and numbering closes up.
    model = unets._build(1, model_channels=32, attention_resolutions=[4, 2, 1], num_res_blocks=2,
                         channel_mult=[1, 2, 4, 4], num_heads=4, disable_self_attentions=[True, False, False, False])
    assert describe(model) == "d0-d3, m0, u0-u5"
    assert select_self_attention(model, "d0") == [_attn1("input_blocks", 4)]


@pytest.mark.parametrize("spec, message", [
    ("u12", "SEG layers (layers): got 'u12', not in this model; accepted: SD1.5 has d0-d5, m0, u0-u8"),
    ("m1", "got 'm1', not in this model; accepted: SD1.5 has d0-d5, m0, u0-u8"),
    ("d4-9", "got 'd6', not in this model"),
    ("d2.1", "got 'd2.1', not in this model; accepted: its block d2 has transformers d2.0 (SD1.5 has d0-d5, m0, u0-u8)"),
])
def test_missing_blocks_say_what_the_model_has(sd15, spec, message):
    with pytest.raises(ValueError) as info:
        select_layers(sd15, spec, model_name="SD1.5")
    assert message in str(info.value)


def test_missing_transformer_index_and_unnamed_model(sdxl):
    with pytest.raises(ValueError, match=r"got 'd2\.2', not in this model; accepted: its block d2 has transformers d2\.0-1 "
                                         r"\(this model has d0-d3, m0, u0-u5\)"):
        select_layers(sdxl, "d2.2-9")
    with pytest.raises(ValueError, match="no self-attention layer"):
        select_layers(["input_blocks.0.0.weight"], "all")


@pytest.mark.parametrize("spec", ["x1", "d", "d-1", "d1-", "d1.2.3", "d1-u3", "d3-1", "d1.3-2", "m0,,u1",
                                  "middle", "d1;u2", "1", "d1.", "d0.a", 7])
def test_garbage_is_rejected_with_the_grammar(spec):
    with pytest.raises(ValueError, match=r"SEG layers \(layers\): ") as info:
        parse_spec(spec)
    text = str(info.value)
    assert "accepted: mid, down, up, all" in text or "backwards" in text


@pytest.mark.parametrize("spec, normal", [
    ("MID", "mid"), ("  ", "mid"), ("d0-d3", "d0-3"), ("d0 - 3 ,m0", "d0-3, m0"), ("u0.4", "u0.4"),
    ("d2.2-9", "d2.2-9"), ("d2-2.1-1", "d2.1"), ("all,d1", "all, d1"),
])
def test_parse_spec_normal_form(spec, normal):
    assert parse_spec(spec) == normal
    assert parse_spec(normal) == normal
