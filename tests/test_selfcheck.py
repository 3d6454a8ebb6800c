"""lib_seg.selfcheck against a fake WebUI API (tests/fake_webui.py): it passes a faithful host, and each fault
a real host could have makes its own line fail and the exit status non-zero."""
import ast
import base64
import io
import json
import os
import random
import socket
import subprocess
import sys

import pytest

from fake_webui import MODELS, FakeConfig, FakeWebUI
from lib_seg import selfcheck
from lib_seg.selfcheck import images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "lib_seg", "selfcheck")  # the package's folder: `python lib_seg/selfcheck` runs it


def run(config=None, *extra, capsys=None):
    """Run the self-check against a fake WebUI; returns (exit status, JSON record, fake config)."""
    config = config or FakeConfig()
    with FakeWebUI(config) as webui:
        status = selfcheck.main(["--url", webui.url, "--json", *extra])
    out = capsys.readouterr() if capsys else None
    record = json.loads(out.out) if out else None
    return status, record, config, out


def lines(record):
    return {c["name"]: c for c in record["checks"]}


@pytest.mark.parametrize("host,name,xyz_args", [("a1111", "AUTOMATIC1111", 18), ("forge", "Forge", 18),
                                                ("reforge", "reForge", 21)])
def test_a_faithful_host_passes_every_line(capsys, host, name, xyz_args):
    status, record, config, out = run(FakeConfig(host=host), capsys=capsys)
    assert status == 0, out.err
    assert [c["status"] for c in record["checks"]] == ["PASS"] * len(selfcheck.SelfCheck.CHECKS), out.err
    assert record["host"]["name"] == name and record["host"]["xyz_args"] == xyz_args
    assert record["host"]["version"] == "v1.10.1"
    assert record["model"]["family"] == "SD1.x/SD2.x" and record["model"]["layout"] == "d0-d5, m0, u0-u8"
    # the table (stderr with --json) has the header and one line per check
    assert f"host:  {name}" in out.err and f"{len(selfcheck.SelfCheck.CHECKS)} passed, 0 failed, 0 skipped" in out.err
    # the record holds each request's key fields, status, timing and image hashes
    txt2img = [r for r in record["requests"] if r["path"] == "/sdapi/v1/txt2img" and r["status"] == 200]
    assert all(len(img["sha256"]) == 64 for r in txt2img for img in r["images"])
    assert all(r["seconds"] is not None for r in record["requests"])
    # the Forge quirks are part of every such request, whatever the host
    posts = [req for method, path, req in config.requests if method == "POST"]
    assert all(req.get("styles") == [] for req in posts if "infotext" in req)
    assert all(req.get("hr_additional_modules") for req in posts if req.get("enable_hr"))


def test_the_table_on_stdout_without_json(capsys):
    with FakeWebUI() as webui:
        assert selfcheck.main(["--url", webui.url]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"SEG self-check against {webui.url}"
    assert "SEG changes the image                  PASS  mean |Δ|" in out


def test_sdxl_family_and_checkpoint_switch(capsys):
    status, record, config, _ = run(FakeConfig(), "--checkpoint", "fakexl", capsys=capsys)
    assert status == 0
    assert config.model == MODELS[1]["title"] and record["model"]["switched_to"] == MODELS[1]["title"]
    assert record["model"]["family"] == "SDXL base" and record["model"]["middle_transformers"] == "m0.0-9"


def test_an_unknown_checkpoint_stops_before_any_check(capsys):
    status, record, _, out = run(FakeConfig(), "--checkpoint", "nope", capsys=capsys)
    assert status == 2 and record["checks"] == []
    assert "'nope' is not among the WebUI's checkpoints" in out.err and "fakexl" in out.err


@pytest.mark.parametrize("fault,line,expected", [
    (dict(seg_ignored=True), "SEG changes the image", "SEG had no effect"),
    (dict(refusal_status=200), "bad value refused (sigma -1)", "HTTP 200: sigma -1 was accepted"),
    (dict(refusal_status=500), "bad value refused (sigma -1)", "HTTP 500, expected 422"),
    (dict(leak=True), "no SEG after SEG runs: bit-identical", "differs from the first image without SEG"),
    (dict(infotext_restores_seg=False), "infotext reproduces the SEG image", "SEG was not restored"),
    (dict(named_args=False), "positional and named args agree", "% of pixels changed"),
    (dict(xyz_axis_used=False), "X/Y/Z sweep over SEG sigma", "the axis value was not used"),
    (dict(hires_keeps_seg=False), "hires fix", "SEG had no effect"),
    (dict(mode_used=False), "PAG mode (identity attention)", "the mode was not used"),
    (dict(hires_override_used=False), "hires pass with own settings", "the override was not used"),
    (dict(infotext_restores_seg=False), "PAG mode (identity attention)", "from its infotext"),
    (dict(infotext_restores_seg=False), "hires pass with own settings", "from its infotext"),
])
def test_each_fault_fails_its_line(capsys, fault, line, expected):
    status, record, _, _ = run(FakeConfig(**fault), capsys=capsys)
    assert status == 1
    check = lines(record)[line]
    assert check["status"] == "FAIL" and expected in check["detail"], check


def test_a_500_refusal_still_reports_its_message(capsys):
    _, record, _, _ = run(FakeConfig(refusal_status=500), capsys=capsys)
    check = lines(record)["bad value refused (sigma -1)"]
    assert check["refusal_status"] == 500 and "SEG sigma (sigma): got -1" in check["detail"]
    assert "server answers afterwards" in check["detail"]


def test_a_host_ignoring_seg_fails_every_effect_line(capsys):
    _, record, _, _ = run(FakeConfig(seg_ignored=True), capsys=capsys)
    failed = {name for name, c in lines(record).items() if c["status"] == "FAIL"}
    assert failed == {"SEG changes the image", "CFG 1", "batch 2", "non-square size", "hires fix", "img2img",
                      "X/Y/Z sweep over SEG sigma", "PAG mode (identity attention)", "hires pass with own settings"}


def test_without_the_extension_only_the_listing_fails_and_the_rest_is_skipped(capsys):
    status, record, _, out = run(FakeConfig(seg_installed=False), capsys=capsys)
    assert status == 1
    checks = record["checks"]
    assert checks[0]["status"] == "FAIL" and "--seg-disable" in checks[0]["detail"]
    assert {c["status"] for c in checks[1:]} == {"SKIP"}
    assert record["model"]["family"].startswith("unknown")


def test_a_server_that_is_down_gives_a_clear_error(capsys):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    status = selfcheck.main(["--url", f"http://127.0.0.1:{port}", "--timeout", "5"])
    err = capsys.readouterr().err
    assert status == 2
    assert "cannot reach the WebUI" in err and "refused" in err.lower() and "--api" in err


def test_a_webui_without_api_gives_a_clear_error(capsys):
    status, record, _, out = run(FakeConfig(api=False), capsys=capsys)
    assert status == 2 and "start the WebUI with --api" in out.err and record["exit_status"] == 2


def test_xyz_args_are_built_by_label_for_each_host():
    for host, count in (("a1111", 18), ("reforge", 21)):
        entry = next(e for e in FakeWebUI(FakeConfig(host=host)).script_info() if e["name"] == "x/y/z plot")
        args = selfcheck.xyz_args(entry["args"], "SEG sigma", ["1", "inf"])
        labels = [a["label"] for a in entry["args"]]
        assert len(args) == count
        assert entry["args"][0]["choices"][args[0]] == "SEG sigma"
        assert args[1] == "1, inf" and args[2] == ["1", "inf"]
        assert args[labels.index("Y type")] == 0 and args[labels.index("Include Sub Images")] is True
    with pytest.raises(ValueError, match="no X/Y/Z axis 'SEG sigma'"):
        selfcheck.xyz_args([{"label": "X type", "choices": ["Nothing", "Seed"]}], "SEG sigma", ["1"])


def test_host_detection_from_what_the_api_exposes():
    xyz18 = {"args": [{}] * 18}
    xyz21 = {"args": [{}] * 21}
    assert selfcheck.detect_host({"sd_model_checkpoint": "x"}, xyz18)["name"] == "AUTOMATIC1111"
    assert selfcheck.detect_host({"forge_preset": "sd"}, xyz18)["name"] == "Forge"
    assert selfcheck.detect_host({"reforge_karras_rho": 7}, xyz21)["name"] == "reForge"
    assert selfcheck.detect_host({}, xyz21)["name"] == "reForge"  # an older reForge without reforge_* options


# ---------------------------------------------------------------- images and statistics

def _random_image(mode, size=(23, 17), seed=0):
    from PIL import Image
    rng = random.Random(seed)
    channels = len(mode) if mode != "L" else 1
    # smooth gradients plus noise, so that PNG's adaptive filtering picks every filter type
    data = bytes((x * 7 + y * 3 + c * 40 + rng.randrange(8)) & 255
                 for y in range(size[1]) for x in range(size[0]) for c in range(channels))
    return Image.frombytes(mode, size, data)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA"])
def test_the_stdlib_png_decoder_matches_pillow(mode):
    image = _random_image(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    ours = selfcheck.decode_png(buffer.getvalue())
    theirs = image.convert("RGB")
    assert ours.size == theirs.size and ours.rgb == theirs.tobytes()


def test_the_png_decoder_covers_every_filter_type():
    from fake_webui import png
    import zlib
    width, height = 5, 5
    rgb = bytes(range(75))
    plain = selfcheck.decode_png(png(width, height, rgb))
    assert plain.rgb == rgb
    # re-encode each row with filter k (1-4) by hand and check the decoder undoes it
    stride = width * 3
    rows, prev = [], bytearray(stride)
    for y in range(height):
        line = rgb[y * stride:(y + 1) * stride]
        k = 1 + y % 4
        out = bytearray()
        for i, value in enumerate(line):
            a = line[i - 3] if i >= 3 else 0
            b = prev[i]
            c = prev[i - 3] if i >= 3 else 0
            if k == 1:
                pred = a
            elif k == 2:
                pred = b
            elif k == 3:
                pred = (a + b) >> 1
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
            out.append((value - pred) & 255)
        rows.append(bytes([k]) + bytes(out))
        prev = bytearray(line)
    data = png(width, height, rgb)
    start = data.index(b"IDAT") - 4
    length = int.from_bytes(data[start:start + 4], "big")
    body = zlib.compress(b"".join(rows))
    chunk = len(body).to_bytes(4, "big") + b"IDAT" + body + (zlib.crc32(b"IDAT" + body) & 0xFFFFFFFF).to_bytes(4, "big")
    filtered = data[:start] + chunk + data[start + 12 + length:]
    assert selfcheck.decode_png(filtered).rgb == rgb


def test_a_jpeg_without_pillow_is_explained(monkeypatch):
    monkeypatch.setattr(images, "_PIL_Image", None)
    with pytest.raises(selfcheck.ImageError, match="install Pillow"):
        selfcheck.decode_image(base64.b64encode(b"\xff\xd8\xff\xe0JFIF").decode())


def test_statistics_with_and_without_numpy(monkeypatch):
    a = selfcheck.Pixels(2, 2, bytes([10] * 12))
    b = selfcheck.Pixels(2, 2, bytes([10, 10, 10, 11, 10, 10, 10, 10, 13, 40, 40, 40]))
    expected = {"identical": False, "mean_abs": (1 + 3 + 90) / 12, "changed": 0.5}
    assert selfcheck.compare(a, b) == pytest.approx(expected)
    monkeypatch.setattr(images, "_np", None)
    assert selfcheck.compare(a, b) == pytest.approx(expected)
    assert selfcheck.compare(a, a)["identical"] and not selfcheck.changes(selfcheck.compare(a, a))
    assert selfcheck.compare(a, selfcheck.Pixels(1, 4, a.rgb))["mean_abs"] is None


def test_the_whole_run_without_pillow_and_numpy(capsys, monkeypatch):
    monkeypatch.setattr(images, "_PIL_Image", None)
    monkeypatch.setattr(images, "_np", None)
    status, record, _, _ = run(FakeConfig(), capsys=capsys)
    assert status == 0 and record["client"] == {**record["client"], "pillow": False, "numpy": False}


# ---------------------------------------------------------------- it stays a stand-alone file

def test_it_restates_the_extensions_names():
    from lib_seg import params, ui
    assert selfcheck.SEG_API_NAME == ui.API_NAME
    assert params.API_NAMES[:len(selfcheck.SEG_ARG_NAMES)] == selfcheck.SEG_ARG_NAMES
    assert selfcheck.SEG_SIGMA_AXIS == params.PARAM_BY_NAME["sigma"].label
    assert selfcheck.SEG_SIGMA_AXIS in [label for label, _ in ui.AXES]
    assert params.settings_from_args(selfcheck.SEG_ON).active
    assert params.settings_from_args(selfcheck.SEG_ON) == params.settings_from_args(selfcheck.SEG_ON_NAMED)
    with pytest.raises(params.SegParamError, match=r"SEG sigma \(sigma\)"):
        params.settings_from_args(selfcheck.SEG_BAD_SIGMA)
    from lib_seg.selfcheck import payloads
    mode = params.PARAM_BY_NAME["mode"]
    assert payloads.PERTURBATION_LABEL == mode.label
    assert payloads.PAG_LABEL == mode.choice_labels[mode.choices.index("identity")]


def _package_sources():
    for folder, _, files in os.walk(SOURCE):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                yield path, open(path, encoding="utf-8").read()


def test_python_38_syntax_and_standard_library_only():
    imported, own = set(), set()
    sources = list(_package_sources())
    assert len(sources) > 5
    for path, source in sources:
        tree = ast.parse(source, feature_version=(3, 8))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path}: a relative import would break `python lib_seg/selfcheck`"
                names = [node.module]
            else:
                continue
            own.update(n for n in names if n.split(".")[0] == "lib_seg")
            imported.update(n.split(".")[0] for n in names if n.split(".")[0] != "lib_seg")
        for newer in (".removeprefix(", ".removesuffix(", "match ", "functools.cache(", "zip(strict"):
            assert newer not in source, path
    assert imported - set(sys.stdlib_module_names) == {"PIL", "numpy"}
    assert all(n.startswith("lib_seg.selfcheck") for n in own), own  # nothing else of lib_seg (torch) comes in


def test_it_runs_as_a_file_and_as_a_module_without_torch_or_gradio():
    down = [sys.executable, SOURCE, "--url", "http://127.0.0.1:9", "--timeout", "5"]
    result = subprocess.run(down, capture_output=True, text=True, cwd="/", timeout=60)
    assert result.returncode == 2 and "cannot reach the WebUI" in result.stderr
    code = ("import sys, lib_seg.selfcheck as s; s.main(['--help'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "--checkpoint" in result.stdout
    code = ("import sys, lib_seg.selfcheck; "
            "assert not {'torch', 'gradio', 'modules'} & set(sys.modules), sorted(sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60).returncode == 0


def test_the_readme_explains_every_line():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = readme.split("## Self-check against your WebUI", 1)[1].split("\n## ", 1)[0]
    for name, _ in selfcheck.SelfCheck.CHECKS:
        assert f"| {name} |" in section, name


def test_only_runs_the_chosen_checks(capsys):
    status, record, config, _ = run(FakeConfig(), "--only", "xyz,after", capsys=capsys)
    assert status == 0
    assert [c["name"] for c in record["checks"]] == ["SEG script listed", "X/Y/Z sweep over SEG sigma",
                                                      "no SEG after SEG runs: bit-identical"]
    with pytest.raises(SystemExit):
        selfcheck.main(["--only", "nope"])


def test_changes_means_more_than_one_grey_level_on_at_least_a_thousandth_of_the_pixels(capsys):
    # every channel of every pixel moved by one level, as fp32 round-off could: not a change
    _, record, _, _ = run(FakeConfig(seg_effect="round_off"), "--only", "changes", capsys=capsys)
    check = lines(record)["SEG changes the image"]
    assert check["status"] == "FAIL" and "grey levels, 0 % of pixels changed" in check["detail"]
    assert check["difference"]["mean_abs"] > 0.3
    # 1 pixel in 400 (0.25 %) moved by 5 levels: weak, but SEG's doing
    _, record, _, _ = run(FakeConfig(seg_effect="weak"), "--only", "changes", capsys=capsys)
    check = lines(record)["SEG changes the image"]
    assert check["status"] == "PASS" and "0.25 % of pixels changed" in check["detail"], check


# ---------------------------------------------------------------- other extensions, advertised labels, hires

REPLAY_LINES = ("infotext reproduces the SEG image", "PAG mode (identity attention)", "hires pass with own settings")


def test_another_extension_switched_on_by_infotext_is_a_warn_naming_its_keys(capsys):
    # sd-perturbed-attention's SWG in real Forge: every infotext request gains its keys and another image
    status, record, _, out = run(FakeConfig(host="forge", neighbour="swg"), capsys=capsys)
    assert status == 0, out.err
    checks = lines(record)
    for name in REPLAY_LINES:
        assert checks[name]["status"] == "WARN", checks[name]
        assert "swg_enabled, swg_scale" in checks[name]["detail"], checks[name]
        assert "likely sd-perturbed-attention" in checks[name]["detail"] and "not counted against SEG" in checks[name]["detail"]
    assert {c["status"] for n, c in checks.items() if n not in REPLAY_LINES} == {"PASS"}
    assert f"{len(checks) - 3} passed, 0 failed, 0 skipped, 3 warned" in out.err
    assert "infotext reproduces the SEG image      WARN  differs from the SEG image" in out.err


def test_a_seg_fault_beside_another_extension_still_fails(capsys):
    # SEG not restored from infotext: the replay lost SEG's keys, so the neighbour's keys excuse nothing
    _, record, _, _ = run(FakeConfig(neighbour="swg", infotext_restores_seg=False), capsys=capsys)
    checks = lines(record)
    for name in REPLAY_LINES:
        assert checks[name]["status"] == "FAIL", checks[name]
    assert "SEG was not restored" in checks["PAG mode (identity attention)"]["detail"]
    # a fault of the line's own next to an excused replay: FAIL, and the detail says both
    _, record, _, _ = run(FakeConfig(neighbour="swg", mode_used=False), "--only", "pag", capsys=capsys)
    pag = lines(record)["PAG mode (identity attention)"]
    assert pag["status"] == "FAIL" and "the mode was not used" in pag["detail"] and "swg_enabled" in pag["detail"]


def test_gained_keys_name_their_extension_and_never_excuse_segs_own():
    from lib_seg.selfcheck import foreign
    original = ('a photo\nNegative prompt: blurry\nSteps: 6, Sampler: Euler, Seed: 1, SEG scale: 3, '
                'SEG layers: "d0-3, m0", Version: v1.10.1')
    assert foreign.infotext_keys(original) == ["Steps", "Sampler", "Seed", "SEG scale", "SEG layers", "Version"]
    replay = (original + ', swg_enabled: True, PerturbedAttentionGuidance_scale: 3, SEG Active: True, '
              'PAG Scale: 3, SEG hires: off, Hires sampler: Euler, Tiling: "a, b"')
    gained = foreign.gained_keys(original, replay, explained=("Hires sampler",))
    assert gained == {"swg_enabled": "sd-perturbed-attention", "PerturbedAttentionGuidance_scale": "Forge's built-in PAG",
                      "SEG Active": "sd-webui-incantations", "PAG Scale": "sd-webui-incantations",
                      "Tiling": "another extension or the host"}
    assert foreign.lost_own_keys(original, "a photo\nSteps: 6, Sampler: Euler") == ["SEG scale", "SEG layers"]


def test_the_advertised_labels_line_sends_them_positionally(capsys):
    status, record, config, _ = run(FakeConfig(), "--only", "labels", capsys=capsys)
    assert status == 0
    check = lines(record)["choices as script-info advertises them"]
    assert check["status"] == "PASS" and "bit-identical to the image with mode 'identity'" in check["detail"]
    assert check["sent"] == {"SEG perturbation": "Identity attention (PAG)", "SEG hires pass": "Same as first pass",
                             "SEG hires perturbation": "Smoothed energy (SEG)"}
    sent = [req["alwayson_scripts"][selfcheck.SEG_API_NAME]["args"] for method, _, req in config.requests
            if method == "POST" and "Identity attention (PAG)" in json.dumps(req.get("alwayson_scripts"))]
    assert len(sent) == 1 and isinstance(sent[0], list) and sent[0][:8] == selfcheck.SEG_ON + ["Identity attention (PAG)"]


def test_a_host_refusing_the_advertised_labels_fails_that_line(capsys):
    status, record, _, _ = run(FakeConfig(labels_accepted=False), capsys=capsys)
    assert status == 1
    failed = {name: c for name, c in lines(record).items() if c["status"] != "PASS"}
    assert list(failed) == ["choices as script-info advertises them"]
    detail = failed["choices as script-info advertises them"]["detail"]
    assert "HTTP 422" in detail and "'Identity attention (PAG)'" in detail


def test_a_hires_override_that_barely_changes_the_image_does_not_pass(capsys):
    # Forge runs the hires pass at Hires CFG 1, where a weak override moved pixels by round-off only: the line
    # printed PASS with "0 % of pixels changed"; it must meet its own "changes" measure
    _, record, config, _ = run(FakeConfig(hires_override_weak=True), "--only", "hires_own", capsys=capsys)
    check = lines(record)["hires pass with own settings"]
    assert check["status"] == "FAIL" and "0 % of pixels changed: below what counts as a change" in check["detail"]
    own = [req for method, _, req in config.requests if method == "POST" and req.get("enable_hr")
           and isinstance(req["alwayson_scripts"][selfcheck.SEG_API_NAME]["args"][0], dict)
           and req["alwayson_scripts"][selfcheck.SEG_API_NAME]["args"][0].get("hires") == "own"]
    assert own and own[0]["alwayson_scripts"][selfcheck.SEG_API_NAME]["args"][0]["hr_layers"] == "all"


def test_transformer_families_are_named_from_the_extensions_own_refusal():
    """The self-check's layer probe (m0.99) on a transformer model: the refusal lists its j/s blocks."""
    from lib_seg import dit
    from lib_seg.selfcheck.detect import layout_from_refusal
    from lib_seg.selfcheck.payloads import LAYER_PROBE
    flux = [f"double_blocks.{i}" for i in range(19)] + [f"single_blocks.{i}" for i in range(38)]
    sd3 = [f"joint_blocks.{i}" for i in range(24)]
    for names, model, layout, family in ((flux, "IntegratedFluxTransformer2DModel", "j0-j18, s0-s37", "Flux/Chroma"),
                                         (sd3, "SD3", "j0-j23", "SD3/SD3.5 MMDiT")):
        with pytest.raises(ValueError) as refused:
            dit.select_blocks(names, LAYER_PROBE, model)
        assert f"'{LAYER_PROBE}', not in this model" in str(refused.value)
        found = layout_from_refusal(f"SEG: {refused.value}")
        assert (found["layout"], found["family"]) == (layout, family)
