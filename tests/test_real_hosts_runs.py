"""The harness's fuzz, soak and rows check run end to end against the fake WebUI (tests/fake_webui.py): every
answer is recorded, the summaries say what the real runs report. The real hosts' numbers are in
tools/real_hosts/README.md."""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tools", "real_hosts"))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tools", "real_hosts", "checks"))
import common  # noqa: E402
import fuzz  # noqa: E402
import hosts as H  # noqa: E402
import rows  # noqa: E402
import soak  # noqa: E402
from fake_webui import FakeWebUI  # noqa: E402


def test_fuzz_run_records_every_payload(tmp_path):
    payloads = fuzz.generate(11, 520)
    # the kinds the fake's own (simpler) validation survives; real hosts get all of them
    chosen = [p for p in payloads if p["kind"] in ("valid", "label", "unknown", "duplicate")][:40]
    with FakeWebUI() as webui:
        summary = fuzz.run(common.Api(webui.url), H.HOSTS["a1111"], chosen, str(tmp_path / "r.jsonl"))
    lines = [json.loads(line) for line in open(tmp_path / "r.jsonl")]
    assert len(lines) == summary["payloads"] == len(chosen)
    assert summary["identical_after"] == {"plain": True, "seg": True}
    assert set(summary["outcomes"]) <= {"ok-200", "ok-422", "host-500", "fail-500", "fail-422-unnamed"}
    assert summary["outcomes"].get("ok-422", 0) > 0 and summary["outcomes"].get("ok-200", 0) > 0


def test_soak_run_answers_every_job_and_reproduces_the_first(tmp_path, monkeypatch):
    monkeypatch.setattr(soak, "LAYERS", ["mid", "all"])  # what the fake's layer check knows
    monkeypatch.setattr(soak, "MODES", ["blur", "identity"])  # the fake has no orthogonal mode
    jobs = soak.jobs(3, 6, interrupt_every=5)
    with FakeWebUI() as webui:
        summary = soak.run(common.Api(webui.url), H.HOSTS["a1111"], jobs, str(tmp_path / "j.jsonl"),
                           interrupt_delay=0.01)
    assert summary["jobs"] == 6 and summary["answered_200"] == 6 and summary["first_reproduced"]
    assert summary["interrupts"] == 1


def test_rows_check_without_probe(capsys):
    with FakeWebUI() as webui:
        code = rows.main(["--url", webui.url, "--only", "disabled,mid,sigma 2,bad sigma,plain again",
                          "--steps", "2"])
    out = capsys.readouterr().out
    assert "no probe loaded" in out and "5 passed, 0 failed" in out and code == 0
