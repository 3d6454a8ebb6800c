"""The embedded demo: shipped weights, Fréchet distance maths, and the demo/evaluation end to end
in a reduced setting (few steps, few samples)."""
import hashlib
import math
import os

import numpy as np
import pytest
import torch

from lib_seg.demo import CLASSIFIER_PATH, DENOISER_PATH
from lib_seg.demo import metrics

# Written by `python -m lib_seg.demo.train`; a change here means the shipped weights changed.
DENOISER_SHA256 = "3ba0fd9dda378e352d604d195da99fa092fa1264f2003a035b61fe1f82429102"
CLASSIFIER_SHA256 = "f716c7dae83148a0c86d4b1c4496469ae23fa6193a81b7e8999112f36f93eba8"


def sha256_of(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# ---- shipped weights -------------------------------------------------------------------------------

def test_shipped_weights_are_the_trained_ones_and_small():
    assert sha256_of(DENOISER_PATH) == DENOISER_SHA256
    assert sha256_of(CLASSIFIER_PATH) == CLASSIFIER_SHA256
    assert os.path.getsize(DENOISER_PATH) <= 5_000_000
    assert os.path.getsize(CLASSIFIER_PATH) <= 1_000_000


@pytest.fixture
def keep_threads():
    """The demo's and the trainer's main() set torch's thread count for the process: put it back, so the
    rest of the suite runs with the thread count its header reports."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def few_validation_rows(monkeypatch):
    """The trainer scores its held-out loss on VALIDATION_ROWS (256) rows; 16 run the same code (one chunk,
    rows of every kind: null-label ones too) in a sixteenth of the time, which was most of a 2-step run."""
    from lib_seg.demo import train
    monkeypatch.setattr(train, "VALIDATION_ROWS", 16)


@pytest.fixture(scope="module")
def denoiser():
    from lib_seg.demo.model import load_denoiser
    return load_denoiser()


def test_denoiser_loads_into_the_real_ldm_unet_with_attention_where_seg_needs_it(denoiser):
    from ldm.modules.diffusionmodules.openaimodel import UNetModel
    from lib_seg.layers import describe
    assert isinstance(denoiser.unet, UNetModel)
    assert describe(denoiser.unet) == "d0-d1, m0, u0-u3"  # self-attention at 16x16 and 8x8, and the middle


def test_classifier_reads_real_mirror_digits_it_never_trained_on():
    from lib_seg.demo.classifier import features_and_predictions, load_classifier
    from lib_seg.demo.data import reference_images, train_test_split
    _, test = train_test_split(1797)
    images, labels = reference_images(test, per_glyph=4, seed=1)
    features, predicted = features_and_predictions(load_classifier(), images)
    assert features.shape == (len(images), 64)
    assert metrics.class_accuracy(predicted, labels) > 0.95


# ---- mirror digits and their structure score ---------------------------------------------------------

def test_mirror_digits_are_32x32_symmetric_and_in_minus_one_to_one():
    from lib_seg.demo.data import asymmetry, reference_images
    images, labels = reference_images(per_glyph=2)
    assert images.shape == (2 * 1797, 1, 32, 32) and labels.shape == (2 * 1797,)
    assert images.min() == -1.0 and images.max() == 1.0
    assert torch.equal(images, images.flip(-1))
    assert torch.equal(asymmetry(images), torch.zeros(len(images)))  # exactly: the right half is a copy


def test_glyphs_are_placed_at_every_offset_and_never_clipped():
    from lib_seg.demo.data import OFFSETS, load_glyphs, mirror_images
    glyphs, _ = load_glyphs()
    ink = glyphs[:1].sum()
    for dy in range(OFFSETS[0]):
        for dx in range(OFFSETS[1]):
            image = mirror_images(glyphs[:1], torch.tensor([[dy, dx]]))
            left = (image[..., :16] + 1) / 2
            # (g * 2 - 1 + 1) / 2 rounds twice in fp32: within 2 ulp of 1 (2.4e-7) of the glyph; the sum of 288
            # such values within 288 * 2.4e-7 + its own round-off, so 1e-4 of the ink (~50) is a wide margin
            assert torch.allclose(left[0, 0, dy:dy + 24, dx:dx + 12], glyphs[0, 0], rtol=0, atol=2.5e-7)
            assert torch.allclose(left.sum(), ink, rtol=1e-4)


def test_asymmetry_is_the_mean_mirror_difference():
    from lib_seg.demo.data import asymmetry
    images = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    expected = [sum(abs(images[i, 0, y, x].item() - images[i, 0, y, 31 - x].item()) / 2
                    for y in range(32) for x in range(32)) / 1024 for i in range(3)]
    assert asymmetry(images).tolist() == pytest.approx(expected, rel=1e-5)  # fp32 mean of 1024 terms vs a float64 loop
    half = -torch.ones(1, 1, 32, 32)
    half[..., :16] = 1.0
    assert asymmetry(half).item() == 1.0


# ---- Fréchet distance ------------------------------------------------------------------------------
# float64 linear algebra on ≤ 8-dimensional covariances of condition ≲ 1e3: errors ≲ cond · 2^-53 · trace ≈ 1e-12,
# so the bounds below (1e-8 absolute, 1e-9 to 1e-6 relative) leave a factor ≥ 100 on any BLAS.

def test_frechet_distance_of_a_set_to_itself_is_zero():
    features = np.random.default_rng(0).normal(size=(500, 8))
    assert metrics.frechet_distance(features, features) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_grows_with_a_shift_by_its_squared_length():
    features = np.random.default_rng(1).normal(size=(400, 6))
    shift = np.array([0.5, 0, 0, 0, 0, 0])
    small = metrics.frechet_distance(features, features + shift)
    large = metrics.frechet_distance(features, features + 3 * shift)
    assert small == pytest.approx(0.25, rel=1e-6)  # same covariance: only |Δμ|² remains
    assert large == pytest.approx(2.25, rel=1e-6) and large > small


def test_frechet_distance_matches_the_gaussian_closed_form():
    # Diagonal (commuting) covariances: d² = |μ₁−μ₂|² + Σ (√a − √b)².
    m1, m2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    expected = 1 + 4 + (1 - 2) ** 2 + (2 - 1) ** 2 + 0
    assert metrics.frechet_distance_from_stats(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(expected, rel=1e-9)
    # 1-D: (m1 − m2)² + (s1 − s2)².
    assert metrics.frechet_distance_from_stats(0.0, 4.0, 3.0, 1.0) == pytest.approx(9 + 1, rel=1e-9)


def test_frechet_distance_agrees_with_scipy_sqrtm_for_non_commuting_covariances():
    from scipy.linalg import sqrtm
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    c1, c2 = x @ x.T + 0.1 * np.eye(5), y @ y.T + 0.1 * np.eye(5)
    m1, m2 = rng.normal(size=5), rng.normal(size=5)
    reference = np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * np.real(sqrtm(c1 @ c2)))
    assert metrics.frechet_distance_from_stats(m1, c1, m2, c2) == pytest.approx(reference, rel=1e-7)


def test_frechet_distance_from_samples_approaches_the_closed_form():
    rng = np.random.default_rng(3)
    first = rng.normal(0.0, 1.0, size=(20000, 2))
    second = rng.normal(1.0, 2.0, size=(20000, 2))
    # estimated from 20 000 samples: the standard error of |Δμ|² + covariance terms is ~1-2 % of 4, so 5 % is
    # several standard errors (the seed is fixed, so this is also deterministic)
    assert metrics.frechet_distance(first, second) == pytest.approx(2 * (1 + 1), rel=0.05)


# ---- sampling through the SEG engine ----------------------------------------------------------------

def test_seg_changes_samples_and_leaves_the_model_untouched_afterwards(denoiser):
    from lib_seg.demo.sample import Setting, sample, seg_settings
    labels = torch.arange(2)
    plain = sample(denoiser, Setting("plain", False), labels, steps=2)
    seg = sample(denoiser, Setting("seg", False, seg=seg_settings(3.0, math.inf, "down")), labels, steps=2)
    again = sample(denoiser, Setting("plain", False), labels, steps=2)
    assert not torch.allclose(plain, seg, atol=1e-3)  # SEG moves samples in [-1, 1] by more than 1e-3
    assert torch.equal(plain, again)  # every patch removed when the pass ended


def test_perturbed_prediction_alone_is_the_seg_rows_prediction_sampled_unguided(denoiser):
    from lib_seg.demo.sample import Setting, perturbed_setting, sample, seg_settings
    from lib_seg.demo.model import SIGMA_MAX
    labels = torch.arange(2)
    plain = sample(denoiser, Setting("plain", False), labels, steps=2)
    alone = sample(denoiser, perturbed_setting(math.inf, "down"), labels, steps=2)
    seg = sample(denoiser, Setting("seg", False, seg=seg_settings(3.0, math.inf, "down")), labels, steps=2)
    assert not torch.allclose(alone, plain, atol=1e-3) and not torch.allclose(alone, seg, atol=1e-3)
    assert torch.equal(sample(denoiser, Setting("plain", False), labels, steps=2), plain)  # patches removed
    # One Euler step from sigma_max to 0 returns the denoiser's output: SEG's guided step with scale s is
    # cond + s (cond - perturbed), so the perturbed prediction is recovered from two SEG scales.
    one = dict(steps=1, sampler="euler")
    p = sample(denoiser, perturbed_setting(math.inf, "down"), labels, **one)
    g1 = sample(denoiser, Setting("s1", False, seg=seg_settings(1.0, math.inf, "down")), labels, **one)
    g0 = sample(denoiser, Setting("s0", False), labels, **one)
    inside = (p.abs() < 1) & (g1.abs() < 1) & (g0.abs() < 1)  # not clamped by sample()
    assert inside.float().mean() > 0.5
    # The step computes x + (0 - sigma_max) (x - D) / sigma_max with x ~ sigma_max: its rounding is a few
    # float32 eps of sigma_max per operation, tripled in 2 g0 - g1 (the UNet's own rounding of D, ~1, is far
    # below). 32 eps x sigma_max = 3e-4; seen 4.6e-5. The perturbation itself moves pixels by up to 0.07.
    bound = 32 * torch.finfo(torch.float32).eps * SIGMA_MAX
    assert (p - g0)[inside].abs().max() > 100 * bound
    torch.testing.assert_close(p[inside], (2 * g0 - g1)[inside], rtol=0, atol=bound)


def test_demo_writes_a_labelled_grid(tmp_path, keep_threads):
    from PIL import Image
    from lib_seg.demo.__main__ import main
    out = tmp_path / "grid.png"
    main(["--steps", "2", "--columns", "2", "--sigmas", "inf", "--out", str(out)])
    width, height = Image.open(out).size
    assert width > 2 * 64 and height > 4 * 64  # 4 rows: unconditional, + SEG, CFG, CFG + SEG


def test_evaluate_reports_every_setting_with_its_seed_spread(denoiser):
    from lib_seg.demo.classifier import load_classifier
    from lib_seg.demo.evaluate import evaluate, markdown_table
    from lib_seg.demo.sample import demo_settings
    from lib_seg.demo.sample import perturbed_setting
    settings = demo_settings([math.inf], 3.0, 3.0, "down")
    settings.insert(2, perturbed_setting(math.inf, "down"))
    report = evaluate(denoiser, load_classifier(), settings, n=10, seeds=(0, 1), steps=2, log=lambda line: None)
    assert [row["setting"] for row in report["rows"]] == [s.name for s in settings]
    for row in report["rows"]:
        assert len(row["per_seed"]["fd"]) == 2 and all(v >= 0 for v in row["per_seed"]["fd"])
        mean, sd = row["summary"]["asymmetry"]
        assert mean == pytest.approx(sum(row["per_seed"]["asymmetry"]) / 2, rel=1e-12) and sd >= 0
    unconditional, seg, alone, cfg, cfg_seg = report["rows"]
    assert unconditional["summary"]["accuracy"] is None and 0 <= cfg["summary"]["accuracy"][0] <= 1
    assert seg["baseline"] == unconditional["setting"] and cfg_seg["baseline"] == cfg["setting"]
    assert isinstance(seg["beats_asymmetry"], bool) and "baseline" not in cfg
    assert alone["baseline"] == unconditional["setting"] and "beats_fd" not in alone  # a diagnostic
    differences = [a - b for a, b in zip(seg["per_seed"]["fd"], unconditional["per_seed"]["fd"])]
    assert seg["delta_fd"][0] == pytest.approx(sum(differences) / 2, rel=1e-12)
    assert seg["delta_fd"][1] == pytest.approx(abs(differences[0] - differences[1]) / math.sqrt(2), rel=1e-9)
    assert seg["per_seed"]["asymmetry"] != unconditional["per_seed"]["asymmetry"]  # SEG acted
    assert markdown_table(report).count("\n") == len(settings) + 2


def test_seg_interval_is_recorded_and_changes_only_the_steps_it_covers(tmp_path, keep_threads):
    from lib_seg.demo.__main__ import main
    common = ["--evaluate", "--ablation", "--n", "4", "--seeds", "0", "--steps", "3", "--sigmas", "inf",
              "--ablation-scales", "3"]
    whole = main(common + ["--results", str(tmp_path / "whole")])["rows"]
    early = main(common + ["--end", "0.5", "--results", str(tmp_path / "early")])["rows"]
    assert whole[0]["per_seed"] == early[0]["per_seed"]  # the no-SEG baseline is the same run
    assert early[1]["seg_interval"] == [0.0, 0.5] and whole[1]["seg_interval"] == [0.0, 1.0]
    assert early[1]["per_seed"]["asymmetry"] not in (whole[1]["per_seed"]["asymmetry"], whole[0]["per_seed"]["asymmetry"])
    assert "down, steps 0–0.5" in (tmp_path / "early.md").read_text()


def test_demo_refuses_an_interval_out_of_range_naming_the_field(capsys):
    from lib_seg.demo.__main__ import parse_args
    with pytest.raises(SystemExit):
        parse_args(["--end", "1.5"])
    assert "SEG end (end): got 1.5" in capsys.readouterr().err


def test_beats_needs_more_than_the_seed_spread():
    from lib_seg.demo.evaluate import beats
    base = {"summary": {"asymmetry": [0.10, 0.01]}}
    assert beats({"summary": {"asymmetry": [0.08, 0.005]}}, base, "asymmetry")
    assert not beats({"summary": {"asymmetry": [0.095, 0.005]}}, base, "asymmetry")  # gain 0.005 < spread 0.01
    assert not beats({"summary": {"asymmetry": [0.08, 0.03]}}, base, "asymmetry")    # gain 0.02 < its own spread
    assert not beats({"summary": {"asymmetry": [0.12, 0.001]}}, base, "asymmetry")   # worse


def test_ablation_covers_every_sigma_and_scale(tmp_path, keep_threads):
    from lib_seg.demo.__main__ import main
    out = tmp_path / "ablation"
    report = main(["--evaluate", "--ablation", "--n", "4", "--seeds", "0", "--steps", "2", "--sigmas", "1,inf",
                   "--ablation-scales", "1,3", "--results", str(out)])
    assert [(r["seg_sigma"], r["seg_scale"]) for r in report["rows"]] == [("", 0.0), ("1", 1.0), ("inf", 1.0), ("1", 3.0), ("inf", 3.0)]
    text = (tmp_path / "ablation.md").read_text()
    assert "| σ \\ SEG scale | 1 | 3 |" in text and "| inf |" in text


# ---- training ---------------------------------------------------------------------------------------

def test_shipped_loss_curve_flattens_on_held_out_digits():
    import json
    from lib_seg.demo import CURVE_PATH
    from lib_seg.demo.train import DENOISER_STEPS
    with open(CURVE_PATH) as f:
        record = json.load(f)
    held = [p["held_out_loss"] for p in record["curve"] if "held_out_loss" in p]
    assert record["steps"] == DENOISER_STEPS and len(held) == DENOISER_STEPS // 500
    assert all(later < earlier for earlier, later in zip(held, held[1:]))  # still improving, never overfitting
    assert (held[-2] - held[-1]) < 0.02 * held[-1]  # the last 500 steps gained < 2 %: the curve has flattened


def test_training_runs_end_to_end_and_writes_weights_that_load(tmp_path, keep_threads, few_validation_rows):
    import json
    from lib_seg.demo.model import load_denoiser
    from lib_seg.demo.train import main
    out = tmp_path / "d.safetensors"
    main(["--steps", "2", "--batch", "4", "--skip-classifier", "--denoiser-out", str(out),
          "--curve-out", str(tmp_path / "curve.json")])
    load_denoiser(str(out))
    curve = json.loads((tmp_path / "curve.json").read_text())["curve"]
    assert curve[-1]["step"] == 2 and curve[-1]["held_out_loss"] > 0


def test_the_coords16_design_trains_saves_its_architecture_and_loads(tmp_path, keep_threads, few_validation_rows):
    """The second design tried for issue 12 (RESULTS.md): retrainable and loadable by --weights."""
    from safetensors import safe_open
    from lib_seg.demo.model import coordinate_planes, load_denoiser
    from lib_seg.demo.train import main
    from lib_seg.layers import describe
    out = tmp_path / "c.safetensors"
    main(["--steps", "2", "--batch", "4", "--skip-classifier", "--architecture", "coords16",
          "--denoiser-out", str(out), "--curve-out", str(tmp_path / "curve.json")])
    with safe_open(str(out), framework="pt") as f:
        assert f.metadata() == {"architecture": "coords16"}
    model = load_denoiser(str(out))
    assert model.architecture == "coords16" and describe(model.unet) == "d0, m0, u0-u1"  # all at 16x16
    planes = coordinate_planes(32)
    assert torch.equal(planes[0], planes[0].flip(-1)) and not torch.equal(planes[1], planes[1].flip(-2))
    assert planes.min() == -1 and planes.max() == 1


def test_a_weights_file_of_an_unknown_architecture_is_refused_by_name(tmp_path):
    from safetensors.torch import save_file
    from lib_seg.demo.model import load_denoiser
    path = tmp_path / "x.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"architecture": "nonsense"})
    with pytest.raises(ValueError, match="unknown demo architecture 'nonsense'; known: mirror, coords16"):
        load_denoiser(str(path))


def test_evaluate_has_oseg_rows_beside_seg_paired_with_their_baselines(tmp_path, keep_threads):
    """--oseg: + OSEG rows after the SEG rows (then OSEG's prediction alone) and CFG + OSEG last, each paired with
    its no-SEG baseline and with the SEG row of the same sigma; the reference switch is recorded and changes the
    OSEG rows only."""
    from lib_seg.demo.__main__ import main
    # 2 samples at 2 steps: which rows there are, how they pair and what the switch changes depend on neither count
    common = ["--evaluate", "--oseg", "--n", "2", "--seeds", "0,1", "--steps", "2", "--sigmas", "inf"]
    key = main(common + ["--results", str(tmp_path / "key")])
    query = main(common + ["--oseg-reference", "query", "--results", str(tmp_path / "query")])
    names = [row["setting"] for row in key["rows"]]
    assert names == ["unconditional", "+ SEG sigma=inf", "blurred prediction alone sigma=inf", "+ OSEG sigma=inf",
                     "OSEG prediction alone sigma=inf", "CFG 3", "CFG 3 + SEG sigma=inf", "CFG 3 + OSEG sigma=inf"]
    rows = {row["setting"]: row for row in key["rows"]}
    oseg_row, seg_row = rows["+ OSEG sigma=inf"], rows["+ SEG sigma=inf"]
    assert oseg_row["seg_mode"] == "orthogonal" and seg_row["seg_mode"] == "blur"
    assert oseg_row["oseg_reference"] == "key" and seg_row["oseg_reference"] is None
    assert oseg_row["baseline"] == "unconditional" and rows["CFG 3 + OSEG sigma=inf"]["baseline"] == "CFG 3"
    assert oseg_row["vs_seg"] == "+ SEG sigma=inf" and rows["CFG 3 + OSEG sigma=inf"]["vs_seg"] == "CFG 3 + SEG sigma=inf"
    assert rows["OSEG prediction alone sigma=inf"]["vs_seg"] == "blurred prediction alone sigma=inf"
    assert "vs_seg" not in seg_row and "vs_seg" not in rows["unconditional"]
    assert oseg_row["per_seed"] != seg_row["per_seed"]
    differences = [a - b for a, b in zip(oseg_row["per_seed"]["asymmetry"], seg_row["per_seed"]["asymmetry"])]
    assert oseg_row["delta_asymmetry_vs_seg"][0] == pytest.approx(sum(differences) / 2, rel=1e-12)
    assert oseg_row["delta_asymmetry_vs_seg"][1] == pytest.approx(abs(differences[0] - differences[1]) / math.sqrt(2), rel=1e-9)
    assert len(rows["CFG 3 + OSEG sigma=inf"]["delta_accuracy_vs_seg"]) == 2
    text = (tmp_path / "key.md").read_text()
    assert "Δ asymmetry vs SEG (paired) | Δ FD vs SEG (paired) |" in text
    assert f"| {oseg_row['delta_asymmetry_vs_seg'][0]:+.4f} ± {oseg_row['delta_asymmetry_vs_seg'][1]:.4f} |" in text
    assert (key["oseg_reference"], query["oseg_reference"]) == ("key", "query")
    other = {row["setting"]: row for row in query["rows"]}
    assert other["+ SEG sigma=inf"]["per_seed"] == seg_row["per_seed"]
    assert other["+ OSEG sigma=inf"]["per_seed"] != oseg_row["per_seed"]
    from lib_seg import oseg
    assert oseg.REFERENCE == "key"  # the switch lasted for its run only

    # Both decompositions in one run: each OSEG row with its own switch, scoring as a run with that switch does.
    both = main(common + ["--oseg-reference", "key,query", "--results", str(tmp_path / "both")])
    named = {row["setting"]: row for row in both["rows"]}
    assert [row["setting"] for row in both["rows"]] == [
        "unconditional", "+ SEG sigma=inf", "blurred prediction alone sigma=inf", "+ OSEG key sigma=inf",
        "OSEG key prediction alone sigma=inf", "+ OSEG query sigma=inf", "OSEG query prediction alone sigma=inf",
        "CFG 3", "CFG 3 + SEG sigma=inf", "CFG 3 + OSEG key sigma=inf", "CFG 3 + OSEG query sigma=inf"]
    assert both["oseg_references"] == ["key", "query"] and oseg.REFERENCE == "key"
    for ref, run in (("key", rows), ("query", other)):
        assert named[f"+ OSEG {ref} sigma=inf"]["oseg_reference"] == ref
        assert named[f"+ OSEG {ref} sigma=inf"]["per_seed"] == run["+ OSEG sigma=inf"]["per_seed"]
        assert named[f"CFG 3 + OSEG {ref} sigma=inf"]["per_seed"] == run["CFG 3 + OSEG sigma=inf"]["per_seed"]
        assert named[f"OSEG {ref} prediction alone sigma=inf"]["per_seed"] == run["OSEG prediction alone sigma=inf"]["per_seed"]
        assert named[f"+ OSEG {ref} sigma=inf"]["vs_seg"] == "+ SEG sigma=inf"


def test_oseg_reference_must_be_known(capsys):
    from lib_seg.demo.__main__ import parse_args
    for bad in ("mean", "key,key", "key,value"):
        with pytest.raises(SystemExit):
            parse_args(["--oseg", "--oseg-reference", bad])
        assert "--oseg-reference" in capsys.readouterr().err


def test_reports_of_disjoint_seeds_merge_into_the_single_run(tmp_path, keep_threads):
    """Seeds run side by side and merged score exactly as one run over all the seeds: per-seed values, spreads,
    paired differences (from the baseline and OSEG − SEG) and the real-image floor."""
    import json
    from lib_seg.demo.__main__ import main
    common = ["--evaluate", "--oseg", "--no-cfg", "--n", "4", "--steps", "2", "--sigmas", "1,inf"]
    whole = main(common + ["--seeds", "0,1", "--results", str(tmp_path / "whole")])
    for seed in (0, 1):
        main(common + ["--seeds", str(seed), "--results", str(tmp_path / f"seed{seed}")])
    merged = main(["--merge", f"{tmp_path / 'seed0'}.json,{tmp_path / 'seed1'}.json", "--results", str(tmp_path / "merged")])
    assert not any(row["conditional"] for row in whole["rows"])  # --no-cfg
    assert merged["seeds"] == [0, 1] and merged["real_floor_fd"] == whole["real_floor_fd"]
    keys = ("setting", "per_seed", "summary", "baseline", "delta_asymmetry", "delta_fd", "beats_asymmetry",
            "vs_seg", "delta_asymmetry_vs_seg", "delta_fd_vs_seg")
    for a, b in zip(merged["rows"], whole["rows"], strict=True):
        assert {k: a.get(k) for k in keys} == {k: b.get(k) for k in keys}
    assert json.loads((tmp_path / "merged.json").read_text())["rows"][0]["per_seed"] == whole["rows"][0]["per_seed"]
    with pytest.raises(ValueError, match="overlap"):
        main(["--merge", f"{tmp_path / 'seed0'}.json,{tmp_path / 'whole'}.json", "--results", str(tmp_path / "bad")])
