"""One video file to its aligned faces, the same way for preprocessing, OpenFace imports and scoring.

:func:`make_detector` builds the face detector that a set of preprocessing parameters
(:func:`data_prep.preprocess.make_params`, a store's ``params.json``) describes, fallback
included. :func:`extract_faces` samples a video (:func:`data_prep.video.iter_sampled_frames`),
finds the face in every sampled frame (:class:`data_prep.faces.FaceTracker`, or landmarks given
from outside, such as OpenFace's), aligns it (:func:`data_prep.align.align_face`) and returns a
:class:`FaceTrack`: the aligned faces, their source geometry, and how every sampled frame's face
was found. ``data_prep.preprocess`` writes a track into the store, ``data_prep.openface``
builds one from OpenFace's landmarks, and ``dlga.inference.predict`` scores one.

Example::

    >>> params = make_params(size=224, sample_fps=5)
    >>> track = extract_faces("interview.mp4", params)
    >>> track.frames.shape, list(track.how[:3])   # (N, 224, 224, 3), ['detected', 'detected', 'reused']
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from .align import align_face
from .faces import Box, LandmarkDetector
from .video import UNKNOWN_FPS, VideoError, iter_sampled_frames

FOUND = ("detected", "cascade", "reused", "openface")
"""Per-frame outcomes that give a face (the rest: ``dropped``, ``none``)."""


def make_detector(params: dict[str, Any]) -> LandmarkDetector:
    """The :class:`LandmarkDetector` that preprocessing parameters describe, fallback included.

    Keys read: ``detect_max_side``, ``upsample``, ``max_reuse``, ``fallback`` (absent: none),
    ``reuse_min_score`` and ``upsample_retry`` (absent: unverified reuse and no upsampled try,
    what stores written before these keys did).
    """
    return LandmarkDetector(params["detect_max_side"], params["upsample"], params["max_reuse"],
                            fallback=params.get("fallback"), reuse_min_score=params.get("reuse_min_score"),
                            upsample_retry=params.get("upsample_retry", False))


@dataclass
class FaceTrack:
    """The aligned faces of one video's sampled frames.

    Attributes:
        frame_index: (N,) int source frame of each face (frames without a face are left out).
        frames: (N, S, S, 3) uint8 aligned faces.
        landmarks: (N, 68, 2) float32 landmarks in aligned pixels.
        boxes: (N, 4) int face boxes (left, top, right, bottom) in source pixels.
        matrices: (N, 2, 3) float64 source -> aligned similarity matrices.
        how: (N,) str how each face was found (one of :data:`FOUND`).
        sampled_index: (M,) int every sampled source frame, with a face or not (M >= N).
        sampled_how: (M,) str how each sampled frame's face was found, ``none``/``dropped`` too.
        stopped_early: sampling stopped at the preprocessing's ``max_frames`` faces.
        fps: the container's frame rate (30 when unknown).
        frames_reported: frames the container claims; frames_read: frames decoded.
        frames_sampled: frames looked at for a face (M).
        frame_size: (width, height) of the source frames.
        decoder_log: the gist of FFmpeg's messages while decoding ("" when none).
        faces_from: ``dlib``, ``openface-video`` or ``openface-aligned``.
        smallest_face: about the smallest face (pixels) our detector finds in these frames
            (None: landmarks came from outside).
    """

    frame_index: np.ndarray
    frames: np.ndarray
    landmarks: np.ndarray
    boxes: np.ndarray
    matrices: np.ndarray
    how: np.ndarray
    sampled_index: np.ndarray
    sampled_how: np.ndarray
    stopped_early: bool
    fps: float
    frames_reported: int
    frames_read: int
    frames_sampled: int
    frame_size: tuple[int, int]
    decoder_log: str = ""
    faces_from: str = "dlib"
    smallest_face: int | None = None

    def counts(self) -> dict[str, int]:
        """Sampled frames per outcome: ``detected``, ``cascade``, ``reused``, ``openface``, ``dropped``, ``none``."""
        return {k: int(np.sum(self.sampled_how == k)) for k in FOUND + ("dropped", "none")}

    def check(self) -> None:
        """Raise :class:`VideoError` (the QC reason) when no frame decoded or no face was found."""
        if self.frames_read == 0:
            raise VideoError("no frame could be decoded (truncated file, unsupported codec, or a video shorter than "
                             "one sample)" + (f"; FFmpeg: {self.decoder_log}" if self.decoder_log else ""))
        if not len(self.frame_index):
            dropped = self.counts()["dropped"]
            extra = f" ({dropped} dropped for OpenFace's success or confidence)" if dropped else ""
            if self.smallest_face and self.frames_sampled:
                width, height = self.frame_size
                extra += (f" ({width}x{height} frames; a face smaller than about {self.smallest_face} pixels "
                          "is not found)")
            raise VideoError(f"no face found in any of {self.frames_sampled} sampled frames{extra}")


FaceStream = Iterable[tuple[int, "np.ndarray | None", "np.ndarray | None", str, "Box | None"]]
"""``(frame_index, rgb (H, W, 3) or None, landmarks (68, 2) in rgb's pixels or None, how, box or None)``."""


def collect_faces(stream: FaceStream, params: dict[str, Any], stats: dict[str, Any], faces_from: str = "dlib") -> FaceTrack:
    """Align the faces of a stream of sampled frames into a :class:`FaceTrack`.

    Stops after ``params["max_frames"]`` faces. ``stats`` holds the reader's ``fps``,
    ``frames_reported``, ``frames_read``, ``decoder_log`` (read when the stream ends).
    """
    size, max_frames = int(params["size"]), params.get("max_frames")
    rows: dict[str, list] = {k: [] for k in ("index", "frames", "landmarks", "boxes", "matrices", "how")}
    sampled, sampled_how, frame_size, stopped_early = [], [], (0, 0), False
    for i, rgb, pts, how, box in stream:
        sampled.append(i)
        sampled_how.append(how)
        if rgb is not None:
            frame_size = (int(rgb.shape[1]), int(rgb.shape[0]))
        if pts is not None:
            aligned, apts, m = align_face(rgb, pts, size)
            if box is None:  # landmarks from outside: their bounding box
                lo, hi = np.floor(pts.min(0)), np.ceil(pts.max(0))
                box = (int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1]))
            for key, value in zip(rows, (i, aligned, apts, box, m, how)):
                rows[key].append(value)
        if max_frames and len(rows["index"]) >= max_frames:
            stopped_early = True
            break
    return FaceTrack(
        frame_index=np.asarray(rows["index"], dtype=np.int64),
        frames=np.stack(rows["frames"]) if rows["frames"] else np.zeros((0, size, size, 3), np.uint8),
        landmarks=np.stack(rows["landmarks"]).astype(np.float32) if rows["landmarks"] else np.zeros((0, 68, 2), np.float32),
        boxes=np.asarray(rows["boxes"], dtype=np.int64).reshape(-1, 4),
        matrices=np.stack(rows["matrices"]) if rows["matrices"] else np.zeros((0, 2, 3)),
        how=np.asarray(rows["how"], dtype=str),
        sampled_index=np.asarray(sampled, dtype=np.int64),
        sampled_how=np.asarray(sampled_how, dtype=str),
        stopped_early=stopped_early,
        fps=float(stats.get("fps") or UNKNOWN_FPS),
        frames_reported=int(stats.get("frames_reported") or 0),
        frames_read=int(stats.get("frames_read") or 0),
        frames_sampled=len(sampled),
        frame_size=frame_size,
        decoder_log=str(stats.get("decoder_log") or ""),
        faces_from=faces_from,
    )


def extract_faces(
    path: str | os.PathLike,
    params: dict[str, Any],
    detector: LandmarkDetector | None = None,
    *,
    landmarks: Callable[[int], tuple["np.ndarray | None", str]] | None = None,
    faces_from: str = "dlib",
) -> FaceTrack:
    """Sample, find and align the faces of one video file.

    Args:
        path: a video file OpenCV can read.
        params: preprocessing parameters (``size``, ``sample_fps``, ``max_frames`` and the
            detector's, see :func:`make_detector`).
        detector: a detector to reuse across videos (default: ``make_detector(params)``).
        landmarks: ``frame_index -> (landmarks (68, 2) source pixels or None, how)`` to use
            instead of the detector (OpenFace's landmarks).
        faces_from: recorded in the track.

    Returns:
        The :class:`FaceTrack`, possibly without any face (see :meth:`FaceTrack.check`).

    Raises:
        VideoError: a missing, empty or unopenable file.
    """
    stats: dict[str, Any] = {}
    frames = iter_sampled_frames(path, params["sample_fps"], stats)
    if landmarks is not None:
        return collect_faces(((i, rgb, *landmarks(i), None) for i, rgb in frames), params, stats, faces_from)
    detector = detector or make_detector(params)
    tracker = detector.tracker()
    track = collect_faces(((i, rgb, *_found(tracker(rgb))) for i, rgb in frames), params, stats, faces_from)
    track.smallest_face = detector.smallest_face(track.frame_size) if track.frames_sampled else None
    return track


def _found(result) -> tuple:
    return result.landmarks, result.how, result.box
