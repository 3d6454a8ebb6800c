"""How the benchmark measures: the clock, round-robin timing of the variants, paired ratios, micro-timing of a
callable, and a probe that records every self-attention layer's input and where the UNet's time goes."""
import contextlib
import statistics
import sys
import time

import torch

from lib_seg.layers import self_attention_layers

# The clock of every measurement (--clock): wall time, or this process's CPU time (time.process_time), which
# with one thread is what the step costs even when other jobs share the cores and preempt it.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
CLOCK = [time.perf_counter]


def clock():
    return CLOCK[0]()


def log(message):
    print(f"[seg_bench] {message}", file=sys.stderr, flush=True)


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


class OnDevice:
    """What a benchmark needs of its device (set self.cuda, self.device, self.dtype): a sync before reading the
    clock, and fp16 autocast on CUDA."""

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def autocast(self):
        if self.cuda and self.dtype == torch.float16:
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()
