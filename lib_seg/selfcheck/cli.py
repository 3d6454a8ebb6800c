"""The command line and the printed report (``python -m lib_seg.selfcheck``)."""
import argparse
import json
import sys

from lib_seg.selfcheck.client import Api, Stop, Unreachable
from lib_seg.selfcheck.images import CHANGED_FRACTION, CHANGED_LEVELS
from lib_seg.selfcheck.payloads import CFG, SAMPLER, SEED
from lib_seg.selfcheck.runner import SelfCheck


class Report:
    """Prints the table (header, one line per check, summary) to `out` as the run goes, and keeps it in the
    record's "table"."""

    def __init__(self, record, out):
        self.record, self.out = record, out

    def emit(self, text):
        self.record.setdefault("table", []).append(text)
        if self.out is not None:
            print(text, file=self.out, flush=True)

    def header(self, record):
        host, model = record["host"], record["model"]
        self.emit(f"SEG self-check against {record['url']}")
        version = f" {host['version']}" if host.get("version") else ""
        self.emit(f"host:  {host.get('name', '?')}{version} ({host.get('evidence', '')})")
        layout = (f", UNet {model['layout']}, m0 has {model.get('middle_transformers')}" if model.get("middle_transformers")
                  else f", blocks {model['layout']}" if model.get("layout") else "")
        self.emit(f"model: {model.get('checkpoint')} -> {model.get('family')}{layout}")
        settings, client = record["settings"], record["client"]
        self.emit(f"run:   {settings['size']} px, {settings['steps']} steps, {SAMPLER}"
                  f"{', scheduler ' + settings['scheduler'] if settings.get('scheduler') else ''}, seed {SEED}, CFG {CFG:g}; "
                  f"client Python {client['python']}, Pillow {'yes' if client['pillow'] else 'no'}, "
                  f"numpy {'yes' if client['numpy'] else 'no'}")
        self.emit(f"       'changes' = at least {100 * CHANGED_FRACTION:g} % of pixels differ by more than "
                  f"{CHANGED_LEVELS} grey level")

    def line(self, check):
        self.emit(f"{check['name']:<38} {check['status']:<4}  {check['detail']}")

    def summary(self, record):
        counts = record["summary"]
        warned = f", {counts['WARN']} warned (other extensions)" if counts["WARN"] else ""
        self.emit(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped{warned} "
                  f"in {counts['seconds']:.0f} s")


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m lib_seg.selfcheck",
        description="Check the SEG extension in a running WebUI (started with --api) through its HTTP API.")
    parser.add_argument("--url", default="http://127.0.0.1:7860", help="the WebUI's address (default %(default)s)")
    parser.add_argument("--checkpoint", help="switch the WebUI to this checkpoint first (title or file name; "
                                             "the WebUI keeps it selected afterwards)")
    parser.add_argument("--size", type=int, default=128,
                        help="image side in px (default %(default)s; >= 128 so the middle block has more than "
                             "one token; 512 or 1024 on a GPU)")
    parser.add_argument("--steps", type=int, default=6, help="sampling steps (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per request (default %(default)s)")
    keys = [check.__name__[len("check_"):] for _, check in SelfCheck.CHECKS]
    parser.add_argument("--only", help="comma separated checks to run (the listing always runs): " + ", ".join(keys))
    parser.add_argument("--auth", help="USER:PASSWORD when the WebUI runs with --api-auth")
    parser.add_argument("--json", action="store_true", help="print the full record as JSON on stdout "
                                                            "(the table goes to stderr)")
    args = parser.parse_args(argv)
    if args.size < 64 or args.size % 8 or args.steps < 1:
        parser.error("--size must be a multiple of 8 and >= 64; --steps >= 1")
    only = [k.strip() for k in args.only.split(",") if k.strip()] if args.only else None
    if only and set(only) - set(keys):
        parser.error(f"--only: unknown {', '.join(sorted(set(only) - set(keys)))}; known: {', '.join(keys)}")

    check = SelfCheck(Api(args.url, args.timeout, args.auth), size=args.size, steps=args.steps,
                      checkpoint=args.checkpoint, only=only)
    try:
        status = check.run(Report(check.record, sys.stderr if args.json else sys.stdout))
    except Unreachable as error:
        check.record["error"] = str(error)
        print(f"SEG self-check: cannot reach the WebUI: {error}\n"
              f"Is it running, with --api, at {args.url}?", file=sys.stderr)
        status = 2
    except Stop as error:
        check.record["error"] = str(error)
        print(f"SEG self-check: {error}", file=sys.stderr)
        status = 2
    check.record["exit_status"] = status
    if args.json:
        print(json.dumps(check.record, indent=1, default=str))
    return status
