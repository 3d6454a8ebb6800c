"""The real-host checks' shared parts: both probes' records read into one shape, steps grouped alike for every
host, the rows check's cases, pixel statistics on the self-check's Pixels."""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tools", "real_hosts"))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tools", "real_hosts", "checks"))
import common  # noqa: E402
import rows  # noqa: E402
from lib_seg.selfcheck.client import Reply  # noqa: E402
from lib_seg.selfcheck.images import Pixels  # noqa: E402


class FakeApi:
    def __init__(self, calls, reset_path):
        self.calls, self.reset_path, self.resets = calls, reset_path, []

    def post(self, path, payload):
        self.resets.append(path)
        return Reply(200 if path == self.reset_path else 404, b"{}", 0.0)

    def get(self, path):
        return Reply(200, json.dumps({"calls": self.calls}).encode(), 0.0)


A1111_CALLS = [[0, 2, 16, 16, "sd15", "aa"], [0, 3, 16, 16, "sd15", "ab"], [1, 3, 16, 16, "sd15", "ac"],
               [0, 3, 24, 24, "sd15", "ad"]]
FORGE_CALLS = [{"rows": 3, "seg_rows": [2, 3], "cond_or_uncond": [0, 1], "sigma": 14.6, "latent": [16, 16], "x0": "aa"},
               {"rows": 3, "seg_rows": [2, 3], "cond_or_uncond": [0, 1], "sigma": 7.1, "latent": [16, 16], "x0": "ab"},
               {"rows": 1, "seg_rows": None, "cond_or_uncond": [0], "sigma": 7.1, "latent": [16, 16], "x0": "ab"}]


def test_both_probes_read_into_one_shape():
    a = common.probe_calls(FakeApi(A1111_CALLS, "/seg-probe/reset"))
    f = common.probe_calls(FakeApi(FORGE_CALLS, "/seg-probe/clear"))
    for calls in (a, f):
        assert all(set(c) == {"rows", "latent", "step", "checkpoint", "fingerprint", "seg_rows", "labels"}
                   for c in calls)
    assert a[0] == {"rows": 2, "latent": (16, 16), "step": 0, "checkpoint": "sd15", "fingerprint": "aa",
                    "seg_rows": None, "labels": None}
    assert f[0]["seg_rows"] == [2, 3] and f[0]["latent"] == (16, 16) and f[0]["fingerprint"] == "aa"
    assert f[0]["labels"] == [0, 1]


def test_steps_group_consecutive_calls_of_one_step():
    a = common.steps_of(common.probe_calls(FakeApi(A1111_CALLS, "/seg-probe/reset")))
    assert [[c["rows"] for c in s] for s in a] == [[2, 3], [3], [3]]  # the hires pass's step 0 is a new step
    f = common.steps_of(common.probe_calls(FakeApi(FORGE_CALLS, "/seg-probe/clear")))
    assert [[c["rows"] for c in s] for s in f] == [[3], [3, 1]]


def test_probe_reset_finds_either_endpoint():
    assert common.probe_reset(FakeApi([], "/seg-probe/clear"))
    assert common.probe_reset(FakeApi([], "/seg-probe/reset"))
    assert not common.probe_reset(FakeApi([], "/nothing"))


def test_rows_cases_cover_both_families():
    for family in ("sd15", "sdxl"):
        names = [c[0] for c in rows.cases(family)]
        assert {"mid", "all", "batch 2", "CFG 1", "hires fix", "img2img", "bad sigma", "plain again"} <= set(names)
        assert len(names) == len(set(names))
    with_refiner = rows.cases("sdxl", refiner="r.safetensors")
    assert with_refiner[-1][0] == "refiner m0.2-5" and with_refiner[-1][5] == 0


def test_pixel_statistics():
    a = Pixels(2, 1, bytes([0, 0, 0, 10, 10, 10]))
    b = Pixels(2, 1, bytes([0, 0, 1, 10, 30, 10]))
    assert common.max_abs(a, b) == 20
    assert common.fraction_over(a, b, 1) == 0.5 and common.fraction_over(a, b, 0) == 1.0
    assert common.fraction_over(a, Pixels(1, 2, a.rgb), 1) == 1.0


def test_tracebacks_are_named_by_their_exception():
    log = "x\nTraceback (most recent call last):\n  File \"a.py\", line 1\n    foo()\nValueError: bad\nok\n"
    assert common.tracebacks(log) == ["ValueError: bad"]


def test_tracebacks_as_a1111_prints_api_errors():
    log = ("*** API error: POST: http://127.0.0.1:7860/sdapi/v1/txt2img {'error': 'TypeError'}\n"
           "    Traceback (most recent call last):\n      File \"api.py\", line 3, in f\n        g()\n"
           "    TypeError: Integer exceeds 64-bit range\n---\n")
    assert common.tracebacks(log) == ["TypeError: Integer exceeds 64-bit range"]
    log = "    Traceback (most recent call last):\n      File \"x\"\n    modules.devices.NansException: NaNs\n"
    assert common.tracebacks(log) == ["modules.devices.NansException: NaNs"]


def test_reply_message_reads_each_hosts_error_body():
    a1111 = {"error": "AssertionError", "detail": "", "body": "", "errors": "bad sampler name: Use same sampler"}
    forge = {"error": "AssertionError", "detail": "", "body": "", "message": "bad sampler name: Use same sampler"}
    for body in (a1111, forge):
        assert Reply(500, json.dumps(body).encode(), 0.0).message() == "bad sampler name: Use same sampler"
    assert Reply(422, json.dumps({"detail": "SEG sigma"}).encode(), 0.0).message() == "SEG sigma"
    assert Reply(500, json.dumps({"error": "KeyError"}).encode(), 0.0).message() == "KeyError"
