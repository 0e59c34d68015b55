"""The benchmark's table and goals (numbers are printed by `make bench`, never asserted on time)."""

import pytest

from dlga.bench import BenchCase, format_table, goals, measure


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
