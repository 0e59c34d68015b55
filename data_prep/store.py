"""The preprocessed store: one compressed ``.npz`` per video plus a manifest (Decisions: Data).

Layout of a store directory::

    STORE/
      params.json      preprocessing parameters that produced it
      origin.json      synthetic or real faces (data_prep.origin; outside the fingerprint)
      manifest.csv     one row per video (MANIFEST_COLUMNS + npz, n_frames)
      qc.csv           one row per video: frames read, faces found, status, reason
      videos/<video_id>.npz

Each ``.npz`` holds ``frames`` (uint8, N x S x S x 3, RGB), ``landmarks`` (float32, N x 68 x 2,
aligned pixels, x then y), ``frame_index`` (int32, N, index in the source video) and ``score``
(float32 scalar, the BDI-II label) and ``how`` (str, N: how each frame's face was found,
``detected``, ``cascade``, ``reused`` or ``openface``; stores written before it read as
``unknown``). Both ``data_prep`` and ``dlga`` read and write through this
module only. Writes are atomic (temporary name, then ``os.replace``) and nothing is pickled.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

import numpy as np
import pandas as pd

STORE_VERSION = 1
MANIFEST_COLUMNS = ["video_id", "subject_id", "session_id", "task", "partition", "bdi", "path"]
PARTITIONS = ("Training", "Development", "Testing")
VIDEO_KEYS = ("frames", "landmarks", "frame_index", "score", "how")
HOW_VALUES = ("detected", "cascade", "reused", "openface")
"""Values of a stored frame's ``how``; ``unknown`` for frames of stores written without it."""
UNKNOWN_HOW = "unknown"


class StoreError(ValueError):
    """A store file or directory is missing, corrupt or of the wrong shape."""


@contextlib.contextmanager
def _atomic_open(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """A binary file that appears at ``path`` whole, or not at all (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    with _atomic_open(path) as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_csv(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    atomic_write_text(path, frame.to_csv(index=False))


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    landmarks: np.ndarray,
    frame_index: np.ndarray,
    score: float,
    how: np.ndarray | None = None,
) -> None:
    """Validate and atomically write one video's aligned frames.

    Args:
        frames: uint8, (N, S, S, 3) RGB aligned faces.
        landmarks: float, (N, 68, 2) in aligned pixel coordinates (x, y).
        frame_index: int, (N,) index of each frame in the source video.
        score: the video's BDI-II label (NaN when unknown).
        how: str, (N,) how each face was found (one of ``HOW_VALUES``; None: all ``detected``).
    """
    frames = np.asarray(frames)
    landmarks = np.asarray(landmarks, dtype=np.float32)
    frame_index = np.asarray(frame_index, dtype=np.int32)
    n = len(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or (
        n and frames.shape[1] != frames.shape[2]
    ):
        raise StoreError(f"frames must be uint8 (N, S, S, 3), got {frames.dtype} {frames.shape}")
    if landmarks.shape != (n, 68, 2):
        raise StoreError(f"landmarks must be ({n}, 68, 2), got {landmarks.shape}")
    if frame_index.shape != (n,):
        raise StoreError(f"frame_index must be ({n},), got {frame_index.shape}")
    how = np.full(n, "detected") if how is None else np.asarray(how, dtype=str)
    if how.shape != (n,) or not set(how.tolist()) <= set(HOW_VALUES):
        raise StoreError(f"how must be ({n},) values of {HOW_VALUES}, got {how.shape} {sorted(set(how.tolist()))[:5]}")
    with _atomic_open(path) as fh:
        np.savez_compressed(
            fh,
            frames=frames,
            landmarks=landmarks,
            frame_index=frame_index,
            score=np.float32(score),
            how=how.astype("<U8"),
            version=np.int32(STORE_VERSION),
        )


def read_video(path: str | os.PathLike, drop_reused: bool = False) -> dict[str, np.ndarray]:
    """Read one video written by :func:`write_video` (no pickle).

    Args:
        drop_reused: leave out the frames whose face came from a reused box (``how ==
            "reused"``); a store written without ``how`` cannot tell and raises.

    Returns a dict with ``frames`` (N,S,S,3) uint8, ``landmarks`` (N,68,2) float32,
    ``frame_index`` (N,) int32, ``score`` (float) and ``how`` (N,) str (``unknown`` for stores
    written without it).
    """
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: no such store file; run `python -m data_prep preprocess` first")
    try:
        with np.load(path, allow_pickle=False) as data:
            out = {key: data[key] for key in VIDEO_KEYS if key != "how"}
            out["how"] = data["how"].astype(str) if "how" in data.files else np.full(len(out["frames"]), UNKNOWN_HOW)
    except (OSError, ValueError, KeyError) as exc:
        raise StoreError(f"{path}: unreadable store file ({exc}); delete it and rerun preprocess") from exc
    out["score"] = float(out["score"])
    if drop_reused:
        if (out["how"] == UNKNOWN_HOW).any():
            raise StoreError(f"{path}: written without per-frame `how`, so reused frames cannot be dropped; "
                             "preprocess the videos again with this version, or keep the reused frames")
        keep = out["how"] != "reused"
        out.update({key: out[key][keep] for key in ("frames", "landmarks", "frame_index", "how")})
    return out


def video_path(store_dir: str | os.PathLike, video_id: str) -> Path:
    return Path(store_dir) / "videos" / f"{video_id}.npz"


def read_manifest(store_dir: str | os.PathLike) -> pd.DataFrame:
    """The manifest of a store (or a manifest CSV path), validated for the required columns."""
    path = Path(store_dir)
    if path.is_dir():
        path = path / "manifest.csv"
    if not path.is_file():
        raise StoreError(f"{path}: no manifest; run `python -m data_prep preprocess` to make the store")
    frame = pd.read_csv(path, dtype={"video_id": str, "subject_id": str, "session_id": str})
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise StoreError(f"{path}: missing manifest columns {missing}; expected {MANIFEST_COLUMNS}")
    return frame


DATA_VERSION = 1
"""The version of the data path's numbers: what turns a video into stored frames (reading,
face finding, landmarks, alignment, preprocessing). Bump it with any change that changes a
stored frame, landmark or label; tests/test_golden.py compares a preprocessed clip with a
stored golden one and fails until it is bumped and the golden file is refreshed. A comment,
an import, a rename or a file move changes nothing, so it makes no new store."""

DATA_LIBRARIES = ("numpy", "opencv-python-headless", "dlib-bin")
"""The libraries whose versions decide the stored frames beside :data:`DATA_VERSION`."""


def library_versions(names) -> dict[str, str]:
    """The installed versions of distributions ``names`` (read from package metadata; nothing
    is imported): ``"absent"`` for one that is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def data_identity() -> dict[str, Any]:
    """What decides a store's frames besides its parameters: :data:`DATA_VERSION` and the
    versions of :data:`DATA_LIBRARIES`."""
    return {"data_version": DATA_VERSION, "libraries": library_versions(DATA_LIBRARIES)}


# (reader, path, inode, size, mtime_ns) -> sha256 of what the reader gives: a store is hashed once
# per process, then only stat'ed. An atomic rewrite makes a new file (another inode) even within
# one clock tick.
_FILE_DIGESTS: dict[tuple[str, str, int, int, int], bytes] = {}


def _raw_bytes(path: Path):
    """A file's bytes in 1 MiB blocks: the reader of every store file but the manifest."""
    with open(path, "rb") as fh:
        yield from iter(lambda: fh.read(1 << 20), b"")


def _file_digest(path: Path, reader: Callable[[Path], Iterable[bytes]] = _raw_bytes) -> bytes:
    """sha256 of the blocks ``reader(path)`` yields, cached per reader and file version."""
    st = path.stat()
    # abspath, not resolve(): resolving ~190 files per fingerprint cost seconds a build, and the
    # inode already tells two files apart.
    key = (reader.__name__, os.path.abspath(path), st.st_ino, st.st_size, st.st_mtime_ns)
    digest = _FILE_DIGESTS.get(key)
    if digest is None:
        h = hashlib.sha256()
        for block in reader(path):
            h.update(block)
        digest = _FILE_DIGESTS[key] = h.digest()
    return digest


# Manifest columns that say where a source video was found, not what training reads: a store
# copied to another checkout (other absolute paths) keeps its fingerprint, and so its run ids.
_PROVENANCE_COLUMNS = ("path",)


def _manifest_bytes(path: Path) -> Iterable[bytes]:
    """The manifest's CSV without :data:`_PROVENANCE_COLUMNS`, one row per line."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return []
    keep = [i for i, name in enumerate(rows[0]) if name not in _PROVENANCE_COLUMNS]
    return ["\n".join("\0".join(row[i] for i in keep if i < len(row)) for row in rows).encode()]


def store_fingerprint(store_dir: str | os.PathLike) -> str:
    """A short hash of everything in a store that training reads: identifies the data of a run.

    Covers ``params.json``, ``manifest.csv`` (less the source videos' ``path``, so a store moved
    or made in another checkout keeps its fingerprint) and the bytes of every ``videos/*.npz``
    (frames, landmarks, labels), so a store rewritten with other frames under the same
    parameters has another fingerprint. Each file's hash is cached by path, inode, size and modification time: the
    first call in a process reads the store once, later calls only list it.
    """
    store_dir = Path(store_dir)
    h = hashlib.sha256()
    for name, reader in (("params.json", _raw_bytes), ("manifest.csv", _manifest_bytes)):
        p = store_dir / name
        if p.is_file():
            h.update(name.encode() + b"\0" + _file_digest(p, reader))
    videos = store_dir / "videos"
    for p in sorted(videos.glob("*.npz")) if videos.is_dir() else []:
        h.update(p.name.encode() + b"\0" + _file_digest(p))
    return h.hexdigest()[:16]
