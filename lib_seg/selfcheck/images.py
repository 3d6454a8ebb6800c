"""Decoding the WebUI's images and comparing their pixels.

"Identical" means the decoded pixels are equal byte for byte (PNG metadata is ignored: it carries the
infotext, which legitimately differs); "changes" means that at least CHANGED_FRACTION of the pixels differ by
more than CHANGED_LEVELS grey levels in some channel. Pillow and numpy are used when present (Pillow decodes
any format the WebUI returns, numpy speeds up the statistics); without them a standard-library PNG decoder
and plain loops do the same.
"""
import base64
import hashlib
import io
import struct
import zlib

try:  # optional: decodes JPEG/WebP too, and is faster than the PNG decoder below
    from PIL import Image as _PIL_Image
except Exception:  # noqa: BLE001 - any failure to import means "not available"
    _PIL_Image = None
try:  # optional: faster pixel statistics
    import numpy as _np
except Exception:  # noqa: BLE001
    _np = None

# A pixel "changed" when some channel differs by more than CHANGED_LEVELS (0-255 scale): fp32 round-off from a
# differently sized batch moves a pixel by at most one level. "Changes the image": at least CHANGED_FRACTION
# of the pixels changed. Requests are deterministic (identical requests give identical pixels, which the
# infotext and named-args lines show), so any such change is SEG's doing. Measured in real A1111/reForge at
# 128 px, 3-4 steps: 99.9 % with the harness's random SD1.5 checkpoint, 0.3-3 % with an earlier, weaker one.
CHANGED_LEVELS = 1
CHANGED_FRACTION = 0.001

NO_EFFECT = "bit-identical with and without SEG: SEG had no effect"


class ImageError(Exception):
    pass


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


def plain_b64(b64):
    """The base64 payload without a ``data:...;base64,`` prefix."""
    return b64.split(",", 1)[1] if b64.startswith("data:") else b64


def decode_image(b64):
    data = base64.b64decode(plain_b64(b64))
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


def changes(stats):
    return stats.get("changed") is not None and stats["changed"] >= CHANGED_FRACTION
