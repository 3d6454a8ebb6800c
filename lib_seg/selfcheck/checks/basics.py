"""The extension is there, changes the image, reproduces it from infotext and named args, refuses a bad
value, and leaves nothing behind."""
from lib_seg.selfcheck.checks.replays import excuse, replay_difference
from lib_seg.selfcheck.images import NO_EFFECT, changes, compare, describe_difference
from lib_seg.selfcheck.payloads import SEG_API_NAME, SEG_ARG_NAMES, SEG_BAD_SIGMA, SEG_ON_NAMED


def check_listed(sc):
    reply = sc.get("scripts", "/sdapi/v1/scripts")
    if reply.status != 200 or not isinstance(reply.json, dict):
        return "FAIL", f"/sdapi/v1/scripts: HTTP {reply.status}: {reply.message()}", {}
    where = [tab for tab in ("txt2img", "img2img") if SEG_API_NAME in (reply.json.get(tab) or [])]
    if not where:
        return ("FAIL", f"'{SEG_API_NAME}' not in /sdapi/v1/scripts: is the extension installed and enabled, "
                        "the WebUI restarted, and --seg-disable not set?", {})
    counts = []
    for entry in sc.script_info or []:
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


def check_changes(sc):
    base, seg = sc.base(), sc.seg()
    stats = compare(base.images[0], seg.images[0])
    keys = "SEG keys in infotext" if "SEG scale:" in seg.infotext() else "NO SEG keys in infotext"
    status = "PASS" if changes(stats) else "FAIL"
    return status, f"{describe_difference(stats, NO_EFFECT)}; {keys}", {"difference": stats}


def check_infotext(sc):
    seg = sc.seg()
    if "SEG scale:" not in seg.infotext():
        return "FAIL", "the SEG image's infotext has no 'SEG scale' (nothing to reproduce from)", {}
    again = sc.replay("SEG from infotext", seg)
    stats = compare(seg.images[0], again.images[0])
    if stats["identical"]:
        return "PASS", "bit-identical to the SEG image", {"difference": stats}
    detail = f"differs from the SEG image: {describe_difference(stats)}"
    if compare(sc.base().images[0], again.images[0])["identical"]:
        detail += " (identical to the image without SEG: SEG was not restored)"
    _, gained = replay_difference(seg, again)
    if gained:
        return "WARN", excuse(detail, gained), {"difference": stats, "gained_keys": gained}
    return "FAIL", detail, {"difference": stats}


def check_named(sc):
    seg = sc.seg()
    named = sc.generate("SEG named", sc.payload(SEG_ON_NAMED))
    stats = compare(seg.images[0], named.images[0])
    status = "PASS" if stats["identical"] else "FAIL"
    return status, ("bit-identical" if stats["identical"] else describe_difference(stats)), {"difference": stats}


def check_refusal(sc):
    reply = sc.post("bad sigma", "/sdapi/v1/txt2img", sc.payload(SEG_BAD_SIGMA))
    alive = sc.get("after refusal", "/sdapi/v1/options", timeout=60)
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


def check_after(sc):
    base = sc.base()
    after = sc.generate("no SEG (after)", sc.payload())
    stats = compare(base.images[0], after.images[0])
    if stats["identical"]:
        return "PASS", "bit-identical to the first image without SEG", {"difference": stats}
    return "FAIL", f"differs from the first image without SEG: {describe_difference(stats)}", {"difference": stats}
