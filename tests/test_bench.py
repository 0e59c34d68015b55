"""The benchmark's table and goals (numbers are printed by `make bench`, never asserted on time)."""

import pytest

from dlga.bench import BenchCase, efficiency, format_table, goals, measure, measure_matmul


def test_measure_tiny_reports_every_column():
    row = measure(BenchCase("tiny", shared=True, repeats=1))
    assert row["parameters"] == 756_115
    assert row["gflops_per_image"] == pytest.approx(0.0317, rel=0.05)
    for key in ("infer_ms_batch1", "infer_ms_batch32", "train_s_per_step_batch32", "peak_rss_mb"):
        assert row[key] > 0
    assert "tiny/shared/float32" in format_table([row])


def test_goals_compare_the_best_paper_rows():
    rows = [
        {"preset": "paper", "weights": "per-patch", "infer_ms_batch32": 90.0, "infer_ms_batch1": 120.0},
        {"preset": "paper", "weights": "per-patch", "infer_ms_batch32": 50.0, "infer_ms_batch1": 200.0},
        {"preset": "paper", "weights": "shared", "infer_ms_batch32": 10.0, "infer_ms_batch1": 10.0},
    ]
    g = goals(rows)
    assert g["paper_batch32_ms"] == 50.0 and g["paper_batch32_met"]
    assert g["paper_batch1_ms"] == 120.0 and g["paper_batch1_met"]
    assert g["speedup_vs_paper_2120ms"] == pytest.approx(2120 / 50)
    assert goals([]) == {}


def test_efficiency_is_the_paper_rows_share_of_the_matmul_roof():
    rows = [
        {"preset": "paper", "weights": "per-patch", "precision": "float32", "gflops_per_s_batch32": 150.0,
         "infer_ms_batch1": 130.0, "infer_ms_batch32": 100.0},
        {"preset": "paper", "weights": "per-patch", "precision": "mixed_bfloat16", "gflops_per_s_batch32": 300.0,
         "infer_ms_batch1": 80.0, "infer_ms_batch32": 50.0},
        {"preset": "tiny", "weights": "per-patch", "precision": "float32", "gflops_per_s_batch32": 900.0,
         "infer_ms_batch1": 1.0, "infer_ms_batch32": 1.0},
    ]
    e = efficiency(rows, {"float32": 200.0, "bfloat16": 600.0})
    assert e["paper_fraction_float32"] == pytest.approx(0.75) and e["paper_fraction_float32_met"]
    assert e["paper_fraction_bfloat16"] == pytest.approx(0.5) and not e["paper_fraction_bfloat16_met"]
    assert e["paper_batch1_over_batch32_float32"] == pytest.approx(1.3)
    assert efficiency([], {}) == {"matmul_gflops_float32": None, "matmul_gflops_bfloat16": None}


def test_matmul_roof_and_the_baseline_step_are_measured():
    assert measure_matmul("float32", n=256, repeats=1)["gflops"] > 0
    row = measure(BenchCase("tiny", False, train=True, repeats=1, conv_impl="grouped", fused_adam=False))
    assert row["train_s_per_step_batch32"] > 0 and row["parameters"] > 756_115  # per-patch weights
    from dlga.bench import THROUGHPUT_CASES, demo_specs

    base, ours = THROUGHPUT_CASES  # the baseline is the first version's path: Keras's Adam too
    assert (base.conv_impl, base.threads, base.fused_adam) == ("grouped", 0, False) and ours.fused_adam
    assert [s.train.fused_adam for s in demo_specs("store", 2, baseline=True)] == [False, False]
    assert [s.train.fused_adam for s in demo_specs("store", 2, baseline=False)] == [True, True]
