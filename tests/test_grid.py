"""lib_seg.grid.token_grid: a table of known sizes, errors, and the real ldm UNet's attention token counts."""
import pytest
import torch
import torch.nn.functional as F

from lib_seg.grid import token_grid


@pytest.mark.parametrize("latent,n_tokens,expected", [
    ((64, 64), 4096, (64, 64)),
    ((64, 64), 1024, (32, 32)),
    ((64, 64), 64, (8, 8)),
    ((128, 128), 1024, (32, 32)),
    ((75, 100), 7500, (75, 100)),
    ((75, 100), 1900, (38, 50)),
    ((75, 100), 475, (19, 25)),
    ((75, 100), 130, (10, 13)),
    ((97, 131), 97 * 131, (97, 131)),
    ((97, 131), 49 * 66, (49, 66)),
    ((97, 131), 25 * 33, (25, 33)),
    ((97, 131), 13 * 17, (13, 17)),
    ((1, 7), 4, (1, 4)),
    ((1, 1), 1, (1, 1)),
    ([96, 144], 96 * 144 // 4, (48, 72)),  # a list is accepted too (hosts may pass one)
])
def test_ceil_halving_table(latent, n_tokens, expected):
    assert token_grid(latent, n_tokens) == expected


@pytest.mark.parametrize("latent,n_tokens", [((64, 64), 1000), ((75, 100), 1875), ((75, 100), 0), ((8, 8), 128)])
def test_unresolvable_token_count_names_the_numbers(latent, n_tokens):
    with pytest.raises(ValueError) as error:
        token_grid(latent, n_tokens)
    message = str(error.value)
    assert str(n_tokens) in message and f"{latent[0]}x{latent[1]}" in message


def test_rejects_an_empty_latent():
    with pytest.raises(ValueError, match="0x8"):
        token_grid((0, 8), 4)


class _TorchWithResizingCat:
    """torch, except that ``cat`` first resizes the upsampled tensor to its skip connection's size when the two
    differ. The plain ldm UNet cannot run odd latents (2 * ceil(n / 2) != n at the skip concatenation); the hosts
    make it work this way (A1111 patches ``cat`` in this module, Forge's Upsample takes the skip's size), so the
    up path runs on the same grids as the down path."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def cat(tensors, dim=0, **kwargs):
        tensors = list(tensors)
        if len(tensors) == 2 and tensors[0].dim() == 4 and tensors[0].shape[-2:] != tensors[1].shape[-2:]:
            tensors[0] = F.interpolate(tensors[0], size=tensors[1].shape[-2:], mode="nearest")
        return torch.cat(tensors, dim=dim, **kwargs)


def _attention_grids(unet, latent_hw):
    """Run ``unet`` on a latent and return, for every self-attention call, (its token count, the (h, w) of the
    feature map its SpatialTransformer received)."""
    from ldm.modules.attention import SpatialTransformer

    seen = []
    handles = []
    for transformer in [m for m in unet.modules() if isinstance(m, SpatialTransformer)]:
        feature_hw = {}
        handles.append(transformer.register_forward_pre_hook(
            lambda module, args, store=feature_hw: store.__setitem__("hw", tuple(args[0].shape[-2:]))))
        for name, module in transformer.named_modules():
            if name.endswith("attn1"):
                handles.append(module.register_forward_pre_hook(
                    lambda module, args, store=feature_hw: seen.append((args[0].shape[1], store["hw"]))))
    try:
        x = torch.randn(1, 4, *latent_hw)
        with torch.no_grad():
            unet(x, torch.tensor([10.0]), context=torch.randn(1, 5, 32))
    finally:
        for handle in handles:
            handle.remove()
    return seen


@pytest.mark.parametrize("latent_hw", [(15, 21), (13, 9), (8, 8)])
def test_matches_the_real_ldm_unet(sd15_unet, monkeypatch, latent_hw):
    from ldm.modules.diffusionmodules import openaimodel

    monkeypatch.setattr(openaimodel, "th", _TorchWithResizingCat())
    seen = _attention_grids(sd15_unet, latent_hw)
    assert len(seen) == 16  # SD1.5 layout: d0-d5, m0, u0-u8
    for n_tokens, feature_hw in seen:
        assert n_tokens == feature_hw[0] * feature_hw[1]
        assert token_grid(latent_hw, n_tokens) == feature_hw
    # The middle block sits three halvings down: ceil(n / 8) on each side (15x21 -> 2x3, where floor would give 1x2).
    assert min(seen)[1] == (-(-latent_hw[0] // 8), -(-latent_hw[1] // 8))
