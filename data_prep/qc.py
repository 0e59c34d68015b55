"""QC report of a preprocessed store: detection rates and a montage of aligned faces.

``python -m data_prep qc STORE`` prints the detection rate per partition and the videos with the
lowest rates or a failure, and writes ``qc_summary.csv`` (per partition) and
``montage.png`` (a few aligned frames of a few videos, landmarks drawn) under ``STORE/qc_report``.
Every number comes from the tracker that wrote the store (its ``qc.csv``), not from a fresh run
of the detector. :func:`summary_by_severity` gives the same per BDI-II severity band: face loss
that depends on the label (head pitch grows with severity in the synthetic cohort, and HOG is a
frontal detector) would bias every setting alike.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from . import store
from .extract import FOUND
from .preprocess import read_qc


def summary_by_partition(qc: pd.DataFrame) -> pd.DataFrame:
    """Videos, failures, frames sampled and kept, how faces were found, and the detection rate per partition."""
    qc = qc.copy()
    for col in FOUND + ("dropped",):  # stores written before these columns existed
        if col not in qc.columns:
            qc[col] = 0
    g = qc.groupby("partition", dropna=False)
    out = pd.DataFrame({
        "videos": g.size(),
        "failed": g["status"].agg(lambda s: int((s != "ok").sum())),
        "frames_sampled": g["frames_sampled"].sum(),
        **{col: g[col].sum() for col in FOUND + ("dropped",)},
        "frames_kept": g["frames_kept"].sum(),
    })
    found = sum(out[col] for col in FOUND)
    out["detection_rate"] = found / out["frames_sampled"].where(out["frames_sampled"] > 0)
    order = [p for p in store.PARTITIONS if p in out.index] + [p for p in out.index if p not in store.PARTITIONS]
    return out.loc[order].round(4)


BDI_BANDS = (("minimal", 0, 13), ("mild", 14, 19), ("moderate", 20, 28), ("severe", 29, 63))
"""BDI-II severity bands, (name, lowest, highest score)."""


def summary_by_severity(store_dir: str | Path) -> pd.DataFrame:
    """Per BDI-II severity band: videos, videos dropped, frames sampled, detection rate, frames kept.

    From the store's ``qc.csv``: ``detection_rate`` is the share of sampled frames that gave a
    face (detected, cascade, reused or openface), ``frames_kept`` the frames stored,
    ``videos_dropped`` the videos with no stored frame (no face, unreadable).

    Raises:
        StoreError: a ``qc.csv`` written before it recorded each video's ``bdi``.
    """
    qc = read_qc(store_dir)
    if "bdi" not in qc.columns:
        raise store.StoreError(f"{store_dir}/qc.csv has no bdi column (an older store); rerun preprocess on it")
    edges = [lo for _, lo, _ in BDI_BANDS[1:]]
    band = pd.Categorical.from_codes(np.searchsorted(edges, qc["bdi"].to_numpy(), side="right"),
                                     [name for name, _, _ in BDI_BANDS])
    g = qc.assign(band=band, found=sum(qc[k] for k in FOUND)).groupby("band", observed=False)
    out = pd.DataFrame({
        "videos": g.size(),
        "videos_dropped": g["status"].agg(lambda s: int((s != "ok").sum())),
        "frames_sampled": g["frames_sampled"].sum(),
        "frames_kept": g["frames_kept"].sum(),
        "reused": g["reused"].sum(),
    })
    out["detection_rate"] = (g["found"].sum() / out["frames_sampled"].where(out["frames_sampled"] > 0)).round(4)
    return out


def draw_landmarks(frame: np.ndarray, landmarks: np.ndarray, colour=(0, 255, 0)) -> np.ndarray:
    """A copy of an RGB frame with its 68 landmarks drawn as dots."""
    out = np.ascontiguousarray(frame).copy()
    radius = max(1, out.shape[0] // 112)
    for x, y in np.asarray(landmarks):
        cv2.circle(out, (int(round(x)), int(round(y))), radius, colour, -1, lineType=cv2.LINE_AA)
    return out


def montage(store_dir: str | Path, video_ids: list[str], per_video: int = 6, tile: int = 112) -> np.ndarray:
    """RGB uint8 image: one row per video, ``per_video`` evenly spaced frames with landmarks."""
    rows = []
    for vid in video_ids:
        data = store.read_video(store.video_path(store_dir, vid))
        n = len(data["frames"])
        pick = np.unique(np.linspace(0, n - 1, per_video).round().astype(int))
        tiles = []
        for i in pick:
            img = draw_landmarks(data["frames"][i], data["landmarks"][i])
            tiles.append(cv2.resize(img, (tile, tile), interpolation=cv2.INTER_AREA))
        tiles += [np.zeros((tile, tile, 3), np.uint8)] * (per_video - len(tiles))
        rows.append(np.hstack(tiles))
    return np.vstack(rows) if rows else np.zeros((tile, tile * per_video, 3), np.uint8)


def qc_report(store_dir: str | Path, out: str | Path | None = None, n_videos: int = 4, per_video: int = 6) -> dict:
    """Print and write the QC report of a store; returns the paths written and the summary."""
    store_dir = Path(store_dir)
    qc = read_qc(store_dir)
    out = Path(out) if out else store_dir / "qc_report"
    out.mkdir(parents=True, exist_ok=True)
    summary = summary_by_partition(qc)
    store.atomic_write_csv(out / "qc_summary.csv", summary.reset_index())
    with pd.option_context("display.width", 140, "display.max_columns", 20):
        print(f"QC of {store_dir}: {len(qc)} videos, {int((qc['status'] != 'ok').sum())} failed\n")
        print(summary.to_string())
        cols = ["video_id", "partition", "status", "frames_sampled", "frames_kept", "detection_rate", "reason"]
        worst = qc.sort_values(["detection_rate", "video_id"]).head(10)[cols]
        print("\nlowest detection rates:")
        print(worst.to_string(index=False))
    ok = qc[qc["status"] == "ok"]
    # A spread of videos: lowest and highest detection rates first, they are the informative ones.
    ranked = ok.sort_values("detection_rate")["video_id"].tolist()
    chosen = list(dict.fromkeys(ranked[: (n_videos + 1) // 2] + ranked[::-1][: n_videos // 2]))[:n_videos]
    paths = {"summary": out / "qc_summary.csv"}
    if chosen:
        img = montage(store_dir, chosen, per_video)
        ok_png, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        store.atomic_write_bytes(out / "montage.png", buf.tobytes())
        paths["montage"] = out / "montage.png"
        print(f"\nmontage of {', '.join(chosen)}: {out / 'montage.png'}")
    return {"paths": paths, "summary": summary}
