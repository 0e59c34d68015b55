"""OpenFace FeatureExtraction outputs as the face source of preprocessing (Decisions: Data).

A row of the ``openface`` adapter points at ``<name>.csv``: one row per frame with ``frame``
(1-based), ``timestamp`` (s), ``confidence``, ``success`` and the 68 landmarks ``x_0..x_67``,
``y_0..y_67`` in pixels of the source video; next to it ``<name>_aligned/`` holds OpenFace's
aligned faces ``frame_det_<face>_<frame>.bmp``. OpenFace's landmarks are used *instead of* our
detector; a frame with ``success == 0`` or ``confidence`` below the threshold is dropped and
counted (``how = "dropped"``); a sampled frame without a CSV row (or without an aligned image)
has no face (``"none"``). Frames are sampled at ``sample_fps`` on the source frame numbers by
the rule of :class:`video.FrameSampler`. The stored ``frame_index`` is 0-based
(OpenFace's ``frame - 1``). Two ways, chosen per video:

1. **Source video available** (``faces_from = "openface-video"``): ``<name>.<video ext>`` next to
   the CSV, or the ``Input:`` file named by ``<name>_of_details.txt``. It goes through
   :func:`extract.extract_faces` with OpenFace's landmarks in place of our detector: exactly
   our pipeline with OpenFace as the landmark detector.

2. **Only the aligned images** (``faces_from = "openface-aligned"``): the CSV's landmarks are in
   source pixels, and the source-to-aligned transform of each frame is not in the output. It is
   recovered from how OpenFace aligns (``FaceAnalyser``'s ``AlignFace``): the rotation and scale
   of frame t are the least-squares similarity from the frame's *rigid* landmarks
   (``OPENFACE_RIGID``: face outline, nose, eye corners and lower lids) to one fixed reference
   shape ``R`` (its PDM mean shape scaled by ``-simscale``), and the translation puts the face
   centre at the image centre. ``R`` in aligned pixels is not in the output either, so it is
   estimated once per video: our dlib detector finds landmarks ``d_t`` on a few aligned images
   (upscaled to at least 224 px), the similarity from the frame's OpenFace landmarks to ``d_t``
   maps the rigid points into the aligned image, and ``R`` is their mean over those frames.
   Then every kept frame's landmarks are mapped by ``similarity(l_t[rigid] -> R)`` into its
   aligned image, and the image is re-aligned to our template with :func:`align.align_face`.
   The error is the residual of a single reference: OpenFace centres the PDM's translation
   rather than the rigid points' centroid, which moves a little with out-of-plane pose. OpenFace
   masks the background of aligned faces by default and crops them tightly (112 px,
   ``-simscale 0.7``), so our re-aligned frames show less than frames made from the video, and
   the borders are replicated: prefer giving the source video. When dlib finds no face on any
   of the probed aligned images the video fails with that reason.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .align import similarity_transform, transform_points
from .datasets import VIDEO_EXTENSIONS, DatasetError, read_openface_csv
from .extract import FaceTrack, collect_faces, extract_faces, make_detector
from .faces import LandmarkDetector
from .video import FrameSampler, VideoError

OPENFACE_MIN_CONFIDENCE = 0.8
"""Default threshold on OpenFace's per-frame ``confidence``."""

OPENFACE_RIGID = np.array([1, 2, 3, 4, 12, 13, 14, 15, 27, 28, 29, 31, 32, 33, 34, 35, 36, 39, 40, 41, 42, 45, 46, 47])
"""The 68-point indices OpenFace aligns on (``extract_rigid_points`` in OpenFace 2's Face_utils.cpp)."""

REFERENCE_PROBES = 10
"""Aligned images probed with dlib to estimate OpenFace's reference shape (evenly spread)."""

_ALIGNED_NAME = re.compile(r"^frame_det_(\d+)_(\d+)\.(bmp|png|jpe?g)$", re.IGNORECASE)


def read_landmarks(csv_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """One face per frame from an OpenFace CSV.

    Returns a dict of arrays sorted by frame: ``frame`` (int, 1-based), ``face_id`` (int),
    ``timestamp`` (float seconds, NaN when the column is absent), ``confidence``, ``success``
    (int) and ``landmarks`` (float64, (N, 68, 2), source pixels). With several faces in a frame
    (FaceLandmarkVidMulti) the most confident one is kept.
    """
    try:
        table = read_openface_csv(Path(csv_path))
    except DatasetError as exc:
        raise VideoError(str(exc)) from exc
    if "face_id" not in table.columns:
        table["face_id"] = 0
    if "timestamp" not in table.columns:
        table["timestamp"] = np.nan
    table = table.sort_values(["frame", "confidence"], ascending=[True, False], kind="stable")
    table = table.drop_duplicates("frame", keep="first")
    xs = table[[f"x_{i}" for i in range(68)]].to_numpy(np.float64)
    ys = table[[f"y_{i}" for i in range(68)]].to_numpy(np.float64)
    return {
        "frame": table["frame"].to_numpy(np.int64),
        "face_id": table["face_id"].fillna(0).to_numpy(np.int64),
        "timestamp": table["timestamp"].to_numpy(np.float64),
        "confidence": table["confidence"].to_numpy(np.float64),
        "success": table["success"].fillna(0).to_numpy(np.int64),
        "landmarks": np.stack([xs, ys], axis=-1),
    }


def source_video(csv_path: str | os.PathLike) -> Path | None:
    """The video OpenFace read: ``<name>.<video ext>`` next to the CSV, else the ``Input:`` line of
    ``<name>_of_details.txt`` (absolute, or relative to the CSV's folder), if that file exists."""
    csv_path = Path(csv_path)
    for p in sorted(csv_path.parent.glob(f"{glob_escape(csv_path.stem)}.*")):
        if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file():
            return p
    details = csv_path.with_name(f"{csv_path.stem}_of_details.txt")
    if details.is_file():
        for line in details.read_text(errors="replace").splitlines():
            if line.startswith("Input:"):
                p = Path(line[len("Input:"):].strip())
                p = p if p.is_absolute() else csv_path.parent / p
                if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
                    return p
    return None


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def aligned_images(csv_path: str | os.PathLike) -> dict[tuple[int, int], Path]:
    """``{(face_id, frame): path}`` of the images in ``<name>_aligned/``."""
    folder = Path(csv_path).with_name(f"{Path(csv_path).stem}_aligned")
    out = {}
    if folder.is_dir():
        for p in folder.iterdir():
            m = _ALIGNED_NAME.match(p.name)
            if m:
                out[(int(m.group(1)), int(m.group(2)))] = p
    return out


def estimate_fps(frame: np.ndarray, timestamp: np.ndarray, default: float = 30.0) -> float:
    """Frames per second from OpenFace's frame numbers and timestamps (``default`` when unknown)."""
    ok = np.isfinite(timestamp)
    if ok.sum() >= 2:
        f, t = frame[ok], timestamp[ok]
        if t[-1] > t[0]:
            return float((f[-1] - f[0]) / (t[-1] - t[0]))
    return default


def _read_rgb(path: Path) -> np.ndarray | None:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def dlib_on_aligned(image: np.ndarray, detector: LandmarkDetector, min_side: int = 224) -> np.ndarray | None:
    """Our landmarks on an OpenFace aligned image, upscaled to ``min_side`` for HOG's 80 px window."""
    f = max(1.0, min_side / min(image.shape[:2]))
    big = cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_CUBIC) if f > 1 else image
    pts = detector.detect_landmarks(big)
    return None if pts is None else (pts.astype(np.float64) + 0.5) / f - 0.5  # pixel centres


def reference_shape(
    landmarks: np.ndarray, images: list[Path], detector: LandmarkDetector, probes: int = REFERENCE_PROBES
) -> np.ndarray:
    """OpenFace's reference rigid shape in aligned pixels, (len(OPENFACE_RIGID), 2).

    Args:
        landmarks: (N, 68, 2) OpenFace landmarks (source pixels) of frames with an aligned image.
        images: the N aligned images.
    """
    fits = []
    for k in np.unique(np.linspace(0, len(images) - 1, min(probes, len(images))).round().astype(int)):
        image = _read_rgb(images[k])
        d = None if image is None else dlib_on_aligned(image, detector)
        if d is None:
            continue
        # Eyes and nose: the least expression-dependent points both detectors agree on.
        pts = np.r_[27:36, 36:48]
        m = similarity_transform(landmarks[k][pts], d[pts])
        fits.append(transform_points(landmarks[k][OPENFACE_RIGID], m))
    if not fits:
        raise VideoError(
            f"our detector found no face on {min(probes, len(images))} of OpenFace's aligned images, so their landmarks "
            "cannot be placed; put the source video next to the CSV (same name)"
        )
    return np.mean(fits, axis=0)


def openface_faces(
    csv_path: str | os.PathLike, params: dict[str, Any], detector: LandmarkDetector | None = None
) -> FaceTrack:
    """The aligned faces of one OpenFace output, sampled and aligned as preprocessing does.

    ``params``: preprocessing parameters (``size``, ``sample_fps``, ``max_frames``,
    ``openface_min_confidence``). ``detector`` serves only to place the landmarks of aligned
    images (way 2). Sampled frames get ``how`` ``"openface"``, ``"dropped"`` or ``"none"``.
    """
    data = read_landmarks(csv_path)
    by_frame = {int(f): k for k, f in enumerate(data["frame"])}
    min_confidence = params.get("openface_min_confidence", OPENFACE_MIN_CONFIDENCE)
    usable = (data["success"] != 0) & (data["confidence"] >= min_confidence)

    def lookup(index: int) -> tuple[int | None, str]:
        k = by_frame.get(index + 1)  # OpenFace counts frames from 1
        if k is None:
            return None, "none"
        return (k, "openface") if usable[k] else (None, "dropped")

    def landmarks_of(index: int) -> tuple[np.ndarray | None, str]:
        k, how = lookup(index)
        return (None if k is None else data["landmarks"][k]), how

    video = source_video(csv_path)
    if video is not None:
        return extract_faces(video, params, landmarks=landmarks_of, faces_from="openface-video")

    images = aligned_images(csv_path)
    if not len(data["frame"]):
        raise VideoError("the OpenFace CSV has no rows")
    if not images:
        raise VideoError(f"no source video next to {Path(csv_path).name} and no images in its _aligned/ folder")
    fps = estimate_fps(data["frame"], data["timestamp"])
    last = int(data["frame"].max())
    stats = {"fps": fps, "frames_reported": last, "frames_read": last}
    image_of = {k: images.get((int(data["face_id"][k]), int(f))) for k, f in enumerate(data["frame"])}
    ok = [k for k in range(len(data["frame"])) if usable[k] and image_of[k] is not None]
    ref = None
    if ok:
        ref = reference_shape(data["landmarks"][ok], [image_of[k] for k in ok], detector or make_detector(params))

    def aligned_stream():
        sampler = FrameSampler(fps, sample_fps=params["sample_fps"])
        for index in range(last):
            if not sampler(index):
                continue
            k, how = lookup(index)
            rgb = None if k is None or image_of[k] is None else _read_rgb(image_of[k])
            if rgb is None:
                yield index, None, None, ("none" if k is not None else how), None
                continue
            pts = data["landmarks"][k]
            yield index, rgb, transform_points(pts, similarity_transform(pts[OPENFACE_RIGID], ref)), how, None

    return collect_faces(aligned_stream(), params, stats, "openface-aligned")
