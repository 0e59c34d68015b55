"""Face alignment: a similarity transform from 68 landmarks to a canonical template
(Decisions: Patch centres, Data).

The paper feeds OpenFace-aligned 224 x 224 faces (its Fig. 3: the whole face from brows to
chin, eyes level, centred). We align with a least-squares similarity (Umeyama, no reflection)
from dlib's 68 iBUG points to a canonical template and carry the landmarks into the aligned
frame with the same matrix.

The template (``assets/template68.npy``, coordinates as fractions of the output side) is the
generalized-Procrustes mean of the ten CC0 photos' dlib landmarks, made left-right symmetric,
rotated so the eyes are level, scaled so the landmarks span ``TEMPLATE_SPAN`` of the side and
placed with their bounding box centred. :func:`build_template` regenerates it
(``python -m data_prep.align``).

Only the four eye corners (``ALIGN_POINTS``) drive the fit. Mouth, brows, lids and jaw move
with expression, and a fit on them would partly undo the very expression that carries the
label; the nose moves with head pitch, which should stay visible after alignment (a global cue).
OpenFace fits a larger rigid set (eyes and nose); on the ten CC0 photos our eye-corner fit puts
the eye centres within 1.4 px of the template at 224, the eyes-and-nose fit only within 8 px.

Example::

    >>> aligned, pts, m = align_face(image_rgb, landmarks, size=224)
    >>> aligned.shape, pts.shape, m.shape
    ((224, 224, 3), (68, 2), (2, 3))
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from .faces import LandmarkDetector

ASSETS = Path(__file__).resolve().parent / "assets"
TEMPLATE_FILE = ASSETS / "template68.npy"
FACES_DIR = ASSETS / "faces"

LEFT_EYE = slice(36, 42)
"""Points 36-41 (0-indexed): the eye on the image's left (the subject's right eye)."""
RIGHT_EYE = slice(42, 48)

ALIGN_POINTS = np.array([36, 39, 42, 45])
"""Points that drive the similarity fit: the four eye corners (rigid under expression and pitch)."""

TEMPLATE_SPAN = 0.80
"""Largest side of the template's landmark bounding box, as a fraction of the output side."""

# Left-right mirror of the iBUG 68 scheme: index i of a mirrored face is point MIRROR[i].
MIRROR = np.array(
    list(range(16, -1, -1))  # jaw 0..16
    + list(range(26, 16, -1))  # brows 17..26
    + [27, 28, 29, 30]  # nose bridge
    + [35, 34, 33, 32, 31]  # nose base
    + [45, 44, 43, 42, 47, 46]  # eye 36..41 <-> 42..47
    + [39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48]  # outer lip, upper 48..54
    + [59, 58, 57, 56, 55]  # outer lip, lower 55..59
    + [64, 63, 62, 61, 60]  # inner lip, upper 60..64
    + [67, 66, 65]  # inner lip, lower 65..67
)


def eye_centres(landmarks: np.ndarray) -> np.ndarray:
    """Eye centres, (2, 2): row 0 the mean of points 36-41, row 1 of points 42-47 (x, y)."""
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape[-2:] != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got shape {pts.shape}")
    return np.stack([pts[..., LEFT_EYE, :].mean(-2), pts[..., RIGHT_EYE, :].mean(-2)], axis=-2)


def inter_ocular(landmarks: np.ndarray) -> float:
    """Distance between the two eye centres, in the landmarks' units."""
    eyes = eye_centres(landmarks)
    return float(np.linalg.norm(eyes[..., 1, :] - eyes[..., 0, :], axis=-1))


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` onto ``dst``.

    Umeyama (1991), with the reflection excluded.

    Args:
        src, dst: (K, 2) corresponding points, K >= 2.

    Returns:
        float64 (2, 3) matrix ``M`` with ``dst ~= src @ M[:, :2].T + M[:, 2]`` (OpenCV's
        ``warpAffine`` convention).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"src and dst must both be (K >= 2, 2), got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0**2).sum() / len(src)
    if var_s <= 0:
        raise ValueError("src points all coincide: no similarity transform")
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0  # no reflection
    rot = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / var_s
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine matrix to (..., 2) points."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]


@lru_cache(maxsize=None)
def _unit_template() -> np.ndarray:
    if not TEMPLATE_FILE.is_file():
        raise FileNotFoundError(
            f"{TEMPLATE_FILE}: the landmark template is missing; regenerate it with `python -m data_prep.align`"
        )
    tpl = np.load(TEMPLATE_FILE, allow_pickle=False)
    if tpl.shape != (68, 2):
        raise ValueError(f"{TEMPLATE_FILE}: expected a (68, 2) template, got {tpl.shape}")
    tpl.setflags(write=False)
    return tpl


def template(size: int = 224) -> np.ndarray:
    """Canonical 68-point template in pixels of a ``size`` x ``size`` aligned image, float64 (68, 2)."""
    size = int(size)
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    # Pixel centres: fraction f of the side maps to f * size - 0.5 in pixel coordinates.
    return _unit_template() * size - 0.5


def align_face(
    image_rgb: np.ndarray, landmarks: np.ndarray, size: int = 224, points: np.ndarray = ALIGN_POINTS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Warp a face to the canonical template.

    Args:
        image_rgb: uint8 (H, W, 3) source image.
        landmarks: (68, 2) landmarks in ``image_rgb`` pixels (x, y).
        size: output side in pixels (224 for the paper).
        points: indices of the landmarks that drive the fit (default: the eye corners).

    Returns:
        ``(aligned, aligned_landmarks, matrix)``: uint8 (size, size, 3) image, float32 (68, 2)
        landmarks in aligned pixels, and the float64 (2, 3) matrix from source to aligned pixels.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got shape {landmarks.shape}")
    tpl = template(size)
    m = similarity_transform(landmarks[points], tpl[points])
    aligned = cv2.warpAffine(
        np.ascontiguousarray(image_rgb), m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return aligned, transform_points(landmarks, m).astype(np.float32), m


def procrustes_mean(shapes: np.ndarray, iterations: int = 100, tol: float = 1e-10) -> np.ndarray:
    """Generalized Procrustes mean of (N, K, 2) shapes: centred, unit Frobenius norm, (K, 2)."""
    shapes = np.asarray(shapes, dtype=np.float64)
    mean = shapes[0] - shapes[0].mean(0)
    mean /= np.linalg.norm(mean)
    for _ in range(iterations):
        fitted = np.stack([transform_points(s, similarity_transform(s, mean)) for s in shapes])
        new = fitted.mean(0)
        new -= new.mean(0)
        new /= np.linalg.norm(new)
        # Keep the orientation of the previous mean so that the iteration cannot drift.
        new = transform_points(new, similarity_transform(new, mean))
        new /= np.linalg.norm(new)
        if np.abs(new - mean).max() < tol:
            return new
        mean = new
    return mean


def build_template(landmark_sets: np.ndarray, span: float = TEMPLATE_SPAN) -> np.ndarray:
    """Canonical template from (N, 68, 2) landmark sets, as fractions of the output side.

    Steps: generalized Procrustes mean; average with its mirror image (a symmetric face);
    rotate so the eye centres are level; scale so the landmarks' bounding box spans ``span`` of
    the side; centre the bounding box.
    """
    mean = procrustes_mean(landmark_sets)
    mirrored = mean[MIRROR] * np.array([-1.0, 1.0])
    mean = (mean + transform_points(mirrored, similarity_transform(mirrored, mean))) / 2
    eyes = eye_centres(mean)
    dx, dy = eyes[1] - eyes[0]
    angle = -np.arctan2(dy, dx)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    mean = mean @ rot.T
    # Symmetrising makes x symmetric about the eye midline; put it exactly on x = 0.
    mean[:, 0] -= eye_centres(mean)[:, 0].mean()
    lo, hi = mean.min(0), mean.max(0)
    mean = (mean - (lo + hi) / 2) * (span / (hi - lo).max()) + 0.5
    return mean


def photo_landmarks(faces_dir: Path = FACES_DIR) -> np.ndarray:
    """dlib landmarks of the CC0 photos, full-resolution detection, (N, 68, 2) float64."""
    det = LandmarkDetector(detect_max_side=None)
    out = []
    for path in sorted(Path(faces_dir).glob("*.jpg")):
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        pts = det.detect_landmarks(image)
        if pts is None:
            raise RuntimeError(f"{path}: no face found; the template needs every photo")
        out.append(pts)
    if len(out) < 3:
        raise RuntimeError(f"{faces_dir}: found {len(out)} photos, need at least 3 for a template")
    return np.stack(out).astype(np.float64)


def main() -> None:
    """Regenerate ``assets/template68.npy`` from the CC0 photos."""
    tpl = build_template(photo_landmarks())
    buf_path = TEMPLATE_FILE.with_suffix(".tmp.npy")
    np.save(buf_path, tpl)
    buf_path.replace(TEMPLATE_FILE)
    _unit_template.cache_clear()
    eyes = eye_centres(template(224))
    print(f"wrote {TEMPLATE_FILE}: eyes at {eyes.round(1).tolist()} in a 224 image, IOD {inter_ocular(template(224)):.1f} px")


if __name__ == "__main__":
    main()
