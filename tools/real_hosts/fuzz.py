"""API fuzz of SEG's arguments: generated payloads (fixed seed, written to JSONL so any one replays), sent to a
running host, each answer classified.

Pass rule per payload: HTTP 200, or 422 whose message names a SEG field (``(sigma)``, ``SEG layers``, ``SEG:``
...); never 500 from our code; no traceback in the console; the server answers the next request. A payload
the host itself cannot take (``args`` that is not a list: the host's ``init_script_args`` fails before any
extension runs) is expected to get the host's 500 and is counted apart ("host-500"), not fixed here.
Around the fuzz: a plain generation and a SEG generation before and after must be bit-identical.

Each answer is also compared with what lib_seg.params predicts for the same arguments as the host hands
them to the script (positional copy over the UI defaults, truncated to the script's controls): "valid"
should be 200 (or 422 from the model stage: a layer the model lacks), "invalid" 422 with that message.

``generate(seed, labels)`` is pure and deterministic (tests/test_real_hosts_fuzz.py).
"""
from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Mapping

import common  # puts the checkout on sys.path
from lib_seg import params as P  # noqa: E402

SEED = 20261205
COUNT = 520
NAMES = P.API_NAMES
KIND = {p.name: p.kind for p in P.PARAMS}
# A 64 px, 1-step txt2img: cheap, and every SEG code path up to the UNet call runs.
BASE = {"prompt": "fuzz", "negative_prompt": "", "seed": 1, "steps": 1, "cfg_scale": 5, "width": 64,
        "height": 64, "sampler_name": "Euler", "batch_size": 1, "n_iter": 1, "send_images": True,
        "save_images": False}

NAN, INF = float("nan"), float("inf")
WRONG_TYPES = [True, False, None, 0, 1, -1, 2, 3.5, "", " ", "abc", [], {}, [1], {"a": 1}, [None], "true", "yes",
               "1e3", "None", "null"]
SPECIAL = [NAN, INF, -INF, "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "-Infinity", "∞", "-∞", "+inf",
           "1e999", "-1e999", "INF", "iNf"]
EXTREME = [-1, -0.0, 0, 1e-320, 5e-324, 1e-300, 1e-9, 1e308, -1e308, 2 ** 63, 2 ** 64 + 1, -(2 ** 63) - 1,
           10 ** 30, 10 ** 400, -(10 ** 400), "1" + "0" * 400, "1" + "0" * 5000, 20.0000001, 1.0000001, 20, 0.5,
           "0x10", "1_000", " 3 ", "٣", "３", "1e-320"]
LONG = ["x" * 10240, "m0," * 3413, "d" + "9" * 10239, "1" * 10240, "mid" + " " * 10237, "é" * 5120,
        "d0-3, " * 1706, "\u202e" * 10240]
UNICODE = ["ｍｉｄ", "mid\x00", "\x00", "m\u200b0", "\u202emid", "mid\n", "mid\r\n", "\t", "🎨", "𝟘", "d０", "ı",
           "İnf", "Mid", "MID", "m0\u0301", "\x1b[31mred\x1b[0m", "\ud800", "\udfff\ud800", "\x7f", "mid\x08",
           "中", "m٠", "u٣"]
LAYERS = ["mid", "down", "up", "all", "joint", "single", "d0-3", "d0-d3", "m0", "u0.4", "d2.2-9", "d0-5, m0, u0-8",
          "m0.99", "d9", "u9", "j0", "s0", "d3-1", "d0.5-2", "d0-", "-d0", "d", "m0.0", "u8.0", "d0-3,,m0", ",",
          ", m0", "M0", "d1.0", "m0-0", "d0-99999999999999999999", "u0.0-99999999999", "mid, mid", "none", "d00"]


def _nested(depth):
    value = "mid"
    for i in range(depth):
        value = [value] if i % 2 == 0 else {"k": value}
    return value


NESTED = [[[1]], [["mid"]], {"x": [1, {"y": 2}]}, _nested(8), _nested(40), {"enabled": True}, [True, 3],
          [[True, 3, "inf"]], {"scale": {"scale": 3}}]


def choice_values(name, labels):
    """The choice's values, its advertised labels (from script-info, else lib_seg.params) and near misses."""
    param = P.PARAM_BY_NAME[name]
    shown = list(labels.get(name) or param.choice_labels)
    out = list(param.choices) + shown
    out += [v.upper() for v in shown] + [f"  {v.lower()} " for v in shown]
    out += ["Blur ", "pag", "PAG", "identity attention", "Smoothed energy", "skip", "orthogonal", "OSEG",
            "Same", "own settings", "no seg", "none", ""]
    return out


def pool_groups(name, labels):
    groups = [WRONG_TYPES, SPECIAL, EXTREME, LONG, UNICODE, NESTED]
    if KIND[name] == "layers":
        groups.append(LAYERS)
    if KIND[name] == "choice":
        groups.append(choice_values(name, labels))
    return groups


def pools(name, labels):
    return [v for group in pool_groups(name, labels) for v in group]


def valid_value(rng, name, labels):
    kind = KIND[name]
    if kind == "bool":
        return rng.choice([True, False, "true", "false", 0, 1])
    if kind == "float":
        p = P.PARAM_BY_NAME[name]
        return rng.choice([p.minimum, p.maximum, round(rng.uniform(p.minimum, p.maximum), 3)])
    if kind == "sigma":
        return rng.choice(["inf", 1, 2, 0.5, 16, "4", "∞", 1e6])
    if kind == "layers":
        return rng.choice(["mid", "all", "down", "up", "d1.0", "m0", "u0-2", "d0-3, m0"])
    param = P.PARAM_BY_NAME[name]
    return rng.choice(list(param.choices[:2]) + list((labels.get(name) or param.choice_labels)[:2]))


DEFAULTS_POSITIONAL = [True, 3, "inf", "mid", 0, 1, 0, "blur", "same", 3, "inf", "mid", "blur"]
assert len(DEFAULTS_POSITIONAL) == len(NAMES)


def generate(seed=SEED, count=COUNT, labels=None):
    """`count` payloads (at least one of every kind), deterministic for (seed, labels). Each is a dict:
    i, kind, what (a short description), and either "args" (the alwayson args value, or the key absent:
    "no-args") or "raw_args" (JSON text, for duplicated keys) or "infotext"."""
    labels = labels or {}
    rng = random.Random(seed)
    out = []

    def add(kind, what, **fields):
        out.append(dict(kind=kind, what=what, **fields))

    def field_value(name, value, by_name):
        if by_name:
            add("named", f"{name}={_show(value)}", args=[{"enabled": True, name: value}])
        else:
            args = list(DEFAULTS_POSITIONAL)
            args[NAMES.index(name)] = value
            add("positional", f"[{NAMES.index(name)}] {name}={_show(value)}", args=args)

    # every field: a few values of every pool, by name or by position
    for name in NAMES:
        for group in pool_groups(name, labels):
            for value in rng.sample(group, min(len(group), 2)):
                field_value(name, value, rng.random() < 0.5)
    # every value of a pool where it matters most: numbers for the numeric fields, text for the layers
    for name, group in (("scale", SPECIAL + EXTREME), ("sigma", SPECIAL + EXTREME), ("layers", LAYERS + LONG + UNICODE),
                        ("mode", choice_values("mode", labels))):
        for j, value in enumerate(group):
            field_value(name, value, j % 2 == 0)
    # the advertised choice labels, positionally (as a client built from script-info sends them) and by name
    for name in ("mode", "hires", "hr_mode"):
        for label in (labels.get(name) or P.PARAM_BY_NAME[name].choice_labels):
            args = list(DEFAULTS_POSITIONAL)
            args[NAMES.index(name)] = label
            if name == "hr_mode":
                args[NAMES.index("hires")] = "own"
            add("label", f"{name} label {label!r} positional", args=args)
            add("label", f"{name} label {label!r} named",
                args=[{"enabled": True, name: label, **({"hires": "own"} if name == "hr_mode" else {})}])
    # too many and too few positional values
    for n in (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 20, 100, 1000):
        args = (DEFAULTS_POSITIONAL * (n // len(NAMES) + 1))[:n]
        add("length", f"{n} positional values", args=args)
    add("length", "14 values, the 14th garbage", args=DEFAULTS_POSITIONAL + [{"x": NAN}])
    add("length", "14 values, the 14th a 31-digit integer", args=DEFAULTS_POSITIONAL + [10 ** 30])
    add("length", "two objects", args=[{"enabled": True}, {"scale": -1}])
    add("length", "object then garbage", args=[{"enabled": True, "sigma": 2}, "junk", NAN])
    add("length", "object second", args=[True, {"scale": 3}])
    # args that are not a list: the host's init_script_args
    for value in (None, 5, 1.5, True, "abc", "", {"enabled": True}, {}, {"0": True}):
        add("not-a-list", f"args={_show(value)}", args=value)
    add("no-args", "no args key")
    # unknown and duplicated names
    for key in ("sigmaa", "", "x" * 10240, "__class__", "Enabled", "SEG scale", "scale ", "hr_", "🎨", "\x00",
                "enabled\n"):
        add("unknown", f"unknown name {_show(key)}", args=[{"enabled": True, key: 1}])
    for name, first, second in (("scale", 3, -1), ("scale", -1, 3), ("enabled", False, True), ("sigma", "inf", "nan"),
                                ("sigma", "nan", 2), ("layers", "mid", "d99"), ("mode", "blur", "PAG"),
                                ("mode", "Identity attention (PAG)", "blur"), ("hires", "own", "bogus")):
        raw = ('[{"enabled": true, ' + f'"{name}": {json.dumps(first)}, "{name}": {json.dumps(second)}' + "}]")
        add("duplicate", f"{name} twice: {first!r} then {second!r}", raw_args=raw)
    # random valid settings, with start > end sometimes
    for _ in range(30):
        values = {name: valid_value(rng, name, labels) for name in NAMES}
        values["enabled"] = True
        if values["mode"] == "skip":
            values["mode"] = "blur"
        if values["hr_mode"] == "skip":
            values["hr_mode"] = "identity"
        if rng.random() < 0.5:
            add("valid", "named valid " + _show(values, 80), args=[values])
        else:
            add("valid", "positional valid " + _show(values, 80), args=[values[n] for n in NAMES])
    # infotext replays with SEG keys holding garbage (the paste path)
    keys = [p.infotext for p in P.PARAMS if p.infotext]
    for _ in range(24):
        key = rng.choice(keys)
        param = P.PARAM_BY_INFOTEXT[key]
        value = rng.choice(pools(param.name, labels))
        text = value if isinstance(value, str) else json.dumps(value)
        text = text.replace("\n", " ")[:2000]
        add("infotext", f"infotext {key}: {_show(text)}",
            infotext=f"fuzz\nSteps: 1, Sampler: Euler, CFG scale: 5, Seed: 1, Size: 64x64, SEG scale: 3, {key}: {text}")
    # random mutations of valid bases until `count`
    all_values = [v for name in NAMES for v in pools(name, labels)]
    while len(out) < count:
        values = {name: valid_value(rng, name, labels) for name in NAMES}
        values["enabled"] = True
        for name in rng.sample(NAMES, rng.randint(1, 3)):
            values[name] = rng.choice(all_values)
        if rng.random() < 0.5:
            add("mutation", "named " + _show(values, 80), args=[values])
        else:
            add("mutation", "positional " + _show(values, 80), args=[values[n] for n in NAMES])
    rng.shuffle(out)
    for i, p in enumerate(out):
        p["i"] = i
    return out


def _show(value, limit=40):
    text = json.dumps(value, ensure_ascii=True, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def dumps(payload) -> str:
    """One JSONL line (NaN and infinities as Python's json writes them, which Python's json reads back)."""
    return json.dumps(payload, ensure_ascii=True, allow_nan=True)


def write(payloads, path):
    with open(path, "w") as f:
        for p in payloads:
            f.write(dumps(p) + "\n")


def read(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def body_of(payload, host=None):
    """The request body as bytes: the base txt2img plus the payload's SEG args (or infotext)."""
    import hosts as H
    body = dict(BASE)
    if "infotext" in payload:
        body = {"infotext": payload["infotext"], "send_images": True, "save_images": False}
        if host is not None:
            body = H.request(host, body)
        return json.dumps(body, allow_nan=True).encode()
    if payload["kind"] == "no-args":
        body["alwayson_scripts"] = {common.SEG_API_NAME: {}}
        return json.dumps(body).encode()
    text = json.dumps(body, allow_nan=True)[:-1]
    args = payload["raw_args"] if "raw_args" in payload else json.dumps(payload["args"], allow_nan=True)
    text += ', "alwayson_scripts": {"%s": {"args": %s}}}' % (common.SEG_API_NAME, args)
    return text.encode()


# ---------------------------------------------------------------- prediction

def host_view(args, n_controls, defaults):
    """What the host hands the script (A1111/Forge init_script_args): the UI defaults with the first
    min(n_controls, len(args)) values replaced. Raises TypeError/KeyError where the host does."""
    script_args = list(defaults)
    for idx in range(min(n_controls, len(args))):
        script_args[idx] = args[idx]
    return script_args


def seg_view(script_args):
    """lib_seg.ui.settings_for without X/Y/Z: a leading object alone is the request."""
    args = list(script_args)
    if args and isinstance(args[0], Mapping):
        args = args[:1]
    return P.settings_from_args(args)


def predict(payload, n_controls, defaults):
    """("host-500", why) | ("invalid", message) | ("valid", None) | ("unknown", why) for infotext payloads."""
    if "infotext" in payload:
        if _unencodable(payload["infotext"]):
            return ("host-500", "response echo: lone surrogate")
        return ("unknown", "infotext")
    if payload["kind"] == "no-args":
        args = None
        script_args = list(defaults)
    else:
        args = json.loads(payload["raw_args"]) if "raw_args" in payload else payload["args"]
        try:
            script_args = host_view(args, n_controls, defaults)
        except (TypeError, KeyError, IndexError) as error:
            return ("host-500", f"{type(error).__name__}: {error}")
    try:
        settings = seg_view(script_args)
        if _unencodable(args):
            # SEG never sees it (beyond its controls), but the host's answer echoes the request through orjson,
            # which refuses integers beyond 64 bits and lone surrogates
            return ("host-500", "response echo: " + _unencodable(args))
    except P.SegParamError as error:
        return ("invalid", str(error))
    except Exception as error:  # noqa: BLE001 - what our code would raise: a 500 to fix
        return ("crash", f"{type(error).__name__}: {error}")
    # the fuzz's requests have no hires fix: only the first pass's mode meets the model
    if settings.for_pass(False).active and settings.mode == "skip":
        return ("invalid", "skip on a UNet")
    return ("valid", None)


def _unencodable(value):
    """Why orjson (the hosts' API answer) cannot encode `value`, or "" when it can."""
    if isinstance(value, bool):
        return ""
    if isinstance(value, int):
        return "" if -2 ** 63 <= value < 2 ** 64 else "integer beyond 64 bits"
    if isinstance(value, str):
        return "lone surrogate" if any(0xD800 <= ord(c) <= 0xDFFF for c in value) else ""
    if isinstance(value, Mapping):
        return next((r for r in map(_unencodable, [*value.keys(), *value.values()]) if r), "")
    if isinstance(value, (list, tuple)):
        return next((r for r in map(_unencodable, value) if r), "")
    return ""


FIELD_NAMED = re.compile(r"\((%s)\)|^SEG[ :]" % "|".join(NAMES))


def names_field(message: str) -> bool:
    return bool(FIELD_NAMED.search(message or ""))


def classify(status, message, prediction):
    """The payload's outcome: ok-200, ok-422, host-500, or a failure kind."""
    kind, _ = prediction
    if status == 200:
        return "ok-200"
    if status == 422 and names_field(message):
        return "ok-422"
    if status == 500 and kind == "host-500":
        return "host-500"
    if status == 422:
        return "fail-422-unnamed"
    return f"fail-{status}"


# ---------------------------------------------------------------- run

def reference(api, h, label):
    """A plain 128 px, 2-step generation and one with SEG on (mid, sigma inf): their pixel hashes."""
    import hosts as H
    out = {}
    plain = {"prompt": "a lighthouse on a rocky coast", "negative_prompt": "", "seed": 20240801, "steps": 2,
             "cfg_scale": 5, "width": 128, "height": 128, "sampler_name": "Euler", "send_images": True,
             "save_images": False}
    for what, extra in (("plain", {}), ("seg", {"alwayson_scripts": {common.SEG_API_NAME: {
            "args": [{"enabled": True, "scale": 3, "sigma": "inf", "layers": "mid"}]}}})):
        reply = api.post("/sdapi/v1/txt2img", H.request(h, dict(plain, **extra)))
        if reply.status != 200:
            raise SystemExit(f"{label} {what}: HTTP {reply.status}: {reply.message()}")
        out[what] = common.images(reply)[0]
    print(f"  {label}: plain {out['plain'].sha256[:12]}, SEG {out['seg'].sha256[:12]}", flush=True)
    return out


def run(api, h, payloads, results_path, log_path=None, only=None):
    """Send every payload; write one JSONL result line per payload to `results_path`; return the summary."""
    info = api.get("/sdapi/v1/script-info").json
    entry = next(s for s in info if s.get("name") == common.SEG_API_NAME and not s.get("is_img2img"))
    defaults = [a.get("value") for a in entry["args"]]
    n_controls = len(defaults)
    log = common.Log(log_path)
    before = reference(api, h, "before")
    counts, causes, failures = Counter(), Counter(), []
    mismatches = Counter()
    with open(results_path, "w") as out:
        for payload in payloads:
            if only and payload["i"] not in only:
                continue
            prediction = predict(payload, n_controls, defaults)
            try:
                reply = common.post_raw(api, "/sdapi/v1/txt2img", body_of(payload, h))
                status, message = reply.status, reply.message(400)
            except common.Unreachable as error:
                status, message = 0, str(error)
            console = log.new(settle=1.0 if status >= 500 else 0.0)  # its traceback may follow the answer
            tb = common.tracebacks(console)
            alive = _alive(api)
            outcome = classify(status, message, prediction)
            if tb and outcome in ("ok-200", "ok-422"):  # a 200/422 with a traceback printed is a failure too
                outcome = "fail-traceback"
            if not alive:
                outcome = "fail-server-gone"
            agrees = _agrees(prediction, status, message)
            counts[outcome] += 1
            causes[(status, _cause(outcome, prediction, message))] += 1
            if agrees is False:
                mismatches[payload["kind"]] += 1
            rec = {"i": payload["i"], "kind": payload["kind"], "what": payload["what"], "status": status,
                   "outcome": outcome, "message": common.short(message, 300), "prediction": prediction[0],
                   "predicted_message": common.short(prediction[1] or "", 300), "agrees": agrees,
                   "tracebacks": tb, "seconds": round(getattr(reply, "seconds", 0.0), 2) if status else None}
            out.write(json.dumps(rec, ensure_ascii=True) + "\n")
            out.flush()
            if outcome.startswith("fail"):
                failures.append(rec)
            mark = "!" if outcome.startswith("fail") or agrees is False else " "
            print(f"{mark}{payload['i']:4d} {status} {outcome:16s} {payload['kind']:10s} "
                  f"{common.short(payload['what'], 60)} | {common.short(message, 90)}", flush=True)
            if not alive:
                break
    after = reference(api, h, "after")
    same = {k: before[k].rgb == after[k].rgb and before[k].size == after[k].size for k in before}
    return {"payloads": sum(counts.values()), "outcomes": dict(counts),
            "causes": {f"{s} {c}": n for (s, c), n in sorted(causes.items(), key=lambda kv: (kv[0][0], -kv[1]))},
            "prediction_mismatches": dict(mismatches), "failures": len(failures),
            "identical_after": same, "hashes": {k: before[k].sha256[:16] for k in before}}


def _alive(api):
    try:
        return api.get("/sdapi/v1/samplers", timeout=60).status < 500  # any answer but a server error
    except common.Unreachable:
        return False


MODEL_STAGE = ("not in this model", "selects no self-attention layer", "skips transformer blocks")


def _agrees(prediction, status, message):
    kind, predicted = prediction
    if kind == "valid":
        # syntax the params accept can still be refused by the loaded model (blocks it lacks, a preset naming
        # only transformer blocks, skip-layer on a UNet): that refusal comes from the model stage
        return status == 200 or (status == 422 and any(m in message for m in MODEL_STAGE))
    if kind == "invalid":
        return status == 422
    if kind == "host-500":
        return status == 500
    return None


def _cause(outcome, prediction, message):
    if outcome == "ok-200":
        return "accepted"
    if outcome == "host-500":
        why = prediction[1]
        return "host: " + (why if why.startswith("response echo") else "init_script_args " + why.split(":")[0])
    match = FIELD_NAMED.search(message or "")
    if match:
        return "SEG refusal: " + (match.group(1) or common.short(message, 40))
    return common.short(message, 80)
