"""The book's tables and verdicts (dlga.book.report) on fake runs: small predictions tables, no training."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from dlga.book import intervals, report
from dlga.config import SETTINGS, TrainConfig
from dlga.runs import rundir
from dlga.runs.rundir import Run
from dlga.training import metrics

N_SUBJECTS = 30
N_BOOT = 400


def fake_run(setting: str, seed: int, shift: float = 0.0, lr: float = 1e-3, noise: float = 1.0,
             constant: tuple[str, ...] = (), stop: str = "max_steps") -> Run:
    """A complete run's in-memory form: two videos per subject (one label), predictions =
    label + a subject effect shared by all runs + seed noise + ``shift``; partitions named in
    ``constant`` get the training mean everywhere."""
    subjects = np.random.default_rng(99)  # the same subjects, labels and subject effects in every run
    labels = subjects.integers(0, 45, size=3 * N_SUBJECTS).astype(float)
    effect = subjects.normal(0, 2, size=3 * N_SUBJECTS)
    rng = np.random.default_rng([seed, abs(hash(setting)) % 2**31])
    rows = []
    for j in range(3 * N_SUBJECTS):
        partition = ("Training", "Development", "Testing")[j // N_SUBJECTS]
        for task in ("Freeform", "Northwind"):
            rows.append({"video_id": f"{j}_1_{task}", "subject_id": str(j), "session_id": f"{j}_1",
                         "partition": partition, "bdi": labels[j],
                         "prediction": labels[j] + effect[j] + shift + rng.normal(0, noise), "n_frames": 5})
    pred = pd.DataFrame(rows, columns=rundir.PREDICTION_COLUMNS)
    train_mean = pred.loc[pred["partition"] == "Training", "bdi"].mean()
    for part in constant:
        pred.loc[pred["partition"] == part, "prediction"] = train_mean

    def scores(part: str, column: str = "prediction") -> dict:
        p = pred[pred["partition"] == part]
        guess = p[column] if column == "prediction" else np.full(len(p), train_mean)
        return {"rmse": metrics.rmse(p["bdi"], guess), "mae": metrics.mae(p["bdi"], guess), "n_videos": len(p)}

    m = {"steps": 100, "best_step": 80, "stop_reason": stop, "wall_time_s": 1.0,
         "dev": scores("Development"), "test": scores("Testing"),
         "mean_predictor": {"dev": scores("Development", "mean"), "test": scores("Testing", "mean")}}
    params = {"run_id": f"{setting}-{seed}-{lr:g}", "setting": setting, "train": {"learning_rate": lr, "seed": seed}}
    return Run(path=None, params=params, metrics=m, predictions=pred, history=pd.DataFrame(columns=rundir.HISTORY_COLUMNS))


def study(seeds=(0, 1, 2, 3, 4), worse: dict | None = None) -> list[Run]:
    worse = worse or {}
    return [fake_run(s, k, worse.get(s, 0.0)) for s in SETTINGS for k in seeds]


def test_ablation_table_uses_the_two_level_interval_and_names_it():
    runs = study()
    table = intervals.ablation_table(runs, "synthetic", n_boot=N_BOOT)
    ci = "RMSE 95% CI (seeds x subjects)"
    assert ci in table.columns and "MAE 95% CI (seeds x subjects)" in table.columns
    assert "RMSE 95% CI (seed-averaged ensemble, subjects)" in table.columns
    assert len(table) == len(SETTINGS) + 1 and table["setting"].iloc[-1] == "training-mean predictor"
    g = [r for r in runs if r.params["setting"] == "G"]
    direct = metrics.two_level_bootstrap(rundir.prediction_table(g), "rmse", n=N_BOOT)
    row = table[table["setting"].str.startswith("G2")].iloc[0]
    assert row[ci] == f"[{direct['lo']:.2f}, {direct['hi']:.2f}]" and row["seeds"] == 5
    assert row["_rmse"] == pytest.approx(np.mean([r.metrics["test"]["rmse"] for r in g]))
    assert direct["lo"] < row["_rmse"] < direct["hi"]
    # The ensemble of seeds averages the seed noise away: its RMSE interval lies lower.
    lo_ens = float(row["RMSE 95% CI (seed-averaged ensemble, subjects)"].strip("[]").split(",")[0])
    assert lo_ens < direct["lo"]
    mean_row = table.iloc[-1]
    assert mean_row["seeds"] == 1 and mean_row["_rmse"] == pytest.approx(g[0].metrics["mean_predictor"]["test"]["rmse"])
    assert mean_row["RMSE measured"] == f"{mean_row['_rmse']:.2f}"
    # One model, one seed: its ensemble is itself, so both intervals are the subjects' one.
    assert mean_row["RMSE 95% CI (seed-averaged ensemble, subjects)"] == mean_row[ci] != ""


def test_styled_formats_some_columns_and_keeps_the_precision_of_the_others():
    frame = pd.DataFrame({"rmse": [9.781234], "parameters": [212438490], "p (Holm)": [0.0]})
    frame.attrs["p_floor"] = 0.009
    html = report.styled(frame, precision=2, formats={"parameters": "{:,}"}).to_html()
    cells = re.findall(r'class="data row0 col\d" >([^<]*)<', html)
    assert cells == ["9.78", "212,438,490", "&lt; 0.009"]


def test_comparisons_with_g_are_one_holm_family_and_ties_are_not_ranked():
    runs = study(worse={"GA": 6.0})
    table, lines = intervals.comparisons_with(runs, "G", n=2000)
    assert table["G minus"].tolist() == [s for s in SETTINGS if s != "G"]
    ci = "95% CI (Holm, 9 comparisons; seeds x subjects)"
    assert ci in table.columns and table.attrs["adjustment"] == "Holm, 9 comparisons"
    by = {s: rundir.prediction_table([r for r in runs if r.params["setting"] == s]) for s in SETTINGS}
    holm = metrics.holm_comparisons(by["G"], {s: by[s] for s in SETTINGS if s != "G"}, n=2000)
    np.testing.assert_allclose(table["low"], holm["lo_holm"])
    np.testing.assert_allclose(table["high"], holm["hi_holm"])
    np.testing.assert_allclose(table["p (Holm)"], holm["p_holm"])
    contains_zero = (table["low"] <= 0) & (table["high"] >= 0)
    assert ((table["verdict"] == "tie") == contains_zero).all()
    ga = table.set_index("G minus").loc["GA"]
    assert ga["verdict"] == "G better" and ga["high"] < 0 and ga["diff RMSE"] < -1
    # A t p-value far in the tail: the book says it is below 0.001, never "0.000".
    assert ga["p (Holm)"] < 0.001 and table.attrs["p_floor"] == report.P_FLOOR == 0.001
    html = report.styled(table).to_html()
    col = f"col{list(table.columns).index('p (Holm)')}"
    p_cells = re.findall(rf'class="data row\d+ {col}" >([^<]*)<', html)
    assert len(p_cells) == len(table) and "&lt; 0.001" in p_cells and "0.000" not in p_cells
    assert f"{table['p (Holm)'].max():.3f}" in p_cells
    shown = report.styled_comparisons(table, "G minus each setting").to_html()
    assert ">low<" not in shown and ">high<" not in shown and ">95% CI (Holm, 9 comparisons; seeds x subjects)<" in shown
    assert "&lt; 0.001" in shown and "low" in table.columns  # the frame keeps what code reads
    # Same distribution, nothing to tell apart: most of the eight others tie.
    assert (table["verdict"] == "tie").sum() >= 6
    text = dict(zip(table["G minus"], lines))
    assert "**G** has the lower error" in text["GA"] and "Holm-adjusted over 9 comparisons, seeds x subjects" in text["GA"]
    for s, v in zip(table["G minus"], table["verdict"]):
        assert ("a **tie**" in text[s]) == (v == "tie")
        assert ("lower error" in text[s]) == (v != "tie")


def test_paired_comparison_is_two_level_and_verdict_reads_it():
    runs = study(seeds=(0, 1, 2))
    g = [r for r in runs if r.params["setting"] == "G"]
    res = intervals.paired_comparison(g, g, n=300)
    assert res["estimate"] == 0 and res["tie"] and res["resampled"] == "seeds x subjects"
    assert intervals.verdict_label(res, "G", "G") == "tie"
    worse = [fake_run("GA", k, 5.0) for k in (0, 1, 2)]
    res = intervals.paired_comparison(g, worse, n=300)
    assert res["hi"] < 0 and res["n_seeds_a"] == res["n_seeds_b"] == 3 and res["n_subjects"] == N_SUBJECTS
    assert intervals.verdict_label(res, "G", "GA") == "G better"
    assert "seeds x subjects" in intervals.verdict(res, "G", "GA")


def test_baseline_comparisons_resample_seeds_and_subjects():
    g = [fake_run("G", k) for k in (0, 1, 2)]
    base = g[0].predictions.drop(columns="subject_id").assign(prediction=lambda t: t["bdi"] + 20.0)
    res = intervals.compare_with_predictions(g, base, n=300)
    assert res["hi"] < 0 and res["n_seeds_a"] == 3 and res["n_seeds_b"] == 1
    pooled = intervals.paired_with_predictions(intervals.pooled_predictions(g), base, n=300)
    assert pooled["hi"] < 0 and pooled["resampled"] == "subjects (seed-averaged ensemble)"
    with pytest.raises(ValueError, match="lack 2 Testing videos"):
        intervals.compare_with_predictions(g, base.iloc[:-2], n=100)


def test_comparisons_with_mean_flags_a_setting_that_beats_the_mean():
    runs = [fake_run(s, k, noise=1.0) for s in ("G", "GA") for k in (0, 1)]
    table, lines = intervals.comparisons_with_mean(runs, n=1000)
    assert table["setting"].tolist() == ["GA", "G"]
    assert (table["diff RMSE"] < 0).all() and (table["verdict"] != "tie").all()
    assert all("training mean" in line for line in lines)
    assert "95% CI (Holm, 2 comparisons; seeds x subjects)" in table.columns


def test_lr_and_cross_dataset_tables_name_the_resampled_unit():
    runs = [fake_run("G", k, lr=lr) for lr in (1e-4, 1e-3) for k in (0, 1)] + [fake_run("G", 2, lr=1e-2, stop="diverged")]
    table = intervals.lr_table(runs, "synthetic", chosen=1e-3, n_boot=N_BOOT)
    assert table["learning rate"].tolist() == ["0.0001", "0.001", "0.01"]
    assert table["seeds"].tolist() == [2, 2, 1] and table["diverged"].tolist() == [0, 0, 1]
    assert table["selected on Development"].tolist() == ["", "yes", ""]
    # A run whose Development RMSE blew up and came back shows in the worst column, not in "diverged".
    spike = fake_run("G", 3, lr=1e-2)
    spike.history = pd.DataFrame({"step": [50, 100, 150], "dev_rmse": [9.0, 5091.0, 8.5]})
    table = intervals.lr_table(runs + [spike], "synthetic", chosen=1e-3, n_boot=N_BOOT)
    assert table["worst Dev RMSE measured"].iloc[2] == 5091.0 and table["diverged"].tolist() == [0, 0, 1]
    assert table["worst Dev RMSE measured"].iloc[0] == max(r.metrics["dev"]["rmse"] for r in runs[:2])
    assert table["RMSE 95% CI (seeds x subjects)"].str.match(r"^\[\d+\.\d\d, \d+\.\d\d\]$").all()
    cross = intervals.cross_dataset_table(runs[:2], runs[2:4], "synthetic", "synthetic, seed 1", n_boot=N_BOOT)
    assert cross["tested on"].tolist() == ["synthetic", "synthetic, seed 1"]
    assert {"RMSE 95% CI (seeds x subjects)", "mean predictor RMSE 95% CI (subjects)"} <= set(cross.columns)
    assert intervals.video_interval(runs[:2], n=N_BOOT) == intervals.interval(runs[:2], n=N_BOOT) == cross.iloc[0]["RMSE 95% CI (seeds x subjects)"]


def test_learning_check_reads_development_not_testing():
    dev_only = fake_run("G", 0, constant=("Testing",))  # varies on Development: learned
    test_only = fake_run("GA", 0, constant=("Development",))  # constant on Development: not
    table = report.learning_check([dev_only, test_only]).set_index("setting")
    assert table.loc["G", "learned (all seeds)"] and not table.loc["GA", "learned (all seeds)"]
    assert table.loc["GA", "min_prediction_sd_dev"] == pytest.approx(0.0)
    assert list(table.index) == ["GA", "G"]  # the order of dlga.config.SETTINGS


def test_early_stopping_note_is_computed_from_the_schedule():
    never = report.early_stopping_note(TrainConfig.preset("ci", max_steps=80))
    assert never.startswith("Early stopping (patience 200) cannot fire before step 201: with max_steps 80 it never does")
    can = report.early_stopping_note(TrainConfig.preset("ci", max_steps=300, patience=50),
                                     [fake_run("G", 0, stop="early_stopping"), fake_run("G", 1)])
    assert "can fire from step 51 of 300" in can and "no new minimum after step 250" in can
    assert can.endswith("Measured: 1 of 2 runs stopped early.")
    assert "off" in report.early_stopping_note(TrainConfig.preset("ci", patience=0))


def test_old_predictions_without_subject_read_it_from_the_session(tmp_path):
    old = fake_run("G", 0).predictions.drop(columns="subject_id")
    old.to_csv(tmp_path / rundir.PREDICTIONS, index=False)
    back = rundir.read_predictions(tmp_path)
    assert list(back.columns) == rundir.PREDICTION_COLUMNS
    assert (back["subject_id"] == back["session_id"]).all() and back["subject_id"].iloc[0] == "0_1"


def test_power_table_gives_half_widths_and_counts_kept_checkpoints():
    runs = [fake_run(s, k) for s in ("G", "GA", "LA-CMP+") for k in range(4)]
    runs[5].metrics["best_step"] = runs[5].metrics["steps"]  # one GA run kept its last evaluation
    comparisons, _ = intervals.comparisons_with(runs, "G", n=N_BOOT)
    power = report.power_table(comparisons, runs, ["GA", "LA-CMP+"]).set_index("comparison")
    assert sorted(power.index) == ["G vs GA", "G vs LA-CMP+"]
    row = comparisons.set_index("G minus").loc["GA"]
    assert power.loc["G vs GA", "half-width (BDI)"] == pytest.approx((row["high"] - row["low"]) / 2)
    assert power.loc["G vs GA", "kept checkpoint before the last evaluation"] == "3 of 4"
    assert power.loc["G vs LA-CMP+", "kept checkpoint before the last evaluation"] == "4 of 4"
    assert power["at most 1 BDI"].tolist() == (power["half-width (BDI)"] <= 1).tolist()
    assert report.kept_before_last(runs) == (11, 12)


def test_difficulty_table_puts_the_lowest_setting_first_and_adds_the_floor():
    runs = [fake_run("G", k) for k in range(2)] + [fake_run("GA", k, shift=3.0) for k in range(2)]
    floor = {"rmse_cues": 5.0, "rmse_mean": 10.0, "ratio": 0.5}
    table = report.difficulty_table(runs, floor)
    assert table["reader"].tolist()[:2] == ["G (measured, lowest)", "GA (measured)"]
    g = [r.metrics["test"]["rmse"] for r in runs[:2]]
    assert table.loc[0, "Testing RMSE"] == pytest.approx(np.mean(g))
    assert table.loc[0, "ratio"] == pytest.approx(np.mean(g) / runs[0].metrics["mean_predictor"]["test"]["rmse"])
    assert table.iloc[-1]["ratio"] == 0.5 and table.iloc[-1]["seeds"] == 0
    assert report.difficulty_table([], floor)["reader"].tolist() == ["the cues themselves (least squares on cue values + offsets)"]


def test_seed_counts_and_the_learning_check_sentence_say_what_the_runs_say():
    from dlga.book import prose

    names = ["G"] * 10 + ["GA"] * 10 + ["LA-CMP+"] * 10 + ["A", "B", "C", "D", "E", "F", "LA-CMP-"]
    assert prose.seed_counts(names) == "10 seeds for G, GA and LA-CMP+; 1 for the other 7"
    assert prose.seed_counts(["G", "G", "GA"]) == "2 seeds for G; 1 seed for GA"
    assert prose.seed_counts(["G"]) == "1 seed for G"
    runs = [fake_run(s, k) for s in ("G", "GA") for k in (0, 1)]
    assert prose.learning_check_sentence(report.learning_check(runs)) == "Every setting learned on every seed (Development)."
    runs[3] = fake_run("GA", 1, constant=("Development",))
    text = prose.learning_check_sentence(report.learning_check(runs))
    assert text.startswith("**GA** does not learn on every seed") and "G," not in text


def test_failed_checks_names_each_failed_check_with_its_value_and_target():
    from dlga.book import prose

    checks = pd.DataFrame({"check": ["frames", "Spearman(BDI, mouth_corner_drop)", "error"],
                           "value": ["40/40", 0.341, 0.02], "target": ["all", ">= 0.5", "reported"],
                           "ok": [True, False, None]})
    assert prose.failed_checks(checks) == "**1 of 2** checks with a target fail: Spearman(BDI, mouth_corner_drop): 0.341 against >= 0.5."
    checks.loc[1, "ok"] = True
    assert prose.failed_checks(checks) == "All 2 checks with a target pass."


def test_one_seed_intervals_say_so_and_get_no_verdict():
    runs = [fake_run("G", k) for k in range(4)] + [fake_run("GA", 0, shift=3.0)] + [fake_run("C", k) for k in range(4)]
    table = intervals.ablation_table(runs, "synthetic", n_boot=200).set_index("setting")
    ci = f"RMSE {intervals.CI_LABEL}"
    ga = next(i for i in table.index if i.startswith("GA"))
    assert table.loc[ga, ci].endswith(f"({intervals.ONE_SEED})")
    assert table["seeds that diverged or did not learn"].tolist() == [0] * len(table)
    assert not any(table.loc[i, ci].endswith(f"({intervals.ONE_SEED})") for i in table.index if i.startswith(("G2", "C")))
    comparisons, lines = intervals.comparisons_with(runs, "G", n=500)
    row = comparisons.set_index("G minus").loc["GA"]
    assert row["verdict"] == intervals.ONE_SEED and row["reading"] == "no verdict" and not row["fragile"]
    assert any(line.startswith("G vs GA: subjects only") and "no verdict" in line for line in lines)
    assert comparisons.set_index("G minus").loc["C", "reading"] in ("equivalent within 1 BDI", "inconclusive", "difference")


def test_unequal_seeds_are_named_in_the_conclusion_equal_ones_are_not():
    from dlga.book import prose

    runs = [fake_run("G", k) for k in range(4)] + [fake_run("C", k) for k in range(2)] + [fake_run("GA", k) for k in range(4)]
    comparisons, _ = intervals.comparisons_with(runs, "G", n=300)
    assert comparisons.attrs["unequal_seeds"] == {"C": (4, 2)}
    text = prose.ablation_conclusion(comparisons)
    assert "Seeds are unequal (G 4; C 2): " in text and f"{intervals.UNEQUAL_SEEDS_FAMILY_ERROR:.1%}" in text
    equal, _ = intervals.comparisons_with([r for r in runs if r.params["setting"] != "C"], "G", n=300)
    assert equal.attrs["unequal_seeds"] == {} and "unequal" not in prose.ablation_conclusion(equal)
    with_mean, _ = intervals.comparisons_with_mean(runs, n=300)  # the training mean is one model by nature
    assert with_mean.attrs["unequal_seeds"] == {}


def test_readings_and_fragility_follow_the_interval():
    assert intervals.reading(-0.5, 0.5) == "equivalent within 1 BDI"
    assert intervals.reading(-1.5, 0.5) == "inconclusive"
    assert intervals.reading(0.2, 1.5) == "difference" and intervals.reading(-2.0, -0.1) == "difference"
    assert intervals.is_fragile(-0.1, 0.6)        # an end near 0
    assert intervals.is_fragile(-0.5, 0.9)        # an equivalence whose end is near the +-1 margin
    assert not intervals.is_fragile(-2.0, 2.0) and not intervals.is_fragile(0.6, 2.0)  # 1 and 0.6 BDI from any boundary
    assert intervals.FRAGILE_BDI == 0.55  # the measured cross-ISA move of an interval end (0.51), rounded up
    assert intervals.is_fragile(-0.6, 0.6) and not intervals.is_fragile(-0.6, 0.6, spread=0.25)


# --- tables that fit the page ---------------------------------------------------------------------
def test_a_wide_table_splits_into_core_and_details_each_led_by_its_key():
    frame = pd.DataFrame({"setting": ["G", "A"], "RMSE": [9.1, 9.4], "MAE": [7.0, 7.2], "Dev": [8.8, 9.0]})
    core, details = report.split_columns(frame, ["RMSE", "setting"])
    assert list(core.columns) == ["setting", "RMSE"] and list(details.columns) == ["setting", "MAE", "Dev"]
    assert core["setting"].tolist() == details["setting"].tolist() == ["G", "A"]
    with pytest.raises(KeyError, match=r"no columns \['nope'\]"):
        report.split_columns(frame, ["nope"])


def test_columns_every_row_shares_are_taken_out_once():
    frame = pd.DataFrame({"run id": ["a", "b"], "commit": ["abc", "abc"], "TF": ["2.21.0", "2.21.0"], "seed": [0, 1]})
    varying, shared = report.constant_columns(frame)
    assert list(varying.columns) == ["run id", "seed"] and shared == {"commit": "abc", "TF": "2.21.0"}
    one, none = report.constant_columns(frame.iloc[:1])  # one row: nothing is "shared"
    assert one.equals(frame.iloc[:1]) and none == {}


def test_transposed_tables_keep_counts_whole_and_rates_at_their_precision():
    qc = pd.DataFrame({"videos": [400, 100], "frames_kept": [2245, 560], "detection_rate": [0.9354, 1.0]},
                      index=pd.Index(["Training", "Development"], name="partition"))
    out = report.transposed(qc)
    assert list(out.columns) == ["Training", "Development"] and list(out.index) == ["videos", "frames kept", "detection rate"]
    assert out.loc["frames kept"].tolist() == ["2,245", "560"] and out.loc["detection rate"].tolist() == ["0.935", "1"]


def test_headers_wrap_and_a_collapsed_block_hides_its_table_behind_a_summary():
    html = report.styled(pd.DataFrame({"frames_kept": [1]}), "cap").to_html()
    assert ">frames kept</th>" in html
    block = report.collapsed(report.styled(pd.DataFrame({"parameter": ["preset"]}), "Parameters"), "Parameters <of> this").data
    assert block.startswith('<details class="dlga-collapsed"><summary>Parameters &lt;of&gt; this</summary>')
    assert "<table" in block and block.endswith("</details>")
