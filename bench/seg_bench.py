"""What SEG costs per sampling step, on the real SD1.5 UNet architecture.

    python -m bench.seg_bench                      # CUDA if present, else CPU; latents 16x16 and 32x32
    python -m bench.seg_bench --quick              # ~1 minute on a CPU: 16x16 only, 2 runs, no memory pass
    python -m bench.seg_bench --device cuda --latent 64 --runs 20 --json seg_bench.json

The UNet is ldm's UNetModel with SD1.5's configuration (random weights: speed does not depend on them);
fp32 on the CPU, fp16 on CUDA. One "step" is one call of the guided denoiser, batch B = 1:

- bare UNet with 2 and 3 rows: the floor; a batched extra prediction cannot cost less than UNet(3) / UNet(2);
- CFG only; CFG + SEG batched ([cond | SEG | uncond] in one UNet call, this project) at sigma = inf and 4;
  the same at sigma = inf without the single-query shortcut; CFG + SEG as a separate second UNet call
  (the approach of the existing Forge/ComfyUI implementations); SEG without CFG ([cond | SEG]);
- CFG + PAG (identity-attention mode, same layers) batched and as a separate second UNet call (the way Forge's
  built-in PAG and sd-perturbed-attention run it).

Timing: every variant runs once per round, rounds rotate the order (drift and other jobs on the machine hit all
variants alike), warm-up rounds are discarded; medians, min/max and per-round ratios (each variant against
CFG-only of the same round) are reported. Peak memory: on CUDA max_memory_allocated over the step; on the CPU a
fresh subprocess (so the timing process's allocator state does not hide anything) with glibc returning freed
blocks to the OS, the kernel's peak-RSS mark reset before each variant (/proc/self/clear_refs) and the peak RSS
over the step minus the RSS before it reported.
"""
import argparse
import contextlib
import ctypes
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

from lib_seg import attention as seg_attention
from lib_seg import blur as seg_blur
from lib_seg.blur import blur_queries
from lib_seg.denoiser import SegCFGDenoiser
from lib_seg.grid import token_grid
from lib_seg.kdiffusion import compvis_denoiser
from lib_seg.layers import select_layers, self_attention_layers
from lib_seg.params import SegSettings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The ldm UNetModel configurations. sd15 is SD1.5's (v1-inference.yaml); tiny is for the smoke test.
CONFIGS = {
    "sd15": dict(model_channels=320, channel_mult=(1, 2, 4, 4), attention_resolutions=(4, 2, 1), num_res_blocks=2,
                 num_heads=8, context_dim=768, transformer_depth=1),
    "tiny": dict(model_channels=32, channel_mult=(1, 2, 4, 4), attention_resolutions=(4, 2, 1), num_res_blocks=2,
                 num_heads=4, context_dim=32, transformer_depth=1),
}
CONTEXT_TOKENS = 77
SIGMA = 2.0          # the noise level of the benchmarked step (mid-schedule for SD's k-diffusion sigmas)
CFG_SCALE = 7.5
SEG_SCALE = 3.0
FINITE_SIGMA = 4.0
SEG_ROWS = slice(1, 2)  # [cond | SEG | uncond], B = 1

# (key, label, rows, UNet calls)
VARIANTS = [
    ("unet2", "bare UNet, 2 rows", 2, 1),
    ("unet3", "bare UNet, 3 rows", 3, 1),
    ("cfg", "CFG only", 2, 1),
    ("batched", "CFG+SEG batched, σ=∞", 3, 1),
    ("batched_s4", f"CFG+SEG batched, σ={FINITE_SIGMA:g}", 3, 1),
    ("batched_noshortcut", "CFG+SEG batched, σ=∞ w/o shortcut", 3, 1),
    ("separate", "CFG+SEG separate pass, σ=∞", 3, 2),
    ("seg_nocfg", "SEG without CFG, σ=∞", 2, 1),
    ("pag_batched", "CFG+PAG batched (identity attn.)", 3, 1),
    ("pag_separate", "CFG+PAG separate pass", 3, 2),
]
LABELS = {key: label for key, label, _, _ in VARIANTS}
CRITERION_SLACK = 1.03
# The clock of every measurement (--clock): wall time, or this process's CPU time (time.process_time), which
# with one thread is what the step costs even when other jobs share the cores and preempt it.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
CLOCK = [time.perf_counter]


def clock():
    return CLOCK[0]()


def log(message):
    print(f"[seg_bench] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------- model

def build_unet(config="sd15", device="cpu", dtype=torch.float32, seed=0):
    """ldm's UNetModel with the named configuration and random weights, built once on `device`.

    Built on the meta device and filled in place (uniform +-1/sqrt(fan_in), PyTorch's default bound; norms at
    identity), which is much faster than ldm's init on a CPU. No layer is left at zero, unlike ldm's init
    (which zeroes every transformer's proj_out, so attention, and SEG with it, would not change the output).
    """
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    with torch.device("meta"):
        unet = UNetModel(image_size=32, in_channels=4, out_channels=4, use_spatial_transformer=True,
                         use_checkpoint=False, legacy=False, use_fp16=dtype == torch.float16, **CONFIGS[config])
    unet = unet.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    done = set()
    with torch.no_grad():
        for module in unet.modules():
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                bound = 1.0 / math.sqrt(module.weight[0].numel())
                module.weight.uniform_(-bound, bound, generator=generator)
                if module.bias is not None:
                    module.bias.uniform_(-bound, bound, generator=generator)
            elif isinstance(module, (nn.GroupNorm, nn.LayerNorm)):
                if module.weight is not None:
                    module.weight.fill_(1.0)
                    module.bias.zero_()
            else:
                continue
            done.update(id(p) for p in module.parameters(recurse=False))
    missed = [name for name, p in unet.named_parameters() if id(p) not in done]
    if missed:
        raise RuntimeError(f"benchmark UNet: parameters left uninitialised: {missed[:5]}")
    return unet.to(dtype).eval().requires_grad_(False)


def denoiser_for(unet, device):
    return compvis_denoiser(unet).to(device)


# ------------------------------------------------------------------------------------------- variants

@contextlib.contextmanager
def shortcut_threshold(tokens):
    """Run with the engine's σ = ∞ shortcut taken from `tokens` tokens on (0: every layer; math.inf: never,
    i.e. every SEG query replaced by the exact spatial mean and one ordinary attention over all rows)."""
    threshold = seg_attention.SHORTCUT_MIN_TOKENS
    seg_attention.SHORTCUT_MIN_TOKENS = tokens
    try:
        yield
    finally:
        seg_attention.SHORTCUT_MIN_TOKENS = threshold


def without_infinite_sigma_shortcut():
    return shortcut_threshold(math.inf)


class Bench:
    """The model, one latent's inputs, and a callable per variant returning (seconds, output)."""

    def __init__(self, unet, denoiser, config, device, dtype, latent, layers="mid"):
        self.unet, self.denoiser, self.device, self.dtype = unet, denoiser, torch.device(device), dtype
        self.layers = layers
        self.cuda = self.device.type == "cuda"
        generator = torch.Generator().manual_seed(latent)
        context_dim = CONFIGS[config]["context_dim"]
        self.x = (torch.randn(1, 4, latent, latent, generator=generator) * SIGMA).to(self.device)
        self.sigma = torch.full((1,), SIGMA, device=self.device)
        self.cond = torch.randn(1, CONTEXT_TOKENS, context_dim, generator=generator).to(self.device)
        self.uncond = torch.randn(1, CONTEXT_TOKENS, context_dim, generator=generator).to(self.device) * 0.1
        # What the denoiser hands the UNet, for the bare-UNet variants.
        c_in = 1 / (SIGMA ** 2 + 1) ** 0.5
        t = denoiser.sigma_to_t(self.sigma)
        self.bare = {rows: (torch.cat([self.x * c_in] * rows), torch.cat([t] * rows),
                            torch.cat([self.cond, self.uncond, self.cond][:rows])) for rows in (2, 3)}
        on = dict(enabled=True, scale=SEG_SCALE, layers=layers)
        self.guided = {
            "cfg": (SegSettings(enabled=False), True, False, False),
            "batched": (SegSettings(sigma=math.inf, **on), True, False, False),
            "batched_s4": (SegSettings(sigma=FINITE_SIGMA, **on), True, False, False),
            "batched_noshortcut": (SegSettings(sigma=math.inf, **on), True, False, True),
            "separate": (SegSettings(sigma=math.inf, **on), True, True, False),
            "seg_nocfg": (SegSettings(sigma=math.inf, **on), False, False, False),
            # PAG: the same rows and layers, identity attention instead of blurred queries
            "pag_batched": (SegSettings(mode="identity", **on), True, False, False),
            "pag_separate": (SegSettings(mode="identity", **on), True, True, False),
        }

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def autocast(self):
        if self.cuda and self.dtype == torch.float16:
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def model(self, key):
        settings, use_cfg, separate, _ = self.guided[key]
        return SegCFGDenoiser(self.denoiser, self.unet, settings, cfg_scale=CFG_SCALE if use_cfg else 1.0,
                              separate_pass=separate)

    def run(self, key, inside=None):
        """One step of variant `key`: (seconds, output). Patches are installed before the clock starts.
        inside: optional context manager entered around the timed call (probes)."""
        with torch.no_grad(), self.autocast(), contextlib.ExitStack() as stack:
            if key.startswith("unet"):
                x, t, c = self.bare[int(key[-1])]
                call = lambda: self.unet(x, t, context=c)  # noqa: E731
            else:
                _, use_cfg, _, unshortcut = self.guided[key]
                if unshortcut:
                    stack.enter_context(without_infinite_sigma_shortcut())
                model = stack.enter_context(self.model(key))
                uncond = self.uncond if use_cfg else None
                call = lambda: model(self.x, self.sigma, cond=self.cond, uncond=uncond)  # noqa: E731
            if inside is not None:
                stack.enter_context(inside)
            self.sync()
            start = clock()
            out = call()
            self.sync()
            return clock() - start, out


# --------------------------------------------------------------------------------------------- timing

def summarize(samples):
    median = statistics.median(samples)
    return {"median_s": median, "min_s": min(samples), "max_s": max(samples),
            "spread": (max(samples) - min(samples)) / median if median else 0.0, "samples_s": samples}


def time_variants(bench, keys, runs, warmup, budget=None, run_limits=(3, 10)):
    """Round-robin: each round runs every variant once, the order rotated by one per round.

    runs None: as many rounds as fit in `budget` seconds (after the warm-up rounds, judged by the last
    warm-up round's duration), clamped to run_limits."""
    rounds, outputs = [], {}
    r = 0
    started = last_round_start = time.perf_counter()
    while True:
        if r == warmup and runs is None:
            round_s = (time.perf_counter() - last_round_start) if warmup else None
            left = budget - (time.perf_counter() - started) if budget is not None else None
            runs = run_limits[0] if not round_s or left is None else int(left / round_s)
            runs = max(run_limits[0], min(run_limits[1], runs))
            log(f"  {runs} timed rounds fit the budget")
        if runs is not None and r >= warmup + runs:
            break
        last_round_start = time.perf_counter()
        shift = r % len(keys)
        times = {}
        for key in keys[shift:] + keys[:shift]:
            times[key], outputs[key] = bench.run(key)
        if r >= warmup:
            rounds.append(times)
        total = f"/{warmup + runs}" if runs is not None else ""
        log(f"  round {r + 1}{total}{' (warm-up)' if r < warmup else ''}: "
            + ", ".join(f"{k} {times[k] * 1e3:.0f}" for k in keys) + " ms")
        r += 1
    return rounds, outputs


def paired_ratio(rounds, num, den):
    """Median over rounds of num/den measured in the same round."""
    return statistics.median(r[num] / r[den] for r in rounds)


# --------------------------------------------------------------------------------------------- probes

class Probe:
    """Hooks for one untimed step: every self-attention layer's input (shape, grid, SEG rows of the call)
    and where the UNet's time goes (input blocks / middle / output blocks)."""

    def __init__(self, bench, model_session=None):
        self.bench = bench
        self.attn = {}
        self.marks = {}
        self.handles = []
        self.session = model_session

    def __enter__(self):
        unet = self.bench.unet
        modules = dict(unet.named_modules())
        for layer in self_attention_layers(unet):
            self.handles.append(modules[layer.name].register_forward_pre_hook(self._attn_hook(layer)))

        def mark(name):
            def hook(*_):
                self.bench.sync()
                self.marks.setdefault(name, clock())
            return hook

        self.handles.append(unet.input_blocks[0].register_forward_pre_hook(mark("start")))
        self.handles.append(unet.middle_block.register_forward_pre_hook(mark("middle")))
        self.handles.append(unet.output_blocks[0].register_forward_pre_hook(mark("output")))
        self.handles.append(unet.out.register_forward_hook(mark("end")))
        return self

    def _attn_hook(self, layer):
        def hook(module, args):
            x = args[0]
            self.attn.setdefault(layer.name, {"layer": layer, "module": module, "x": x.detach().clone()})
        return hook

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        return False

    def unet_split(self):
        m = self.marks
        total = m["end"] - m["start"]
        return {"input_blocks": (m["middle"] - m["start"]) / total, "middle_block": (m["output"] - m["middle"]) / total,
                "output_blocks": (m["end"] - m["output"]) / total}


MICRO_SCALE = [1.0]  # --micro-scale: shortens the micro-benchmarks (smoke test)


def time_callable(fn, sync, min_seconds=0.05, batches=5):
    """Median seconds per call of fn over `batches` batches of calls, each batch about min_seconds long."""
    min_seconds *= MICRO_SCALE[0]
    fn()
    sync()
    start = clock()
    fn()
    sync()
    once = max(clock() - start, 1e-7)
    per_batch = max(1, int(min_seconds / once))
    results = []
    for _ in range(batches):
        sync()
        start = clock()
        for _ in range(per_batch):
            fn()
        sync()
        results.append((clock() - start) / per_batch)
    return statistics.median(results)


def blur_cost(bench, probe, selected):
    """Per-step cost of the blur on the SEG row's queries of the selected layers (and of all layers)."""
    shapes = []
    for name, entry in probe.attn.items():
        x = entry["x"]
        grid = token_grid(tuple(bench.x.shape[-2:]), x.shape[1])
        shapes.append((name, x[SEG_ROWS].clone(), grid))

    def blur(names, sigma):
        chosen = [(q, grid) for name, q, grid in shapes if name in names]

        def fn():
            for q, grid in chosen:
                blur_queries(q, grid, sigma)
        return fn

    def mean(names):
        # what the engine's sigma = inf path does instead of a blur: one mean query per SEG row
        chosen = [q for name, q, _ in shapes if name in names]

        def fn():
            for q in chosen:
                q.mean(dim=1, keepdim=True, dtype=torch.promote_types(q.dtype, torch.float32)).to(q.dtype)
        return fn

    everything = {name for name, _, _ in shapes}
    return {
        "selected_sigma4_s": time_callable(blur(selected, FINITE_SIGMA), bench.sync),
        "selected_inf_mean_s": time_callable(mean(selected), bench.sync),
        "all_layers_sigma4_s": time_callable(blur(everything, FINITE_SIGMA), bench.sync),
        "layers": {name: [list(q.shape), list(grid)] for name, q, grid in shapes if name in selected},
    }


def shortcut_layers(bench, probe, selected, reps=3):
    """Each self-attention layer on its recorded input (3 rows, SEG row 1): the engine's sigma = inf path with
    the single-query shortcut (forced on every layer) vs the same without it; times (medians of interleaved
    reps) and max abs diff. The engine itself uses it from SHORTCUT_MIN_TOKENS tokens on."""
    with shortcut_threshold(0):
        return _shortcut_layers(bench, probe, selected, reps)


def _shortcut_layers(bench, probe, selected, reps):
    rows = {}
    for name, entry in probe.attn.items():
        module, x = entry["module"], entry["x"]
        grid = token_grid(tuple(bench.x.shape[-2:]), x.shape[1])
        host_forward = type(module).forward

        def attend(q_rows, kv_rows, module=module, x=x, host_forward=host_forward):
            if q_rows is x:
                return host_forward(module, x, None)
            return host_forward(module, q_rows, x[kv_rows])

        def short(attend=attend, x=x, grid=grid):
            return seg_attention.attend_smoothed(attend, x, SEG_ROWS, grid, math.inf)

        def long(attend=attend, x=x, grid=grid):
            smoothed = blur_queries(x[SEG_ROWS], grid, math.inf)
            return attend(torch.cat([x[:SEG_ROWS.start], smoothed, x[SEG_ROWS.stop:]]), slice(0, x.shape[0]))

        with torch.no_grad(), bench.autocast():
            a, b = short(), long()
            diff = (a.float() - b.float()).abs().max().item()
            scale = b.float().abs().max().item()
            times = {"short": [], "long": []}
            for _ in range(reps):
                for which, fn in (("short", short), ("long", long)):
                    times[which].append(time_callable(fn, bench.sync, min_seconds=0.02, batches=1))
        rows[name] = {"tokens": x.shape[1], "channels": x.shape[2], "max_abs_diff": diff, "max_abs_out": scale,
                      "with_s": statistics.median(times["short"]), "without_s": statistics.median(times["long"]),
                      "selected": name in selected}
    total = lambda names, k: sum(rows[n][k] for n in names)  # noqa: E731
    return {"per_layer": rows,
            "selected_with_s": total(selected, "with_s"), "selected_without_s": total(selected, "without_s"),
            "all_with_s": total(rows, "with_s"), "all_without_s": total(rows, "without_s"),
            "max_abs_diff": max(r["max_abs_diff"] for r in rows.values())}


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


# ------------------------------------------------------------------------------------------- memory

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def _status_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def memory_worker(args):
    """Runs in a fresh process: peak RSS of each variant's step above the RSS before it (CPU)."""
    libc = _libc()
    if libc is not None:  # large blocks mmapped and unmapped on free: RSS follows what is really in use
        libc.mallopt(_M_MMAP_THRESHOLD, 64 * 1024)
        libc.mallopt(_M_TRIM_THRESHOLD, 128 * 1024)
    torch.set_num_threads(args.threads)
    unet = build_unet(args.config, "cpu", torch.float32)
    denoiser = denoiser_for(unet, "cpu")
    out = {"model_rss_mib": _status_kib("VmRSS") / 1024, "latents": {}}
    for latent in args.latent:
        bench = Bench(unet, denoiser, args.config, "cpu", torch.float32, latent)
        bench.run("batched")  # first-call allocations (library workspaces) land here, not in a variant
        peaks = {}
        for key, *_ in VARIANTS:
            gc.collect()
            if libc is not None:
                libc.malloc_trim(0)
            before = _status_kib("VmRSS")
            _reset_peak_rss()
            bench.run(key)
            peaks[key] = (_status_kib("VmHWM") - before) / 1024
        out["latents"][str(latent)] = peaks
    print(json.dumps(out))


def memory_cpu_subprocess(args):
    if not os.path.exists("/proc/self/clear_refs"):
        return {"error": "no /proc/self/clear_refs: peak RSS per variant needs Linux"}
    command = [sys.executable, "-m", "bench.seg_bench", "--memory-worker", "--device", "cpu", "--config",
               args.config, "--threads", str(args.threads), "--latent", *map(str, args.latent)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_cuda(bench):
    peaks = {}
    for key, *_ in VARIANTS:
        gc.collect()
        torch.cuda.synchronize(bench.device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(bench.device)
        before = torch.cuda.memory_allocated(bench.device)
        bench.run(key)
        peaks[key] = (torch.cuda.max_memory_allocated(bench.device) - before) / 2 ** 20
    return peaks


# --------------------------------------------------------------------------------------------- report

def machine_info(device, threads):
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or cpu
    info = {"cpu": cpu, "nproc": os.cpu_count(), "torch_threads": threads, "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(), "device": str(device)}
    try:
        info["load_average_at_start"] = os.getloadavg()
    except OSError:
        pass
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def format_table(result):
    lines = []
    for latent, r in result["latents"].items():
        lines.append(f"\nlatent {latent}x{latent} (B=1, SEG layers '{result['layers']}', CFG {CFG_SCALE:g}, "
                     f"SEG scale {SEG_SCALE:g}; {r['runs']} runs after {r['warmup']} warm-up round(s))")
        lines.append(f"{'variant':36} {'rows':>4} {'calls':>5} {'median ms':>10} {'min-max ms':>15} "
                     f"{'spread':>7} {'ratio':>12} {'peak MiB':>9}")
        for key, label, rows, calls in VARIANTS:
            v = r["variants"][key]
            if key == "unet2":
                ratio = "1 (÷2 rows)"
            elif key == "unet3":
                ratio = f"{r['unet_3_over_2']:.3f} ÷2 rows"
            else:
                ratio = f"{v['ratio_to_cfg']:.3f} ×CFG"
            peak = v.get("peak_mib")
            peak = f"{peak:9.1f}" if isinstance(peak, (int, float)) else f"{'-':>9}"
            lines.append(f"{label:36} {rows:>4} {calls:>5} {v['median_s'] * 1e3:10.1f} "
                         f"{v['min_s'] * 1e3:7.1f}-{v['max_s'] * 1e3:<7.1f} {v['spread'] * 100:6.1f}% {ratio:>12} {peak}")
        c = r["criterion"]
        lines.append(f"criterion: batched/CFG {c['batched_over_cfg']:.3f} <= {CRITERION_SLACK} x UNet 3/2 rows "
                     f"{c['unet_3_over_2']:.3f} = {c['limit']:.3f}: {'holds' if c['within_limit'] else 'FAILS'}; "
                     f"batched/separate {c['batched_over_separate']:.3f}: "
                     f"{'batched faster' if c['batched_faster_than_separate'] else 'batched NOT faster'}")
        lines.append(f"PAG: batched/CFG {c['pag_batched_over_cfg']:.3f} <= {c['limit']:.3f}: "
                     f"{'holds' if c['pag_within_limit'] else 'FAILS'}; batched/separate "
                     f"{c['pag_batched_over_separate']:.3f}; output batched vs separate max |diff| "
                     f"{r['pag']['batched_vs_separate_max_abs_diff']:.2e} (PAG's own effect: max "
                     f"{r['pag']['pag_effect_max_abs']:.2e})")
        b = r["blur"]
        lines.append(f"blur per step: σ={FINITE_SIGMA:g} on selected layers {b['selected_sigma4_s'] * 1e6:.1f} µs "
                     f"= {b['fraction_selected_sigma4'] * 100:.3f}% of the σ={FINITE_SIGMA:g} batched step; σ=∞ mean "
                     f"{b['selected_inf_mean_s'] * 1e6:.1f} µs = {b['fraction_selected_inf'] * 100:.3f}%; "
                     f"all 16 layers at σ={FINITE_SIGMA:g}: {b['fraction_all_sigma4'] * 100:.2f}%")
        s = r["shortcut"]
        lines.append(f"σ=∞ shortcut: full step {s['step_without_s'] * 1e3:.1f} -> {s['step_with_s'] * 1e3:.1f} ms "
                     f"(paired ratio with/without {s['step_ratio']:.3f}), output max |diff| {s['step_max_abs_diff']:.2e} "
                     f"(SEG's own effect on the output: max {s['seg_effect_max_abs']:.2e}); attention alone, selected "
                     f"layers {s['layers']['selected_without_s'] * 1e3:.2f} -> {s['layers']['selected_with_s'] * 1e3:.2f} ms, "
                     f"all layers {s['layers']['all_without_s'] * 1e3:.2f} -> {s['layers']['all_with_s'] * 1e3:.2f} ms, "
                     f"max |diff| {s['layers']['max_abs_diff']:.2e}")
        u = r["unet_split"]
        lines.append(f"UNet time split (one 3-row step): input blocks {u['input_blocks'] * 100:.0f}%, middle "
                     f"{u['middle_block'] * 100:.0f}%, output blocks {u['output_blocks'] * 100:.0f}%")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- main

def bench_latent(unet, denoiser, args, device, dtype, latent, memory, budget=None):
    bench = Bench(unet, denoiser, args.config, device, dtype, latent)
    keys = [key for key, *_ in VARIANTS]
    selected = {layer.name for layer in select_layers(unet, bench.layers)}
    log(f"latent {latent}x{latent}: probe step")
    probe = Probe(bench)
    bench.run("batched_s4", inside=probe)
    limits = (10, 50) if bench.cuda else (3, 10)
    rounds, outputs = time_variants(bench, keys, args.runs, args.warmup, budget, limits)
    variants = {}
    for key, label, rows, calls in VARIANTS:
        v = summarize([r[key] for r in rounds])
        v.update(label=label, rows=rows, unet_calls=calls, ratio_to_cfg=paired_ratio(rounds, key, "cfg"),
                 ratio_of_medians_to_cfg=None)
        if memory and key in memory:
            v["peak_mib"] = memory[key]
        variants[key] = v
    for v in variants.values():
        v["ratio_of_medians_to_cfg"] = v["median_s"] / variants["cfg"]["median_s"]
    unet_ratio = paired_ratio(rounds, "unet3", "unet2")
    batched_ratio = variants["batched"]["ratio_to_cfg"]
    criterion = {
        "batched_over_cfg": batched_ratio, "unet_3_over_2": unet_ratio, "limit": CRITERION_SLACK * unet_ratio,
        "within_limit": batched_ratio <= CRITERION_SLACK * unet_ratio,
        "batched_over_cfg_of_medians": variants["batched"]["ratio_of_medians_to_cfg"],
        "unet_3_over_2_of_medians": variants["unet3"]["median_s"] / variants["unet2"]["median_s"],
        "batched_over_separate": paired_ratio(rounds, "batched", "separate"),
    }
    # PAG rows: the same criterion (batched costs what its extra row costs, and less than a separate pass)
    pag_ratio = variants["pag_batched"]["ratio_to_cfg"]
    criterion.update(pag_batched_over_cfg=pag_ratio, pag_within_limit=pag_ratio <= CRITERION_SLACK * unet_ratio,
                     pag_batched_over_separate=paired_ratio(rounds, "pag_batched", "pag_separate"))
    criterion["within_limit_of_medians"] = (criterion["batched_over_cfg_of_medians"]
                                            <= CRITERION_SLACK * criterion["unet_3_over_2_of_medians"])
    criterion["batched_faster_than_separate"] = (criterion["batched_over_separate"] < 1
                                                 and variants["batched"]["median_s"] < variants["separate"]["median_s"])
    log(f"latent {latent}x{latent}: blur and shortcut micro-benchmarks")
    blur = blur_cost(bench, probe, selected)
    blur["fraction_selected_sigma4"] = blur["selected_sigma4_s"] / variants["batched_s4"]["median_s"]
    blur["fraction_selected_inf"] = blur["selected_inf_mean_s"] / variants["batched"]["median_s"]
    blur["fraction_all_sigma4"] = blur["all_layers_sigma4_s"] / variants["batched_s4"]["median_s"]
    blur["target_met"] = blur["fraction_selected_sigma4"] <= 0.01
    cfg_out = outputs["cfg"].float()
    shortcut = {
        "step_with_s": variants["batched"]["median_s"], "step_without_s": variants["batched_noshortcut"]["median_s"],
        "step_ratio": paired_ratio(rounds, "batched", "batched_noshortcut"),
        "step_max_abs_diff": (outputs["batched"].float() - outputs["batched_noshortcut"].float()).abs().max().item(),
        "seg_effect_max_abs": (outputs["batched"].float() - cfg_out).abs().max().item(),
        "layers": shortcut_layers(bench, probe, selected),
    }
    # the batched PAG rows compute what the separate pass computes (to fp32 round-off)
    pag = {"batched_vs_separate_max_abs_diff":
           (outputs["pag_batched"].float() - outputs["pag_separate"].float()).abs().max().item(),
           "pag_effect_max_abs": (outputs["pag_batched"].float() - cfg_out).abs().max().item()}
    for layer in shortcut["layers"]["per_layer"].values():
        layer.pop("module", None)
    return {"runs": len(rounds), "warmup": args.warmup, "variants": variants, "unet_3_over_2": unet_ratio,
            "criterion": criterion, "blur": blur, "shortcut": shortcut, "pag": pag, "unet_split": probe.unet_split(),
            "rounds_s": rounds, "selected_layers": sorted(selected)}, bench


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench.seg_bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:1")
    parser.add_argument("--latent", type=int, nargs="+", default=None, help="square latent sizes (default 16 32)")
    parser.add_argument("--runs", type=int, default=None,
                        help="timed rounds per latent (default: as many as fit --budget, 3-10 on CPU, 10-50 on CUDA)")
    parser.add_argument("--budget", type=float, default=540.0,
                        help="seconds the whole run should take when --runs is not given (default 540)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed warm-up rounds (default 1; CUDA 3)")
    parser.add_argument("--json", default="seg_bench.json", help="where to write the results (default seg_bench.json)")
    parser.add_argument("--quick", action="store_true", help="about a minute on a CPU: smallest latent, 2 runs, "
                        "no memory pass, no engine checks")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall (default) or cpu: this process's CPU time, for a machine shared with other jobs "
                             "(meaningful with --threads 1; CUDA always uses wall time)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--config", default="sd15", choices=sorted(CONFIGS), help=argparse.SUPPRESS)
    parser.add_argument("--memory-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--micro-scale", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = torch.device(args.device).type == "cuda"
    if args.latent is None:
        args.latent = [16] if args.quick else [16, 32]
    if args.quick:
        args.runs = 2 if args.runs is None else args.runs
        args.warmup = 0 if args.warmup is None else args.warmup  # the probe step warms up
    if args.warmup is None:
        args.warmup = 1 if args.quick or not cuda else 3
    if args.threads is None:
        args.threads = torch.get_num_threads()
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.memory_worker:
        memory_worker(args)
        return None
    started = time.perf_counter()
    MICRO_SCALE[0] = args.micro_scale
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        args.clock = "wall"
    CLOCK[0] = CLOCKS[args.clock]
    dtype = torch.float16 if cuda else torch.float32
    torch.set_num_threads(args.threads)
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    if not cuda and args.threads > 1 and load > 0.5:
        log(f"load average {load:.1f} with {args.threads} threads: other jobs are running; threads that wait for "
            "each other suffer most from that (consider --threads 1)")
    result = {"machine": machine_info(device, args.threads),
              "command": "python -m bench.seg_bench " + " ".join(sys.argv[1:] if argv is None else argv),
              "model": f"ldm UNetModel, config {args.config}: {CONFIGS[args.config]}, random weights, {dtype}",
              "clock": args.clock, "step": f"one guided denoiser call, B=1, k-diffusion sigma {SIGMA}", "layers": "mid", "latents": {}}

    memory = {}
    if not args.no_memory and not args.quick and not cuda:
        log("peak memory: fresh subprocess, every variant once")
        mem = memory_cpu_subprocess(args)
        result["memory_cpu"] = mem
        if "error" in mem:
            log(f"memory measurement failed: {mem['error']}")
        memory = {int(k): v for k, v in mem.get("latents", {}).items()}

    log(f"building the {args.config} UNet on {device} ({dtype})")
    start = time.perf_counter()
    unet = build_unet(args.config, device, dtype)
    denoiser = denoiser_for(unet, device)
    result["build_s"] = time.perf_counter() - start

    benches = {}
    for i, latent in enumerate(args.latent):
        # the time left, shared among the remaining latents by area^0.75 (small latents are overhead-bound),
        # less ~20 s each for the probe step and micro-benchmarks and 15 s for the engine checks
        weights = [size ** 1.5 for size in args.latent[i:]]
        left = args.budget - (time.perf_counter() - started) - 20 * len(weights) - 15
        budget = max(0.0, left) * weights[0] / sum(weights)
        r, bench = bench_latent(unet, denoiser, args, device, dtype, latent, memory.get(latent), budget)
        benches[latent] = bench
        result["latents"][str(latent)] = r
    if cuda and not args.no_memory:
        for latent, bench in benches.items():
            for key, peak in memory_cuda(bench).items():
                result["latents"][str(latent)]["variants"][key]["peak_mib"] = peak
    if not args.quick:
        log("engine checks: rows per call, host ops per step, blur cache")
        # Model-independent bookkeeping: checked on the tiny UNet (same block layout), which takes a second.
        tiny = build_unet("tiny", device, dtype)
        tiny_denoiser = denoiser_for(tiny, device)
        result["checks"] = {"model": "tiny (same block layout as SD1.5, 32 channels), latent 8x8",
                            "rows": check_rows(tiny, tiny_denoiser, "tiny", device, dtype),
                            "host_ops_per_step": count_host_ops(Bench(tiny, tiny_denoiser, "tiny", device, dtype, 8)),
                            "blur_cache": blur_cache_check(device, dtype if cuda else torch.float32)}
    result["total_s"] = time.perf_counter() - started

    table = format_table(result)
    header = (f"SEG benchmark: {result['model']}\n{result['machine']['cpu']}, nproc {result['machine']['nproc']}, "
              f"torch {torch.__version__}, {args.threads} threads, device {device}, {args.clock} clock")
    print(header + table)
    if "checks" in result:
        print("\nrows per UNet call over 4 steps:", {k: v["rows_per_call"] for k, v in result["checks"]["rows"].items()})
        print("host-side ops per step:", result["checks"]["host_ops_per_step"])
        bc = result["checks"]["blur_cache"]
        print(f"blur operator cache: cold {bc['cold_s'] * 1e6:.0f} µs, warm {bc['warm_s'] * 1e6:.0f} µs, {bc['cache']}")
    print(f"\ntotal {result['total_s']:.0f} s; JSON: {args.json}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
    return result


if __name__ == "__main__":
    main()
