"""SEG, PAG and skip-layer guidance on transformer models (issue 19): the core (lib_seg/dit.py) on its own
arithmetic, and the Forge adapter on a stand-in of Forge dfdcbab6's Flux (tests/forge_stand_in/flux.py) driven
through the Forge stand-in's patcher, sampling function and sampler."""
import pytest
import torch

from forge_stand_in import chroma as host_chroma, flux as host_flux, mmditx as host_mmditx, sd_samplers_common
from forge_stand_in.patcher import UnetPatcher
from forge_stand_in.unet import stand_in_attention
from forge_stand_in.webui import Processing, SDModel
from lib_seg import dit
from lib_seg.blur import blur_queries
from lib_seg.hosts import forge as forge_host
from lib_seg.params import SegParamError, SegSettings
from precision import REL64, assert_same_arithmetic

pytestmark = pytest.mark.usefixtures("float64_module")

TEXT = 5


# ---------------------------------------------------------------- the core

def _joint_qkv(rows=3, heads=2, grid=(3, 5), text=TEXT, extra=2, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = text + grid[0] * grid[1] + extra
    return [torch.randn(rows, heads, tokens, dim, generator=g, dtype=torch.float64) for _ in range(3)]


def _attend(q, k, v):
    return host_flux.attention_function(q, k, v, q.shape[1], skip_reshape=True)


def test_blurring_image_queries_blurs_the_logits_over_the_image_grid():
    """Each logit is linear in its query, so blurring the image queries (after QK-norm and RoPE) equals blurring
    the logit rows of the image tokens over the grid; text rows and reference tokens' rows are untouched."""
    grid = (3, 5)
    q, k, _ = _joint_qkv(grid=grid)
    image = slice(TEXT, TEXT + 15)
    for sigma in (0.7, 3.0, float("inf")):
        q_blur = q.clone()
        q_blur[:, :, image] = blur_queries(q[:, :, image].reshape(-1, 15, 8), grid, sigma).reshape(3, 2, 15, 8)
        logits = q @ k.transpose(-1, -2)
        blurred_logits = logits.clone()
        rows = logits[:, :, image].permute(0, 1, 3, 2).reshape(-1, k.shape[2], 15).transpose(1, 2)
        blurred_logits[:, :, image] = blur_queries(rows, grid, sigma).transpose(1, 2).reshape(3, 2, k.shape[2], 15) \
            .permute(0, 1, 3, 2)
        # one dot product of 8 terms after a blur: a few ulps of the logits' scale
        scale = logits.abs().max().item()
        assert (q_blur @ k.transpose(-1, -2) - blurred_logits).abs().max().item() <= REL64 * scale
        assert torch.equal(blurred_logits[:, :, :TEXT], logits[:, :, :TEXT])


@pytest.mark.parametrize("mode", ["blur", "identity"])
@pytest.mark.parametrize("sigma", [1.5, float("inf")])
def test_perturbed_attention_changes_only_the_guidance_rows_image_tokens(mode, sigma):
    grid = (3, 5)
    q, k, v = _joint_qkv(grid=grid)
    seg, image = slice(1, 2), slice(TEXT, TEXT + 15)
    plain = _attend(q, k, v)
    out = dit.perturbed_attention(_attend, q, k, v, seg, image, grid, mode, sigma)
    assert torch.equal(out[0], plain[0]) and torch.equal(out[2], plain[2])      # other rows: bit-identical
    assert_same_arithmetic(out[1, :TEXT], plain[1, :TEXT])                       # text tokens: same arithmetic
    assert_same_arithmetic(out[1, image.stop:], plain[1, image.stop:])           # reference tokens too
    assert (out[1, image] - plain[1, image]).abs().max() > 1e-3
    if mode == "identity":
        assert torch.equal(out[1, image], v[1, :, image].transpose(0, 1).reshape(15, 16))


def test_infinite_sigma_gives_every_image_query_the_mean():
    grid = (2, 7)  # non-square
    q, k, v = _joint_qkv(grid=grid)
    seen = []
    dit.perturbed_attention(lambda a, b, c: seen.append(a) or _attend(a, b, c), q, k, v, slice(0, 3),
                            slice(TEXT, TEXT + 14), grid, "blur", float("inf"))
    image_q = seen[0][:, :, TEXT:TEXT + 14]
    mean = q[:, :, TEXT:TEXT + 14].mean(dim=2, keepdim=True)
    assert_same_arithmetic(image_q, mean.expand_as(image_q))


def test_block_grammar_and_refusals():
    names = [f"double_blocks.{i}" for i in range(19)] + [f"single_blocks.{i}" for i in range(38)]
    labels = lambda spec: [b.label for b in dit.select_blocks(names, spec)]  # noqa: E731
    assert labels("mid") == ["j9"] and labels("j7-9") == ["j7", "j8", "j9"]
    assert labels("s0-1, j18") == ["j18", "s0", "s1"] and len(labels("all")) == 57 and len(labels("single")) == 38
    assert dit.describe(dit.dit_blocks(names)) == "j0-j18, s0-s37"
    for bad, said in (("d0", "'d0', not in this model"), ("j19", "'j19'"), ("down", "a UNet preset"),
                      ("j1.2", "no blocks inside")):
        with pytest.raises(ValueError, match=said) as error:
            dit.select_blocks(names, bad)
        assert "j0-j18, s0-s37" in str(error.value) and "presets mid, all, joint, single" in str(error.value)
    sd3 = [f"joint_blocks.{i}" for i in range(24)]  # no single-stream blocks: the message offers no `single`
    with pytest.raises(ValueError, match=r"got 'm0\.99', not in this model; .* j0-j23 \(presets mid, all, joint\)$"):
        dit.select_blocks(sd3, "m0.99")  # the whole item, as it was written
    assert dit.patch_grid((13, 20)) == (7, 10)


# ---------------------------------------------------------------- Forge + Flux, SD3

FAMILIES = ("flux", "chroma", "sd3")
_MODELS = {"flux": host_flux.FluxKModel, "chroma": host_chroma.ChromaKModel, "sd3": host_mmditx.SD3KModel}


def flux_world(seed=0, family="flux"):
    patcher = UnetPatcher(_MODELS[family](seed=seed))
    return SDModel(patcher), patcher


def flux_conds(batch=1, seed=1, family="flux"):
    g = torch.Generator().manual_seed(seed)

    def one():
        if family == "chroma":  # the text conditioning only
            return torch.randn(batch, 7, 32, generator=g)
        cond = {"crossattn": torch.randn(batch, 7, 32, generator=g), "vector": torch.randn(batch, 8, generator=g)}
        if family == "flux":  # Flux dev's distilled guidance, a per-row cond
            cond["guidance"] = torch.full((batch,), 3.5)
        return cond
    cond = one()
    return (cond, [[(b, 1.0)] for b in range(batch)]), one()


class SegScript:
    def __init__(self, settings, flavor="forge"):
        self.adapter = forge_host.ForgeAdapter(flavor, attention=stand_in_attention, samplers_common=sd_samplers_common)
        self.settings = settings

    def process_before_every_sampling(self, p):
        if self.settings.active:
            self.adapter.start(p, self.settings)

    def postprocess(self, p):
        self.adapter.stop(p)


def sample_with_seg(p, settings):
    """p.sample() with the SEG script (None: without it); (latent, the model calls' rows, the script)."""
    script = SegScript(settings) if settings is not None else None
    if script:
        p.scripts.append(script)
    model = p.sd_model.forge_objects_original.unet.model.diffusion_model
    model._forge_calls = []
    try:
        out = p.sample()
    finally:
        if script:
            script.postprocess(p)
    calls, model._forge_calls = model._forge_calls, None
    return out, calls, script


def generate(settings=None, *, batch=1, cfg_scale=1.0, latent_hw=(12, 10), sd_model=None, family="flux", **kwargs):
    sd_model = sd_model or flux_world(family=family)[0]
    cond, uncond = flux_conds(batch, family=family)
    p = Processing(sd_model, cond, uncond, batch_size=batch, cfg_scale=cfg_scale, latent_hw=latent_hw, **kwargs)
    out, calls, _ = sample_with_seg(p, settings)
    return out, calls, p


def on(**kw):
    return SegSettings(enabled=True, **kw)


def _untouched(sd_model, patcher):
    model = patcher.model.diffusion_model
    assert sd_model.forge_objects.unet is patcher and patcher.model_options == {"transformer_options": {}}
    assert host_flux.attention_function is _HOST_FUNCTIONS[0] and host_mmditx.attention is _HOST_FUNCTIONS[1]
    assert not any("forward" in vars(m) for m in model.modules())


_HOST_FUNCTIONS = host_flux.attention_function, host_mmditx.attention
_SPECS = {"flux": ("j0-2, s1", "j1, s2"), "chroma": ("j0-1, s1", "j1, s2"), "sd3": ("j0-2", "j1-2")}  # SD3: joint blocks only, j0-1 with attn2


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode,spec", [("blur", "mid"), ("blur", 0), ("identity", "all"), ("skip", 1),
                                       ("orthogonal", 0)])
@pytest.mark.parametrize("cfg_scale", [1.0, 4.0])
def test_one_call_per_step_with_seg_rows_and_changes_the_image(family, mode, spec, cfg_scale):
    layers = spec if isinstance(spec, str) else _SPECS[family][spec]
    sd_model, patcher = flux_world(family=family)
    plain, plain_calls, _ = generate(cfg_scale=cfg_scale, sd_model=sd_model, family=family)
    got, calls, p = generate(on(mode=mode, layers=layers, sigma=2.0), cfg_scale=cfg_scale, sd_model=sd_model,
                             family=family)
    rows = 1 if cfg_scale == 1.0 else 2  # CFG 1: the host skips the uncond pass (Flux dev's usual use)
    assert plain_calls == [rows] * 4 and calls == [rows + 1] * 4
    assert (got - plain).abs().max() > 1e-3
    _untouched(sd_model, patcher)


def test_flux_disabled_is_bit_identical_and_nothing_is_left():
    sd_model, patcher = flux_world()
    plain, _, _ = generate(sd_model=sd_model)
    generate(on(layers="all"), sd_model=sd_model)
    again, _, _ = generate(SegSettings(enabled=False), sd_model=sd_model)
    assert torch.equal(plain, again)
    _untouched(sd_model, patcher)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", ["blur", "identity", "skip", "orthogonal"])
def test_batched_equals_separate_pass(family, mode, monkeypatch):
    """The SEG rows in the host's call give what a second call with the SEG rows alone gives (batch 2, CFG 4,
    an odd, non-square latent: 13 x 10 pads to a 7 x 5 patch grid)."""
    settings = on(mode=mode, layers={"flux": "j0-1, s0-3", "chroma": "j0-1, s0-2", "sd3": "j0-2"}[family], sigma=1.5)
    batched, calls, _ = generate(settings, batch=2, cfg_scale=4.0, latent_hw=(13, 10), family=family)

    def cannot_batch(*args, **kwargs):
        raise forge_host._CannotBatch("test: separate pass")
    monkeypatch.setattr(forge_host, "_extend_c", cannot_batch)
    separate, separate_calls, _ = generate(settings, batch=2, cfg_scale=4.0, latent_hw=(13, 10), family=family)
    plain, _, _ = generate(batch=2, cfg_scale=4.0, latent_hw=(13, 10), family=family)
    assert calls == [6] * 4 and separate_calls == [4, 2] * 4
    assert_same_arithmetic(batched, separate, effect_from=plain)


@pytest.mark.parametrize("family", FAMILIES)
def test_skip_returns_the_inputs_in_the_guidance_rows(family):
    """Flux calls block(img=, txt=, vec=, pe=) -> (img, txt); SD3 block(context, x, c=) -> (context, x)."""
    sd_model, _ = flux_world(family=family)
    model = sd_model.forge_objects_original.unet.model.diffusion_model
    seen = []
    block = (model.joint_blocks if family == "sd3" else model.double_blocks)[1]

    def record(module, args, kwargs, out):
        inputs = args[:2] if family == "sd3" else (kwargs["img"], kwargs["txt"])
        seen.append((inputs, out))
    block.register_forward_hook(record, with_kwargs=True)
    try:
        generate(on(mode="skip", layers="j1"), cfg_scale=4.0, sd_model=sd_model, family=family)
    finally:
        block._forward_hooks.clear()
    assert seen
    for inputs, outputs in seen:   # rows [cond | uncond | SEG]
        for given, got in zip(inputs, outputs, strict=True):
            assert torch.equal(got[2], given[2]) and not torch.equal(got[0], given[0])


def test_skip_gives_the_inputs_as_they_were_before_a_block_that_updates_them_in_place():
    """Forge Neo's Chroma blocks update their input in place (``addcmul_``); skipping must return the guidance
    rows' input as it entered the block, not what the block left in that tensor."""
    sd_model, _ = flux_world()
    block = sd_model.forge_objects_original.unet.model.diffusion_model.double_blocks[1]
    entered, returned = [], []
    class_forward = block.forward

    def updates_in_place(*args, **kwargs):
        entered.append((kwargs["img"].clone(), kwargs["txt"].clone()))
        kwargs["img"].add_(1.0)
        kwargs["txt"].add_(1.0)
        return class_forward(*args, **kwargs)
    block.forward = updates_in_place       # what the SEG patch finds and wraps, as another instance forward
    block.register_forward_hook(lambda module, args, out: returned.append(out))  # sees the SEG patch's result
    try:
        generate(on(mode="skip", layers="j1"), cfg_scale=4.0, sd_model=sd_model)
    finally:
        del block.forward
        block._forward_hooks.clear()
    assert entered and len(entered) == len(returned)
    for inputs, outputs in zip(entered, returned):   # rows [cond | uncond | SEG]
        for given, got in zip(inputs, outputs, strict=True):
            assert torch.equal(got[2], given[2]) and not torch.equal(got[0], given[0])


def test_flux_refuses_a_spec_it_lacks_and_unet_models_refuse_skip():
    with pytest.raises(SegParamError, match=r"'d0', not in this model.*j0-j2, s0-s3"):
        generate(on(layers="d0"))
    from test_forge import generate as unet_generate
    with pytest.raises(SegParamError, match="skip"):
        unet_generate("forge", on(mode="skip"))


@pytest.mark.parametrize("family", FAMILIES)
def test_only_the_guidance_rows_image_queries_are_blurred_in_the_host_call(family, monkeypatch):
    """A spy under SEG's wrapper sees the queries the host's attention gets. In the first perturbed block the
    SEG row's inputs equal the cond row's, so its text queries must equal the cond row's (to round-off: two rows
    of one batched GEMM) and its image queries (after QK-norm and, for Flux, RoPE) must all be the cond row's
    mean image query (sigma = inf)."""
    seen = []
    if family != "sd3":  # Flux and Chroma: flux.py's attention_function
        original = host_flux.attention_function

        def spy(q, k, v, heads, *args, **kwargs):
            seen.append(q)
            return original(q, k, v, heads, *args, **kwargs)
        monkeypatch.setattr(host_flux, "attention_function", spy)
    else:
        original = host_mmditx.attention

        def spy(q, k, v, heads, *args, **kwargs):
            seen.append(q.reshape(q.shape[0], q.shape[1], heads, -1).transpose(1, 2))
            return original(q, k, v, heads, *args, **kwargs)
        monkeypatch.setattr(host_mmditx, "attention", spy)
    generate(on(layers="mid", sigma=float("inf")), cfg_scale=1.0, latent_hw=(6, 8), family=family)
    n_image, n_text = 3 * 4, 7
    joint = [q for q in seen if q.shape[0] == 2 and q.shape[2] == n_text + n_image]
    perturbed = [q for q in joint if (q[0] - q[1]).abs().max() > 1e-6]  # beyond the rows' round-off
    assert perturbed, "no attention call had its SEG row perturbed"
    q = perturbed[0]
    assert_same_arithmetic(q[1, :, :n_text], q[0, :, :n_text])
    mean = q[0, :, n_text:].mean(dim=1, keepdim=True).expand(-1, n_image, -1)
    assert_same_arithmetic(q[1, :, n_text:], mean)


@pytest.mark.parametrize("seg", [slice(0, 1), slice(1, 3), slice(2, 3)])
def test_infinite_sigma_single_query_shortcut_equals_full_attention(seg):
    """On a large grid (>= lib_seg.attention.SHORTCUT_MIN_TOKENS image tokens) the guidance rows attend with one
    mean image query, broadcast; the result is the full attention's (every blurred query is that mean)."""
    grid = (16, 20)
    q, k, v = _joint_qkv(grid=grid)
    image = slice(TEXT, TEXT + 320)
    calls = []

    def attend(q_, k_, v_):
        calls.append(q_.shape[2])
        return _attend(q_, k_, v_)
    short = dit.perturbed_attention(attend, q, k, v, seg, image, grid, "blur", float("inf"))
    assert min(calls) == TEXT + 1 + 2  # text + one image query + the reference tokens
    full = dit.perturbed_attention(_attend, q, k, v, seg, image, grid, "blur", float("inf"), shortcut=False)
    assert_same_arithmetic(short, full, effect_from=_attend(q, k, v))
