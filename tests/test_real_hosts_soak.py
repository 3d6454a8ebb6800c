"""The real-host harness's pure parts: soak jobs (deterministic per seed, the mix issue 22 asks for), host
descriptions (complete, one per host), path resolution and the driver's argument parsing."""
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tools" / "real_hosts"))
import harness  # noqa: E402
import hosts as H  # noqa: E402
import soak  # noqa: E402


def test_jobs_are_deterministic_per_seed():
    assert soak.jobs(5, 200) == soak.jobs(5, 200)
    assert soak.jobs(5, 200) != soak.jobs(6, 200)


def test_jobs_mix_what_the_issue_asks():
    jobs = soak.jobs()
    assert len(jobs) >= 200
    seg = [j["seg"] for j in jobs if j["seg"] and j["seg"]["enabled"]]
    assert {s["mode"] for s in seg[1:]} == {"blur", "identity", "orthogonal"}
    assert len({str(s["sigma"]) for s in seg}) >= 3 and len({s["layers"] for s in seg}) >= 3
    assert any(j["seg"] is None for j in jobs)
    bodies = [j["body"] for j in jobs]
    assert {b["batch_size"] for b in bodies} == {1, 2} and {b["cfg_scale"] for b in bodies} == {1, 5}
    assert len({(b["width"], b["height"]) for b in bodies}) >= 3
    assert {j["hires"] for j in jobs if j["hires"]} == {"same", "own", "off"}
    assert any(j["endpoint"] == "img2img" for j in jobs)
    interrupts = [j["n"] for j in jobs if j["interrupt"]]
    assert interrupts == list(range(20, 200, 20))
    assert jobs[0]["seg"]["enabled"] and not jobs[0]["interrupt"]  # the image reproduced at the end


def test_seg_off_control_runs_the_same_jobs_without_seg():
    on, off = soak.jobs(), soak.jobs(seg_off=True)
    assert [j["body"] for j in on[1:]] == [j["body"] for j in off[1:]]
    assert all(not j["seg"]["enabled"] for j in off[1:] if j["seg"])


def test_requests_carry_the_host_quirks():
    hires_job = next(j for j in soak.jobs() if j["hires"])
    forge = soak.request_of(hires_job, H.HOSTS["forge"])
    a1111 = soak.request_of(hires_job, H.HOSTS["a1111"])
    assert forge["hr_additional_modules"] == ["Use same choices"] and "hr_additional_modules" not in a1111
    assert H.request(H.HOSTS["forge"], {"infotext": "x"})["styles"] == []
    assert "styles" not in H.request(H.HOSTS["a1111"], {"infotext": "x"})


def test_host_descriptions_are_complete():
    ports = set()
    for name, h in H.HOSTS.items():
        assert h.name == name and h.title and h.families and h.probe_reset.startswith("/seg-probe/")
        assert h.port not in ports
        ports.add(h.port)
        for which in ("build", "start"):
            assert h.script(which).is_file(), (name, which)
    assert {"a1111", "forge", "reforge", "forge-neo"} <= set(H.HOSTS)
    assert H.HOSTS["forge"].hires_fields and not H.HOSTS["a1111"].hires_fields


def test_hosts_dir_from_flag_environment_or_checkout():
    assert H.hosts_dir("/tmp/x", {}) == Path("/tmp/x")
    assert H.hosts_dir(None, {"SEG_HOSTS_DIR": "/tmp/y"}) == Path("/tmp/y")
    assert H.hosts_dir(None, {}) == H.CHECKOUT.parent / "hosts"


def test_no_machine_paths_in_the_harness():
    """Defaults come from flags, $SEG_HOSTS_DIR or the checkout, never from one machine's layout."""
    root = HERE.parent / "tools" / "real_hosts"
    # this checkout's own location and the hosts folder it defaults to (a shared parent such as /tmp may appear)
    machine = (str(H.CHECKOUT) + os.sep, str(H.hosts_dir(None, {})) + os.sep)
    for path in root.rglob("*"):
        if path.suffix in (".py", ".sh", ".md"):
            text = path.read_text()
            assert not any(m in text for m in machine), path


@pytest.mark.parametrize("argv,expect", [
    (["fuzz", "--host", "a1111"], {"command": "fuzz", "port": 7860, "only": None}),
    (["--hosts-dir", "/tmp/h", "soak", "--host", "forge", "--jobs", "5"], {"port": 7870, "jobs": 5,
                                                                          "hosts_dir": "/tmp/h"}),
    (["fuzz", "--host", "reforge", "--port", "9000", "--only", "3,17"], {"port": 9000, "only": {3, 17}}),
    (["check", "rows", "--host", "a1111", "--", "--family", "sdxl"], {"name": "rows", "extra": ["--family", "sdxl"]}),
])
def test_argument_parsing(argv, expect):
    args = harness.parse(argv)
    for key, value in expect.items():
        assert getattr(args, key) == value


def test_unknown_host_is_refused():
    with pytest.raises(SystemExit):
        harness.parse(["fuzz", "--host", "comfy"])


def test_check_command_lines(tmp_path):
    args = harness.parse(["check", "neighbours", "--host", "forge", "--", "--name", "x", "--args", "[]"])
    argv = harness.check_argv(args, tmp_path)
    assert argv[argv.index("--url") + 1] == "http://127.0.0.1:7870"
    assert argv[argv.index("--log") + 1] == str(tmp_path / "forge" / "run" / "webui-7870.log")
    args = harness.parse(["check", "rows", "--host", "reforge"])
    argv = harness.check_argv(args, tmp_path)
    assert argv[0] == sys.executable and "--forge" in argv  # standard library only
    args = harness.parse(["check", "controlnet", "--host", "forge"])
    argv = harness.check_argv(args, tmp_path)
    assert argv[0] == str(tmp_path / "forge" / "venv" / "bin" / "python") and "--forge" in argv  # Pillow
    args = harness.parse(["check", "selfcheck", "--host", "a1111"])
    assert harness.check_argv(args, tmp_path)[1:3] == ["-m", "lib_seg.selfcheck"]


def test_start_names_the_checkpoint_for_every_host():
    # Forge's start script takes no --checkpoint: without --ckpt the host reloaded config.json's last model (a DiT
    # whose T5 only loads with --tiny-dit) and never became ready.
    args = harness.parse(["start", "--host", "forge", "--checkpoint", "m.safetensors", "--", "--x"])
    argv = harness.start_argv(H.HOSTS["forge"], args, Path("/h"))
    assert argv[argv.index("--") + 1:] == ["--ckpt", "/h/models/m.safetensors", "--x"]
    args = harness.parse(["start", "--host", "a1111", "--checkpoint", "m.safetensors"])
    argv = harness.start_argv(H.HOSTS["a1111"], args, Path("/h"))
    assert argv[argv.index("--checkpoint") + 1] == "m.safetensors" and "--" not in argv
