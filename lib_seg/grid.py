"""Token grid of an attention layer: which (h, w) its tokens come from, given the latent size."""
import functools


def _ceil_half(n):
    return (n + 1) // 2


def token_grid(latent_hw, n_tokens):
    """(h, w) of an attention layer with ``n_tokens`` tokens in a UNet run on a latent of size ``latent_hw``.

    Each UNet level downsamples with a stride-2, padding-1, 3x3 convolution, whose output size is
    ceil(n / 2) (so 75x100 -> 38x50 -> 19x25 -> 10x13). The up path restores the skip connection's size,
    so every attention layer sits on one of these grids: try 0, 1, 2, ... halvings and return the first
    whose area is ``n_tokens``. Raises ValueError (with the numbers) when none matches.
    """
    return _token_grid(int(latent_hw[0]), int(latent_hw[1]), int(n_tokens))


@functools.lru_cache(maxsize=256)
def _token_grid(latent_h, latent_w, n_tokens):
    h, w = latent_h, latent_w
    if h < 1 or w < 1:
        raise ValueError(f"SEG: latent size must be positive, got {h}x{w}")
    tried = []
    while True:
        if h * w == n_tokens:
            return h, w
        tried.append(f"{h}x{w}")
        if h == 1 and w == 1:
            break
        h, w = _ceil_half(h), _ceil_half(w)
    raise ValueError(f"SEG: an attention layer with {n_tokens} tokens does not match latent "
                     f"{latent_h}x{latent_w} at any level (grids {', '.join(tried)})")
