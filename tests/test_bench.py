"""Smoke test of the benchmark's code path on the tiny UNet: it runs, the JSON has every number the report
needs, and the checks it makes on the engine come out right. Nothing here asserts on timings."""
import json
import os

import pytest

from bench import seg_bench


def test_benchmark_runs_end_to_end_on_a_tiny_unet(tmp_path, capsys):
    path = tmp_path / "bench.json"
    seg_bench.main(["--config", "tiny", "--latent", "16", "--runs", "1", "--warmup", "0", "--no-memory",
                    "--micro-scale", "0.1", "--json", str(path)])
    data = json.loads(path.read_text())
    r = data["latents"]["16"]
    assert set(r["variants"]) == {key for key, *_ in seg_bench.VARIANTS}
    assert all(v["median_s"] > 0 and len(v["samples_s"]) == 1 for v in r["variants"].values())
    assert r["variants"]["cfg"]["ratio_to_cfg"] == 1.0
    assert set(r["criterion"]) >= {"batched_over_cfg", "unet_3_over_2", "within_limit", "batched_over_separate"}
    assert 0 < r["blur"]["fraction_selected_sigma4"] < 1
    # The sigma = inf shortcut against the unshortcut computation (float32). Whole step: `mid` has 4 tokens
    # at this latent, below SHORTCUT_MIN_TOKENS, so both variants run the same code: bit-identical on any
    # kernel; SEG's own effect on that output (~1.6e-2) is far above float32 round-off (~1e-7 here).
    assert r["shortcut"]["step_max_abs_diff"] == 0.0
    assert r["shortcut"]["seg_effect_max_abs"] > 1e-3
    # Every layer alone, shortcut forced: one query instead of N equal ones changes only how the GEMMs
    # block their sums. A sum of k products carries at most ~k units of round-off (γ_k = k·u); a layer sums
    # over its channels (logits, output projection) and its tokens (weights · values), so its output may
    # differ by 2·(tokens + channels)·u of its scale (≤ 3.4e-5 relative here); seen: ≤ 5e-7 on every kernel.
    u = 2.0 ** -24  # float32 unit round-off
    for name, layer in r["shortcut"]["layers"]["per_layer"].items():
        bound = 2 * (layer["tokens"] + layer["channels"]) * u * layer["max_abs_out"]
        assert layer["max_abs_diff"] <= bound, (name, layer["max_abs_diff"], bound)
    assert r["selected_layers"] == ["middle_block.1.transformer_blocks.0.attn1"]
    # PAG rows: timed beside SEG's, and the batched rows compute what the separate pass does (fp32 round-off,
    # ~1e-6 of outputs of order 1, against an effect of PAG on the step's output of order 1e-2 or more)
    assert {"pag_batched_over_cfg", "pag_within_limit", "pag_batched_over_separate"} <= set(r["criterion"])
    assert r["pag"]["batched_vs_separate_max_abs_diff"] < 1e-4 < r["pag"]["pag_effect_max_abs"]
    rows = data["checks"]["rows"]
    assert rows["disabled"]["rows_per_call"] == [2, 2, 2, 2]
    assert rows["scale 0"] == {"rows_per_call": [2, 2, 2, 2], "patches_installed": 1}
    assert rows["interval 0.5-1"]["rows_per_call"] == [2, 2, 3, 3]
    assert rows["active, separate pass"]["rows_per_call"] == [2, 1] * 4
    assert data["checks"]["blur_cache"]["cache"]["hits"] > 0
    out = capsys.readouterr().out
    assert "criterion:" in out and "CFG+SEG separate pass" in out and "CFG+PAG separate pass" in out


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="peak RSS per variant needs Linux")
def test_memory_worker_reports_every_variant():
    args = seg_bench.parse_args(["--config", "tiny", "--latent", "8", "--threads", "1", "--device", "cpu"])
    mem = seg_bench.memory_cpu_subprocess(args)
    assert "error" not in mem, mem.get("error")
    peaks = mem["latents"]["8"]
    assert set(peaks) == {key for key, *_ in seg_bench.VARIANTS}
    assert all(peak >= 0 for peak in peaks.values())
    assert mem["model_rss_mib"] > 0


@pytest.mark.parametrize("model, config", [("sdxl", "sdxl_tiny"), ("flux", "flux_tiny")])
def test_layout_benchmark_shared_prefix_computes_the_full_rows(model, config, tmp_path, capsys):
    """--model sdxl / flux on tiny models of the same layout, in float64: the shared-prefix step equals the
    full-row step, and the blocks floor equals the bare 3-row call, to REL64 of their scale (the same arithmetic
    with fewer rows in the prefix's GEMMs; tests/precision.py derives the bound), while SEG's own effect is above
    MIN_EFFECT of the scale, so a copy taken from a wrong row (the uncond row, or nothing) fails by orders of
    magnitude. And the shared step really runs fewer rows through the prefix."""
    from precision import MIN_EFFECT, REL64, float64

    path = tmp_path / "bench.json"
    with float64():
        seg_bench.main(["--model", model, "--config", config, "--latent", "16", "--runs", "1", "--warmup", "0",
                        "--dtype", "float64", "--json", str(path)])
    data = json.loads(path.read_text())
    r = data["latents"]["16"]
    keys = {key for key, *_ in seg_bench.layouts.variants_of(model)}
    assert set(r["variants"]) == keys and all(v["median_s"] > 0 for v in r["variants"].values())
    assert r["prefix_blocks"] and r["first_perturbed_block"] not in r["prefix_blocks"]
    summaries = ("cfg5", "cfg1") if model == "flux" else ("cfg5",)
    assert set(summaries) <= set(r) and ("cfg1" in r) == (model == "flux")
    for name in summaries:
        s = r[name]
        scale = max(s["output_scale"], 1.0)
        assert s["shared_vs_full_max_abs_diff"] <= REL64 * scale, (name, s)
        assert s["seg_effect_max_abs"] >= MIN_EFFECT * scale, (name, s)
        assert s["floor_vs_bare_max_abs_diff"] <= REL64 * max(s["bare_scale"], 1.0), (name, s)
        for ratio in ("shared_over_base", "full_over_base", "separate_over_base", "rows_floor", "blocks_floor"):
            assert s[ratio] > 0
    # rows entering the first block / the first perturbed block: the SEG row skips only the prefix
    seen = r["rows_seen"]
    assert seen["shared"] == {"prefix": [2], "perturbed": [3]} and seen["full"] == {"prefix": [3], "perturbed": [3]}
    if model == "flux":
        assert seen["shared1"] == {"prefix": [1], "perturbed": [2]} and seen["full1"] == {"prefix": [2], "perturbed": [2]}
    out = capsys.readouterr().out
    assert "CFG 5: shared" in out and "floors: rows" in out and "CFG+SEG batched, shared prefix" in out
    assert ("CFG 1: shared" in out) == (model == "flux")


def test_layout_configs_belong_to_their_model():
    with pytest.raises(SystemExit):
        seg_bench.parse_args(["--model", "flux", "--config", "sdxl_tiny"])
    args = seg_bench.parse_args(["--model", "sdxl"])
    assert args.config == "sdxl" and args.latent == [32]
    assert seg_bench.parse_args([]).config == "sd15"
