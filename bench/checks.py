"""Checks the benchmark makes on the engine beside timing it: rows per UNet call, host-side ops per step, the
blur operator cache."""
import torch

from bench.cases import CFG_SCALE, Bench
from bench.timing import clock, time_callable
from lib_seg import blur as seg_blur
from lib_seg.blur import blur_queries
from lib_seg.denoiser import SegCFGDenoiser
from lib_seg.params import SegSettings

# ----------------------------------------------------------------------------------- engine checks

def check_rows(unet, denoiser, config, device, dtype, latent=8, steps=4):
    """Rows per UNet call over a 4-step run for settings that must (not) add SEG rows."""
    bench = Bench(unet, denoiser, config, device, dtype, latent)
    cases = {
        "disabled": (SegSettings(enabled=False), False),
        "scale 0": (SegSettings(enabled=True, scale=0.0), False),
        "interval 0.5-1": (SegSettings(enabled=True, start=0.5, end=1.0), False),
        "active": (SegSettings(enabled=True), False),
        "active, separate pass": (SegSettings(enabled=True), True),
    }
    result = {}
    for label, (settings, separate) in cases.items():
        rows = []
        handle = unet.register_forward_pre_hook(lambda m, args: rows.append(int(args[0].shape[0])))
        try:
            model = SegCFGDenoiser(denoiser, unet, settings, cfg_scale=CFG_SCALE, total_steps=steps,
                                   separate_pass=separate)
            with torch.no_grad(), bench.autocast(), model:
                patches = len(model.session.registry)
                for _ in range(steps):
                    model(bench.x, bench.sigma, cond=bench.cond, uncond=bench.uncond)
        finally:
            handle.remove()
        result[label] = {"rows_per_call": rows, "patches_installed": patches}
    return result


def count_host_ops(bench):
    """aten ops per step that mean host work or host<->device traffic, for CFG and for SEG steps (CPU shows
    the host-side index creation; on CUDA the device copies and syncs show too). Counted with a dispatch mode."""
    from torch.utils._python_dispatch import TorchDispatchMode

    watched = ("arange", "_local_scalar_dense", "nonzero", "is_nonzero", "index.Tensor", "index_put")

    class Counter(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.counts = {}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = str(func.overloadpacket.__name__) if func.overloadpacket else str(func)
            full = str(func)
            key = None
            if any(w in full for w in watched):
                key = full.replace("aten.", "")
            elif name in ("_to_copy", "copy_"):
                src = args[0] if name == "_to_copy" else args[1]
                dst = kwargs.get("device") if name == "_to_copy" else args[0].device
                if dst is not None and isinstance(src, torch.Tensor) and torch.device(dst) != src.device:
                    key = f"{name} {src.device.type}->{torch.device(dst).type}"
            if key:
                self.counts[key] = self.counts.get(key, 0) + 1
            return func(*args, **kwargs)

    result = {}
    for key in ("cfg", "batched", "batched_s4"):
        bench.run(key)  # first calls fill caches (blur operators, grids); count a steady-state step
        counter = Counter()
        bench.run(key, inside=counter)
        result[key] = counter.counts
    return result


def blur_cache_check(device, dtype):
    """Cold (operator built) vs warm (cached) blur_queries on a 32x32 grid, and the cache's counters."""
    q = torch.randn(1, 1024, 320, device=device, dtype=dtype)
    sync = (lambda: torch.cuda.synchronize()) if torch.device(device).type == "cuda" else (lambda: None)
    sigma = 3.14159  # a value nothing else uses, so the first call is a miss
    sync()
    start = clock()
    blur_queries(q, (32, 32), sigma)
    sync()
    cold = clock() - start
    warm = time_callable(lambda: blur_queries(q, (32, 32), sigma), sync)
    info = seg_blur._separable_operators.cache_info()
    return {"cold_s": cold, "warm_s": warm, "cache": {"hits": info.hits, "misses": info.misses,
                                                      "maxsize": info.maxsize, "currsize": info.currsize}}
