"""Metric functions on values worked out by hand."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dlga.training import metrics


def test_mae_rmse_known_values():
    y, p = [0, 10, 20], [3, 6, 20]  # errors 3, -4, 0
    assert metrics.mae(y, p) == pytest.approx(7 / 3)
    assert metrics.rmse(y, p) == pytest.approx(np.sqrt(25 / 3))


def test_mae_rmse_validate_lengths():
    with pytest.raises(ValueError, match="differ in length"):
        metrics.rmse([1, 2], [1])
    with pytest.raises(ValueError, match="empty"):
        metrics.mae([], [])


def test_video_and_session_scores():
    frames = pd.DataFrame({
        "video_id": ["a_F", "a_F", "a_N", "b_F", "b_F", "b_F"],
        "session_id": ["a", "a", "a", "b", "b", "b"],
        "partition": "Testing",
        "bdi": [10, 10, 10, 30, 30, 30],
        "prediction": [8, 12, 4, 30, 33, 36],
    })
    videos = metrics.video_scores(frames)
    assert videos["video_id"].tolist() == ["a_F", "a_N", "b_F"]
    assert videos["prediction"].tolist() == [10, 4, 33]
    assert videos["n_frames"].tolist() == [2, 1, 3]
    sessions = metrics.session_scores(videos)
    assert sessions["prediction"].tolist() == [7, 33]  # mean of the session's videos
    assert sessions["n_videos"].tolist() == [2, 1]
    summary = metrics.summarize(videos)
    assert summary["rmse"] == pytest.approx(np.sqrt((0 + 36 + 9) / 3))
    assert summary["session_mae"] == pytest.approx((3 + 3) / 2)


def test_severity_bands_and_confusion():
    # Table 1 edges: 0-13 minimal, 14-19 mild, 20-28 moderate, 29-63 severe.
    assert metrics.severity_band([0, 13, 13.4, 13.6, 19, 20, 28, 29, 63, 70, -2]).tolist() == [
        0, 0, 0, 1, 1, 2, 2, 3, 3, 3, 0
    ]
    table = metrics.band_confusion([5, 5, 15, 25, 40], [5, 15, 15, 40, 22])
    assert table.shape == (4, 4)
    assert table.loc["minimal", "minimal"] == 1
    assert table.loc["minimal", "mild"] == 1
    assert table.loc["mild", "mild"] == 1
    assert table.loc["moderate", "severe"] == 1
    assert table.loc["severe", "moderate"] == 1
    assert table.to_numpy().sum() == 5


def test_bootstrap_constant_error_has_zero_width():
    y = np.arange(30.0)
    ci = metrics.bootstrap_ci(y, y + 2.5, "rmse", n=500, seed=1)
    assert ci["value"] == ci["low"] == ci["high"] == pytest.approx(2.5)
    ci = metrics.bootstrap_ci(y, y - 1.0, "mae", n=500, seed=1)
    assert (ci["low"], ci["high"]) == pytest.approx((1.0, 1.0))


def test_bootstrap_interval_contains_value_and_is_seeded():
    rng = np.random.default_rng(0)
    y = rng.uniform(0, 40, 60)
    p = y + rng.normal(0, 5, 60)
    a = metrics.bootstrap_ci(y, p, "rmse", n=1000, seed=3)
    b = metrics.bootstrap_ci(y, p, "rmse", n=1000, seed=3)
    assert a == b
    assert a["low"] < a["value"] < a["high"]
    custom = metrics.bootstrap_ci(y, p, metrics.rmse, n=200, seed=3)  # the slow path agrees
    fast = metrics.bootstrap_ci(y, p, "rmse", n=200, seed=3)
    assert (custom["low"], custom["high"]) == pytest.approx((fast["low"], fast["high"]))


def test_paired_bootstrap_sign_and_tie():
    rng = np.random.default_rng(0)
    y = rng.uniform(0, 40, 80)
    good = y + rng.normal(0, 2, 80)
    bad = y + rng.normal(0, 8, 80)
    res = metrics.paired_bootstrap(y, good, bad, "rmse", n=1000, seed=0)
    assert res["diff"] < 0 and res["high"] < 0  # a is clearly better
    same = metrics.paired_bootstrap(y, good, good, "rmse", n=200, seed=0)
    assert same["diff"] == same["low"] == same["high"] == 0
    # A constant shift of 1 BDI point on every video: the RMSE difference is exactly known.
    shifted = metrics.paired_bootstrap(y, y + 2, y + 1, "rmse", n=200, seed=0)
    assert (shifted["low"], shifted["mean_diff"], shifted["high"]) == pytest.approx((1, 1, 1))


def test_mean_predictor():
    assert metrics.mean_predictor([10, 20, 30], 2).tolist() == [20, 20]
    with pytest.raises(ValueError, match="empty"):
        metrics.mean_predictor([], 3)


# --- two-level intervals (seeds x subjects) ---------------------------------------------------
def _long_table(rng, n_seeds=5, n_subjects=40, videos=2, error_sd=6.0, seeds=None):
    """One setting: (seed, video_id, session_id, bdi, prediction), subject effects shared by seeds."""
    labels = rng.uniform(0, 40, n_subjects)
    subject_error = rng.normal(0, error_sd, n_subjects)
    rows = []
    for s in seeds if seeds is not None else range(n_seeds):
        seed_error = rng.normal(0, error_sd / 3, n_subjects)
        for v in range(videos):
            rows.append(pd.DataFrame({
                "seed": s, "video_id": [f"{j}_{v}" for j in range(n_subjects)],
                "session_id": [str(j) for j in range(n_subjects)], "bdi": labels,
                "prediction": labels + subject_error + seed_error + rng.normal(0, 2, n_subjects),
            }))
    return pd.concat(rows, ignore_index=True)


def test_two_level_estimate_is_the_mean_of_per_seed_metrics_and_inside_its_interval():
    table = _long_table(np.random.default_rng(0))
    per_seed = [metrics.rmse(g["bdi"], g["prediction"]) for _, g in table.groupby("seed")]
    res = metrics.two_level_bootstrap(table, "rmse", n=500, seed=0)
    assert res["estimate"] == pytest.approx(np.mean(per_seed))
    assert res["lo"] < res["estimate"] < res["hi"]
    assert (res["n_seeds"], res["n_subjects"], res["n_videos"]) == (5, 40, 80)
    assert (res["cluster"], res["resampled"]) == ("session_id", "seeds x subjects")
    mae = metrics.two_level_bootstrap(table, "mae", n=500, seed=0)
    per_seed_mae = [metrics.mae(g["bdi"], g["prediction"]) for _, g in table.groupby("seed")]
    assert mae["estimate"] == pytest.approx(np.mean(per_seed_mae))
    assert mae["lo"] < mae["estimate"] < mae["hi"]


def test_two_level_is_deterministic_given_its_seed():
    table = _long_table(np.random.default_rng(1))
    assert metrics.two_level_bootstrap(table, n=300, seed=4) == metrics.two_level_bootstrap(table, n=300, seed=4)
    assert metrics.two_level_bootstrap(table, n=300, seed=4) != metrics.two_level_bootstrap(table, n=300, seed=5)
    other = table.assign(prediction=table["prediction"] + np.random.default_rng(2).normal(0, 3, len(table)))
    assert metrics.paired_two_level_bootstrap(table, other, n=300, seed=4) == metrics.paired_two_level_bootstrap(
        table, other, n=300, seed=4)


def test_two_level_resamples_subjects_not_videos():
    # Each video copied: a subject's evidence is unchanged, so the interval must not narrow,
    # while a bootstrap over videos narrows by about sqrt(2).
    table = _long_table(np.random.default_rng(3), videos=1)
    twice = pd.concat([table, table.assign(video_id=table["video_id"] + "_copy")], ignore_index=True)
    once = metrics.two_level_bootstrap(table, n=1000, seed=0)
    doubled = metrics.two_level_bootstrap(twice, n=1000, seed=0)
    assert (doubled["lo"], doubled["estimate"], doubled["hi"]) == pytest.approx((once["lo"], once["estimate"], once["hi"]))
    seed0, seed0_twice = table[table["seed"] == 0], twice[twice["seed"] == 0]
    v1 = metrics.bootstrap_ci(seed0["bdi"], seed0["prediction"], n=2000, seed=0)
    v2 = metrics.bootstrap_ci(seed0_twice["bdi"], seed0_twice["prediction"], n=2000, seed=0)
    assert (v2["high"] - v2["low"]) < 0.8 * (v1["high"] - v1["low"])


def test_two_level_holds_training_variance():
    # The same predictions with seed offsets that differ: a wider interval than with none.
    rng = np.random.default_rng(4)
    table = _long_table(rng, n_seeds=1)
    calm = pd.concat([table.assign(seed=s) for s in range(6)], ignore_index=True)
    shaky = pd.concat([table.assign(seed=s, prediction=table["prediction"] + 3 * s) for s in range(6)], ignore_index=True)
    a, b = metrics.two_level_bootstrap(calm, n=1000), metrics.two_level_bootstrap(shaky, n=1000)
    assert (b["hi"] - b["lo"]) > 1.5 * (a["hi"] - a["lo"])


def test_paired_two_level_sign_tie_and_p():
    rng = np.random.default_rng(5)
    good = _long_table(rng, error_sd=4.0)
    bad = good.assign(prediction=good["bdi"] + 2.0 * (good["prediction"] - good["bdi"]))  # errors doubled
    res = metrics.paired_two_level_bootstrap(good, bad, n=1000, seed=0)
    assert res["estimate"] < 0 and res["hi"] < 0 and not res["tie"] and res["p"] < 0.05
    same = metrics.paired_two_level_bootstrap(good, good, n=500, seed=0, pair_seeds=True)
    assert same["estimate"] == same["lo"] == same["hi"] == 0 and same["tie"] and same["p"] == 1
    assert (res["n_seeds_a"], res["n_seeds_b"], res["n_subjects"]) == (5, 5, 40)


def test_paired_two_level_allows_different_seed_counts_but_pairs_only_equal_seeds():
    rng = np.random.default_rng(6)
    a = _long_table(rng, n_seeds=5)
    b = a[a["seed"] < 3].assign(prediction=lambda t: t["prediction"] + 1)
    res = metrics.paired_two_level_bootstrap(a, b, n=200)
    assert (res["n_seeds_a"], res["n_seeds_b"]) == (5, 3)
    with pytest.raises(ValueError, match="same seeds"):
        metrics.paired_two_level_bootstrap(a, b, n=200, pair_seeds=True)


def test_two_level_rejects_tables_of_different_videos():
    rng = np.random.default_rng(7)
    a = _long_table(rng)
    with pytest.raises(ValueError, match="did not predict the same videos"):
        metrics.paired_two_level_bootstrap(a, a[a["video_id"] != "3_1"], n=100)
    with pytest.raises(ValueError, match="seed 2 predicted 79 of 80"):
        metrics.two_level_bootstrap(a.drop(a[(a["seed"] == 2) & (a["video_id"] == "0_0")].index), n=100)
    with pytest.raises(ValueError, match="different subjects"):
        metrics.paired_two_level_bootstrap(a, a.assign(session_id=a["video_id"]), n=100)
    with pytest.raises(ValueError, match="more than one session_id"):
        moved = a.copy()
        moved.loc[(moved["seed"] == 1) & (moved["video_id"] == "0_0"), "session_id"] = "1"
        metrics.two_level_bootstrap(moved, n=100)
    with pytest.raises(ValueError, match="subject_id"):
        metrics.two_level_bootstrap(a.drop(columns="session_id"), n=100)
    with pytest.raises(ValueError, match="mixes partitions"):
        metrics.two_level_bootstrap(a.assign(partition=np.where(a["seed"] == 0, "Development", "Testing")), n=100)
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.two_level_bootstrap(a, "r2", n=100)


def test_subject_column_is_preferred_to_session():
    # AVEC2014: a subject may have two sessions; both stay together in every resample.
    table = _long_table(np.random.default_rng(8))
    table["subject_id"] = (table["session_id"].astype(int) // 2).astype(str)
    res = metrics.two_level_bootstrap(table, n=100)
    assert (res["cluster"], res["n_subjects"]) == ("subject_id", 20)
    assert metrics.two_level_bootstrap(table, n=100, cluster="session_id")["n_subjects"] == 40


def test_holm_adjust_known_values():
    # Sorted 0.01, 0.02, 0.03, 0.5 with k = 4: 0.04, 0.06, 0.06 (monotone), 0.5.
    adjusted = metrics.holm_adjust([0.03, 0.5, 0.01, 0.02])
    np.testing.assert_allclose(adjusted, [0.06, 0.5, 0.04, 0.06])
    np.testing.assert_allclose(metrics.holm_adjust([0.4, 0.9]), [0.8, 0.9])
    assert metrics.holm_adjust([0.3])[0] == 0.3
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.holm_adjust([0.2, 1.5])


@pytest.mark.parametrize("interval", ["t", "percentile"])
def test_holm_comparisons_tie_means_adjusted_interval_contains_zero(interval):
    rng = np.random.default_rng(9)
    ref = _long_table(rng, error_sd=5.0)
    err = ref["prediction"] - ref["bdi"]
    others = {f"x{k}": ref.assign(prediction=ref["bdi"] + err * f + rng.normal(0, 1, len(ref)))
              for k, f in enumerate((1.0, 1.05, 1.15, 1.3, 1.6))}
    table = metrics.holm_comparisons(ref, others, n=2000, seed=0, interval=interval)
    assert table["setting"].tolist() == list(others)
    np.testing.assert_allclose(table["p_holm"], metrics.holm_adjust(table["p"]))
    contains_zero = (table["lo_holm"] <= 0) & (table["hi_holm"] >= 0)
    assert (table["tie"] == contains_zero).all()
    assert (table["tie"] == (table["p_holm"] >= 0.05)).all()
    assert (table["lo_holm"] <= table["lo"]).all() and (table["hi_holm"] >= table["hi"]).all()
    assert sorted(table["holm_rank"]) == [1, 2, 3, 4, 5]
    assert not table.loc[4, "tie"] and table.loc[4, "estimate"] < 0  # errors x1.6: the reference is better
    assert table.loc[0, "tie"]
    assert table.attrs["resampled"] == "seeds x subjects" and table.attrs["interval"] == interval
    assert (table["se"] > 0).all() and (table["df"] >= 4).all()


@pytest.mark.parametrize("interval", ["t", "percentile"])
def test_two_level_perfect_predictions_have_a_zero_interval(interval):
    table = _long_table(np.random.default_rng(10))
    res = metrics.two_level_bootstrap(table.assign(prediction=table["bdi"]), n=200, interval=interval)
    assert res["estimate"] == res["lo"] == res["hi"] == res["se"] == 0


def test_interval_must_be_t_or_percentile():
    table = _long_table(np.random.default_rng(11), n_subjects=10)
    for call in (lambda: metrics.two_level_bootstrap(table, n=50, interval="normal"),
                 lambda: metrics.paired_two_level_bootstrap(table, table, n=50, interval="bca"),
                 lambda: metrics.holm_comparisons(table, {"x": table}, n=50, interval="T")):
        with pytest.raises(ValueError, match="unknown interval"):
            call()


def test_t_interval_is_estimate_plus_t_quantile_times_se():
    table = _long_table(np.random.default_rng(12))
    res = metrics.two_level_bootstrap(table, n=2000, seed=0, level=0.9)
    assert res["interval"] == "t"
    # Welch-Satterthwaite: between the smaller part's df (5 seeds - 1) and the sum (4 + 40 subjects - 1).
    assert 4 <= res["df"] <= 4 + 39
    half = stats.t.isf(0.05, res["df"]) * res["se"]
    assert (res["lo"], res["hi"]) == pytest.approx((res["estimate"] - half, res["estimate"] + half))
    # The same draws: the spread the t interval uses is that of the percentile one.
    pct = metrics.two_level_bootstrap(table, n=2000, seed=0, level=0.9, interval="percentile")
    assert (pct["estimate"], pct["se"], pct["df"]) == (res["estimate"], res["se"], res["df"])
    assert res["hi"] - res["lo"] == pytest.approx(pct["hi"] - pct["lo"], rel=0.25)


def test_fewer_seeds_give_fewer_degrees_of_freedom_and_a_wider_quantile():
    rng = np.random.default_rng(13)
    many, few = _long_table(rng, n_seeds=10), _long_table(rng, n_seeds=3)
    assert metrics.two_level_bootstrap(few, n=1000)["df"] < metrics.two_level_bootstrap(many, n=1000)["df"]
    # One seed: no seed part, only the subjects' J - 1 = 39.
    one = metrics.two_level_bootstrap(few[few["seed"] == 0], n=1000)
    assert one["df"] == pytest.approx(39)


def test_paired_t_p_value_agrees_with_its_interval():
    rng = np.random.default_rng(14)
    a = _long_table(rng, error_sd=4.0)
    err = a["prediction"] - a["bdi"]
    for f in (1.0, 1.03, 1.1, 1.3):
        b = a.assign(prediction=a["bdi"] + f * err + rng.normal(0, 1, len(a)))
        res = metrics.paired_two_level_bootstrap(a, b, n=1000, seed=0)
        t = abs(res["estimate"]) / res["se"]
        assert res["p"] == pytest.approx(min(1.0, 2 * stats.t.sf(t, res["df"])))
        assert res["tie"] == (res["p"] >= 0.05)
        assert res["df"] <= 4 + 4 + 39


def test_paired_one_seed_side_has_no_seed_part():
    rng = np.random.default_rng(15)
    a = _long_table(rng, n_seeds=5)
    b = a[a["seed"] == 0].assign(prediction=lambda t: t["prediction"] + 0.5)
    res = metrics.paired_two_level_bootstrap(a, b, n=1000)
    assert (res["n_seeds_a"], res["n_seeds_b"]) == (5, 1)
    assert res["df"] <= 4 + 39  # a's seeds and the subjects; b's training variance is not seen
    both_one = metrics.paired_two_level_bootstrap(a[a["seed"] == 0], b, n=1000)
    assert both_one["df"] == pytest.approx(39)
    # Shared seeds (pair_seeds): one seed part of S - 1, not two.
    paired = metrics.paired_two_level_bootstrap(a, a.assign(prediction=a["prediction"] * 1.05), n=1000, pair_seeds=True)
    assert 4 <= paired["df"] <= 4 + 39
