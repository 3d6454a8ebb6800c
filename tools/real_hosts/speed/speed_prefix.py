"""Per-generation cost of SEG in a running host, shared prefix against full rows (issue 21), measured as the
issue asks: 256 px, 10 steps, SD1.5, SEG `mid`, interleaved rounds, the median of the per-round ratios.

Each round runs, in an order that rotates from round to round: no SEG, SEG with the shared prefix, SEG with full
rows (switched through the test-only `prefix_toggle` extension: link it into the host's extensions/ as
seg-prefix-toggle). Per generation it records wall seconds and, with --pid, the CPU seconds the server's process
tree spent (user + system from /proc, children included), which is what to read on a machine shared with other
jobs: wall time there measures the neighbours. The shared and full SEG images must agree within round-off (the
prefix changes the order of nothing but the rows a block runs on), so their pixel difference is reported too.

    python3 tools/real_hosts/speed/speed_prefix.py --url http://127.0.0.1:7860 --pid SERVER_PID \
        [--pairs 3] [--size 256] [--steps 10] [--json out.json]
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
from lib_seg.selfcheck import payloads  # noqa: E402
from lib_seg.selfcheck.client import Api  # noqa: E402
from lib_seg.selfcheck.images import compare, decode_image, describe_difference  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid):
    """user + system seconds of pid and its live descendants (from /proc), plus its reaped children's."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(entry))
            except OSError:
                continue
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[11:15]: utime stime cutime cstime (stat fields 14-17)
        total += sum(int(x) for x in fields[11:15]) / CLK
        todo.extend(children.get(p, []))
    return total


def generate(api, body, pid):
    cpu0 = tree_cpu_seconds(pid) if pid else None
    t0 = time.monotonic()
    reply = api.post("/sdapi/v1/txt2img", body)
    wall = time.monotonic() - t0
    cpu = tree_cpu_seconds(pid) - cpu0 if pid else None
    if reply.status != 200:
        raise SystemExit(f"HTTP {reply.status}: {reply.message()}")
    return wall, cpu, reply.json["images"][0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--pid", type=int, help="the server's PID (CPU seconds of its process tree)")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--layers", default="mid")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    api = Api(args.url, timeout=3600)
    if api.get("/seg-prefix").status != 200:
        raise SystemExit("the host has no /seg-prefix route: link tools/real_hosts/speed/prefix_toggle into its "
                         "extensions/ as seg-prefix-toggle and restart it")
    seg = [True, 3, "inf", args.layers, 0, 1, 0]
    bodies = {"noseg": payloads.txt2img(args.size, args.steps),
              "shared": payloads.txt2img(args.size, args.steps, seg),
              "full": payloads.txt2img(args.size, args.steps, seg)}
    generate(api, payloads.txt2img(64, 2), args.pid)  # warm-up: first-call allocations and caches
    runs, images, log = {k: [] for k in bodies}, {}, None
    kinds = list(bodies)
    for r in range(args.pairs):
        order = kinds[r % 3:] + kinds[:r % 3]
        for kind in order:
            api.post(f"/seg-prefix?enabled={'false' if kind == 'full' else 'true'}", None)
            wall, cpu, image = generate(api, bodies[kind], args.pid)
            runs[kind].append({"wall": wall, "cpu": cpu})
            images.setdefault(kind, image)
            print(f"round {r} {kind:6s} wall {wall:7.1f} s" + (f"  cpu {cpu:7.1f} s" if cpu is not None else ""),
                  flush=True)
            if kind == "shared":
                log = api.get("/seg-prefix").json["log"][-3:]
    api.post("/seg-prefix?enabled=true", None)
    ratios = {}
    for clock in ("wall", "cpu"):
        if args.pid is None and clock == "cpu":
            continue
        for kind in ("shared", "full"):
            per_round = [s[clock] / n[clock] for s, n in zip(runs[kind], runs["noseg"])]
            ratios[f"{kind}/noseg {clock}"] = {"median": statistics.median(per_round), "rounds": per_round}
    diff = compare(decode_image(images["shared"]), decode_image(images["full"]))
    for name, value in ratios.items():
        print(f"{name:20s} median x{value['median']:.3f}  rounds " + " ".join(f"{x:.3f}" for x in value["rounds"]))
    print("shared vs full image:", describe_difference(diff))
    print("prefix log (last shared run):", log)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "runs": runs, "ratios": ratios, "shared_vs_full": diff,
                       "prefix_log": log}, f, indent=1)


if __name__ == "__main__":
    main()
