"""Evaluation: per-video and per-session scores, MAE/RMSE, severity bands, bootstrap intervals.

Plain functions in the scikit-learn style: arrays or DataFrames in, numbers or DataFrames out,
nothing stateful. The paper's Eq. 8-9 average over *subjects*; we read a subject's prediction
as the mean over the frames of a video (Decisions: Architecture) and, for AVEC2014, of a
session's two videos (Freeform and Northwind).

Two families of intervals live here. The book's tables and verdicts use the two-level ones
(:func:`two_level_bootstrap`, :func:`paired_two_level_bootstrap`, :func:`holm_comparisons`):
they resample seeds (runs) and subjects, the unit of evidence, as the book's Decisions chapter
(book/decisions.md, "Statistics") fixes. :func:`bootstrap_ci` and :func:`paired_bootstrap`
resample single videos of one set of predictions; they stay for quick looks at one run.

Units: BDI-II points (0-63) everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import pandas as pd
from scipy import stats

# BDI-II severity bands (paper Table 1): inclusive upper bounds.
BANDS: tuple[tuple[str, int, int], ...] = (
    ("minimal", 0, 13),
    ("mild", 14, 19),
    ("moderate", 20, 28),
    ("severe", 29, 63),
)
BAND_NAMES = tuple(name for name, _, _ in BANDS)

# Columns carried from frames to videos: constant within a video.
_VIDEO_COLUMNS = ("subject_id", "session_id", "partition", "bdi")


def _as_1d(name: str, values) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}; pass one value per video")
    return arr


def _check_pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = _as_1d("y_true", y_true), _as_1d("y_pred", y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_true and y_pred differ in length ({len(y_true)} vs {len(y_pred)}); "
            "pass one prediction per label"
        )
    if len(y_true) == 0:
        raise ValueError("y_true is empty: no videos to evaluate")
    return y_true, y_pred


def mae(y_true, y_pred) -> float:
    """Mean absolute error (paper Eq. 8), in BDI points. Inputs: (N,) labels and predictions."""
    y_true, y_pred = _check_pair(y_true, y_pred)
    return float(np.mean(np.abs(y_true - y_pred)))


def rmse(y_true, y_pred) -> float:
    """Root mean squared error (paper Eq. 9), in BDI points. Inputs: (N,) labels and predictions."""
    y_true, y_pred = _check_pair(y_true, y_pred)
    return float(np.sqrt(np.mean((y_true - y_pred) ** 2)))


METRICS: dict[str, Callable] = {"mae": mae, "rmse": rmse}


def video_scores(frame_predictions: pd.DataFrame) -> pd.DataFrame:
    """Average frame predictions into one score per video.

    Args:
        frame_predictions: one row per frame with ``video_id`` and ``prediction`` and,
            optionally, ``subject_id``, ``session_id``, ``partition``, ``bdi`` (constant
            within a video).

    Returns:
        One row per video in order of first appearance: ``video_id``, the optional columns,
        ``prediction`` (mean over frames) and ``n_frames``.
    """
    missing = [c for c in ("video_id", "prediction") if c not in frame_predictions.columns]
    if missing:
        raise ValueError(f"frame_predictions lacks columns {missing}; it needs video_id and prediction")
    keep = [c for c in _VIDEO_COLUMNS if c in frame_predictions.columns]
    grouped = frame_predictions.groupby("video_id", sort=False)
    out = grouped[keep].first() if keep else pd.DataFrame(index=grouped.size().index)
    out["prediction"] = grouped["prediction"].mean()
    out["n_frames"] = grouped.size()
    return out.reset_index()


def session_scores(videos: pd.DataFrame) -> pd.DataFrame:
    """Average video scores into one per session (AVEC2014: Freeform and Northwind).

    Args:
        videos: output of :func:`video_scores`, with ``session_id``, ``bdi``, ``prediction``.

    Returns:
        One row per session: ``session_id``, ``partition`` (if present), ``bdi``,
        ``prediction`` (mean over the session's videos), ``n_videos``.
    """
    missing = [c for c in ("session_id", "bdi", "prediction") if c not in videos.columns]
    if missing:
        raise ValueError(f"videos lacks columns {missing}; compute them with video_scores first")
    grouped = videos.groupby("session_id", sort=False)
    keep = [c for c in ("partition", "bdi") if c in videos.columns]
    out = grouped[keep].first()
    out["prediction"] = grouped["prediction"].mean()
    out["n_videos"] = grouped.size()
    return out.reset_index()


def severity_band(bdi) -> np.ndarray:
    """BDI-II severity band index (0 minimal, 1 mild, 2 moderate, 3 severe) of each score.

    Predictions are continuous: a score is put in the band whose range contains it after
    rounding to the nearest integer and clipping to 0-63.
    """
    scores = np.clip(np.rint(np.asarray(bdi, dtype=np.float64)), 0, 63)
    upper = np.array([hi for _, _, hi in BANDS[:-1]])
    return np.searchsorted(upper, scores, side="left").astype(np.int64)


def band_confusion(y_true, y_pred) -> pd.DataFrame:
    """4x4 confusion counts of severity bands: rows true band, columns predicted band."""
    y_true, y_pred = _check_pair(y_true, y_pred)
    t, p = severity_band(y_true), severity_band(y_pred)
    counts = np.zeros((len(BANDS), len(BANDS)), dtype=np.int64)
    np.add.at(counts, (t, p), 1)
    return pd.DataFrame(
        counts,
        index=pd.Index(BAND_NAMES, name="true"),
        columns=pd.Index(BAND_NAMES, name="predicted"),
    )


def _metric_fn(metric: str | Callable) -> Callable:
    if callable(metric):
        return metric
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {sorted(METRICS)} or pass a function")
    return METRICS[metric]


def _resample_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    if n_boot < 1:
        raise ValueError(f"n must be a positive number of bootstrap resamples, got {n_boot!r}")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _vectorised(metric: Callable) -> Callable | None:
    # Fast paths for the two metrics the book uses; other functions are applied row by row.
    if metric is mae:
        return lambda t, p: np.mean(np.abs(t - p), axis=-1)
    if metric is rmse:
        return lambda t, p: np.sqrt(np.mean((t - p) ** 2, axis=-1))
    return None


def _apply(metric: Callable, t: np.ndarray, p: np.ndarray) -> np.ndarray:
    fast = _vectorised(metric)
    if fast is not None:
        return fast(t, p)
    return np.array([metric(ti, pi) for ti, pi in zip(t, p)])


def bootstrap_ci(
    y_true, y_pred, metric: str | Callable = "rmse", n: int = 2000, seed: int = 0, level: float = 0.95
) -> dict[str, float]:
    """Percentile bootstrap interval of a metric over videos (resampled with replacement).

    Resamples **videos** of one set of predictions: it holds neither training variance nor
    the pairing of a subject's videos, so it is too narrow for a setting's interval. The
    book's tables use :func:`two_level_bootstrap` (seeds x subjects) instead.

    Args:
        y_true, y_pred: (N,) labels and predictions, one per video (or session).
        metric: ``"rmse"``, ``"mae"`` or a function ``f(y_true, y_pred) -> float``.
        n: number of resamples. seed: seeds the resampling. level: coverage of the interval.

    Returns:
        ``{"value": metric on all videos, "low": ..., "high": ..., "level": level, "n": n}``.
    """
    y_true, y_pred = _check_pair(y_true, y_pred)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    fn = _metric_fn(metric)
    idx = _resample_indices(len(y_true), n, seed)
    stats = _apply(fn, y_true[idx], y_pred[idx])
    alpha = (1 - level) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return {"value": float(fn(y_true, y_pred)), "low": float(low), "high": float(high), "level": level, "n": n}


def paired_bootstrap(
    y_true,
    pred_a,
    pred_b,
    metric: str | Callable = "rmse",
    n: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """Paired bootstrap of ``metric(a) - metric(b)`` on the same videos.

    Resamples **videos** of one set of predictions per model (no training variance, a
    subject's videos not kept together). The book's comparisons use
    :func:`paired_two_level_bootstrap` and :func:`holm_comparisons` (seeds x subjects).

    Both models are scored on the same resampled videos, so video difficulty cancels. A
    negative difference means model ``a`` has the lower (better) error. An interval that
    contains 0 is reported as a tie.

    Returns:
        ``{"diff": observed difference, "mean_diff": mean over resamples, "low", "high",
        "level", "n"}``.
    """
    y_true, pred_a = _check_pair(y_true, pred_a)
    _, pred_b = _check_pair(y_true, pred_b)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    fn = _metric_fn(metric)
    idx = _resample_indices(len(y_true), n, seed)
    t = y_true[idx]
    diffs = _apply(fn, t, pred_a[idx]) - _apply(fn, t, pred_b[idx])
    alpha = (1 - level) / 2
    low, high = np.quantile(diffs, [alpha, 1 - alpha])
    return {
        "diff": float(fn(y_true, pred_a) - fn(y_true, pred_b)),
        "mean_diff": float(np.mean(diffs)),
        "low": float(low),
        "high": float(high),
        "level": level,
        "n": n,
    }


# --- two-level intervals: seeds (runs) x subjects ---------------------------------------------
# A setting's estimand is the Testing metric of one trained model of it, averaged over seeds;
# its uncertainty has two sources, training (which seed) and the test sample (which subjects).
# Every seed scores the same subjects (a crossed design), so one bootstrap replicate draws one
# resample of the subjects, applied to every seed and to both sides of a comparison, and a
# resample of each side's seeds. Resampling both at once (Owen's pigeonhole bootstrap) counts
# the seed x subject interaction twice and is too wide to find a 1-BDI difference at the demo's
# size; a replicate here adds a seed deviation (subjects kept) to a subject deviation (seeds
# kept) whose interaction share is removed (see _combine). tests/test_calibration.py checks
# the result on simulated studies.
# Subjects, not videos: a subject's videos share a label and a face (Decisions: Statistics).

RESAMPLED = "seeds x subjects"
_TWO_LEVEL_METRICS = ("rmse", "mae")
_TABLE_COLUMNS = ("seed", "video_id", "bdi", "prediction")


@dataclass(frozen=True)
class _SeedSubjectLoss:
    """One setting's losses summed per (seed, subject); the arrays the bootstrap multiplies."""

    seeds: np.ndarray  # (S,) seed values, sorted
    videos: np.ndarray  # (V,) video ids, sorted
    subjects: np.ndarray  # (J,) subject ids, sorted
    subject_of_video: np.ndarray  # (V,) index into subjects
    bdi: np.ndarray  # (V,) label of each video
    sums: np.ndarray  # (S, J) squared (rmse) or absolute (mae) errors summed over a subject's videos
    counts: np.ndarray  # (J,) videos per subject


def _cluster_column(predictions: pd.DataFrame, cluster: str | None, name: str) -> str:
    if cluster is not None:
        if cluster not in predictions.columns:
            raise ValueError(f"{name} has no column {cluster!r} to cluster videos by; columns: {list(predictions.columns)}")
        return cluster
    for candidate in ("subject_id", "session_id"):
        if candidate in predictions.columns and predictions[candidate].notna().all():
            return candidate
    raise ValueError(
        f"{name} needs a subject_id (or session_id) column: the bootstrap resamples subjects, "
        "all of a subject's videos together"
    )


def _seed_subject_loss(predictions: pd.DataFrame, metric: str, cluster: str, name: str) -> _SeedSubjectLoss:
    """Validate one setting's long table and sum its losses per (seed, subject)."""
    if not isinstance(predictions, pd.DataFrame):
        raise ValueError(f"{name} must be a DataFrame with columns {list(_TABLE_COLUMNS)} and a subject column")
    missing = [c for c in (*_TABLE_COLUMNS, cluster) if c not in predictions.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing}; it needs one row per (seed, video): {list(_TABLE_COLUMNS)}")
    if predictions.empty:
        raise ValueError(f"{name} is empty: no predictions to evaluate")
    if "partition" in predictions.columns and predictions["partition"].nunique() > 1:
        raise ValueError(
            f"{name} mixes partitions {sorted(predictions['partition'].unique())}; "
            "pass one, e.g. predictions[predictions['partition'] == 'Testing']"
        )
    ids = predictions[["seed", "video_id", cluster]]
    if ids.isna().any().any():
        raise ValueError(f"{name} has missing values in {ids.columns[ids.isna().any()].tolist()}; every row needs them")
    values = predictions[["bdi", "prediction"]].to_numpy(np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"{name} has {int((~np.isfinite(values)).any(1).sum())} rows with a non-finite bdi or prediction")
    seed_idx, seeds = pd.factorize(predictions["seed"], sort=True)
    video_idx, videos = pd.factorize(predictions["video_id"].astype(str), sort=True)
    n_seeds, n_videos = len(seeds), len(videos)
    cell = seed_idx * n_videos + video_idx
    if len(np.unique(cell)) != len(cell):
        dup = predictions.iloc[np.flatnonzero(pd.Series(cell).duplicated().to_numpy())[0]]
        raise ValueError(
            f"{name} has more than one prediction for seed {dup['seed']}, video {dup['video_id']!r}; "
            "pass one row per video and seed"
        )
    per_seed = np.bincount(seed_idx, minlength=n_seeds)
    if (per_seed != n_videos).any():
        s = int(np.argmin(per_seed))
        lacking = np.setdiff1d(np.arange(n_videos), video_idx[seed_idx == s])[:3]
        raise ValueError(
            f"{name}: the runs did not predict the same videos: seed {seeds[s]} predicted {per_seed[s]} of "
            f"{n_videos} (missing e.g. {videos[lacking].tolist()}); compare runs made on the same store and partition"
        )
    subject_codes, subjects = pd.factorize(predictions[cluster].astype(str), sort=True)
    # One row of each video (which one does not matter): every other row must agree with it.
    first = np.empty(n_videos, dtype=np.int64)
    first[video_idx] = np.arange(len(video_idx))
    for column, per_row in ((cluster, subject_codes), ("bdi", values[:, 0])):
        bad = np.flatnonzero(per_row != per_row[first][video_idx])
        if len(bad):
            raise ValueError(
                f"{name}: video {videos[video_idx[bad[0]]]!r} has more than one {column} across seeds; "
                "the runs used different stores"
            )
    subject_of_video = subject_codes[first]
    err = values[:, 1] - values[:, 0]
    loss = err**2 if metric == "rmse" else np.abs(err)
    sums = np.bincount(seed_idx * len(subjects) + subject_codes, weights=loss, minlength=n_seeds * len(subjects))
    return _SeedSubjectLoss(
        seeds=np.asarray(seeds), videos=np.asarray(videos), subjects=np.asarray(subjects),
        subject_of_video=subject_of_video, bdi=values[first, 0], sums=sums.reshape(n_seeds, len(subjects)),
        counts=np.bincount(subject_of_video, minlength=len(subjects)).astype(np.float64),
    )


def _check_two_level(metric: str, n: int, level: float) -> None:
    if metric not in _TWO_LEVEL_METRICS:
        raise ValueError(f"unknown metric {metric!r} for the two-level bootstrap; choose one of {list(_TWO_LEVEL_METRICS)}")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive number of bootstrap resamples, got {n!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")


def _same_test_set(a: _SeedSubjectLoss, b: _SeedSubjectLoss, names: tuple[str, str]) -> None:
    if not np.array_equal(a.videos, b.videos):
        only_a = sorted(set(a.videos) - set(b.videos))[:3]
        only_b = sorted(set(b.videos) - set(a.videos))[:3]
        raise ValueError(
            f"{names[0]} and {names[1]} did not predict the same videos ({len(a.videos)} vs {len(b.videos)}; "
            f"only in {names[0]} e.g. {only_a}, only in {names[1]} e.g. {only_b}); compare runs made on the same store"
        )
    if not (np.array_equal(a.subjects, b.subjects) and np.array_equal(a.subject_of_video, b.subject_of_video)):
        raise ValueError(f"{names[0]} and {names[1]} assign the same videos to different subjects; the runs used different stores")
    if not np.array_equal(a.bdi, b.bdi):
        raise ValueError(f"{names[0]} and {names[1]} give the same videos different labels; the runs used different stores")


def _per_seed_metric(loss: _SeedSubjectLoss, subject_counts: np.ndarray, metric: str) -> np.ndarray:
    """(B, S) metric of every seed on every subject resample; ``subject_counts`` is (B, J)."""
    # einsum, not @: a multi-threaded BLAS call on matrices this small costs more in thread
    # start-up and contention than the arithmetic.
    mean_loss = np.einsum("bj,sj->bs", subject_counts, loss.sums) / np.einsum("bj,j->b", subject_counts, loss.counts)[:, None]
    return np.sqrt(mean_loss) if metric == "rmse" else mean_loss


def _multinomial_counts(rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    """(n, size) multiplicities of ``size`` indices drawn with replacement, once per replicate.

    Counts instead of indices turn the bootstrap into two matrix products.
    """
    draws = rng.integers(0, size, size=(n, size)) + size * np.arange(n)[:, None]
    return np.bincount(draws.ravel(), minlength=n * size).reshape(n, size).astype(np.float64)


@dataclass(frozen=True)
class _SideDraws:
    """One setting's share of the bootstrap: its estimate and its (n,) deviations from it."""

    estimate: float
    seed_dev: np.ndarray  # seeds resampled, every subject kept
    subject_dev: np.ndarray  # subjects resampled, every seed kept
    influence: np.ndarray  # (J,) seed-averaged first-order effect of each subject's weight
    interaction: float  # variance share of the seed x subject interaction in subject_dev
    n_seeds: int
    n_subjects: int


def _side_draws(loss: _SeedSubjectLoss, metric: str, subject_counts: np.ndarray, seed_counts: np.ndarray) -> _SideDraws:
    per_seed = _per_seed_metric(loss, np.ones((1, len(loss.subjects))), metric)[0]  # (S,)
    n_seeds = len(per_seed)
    estimate = float(per_seed.mean())
    if n_seeds > 1:
        # sqrt(S / (S - 1)): the bootstrap variance of a mean of S values is (S - 1) / S of
        # the unbiased one, a third too small at 3 seeds.
        seed_dev = (seed_counts @ per_seed / n_seeds - estimate) * np.sqrt(n_seeds / (n_seeds - 1))
    else:
        seed_dev = np.zeros(len(seed_counts))
    subject_dev = _per_seed_metric(loss, subject_counts, metric).mean(axis=1) - estimate
    # d metric_s / d w_j at w = 1 (delta method): (L_sj - n_j mean_loss_s) / N, times
    # 1 / (2 RMSE_s) for the square root.
    mean_loss = loss.sums.sum(axis=1) / loss.counts.sum()
    phi = (loss.sums - loss.counts * mean_loss[:, None]) / loss.counts.sum()
    if metric == "rmse":
        rmse_per_seed = np.sqrt(mean_loss)[:, None]
        phi = np.divide(phi, 2 * rmse_per_seed, out=np.zeros_like(phi), where=rmse_per_seed > 0)
    interaction = float(phi.var(axis=0, ddof=1).sum() / n_seeds) if n_seeds > 1 else 0.0
    return _SideDraws(estimate, seed_dev, subject_dev, phi.mean(axis=0), interaction, n_seeds, len(loss.subjects))


@dataclass(frozen=True)
class _Combined:
    """The bootstrap of ``sum(sign * metric)`` over the sides, and the spread of each level."""

    estimate: float
    draws: np.ndarray  # (n,) replicates, BDI points
    variances: tuple[float, ...]  # variance of each part of the draws (BDI points squared)
    dfs: tuple[float, ...]  # degrees of freedom of each part: seeds - 1, or subjects - 1

    @property
    def se(self) -> float:
        return float(np.sqrt(sum(self.variances)))

    @property
    def df(self) -> float:
        """Welch-Satterthwaite degrees of freedom of the sum of the parts (inf: none to spare)."""
        total = sum(self.variances)
        denominator = sum(v**2 / d for v, d in zip(self.variances, self.dfs) if v > 0)
        return float(total**2 / denominator) if denominator > 0 else float("inf")


def _combine(sides: list[tuple[float, _SideDraws]], paired_seeds: bool = False) -> _Combined:
    """Estimate, (n,) draws of ``sum(sign * metric)`` over the sides, and their parts' variances.

    The seed deviations of a side already carry the seed x subject interaction (each seed's
    metric is taken on the test set it had); the subject deviations carry it once more. The
    subject part is shrunk around zero so that its variance is that of the subjects' main
    effect alone: scaled by ``sqrt(1 - interaction / variance)``, both from the delta method
    (Owen's pigeonhole bootstrap, which keeps both, is conservative by that much).

    The parts are kept apart for the t interval: each side's seed part rests on ``S - 1``
    degrees of freedom and the subject part on ``J - 1``. With ``paired_seeds`` the sides share
    one seed resample, so their seed deviations are one part (of the shared seeds' ``S - 1``).
    A side with one seed has no seed part: its training variance is not seen.
    """
    estimate = sum(sign * side.estimate for sign, side in sides)
    seed_parts = [sign * side.seed_dev for sign, side in sides]
    seed_dev = sum(seed_parts)
    subject_dev = sum(sign * side.subject_dev for sign, side in sides)
    total = float(np.sum(sum(sign * side.influence for sign, side in sides) ** 2))
    interaction = sum(side.interaction for _, side in sides)
    shrink = np.sqrt(max(0.0, 1.0 - interaction / total)) if total > 0 else 0.0
    subject_part = shrink * subject_dev
    n_seeds = [side.n_seeds for _, side in sides]
    if paired_seeds:
        seed_parts, n_seeds = [seed_dev], n_seeds[:1]
    variances, dfs = [], []
    for part, s in zip(seed_parts, n_seeds):
        if s > 1:
            variances.append(float(np.var(part)))
            dfs.append(float(s - 1))
    variances.append(float(np.var(subject_part)))
    dfs.append(float(max(sides[0][1].n_subjects - 1, 1)))
    return _Combined(float(estimate), estimate + seed_dev + subject_part, tuple(variances), tuple(dfs))


def _percentile_interval(draws: np.ndarray, alpha: float) -> tuple[float, float]:
    """The k-th smallest and k-th largest draw, k = ceil(alpha * n / 2).

    Order statistics, not interpolated quantiles: then the interval contains 0 exactly when
    the bootstrap p-value of :func:`_bootstrap_p` is at least ``alpha``.
    """
    d = np.sort(draws)
    k = max(1, int(np.ceil(alpha * len(d) / 2 - 1e-9)))
    return float(d[k - 1]), float(d[len(d) - k])


def _bootstrap_p(draws: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "no difference": 2 min(P(d <= 0), P(d >= 0)), at most 1."""
    return float(min(1.0, 2.0 * min(np.mean(draws <= 0), np.mean(draws >= 0))))


_INTERVALS = ("t", "percentile")


def _check_interval(interval: str) -> None:
    if interval not in _INTERVALS:
        raise ValueError(
            f"unknown interval {interval!r}; choose 't' (Welch-Satterthwaite t on the bootstrap's "
            "spread of seeds and subjects) or 'percentile' (order statistics of the draws)"
        )


def _t_quantile(alpha: float, df: float) -> float:
    return float(stats.norm.isf(alpha / 2) if np.isinf(df) else stats.t.isf(alpha / 2, df))


def _interval(c: _Combined, alpha: float, interval: str) -> tuple[float, float]:
    """Two-sided interval at level ``1 - alpha`` of ``c``'s estimate."""
    if interval == "percentile":
        return _percentile_interval(c.draws, alpha)
    half = _t_quantile(alpha, c.df) * c.se if c.se > 0 else 0.0
    return c.estimate - half, c.estimate + half


def _p_value(c: _Combined, interval: str) -> float:
    """Two-sided p-value of "no difference", consistent with :func:`_interval`: the interval at
    level ``1 - alpha`` contains 0 exactly when ``p >= alpha``."""
    if interval == "percentile":
        return _bootstrap_p(c.draws)
    if c.se == 0:
        return 1.0 if c.estimate == 0 else 0.0
    t = abs(c.estimate) / c.se
    return float(min(1.0, 2 * (stats.norm.sf(t) if np.isinf(c.df) else stats.t.sf(t, c.df))))


def two_level_bootstrap(
    predictions: pd.DataFrame,
    metric: str = "rmse",
    *,
    n: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    cluster: str | None = None,
    interval: str = "t",
) -> dict:
    """Interval of one setting's metric of a single trained model, averaged over its seeds.

    Each replicate resamples the seeds (runs) with replacement and, independently, the
    subjects with replacement, a subject carrying all its videos. A replicate is the estimate
    plus two deviations: that of the mean over resampled seeds of each seed's metric on every
    subject (scaled by sqrt(S / (S - 1)), none with one seed), and that of the mean over all
    seeds of each seed's metric on the resampled subjects, shrunk so that the seed x subject
    interaction, already in the first, is not counted again.

    The replicates measure the spread of each level; how far that spread can be trusted is
    another matter. With ``interval="t"`` (default) the interval is ``estimate +- t * se``:
    ``se`` the square root of the summed variances of the seed part and the subject part of
    the replicates, ``t`` the quantile of Student's t with Welch-Satterthwaite degrees of
    freedom from the parts (``S - 1`` for the seeds, ``J - 1`` for the subjects). A spread
    estimated from 3 to 10 seeds is itself uncertain, and a percentile interval of the
    replicates, which reads it as known (a normal quantile), under-covers: simulated families
    of 9 comparisons with 5 seeds per setting made a false call in 18 % of studies against a
    nominal 5 % (tests/test_family.py). ``interval="percentile"`` is that interval of the
    ``n`` replicates (order statistics, see :func:`paired_two_level_bootstrap`). With one seed
    the seed part is absent (training variance is not seen) and the interval is the subjects'.

    Args:
        predictions: one setting, one partition (the Testing videos), one row per (seed, video):
            ``seed``, ``video_id``, ``bdi``, ``prediction`` and the subject column. Every seed
            must have predicted the same videos.
        metric: ``"rmse"`` or ``"mae"``, computed per seed over videos (BDI points).
        n: bootstrap replicates. seed: seeds the resampling. level: coverage of the interval.
        cluster: the column that names a video's subject; default ``subject_id`` when present,
            else ``session_id`` (on the synthetic cohort a subject is a session).
        interval: ``"t"`` or ``"percentile"``, as above.

    Returns:
        ``{"estimate": mean over seeds of the per-seed metric, "lo", "hi", "se" (BDI points),
        "df" (Welch-Satterthwaite; inf when the replicates do not vary), "interval", "level",
        "n", "metric", "cluster", "n_seeds", "n_subjects", "n_videos", "resampled": "seeds x subjects"}``.
    """
    _check_two_level(metric, n, level)
    _check_interval(interval)
    column = _cluster_column(predictions, cluster, "predictions")
    loss = _seed_subject_loss(predictions, metric, column, "predictions")
    rng = np.random.default_rng(seed)
    side = _side_draws(
        loss, metric, _multinomial_counts(rng, len(loss.subjects), n), _multinomial_counts(rng, len(loss.seeds), n)
    )
    combined = _combine([(1.0, side)])
    lo, hi = _interval(combined, 1 - level, interval)
    return {
        "estimate": combined.estimate, "lo": lo, "hi": hi, "se": combined.se, "df": combined.df,
        "interval": interval, "level": level, "n": int(n),
        "metric": metric, "cluster": column, "n_seeds": len(loss.seeds), "n_subjects": len(loss.subjects),
        "n_videos": len(loss.videos), "resampled": RESAMPLED,
    }


def _paired_draws(
    a: pd.DataFrame | _SeedSubjectLoss, b: pd.DataFrame, metric: str, n: int, seed: int, pair_seeds: bool,
    cluster: str | None, names: tuple[str, str] = ("a", "b"),
) -> tuple[_Combined, _SeedSubjectLoss, _SeedSubjectLoss]:
    """Observed ``metric(a) - metric(b)``, its (n,) bootstrap draws and their parts, with the losses of both sides.

    ``a`` may be given as its losses already (a family compares one reference with many).
    """
    if isinstance(a, _SeedSubjectLoss):
        loss_a, column = a, cluster
    else:
        column = _cluster_column(a, cluster, names[0])
        loss_a = _seed_subject_loss(a, metric, column, names[0])
    loss_b = _seed_subject_loss(b, metric, _cluster_column(b, column, names[1]), names[1])
    _same_test_set(loss_a, loss_b, names)
    if pair_seeds and not np.array_equal(loss_a.seeds, loss_b.seeds):
        raise ValueError(
            f"pair_seeds=True needs the same seeds on both sides; {names[0]} has {loss_a.seeds.tolist()}, "
            f"{names[1]} has {loss_b.seeds.tolist()}"
        )
    rng = np.random.default_rng(seed)
    subject_counts = _multinomial_counts(rng, len(loss_a.subjects), n)
    seeds_a = _multinomial_counts(rng, len(loss_a.seeds), n)
    seeds_b = seeds_a if pair_seeds else _multinomial_counts(rng, len(loss_b.seeds), n)
    combined = _combine([
        (1.0, _side_draws(loss_a, metric, subject_counts, seeds_a)),
        (-1.0, _side_draws(loss_b, metric, subject_counts, seeds_b)),
    ], paired_seeds=pair_seeds)
    return combined, loss_a, loss_b


def paired_two_level_bootstrap(
    a: pd.DataFrame,
    b: pd.DataFrame,
    metric: str = "rmse",
    *,
    n: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    pair_seeds: bool = False,
    cluster: str | None = None,
    interval: str = "t",
) -> dict:
    """Paired two-level bootstrap of ``metric(a) - metric(b)`` for two settings.

    Replicates are built as in :func:`two_level_bootstrap`, for the difference. Each draws
    one resample of the subjects, used for both settings (subjects are
    matched by id, so a hard subject stays hard on both sides), and resamples each setting's
    seeds. By default the two settings' seeds are resampled independently: seed ``k`` of one
    architecture is not the same trained model as seed ``k`` of another, and the settings may
    have different numbers of seeds. ``pair_seeds=True`` draws one seed resample for both
    (the same seed list is then required), for designs where seed ``k`` is shared on purpose.

    With ``interval="t"`` (default) the interval is ``estimate +- t * se`` as in
    :func:`two_level_bootstrap`, with three parts: each side's seeds (``S_a - 1`` and
    ``S_b - 1`` degrees of freedom; one part of ``S - 1`` with ``pair_seeds``; none for a side
    with one seed, whose training variance is then not seen) and the subjects (``J - 1``).
    ``p`` is the two-sided t p-value ``2 P(T_df > |estimate| / se)``.

    Args:
        a, b: long tables as for :func:`two_level_bootstrap`, on the same videos.
        metric, n, seed, level, cluster, interval: as for :func:`two_level_bootstrap`.

    Returns:
        ``{"estimate": observed difference (negative: a has the lower error), "lo", "hi", "p",
        "tie", "se" (BDI points), "df", "interval", "level", "n", "metric", "cluster",
        "n_seeds_a", "n_seeds_b", "n_subjects", "n_videos", "paired_seeds", "resampled"}``.
        With ``interval="percentile"``, ``p`` is the two-sided bootstrap p-value
        ``min(1, 2 min(P(d <= 0), P(d >= 0)))`` over the replicates ``d`` and the interval the
        percentile interval at ``level`` read as order statistics. Either way ``tie`` (the
        interval contains 0) holds exactly when ``p >= 1 - level``.

    Raises:
        ValueError: when the two tables do not hold the same videos, subjects and labels.
    """
    _check_two_level(metric, n, level)
    _check_interval(interval)
    combined, loss_a, loss_b = _paired_draws(a, b, metric, n, seed, pair_seeds, cluster)
    lo, hi = _interval(combined, 1 - level, interval)
    return {
        "estimate": combined.estimate, "lo": lo, "hi": hi, "p": _p_value(combined, interval),
        "tie": bool(lo <= 0 <= hi), "se": combined.se, "df": combined.df, "interval": interval, "level": level, "n": int(n), "metric": metric, "cluster": _cluster_column(a, cluster, "a"),
        "n_seeds_a": len(loss_a.seeds), "n_seeds_b": len(loss_b.seeds), "n_subjects": len(loss_a.subjects),
        "n_videos": len(loss_a.videos), "paired_seeds": bool(pair_seeds), "resampled": RESAMPLED,
    }


def holm_adjust(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order.

    With the p-values sorted ascending, ``p_(i)`` adjusted is ``max_{j <= i} min(1, (k - j + 1) p_(j))``
    for ``k`` comparisons; a comparison is significant at ``alpha`` when its adjusted p-value is
    below ``alpha``. Input: (k,) p-values in [0, 1]. Output: (k,) float array.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1 or len(p) == 0:
        raise ValueError(f"pvalues must be a non-empty one-dimensional sequence, got shape {p.shape}")
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError(f"pvalues must lie in [0, 1], got {p.tolist()}")
    k = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(k)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate((k - np.arange(k)) * p[order]))
    return adjusted


def holm_comparisons(
    reference: pd.DataFrame, others: Mapping[str, pd.DataFrame], metric: str = "rmse", *,
    n: int = 2000, seed: int = 0, level: float = 0.95, pair_seeds: bool = False, cluster: str | None = None,
    interval: str = "t",
) -> pd.DataFrame:
    """The family of paired comparisons of a reference setting (G) with others, Holm-adjusted.

    Each comparison is :func:`paired_two_level_bootstrap` of ``metric(reference) - metric(other)``
    (negative: the reference has the lower error); with the same ``seed`` all comparisons
    share the subject resamples. Holm's step-down procedure runs over the ``k`` comparisons at
    ``alpha = 1 - level``. The adjusted interval of the comparison at Holm rank ``i`` (1 for the
    smallest p) is its interval (``interval``: t or percentile) at level ``1 - alpha / (k - min(i, m) + 1)``, where
    ``m`` is the first rank Holm does not reject (``k + 1`` when it rejects all): rejected
    comparisons get their step's level, the rest the level of the step where Holm stopped.
    Then a comparison is a **tie** exactly when its adjusted interval contains 0, exactly
    when its Holm-adjusted p-value is at least ``alpha``. With the t interval the draws give
    only each part's variance, so ``n`` of 2000 is plenty; the percentile interval reads its
    tails, which with ``k`` = 9 hold ``alpha n / (2 k)`` draws: use ``n`` of 2000 or more.

    Args:
        reference: long table of the reference setting (see :func:`two_level_bootstrap`).
        others: ``{setting name: long table}``, all on the reference's videos.
        metric, n, seed, level, pair_seeds, cluster, interval: as for
            :func:`paired_two_level_bootstrap`.

    Returns:
        One row per other setting, in the order of ``others``: ``setting``, ``estimate``,
        ``lo``, ``hi`` (unadjusted, at ``level``), ``p``, ``p_holm``, ``holm_rank``,
        ``holm_level``, ``lo_holm``, ``hi_holm``, ``tie`` (Holm-adjusted), ``se`` (BDI points),
        ``df`` (Welch-Satterthwaite), ``n_seeds``, ``n_seeds_reference``, ``n_subjects``.
        ``attrs["resampled"]`` says what was resampled, ``attrs["interval"]`` which interval.
        A comparison with ``n_seeds`` (or ``n_seeds_reference``) 1 does not see that side's
        training variance: its interval is too narrow by that much.
    """
    _check_two_level(metric, n, level)
    _check_interval(interval)
    if not others:
        raise ValueError("others is empty: pass at least one setting to compare with the reference")
    alpha = 1 - level
    column = _cluster_column(reference, cluster, "reference")
    loss_ref = _seed_subject_loss(reference, metric, column, "reference")
    rows, combined = [], []
    for name, table in others.items():
        c, _, loss_other = _paired_draws(
            loss_ref, table, metric, n, seed, pair_seeds, column, names=("reference", str(name))
        )
        lo, hi = _interval(c, alpha, interval)
        rows.append({
            "setting": name, "estimate": c.estimate, "lo": lo, "hi": hi, "p": _p_value(c, interval),
            "se": c.se, "df": c.df, "n_seeds": len(loss_other.seeds), "n_seeds_reference": len(loss_ref.seeds),
            "n_subjects": len(loss_ref.subjects),
        })
        combined.append(c)
    out = pd.DataFrame(rows)
    k = len(out)
    p = out["p"].to_numpy()
    order = np.argsort(p, kind="stable")
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(1, k + 1)
    rejected = p[order] < alpha / (k - np.arange(k))
    stop = int(np.argmin(rejected)) + 1 if not rejected.all() else k + 1  # first rank not rejected
    step_alpha = alpha / (k - np.minimum(rank, stop) + 1)
    bounds = [_interval(c, a, interval) for c, a in zip(combined, step_alpha)]
    out["p_holm"] = holm_adjust(p)
    out["holm_rank"] = rank
    out["holm_level"] = 1 - step_alpha
    out["lo_holm"] = [lo for lo, _ in bounds]
    out["hi_holm"] = [hi for _, hi in bounds]
    out["tie"] = (out["lo_holm"] <= 0) & (out["hi_holm"] >= 0)
    out = out[["setting", "estimate", "lo", "hi", "p", "p_holm", "holm_rank", "holm_level", "lo_holm",
               "hi_holm", "tie", "se", "df", "n_seeds", "n_seeds_reference", "n_subjects"]]
    out.attrs["resampled"] = RESAMPLED
    out.attrs["interval"] = interval
    out.attrs["adjustment"] = f"Holm over {k} comparisons at {level:.0%}"
    return out


def mean_predictor(train_labels, n: int) -> np.ndarray:
    """The baseline that predicts the training-label mean for each of ``n`` videos."""
    labels = _as_1d("train_labels", train_labels)
    if len(labels) == 0:
        raise ValueError("train_labels is empty: the mean predictor needs training labels")
    return np.full(int(n), float(np.mean(labels)))


def summarize(videos: pd.DataFrame, *, bootstrap: int = 0, seed: int = 0) -> dict[str, float]:
    """MAE and RMSE per video and, when ``session_id`` is present, per session.

    Args:
        videos: output of :func:`video_scores` for one partition.
        bootstrap: if positive, add 95 % percentile intervals over videos with that many
            resamples (``rmse_low``, ``rmse_high``, ``mae_low``, ``mae_high``).

    Returns:
        A flat dict: ``mae``, ``rmse``, ``n_videos`` and, with sessions, ``session_mae``,
        ``session_rmse``, ``n_sessions``.
    """
    y, p = videos["bdi"].to_numpy(float), videos["prediction"].to_numpy(float)
    out: dict[str, float] = {"mae": mae(y, p), "rmse": rmse(y, p), "n_videos": int(len(videos))}
    if bootstrap:
        for name in ("rmse", "mae"):
            ci = bootstrap_ci(y, p, name, n=bootstrap, seed=seed)
            out[f"{name}_low"], out[f"{name}_high"] = ci["low"], ci["high"]
    if "session_id" in videos.columns:
        sessions = session_scores(videos)
        ys, ps = sessions["bdi"].to_numpy(float), sessions["prediction"].to_numpy(float)
        out.update(session_mae=mae(ys, ps), session_rmse=rmse(ys, ps), n_sessions=int(len(sessions)))
    return out
