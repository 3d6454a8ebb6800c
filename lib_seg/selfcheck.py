"""Self-check of the SEG extension in a running WebUI, through its HTTP API.

    python -m lib_seg.selfcheck --url http://127.0.0.1:7860 [--checkpoint NAME] [--size 128] [--steps 6] [--json]
    python lib_seg/selfcheck.py --url ...            (the same, from a checkout)

Drives AUTOMATIC1111 1.9/1.10, Forge or reForge started with ``--api`` and prints one PASS/FAIL/SKIP line per
check (the README's "Self-check against your WebUI" says what each means). Exit status: 0 when nothing
failed, 1 when a check failed, 2 when the checks could not run at all (server down, API off, bad option).

Runs in any Python 3.8+ outside the WebUI: standard library only; Pillow and numpy are used when present
(Pillow decodes any format the WebUI returns, numpy speeds up the pixel statistics). It imports nothing from
the WebUI or from the rest of lib_seg, so it also runs as a plain file.

Pixel claims: "identical" means the decoded pixels are equal byte for byte (PNG metadata is ignored: it
carries the infotext, which legitimately differs); "changes" means that at least CHANGED_FRACTION of the
pixels differ by more than CHANGED_LEVELS grey levels in some channel.
"""
import argparse
import base64
import hashlib
import io
import json
import os
import platform
import re
import struct
import sys
import time
import urllib.error
import urllib.request
import zlib

try:  # optional: decodes JPEG/WebP too, and is faster than the PNG decoder below
    from PIL import Image as _PIL_Image
except Exception:  # noqa: BLE001 - any failure to import means "not available"
    _PIL_Image = None
try:  # optional: faster pixel statistics
    import numpy as _np
except Exception:  # noqa: BLE001
    _np = None

# The extension's API name and the first parameters of its positional order: lib_seg.ui.API_NAME and
# lib_seg.params.API_NAMES (restated, not imported, so that this file runs anywhere; tests/test_selfcheck.py
# keeps them equal). Later parameters (perturbation mode, hires override) are appended and take defaults.
SEG_API_NAME = "smoothed energy guidance (seg)"
SEG_ARG_NAMES = ("enabled", "scale", "sigma", "layers", "start", "end", "rescale")
SEG_SIGMA_AXIS = "SEG sigma"    # the X/Y/Z axis label (lib_seg.params label of "sigma")
XYZ_SCRIPT = "x/y/z plot"       # the X/Y/Z plot script's API name in all three hosts

# A pixel "changed" when some channel differs by more than CHANGED_LEVELS (0-255 scale): fp32 round-off from a
# differently sized batch moves a pixel by at most one level. "Changes the image": at least CHANGED_FRACTION
# of the pixels changed. Requests are deterministic (identical requests give identical pixels, which the
# infotext and named-args lines show), so any such change is SEG's doing. Measured in real A1111/reForge at
# 128 px, 3-4 steps: 99.9 % with the harness's random SD1.5 checkpoint, 0.3-3 % with an earlier, weaker one.
CHANGED_LEVELS = 1
CHANGED_FRACTION = 0.001

PROMPT = "a lighthouse on a rocky coast at sunset, photograph"
NEGATIVE = "blurry"
SEED = 20240801
CFG = 5.0
SAMPLER = "Euler"         # deterministic (no ancestral noise), present in every host
SEG_ON = [True, 3, "inf", "mid", 0, 1, 0]   # positional, in SEG_ARG_NAMES order
SEG_ON_NAMED = [dict(zip(SEG_ARG_NAMES, SEG_ON))]
# Runs "without SEG" say so explicitly: a user's ui-config.json may have changed the UI default (which is what
# the API uses for arguments a request leaves out).
SEG_OFF = [False]
# Named fields added after the first seven (lib_seg.params: mode, hires, hr_*), sent by name only.
SEG_PAG_NAMED = [dict(SEG_ON_NAMED[0], mode="identity")]
SEG_HIRES_OWN_NAMED = [dict(SEG_ON_NAMED[0], hires="own", hr_scale=3, hr_sigma=1, hr_layers="mid")]
SEG_BAD_SIGMA = [True, 3, -1, "mid"]
LAYER_PROBE = "m0.99"     # a transformer no model has: the refusal lists the model's layout
XYZ_SIGMAS = ["1", "inf"]


class Unreachable(Exception):
    """The server does not answer (connection refused, timeout, DNS)."""


class Stop(Exception):
    """The checks cannot run against this server (API off, not a WebUI, unknown checkpoint)."""


class RequestFailed(Exception):
    """A request answered with a non-200 status; the message is the server's own."""

    def __init__(self, label, reply):
        self.reply = reply
        super().__init__(f"{label}: HTTP {reply.status}: {reply.message()}")


class Skip(Exception):
    """A check that cannot be made here; the message says why."""


class ImageError(Exception):
    pass


# ---------------------------------------------------------------- HTTP

class Reply:
    def __init__(self, status, body, seconds):
        self.status = status
        self.body = body
        self.seconds = seconds
        try:
            self.json = json.loads(body.decode("utf-8")) if body else None
        except ValueError:
            self.json = None

    def message(self, limit=300):
        """The server's error message: FastAPI's ``detail`` or A1111's ``errors`` (str of the exception)."""
        data = self.json
        text = ""
        if isinstance(data, dict):
            for key in ("detail", "errors", "error"):
                value = data.get(key)
                if value:
                    text = value if isinstance(value, str) else json.dumps(value)
                    break
        if not text:
            text = self.body.decode("utf-8", "replace") if self.body else "(empty answer)"
        text = " ".join(text.split())
        return text if len(text) <= limit else text[:limit - 3] + "..."


class Api:
    def __init__(self, url, timeout=600.0, auth=None):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            token = base64.b64encode(auth.encode("utf-8")).decode("ascii")
            self.headers["Authorization"] = "Basic " + token

    def call(self, method, path, payload=None, timeout=None):
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        request = urllib.request.Request(self.url + path, data=data, headers=self.headers, method=method)
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                return Reply(response.status, response.read(), time.monotonic() - started)
        except urllib.error.HTTPError as error:
            return Reply(error.code, error.read() or b"", time.monotonic() - started)
        except (urllib.error.URLError, OSError) as error:  # refused, reset, timeout, unknown host
            reason = getattr(error, "reason", error)
            raise Unreachable(f"{method} {self.url}{path}: {reason}") from None

    def get(self, path, timeout=None):
        return self.call("GET", path, timeout=timeout)

    def post(self, path, payload, timeout=None):
        return self.call("POST", path, payload, timeout=timeout)


# ---------------------------------------------------------------- images

class Pixels:
    """Decoded RGB pixels (8 bit), compared byte for byte."""

    def __init__(self, width, height, rgb):
        self.width, self.height, self.rgb = width, height, bytes(rgb)

    @property
    def size(self):
        return (self.width, self.height)

    @property
    def sha256(self):
        return hashlib.sha256(struct.pack(">II", self.width, self.height) + self.rgb).hexdigest()


def decode_image(b64):
    data = base64.b64decode(b64.split(",", 1)[1] if b64.startswith("data:") else b64)
    if _PIL_Image is not None:
        with _PIL_Image.open(io.BytesIO(data)) as image:
            rgb = image.convert("RGB")
            return Pixels(rgb.width, rgb.height, rgb.tobytes())
    return decode_png(data)


def decode_png(data):
    """8-bit, non-interlaced PNG (what the WebUIs write) to RGB, with the standard library only."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ImageError("the WebUI returned a non-PNG image (samples format jpg/webp?): install Pillow "
                         "(pip install pillow) or set Settings -> Saving images -> File format to png")
    pos, idat, header = 8, [], None
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat.append(chunk)
        elif kind == b"IEND":
            break
    if header is None:
        raise ImageError("PNG without IHDR")
    width, height, depth, color, _, _, interlace = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(color)
    if depth != 8 or channels is None or interlace:
        raise ImageError(f"PNG of bit depth {depth}, colour type {color}, interlace {interlace}: install Pillow")
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    out = bytearray()
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind = raw[start]
        line = bytearray(raw[start + 1:start + 1 + stride])
        _unfilter(kind, line, prev, channels)
        out += line
        prev = line
    if channels == 3:
        return Pixels(width, height, out)
    rgb = bytearray(width * height * 3)
    for i in range(width * height):
        v = out[i * channels:i * channels + channels]
        rgb[i * 3:i * 3 + 3] = v[:3] if channels == 4 else bytes((v[0], v[0], v[0]))
    return Pixels(width, height, rgb)


def _unfilter(kind, line, prev, bpp):
    n = len(line)
    if kind == 0:
        return
    if kind == 1:
        for i in range(bpp, n):
            line[i] = (line[i] + line[i - bpp]) & 255
    elif kind == 2:
        for i in range(n):
            line[i] = (line[i] + prev[i]) & 255
    elif kind == 3:
        for i in range(n):
            left = line[i - bpp] if i >= bpp else 0
            line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
    elif kind == 4:
        for i in range(n):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    else:
        raise ImageError(f"PNG filter type {kind}")


def compare(a, b):
    """Difference statistics of two images of one size: mean |delta| over all channel values (grey levels)
    and the fraction of pixels where some channel differs by more than CHANGED_LEVELS."""
    if a.size != b.size:
        return {"identical": False, "size_a": a.size, "size_b": b.size, "mean_abs": None, "changed": None}
    if a.rgb == b.rgb:
        return {"identical": True, "mean_abs": 0.0, "changed": 0.0}
    if _np is not None:
        x = _np.frombuffer(a.rgb, dtype=_np.uint8).astype(_np.int16).reshape(-1, 3)
        y = _np.frombuffer(b.rgb, dtype=_np.uint8).astype(_np.int16).reshape(-1, 3)
        d = _np.abs(x - y)
        mean_abs, changed = float(d.mean()), float((d.max(axis=1) > CHANGED_LEVELS).mean())
    else:
        total = changed_count = 0
        ra, rb = a.rgb, b.rgb
        for i in range(0, len(ra), 3):
            d0, d1, d2 = abs(ra[i] - rb[i]), abs(ra[i + 1] - rb[i + 1]), abs(ra[i + 2] - rb[i + 2])
            total += d0 + d1 + d2
            if max(d0, d1, d2) > CHANGED_LEVELS:
                changed_count += 1
        mean_abs, changed = total / len(ra), changed_count / (len(ra) // 3)
    return {"identical": False, "mean_abs": mean_abs, "changed": changed}


def describe_difference(stats, identical="bit-identical"):
    if stats.get("mean_abs") is None:
        return f"sizes differ: {stats['size_a']} vs {stats['size_b']}"
    if stats["identical"]:
        return identical
    return f"mean |Δ| {stats['mean_abs']:.3g} grey levels, {100 * stats['changed']:.3g} % of pixels changed"


NO_EFFECT = "bit-identical with and without SEG: SEG had no effect"


def changes(stats):
    return stats.get("changed") is not None and stats["changed"] >= CHANGED_FRACTION


# ---------------------------------------------------------------- the run

class Generation:
    def __init__(self, images, b64, info):
        self.images, self.b64, self.info = images, b64, info

    def infotext(self, index=0):
        texts = self.info.get("infotexts") or []
        return texts[index] if index < len(texts) else ""


class SelfCheck:
    CHECKS = (
        ("SEG script listed", "check_listed"),
        ("SEG changes the image", "check_changes"),
        ("infotext reproduces the SEG image", "check_infotext"),
        ("positional and named args agree", "check_named"),
        ("bad value refused (sigma -1)", "check_refusal"),
        ("CFG 1", "check_cfg1"),
        ("batch 2", "check_batch"),
        ("non-square size", "check_nonsquare"),
        ("hires fix", "check_hires"),
        ("img2img", "check_img2img"),
        ("X/Y/Z sweep over SEG sigma", "check_xyz"),
        ("PAG mode (identity attention)", "check_pag"),
        ("hires pass with own settings", "check_hires_own"),
        ("no SEG after SEG runs: bit-identical", "check_after"),
    )

    def __init__(self, api, size=128, steps=6, checkpoint=None, out=None, only=None):
        self.api = api
        self.only = only
        self.size = size
        self.steps = steps
        self.checkpoint = checkpoint
        self.out = out
        self.record = {
            "tool": "lib_seg.selfcheck", "url": api.url,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "client": {"python": platform.python_version(), "pillow": _PIL_Image is not None,
                       "numpy": _np is not None},
            "settings": {"size": size, "steps": steps, "seed": SEED, "cfg_scale": CFG, "sampler": SAMPLER,
                         "changed_levels": CHANGED_LEVELS, "changed_fraction": CHANGED_FRACTION},
            "host": {}, "model": {}, "checks": [], "requests": [],
        }
        self._cache = {}
        self.script_info = None

    # ------------------------------------------------------------ requests

    def _log(self, label, method, path, payload, reply, images=None, error=None):
        fields = {}
        if payload:
            for key in ("seed", "steps", "cfg_scale", "width", "height", "batch_size", "sampler_name", "enable_hr",
                        "hr_scale", "denoising_strength", "script_name", "script_args", "alwayson_scripts",
                        "styles", "hr_additional_modules"):
                if key in payload:
                    fields[key] = payload[key]
            if "infotext" in payload:
                fields["infotext"] = payload["infotext"]
            if "init_images" in payload:
                fields["init_images"] = [hashlib.sha256(x.encode()).hexdigest()[:16] for x in payload["init_images"]]
        entry = {"label": label, "method": method, "path": path, "fields": fields,
                 "status": reply.status if reply else None,
                 "seconds": round(reply.seconds, 3) if reply else None}
        if images is not None:
            entry["images"] = [{"size": list(p.size), "sha256": p.sha256} for p in images]
        if reply is not None and reply.status != 200:
            entry["message"] = reply.message(2000)
        if error:
            entry["error"] = error
        self.record["requests"].append(entry)

    def get(self, label, path, timeout=None):
        reply = self.api.get(path, timeout=timeout)
        self._log(label, "GET", path, None, reply)
        return reply

    def generate(self, label, payload, path="/sdapi/v1/txt2img"):
        reply = self.api.post(path, payload)
        if reply.status != 200:
            self._log(label, "POST", path, payload, reply)
            raise RequestFailed(label, reply)
        data = reply.json if isinstance(reply.json, dict) else {}
        b64 = data.get("images") or []
        try:
            images = [decode_image(x) for x in b64]
        except ImageError as error:
            self._log(label, "POST", path, payload, reply, error=str(error))
            raise Skip(str(error)) from None
        try:
            info = json.loads(data.get("info") or "{}")
        except ValueError:
            info = {}
        self._log(label, "POST", path, payload, reply, images=images)
        if "version" in info and "version" not in self.record["host"]:
            self.record["host"]["version"] = info["version"]
        return Generation(images, b64, info if isinstance(info, dict) else {})

    def payload(self, seg=SEG_OFF, **changes_):
        body = {"prompt": PROMPT, "negative_prompt": NEGATIVE, "seed": SEED, "subseed": -1,
                "subseed_strength": 0, "steps": self.steps, "cfg_scale": CFG, "width": self.size,
                "height": self.size, "sampler_name": SAMPLER, "batch_size": 1, "n_iter": 1,
                "send_images": True, "save_images": False}
        body["alwayson_scripts"] = {SEG_API_NAME: {"args": seg}}
        body.update(changes_)
        return body

    def cached(self, key, label, payload, path="/sdapi/v1/txt2img"):
        """One generation per key, reused by every check that needs it (a failure is remembered too)."""
        if key not in self._cache:
            try:
                self._cache[key] = self.generate(label, payload, path)
            except (RequestFailed, Skip) as error:
                self._cache[key] = error
        value = self._cache[key]
        if isinstance(value, Exception):
            raise value
        return value

    def base(self):
        return self.cached("base", "no SEG (before)", self.payload())

    def seg(self):
        return self.cached("seg", "SEG positional", self.payload(SEG_ON))

    def pair(self, label, path="/sdapi/v1/txt2img", **changes_):
        off = self.generate(f"{label}, no SEG", self.payload(**changes_), path)
        on = self.generate(f"{label}, SEG", self.payload(SEG_ON, **changes_), path)
        return off, on

    # ------------------------------------------------------------ header

    def probe(self):
        """Host, checkpoint and model layout. Raises Unreachable or Stop."""
        reply = self.get("options", "/sdapi/v1/options")
        if reply.status == 404:
            raise Stop(f"{self.api.url}/sdapi/v1/options answers 404: start the WebUI with --api "
                       "(in COMMANDLINE_ARGS)")
        if reply.status != 200 or not isinstance(reply.json, dict):
            raise Stop(f"{self.api.url}/sdapi/v1/options: HTTP {reply.status}: {reply.message()} "
                       "(is this a WebUI started with --api?)")
        options = reply.json
        models = self.get("sd-models", "/sdapi/v1/sd-models")
        model_list = models.json if models.status == 200 and isinstance(models.json, list) else []
        if self.checkpoint:
            self.switch_checkpoint(model_list)
            options = self.get("options", "/sdapi/v1/options").json or options
        info = self.get("script-info", "/sdapi/v1/script-info")
        self.script_info = info.json if info.status == 200 and isinstance(info.json, list) else None
        host = self.record["host"]
        host.update(detect_host(options, self.xyz_info()))
        host["samples_format"] = options.get("samples_format")
        title = options.get("sd_model_checkpoint")
        model = self.record["model"]
        model["checkpoint"] = title
        for item in model_list:
            if isinstance(item, dict) and title in (item.get("title"), item.get("model_name")):
                model["filename"] = item.get("filename")
                model["config"] = item.get("config")
        model.update(self.probe_layout())
        try:  # the first image, needed anyway; its info names the host's version for the header
            self.base()
        except (RequestFailed, Skip):
            pass  # reported by the checks that need it

    def switch_checkpoint(self, model_list):
        wanted = self.checkpoint
        for item in model_list:
            names = (item.get("title"), item.get("model_name"), os.path.basename(item.get("filename") or ""))
            if wanted in names:
                reply = self.api.post("/sdapi/v1/options", {"sd_model_checkpoint": item.get("title")})
                self._log("switch checkpoint", "POST", "/sdapi/v1/options", {}, reply)
                if reply.status != 200:
                    raise Stop(f"switching to checkpoint {wanted!r}: HTTP {reply.status}: {reply.message()}")
                self.record["model"]["switched_to"] = item.get("title")
                return
        titles = ", ".join(str(item.get("title")) for item in model_list) or "none listed"
        raise Stop(f"--checkpoint {wanted!r} is not among the WebUI's checkpoints: {titles}")

    def probe_layout(self):
        """The UNet layout, read from the extension's refusal of a layer this model lacks (it names the
        blocks the loaded model has), and what it means."""
        payload = self.payload([True, 3, "inf", LAYER_PROBE], steps=1)
        reply = self.api.post("/sdapi/v1/txt2img", payload)
        self._log("layout probe", "POST", "/sdapi/v1/txt2img", payload, reply)
        if reply.status == 200:
            return {"layout": None, "family": "unknown (the extension ran a layer spec no UNet has: SEG skipped "
                                               "for this model, or the extension is not loaded)"}
        text = reply.message(2000)
        blocks = re.search(r"has (d0[^()]*?)\)?\s*$", text) or re.search(r"has (d0[^()]*)", text)
        middle = re.search(r"transformers (m0\.[0-9]+(?:-[0-9]+)?)", text)
        layout = blocks.group(1).strip() if blocks else None
        transformers = middle.group(1) if middle else None
        family = FAMILIES.get((layout, transformers), "unknown layout" if layout else f"unknown ({text[:120]})")
        return {"layout": layout, "middle_transformers": transformers, "family": family,
                "probe_status": reply.status}

    def header_lines(self):
        host, model = self.record["host"], self.record["model"]
        lines = [f"SEG self-check against {self.api.url}"]
        version = f" {host['version']}" if host.get("version") else ""
        lines.append(f"host:  {host.get('name', '?')}{version} ({host.get('evidence', '')})")
        layout = f", UNet {model['layout']}, m0 has {model.get('middle_transformers')}" if model.get("layout") else ""
        lines.append(f"model: {model.get('checkpoint')} -> {model.get('family')}{layout}")
        settings = self.record["settings"]
        client = self.record["client"]
        lines.append(f"run:   {settings['size']} px, {settings['steps']} steps, {SAMPLER}, seed {SEED}, CFG {CFG:g}; "
                     f"client Python {client['python']}, Pillow {'yes' if client['pillow'] else 'no'}, "
                     f"numpy {'yes' if client['numpy'] else 'no'}")
        lines.append(f"       'changes' = at least {100 * CHANGED_FRACTION:g} % of pixels differ by more than "
                     f"{CHANGED_LEVELS} grey level")
        return lines

    # ------------------------------------------------------------ checks

    def run(self):
        started = time.monotonic()
        self.probe()
        for line in self.header_lines():
            self.emit(line)
        listed = True
        for name, method in self.CHECKS:
            if self.only and method != "check_listed" and method[len("check_"):] not in self.only:
                continue
            t0 = time.monotonic()
            data = {}
            if not listed:
                status, detail = "SKIP", "the SEG script is not loaded"
            else:
                try:
                    status, detail, data = getattr(self, method)()
                except Skip as why:
                    status, detail = "SKIP", str(why)
                except RequestFailed as error:
                    status, detail = "FAIL", str(error)
                except Unreachable as error:
                    status, detail = "FAIL", f"server stopped answering: {error}"
                    listed = False
            if method == "check_listed" and status != "PASS":
                listed = False
            check = {"name": name, "status": status, "detail": detail, "seconds": round(time.monotonic() - t0, 2)}
            check.update(data)
            self.record["checks"].append(check)
            self.emit(f"{name:<38} {status:<4}  {detail}")
        counts = {s: sum(c["status"] == s for c in self.record["checks"]) for s in ("PASS", "FAIL", "SKIP")}
        self.record["summary"] = dict(counts, seconds=round(time.monotonic() - started, 1))
        self.emit(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped "
                  f"in {self.record['summary']['seconds']:.0f} s")
        return 1 if counts["FAIL"] else 0

    def emit(self, line):
        self.record.setdefault("table", []).append(line)
        if self.out is not None:
            print(line, file=self.out, flush=True)

    def check_listed(self):
        reply = self.get("scripts", "/sdapi/v1/scripts")
        if reply.status != 200 or not isinstance(reply.json, dict):
            return "FAIL", f"/sdapi/v1/scripts: HTTP {reply.status}: {reply.message()}", {}
        where = [tab for tab in ("txt2img", "img2img") if SEG_API_NAME in (reply.json.get(tab) or [])]
        if not where:
            return ("FAIL", f"'{SEG_API_NAME}' not in /sdapi/v1/scripts: is the extension installed and enabled, "
                            "the WebUI restarted, and --seg-disable not set?", {})
        counts = []
        for entry in self.script_info or []:
            if isinstance(entry, dict) and entry.get("name") == SEG_API_NAME:
                counts.append(len(entry.get("args") or []))
        detail = f"in {' and '.join(where)}"
        if counts:
            detail += f"; script-info: {counts[0]} args"
            if any(n < len(SEG_ARG_NAMES) for n in counts):  # later parameters are appended after these
                return "FAIL", detail + f" (expected at least {len(SEG_ARG_NAMES)}: {', '.join(SEG_ARG_NAMES)})", {}
        if len(where) < 2:
            return "FAIL", detail + " only", {}
        return "PASS", detail, {}

    def check_changes(self):
        base, seg = self.base(), self.seg()
        stats = compare(base.images[0], seg.images[0])
        keys = "SEG keys in infotext" if "SEG scale:" in seg.infotext() else "NO SEG keys in infotext"
        status = "PASS" if changes(stats) else "FAIL"
        return status, f"{describe_difference(stats, NO_EFFECT)}; {keys}", {"difference": stats}

    def check_infotext(self):
        seg = self.seg()
        text = seg.infotext()
        if "SEG scale:" not in text:
            return "FAIL", "the SEG image's infotext has no 'SEG scale' (nothing to reproduce from)", {}
        # styles: [] because Forge on gradio 4 fails an infotext request without it (harmless elsewhere).
        again = self.generate("SEG from infotext", {"infotext": text, "styles": [], "send_images": True,
                                                    "save_images": False})
        stats = compare(seg.images[0], again.images[0])
        if stats["identical"]:
            return "PASS", "bit-identical to the SEG image", {"difference": stats}
        detail = f"differs from the SEG image: {describe_difference(stats)}"
        if compare(self.base().images[0], again.images[0])["identical"]:
            detail += " (identical to the image without SEG: SEG was not restored)"
        return "FAIL", detail, {"difference": stats}

    def check_named(self):
        seg = self.seg()
        named = self.generate("SEG named", self.payload(SEG_ON_NAMED))
        stats = compare(seg.images[0], named.images[0])
        status = "PASS" if stats["identical"] else "FAIL"
        return status, ("bit-identical" if stats["identical"] else describe_difference(stats)), {"difference": stats}

    def check_refusal(self):
        payload = self.payload(SEG_BAD_SIGMA)
        reply = self.api.post("/sdapi/v1/txt2img", payload)
        self._log("bad sigma", "POST", "/sdapi/v1/txt2img", payload, reply)
        alive = self.get("after refusal", "/sdapi/v1/options", timeout=60)
        answers = "server answers afterwards" if alive.status == 200 else f"then /sdapi/v1/options: HTTP {alive.status}"
        data = {"refusal_status": reply.status, "refusal_message": reply.message(2000)}
        if reply.status == 200:
            return "FAIL", f"HTTP 200: sigma -1 was accepted; {answers}", data
        message = reply.message(160)
        names_field = "sigma" in message.lower()
        ok = reply.status == 422 and names_field and alive.status == 200
        problems = []
        if reply.status != 422:
            problems.append(f"HTTP {reply.status}, expected 422")
        if not names_field:
            problems.append("message does not name the field")
        detail = f"HTTP {reply.status}: {message}; {answers}"
        if problems:
            detail = "; ".join(problems) + " -- " + detail
        return ("PASS" if ok else "FAIL"), detail, data

    def _pair_check(self, label, expect_size=None, count=1, path="/sdapi/v1/txt2img", **changes_):
        """The same request without and with SEG: SEG must change every image (of the expected size) and
        be named in the SEG image's infotext."""
        off, on = self.pair(label, path, **changes_)
        if len(on.images) < count or len(off.images) < count:
            return "FAIL", f"expected {count} image(s), got {len(off.images)} without SEG, {len(on.images)} with", {}
        # the last `count` images: a host may put a grid first
        pairs = list(zip(off.images[-count:], on.images[-count:]))
        stats = [compare(a, b) for a, b in pairs]
        sizes = {p.size for p in on.images[-count:] + off.images[-count:]}
        detail = "; ".join(describe_difference(s, NO_EFFECT) for s in stats)
        ok = all(changes(s) for s in stats)
        if expect_size is not None:
            if sizes != {expect_size}:
                ok = False
                detail = f"image size {sorted(sizes)}, expected {expect_size}; " + detail
            else:
                detail = f"{expect_size[0]}x{expect_size[1]}: " + detail
        texts = on.info.get("infotexts") or []
        if texts and "SEG scale:" not in texts[-1]:
            ok = False
            detail += "; the SEG image's infotext has no SEG keys"
        return ("PASS" if ok else "FAIL"), detail, {"difference": stats}

    def check_cfg1(self):
        return self._pair_check("CFG 1", cfg_scale=1)

    def check_batch(self):
        return self._pair_check("batch 2", count=2, batch_size=2)

    def check_nonsquare(self):
        width = max(64, int(round(self.size * 1.5 / 64.0)) * 64)
        if width == self.size:
            width += 64
        return self._pair_check("non-square", expect_size=(width, self.size), width=width)

    def check_hires(self):
        final = int(self.size * 1.5)
        # hr_additional_modules: see hires_payload.
        return self._pair_check("hires", expect_size=(final, final), enable_hr=True, hr_scale=1.5,
                                hr_upscaler="Latent", hr_second_pass_steps=max(2, self.steps // 2),
                                denoising_strength=0.6, hr_additional_modules=["Use same choices"])

    def hires_payload(self, seg):
        # hr_additional_modules: Forge's API hires pass needs it; A1111 and reForge ignore the unknown field.
        return self.payload(seg, enable_hr=True, hr_scale=1.5, hr_upscaler="Latent",
                            hr_second_pass_steps=max(2, self.steps // 2), denoising_strength=0.6,
                            hr_additional_modules=["Use same choices"])

    def _from_infotext(self, label, generation, **fields):
        """The image regenerated from the generation's infotext (and ``fields``), compared with it."""
        # styles: [] because Forge on gradio 4 fails an infotext request without it (harmless elsewhere).
        again = self.generate(label, dict({"infotext": generation.infotext(), "styles": [], "send_images": True,
                                           "save_images": False}, **fields))
        return compare(generation.images[-1], again.images[-1])

    def check_pag(self):
        """Identity attention (PAG) in the SEG rows: changes the image, differs from SEG, round-trips through
        its infotext, and switching back to blur reproduces the earlier SEG image exactly."""
        pag = self.generate("PAG (identity)", self.payload(SEG_PAG_NAMED))
        problems = []
        vs_base = compare(self.base().images[0], pag.images[0])
        vs_seg = compare(self.seg().images[0], pag.images[0])
        if not changes(vs_base):
            problems.append(f"vs no SEG: {describe_difference(vs_base, 'bit-identical: PAG had no effect')}")
        if vs_seg["identical"]:
            problems.append("bit-identical to the SEG (blur) image: the mode was not used")
        if "SEG mode: identity" not in pag.infotext():
            problems.append("infotext lacks 'SEG mode: identity'")
        again = self._from_infotext("PAG from infotext", pag)
        if not again["identical"]:
            problems.append(f"from its infotext: {describe_difference(again)}")
        blur = self.generate("SEG (blur) after PAG", self.payload(SEG_ON))
        back = compare(self.seg().images[0], blur.images[0])
        if not back["identical"]:
            problems.append(f"blur after PAG differs from the earlier SEG image: {describe_difference(back)}")
        data = {"difference": vs_base, "difference_vs_seg": vs_seg}
        if problems:
            return "FAIL", "; ".join(problems), data
        return ("PASS", f"vs no SEG: {describe_difference(vs_base)}; differs from SEG; reproduced from its "
                        "infotext; blur afterwards = the SEG image", data)

    def check_hires_own(self):
        """The hires override: the second pass with its own sigma gives another hires image than the first
        pass's settings, and round-trips through its infotext. (That the first pass is untouched needs the
        intermediate latents: the real-host harness checks it with its probe.)"""
        same = self.generate("hires, SEG same", self.hires_payload(SEG_ON))
        own = self.generate("hires, SEG own (sigma 1)", self.hires_payload(SEG_HIRES_OWN_NAMED))
        problems = []
        diff = compare(same.images[-1], own.images[-1])
        if diff["identical"]:
            problems.append("bit-identical to the hires image with the first pass's settings: the override "
                            "was not used")
        for key in ("SEG hires: own", "SEG hires sigma: 1"):
            if key not in own.infotext():
                problems.append(f"infotext lacks '{key}'")
        if "SEG hires" in same.infotext():
            problems.append("the image without the override has 'SEG hires' keys in its infotext")
        # hr_sampler_name: A1111 1.10's infotext parser fills a missing "Hires sampler" with the UI's "Use same
        # sampler", which its API then rejects ("bad sampler name"); a field set in the request wins.
        again = self._from_infotext("hires own from infotext", own, hr_sampler_name=SAMPLER)
        if not again["identical"]:
            problems.append(f"from its infotext: {describe_difference(again)}")
        data = {"difference": diff}
        if problems:
            return "FAIL", "; ".join(problems), data
        return "PASS", f"vs first-pass settings: {describe_difference(diff)}; reproduced from its infotext", data

    def check_img2img(self):
        init = _plain_b64(self.base().b64[0])
        return self._pair_check("img2img", path="/sdapi/v1/img2img", init_images=[init], denoising_strength=0.6)

    def xyz_info(self):
        for entry in self.script_info or []:
            if isinstance(entry, dict) and entry.get("name") == XYZ_SCRIPT and not entry.get("is_img2img"):
                return entry
        return None

    def check_xyz(self):
        entry = self.xyz_info()
        if entry is None:
            raise Skip("no X/Y/Z plot script in /sdapi/v1/script-info")
        try:
            script_args = xyz_args(entry.get("args") or [], SEG_SIGMA_AXIS, XYZ_SIGMAS)
        except ValueError as error:
            return "FAIL", str(error), {}
        grid = self.generate("X/Y/Z sigma", self.payload(script_name=XYZ_SCRIPT, script_args=script_args))
        n = len(XYZ_SIGMAS)
        if len(grid.images) < n:
            return "FAIL", f"expected a grid and {n} cells, got {len(grid.images)} image(s)", {}
        cells = grid.images[-n:]
        texts = (grid.info.get("infotexts") or [])[-n:]
        problems = []
        # σ=inf with the other settings at their defaults is exactly the SEG image's request
        same = compare(self.seg().images[0], cells[XYZ_SIGMAS.index("inf")])
        if not same["identical"]:
            problems.append(f"σ=inf cell vs the SEG image: {describe_difference(same)}")
        # σ=1 must differ from no SEG and from σ=inf, if only slightly (requests are deterministic, so any
        # difference is the axis value at work): at 128 px SD1.5's middle grid is 2x2, where σ=1 blurs little
        one = compare(self.base().images[0], cells[0])
        if one["identical"]:
            problems.append("σ=1 cell is bit-identical to the image without SEG: the axis did not enable SEG")
        between = compare(cells[0], cells[1])
        if between["identical"]:
            problems.append("σ=1 and σ=inf cells are bit-identical: the axis value was not used")
        for sigma, text in zip(XYZ_SIGMAS, texts):
            if f"SEG sigma: {sigma}" not in text:
                problems.append(f"cell σ={sigma} infotext lacks 'SEG sigma: {sigma}'")
        data = {"xyz_args": script_args, "difference": between, "difference_sigma1_vs_no_seg": one}
        if problems:
            return "FAIL", "; ".join(problems), data
        return ("PASS", f"σ=inf cell = the SEG image; σ=1 vs no SEG: {describe_difference(one)}; "
                        f"vs σ=inf: {describe_difference(between)}", data)

    def check_after(self):
        base = self.base()
        after = self.generate("no SEG (after)", self.payload())
        stats = compare(base.images[0], after.images[0])
        if stats["identical"]:
            return "PASS", "bit-identical to the first image without SEG", {"difference": stats}
        return "FAIL", f"differs from the first image without SEG: {describe_difference(stats)}", {"difference": stats}


# The UNet layouts the extension reports (lib_seg.layers: blocks with self-attention; transformers in m0).
FAMILIES = {
    ("d0-d5, m0, u0-u8", "m0.0"): "SD1.x/SD2.x",
    ("d0-d3, m0, u0-u5", "m0.0-9"): "SDXL base",
    ("d0-d3, m0, u0-u5", "m0.0-3"): "SDXL refiner",
}


def detect_host(options, xyz_entry):
    """Which WebUI answers, from what its API exposes: option keys only Forge or reForge define, and the
    X/Y/Z script's argument count (reForge's run() takes 21 positional args, A1111's and Forge's 18)."""
    keys = set(options)
    xyz_count = len(xyz_entry.get("args") or []) if xyz_entry else None
    found = {"xyz_args": xyz_count}
    if any(k.startswith("reforge_") for k in keys):
        found.update(name="reForge", evidence="options reforge_*")
    elif "forge_preset" in keys or "forge_additional_modules" in keys:
        found.update(name="Forge", evidence="options forge_preset/forge_additional_modules")
    elif xyz_count == 21:
        found.update(name="reForge", evidence="X/Y/Z takes 21 args")
    elif any(k.startswith("forge_") for k in keys):
        found.update(name="Forge (older) or reForge", evidence="options forge_*")
    else:
        found.update(name="AUTOMATIC1111", evidence="no Forge/reForge options")
    if xyz_count is not None:
        found["evidence"] += f"; X/Y/Z takes {xyz_count} args"
    return found


def xyz_args(info_args, axis_label, values):
    """The X/Y/Z script's positional args, built by label from its /sdapi/v1/script-info entry so the same
    code serves every host's argument list: X = ``axis_label`` over ``values``, Y and Z = Nothing, sub-images
    returned after the grid. Axes with choices read the dropdown argument (the second "X values"), others the
    text argument; both are set."""
    labels = [a.get("label") for a in info_args]
    args = [a.get("value") for a in info_args]

    def put(label, value, occurrence=0, required=True):
        hits = [i for i, l in enumerate(labels) if l == label]
        if len(hits) <= occurrence:
            if required:
                raise ValueError(f"X/Y/Z script-info has no argument {label!r} (#{occurrence + 1}); got {labels}")
            return
        args[hits[occurrence]] = value

    if "X type" not in labels:
        raise ValueError(f"X/Y/Z script-info has no 'X type' argument; got {labels}")
    choices = [c[0] if isinstance(c, (list, tuple)) else c for c in info_args[labels.index("X type")].get("choices") or []]
    if axis_label not in choices:
        raise ValueError(f"no X/Y/Z axis {axis_label!r} (the extension adds it at startup); axes: {choices}")
    nothing = choices.index("Nothing") if "Nothing" in choices else 0
    put("X type", choices.index(axis_label))
    put("X values", ", ".join(values), 0)
    put("X values", list(values), 1)
    for axis in ("Y", "Z"):
        put(f"{axis} type", nothing)
        put(f"{axis} values", "", 0)
        put(f"{axis} values", [], 1, required=False)
    put("Include Sub Images", True)
    for label in ("Draw legend", "Include Sub Grids", "Keep -1 for seeds", "Vary seeds for X", "Vary seeds for Y",
                  "Vary seeds for Z", "Use text inputs instead of dropdowns", "Draw individual labels",
                  "Skip final grid generation"):
        put(label, False, required=False)
    for label in ("Grid margins (px)", "Items per grid (0 = default), for sequential grid generation."):
        put(label, 0, required=False)
    return args


def _plain_b64(b64):
    return b64.split(",", 1)[1] if b64.startswith("data:") else b64


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
    keys = [method[len("check_"):] for _, method in SelfCheck.CHECKS]
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
                      checkpoint=args.checkpoint, out=sys.stderr if args.json else sys.stdout, only=only)
    try:
        status = check.run()
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


if __name__ == "__main__":
    sys.exit(main())
