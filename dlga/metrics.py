"""Evaluation: per-video and per-session scores, MAE/RMSE, severity bands, bootstrap intervals.

Plain functions in the scikit-learn style: arrays or DataFrames in, numbers or DataFrames out,
nothing stateful. The paper's Eq. 8-9 average over *subjects*; we read a subject's prediction
as the mean over the frames of a video (DESIGN.md section 2) and, for AVEC2014, of a session's
two videos (Freeform and Northwind).

Units: BDI-II points (0-63) everywhere.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

# BDI-II severity bands (paper Table 1): inclusive upper bounds.
BANDS: tuple[tuple[str, int, int], ...] = (
    ("minimal", 0, 13),
    ("mild", 14, 19),
    ("moderate", 20, 28),
    ("severe", 29, 63),
)
BAND_NAMES = tuple(name for name, _, _ in BANDS)

# Columns carried from frames to videos: constant within a video.
_VIDEO_COLUMNS = ("session_id", "partition", "bdi")


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
            optionally, ``session_id``, ``partition``, ``bdi`` (constant within a video).

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
