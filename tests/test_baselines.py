"""The measured baselines of Tables 7-8: LBP features, the LBP + SVR fit, the training mean."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dlga.book import baselines
from helpers_store import make_store


def test_lbp_histograms_shape_and_normalisation():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, size=(64, 64)).astype(np.uint8)
    h = baselines.lbp_histograms(img, grid=4, points=8, radius=1)
    assert h.shape == (4 * 4 * 10,)
    cells = h.reshape(16, 10)
    np.testing.assert_allclose(cells.sum(axis=1), 1.0, rtol=1e-6)
    assert (h >= 0).all()


def test_lbp_of_a_flat_image_is_one_code():
    h = baselines.lbp_histograms(np.full((32, 32), 128, np.uint8), grid=2).reshape(4, 10)
    # inside a flat image every neighbour equals the centre: uniform code P (= 8); only the
    # border pixels, whose neighbours fall outside, get other codes
    assert (h.argmax(axis=1) == 8).all()
    assert (h[:, 8] > 0.8).all()


def test_lbp_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        baselines.lbp_histograms(np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="grid"):
        baselines.lbp_histograms(np.zeros((4, 4)), grid=8)


def test_video_features_average_frames():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, size=(3, 32, 32, 3)).astype(np.uint8)
    f = baselines.video_features(frames, grid=2)
    assert f.shape == (40,)
    with pytest.raises(ValueError, match="no frames"):
        baselines.video_features(frames[:0])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("bl") / "store", n_videos={"Training": 30, "Development": 12, "Testing": 12},
                      frames_per_video=3)


def test_lbp_svr_learns_and_selects_on_development(store):
    res = baselines.lbp_svr_baseline(store, search={"kernel": ["rbf", "linear"], "C": [1.0, 10.0], "epsilon": [1.0]})
    assert set(res.metrics) == {"train", "dev", "test"}
    pred = res.predictions
    assert set(pred["partition"]) == {"Training", "Development", "Testing"}
    assert list(pred.columns) == ["video_id", "session_id", "partition", "bdi", "prediction", "n_frames"]
    # the chosen parameters are the best on Development among those tried
    assert res.search["dev_rmse"].iloc[0] == pytest.approx(res.search["dev_rmse"].min())
    assert res.metrics["dev"]["rmse"] == pytest.approx(res.search["dev_rmse"].iloc[0], rel=1e-9)
    # the helper store's cue is dark squares at landmarks: LBP + SVR beats the training mean
    mean = baselines.mean_baseline(pred)
    assert res.metrics["test"]["rmse"] < mean.metrics["test"]["rmse"]


def test_lbp_svr_searches_every_sub_grid_with_its_own_keys(store):
    grids = [{"kernel": ["rbf"], "C": [1.0], "epsilon": [1.0], "gamma": [0.01, 0.1]},
             {"kernel": ["linear"], "C": [0.1], "epsilon": [1.0]}]
    res = baselines.lbp_svr_baseline(store, search=grids)
    assert len(res.search) == 3
    assert sorted(res.search["kernel"]) == ["linear", "rbf", "rbf"]
    assert res.search.loc[res.search["kernel"] == "linear", "gamma"].isna().all()
    assert ("gamma" in res.params) == (res.params["kernel"] == "rbf")
    assert [g["kernel"] for g in baselines.DEFAULT_GRID] == [["rbf"], ["linear"]]
    assert max(baselines.DEFAULT_GRID[1]["C"]) == 10.0  # linear C = 100: minutes per fit in libsvm


def test_mean_baseline_predicts_training_mean():
    pred = pd.DataFrame({"video_id": list("abcd"), "session_id": list("abcd"),
                         "partition": ["Training", "Training", "Development", "Testing"],
                         "bdi": [10.0, 20.0, 0.0, 30.0], "prediction": 0.0, "n_frames": 1})
    res = baselines.mean_baseline(pred)
    assert res.params["value"] == 15.0
    assert res.metrics["test"]["rmse"] == pytest.approx(15.0)
    assert res.metrics["dev"]["mae"] == pytest.approx(15.0)
