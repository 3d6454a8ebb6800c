"""Follows Forge dfdcbab6 backend/misc/tomesd.py (reForge 3b56b268 ldm_patched/contrib/nodes_tomesd.py is the same):
``TomePatcher.patch`` clones the UNet patcher and sets an attn1 patch that merges the queries' input of the layers
at the latent's full size (max_downsample fixed at 1; keys and values keep every token) and an attn1 output patch
that unmerges. The hosts carry a copy of tomesd's merge code; the stand-in calls the tomesd package's, with the
deterministic destination choice (the hosts draw it at random)."""
import math

from tomesd.merge import bipartite_soft_matching_random2d


def get_functions(x, ratio, original_shape):
    _, _, original_h, original_w = original_shape
    downsample = int(math.ceil(math.sqrt(original_h * original_w // x.shape[1])))
    if downsample <= 1:
        w, h = int(math.ceil(original_w / downsample)), int(math.ceil(original_h / downsample))
        return bipartite_soft_matching_random2d(x, w, h, 2, 2, int(x.shape[1] * ratio), no_rand=True)
    return (lambda y: y), (lambda y: y)


class TomePatcher:
    def __init__(self):
        self.u = None

    def patch(self, model, ratio):
        def tomesd_m(q, k, v, extra_options):
            m, self.u = get_functions(q, ratio, extra_options["original_shape"])
            return m(q), k, v

        def tomesd_u(n, extra_options):
            return self.u(n)

        m = model.clone()
        m.set_model_attn1_patch(tomesd_m)
        m.set_model_attn1_output_patch(tomesd_u)
        return m
