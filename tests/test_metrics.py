"""Metric functions on values worked out by hand."""

import numpy as np
import pandas as pd
import pytest

from dlga import metrics


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
