"""The harness's transformer-model check (tools/real_hosts/checks/dit.py) end to end against the fake WebUI: it passes
on a host that does what SEG promises and fails where SEG is ignored or outlives its generation. Its real-host
numbers are in tools/real_hosts/forge/README.md."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tools", "real_hosts"))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tools", "real_hosts", "checks"))
import dit  # noqa: E402
from fake_webui import MODELS, FakeConfig, FakeWebUI  # noqa: E402

ONLY = "disabled,mid,mid identity,roundtrip mid,batch 2,img2img,bad sigma,plain again"


def run(capsys, **config):
    with FakeWebUI(FakeConfig(host="forge", **config)) as webui:
        code = dit.main(["--url", webui.url, "--family", "flux", "--checkpoint", MODELS[0]["title"], "--only", ONLY])
    return code, capsys.readouterr().out


def test_dit_check_passes_where_seg_acts_and_goes(capsys):
    code, out = run(capsys)
    assert code == 0 and "12 passed, 0 failed" in out, out
    assert "ok   roundtrip mid" in out and "vs mid: bit-identical" in out


def test_dit_check_fails_when_seg_changes_nothing(capsys):
    code, out = run(capsys, seg_ignored=True)
    assert code == 1
    assert "FAIL mid " in out and "an image identical to plain" in out


def test_dit_check_fails_when_seg_outlives_its_generation(capsys):
    code, out = run(capsys, leak=True)
    assert code == 1 and "FAIL plain again" in out


def test_dit_cases_per_family():
    for family, spec in dit.FAMILIES.items():
        names = [c[0] for c in dit.cases_for(family)]
        assert len(names) == len(set(names))
        assert {"mid", "mid identity", "mid skip", "cfg 1", "hires", "img2img", "batch 2", "plain again"} <= set(names)
        assert [f"bad layers {b}" for b in spec["bad"]] == [n for n in names if n.startswith("bad layers")]
    assert "odd" in {c[0] for c in dit.cases_for("flux")} and "odd" not in {c[0] for c in dit.cases_for("sd3")}
