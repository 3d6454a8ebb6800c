"""Start, wait for, and stop a WebUI host (A1111, Forge, reForge) in the background. Standard library only.

    serve.py start --pidfile F --log L [--cwd DIR] [--lock shared|exclusive] [--env K=V ...] -- CMD ...
    serve.py wait  --url http://127.0.0.1:7860 [--script "Smoothed Energy Guidance (SEG)"] [--timeout 1200]
                   [--no-txt2img] [--pidfile F --log-ready TEXT]
    serve.py stop  --pidfile F
    serve.py status --pidfile F

`start` runs CMD in a new process group (session) and records its PID, process group and command line
in the pidfile. With --lock it holds the shared memory lock of the team's machine
(flock on /tmp/seg-mem.lock) for exactly as long as the server lives.
`wait` says so while the server is queued for the memory lock (that time does not count against
--timeout), then returns when the API answers, the script is listed for txt2img and img2img, /sdapi/v1/script-info
answers (the scripts' default args are computed; Forge answers /sdapi/v1/* before that), and a tiny
txt2img (64 px, 1 step, no script args) succeeds; it fails early if the server process died.
`stop` ends only the process group it started (SIGTERM, then SIGKILL after 30 s), and refuses when the
PID now belongs to another command.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Api, Unreachable  # noqa: E402  (the self-check's client: the one API client of the harness)

LOCK = "/tmp/seg-mem.lock"


def _read(pidfile):
    try:
        with open(pidfile) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _start_ticks(pid):
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _ours(rec):
    """True when the recorded PID is alive and is still the process we started.

    Compared by start time, not command line: a wrapper such as `nice` execs into another
    command under the same PID, while a recycled PID has a later start time."""
    ticks = _start_ticks(rec["pid"])
    return ticks is not None and ticks == rec.get("start_ticks")


def start(args):
    rec = _read(args.pidfile)
    if rec and _ours(rec):
        sys.exit(f"already running: pid {rec['pid']} ({args.pidfile})")
    argv = list(args.cmd)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        sys.exit("start: give the command after --")
    if args.lock:
        argv = ["flock", "-s" if args.lock == "shared" else "-x", LOCK] + argv
    env = dict(os.environ)
    for kv in args.env or []:
        k, _, v = kv.partition("=")
        env[k] = v
    os.makedirs(os.path.dirname(os.path.abspath(args.log)), exist_ok=True)
    log = open(args.log, "ab")
    log_offset = log.seek(0, os.SEEK_END)  # where this run's output begins (the log is appended to)
    proc = subprocess.Popen(argv, cwd=args.cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    rec = {"pid": proc.pid, "pgid": proc.pid, "argv": argv, "log": os.path.abspath(args.log),
           "started": time.time(), "start_ticks": _start_ticks(proc.pid), "log_offset": log_offset}
    os.makedirs(os.path.dirname(os.path.abspath(args.pidfile)), exist_ok=True)
    with open(args.pidfile, "w") as f:
        json.dump(rec, f)
    print(f"started pid {proc.pid} (process group {proc.pid}); log {args.log}")


def _answer(reply):
    """The JSON of a 200 answer; anything else is not ready yet."""
    if reply.status != 200:
        raise RuntimeError(f"HTTP {reply.status}: {reply.message()}")
    if reply.json is None:
        raise ValueError("the answer is not JSON")
    return reply.json


def _waiting_for_lock(rec):
    """True while the recorded process is `flock` that has not started its command yet (no child):
    another helper holds the memory lock in a conflicting mode."""
    if not rec or os.path.basename(str(rec.get("argv", [""])[0])) != "flock":
        return False
    try:
        with open(f"/proc/{rec['pid']}/task/{rec['pid']}/children") as f:
            return not f.read().split()
    except OSError:
        return False


def _logged(rec, text):
    """True when this run's part of the server log contains `text`."""
    try:
        with open(rec["log"], "rb") as f:
            f.seek(rec.get("log_offset", 0))
            return text.encode() in f.read()
    except (OSError, KeyError, TypeError):
        return False


def wait(args):
    rec = _read(args.pidfile) if args.pidfile else None
    t0 = time.time()
    deadline = t0 + args.timeout
    stage = "API"
    last = ""
    api = Api(args.url)
    while time.time() < deadline:
        if rec and not _ours(rec):
            sys.exit(f"server process {rec['pid']} exited while waiting ({stage}); see {rec['log']}")
        if _waiting_for_lock(rec):
            # Time spent queued for the lock is not start-up time: the timeout counts from the lock.
            if last != "lock":
                print(f"  waiting for the memory lock {LOCK} (held by another server in a conflicting mode)",
                      flush=True)
                last = "lock"
            deadline = time.time() + args.timeout
            time.sleep(3)
            continue
        if last == "lock":
            print(f"  got the memory lock after {time.time() - t0:.0f} s", flush=True)
            t0, last = time.time(), ""
        if args.log_ready and stage == "API" and not _logged(rec, args.log_ready):
            # A1111 serves HTTP before it adds its API middleware; a request in that window makes starlette
            # build the app, and A1111's create_api then dies ("Cannot add middleware after an application
            # has started"). Ask nothing until the server says it is up.
            if last != "log":
                print(f"  waiting for {args.log_ready!r} in the server log", flush=True)
                last = "log"
            time.sleep(3)
            continue
        try:
            if stage == "API":
                scripts = _answer(api.get("/sdapi/v1/scripts", timeout=10))
                want = args.script.lower()
                if args.script and not all(want in scripts.get(k, []) for k in ("txt2img", "img2img")):
                    sys.exit(f"the API answers but {args.script!r} is not listed: {scripts}")
                stage = "script-info"
            if stage == "script-info":
                info = _answer(api.get("/sdapi/v1/script-info", timeout=10))
                if args.script and not any(s.get("name") == args.script.lower() for s in info):
                    raise RuntimeError("script-info does not list the script yet")
                stage = "txt2img"
            if stage == "txt2img":
                if not args.no_txt2img:
                    r = _answer(api.post("/sdapi/v1/txt2img", {"prompt": "ready", "width": 64, "height": 64,
                                                               "steps": 1, "cfg_scale": 1, "seed": 1}, timeout=600))
                    if not r.get("images"):
                        raise RuntimeError(f"txt2img returned no image: {str(r)[:200]}")
                print(f"ready after {time.time() - t0:.0f} s: {args.url}")
                return
        except (Unreachable, RuntimeError, ValueError) as e:
            if str(e) != last:
                print(f"  waiting ({stage}): {e}", flush=True)
                last = str(e)
        time.sleep(3)
    sys.exit(f"not ready after {args.timeout} s (stage {stage})")


def stop(args):
    rec = _read(args.pidfile)
    if not rec:
        print(f"no pidfile {args.pidfile}: nothing to stop")
        return
    if not _ours(rec):
        print(f"pid {rec['pid']} is not running the command we started: nothing stopped")
        os.remove(args.pidfile)
        return
    pgid = rec["pgid"]
    os.killpg(pgid, signal.SIGTERM)
    for _ in range(60):
        if not _ours(rec):
            break
        time.sleep(0.5)
    else:
        os.killpg(pgid, signal.SIGKILL)
    # the group may still hold children (the WebUI under flock): end what is left of that group only
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.remove(args.pidfile)
    print(f"stopped process group {pgid}")


def status(args):
    rec = _read(args.pidfile)
    print("running" if rec and _ours(rec) else "not running")
    sys.exit(0 if rec and _ours(rec) else 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="action", required=True)
    s = sub.add_parser("start")
    s.add_argument("--pidfile", required=True)
    s.add_argument("--log", required=True)
    s.add_argument("--cwd")
    s.add_argument("--lock", choices=["shared", "exclusive"])
    s.add_argument("--env", action="append", help="K=V added to the environment")
    s.add_argument("cmd", nargs=argparse.REMAINDER)
    w = sub.add_parser("wait")
    w.add_argument("--url", default="http://127.0.0.1:7860")
    w.add_argument("--pidfile", help="fail early when this server dies")
    w.add_argument("--script", default="Smoothed Energy Guidance (SEG)", help="'' to skip the script checks")
    w.add_argument("--timeout", type=float, default=1200)
    w.add_argument("--no-txt2img", action="store_true")
    w.add_argument("--log-ready", help="send no request before this text is in the server's log (needs --pidfile)")
    for name in ("stop", "status"):
        sub.add_parser(name).add_argument("--pidfile", required=True)
    args = ap.parse_args()
    {"start": start, "wait": wait, "stop": stop, "status": status}[args.action](args)


if __name__ == "__main__":
    main()
