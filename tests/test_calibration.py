"""Calibration of the two-level paired interval on simulated predictions (no training).

A simulated study is the demo's Testing partition: its number of subjects, two videos each
(one label), ten seeds per setting. A video's error is

    scale * ((1 + g_s) * (u_j + w_sj + e_sjv) + b_s)

with ``u_j`` the subject's error, shared by every setting and seed (a hard subject is hard for
every model; it includes the shrinkage of predictions toward the mean), ``g_s`` and ``b_s`` a
seed's overall quality and bias, ``w_sj`` the seed's error on that subject and ``e_sjv`` the
video's. The sizes give a per-video RMSE near 9.3 BDI against labels of sd 12 (about 0.78 of
the mean predictor's) and a seed-to-seed sd of the per-seed RMSE near 0.65, the kind of spread
the demo runs show. Scaling one setting's error by ``1 + 1 / RMSE`` makes a true difference
of 1 BDI. The book's test must call a tie between two settings drawn from one distribution
in at least 93 % of 400 studies, and find the 1-BDI difference in at least 80 %.

Each study's bootstrap has ``N_RESAMPLES`` = 1000 replicates (the book uses more): enough for
a 95 % interval (25 draws in each tail), and the 800 comparisons run in seconds.
"""

import numpy as np
import pandas as pd
import pytest

from data_prep.synthetic import COHORT_PRESETS, TASKS
from dlga.training import metrics

N_STUDIES = 400
N_RESAMPLES = 1000
N_SEEDS = 10
N_SUBJECTS = COHORT_PRESETS["demo"].n_test
LABEL_SD = COHORT_PRESETS["demo"].bdi_sd
SHRINK = 0.5  # predictions move half-way to the mean: the error falls with the label
SUBJECT_SD, SEED_SUBJECT_SD, VIDEO_SD = 5.0, 4.0, 3.0
SEED_SCALE_SD, SEED_BIAS_SD = 0.05, 1.0
RMSE = float(np.sqrt((SHRINK * LABEL_SD) ** 2 + SUBJECT_SD**2 + SEED_SUBJECT_SD**2 + VIDEO_SD**2 + SEED_BIAS_SD**2))
ONE_BDI_WORSE = 1 + 1 / RMSE


def simulate_settings(rng: np.random.Generator, scales, n_seeds, seed_noise: float = 1.0) -> list[pd.DataFrame]:
    """Long tables (seed, video_id, session_id, bdi, prediction) of settings on one test set.

    Setting ``i`` has ``n_seeds[i]`` seeds and its error scaled by ``scales[i]``; the subjects,
    their labels and their errors ``u_j`` are shared by all. ``seed_noise`` scales the three
    seed-level terms (quality, bias, seed x subject error). tests/test_family.py uses it too.
    """
    n_videos = len(TASKS)
    labels = rng.uniform(0, LABEL_SD * np.sqrt(12), N_SUBJECTS)  # uniform with sd LABEL_SD
    subject_error = -SHRINK * (labels - labels.mean()) + rng.normal(0, SUBJECT_SD, N_SUBJECTS)
    video = np.arange(N_SUBJECTS * n_videos)

    def setting(scale: float, seeds: int) -> pd.DataFrame:
        base = pd.DataFrame({
            "seed": np.repeat(np.arange(seeds), len(video)),
            "video_id": np.tile(video.astype(str), seeds),
            "session_id": np.tile((video // n_videos).astype(str), seeds),
            "bdi": np.tile(np.repeat(labels, n_videos), seeds),
        })
        quality = 1 + rng.normal(0, seed_noise * SEED_SCALE_SD, (seeds, 1, 1))
        bias = rng.normal(0, seed_noise * SEED_BIAS_SD, (seeds, 1, 1))
        seed_subject = rng.normal(0, seed_noise * SEED_SUBJECT_SD, (seeds, N_SUBJECTS, 1))
        noise = rng.normal(0, VIDEO_SD, (seeds, N_SUBJECTS, n_videos))
        error = scale * (quality * (subject_error[None, :, None] + seed_subject + noise) + bias)
        return base.assign(prediction=base["bdi"].to_numpy() + error.ravel())

    return [setting(scale, seeds) for scale, seeds in zip(scales, n_seeds, strict=True)]


def _study(rng: np.random.Generator, scale_b: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two settings of N_SEEDS seeds on one test set, the second's error scaled by ``scale_b``."""
    a, b = simulate_settings(rng, (1.0, scale_b), (N_SEEDS, N_SEEDS))
    return a, b


def _run_studies(scale_b: float, rng_seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(rng_seed)
    rows = []
    for i in range(N_STUDIES):
        a, b = _study(rng, scale_b)
        res = metrics.paired_two_level_bootstrap(b, a, "rmse", n=N_RESAMPLES, seed=i)
        per_seed = a.assign(se=(a["prediction"] - a["bdi"]) ** 2).groupby("seed")["se"].mean() ** 0.5
        mean_predictor = np.sqrt(np.mean((a["bdi"] - a["bdi"].mean()) ** 2))
        rows.append({**{k: res[k] for k in ("estimate", "lo", "hi", "tie")},
                     "rmse": per_seed.mean(), "seed_sd": per_seed.std(), "ratio": per_seed.mean() / mean_predictor})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def null_studies():
    return _run_studies(1.0, rng_seed=1)


@pytest.fixture(scope="module")
def one_bdi_studies():
    return _run_studies(ONE_BDI_WORSE, rng_seed=2)


def test_simulation_is_as_hard_as_the_demo_should_be(null_studies):
    # Not the test itself: the simulated studies must look like the demo's Testing partition.
    assert 9.0 <= null_studies["rmse"].mean() <= 10.0
    assert 0.7 <= null_studies["ratio"].mean() <= 0.85
    assert 0.4 <= null_studies["seed_sd"].mean() <= 0.9


def test_same_distribution_is_a_tie_in_at_least_93_percent(null_studies):
    assert null_studies["tie"].mean() >= 0.93
    assert abs(null_studies["estimate"].mean()) < 0.1


def test_one_bdi_difference_is_found_in_at_least_80_percent(one_bdi_studies):
    assert one_bdi_studies["estimate"].mean() == pytest.approx(1.0, abs=0.1)  # the difference is 1 BDI
    found = (~one_bdi_studies["tie"]) & (one_bdi_studies["lo"] > 0)  # and with the right sign
    assert found.mean() >= 0.80
