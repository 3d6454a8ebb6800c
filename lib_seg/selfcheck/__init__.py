"""Self-check of the SEG extension in a running WebUI, through its HTTP API.

    python -m lib_seg.selfcheck --url http://127.0.0.1:7860 [--checkpoint NAME] [--size 128] [--steps 6] [--json]
    python lib_seg/selfcheck --url ...               (the same, from a checkout: the folder runs too)

Drives AUTOMATIC1111 1.9/1.10, Forge or reForge started with ``--api`` and prints one PASS/FAIL/WARN/SKIP line
per check (the README's "Self-check against your WebUI" says what each means; WARN: another extension's doing).
Exit status: 0 when nothing failed, 1 when a check failed, 2 when the checks could not run at all (server
down, API off, bad option).

Runs in any Python 3.8+ outside the WebUI: standard library only; Pillow and numpy are used when present.
It imports nothing from the WebUI or from the rest of lib_seg.

The package, by concern: ``client`` (HTTP), ``images`` (decoding, pixel comparison), ``detect`` (host and
model), ``payloads`` (what is sent), ``checks`` (the lines, by feature), ``runner`` (one run: shared
generations, the record, the loop), ``cli`` (options and the printed table).
"""
from lib_seg.selfcheck.checks.xyz import xyz_args
from lib_seg.selfcheck.cli import main
from lib_seg.selfcheck.client import Api, Reply, RequestFailed, Skip, Stop, Unreachable
from lib_seg.selfcheck.detect import FAMILIES, detect_host
from lib_seg.selfcheck.images import (CHANGED_FRACTION, CHANGED_LEVELS, ImageError, Pixels, changes, compare,
                                      decode_image, decode_png, describe_difference)
from lib_seg.selfcheck.payloads import (SEG_API_NAME, SEG_ARG_NAMES, SEG_BAD_SIGMA, SEG_ON, SEG_ON_NAMED,
                                        SEG_SIGMA_AXIS, XYZ_SCRIPT)
from lib_seg.selfcheck.runner import SelfCheck

__all__ = ["Api", "CHANGED_FRACTION", "CHANGED_LEVELS", "FAMILIES", "ImageError", "Pixels", "Reply", "RequestFailed",
           "SEG_API_NAME", "SEG_ARG_NAMES", "SEG_BAD_SIGMA", "SEG_ON", "SEG_ON_NAMED", "SEG_SIGMA_AXIS", "SelfCheck",
           "Skip", "Stop", "Unreachable", "XYZ_SCRIPT", "changes", "compare", "decode_image", "decode_png",
           "describe_difference", "detect_host", "main", "xyz_args"]
