"""SEG, PAG and skip-layer guidance in the transformer blocks of the hosts' DiTs: Flux and Chroma (Forge
backend/nn/flux.py, chroma.py) and SD3 (Forge backend/nn/mmditx.py, A1111 modules/models/sd3/mmdit.py).

The hosts give DiT blocks no patch API (Forge drops ``transformer_options`` on the way; A1111 has none), so
the batch and the guidance are the host adapter's as for UNets (SEG rows appended to the model call, the term
added after CFG), and attention is reached through two kinds of plain Python patches, both registered in the
pass's HookRegistry and gone with it:

* each selected block's instance ``forward`` is wrapped: in a call with SEG rows it marks the block as
  perturbed while it runs (skip mode: it gives the SEG rows their inputs back);
* the attention function the blocks call is wrapped where the blocks look it up, and inside a marked block it
  hands the queries, keys and values as they enter the dot product to ``lib_seg.dit.perturbed_attention``:
  - Flux / Chroma: flux.py's ``attention(q, k, v, pe)`` applies RoPE, then calls its module global
    ``attention_function(q, k, v, heads, skip_reshape=True)`` on (rows, heads, tokens, dim) tensors (Chroma's
    blocks import that same function); that global is wrapped, so the queries are post-QK-norm and post-RoPE;
  - SD3: ``block_mixing`` calls its module global ``attention(q, k, v, heads)`` on (rows, tokens, heads * dim)
    tensors after QK-norm (SD3 has no RoPE: its positions are added to the input); that global is wrapped.
Text (context) tokens come first in every joint sequence; the image tokens follow them. A self-attention over
the image tokens alone (SD3.5 Medium's second attention in its first blocks) is perturbed over all its tokens.
"""
import inspect
import sys

from .. import dit
from ..session import has_rows


class Unsupported(Exception):
    """These blocks are not the Flux / Chroma / SD3 blocks this module knows how to reach (said before any patch)."""


class _Marked:
    """The call of the selected block that is running, and its number of text tokens; or None."""
    current = None
    text_tokens = 0


def install(registry, diffusion_model, blocks, mode, sigma, current_call):
    """Patch ``blocks`` (lib_seg.dit.DiTBlock) of diffusion_model for one sampling pass. current_call() -> the
    model call in progress with ``seg`` (the SEG rows, a slice, or None), ``latent_hw`` and ``text_tokens``
    (used for single-stream blocks, whose sequence is text + image), or None outside a call with SEG rows."""
    marked = _Marked()
    modules = dict(diffusion_model.named_modules())
    wrapped = {}
    for block in blocks:  # everything is resolved first: an unknown model raises Unsupported with nothing patched
        if mode != "skip":
            home, name, kind = _attention_entry(modules[block.name])
            wrapped.setdefault((home, name), kind)
    for block in blocks:
        module = modules[block.name]
        registry.replace(module, "forward", _block_forward(module, block, marked, mode, current_call))
    for (home, name), kind in wrapped.items():
        wrapper = _flux_attention_function if kind == "rows-heads-tokens" else _sd3_attention
        registry.replace(home, name, wrapper(getattr(home, name), marked, mode, sigma))


def _attention_entry(block_module):
    """(module, global name, layout) of the attention function a block of this class calls."""
    owner = sys.modules[type(block_module).__module__]
    attention = getattr(owner, "attention", None)
    if not callable(attention):
        raise Unsupported(f"its {type(block_module).__name__} blocks call no module-level attention function")
    home = sys.modules.get(getattr(attention, "__module__", "") or "")
    if "pe" in inspect.signature(attention).parameters and hasattr(home, "attention_function"):
        return home, "attention_function", "rows-heads-tokens"      # Flux / Chroma
    return owner, "attention", "rows-tokens"                          # SD3: block_mixing's global


def _block_forward(module, block, marked, mode, current_call):
    original = module.forward  # the bound class forward (or another extension's instance forward)

    def forward(*args, **kwargs):
        call = current_call()
        if call is None or not has_rows(call.perturbed):
            return original(*args, **kwargs)
        if mode == "skip":
            kept = dit.guidance_inputs(_hidden_inputs(module, block, args, kwargs), call.seg)
            return dit.skip_rows(original(*args, **kwargs), kept, call.seg)
        marked.current = call
        marked.text_tokens = _text_tokens(module, block, args, kwargs, call)
        try:
            return original(*args, **kwargs)
        finally:
            marked.current = None

    return forward


def _hidden_inputs(module, block, args, kwargs):
    """The block's inputs in the order of its outputs: SD3 ``block(context, x, c=)`` -> (context, x); Flux /
    Chroma ``block(img=, txt=, vec|mod=, pe=)`` -> (img, txt); single-stream ``block(x, vec|mod=, pe=)`` -> x."""
    if block.kind == "single":
        return args[0] if args else kwargs.get("x", kwargs.get("img"))
    if hasattr(module, "context_block"):
        return args[0] if args else kwargs["context"], args[1] if len(args) > 1 else kwargs["x"]
    return kwargs["img"] if "img" in kwargs else args[0], kwargs["txt"] if "txt" in kwargs else args[1]


def _text_tokens(module, block, args, kwargs, call):
    """Text tokens before the image in this block's joint sequence: its context / txt input's length; a
    single-stream block's sequence starts with the call's text tokens."""
    if block.kind == "single":
        return call.text_tokens
    inputs = _hidden_inputs(module, block, args, kwargs)
    text = inputs[0] if hasattr(module, "context_block") else inputs[1]
    return int(text.shape[1]) if text is not None else 0


def _image_tokens(marked, n_tokens):
    """(image slice, grid) of an attention call of the marked block."""
    grid = dit.patch_grid(marked.current.latent_hw)
    n_image = grid[0] * grid[1]
    start = 0 if n_tokens == n_image else marked.text_tokens
    return slice(start, start + n_image), grid


def _flux_attention_function(original, marked, mode, sigma):
    def attention_function(q, k, v, heads, *args, **kwargs):
        if marked.current is None or not kwargs.get("skip_reshape", False):
            return original(q, k, v, heads, *args, **kwargs)
        image, grid = _image_tokens(marked, q.shape[2])

        def attend(q_, k_, v_):
            return original(q_, k_, v_, heads, *args, **kwargs)

        return dit.perturbed_attention(attend, q, k, v, marked.current.perturbed, image, grid, mode, sigma)

    return attention_function


def _sd3_attention(original, marked, mode, sigma):
    def attention(q, k, v, heads, *args, **kwargs):
        if marked.current is None:
            return original(q, k, v, heads, *args, **kwargs)
        rows = q.shape[0]

        def split(t):  # (rows, tokens, heads * dim) or (rows, tokens, heads, dim) -> (rows, heads, tokens, dim)
            return t.reshape(rows, t.shape[1], heads, -1).transpose(1, 2)

        def attend(q_, k_, v_):
            return original(*(t.transpose(1, 2).reshape(rows, t.shape[2], -1) for t in (q_, k_, v_)), heads,
                            *args, **kwargs)

        image, grid = _image_tokens(marked, q.shape[1])
        return dit.perturbed_attention(attend, split(q), split(k), split(v), marked.current.perturbed, image, grid,
                                       mode, sigma)

    return attention
