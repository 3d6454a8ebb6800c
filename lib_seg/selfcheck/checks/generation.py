"""SEG changes the image under other generation settings: CFG 1, a batch, a non-square size, the hires fix,
img2img. Each is the same request without and with SEG."""
from lib_seg.selfcheck.images import NO_EFFECT, changes, compare, describe_difference, plain_b64
from lib_seg.selfcheck.payloads import hires_fields


def pair_check(sc, label, expect_size=None, count=1, path="/sdapi/v1/txt2img", **changes_):
    """The same request without and with SEG: SEG must change every image (of the expected size) and
    be named in the SEG image's infotext."""
    off, on = sc.pair(label, path, **changes_)
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


def check_cfg1(sc):
    return pair_check(sc, "CFG 1", cfg_scale=1)


def check_batch(sc):
    return pair_check(sc, "batch 2", count=2, batch_size=2)


def check_nonsquare(sc):
    width = max(64, int(round(sc.size * 1.5 / 64.0)) * 64)
    if width == sc.size:
        width += 64
    return pair_check(sc, "non-square", expect_size=(width, sc.size), width=width)


def check_hires(sc):
    final = int(sc.size * 1.5)
    return pair_check(sc, "hires", expect_size=(final, final), **hires_fields(sc.steps))


def check_img2img(sc):
    init = plain_b64(sc.base().b64[0])
    return pair_check(sc, "img2img", path="/sdapi/v1/img2img", init_images=[init], denoising_strength=0.6)
