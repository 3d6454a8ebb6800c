"""Forge's transformer models: SEG, PAG and skip-layer guidance in Flux and Chroma blocks.

Forge (dfdcbab6) runs Flux (backend/nn/flux.py) and Chroma (backend/nn/chroma.py) through the same sampling
function as its UNets, so the batch and the guidance are SegPatch's (lib_seg/hosts/forge.py): its model-function
wrapper appends the SEG rows to the call and marks them in ``patch.call``, its post-CFG function adds the term.
Only the way to attention differs. The blocks call flux.py's module function ``attention(q, k, v, pe)``
(Chroma's blocks import that same function), which applies RoPE and then calls the module global
``attention_function(q, k, v, heads, skip_reshape=True)`` on (rows, heads, tokens, head_dim) tensors; the text
tokens come first in every joint sequence. For one sampling pass:

* each selected block's instance ``forward`` is wrapped: in a call with SEG rows it marks the block as perturbed
  while it runs (or, in skip mode, gives the SEG rows their inputs back);
* that module's ``attention_function`` global is wrapped: inside a marked block it hands the post-RoPE q, k, v to
  ``lib_seg.dit.perturbed_attention``, with the image tokens right after the text tokens.

Both are registered in the pass's HookRegistry and go with it.
"""
import sys

from .. import dit


class _Marked:
    """Which selected block is running, with the SEG rows and the image tokens of its call; or None."""
    current = None


def install(registry, diffusion_model, blocks, patch):
    """Patch ``blocks`` (lib_seg.dit.DiTBlock of diffusion_model) for the pass whose SegPatch is ``patch``."""
    settings = patch.settings
    marked = _Marked()
    modules = dict(diffusion_model.named_modules())
    attention_modules = set()
    for block in blocks:
        module = modules[block.name]
        registry.replace(module, "forward", _block_forward(module, block, patch, marked, settings.mode))
        owner = sys.modules[type(module).__module__]
        attention = getattr(owner, "attention", None)  # flux.py's attention(q, k, v, pe), maybe imported
        home = sys.modules.get(getattr(attention, "__module__", None) or "")
        if home is not None and hasattr(home, "attention_function"):
            attention_modules.add(home)
    if settings.mode != "skip" and not attention_modules:
        raise RuntimeError(f"SEG: no attention function found for {type(diffusion_model).__name__}'s blocks")
    for home in attention_modules:
        registry.replace(home, "attention_function", _attention_function(home.attention_function, marked, settings))


def _block_forward(module, block, patch, marked, mode):
    original = module.forward  # the bound class forward (or another extension's instance forward)

    def forward(*args, **kwargs):
        call = patch.call
        if call is None or call.seg is None:
            return original(*args, **kwargs)
        if mode == "skip":
            return dit.skip_rows(original(*args, **kwargs), _hidden_inputs(block, args, kwargs), call.seg)
        marked.current = call
        try:
            return original(*args, **kwargs)
        finally:
            marked.current = None

    return forward


def _hidden_inputs(block, args, kwargs):
    """What a block returns in its guidance rows when skipped: (img, txt) for a double block, x for a single one
    (Forge calls ``block(img=, txt=, vec|mod=, pe=)`` and ``block(x, vec|mod=, pe=)``)."""
    if block.kind == "joint":
        img = kwargs["img"] if "img" in kwargs else args[0]
        txt = kwargs["txt"] if "txt" in kwargs else args[1]
        return img, txt
    return args[0] if args else kwargs.get("x", kwargs.get("img"))


def _attention_function(original, marked, settings):
    def attention_function(q, k, v, heads, *args, **kwargs):
        call = marked.current
        if call is None or not kwargs.get("skip_reshape", False):
            return original(q, k, v, heads, *args, **kwargs)
        grid = dit.patch_grid(call.latent_hw)
        image = slice(call.text_tokens, call.text_tokens + grid[0] * grid[1])

        def attend(q_, k_, v_):
            return original(q_, k_, v_, heads, *args, **kwargs)

        return dit.perturbed_attention(attend, q, k, v, call.seg, image, grid, settings.mode, settings.sigma)

    return attention_function
