"""What every harness command shares: the self-check's API client and pixel comparison (imported from
lib_seg.selfcheck, not copied), a raw-body POST for payloads plain JSON cannot express (duplicated keys), the
server's console log read from where the last look stopped, and the server's resident memory.
Standard library only (Pillow and numpy are used by lib_seg.selfcheck.images when present)."""
from __future__ import annotations

import json
import os
import re
import sys
import time

from hosts import CHECKOUT

if str(CHECKOUT) not in sys.path:
    sys.path.insert(0, str(CHECKOUT))

from lib_seg.selfcheck.client import Api, Reply, Unreachable  # noqa: E402,F401 (Unreachable: for the commands)
from lib_seg.selfcheck.images import compare, decode_image, describe_difference, changes  # noqa: E402,F401
from lib_seg.selfcheck.payloads import SEG_API_NAME  # noqa: E402,F401


def post_raw(api: Api, path: str, body: bytes, timeout=None) -> Reply:
    """POST `body` as it is (Api.post encodes a Python object, which cannot hold a key twice)."""
    return api.send("POST", path, body, timeout)


class Log:
    """The server's console log; ``new()`` returns what was written since the last call."""

    def __init__(self, path):
        self.path = str(path) if path else None
        self.pos = os.path.getsize(self.path) if self.path and os.path.exists(self.path) else 0

    def new(self, settle=0.0, limit=10.0) -> str:
        """settle > 0: first wait until the log has not grown for `settle` seconds (at most `limit`). A host
        prints an error's traceback after it has answered (Forge: the 500 arrives before its console lines), and
        the lines must be read with the request that caused them, not with the next one."""
        if not self.path or not os.path.exists(self.path):
            return ""
        if settle > 0:
            deadline, size, still = time.monotonic() + limit, -1, time.monotonic()
            while time.monotonic() < deadline:
                now = os.path.getsize(self.path)
                if now != size:
                    size, still = now, time.monotonic()
                elif time.monotonic() - still >= settle:
                    break
                time.sleep(0.05)
        with open(self.path, "rb") as f:
            f.seek(self.pos)
            data = f.read()
        self.pos += len(data)
        return data.decode("utf-8", "replace")


def tracebacks(text: str) -> list:
    """The exception line of each Python traceback in `text`, for the record. A1111 indents the tracebacks it
    prints for API errors, and prints a chained exception's traceback too (one line each)."""
    out = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("Traceback (most recent call last)"):
            j = i + 1
            while j < len(lines) and not _EXCEPTION_LINE.match(lines[j]):
                j += 1
            out.append(lines[j].strip()[:300] if j < len(lines) else "(truncated)")
    return out


_EXCEPTION_LINE = re.compile(r"^\s*[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b")


def server_pid(pidfile) -> int | None:
    """The WebUI's own process in the group serve.py started (the recorded PID may be flock or nice)."""
    try:
        with open(pidfile) as f:
            pgid = json.load(f)["pgid"]
    except (OSError, ValueError, KeyError):
        return None
    best = None
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            rss = rss_mb(int(pid))
        except (OSError, ValueError, IndexError):
            continue
        if rss is not None and (best is None or rss > best[1]):
            best = (int(pid), rss)
    return best[0] if best else None


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def peak_rss_mb(pid: int) -> int:
    """The largest peak resident memory (VmHWM, MiB) of pid and its descendants (pid may be a wrapper)."""
    peak, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/status") as f:
                peak = max([peak] + [int(line.split()[1]) for line in f if line.startswith("VmHWM")])
            with open(f"/proc/{current}/task/{current}/children") as f:
                todo += [int(child) for child in f.read().split()]
        except OSError:
            pass
    return peak // 1024


def images(reply: Reply):
    return [decode_image(b) for b in reply.json["images"]]


def infotext(reply: Reply) -> str:
    try:
        return json.loads(reply.json["info"])["infotexts"][0]
    except (KeyError, ValueError, TypeError, IndexError):
        return ""


def short(text, limit=200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ---------------------------------------------------------------- the harness's probe extension

def probe_reset(api) -> bool:
    """Clear the probe's record (A1111's probe: /seg-probe/reset, Forge/reForge's: /seg-probe/clear).
    False when no probe is loaded."""
    for path in ("/seg-probe/reset", "/seg-probe/clear"):
        if api.post(path, {}).status == 200:
            return True
    return False


def probe_calls(api):
    """Every UNet call the probe saw since the reset, one dict per call whatever the host: rows, latent (h, w),
    step (A1111: the denoiser's step; Forge/reForge: the sigma), checkpoint (A1111 only), fingerprint (hash of
    row 0's latent), seg_rows ([start, stop] of the SEG rows) and labels (each row's cond/uncond label), the last
    two Forge/reForge only. None without a probe."""
    reply = api.get("/seg-probe/calls")
    if reply.status != 200 or not isinstance(reply.json, dict):
        return None
    out = []
    for c in reply.json.get("calls", []):
        if isinstance(c, dict):
            out.append({"rows": c["rows"], "latent": tuple(c["latent"]), "step": c.get("sigma"),
                        "checkpoint": None, "fingerprint": c.get("x0"), "seg_rows": c.get("seg_rows"),
                        "labels": c.get("cond_or_uncond")})
        else:
            step, rows, h, w, ckpt, *rest = c
            out.append({"rows": rows, "latent": (h, w), "step": step, "checkpoint": ckpt,
                        "fingerprint": rest[0] if rest else None, "seg_rows": None, "labels": None})
    return out


def steps_of(calls):
    """Consecutive calls of one sampler step (same step, latent size and checkpoint) grouped together."""
    groups = []
    for c in calls or []:
        key = (c["step"], c["latent"], c["checkpoint"])
        if groups and groups[-1][0] == key:
            groups[-1][1].append(c)
        else:
            groups.append((key, [c]))
    return [g for _, g in groups]


def fraction_over(a, b, levels):
    """The fraction of pixels where some channel differs by more than `levels` (images of one size)."""
    if a.size != b.size:
        return 1.0
    try:
        import numpy as np
        x = np.frombuffer(a.rgb, np.uint8).astype(np.int16).reshape(-1, 3)
        y = np.frombuffer(b.rgb, np.uint8).astype(np.int16).reshape(-1, 3)
        return float((np.abs(x - y).max(axis=1) > levels).mean())
    except ImportError:
        n = len(a.rgb) // 3
        return sum(1 for i in range(n) if max(abs(a.rgb[3 * i + k] - b.rgb[3 * i + k]) for k in range(3)) > levels) / n


def max_abs(a, b) -> int:
    """The largest difference of any channel of any pixel, in grey levels (images of one size)."""
    if a.size != b.size:
        return 255
    try:
        import numpy as np
        return int(np.abs(np.frombuffer(a.rgb, np.uint8).astype(np.int16)
                          - np.frombuffer(b.rgb, np.uint8).astype(np.int16)).max())
    except ImportError:
        return max(abs(x - y) for x, y in zip(a.rgb, b.rgb))
