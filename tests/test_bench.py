"""The benchmark's table and goals (numbers are printed by `make bench`, never asserted on time)."""

import pandas as pd
import pytest

from dlga.bench import ROW_FORMATS, BenchCase, efficiency, format_table, goals, measure, measure_matmul
from dlga.book import report


def test_measure_tiny_reports_every_column():
    row = measure(BenchCase("tiny", shared=True, repeats=1))
    assert row["parameters"] == 756_115
    assert row["weight_mb"] == pytest.approx(756_115 * 4 / 1e6, rel=0.01)  # float32, plus a few int counters
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
         "infer_ms_batch1": 130.0, "infer_ms_batch32": 100.0, "weight_mb": 850.0},
        {"preset": "paper", "weights": "per-patch", "precision": "mixed_bfloat16", "gflops_per_s_batch32": 300.0,
         "infer_ms_batch1": 80.0, "infer_ms_batch32": 50.0},
        {"preset": "tiny", "weights": "per-patch", "precision": "float32", "gflops_per_s_batch32": 900.0,
         "infer_ms_batch1": 1.0, "infer_ms_batch32": 1.0},
    ]
    e = efficiency(rows, {"float32": 200.0, "bfloat16": 600.0}, read_gb_per_s=10.0)
    assert e["paper_fraction_float32"] == pytest.approx(0.75) and e["paper_fraction_float32_met"]
    assert e["paper_fraction_bfloat16"] == pytest.approx(0.5) and not e["paper_fraction_bfloat16_met"]
    assert e["paper_batch1_over_batch32_float32"] == pytest.approx(1.3) and e["paper_batch1_over_batch32_float32_met"]
    assert e["paper_batch1_goal_ms_float32"] == pytest.approx(130.0)
    # 850 MB of weights read once at 10 GB/s: batch 1 cannot take under 85 ms an image.
    assert e["paper_batch1_weight_read_floor_ms_float32"] == pytest.approx(85.0)
    assert "paper_batch1_weight_read_floor_ms_float32" not in efficiency(rows, {"float32": 200.0})
    assert efficiency([], {}) == {"matmul_gflops_float32": None, "matmul_gflops_bfloat16": None,
                                  "memory_read_gb_per_s": None}


def test_matmul_roof_and_the_baseline_step_are_measured():
    assert measure_matmul("float32", n=256, repeats=1)["gflops"] > 0
    from dlga.bench import measure_bandwidth

    assert measure_bandwidth(gib=1 / 64, repeats=1)["gb_per_s"] > 0
    row = measure(BenchCase("tiny", False, train=True, repeats=1, conv_impl="grouped", fused_adam=False))
    assert row["train_s_per_step_batch32"] > 0 and row["parameters"] > 756_115  # per-patch weights
    from dlga.bench import THROUGHPUT_CASES, demo_specs

    base, ours, worker, bf16 = THROUGHPUT_CASES  # the baseline is the first version's path: Keras's Adam too
    assert (base.conv_impl, base.threads, base.fused_adam) == ("grouped", 0, False) and ours.fused_adam
    # The steps compare on the same threads; the one-thread step is a worker's.
    assert (ours.conv_impl, ours.threads, worker.conv_impl, worker.threads) == ("auto", 0, "auto", 1)
    assert [s.train.fused_adam for s in demo_specs("store", 2, baseline=True)] == [False, False]
    assert [s.train.fused_adam for s in demo_specs("store", 2, baseline=False)] == [True, True]
    # The bfloat16 option is timed beside them; the baseline and the default stay float32.
    assert (base.precision, ours.precision, bf16.precision, bf16.threads) == ("float32", "float32", "mixed_bfloat16", 0)
    assert [s.train.precision for s in demo_specs("store", 1, baseline=True, precision="mixed_bfloat16")] == ["float32"]
    assert [s.train.precision for s in demo_specs("store", 1, baseline=False, precision="mixed_bfloat16")] == ["mixed_bfloat16"]
    assert demo_specs("store", 1, baseline=False)[0].train.precision == "float32"


def test_a_mixed_case_builds_in_bfloat16_and_leaves_the_process_policy_alone(tmp_path):
    import keras

    from dlga.bench import THROUGHPUT_SIDES, runs_folder

    row = measure(BenchCase("tiny", shared=True, repeats=1, precision="mixed_bfloat16"))
    assert row["precision"] == "mixed_bfloat16" and row["infer_ms_batch32"] > 0
    assert keras.config.dtype_policy().name == "float32"  # scoped to the model's building
    # Each side of the demo-runs table has a folder of its own, and the clean-up finds them all.
    folders = [runs_folder(tmp_path, baseline, precision) for baseline, precision in THROUGHPUT_SIDES]
    assert [f.name for f in folders] == ["runs", "runs-baseline", "runs-mixed_bfloat16"]


def test_a_row_is_read_back_for_the_same_case_code_and_machine(tmp_path, monkeypatch):
    from dlga import bench

    timed = []

    def fake(job, label, progress):
        timed.append(job["preset"])
        return {"case": label, "infer_ms_batch32": 1.5 * len(timed)}

    monkeypatch.setattr(bench, "_in_subprocess", fake)
    cases = (BenchCase("tiny", False), BenchCase("tiny", True))
    first = bench.run_cases(cases, progress=False, cache_dir=tmp_path)
    again = bench.run_cases(cases, progress=False, cache_dir=tmp_path)
    assert len(timed) == 2 and len(list(tmp_path.glob("*.json"))) == 2
    assert [r["infer_ms_batch32"] for r in again] == [r["infer_ms_batch32"] for r in first] == [1.5, 3.0]
    assert [r["reused"] for r in first] == [False, False] and [r["reused"] for r in again] == [True, True]
    assert again[0]["measured"] == first[0]["measured"]
    # Another case, or another machine, is timed afresh; so is every case without a cache.
    bench.run_cases((BenchCase("small", False),), progress=False, cache_dir=tmp_path)
    monkeypatch.setattr(bench, "machine", lambda gpus=True: {"cpu": "another", "cores": 64})
    bench.run_cases(cases[:1], progress=False, cache_dir=tmp_path)
    bench.run_cases(cases[:1], progress=False)
    assert timed == ["tiny", "tiny", "small", "tiny", "tiny"]


def test_a_failed_measurement_is_not_kept(tmp_path, monkeypatch):
    from dlga import bench

    monkeypatch.setattr(bench, "_in_subprocess", lambda job, label, progress: {"case": label, "error": ["boom"]})
    (row,) = bench.run_cases((BenchCase("tiny"),), progress=False, cache_dir=tmp_path)
    assert row["error"] == ["boom"] and not list(tmp_path.glob("*.json"))


def test_machine_without_gpus_does_not_import_tensorflow():
    import subprocess
    import sys

    code = ("import sys; from dlga.bench import machine; m = machine(gpus=False); "
            "print(m['gpus'], bool(m['tensorflow']), 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["None", "True", "False"]


def test_the_preprocessing_bench_is_read_back_and_printed(tmp_path, monkeypatch):
    from data_prep import bench as prep

    from dlga import bench

    calls = []
    result = {"throughput": [{"workers": 1, "frames": 30, "seconds": 0.5, "fps": 60.0}],
              "full_resolution_fps_1_worker": 25.0,
              "landmark_disagreement": {"mean_iod": 0.015, "p95_iod": 0.02, "frames_compared": 30}}
    monkeypatch.setattr(prep, "run_bench", lambda **kw: calls.append(kw) or result)
    first = bench.preprocessing_bench(30, cache_dir=tmp_path)
    again = bench.preprocessing_bench(30, cache_dir=tmp_path)
    bench.preprocessing_bench(60, cache_dir=tmp_path)
    assert [c["frames"] for c in calls] == [30, 60] and calls[0]["workers"] == (1,) and not calls[0]["show"]
    assert (first["reused"], again["reused"]) == (False, True) and again["throughput"] == result["throughput"]
    text = prep.format_results(again).splitlines()
    assert text[2].split() == ["1", "30", "0.50", "60.0"]
    assert "mean 1.50 % IOD, 95th percentile 2.00 % IOD over 30 frames" in text[4]


class _FakeClock:
    """``perf_counter`` for a function whose calls take the given seconds, one after another."""

    def __init__(self, durations):
        self.now, self.durations, self.calls = 0.0, list(durations), 0

    def perf_counter(self):
        return self.now

    def call(self):
        self.now += self.durations[self.calls]
        self.calls += 1


def test_timing_is_the_median_call_after_a_warm_up(monkeypatch):
    from dlga import bench

    # One call slowed by a neighbour (10 s) must not move the figure: a mean would give 2.8.
    clock = _FakeClock([50.0, 1.0, 1.0, 10.0, 1.0, 1.0])
    monkeypatch.setattr(bench.time, "perf_counter", clock.perf_counter)
    assert bench._time(clock.call, 5, min_seconds=0) == 1.0
    assert clock.calls == 6  # the untimed warm-up (trace) and five timed calls


def test_fast_calls_are_repeated_until_the_time_budget_is_spent(monkeypatch):
    from dlga import bench

    clock = _FakeClock([9.0] + [0.5, 0.75] * 10)
    monkeypatch.setattr(bench.time, "perf_counter", clock.perf_counter)
    assert bench._time(clock.call, 2, min_seconds=3.0) == 0.5
    assert clock.calls == 1 + 5  # 0.5 + 0.75 + 0.5 + 0.75 + 0.5 = 3.0 s timed
    with pytest.raises(ValueError, match="repeats"):
        bench._time(clock.call, 0)


def test_tables_print_counts_as_integers_and_small_times_with_their_digits():
    row = {"case": "tiny/per-patch/float32", "parameters": 3066810, "gflops_per_image": 0.031873,
           "infer_ms_batch1": 2.5, "train_s_per_step_batch32": 0.02537, "peak_rss_mb": 1006.46}
    text = format_table([row, {"case": "paper, i7-6700 (reported)", "infer_ms_batch1": 2120.0}])
    assert "3,066,810 " in text and "3,066,810.00" not in text
    assert "0.032" in text and "0.0254" in text and "1,006" in text
    # the reported row has only its one number; the others read as a dash, not NaN
    assert "nan" not in text.lower() and "–" in text
    html = report.styled(pd.DataFrame([row]), formats=ROW_FORMATS).to_html()
    assert "3,066,810<" in html and "0.0254<" in html and "0.032<" in html
