"""Face detection and 68-point landmarks (Decisions: Data).

The default path is dlib's HOG frontal-face detector plus its 68-point iBUG shape predictor,
the model file coming from the ``face_recognition_models`` package (nothing downloads at run
time). The points are in the iBUG order that OpenFace also uses, 0-indexed here.

Speed: HOG detection dominates the cost and grows with the pixel count, so
:class:`LandmarkDetector` detects on a frame downscaled to ``detect_max_side`` pixels (400) and fits
the landmarks at full resolution inside the box scaled back up; ``python -m data_prep bench``
measures what this costs in landmark accuracy. When the downscaled frame shows no face (a
small face falls under HOG's 80-pixel window) the full-resolution frame is tried, and on frames
of at most ``UPSAMPLE_MAX_SIDE`` pixels the full-resolution frame upsampled once (faces down to
about 40 pixels) before giving up (:meth:`LandmarkDetector.smallest_face`).

Video: :class:`FaceTracker` walks the frames of one video; when detection fails on a frame it
tries the fallback detector (if any), then the previous box for at most ``max_reuse`` frames,
*verified*: the box is kept only where HOG, run on the region around it with its threshold
lowered to ``reuse_min_score``, still sees a face there. Every frame reports how its face was
found (``"detected"``, ``"cascade"``, ``"reused"`` or ``"none"``).

:class:`CascadeDetector` wraps OpenCV's Haar cascade (shipped by OpenCV below 5) with the same
``detect`` signature, for comparison and as the automatic fallback of
``LandmarkDetector(fallback="cascade")``: when HOG finds no face, the cascade's box is used for
the landmark fit. The cascade's boxes are somewhat wider than HOG's and the landmarks fitted in
them stay within a few percent of the inter-ocular distance of those fitted in HOG's box
(``tests/test_faces.py`` checks the boxes agree), so the box is used as it is.

Example::

    >>> det = LandmarkDetector()
    >>> boxes = det.detect(image_rgb)            # [(left, top, right, bottom), ...], largest first
    >>> pts = det.landmarks(image_rgb, boxes[0])  # (68, 2) float32, x then y, pixels
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

Box = tuple[int, int, int, int]
"""A face box ``(left, top, right, bottom)`` in pixels of the full-resolution image."""

HOW = ("detected", "cascade", "reused", "none")
"""How a frame's face was found, as recorded per frame by :class:`FaceTracker`."""

N_LANDMARKS = 68

FALLBACKS = (None, "cascade")
"""Values of ``LandmarkDetector(fallback=...)``."""

HOG_WINDOW = 80
"""Smallest face HOG finds at detection scale, pixels (dlib's 80 x 80 window)."""

UPSAMPLE_MAX_SIDE = 400
"""Frames up to this longest side (176x144, 320x240 clips) get one upsampled try when nothing else
finds a face: it costs about one full-resolution pass of a 640x480 frame. Larger frames are not
upsampled: it would cost four times a full-resolution pass on every frame without a face."""

REUSE_MIN_SCORE = -0.8
"""HOG score a reused box's region must reach (dlib's threshold is 0). Chosen by measuring on
the CC0 photos: textured backgrounds without a face score up to about -1.2, a face HOG misses
(rolled 40 degrees, lower half occluded) scores from about -1 to 0, plain backgrounds nothing."""

REUSE_SIZE_RATIO = (0.7, 1.4)
"""A verified face's width relative to the reused box's, lowest and highest."""

REUSE_SIDE = 160
"""The region around a reused box is rescaled so the box is this many pixels wide (2x HOG's window)."""


def predictor_path() -> Path:
    """Path of dlib's 68-point shape predictor shipped by ``face_recognition_models``."""
    try:
        import face_recognition_models
    except ImportError as exc:  # pragma: no cover - installed with the project
        raise ImportError(
            "the 68-point landmark model comes from the `face_recognition_models` package; "
            "install the project (`pip install -e .`) to get it"
        ) from exc
    path = Path(face_recognition_models.pose_predictor_model_location())
    if not path.is_file():  # pragma: no cover
        raise FileNotFoundError(f"{path}: dlib's 68-point model is missing; reinstall face_recognition_models")
    return path


def to_gray(image: np.ndarray) -> np.ndarray:
    """(H, W) uint8 grey image from an RGB (H, W, 3) or grey (H, W) uint8 image."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    raise ValueError(f"expected an RGB (H, W, 3) or grey (H, W) image, got shape {image.shape}")


def box_area(box: Box) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def largest(boxes: Iterable[Box]) -> Box | None:
    """The box with the largest area, or None for no box (the largest face wins)."""
    boxes = list(boxes)
    return max(boxes, key=box_area) if boxes else None


def _downscale(gray: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """Image shrunk so its longest side is at most ``max_side``, and the factor used (<= 1)."""
    side = max(gray.shape[:2])
    if not max_side or side <= max_side:
        return gray, 1.0
    scale = max_side / side
    small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return small, scale


class LandmarkDetector:
    """dlib HOG face detector + 68-point shape predictor.

    Args:
        detect_max_side: detection runs on the frame shrunk so its longest side is at most this
            many pixels (None: full resolution). At 400 on 640x480 video detection is about 2.5x
            faster than at full resolution, and the landmarks (fitted at full resolution)
            differ from full-resolution detection's by about 1.5 % of the inter-ocular distance
            (320: 2.1 %). HOG finds faces of about 80 pixels and more at detection scale.
        upsample: dlib's upsampling count for detection (each doubles the size; finds smaller
            faces, about 4x slower).
        max_reuse: how many consecutive frames :class:`FaceTracker` may reuse the last box for
            when detection fails.
        full_res_retry: when the downscaled frame shows no face, try the full-resolution frame.
        fallback: ``"cascade"`` to let :class:`FaceTracker` try OpenCV's Haar cascade
            (:class:`CascadeDetector`) on frames where HOG finds no face; None (default): no
            fallback.
        reuse_min_score: a reused box is kept only where HOG scores the region around it at
            least this much (:meth:`verify`); None: reuse without checking (earlier stores).
        upsample_retry: when nothing is found, try the full-resolution frame upsampled once
            (frames up to ``UPSAMPLE_MAX_SIDE`` pixels, and only with ``upsample=0``).
    """

    def __init__(
        self,
        detect_max_side: int | None = 400,
        upsample: int = 0,
        max_reuse: int = 5,
        full_res_retry: bool = True,
        fallback: str | None = None,
        reuse_min_score: float | None = REUSE_MIN_SCORE,
        upsample_retry: bool = True,
    ):
        if detect_max_side is not None and int(detect_max_side) < 80:
            raise ValueError(f"detect_max_side must be >= 80 pixels (HOG's window) or None, got {detect_max_side}")
        if int(upsample) < 0:
            raise ValueError(f"upsample must be >= 0, got {upsample}")
        if int(max_reuse) < 0:
            raise ValueError(f"max_reuse must be >= 0, got {max_reuse}")
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {list(FALLBACKS)}, got {fallback!r}")
        import dlib

        self.detect_max_side = None if detect_max_side is None else int(detect_max_side)
        self.upsample = int(upsample)
        self.max_reuse = int(max_reuse)
        self.full_res_retry = bool(full_res_retry)
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(predictor_path()))
        self.fallback = fallback
        self.fallback_detector = CascadeDetector() if fallback == "cascade" else None
        self.reuse_min_score = None if reuse_min_score is None else float(reuse_min_score)
        self.upsample_retry = bool(upsample_retry)

    def __repr__(self) -> str:
        return (
            f"LandmarkDetector(detect_max_side={self.detect_max_side}, upsample={self.upsample}, "
            f"max_reuse={self.max_reuse}, full_res_retry={self.full_res_retry}, fallback={self.fallback!r}, "
            f"reuse_min_score={self.reuse_min_score}, upsample_retry={self.upsample_retry})"
        )

    def smallest_face(self, frame_size: tuple[int, int]) -> int:
        """About the smallest face (pixels, full resolution) :meth:`detect` finds in a ``(width, height)`` frame."""
        upsample = self.upsample + (self.upsample_retry and self.upsample == 0 and max(frame_size) <= UPSAMPLE_MAX_SIDE)
        scale = 1.0 if self.full_res_retry or not self.detect_max_side else min(1.0, self.detect_max_side / max(frame_size))
        return int(round(HOG_WINDOW / scale / 2**upsample))

    def _detect_gray(self, gray: np.ndarray, max_side: int | None, upsample: int | None = None) -> list[Box]:
        small, scale = _downscale(gray, max_side)
        rects = self._detector(small, self.upsample if upsample is None else upsample)
        h, w = gray.shape[:2]
        boxes = []
        for r in rects:
            # Back to full-resolution pixels, clipped: dlib boxes may overhang the border.
            box = (
                max(0, int(round(r.left() / scale))),
                max(0, int(round(r.top() / scale))),
                min(w, int(round((r.right() + 1) / scale))),
                min(h, int(round((r.bottom() + 1) / scale))),
            )
            if box_area(box) > 0:
                boxes.append(box)
        return sorted(boxes, key=box_area, reverse=True)

    def detect(self, image_rgb: np.ndarray) -> list[Box]:
        """Face boxes in an image, largest first.

        Args:
            image_rgb: uint8 (H, W, 3) RGB or (H, W) grey.

        Returns:
            list of ``(left, top, right, bottom)`` int boxes in full-resolution pixels.
        """
        gray = to_gray(image_rgb)
        boxes = self._detect_gray(gray, self.detect_max_side)
        if not boxes and self.full_res_retry and _downscale(gray, self.detect_max_side)[1] < 1.0:
            boxes = self._detect_gray(gray, None)
        if not boxes and self.upsample_retry and self.upsample == 0 and max(gray.shape) <= UPSAMPLE_MAX_SIDE:
            boxes = self._detect_gray(gray, None, upsample=1)
        return boxes

    def verify(self, image_rgb: np.ndarray, box: Box) -> Box | None:
        """The face box near ``box`` that HOG scores at least ``reuse_min_score``, or None.

        HOG runs with its threshold lowered on the region around ``box`` (half a box width on
        each side), rescaled so the box is ``REUSE_SIDE`` pixels wide; a face counts when its
        centre lies within half a box width of ``box``'s and its width is within
        ``REUSE_SIZE_RATIO`` of ``box``'s (a face does not halve between two sampled frames;
        textures give small low-score boxes). ``reuse_min_score=None``: ``box``.
        """
        if self.reuse_min_score is None:
            return box
        gray = to_gray(image_rgb)
        left, top, right, bottom = box
        width = max(1, right - left)
        margin = width // 2
        x0, y0 = max(0, left - margin), max(0, top - margin)
        x1, y1 = min(gray.shape[1], right + margin), min(gray.shape[0], bottom + margin)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return None
        f = REUSE_SIDE / width
        region = cv2.resize(gray[y0:y1, x0:x1], None, fx=f, fy=f,
                            interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
        rects, scores, _ = self._detector.run(region, 0, self.reuse_min_score)
        cx, cy = (left + right) / 2, (top + bottom) / 2
        best, best_score = None, -np.inf
        for r, score in zip(rects, scores):
            found = (max(0, int(round(r.left() / f)) + x0), max(0, int(round(r.top() / f)) + y0),
                     min(gray.shape[1], int(round((r.right() + 1) / f)) + x0),
                     min(gray.shape[0], int(round((r.bottom() + 1) / f)) + y0))
            near = abs((found[0] + found[2]) / 2 - cx) < width / 2 and abs((found[1] + found[3]) / 2 - cy) < width / 2
            alike = REUSE_SIZE_RATIO[0] <= (found[2] - found[0]) / width <= REUSE_SIZE_RATIO[1]
            if near and alike and score > best_score and box_area(found) > 0:
                best, best_score = found, score
        return best

    def landmarks(self, image_rgb: np.ndarray, box: Box) -> np.ndarray:
        """68 iBUG landmarks fitted at full resolution inside ``box``.

        Returns:
            float32 (68, 2): x then y in pixels of ``image_rgb``.
        """
        gray = to_gray(image_rgb)
        left, top, right, bottom = (int(v) for v in box)
        # dlib's rectangle is inclusive of right/bottom; our boxes are exclusive.
        rect = self._dlib.rectangle(left, top, right - 1, bottom - 1)
        shape = self._predictor(gray, rect)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)

    def detect_landmarks(self, image_rgb: np.ndarray) -> np.ndarray | None:
        """Landmarks of the largest face, (68, 2) float32, or None when no face is found."""
        gray = to_gray(image_rgb)
        box = largest(self.detect(gray))
        return None if box is None else self.landmarks(gray, box)

    def tracker(self) -> "FaceTracker":
        """A fresh :class:`FaceTracker` for one video."""
        return FaceTracker(self)


@dataclass
class TrackResult:
    """One frame's face: landmarks (68, 2) float32 or None, how it was found, and its box."""

    landmarks: np.ndarray | None
    how: str
    box: Box | None

    def __iter__(self):  # unpack as (landmarks, how)
        return iter((self.landmarks, self.how))


class FaceTracker:
    """Landmarks frame by frame through one video, reusing the last box when detection fails.

    When HOG finds no face and the detector has a fallback (``fallback="cascade"``), the
    fallback's largest box is used (``how="cascade"``) and becomes the box to reuse. Otherwise,
    for at most ``detector.max_reuse`` consecutive misses, the last box is checked
    (:meth:`LandmarkDetector.verify`): where a face is still seen near it, that face's box is
    used (``how="reused"``) and followed; where none is, the frame gets no face (``how="none"``),
    so background frames after a face has left the view are not stored or scored.

    Example::

        >>> tracker = LandmarkDetector().tracker()
        >>> for frame in frames:
        ...     pts, how = tracker(frame)   # pts (68, 2) or None; how in HOW
    """

    def __init__(self, detector: LandmarkDetector):
        self.detector = detector
        self._last_box: Box | None = None
        self._misses = 0

    def __call__(self, image_rgb: np.ndarray) -> TrackResult:
        gray = to_gray(image_rgb)
        box = largest(self.detector.detect(gray))
        if box is not None:
            self._last_box, self._misses = box, 0
            return TrackResult(self.detector.landmarks(gray, box), "detected", box)
        if self.detector.fallback_detector is not None:
            box = largest(self.detector.fallback_detector.detect(gray))
            if box is not None:
                self._last_box, self._misses = box, 0
                return TrackResult(self.detector.landmarks(gray, box), "cascade", box)
        self._misses += 1
        if self._last_box is not None and self._misses <= self.detector.max_reuse:
            box = self.detector.verify(gray, self._last_box)
            if box is not None:
                self._last_box = box
                return TrackResult(self.detector.landmarks(gray, box), "reused", box)
        return TrackResult(None, "none", None)

    def track(self, frames: Iterable[np.ndarray]) -> Iterator[TrackResult]:
        """Yield a :class:`TrackResult` per frame."""
        for frame in frames:
            yield self(frame)


_DEFAULT: LandmarkDetector | None = None


def detect_landmarks(image_rgb: np.ndarray) -> np.ndarray | None:
    """Landmarks of the largest face with a default :class:`LandmarkDetector`.

    Args:
        image_rgb: uint8 (H, W, 3) RGB or (H, W) grey.

    Returns:
        float32 (68, 2) (x, y pixels), or None when no face is found.
    """
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = LandmarkDetector()
    return _DEFAULT.detect_landmarks(image_rgb)


class CascadeDetector:
    """OpenCV's Haar cascade frontal-face detector, with :meth:`LandmarkDetector.detect`'s signature.

    A fallback and a comparison for the HOG detector; landmarks still come from dlib's predictor
    (``LandmarkDetector.landmarks`` accepts any box).

    Args:
        cascade: file name in ``cv2.data.haarcascades`` or a path.
        scale_factor, min_neighbors: passed to ``detectMultiScale``.
        min_size: smallest face in pixels at detection scale.
        detect_max_side: detect on a frame shrunk to this longest side (None: full resolution).
    """

    def __init__(
        self,
        cascade: str = "haarcascade_frontalface_default.xml",
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 40,
        detect_max_side: int | None = 320,
    ):
        path = Path(cascade)
        if not path.is_file():
            data = getattr(cv2, "data", None)
            if data is None:  # pragma: no cover - OpenCV >= 5 or a build without cascades
                raise FileNotFoundError(
                    "this OpenCV build ships no Haar cascades (OpenCV 5 dropped them); "
                    "install opencv-python-headless<5 or pass the path of a cascade XML file"
                )
            path = Path(data.haarcascades) / cascade
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise FileNotFoundError(f"{path}: cannot load the OpenCV cascade file")
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.min_size = int(min_size)
        self.detect_max_side = detect_max_side

    def detect(self, image_rgb: np.ndarray) -> list[Box]:
        """Face boxes, largest first, as ``(left, top, right, bottom)`` full-resolution pixels."""
        gray = to_gray(image_rgb)
        small, scale = _downscale(gray, self.detect_max_side)
        found = self._cascade.detectMultiScale(
            cv2.equalizeHist(small),
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
        )
        boxes = [
            (int(round(x / scale)), int(round(y / scale)), int(round((x + w) / scale)), int(round((y + h) / scale)))
            for (x, y, w, h) in np.reshape(found, (-1, 4))
        ]
        return sorted(boxes, key=box_area, reverse=True)
