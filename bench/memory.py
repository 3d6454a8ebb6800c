"""Peak memory of each variant's step: on the CPU in a fresh subprocess (peak RSS over the step), on CUDA
max_memory_allocated."""
import ctypes
import gc
import json
import os
import subprocess
import sys

import torch

from bench.cases import VARIANTS, Bench, build_unet, denoiser_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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
