"""The real-host harness's pure parts: fuzz payload generation (deterministic per seed, every kind present,
JSONL round trip) and the prediction of what the host and lib_seg.params make of each payload."""
import json
import math
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "real_hosts"))
import fuzz  # noqa: E402
from lib_seg import params as P  # noqa: E402

DEFAULTS = [False, 3, "inf", "mid", 0, 1, 0, "blur", "same", 3, "inf", "mid", "blur"]


def _key(payloads):
    return [fuzz.dumps(p) for p in payloads]


def test_generation_is_deterministic_per_seed():
    a, b = fuzz.generate(7, 520), fuzz.generate(7, 520)
    assert _key(a) == _key(b)
    assert _key(a) != _key(fuzz.generate(8, 520))
    assert [p["i"] for p in a] == list(range(len(a)))


def test_at_least_500_payloads_and_every_kind():
    payloads = fuzz.generate()
    assert len(payloads) >= 500
    kinds = {p["kind"] for p in payloads}
    assert kinds >= {"named", "positional", "label", "length", "not-a-list", "no-args", "unknown", "duplicate",
                     "valid", "infotext", "mutation"}
    text = "\n".join(fuzz.dumps(p) for p in payloads)
    for needle in ("NaN", "Infinity", "-Infinity", '"nan"', '"inf"', "1" + "0" * 400, "\\u0000", "\\ud800"):
        assert needle in text, needle
    assert any(len(fuzz.dumps(p)) > 10000 for p in payloads)  # 10 kB strings
    lengths = {len(p["args"]) for p in payloads if p["kind"] == "length"}
    assert 0 in lengths and 1000 in lengths and len(P.PARAMS) + 1 in lengths


def test_advertised_labels_are_sent():
    labels = {"mode": ["Smoothed energy (SEG)", "Identity attention (PAG)"], "hires": ["Own settings"]}
    payloads = fuzz.generate(3, 520, labels)
    sent = [p for p in payloads if p["kind"] == "label"]
    assert any(p["args"][P.API_NAMES.index("mode")] == "Identity attention (PAG)" for p in sent
               if isinstance(p["args"][0], bool))
    assert any(p["args"][0].get("hires") == "Own settings" for p in sent if isinstance(p["args"][0], dict))


def test_jsonl_round_trip(tmp_path):
    payloads = fuzz.generate(1, 520)
    path = tmp_path / "p.jsonl"
    fuzz.write(payloads, path)
    back = fuzz.read(path)
    assert _key(back) == _key(payloads)
    assert any(isinstance(v, float) and math.isnan(v) for p in back if isinstance(p.get("args"), list)
               for v in p["args"])


def test_duplicated_keys_reach_the_server_as_written():
    dup = next(p for p in fuzz.generate() if p["kind"] == "duplicate" and p["what"].startswith("scale"))
    body = fuzz.body_of(dup).decode()
    assert body.count('"scale"') == 2
    json.loads(body)  # still JSON (the last one wins, as in the host's parser)


def test_prediction_follows_the_host_and_params():
    # the host copies at most its controls' count over its defaults; a non-list fails in the host
    assert fuzz.predict({"kind": "length", "args": DEFAULTS[:0]}, 13, DEFAULTS) == ("valid", None)
    assert fuzz.predict({"kind": "length", "args": [True] * 1000}, 13, DEFAULTS)[0] == "invalid"  # scale=True
    assert fuzz.predict({"kind": "not-a-list", "args": None}, 13, DEFAULTS)[0] == "host-500"
    assert fuzz.predict({"kind": "not-a-list", "args": {"enabled": True}}, 13, DEFAULTS)[0] == "host-500"
    assert fuzz.predict({"kind": "no-args"}, 13, DEFAULTS) == ("valid", None)
    kind, message = fuzz.predict({"kind": "named", "args": [{"enabled": True, "sigma": -1}]}, 13, DEFAULTS)
    assert kind == "invalid" and "(sigma)" in message
    dup = {"kind": "duplicate", "raw_args": '[{"enabled": true, "scale": 3, "scale": -1}]'}
    assert fuzz.predict(dup, 13, DEFAULTS)[0] == "invalid"


def test_no_generated_payload_crashes_params():
    """Every payload is either valid, a SEG refusal naming its field, or the host's own 500: none makes
    lib_seg.params raise anything but SegParamError, and no refusal message is longer than 600 characters."""
    for payload in fuzz.generate():
        kind, message = fuzz.predict(payload, 13, DEFAULTS)
        assert kind != "crash", (payload["what"], message)
        if kind == "invalid" and message != "skip on a UNet":
            assert fuzz.names_field(message), message
            assert len(message) < 600, (payload["what"], len(message))


@pytest.mark.parametrize("status,message,prediction,outcome", [
    (200, "", ("valid", None), "ok-200"),
    (422, "SEG sigma (sigma): got -1", ("invalid", "x"), "ok-422"),
    (422, "SEG: unknown parameter name(s) 'x'", ("invalid", "x"), "ok-422"),
    (422, "something else", ("invalid", "x"), "fail-422-unnamed"),
    (500, "TypeError", ("host-500", "TypeError"), "host-500"),
    (500, "OverflowError", ("invalid", "x"), "fail-500"),
])
def test_classify(status, message, prediction, outcome):
    assert fuzz.classify(status, message, prediction) == outcome


def test_the_log_read_after_an_error_waits_for_the_traceback_that_follows_the_answer(tmp_path):
    # Real Forge answered a host-side 500 first and printed its traceback after: read at once, that traceback
    # was charged to the next payload (3 false "fail-traceback" in the first Forge fuzz).
    import threading
    import common
    path = tmp_path / "server.log"
    path.write_text("started\n")
    log = common.Log(path)
    late = threading.Timer(0.3, lambda: path.open("a").write("Traceback (most recent call last):\nTypeError: x\n"))
    late.start()
    assert "TypeError: x" in log.new(settle=1.0) and log.new() == ""
    late.join()
