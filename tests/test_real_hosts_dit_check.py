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
    config = FakeConfig(host="forge", **config)
    with FakeWebUI(config) as webui:
        code = dit.main(["--url", webui.url, "--family", "flux", "--checkpoint", MODELS[0]["title"], "--only", ONLY])
    return code, capsys.readouterr().out, config.requests


def test_dit_check_passes_where_seg_acts_and_goes(capsys):
    code, out, requests = run(capsys)
    assert code == 0 and "12 passed, 0 failed" in out, out
    # Forge-style hosts select the checkpoint with the description's fields (no UI text-encoder modules)
    assert ("POST", "/sdapi/v1/options", {"forge_additional_modules": [], "sd_model_checkpoint": MODELS[0]["title"]}) \
        in requests
    assert "ok   roundtrip mid" in out and "vs mid: bit-identical" in out


def test_dit_check_fails_when_seg_changes_nothing(capsys):
    code, out, _ = run(capsys, seg_ignored=True)
    assert code == 1
    assert "FAIL mid " in out and "an image identical to plain" in out


def test_dit_check_fails_when_seg_outlives_its_generation(capsys):
    code, out, _ = run(capsys, leak=True)
    assert code == 1 and "FAIL plain again" in out


def test_dit_cases_per_family():
    for family, spec in dit.FAMILIES.items():
        names = [c[0] for c in dit.cases_for(family)]
        assert len(names) == len(set(names))
        assert {"mid", "mid identity", "mid skip", "cfg 1", "hires", "img2img", "batch 2", "plain again"} <= set(names)
        assert [f"bad layers {b}" for b in spec["bad"]] == [n for n in names if n.startswith("bad layers")]
    assert "odd" in {c[0] for c in dit.cases_for("flux")} and "odd" not in {c[0] for c in dit.cases_for("sd3")}


def test_dit_check_on_a1111_sd3(capsys):
    with FakeWebUI(FakeConfig(host="a1111")) as webui:
        code = dit.main(["--url", webui.url, "--host", "a1111", "--family", "sd3", "--checkpoint", MODELS[0]["title"],
                         "--only", ONLY])
    out = capsys.readouterr().out
    assert code == 0 and "12 passed, 0 failed" in out, out
    names = [c[0] for c in dit.cases_for("sd3", "a1111")]
    assert "t5" not in names and "t5" in [c[0] for c in dit.cases_for("sd3", "forge")]


def step(rows, seg=None, labels=None):
    return [{"rows": rows, "seg_rows": seg, "labels": labels, "latent": [16, 24]}]


def test_seg_steps_from_forge_marks_and_from_a1111_row_counts():
    forge = [step(3, [2, 3], [0, 1]), step(2, None, [0, 1])]
    assert dit.count_seg_steps("x", "on", "plain", forge, {"steps": forge}, {}, 1) == 1
    plain = [step(2), step(2)]
    results = {"plain": {"steps": plain, "seg_steps": 0}}
    on = [step(3), step(3)]
    assert dit.count_seg_steps("mid", "on", "plain", on, {"steps": on}, results, 1) == 2
    assert dit.count_seg_steps("batch 2", "on", "plain", on, {"steps": on}, results, 2) == 0  # 1 row, not 2
    assert dit.count_seg_steps("disabled", None, "plain", plain, {"steps": plain}, results, 1) == 0
    results["mid"] = {"steps": on, "seg_steps": 2}
    assert dit.count_seg_steps("roundtrip mid", "roundtrip", "mid", on, {"steps": on}, results, 1) == 2
    assert dit.count_seg_steps("roundtrip mid", "roundtrip", "mid", plain, {"steps": plain}, results, 1) == 0
