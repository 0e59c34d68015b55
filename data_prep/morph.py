"""Synthetic faces: landmark morphs of the CC0 photos and their piecewise-affine animation.

This is the geometry half of the synthetic cohort (:mod:`data_prep.synthetic` is the other):

1. **Canonical space.** Every photo is mapped by a similarity on its four eye corners
   (:data:`data_prep.align.ALIGN_POINTS`) onto the project's template, scaled to an inter-ocular
   distance (IOD) of :data:`IOD_C` pixels on a :data:`CANVAS_W` x :data:`CANVAS_H` canvas with
   the eye midpoint at (:data:`EYE_X`, :data:`EYE_Y`).
2. **Mesh.** The 68 iBUG landmarks (0-indexed) plus 27 points derived from them (forehead,
   crown, outside the jaw, neck) plus 8 fixed canvas-border points make 103 vertices; one
   Delaunay triangulation of the reference shape is used for every face and frame, so a
   piecewise-affine warp maps any mesh onto any other.
3. **Neutral morph.** A subject's shape is the weighted mean of three or more photos' shapes,
   except that the expression-bearing parts (mouth, eyelids, brows) take the median photo shape,
   re-centred on the morph (Decisions: Data: the photos' own smiles and narrowed lids spread
   about +-0.1 IOD on exactly the cue landmarks). Every photo is warped onto that shape and the
   warped photos are blended with the same weights.
4. **Pose.** Frames pose the canonical mesh in 3-D with a fixed generic depth per vertex
   (:data:`DEPTH`, in IOD), rotate it (pitch about the horizontal axis, then yaw, then roll)
   and project it orthographically into the video frame. This is our 2-D model of head pitch:
   a pitched-down head foreshortens vertically and the points that stand out (nose tip, lips,
   brows) move down relative to the eyes, as they would in a real view; the texture itself is
   not re-lit or occluded.

Coordinates are (x, y) pixels, y down; depth z points towards the camera.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from . import align

FACES_DIR = align.FACES_DIR

IOD_C = 80.0
"""Inter-ocular distance of the canonical texture, pixels."""
CANVAS_W, CANVAS_H = 320, 400
"""Size of a subject's canonical texture, pixels (room for hair above and a neck below)."""
EYE_X, EYE_Y = 160.0, 170.0
"""Eye midpoint in the canonical texture, pixels."""

MOUTH = np.arange(48, 68)
BROWS = np.arange(17, 27)
LIDS = np.array([37, 38, 40, 41, 43, 44, 46, 47])
UPPER_LIDS = np.array([37, 38, 43, 44])
LOWER_LIDS = np.array([41, 40, 47, 46])  # paired with UPPER_LIDS: 37-41, 38-40, 43-47, 44-46
EYE_CORNERS = np.array([36, 39, 42, 45])
INNER_MOUTH = np.arange(60, 68)
N_LM = 68

_JAW_OUT = np.array([0, 2, 4, 6, 8, 10, 12, 14, 16])
_FOREHEAD = np.array([17, 19, 21, 22, 24, 26])
N_EXTRA = 2 * len(_FOREHEAD) + 3 + len(_JAW_OUT) + 3
_BORDER = np.array(
    [
        [0, 0],
        [CANVAS_W / 2, 0],
        [CANVAS_W - 1, 0],
        [CANVAS_W - 1, CANVAS_H / 2],
        [CANVAS_W - 1, CANVAS_H - 1],
        [CANVAS_W / 2, CANVAS_H - 1],
        [0, CANVAS_H - 1],
        [0, CANVAS_H / 2],
    ],
    dtype=np.float64,
)
N_MESH = N_LM + N_EXTRA + len(_BORDER)


def _depth_profile() -> np.ndarray:
    """Generic depth (towards the camera) of every mesh vertex, in IOD, eyes at about 0.

    A rough, flattened average head: the nose tip stands 0.28 IOD in front of the eyes (about
    1.8 cm for a 6.3 cm IOD), the nose base 0.19, the lips 0.12-0.16, the brows 0.05, the jaw
    outline falls back to -0.15 at eye level. A 2-D mesh cannot occlude, so the depths are kept
    shallower than a real head's (the outline is a silhouette anyway, not a fixed point of the
    skull): no triangle folds up to 30 degrees of pitch with 8 of yaw (tested), and at 40-45
    degrees only a thin triangle between a strongly lowered mouth corner and the jaw line
    (points 48, 59, 5) folds in a few poses. Only the differences matter: they make the points
    move differently under pitch and yaw.
    """
    z = np.zeros(N_MESH)
    jaw = [-0.15, -0.13, -0.11, -0.09, -0.07, -0.05, -0.03, -0.01, 0.0]
    z[0:9] = jaw
    z[8:17] = jaw[::-1]
    # Brows and lips nearly flat (small depth differences within each): pitch then shortens
    # them as a whole and does not tilt the mouth corners against the lip centre or the inner
    # brows against the outer ones, so it cannot cancel the local cues it is mixed with.
    z[17:22] = [-0.05, 0.03, 0.05, 0.05, 0.05]
    z[22:27] = [0.05, 0.05, 0.05, 0.03, -0.05]
    z[27:31] = [0.1, 0.16, 0.22, 0.28]
    z[31:36] = [0.14, 0.17, 0.19, 0.17, 0.14]
    z[36:42] = [-0.1, 0.0, 0.0, 0.02, 0.0, 0.0]
    z[42:48] = [0.02, 0.0, 0.0, -0.1, 0.0, 0.0]
    z[48:55] = [0.12, 0.15, 0.16, 0.16, 0.16, 0.15, 0.12]
    z[55:60] = [0.15, 0.16, 0.16, 0.16, 0.15]
    z[60:65] = [0.12, 0.15, 0.15, 0.15, 0.12]
    z[65:68] = [0.15, 0.15, 0.15]
    k = N_LM
    z[k : k + 6] = 0.1  # forehead, low
    z[k + 6 : k + 12] = -0.05  # forehead, high
    z[k + 12 : k + 15] = -0.2  # crown
    z[k + 15 : k + 24] = [-0.2, -0.18, -0.15, -0.12, -0.1, -0.12, -0.15, -0.18, -0.2]  # outside the jaw
    z[k + 24 : k + 27] = -0.2  # neck
    z[k + 27 :] = -0.3  # canvas border
    return z


DEPTH = _depth_profile()
"""(N_MESH,) generic depth of each mesh vertex in IOD (see :func:`_depth_profile`)."""


def face_frame(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Eye midpoint, unit vectors along (u) and across (v, pointing down) the eye line, and IOD."""
    eyes = align.eye_centres(landmarks)
    c = eyes.mean(0)
    d = eyes[1] - eyes[0]
    iod = float(np.linalg.norm(d))
    u = d / iod
    v = np.array([-u[1], u[0]])
    return c, u, v, iod


def mesh_points(landmarks: np.ndarray) -> np.ndarray:
    """The 103 mesh vertices of a canonical face, (N_MESH, 2) float64.

    Args:
        landmarks: (68, 2) canonical-space landmarks.

    Returns:
        the landmarks, then N_EXTRA points derived from them (forehead, crown, outside the jaw,
        neck), then the 8 fixed canvas-border points.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    c, u, v, iod = face_frame(lm)
    centre = c + 0.6 * iod * v
    extra = [lm[_FOREHEAD] - 0.5 * iod * v, lm[_FOREHEAD] - 1.05 * iod * v]
    extra.append(np.stack([c - 1.75 * iod * v, c - 1.05 * iod * u - 1.45 * iod * v, c + 1.05 * iod * u - 1.45 * iod * v]))
    radial = lm[_JAW_OUT] - centre
    radial /= np.linalg.norm(radial, axis=1, keepdims=True)
    extra.append(lm[_JAW_OUT] + 0.35 * iod * radial)
    neck = np.stack([lm[5] + 0.9 * iod * v, lm[8] + 0.9 * iod * v, lm[11] + 0.9 * iod * v])
    # A long face would push the neck past the canvas edge and fold the border triangles.
    neck[:, 1] = np.minimum(neck[:, 1], CANVAS_H - 16)
    extra.append(neck)
    return np.concatenate([lm, *extra, _BORDER])


@lru_cache(maxsize=None)
def canonical_reference() -> np.ndarray:
    """The project's landmark template placed in canonical texture space, (68, 2) float64."""
    tpl = align.template(224)
    c, u, _, iod = face_frame(tpl)
    scale = IOD_C / iod
    ref = (tpl - c) * scale + np.array([EYE_X, EYE_Y])
    ref.setflags(write=False)
    return ref


@lru_cache(maxsize=None)
def triangles() -> np.ndarray:
    """(K, 3) int32 vertex indices of the Delaunay triangulation of the reference mesh."""
    from scipy.spatial import Delaunay

    tri = Delaunay(mesh_points(canonical_reference())).simplices.astype(np.int32)
    tri.setflags(write=False)
    return tri


def signed_areas(points: np.ndarray, tri: np.ndarray | None = None) -> np.ndarray:
    """Signed area of every mesh triangle, (K,); a sign change against the reference is a fold."""
    tri = triangles() if tri is None else tri
    a, b, c = points[tri[:, 0]], points[tri[:, 1]], points[tri[:, 2]]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def _triangle_affines(src: np.ndarray, dst: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Per triangle, the (2, 3) affine mapping dst-triangle points to src-triangle points, (K, 2, 3)."""
    d = np.concatenate([dst[tri], np.ones((len(tri), 3, 1))], axis=2)  # (K, 3, 3) rows [x y 1]
    s = src[tri]  # (K, 3, 2)
    det = np.linalg.det(d)
    # A degenerate destination triangle covers no pixel; any finite matrix will do.
    d[np.abs(det) < 1e-9] = np.eye(3)
    a = np.linalg.solve(d, s)  # (K, 3, 2): s = d @ a
    return np.transpose(a, (0, 2, 1))


@lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    gx.setflags(write=False)
    gy.setflags(write=False)
    return gx, gy


def warp_piecewise(
    texture: np.ndarray,
    src_pts: np.ndarray,
    dst_pts: np.ndarray,
    out_shape: tuple[int, int],
    tri: np.ndarray | None = None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Piecewise-affine backward warp of ``texture`` from mesh ``src_pts`` to mesh ``dst_pts``.

    Each destination triangle is rasterised (``cv2.fillConvexPoly`` at 1/16-pixel precision)
    with the coefficients of its affine back into the source, so every pixel gets its source
    position and one ``cv2.remap`` samples the texture: a whole face in about 2 ms.

    Args:
        texture: (h, w, C) uint8 source image (C <= 4); pixels outside the mesh come out 0.
        src_pts, dst_pts: (N_MESH, 2) corresponding mesh vertices, pixels.
        out_shape: (H, W) of the destination image.

    Returns:
        ``(patch, (x0, y0))``: the warped (h', w', C) uint8 content of the mesh's bounding box,
        clipped to the destination, and the box's top-left corner in the destination.
    """
    tri = triangles() if tri is None else tri
    h, w = out_shape
    x0, y0 = np.floor(dst_pts.min(0)).astype(int)
    x1, y1 = np.ceil(dst_pts.max(0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    channels = texture.shape[2] if texture.ndim == 3 else 1
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0, channels), np.uint8), (0, 0)
    # Each triangle paints its affine coefficients straight into two 3-channel images (row 0
    # and row 1 of its matrix): no per-pixel gather. A 4th channel marks "inside the mesh".
    aff = _triangle_affines(src_pts, dst_pts, tri)
    coef_x = np.zeros((y1 - y0, x1 - x0, 4), np.float32)
    coef_y = np.zeros((y1 - y0, x1 - x0, 3), np.float32)
    local = np.round((dst_pts - [x0, y0]) * 16).astype(np.int32)
    for k, t in enumerate(tri):
        poly = local[t]
        cv2.fillConvexPoly(coef_x, poly, (*aff[k, 0].tolist(), 1.0), lineType=cv2.LINE_8, shift=4)
        cv2.fillConvexPoly(coef_y, poly, aff[k, 1].tolist(), lineType=cv2.LINE_8, shift=4)
    gx, gy = _grid(h, w)
    gx, gy = gx[y0:y1, x0:x1], gy[y0:y1, x0:x1]
    inside = coef_x[..., 3] > 0
    map_x = coef_x[..., 0] * gx + coef_x[..., 1] * gy + coef_x[..., 2]
    map_y = coef_y[..., 0] * gx + coef_y[..., 1] * gy + coef_y[..., 2]
    map_x[~inside] = -10.0  # outside the mesh: sample the constant (zero) border
    map_y[~inside] = -10.0
    patch = cv2.remap(texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if patch.ndim == 2:
        patch = patch[..., None]
    return patch, (x0, y0)


class PhotoBank:
    """The CC0 photos in canonical space: textures (N, H, W, 3) uint8 BGR and shapes (N, 68, 2).

    Built once per process from ``FACES_DIR`` with the project's detector (full-resolution
    detection); ``median_shape`` is the per-coordinate median of the photos' canonical shapes.
    """

    def __init__(self, faces_dir: Path = FACES_DIR):
        paths = sorted(Path(faces_dir).glob("*.jpg"))
        if len(paths) < 3:
            raise FileNotFoundError(f"{faces_dir}: found {len(paths)} photos, a morph needs at least 3")
        landmarks = align.photo_landmarks(Path(faces_dir))
        ref = canonical_reference()
        textures, shapes = [], []
        for path, lm in zip(paths, landmarks):
            bgr = cv2.imread(str(path))
            m = align.similarity_transform(lm[align.ALIGN_POINTS], ref[align.ALIGN_POINTS])
            textures.append(
                cv2.warpAffine(bgr, m, (CANVAS_W, CANVAS_H), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
            )
            shapes.append(align.transform_points(lm, m))
        self.names = [p.name for p in paths]
        self.textures = np.stack(textures)
        self.shapes = np.stack(shapes)
        self.median_shape = np.median(self.shapes, axis=0)

    def __len__(self) -> int:
        return len(self.names)


def neutral_shape(bank: PhotoBank, weights: np.ndarray) -> np.ndarray:
    """Expression-free morph shape, (68, 2): weighted photo shapes with median mouth, lids, brows.

    The mouth takes the median shape translated to the morph's mouth centre; the eyelids take the
    median lids relative to the median eye centres, moved to the morph's eyes; the brows take
    the median brows relative to the eye midpoint. The morph keeps each photo's face outline,
    nose and eye corners (identity), none of its expression.
    """
    w = np.asarray(weights, dtype=np.float64)
    mix = np.tensordot(w, bank.shapes, axes=1)
    med = bank.median_shape
    out = mix.copy()
    out[MOUTH] = med[MOUTH] - med[MOUTH].mean(0) + mix[MOUTH].mean(0)
    eyes_mix, eyes_med = align.eye_centres(mix), align.eye_centres(med)
    for side, idx in enumerate((LIDS[:4], LIDS[4:])):
        out[idx] = med[idx] - eyes_med[side] + eyes_mix[side]
    out[BROWS] = med[BROWS] - eyes_med.mean(0) + eyes_mix.mean(0)
    return out


def head_mask(shape: np.ndarray) -> np.ndarray:
    """Soft alpha (CANVAS_H, CANVAS_W) uint8 of head, hair and neck around a canonical shape."""
    c, u, v, iod = face_frame(shape)
    mask = np.zeros((CANVAS_H, CANVAS_W), np.uint8)
    centre = c + 0.05 * iod * v
    cv2.ellipse(
        mask,
        (int(round(centre[0] * 16)), int(round(centre[1] * 16))),
        (int(round(1.3 * iod * 16)), int(round(1.85 * iod * 16))),
        float(np.degrees(np.arctan2(u[1], u[0]))),
        0,
        360,
        255,
        -1,
        cv2.LINE_AA,
        4,
    )
    neck = np.array(
        [
            shape[8] - 0.62 * iod * u - 0.6 * iod * v,
            shape[8] + 0.62 * iod * u - 0.6 * iod * v,
            [shape[8][0] + 0.75 * iod, CANVAS_H - 1],
            [shape[8][0] - 0.75 * iod, CANVAS_H - 1],
        ]
    )
    cv2.fillConvexPoly(mask, np.round(neck * 16).astype(np.int32), 255, cv2.LINE_AA, 4)
    return cv2.GaussianBlur(mask, (0, 0), 3.0)


def morph_texture(bank: PhotoBank, weights: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """Blend of every photo with a non-zero weight, each warped onto ``shape``.

    Args:
        weights: (N,) non-negative, summing to 1.
        shape: (68, 2) target canonical landmarks.

    Returns:
        (CANVAS_H, CANVAS_W, 4) uint8: BGR texture and the :func:`head_mask` alpha.
    """
    dst = mesh_points(shape)
    acc = np.zeros((CANVAS_H, CANVAS_W, 3), np.float32)
    for i in np.flatnonzero(weights):
        patch, (x0, y0) = warp_piecewise(bank.textures[i], mesh_points(bank.shapes[i]), dst, (CANVAS_H, CANVAS_W))
        full = np.zeros((CANVAS_H, CANVAS_W, 3), np.float32)
        full[y0 : y0 + patch.shape[0], x0 : x0 + patch.shape[1]] = patch
        acc += float(weights[i]) * full
    bgr = np.clip(acc + 0.5, 0, 255).astype(np.uint8)
    return np.dstack([bgr, head_mask(shape)])


def pose_mesh(
    mesh: np.ndarray,
    pitch_deg: float,
    yaw_deg: float,
    roll_deg: float,
    scale: float,
    centre_xy: tuple[float, float],
) -> np.ndarray:
    """Project a canonical mesh into the frame under a 3-D head pose (orthographic).

    Args:
        mesh: (N_MESH, 2) canonical vertices; depth comes from :data:`DEPTH`.
        pitch_deg: positive tilts the head down (chin to chest): vertices in front of the eyes
            move down, the face shortens vertically by cos(pitch).
        yaw_deg, roll_deg: turn and in-plane tilt, degrees.
        scale: frame pixels per canonical pixel.
        centre_xy: where the eye midpoint lands in the frame, pixels.

    Returns:
        (N_MESH, 2) frame pixels.
    """
    x = mesh[:, 0] - EYE_X
    y = mesh[:, 1] - EYE_Y
    z = DEPTH * IOD_C
    p, q, r = np.radians([pitch_deg, yaw_deg, roll_deg])
    y, z = y * np.cos(p) + z * np.sin(p), -y * np.sin(p) + z * np.cos(p)
    x = x * np.cos(q) + z * np.sin(q)
    x, y = x * np.cos(r) - y * np.sin(r), x * np.sin(r) + y * np.cos(r)
    return np.stack([x * scale + centre_xy[0], y * scale + centre_xy[1]], axis=1)
