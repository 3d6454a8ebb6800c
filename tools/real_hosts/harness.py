"""One driver for the real-host harness: every host (hosts.py) and every check, fuzz and soak.

    python3 tools/real_hosts/harness.py hosts
    python3 tools/real_hosts/harness.py [--hosts-dir DIR] build  --host a1111 [-- build-script flags]
    python3 tools/real_hosts/harness.py [--hosts-dir DIR] start  --host a1111 [--port N] [--checkpoint F] [-- host flags]
    python3 tools/real_hosts/harness.py [--hosts-dir DIR] stop   --host a1111 [--port N]
    python3 tools/real_hosts/harness.py [--hosts-dir DIR] fuzz   --host a1111 [--port N] [--seed S] [--count N]
                                                          [--payloads F.jsonl] [--replay F.jsonl --only 3,17]
    python3 tools/real_hosts/harness.py [--hosts-dir DIR] soak   --host a1111 [--port N] [--jobs 200] [--seg-off]
    python3 tools/real_hosts/harness.py [--hosts-dir DIR] check  rows|dit|hires-pag|neighbours|controlnet|selfcheck
                                                          --host a1111 [--port N] [-- the check's own flags]

--hosts-dir (else $SEG_HOSTS_DIR, else <checkout>/../hosts) holds the installs (<dir>/<host>), the checkpoints
(<dir>/models) and the records the fuzz and soak write (<dir>/records). Standard library only; the checks
that need numpy/Pillow (rows, controlnet) run with the host's venv python.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hosts as H  # noqa: E402

CHECKS = {
    # name: (script relative to tools/real_hosts, needs the host's venv python, passes --url, passes --log)
    "rows": ("checks/rows.py", False, True, False),
    "dit": ("checks/dit.py", False, True, False),
    "hires-pag": ("check_hires_pag.py", False, True, False),
    "neighbours": ("check_neighbours.py", False, True, True),
    "controlnet": ("controlnet/check_controlnet.py", True, True, False),
    "selfcheck": (None, False, True, False),
}


def parse(argv=None):
    """The options; what follows a lone `--` goes to the build script, the host or the check (args.extra)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    ap = argparse.ArgumentParser(prog="harness.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts-dir", help="installs, checkpoints and records (default $SEG_HOSTS_DIR, else "
                                        "<checkout>/../hosts)")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("hosts", help="list the host descriptions")

    def with_host(name, help_):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--host", required=True, choices=sorted(H.HOSTS))
        p.add_argument("--port", type=int, help="default: the host's own")
        return p

    b = with_host("build", "build the host under <hosts-dir>/<host>")
    s = with_host("start", "start the host in the background and wait until it serves")
    s.add_argument("--checkpoint", default=H.SD15_CHECKPOINT)
    s.add_argument("--probe", action="store_true", help="load the harness's probe extension")
    s.add_argument("--tiny-dit", action="store_true",
                   help="Forge-style hosts: load forge/tiny_dit, which sizes Flux/Chroma/T5 from the tiny checkpoints")
    with_host("stop", "stop the server the harness started on that port")
    f = with_host("fuzz", "send generated SEG argument payloads; see fuzz.py")
    f.add_argument("--seed", type=int)
    f.add_argument("--count", type=int)
    f.add_argument("--payloads", help="write the payloads here (default <hosts-dir>/records/fuzz-<host>-<seed>.jsonl)")
    f.add_argument("--replay", help="send the payloads of this JSONL instead of generating them")
    f.add_argument("--only", help="comma-separated payload numbers (i) to send")
    k = with_host("soak", "many mixed jobs in one server lifetime; see soak.py")
    k.add_argument("--jobs", type=int)
    k.add_argument("--seed", type=int)
    k.add_argument("--seg-off", action="store_true", help="the same jobs with SEG off (the memory control)")
    k.add_argument("--interrupt-delay", type=float, default=2.0)
    c = with_host("check", "one of the checks: " + ", ".join(CHECKS))
    c.add_argument("name", choices=sorted(CHECKS))
    args = ap.parse_args(argv)
    args.extra = extra
    if hasattr(args, "host"):
        args.port = args.port or H.host(args.host).port
    if getattr(args, "only", None):
        args.only = {int(x) for x in args.only.split(",") if x.strip()}
    return args


def url(args):
    return f"http://127.0.0.1:{args.port}"


def records_dir(root: Path) -> Path:
    path = root / "records"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cmd_hosts(args, root):
    for h in H.HOSTS.values():
        built = (h.dest(root) / ("BUILT" if not h.background else "venv")).exists()
        print(f"{h.name:10s} {h.title:38s} port {h.port}  families {', '.join(h.families)}  "
              f"{'built' if built else 'not built'} at {h.dest(root)}")
        if h.notes:
            print(f"{'':10s} {h.notes}")


def start_argv(h, args, root):
    """The start script's command line for this host (fixed args from the description, then ours)."""
    argv = ["bash", str(H.HERE / h.start[0]), *h.start[1:], "--dest", str(h.dest(root)), "--port", str(args.port),
            "--models", str(root / "models")]
    extra = list(args.extra or [])
    if h.background:
        argv += ["--checkpoint", args.checkpoint]
    else:  # Forge-style start scripts take host flags only; without --ckpt the host loads config.json's last model
        extra = ["--ckpt", str(root / "models" / args.checkpoint), *extra]
    if args.probe:
        argv += ["--probe"] if not h.background else []
    if getattr(args, "tiny_dit", False):
        if h.background:
            raise SystemExit(f"--tiny-dit is for Forge-style hosts; {h.name} sizes its transformer from the keys")
        argv += ["--tiny-dit"]
    if extra:
        argv += ["--", *extra]
    return argv


def cmd_build(args, root):
    h = H.host(args.host)
    argv = ["bash", str(H.HERE / h.build[0]), *h.build[1:], "--dest", str(h.dest(root)), *(args.extra or [])]
    return subprocess.call(argv)


def cmd_start(args, root):
    h = H.host(args.host)
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # threads wait without spinning on the shared cores
    if h.background:
        if args.probe:  # A1111's start script has no --probe: link the probe as build.sh --probe does
            link = h.dest(root) / "extensions" / "seg-probe"
            if not link.exists():
                link.symlink_to(H.HERE / "a1111" / "probe")
        return subprocess.call(start_argv(h, args, root), env=env)
    serve = [sys.executable, str(H.HERE / "serve.py")]
    pidfile, log = h.pidfile(root, args.port), h.log(root, args.port)
    rc = subprocess.call(serve + ["start", "--pidfile", str(pidfile), "--log", str(log), "--lock", "shared",
                                  "--", *start_argv(h, args, root)], env=env)
    if rc:
        return rc
    return subprocess.call(serve + ["wait", "--url", url(args), "--pidfile", str(pidfile)])


def cmd_stop(args, root):
    h = H.host(args.host)
    return subprocess.call([sys.executable, str(H.HERE / "serve.py"), "stop", "--pidfile",
                            str(h.pidfile(root, args.port))])


def _api(args):
    import common
    return common.Api(url(args), timeout=3600)


def advertised_labels(api):
    """{param name: [labels]} of the choice controls, as /sdapi/v1/script-info advertises them."""
    import common
    from lib_seg import params as P
    info = api.get("/sdapi/v1/script-info").json
    entry = next(s for s in info if s.get("name") == common.SEG_API_NAME and not s.get("is_img2img"))
    by_label = {p.label: p.name for p in P.PARAMS}
    out = {}
    for arg in entry["args"]:
        name = by_label.get(arg.get("label"))
        if name and P.PARAM_BY_NAME[name].kind == "choice" and arg.get("choices"):
            out[name] = list(arg["choices"])
    return out


def _write_summary(path, summary):
    with open(path, "w") as f:
        json.dump(summary, f, indent=1, default=str)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("failed",)}, indent=1, default=str))


def cmd_fuzz(args, root):
    import fuzz
    h = H.host(args.host)
    api = _api(args)
    seed = args.seed if args.seed is not None else fuzz.SEED
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    rec = records_dir(root)
    if args.replay:
        payloads = fuzz.read(args.replay)
        labels = None
    else:
        labels = advertised_labels(api)
        payloads = fuzz.generate(seed, args.count or fuzz.COUNT, labels)
        path = args.payloads or str(rec / f"fuzz-{h.name}-{seed}.jsonl")
        fuzz.write(payloads, path)
        print(f"{len(payloads)} payloads (seed {seed}, labels {labels}) written to {path}", flush=True)
    results = rec / f"fuzz-{h.name}-{stamp}-results.jsonl"
    summary = fuzz.run(api, h, payloads, str(results), h.log(root, args.port), args.only)
    summary.update(host=h.name, seed=seed, results=str(results), labels=labels, finished=stamp)
    _write_summary(rec / f"fuzz-{h.name}-{stamp}-summary.json", summary)
    ok = summary["failures"] == 0 and all(summary["identical_after"].values())
    return 0 if ok else 1


def cmd_soak(args, root):
    import soak
    h = H.host(args.host)
    api = _api(args)
    job_list = soak.jobs(args.seed if args.seed is not None else soak.SEED, args.jobs or soak.COUNT,
                         seg_off=args.seg_off)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    rec = records_dir(root)
    tag = "soak-off" if args.seg_off else "soak"
    results = rec / f"{tag}-{h.name}-{stamp}-jobs.jsonl"
    summary = soak.run(api, h, job_list, str(results), h.pidfile(root, args.port), h.log(root, args.port),
                       args.interrupt_delay)
    summary.update(host=h.name, results=str(results), seg_off=args.seg_off, finished=stamp)
    _write_summary(rec / f"{tag}-{h.name}-{stamp}-summary.json", summary)
    ok = (summary["answered_200"] == summary["jobs"] and summary["first_reproduced"]
          and summary["tracebacks"] == 0)
    return 0 if ok else 1


def check_argv(args, root):
    h = H.host(args.host)
    script, venv, pass_url, pass_log = CHECKS[args.name]
    extra = list(args.extra or [])
    if args.name == "selfcheck":
        return [sys.executable, "-m", "lib_seg.selfcheck", "--url", url(args), *extra]
    python = str(h.dest(root) / "venv" / "bin" / "python") if venv else sys.executable
    argv = [python, str(H.HERE / script), "--url", url(args)]
    if pass_log and "--log" not in extra:
        argv += ["--log", str(h.log(root, args.port))]
    if args.name in ("rows", "controlnet") and h.name != "a1111" and "--forge" not in extra:
        argv += ["--forge"]
    if args.name == "dit":
        argv += ["--host", h.name]
        import common
        pid = common.server_pid(h.pidfile(root, args.port))
        if pid and "--pid" not in extra:
            argv += ["--pid", str(pid)]
    return argv + extra


def cmd_check(args, root):
    return subprocess.call(check_argv(args, root), cwd=str(H.CHECKOUT))


def main(argv=None):
    args = parse(argv)
    root = H.hosts_dir(args.hosts_dir)
    fn = {"hosts": cmd_hosts, "build": cmd_build, "start": cmd_start, "stop": cmd_stop, "fuzz": cmd_fuzz,
          "soak": cmd_soak, "check": cmd_check}[args.command]
    return fn(args, root) or 0


if __name__ == "__main__":
    sys.exit(main())
