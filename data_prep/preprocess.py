"""From videos to aligned faces: the preprocessed store (the book's Decisions chapter
(book/decisions.md, "Data")).

For every manifest row: :func:`extract.extract_faces` decodes the video, takes frames at
``sample_fps``, finds the face (:class:`faces.FaceTracker`) and aligns it to ``size``; the
faces are written as one ``.npz`` through :func:`store.write_video`. Frames without a face are left out; ``frame_index``
says which source frames were kept.

The store directory is ``OUT/<dataset>-s<size>-<hash>/`` where the hash covers every
preprocessing parameter, so a changed parameter never writes over an older store. Resuming:
each video's ``.npz`` and its QC record (``qc/<video_id>.json``) are written atomically, the QC
record last, so a video is finished exactly when its record exists; a rerun skips finished
videos and redoes the rest (stale temporary files are removed). A failed video (empty,
truncated or undecodable file, no face, no frame) gets a QC record with the reason and never
stops the others; it is retried on a rerun only when its source file changed.

Faces come from dlib's HOG detector by default; ``fallback="cascade"`` adds OpenCV's Haar
cascade for the frames where HOG finds none (counted in the QC column ``cascade``). Rows of the
``openface`` adapter (``path`` is an OpenFace CSV) take their landmarks from OpenFace instead of
our detector (:mod:`data_prep.openface`); their frames with ``success == 0`` or ``confidence``
below ``openface_min_confidence`` are dropped and counted in the QC column ``dropped``.

Example::

    >>> manifest, report = datasets.load_dataset("avec2014", "/data/AVEC2014")
    >>> store = preprocess(manifest, "data/stores", size=224, sample_fps=5, workers=2)
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import cv2
import pandas as pd
from tqdm import tqdm  # tqdm.auto warns in every notebook kernel without ipywidgets

from . import openface, origin, store
from .extract import FOUND, extract_faces, make_detector
from .faces import FALLBACKS, REUSE_MIN_SCORE, LandmarkDetector
from .workers import spawn_context
from .openface import OPENFACE_MIN_CONFIDENCE
from .video import VideoError, source_signature

PARAMS_VERSION = 1
QC_COLUMNS = [
    "video_id", "partition", "bdi", "status", "reason", "faces_from", "fps", "frames_reported", "frames_read",
    "frames_sampled", "detected", "cascade", "reused", "openface", "dropped", "none", "frames_kept",
    "detection_rate", "seconds",
]
"""One row of ``qc.csv``. ``faces_from``: ``dlib`` (our detector), ``openface-video`` (OpenFace
landmarks on the source video's frames) or ``openface-aligned`` (OpenFace's aligned images).
Every sampled frame is counted once in ``detected``, ``cascade``, ``reused`` (dlib: how the face
was found), ``openface`` (OpenFace landmarks used), ``dropped`` (OpenFace frame with
``success == 0`` or low confidence) or ``none`` (no face)."""


RECORD_DEFAULTS = {"reuse_min_score": None, "upsample_retry": False}
"""What a ``params.json`` without these keys was made with: unverified reuse, no upsampled try."""


def make_params(
    size: int = 224,
    sample_fps: float | None = None,
    detect_max_side: int | None = 400,
    upsample: int = 0,
    max_reuse: int = 5,
    max_frames: int | None = None,
    fallback: str | None = None,
    openface_min_confidence: float | None = None,
    reuse_min_score: float | None = REUSE_MIN_SCORE,
    upsample_retry: bool = True,
) -> dict[str, Any]:
    """Validated preprocessing parameters (everything that changes the stored frames).

    ``fallback`` and ``openface_min_confidence`` enter the parameters (and so the store's hash)
    only when set, so that stores made without them keep their folder names.
    ``openface_min_confidence`` is set by :func:`preprocess` for manifests with OpenFace rows.
    ``reuse_min_score`` (verified reuse, None: unverified) and ``upsample_retry`` are always
    recorded: they change the stored frames, so the store's folder and fingerprint change too.
    """
    if int(size) < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    if sample_fps is not None and not (float(sample_fps) > 0 and math.isfinite(float(sample_fps))):
        raise ValueError(f"sample_fps must be a positive number or None (every frame), got {sample_fps}")
    if max_frames is not None and int(max_frames) < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {list(FALLBACKS)}, got {fallback!r}")
    if reuse_min_score is not None and not math.isfinite(float(reuse_min_score)):
        raise ValueError(f"reuse_min_score must be a finite number or None (unverified reuse), got {reuse_min_score}")
    if openface_min_confidence is not None and not 0.0 <= float(openface_min_confidence) <= 1.0:
        raise ValueError(f"openface_min_confidence must be in 0-1, got {openface_min_confidence}")
    params = {
        "version": PARAMS_VERSION,
        "store_version": store.STORE_VERSION,
        "size": int(size),
        "sample_fps": None if sample_fps is None else float(sample_fps),
        "detector": "dlib-hog",
        "detect_max_side": None if detect_max_side is None else int(detect_max_side),
        "upsample": int(upsample),
        "max_reuse": int(max_reuse),
        "max_frames": None if max_frames is None else int(max_frames),
        "align_points": "eye-corners",
        "reuse_min_score": None if reuse_min_score is None else float(reuse_min_score),
        "upsample_retry": bool(upsample_retry),
        # What decides the data path's numbers (a declared version and the libraries): a change
        # to it makes a new store folder, never a stale store read as if new code had written it.
        "data": store.data_identity(),
    }
    if fallback is not None:
        params["fallback"] = fallback
    if openface_min_confidence is not None:
        params["openface_min_confidence"] = float(openface_min_confidence)
    return params


def params_from_record(recorded: dict[str, Any]) -> dict[str, Any]:
    """The parameters a store's ``params.json`` records, validated and normalised by :func:`make_params`.

    Keys a record lacks take :func:`make_params`' defaults, except those added after the
    first stores (``RECORD_DEFAULTS``), which take the value that reproduces such a store.
    The caller checks ``version``.

    Raises:
        ValueError: an invalid value (the message names it).
    """
    recorded = {**RECORD_DEFAULTS, **recorded}
    names = [n for n in inspect.signature(make_params).parameters if n in recorded]
    return make_params(**{n: recorded[n] for n in names})


def params_hash(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]


def store_dir_for(out_root: str | os.PathLike, params: dict[str, Any], dataset: str = "data") -> Path:
    """``OUT/<dataset>-s<size>-<hash>``: one folder per parameter set."""
    return Path(out_root) / f"{dataset}-s{params['size']}-{params_hash(params)}"


def process_video(
    row: dict[str, Any] | pd.Series,
    store_dir: str | os.PathLike,
    params: dict[str, Any],
    detector: LandmarkDetector | None = None,
) -> dict[str, Any]:
    """Preprocess one manifest row into ``store_dir``; never raises for bad input.

    Writes ``videos/<video_id>.npz`` (success only) and then ``qc/<video_id>.json`` (always).

    Returns:
        The QC record: ``QC_COLUMNS`` plus ``source`` (the file's size and mtime).
    """
    row = dict(row)
    store_dir = Path(store_dir)
    vid = str(row["video_id"])
    started = time.perf_counter()
    qc: dict[str, Any] = {c: None for c in QC_COLUMNS}
    qc.update(video_id=vid, partition=row.get("partition"), bdi=row.get("bdi"), status="failed", reason="", faces_from="dlib",
              frames_read=0, frames_sampled=0, frames_kept=0, **{k: 0 for k in FOUND + ("dropped", "none")})
    qc["source"] = source_signature(row["path"])
    try:
        if is_openface(row["path"]):
            track = openface.openface_faces(row["path"], params, detector)
        else:
            track = extract_faces(row["path"], params, detector)
        qc.update(fps=track.fps, frames_reported=track.frames_reported, frames_read=track.frames_read,
                  frames_sampled=track.frames_sampled, faces_from=track.faces_from, **track.counts())
        track.check()
        qc["frames_kept"] = len(track.frame_index)
        store.write_video(store.video_path(store_dir, vid), track.frames, track.landmarks, track.frame_index,
                          float(row["bdi"]), how=track.how)
        qc["status"] = "ok"
        if qc["frames_reported"] and qc["frames_read"] < qc["frames_reported"]:
            qc["reason"] = f"decoded {qc['frames_read']} of the {qc['frames_reported']} frames the container reports"
            if track.decoder_log:
                qc["reason"] += f"; FFmpeg: {track.decoder_log}"
    except VideoError as exc:
        qc["reason"] = str(exc)
    except Exception as exc:  # a bad video must never stop the others
        qc["reason"] = f"{type(exc).__name__}: {exc}"
    found = sum(qc[k] for k in FOUND)
    qc["detection_rate"] = round(found / qc["frames_sampled"], 4) if qc["frames_sampled"] else 0.0
    qc["seconds"] = round(time.perf_counter() - started, 3)
    store.atomic_write_json(store_dir / "qc" / f"{vid}.json", qc)
    return qc


def is_openface(path: str | os.PathLike) -> bool:
    """True for a manifest path that is an OpenFace CSV (the ``openface`` adapter's rows)."""
    return str(path).lower().endswith(".csv")


def _finished(store_dir: Path, row: dict[str, Any]) -> dict[str, Any] | None:
    """The QC record of a finished video, or None when it must be (re)done."""
    path = store_dir / "qc" / f"{row['video_id']}.json"
    try:
        qc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    # A result, stored video or failure, stands until its source file changes.
    if qc.get("source") != source_signature(row["path"]):
        return None
    if qc.get("status") == "ok":
        return qc if store.video_path(store_dir, row["video_id"]).is_file() else None
    return qc


def _clean_temporaries(store_dir: Path) -> None:
    for sub in ("videos", "qc"):
        for tmp in (store_dir / sub).glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


_WORKER_DETECTOR: LandmarkDetector | None = None


def _worker_init(params: dict[str, Any]) -> None:
    global _WORKER_DETECTOR
    cv2.setNumThreads(1)  # one video per process; OpenCV's own threads would oversubscribe
    _WORKER_DETECTOR = make_detector(params)


def _worker_run(row: dict[str, Any], store_dir: str, params: dict[str, Any]) -> dict[str, Any]:
    return process_video(row, store_dir, params, _WORKER_DETECTOR)


def preprocess(
    manifest: pd.DataFrame,
    out_root: str | os.PathLike,
    size: int = 224,
    sample_fps: float | None = None,
    workers: int = 1,
    *,
    dataset: str = "data",
    detect_max_side: int | None = 400,
    upsample: int = 0,
    max_reuse: int = 5,
    max_frames: int | None = None,
    fallback: str | None = None,
    openface_min_confidence: float = OPENFACE_MIN_CONFIDENCE,
    reuse_min_score: float | None = REUSE_MIN_SCORE,
    upsample_retry: bool = True,
    progress: bool = True,
) -> Path:
    """Preprocess every video of a manifest into a store; resumable.

    Args:
        manifest: rows with ``store.MANIFEST_COLUMNS`` (from :func:`datasets.load_dataset`).
        out_root: parent folder; the store is ``out_root/<dataset>-s<size>-<hash>``.
        size: aligned face side in pixels.
        sample_fps: frames per second to keep (None: every frame).
        workers: processes, one video each at a time.
        detect_max_side, upsample, max_reuse: :class:`faces.LandmarkDetector` settings.
        max_frames: keep at most this many faces per video (None: all).
        fallback: ``"cascade"``: try OpenCV's Haar cascade where HOG finds no face (None: no
            fallback; the default keeps the store folders of earlier versions).
        openface_min_confidence: OpenFace rows only: frames with a lower ``confidence`` (or with
            ``success == 0``) are dropped. Enters the parameters only for manifests with OpenFace rows.
        reuse_min_score: a lost face's last box is reused only where HOG, its threshold lowered
            to this score, still sees a face in it (None: reuse unchecked).
        upsample_retry: try small frames upsampled once when nothing else finds a face.
        progress: show a tqdm bar over videos.

    Returns:
        The store directory, with ``params.json``, ``origin.json`` (synthetic or real faces,
        :mod:`data_prep.origin`), ``manifest.csv`` (successful videos,
        plus ``npz`` and ``n_frames``), ``qc.csv`` (every video) and ``videos/``.
    """
    missing = [c for c in store.MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest is missing columns {missing}; build it with data_prep.datasets.load_dataset")
    dup = manifest["video_id"][manifest["video_id"].duplicated()].tolist()
    if dup:
        raise ValueError(f"manifest has duplicate video ids {dup[:10]}")
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    has_openface = bool(manifest["path"].map(is_openface).any())
    params = make_params(size, sample_fps, detect_max_side, upsample, max_reuse, max_frames, fallback,
                         openface_min_confidence if has_openface else None, reuse_min_score, upsample_retry)
    make_detector(params)  # validate before any work starts
    store_dir = store_dir_for(out_root, params, dataset)
    params_file = store_dir / "params.json"
    if params_file.is_file():
        old = json.loads(params_file.read_text())
        if old != params:
            raise RuntimeError(f"{params_file} holds other parameters than its folder name says; remove {store_dir}")
    else:
        store.atomic_write_json(params_file, params)
    # Whether these faces are synthetic, for what a model trained on them may claim (data_prep.origin).
    origin.write_origin(store_dir, origin.manifest_origin(manifest["path"].astype(str), dataset))
    (store_dir / "videos").mkdir(parents=True, exist_ok=True)
    (store_dir / "qc").mkdir(parents=True, exist_ok=True)
    _clean_temporaries(store_dir)

    rows = [dict(r) for r in manifest[store.MANIFEST_COLUMNS].to_dict("records")]
    records: dict[str, dict[str, Any]] = {}
    todo = []
    for r in rows:
        done = _finished(store_dir, r)
        if done is None:
            todo.append(r)
        else:
            records[r["video_id"]] = done


    bar = tqdm(total=len(rows), initial=len(rows) - len(todo), desc="preprocess", unit="video", disable=not progress)
    failed = sum(rec["status"] != "ok" for rec in records.values())
    try:
        if int(workers) == 1 or len(todo) <= 1:
            det = make_detector(params) if todo else None
            for r in todo:
                rec = process_video(r, store_dir, params, det)
                records[r["video_id"]] = rec
                failed += rec["status"] != "ok"
                bar.set_postfix(failed=failed)
                bar.update()
        else:

            with spawn_context() as ctx, ProcessPoolExecutor(
                int(workers), mp_context=ctx, initializer=_worker_init, initargs=(params,)
            ) as pool:
                futures = [pool.submit(_worker_run, r, str(store_dir), params) for r in todo]
                for fut in as_completed(futures):
                    rec = fut.result()
                    records[rec["video_id"]] = rec
                    failed += rec["status"] != "ok"
                    bar.set_postfix(failed=failed)
                    bar.update()
    finally:
        bar.close()
    write_tables(store_dir, manifest, records)
    return store_dir


def write_tables(store_dir: Path, manifest: pd.DataFrame, records: dict[str, dict[str, Any]]) -> None:
    """Write ``qc.csv`` (every video) and ``manifest.csv`` (videos that made it)."""
    qc = pd.DataFrame([{c: records[v].get(c) for c in QC_COLUMNS} for v in manifest["video_id"] if v in records], columns=QC_COLUMNS)
    store.atomic_write_csv(store_dir / "qc.csv", qc)
    ok = {v: rec for v, rec in records.items() if rec.get("status") == "ok"}
    out = manifest[manifest["video_id"].isin(ok)][store.MANIFEST_COLUMNS].copy()
    out["npz"] = [f"videos/{v}.npz" for v in out["video_id"]]
    out["n_frames"] = [int(ok[v]["frames_kept"]) for v in out["video_id"]]
    store.atomic_write_csv(store_dir / "manifest.csv", out)


def read_qc(store_dir: str | os.PathLike) -> pd.DataFrame:
    path = Path(store_dir) / "qc.csv"
    if not path.is_file():
        raise store.StoreError(f"{path}: no QC table; run `python -m data_prep preprocess` first")
    return pd.read_csv(path, dtype={"video_id": str})
