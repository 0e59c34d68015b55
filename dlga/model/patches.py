"""The 24 patch centres of the paper's Fig. 3, computed from 68 iBUG landmarks.

The paper numbers landmarks from 1 (iBUG convention); dlib and OpenFace arrays count from 0.
The book's Decisions chapter (book/decisions.md, "Patch centres") fixes the reading used here:

* 16 landmarks used as they are: 19, 37, 39, 22, 23, 26, 44, 46, 28, 30, 49, 51, 59, 53, 55, 57;
* 4 midpoints of (20, 38), (42, 41), (25, 45), (47, 48) (brows and eyes);
* 2 midpoints of (18, 59) and (27, 57) (cheeks, the paper's points 21 and 22);
* 2 points offset from the mouth corners 49 and 55 by (-16, -16) pixels at input 224, scaled
  with the input size (the paper's points 23 and 24). The paper gives the same sign on both
  sides; ``mirror_mouth_offsets=True`` uses (+16, -16) on the right corner instead.

Everything is a fixed linear map of the landmarks plus a constant offset, so the centres are
computed for a whole batch by one matrix product: ``centres = W @ landmarks + offset``.
"""

from __future__ import annotations

import numpy as np

NUM_PATCHES = 24
NUM_LANDMARKS = 68

# 1-indexed iBUG numbers, exactly as the paper prints them.
DIRECT_POINTS = (19, 37, 39, 22, 23, 26, 44, 46, 28, 30, 49, 51, 59, 53, 55, 57)
MIDPOINT_PAIRS = ((20, 38), (42, 41), (25, 45), (47, 48), (18, 59), (27, 57))
MOUTH_CORNERS = (49, 55)
MOUTH_OFFSET_224 = 16.0

# Short names for figures and tables (the paper's numbering, 1-24), after the iBUG 68 scheme:
# 18-22 right brow (outer to inner), 23-27 left brow (inner to outer), 28-31 nose ridge (31 the
# tip), 37-42 right eye (37 outer corner, 38-39 upper lid, 40 inner corner, 41-42 lower lid),
# 43-48 left eye (43 inner corner, 44-45 upper lid, 46 outer corner, 47-48 lower lid), 49 and
# 55 mouth corners, 50-54 upper lip (52 its centre), 56-60 lower lip (58 its centre).
# R and L are the subject's right and left: R is on the image's left in a frontal face.
PATCH_NAMES = (
    "brow R (19)", "eye R outer corner (37)", "eye R upper lid (39)", "brow R inner (22)",
    "brow L inner (23)", "brow L (26)", "eye L upper lid (44)", "eye L outer corner (46)",
    "nose bridge (28)", "nose ridge lower (30)", "mouth corner R (49)", "upper lip R (51)",
    "lower lip R (59)", "upper lip L (53)", "mouth corner L (55)", "lower lip L (57)",
    "brow-eye R (20,38)", "eye R lower lid (42,41)", "brow-eye L (25,45)", "eye L lower lid (47,48)",
    "cheek R (18,59)", "cheek L (27,57)", "mouth R offset (49)", "mouth L offset (55)",
)


def centre_matrix() -> np.ndarray:
    """The (24, 68) matrix W with ``centres = W @ landmarks`` (before the mouth offsets)."""
    w = np.zeros((NUM_PATCHES, NUM_LANDMARKS), dtype=np.float32)
    row = 0
    for p in DIRECT_POINTS:
        w[row, p - 1] = 1.0
        row += 1
    for a, b in MIDPOINT_PAIRS:
        w[row, a - 1] += 0.5
        w[row, b - 1] += 0.5
        row += 1
    for p in MOUTH_CORNERS:
        w[row, p - 1] = 1.0
        row += 1
    assert row == NUM_PATCHES
    return w


def centre_offsets(input_size: int, mirror_mouth_offsets: bool = False) -> np.ndarray:
    """The (24, 2) constant offsets in pixels at ``input_size`` (non-zero for the last two)."""
    off = np.zeros((NUM_PATCHES, 2), dtype=np.float32)
    d = MOUTH_OFFSET_224 * input_size / 224.0
    off[22] = (-d, -d)
    off[23] = (d if mirror_mouth_offsets else -d, -d)
    return off


def patch_centres(
    landmarks: np.ndarray, input_size: int = 224, mirror_mouth_offsets: bool = False
) -> np.ndarray:
    """The 24 patch centres in pixels.

    Args:
        landmarks: (68, 2) or (B, 68, 2) aligned landmarks, (x, y) pixels at ``input_size``.
        input_size: side of the aligned face, which scales the mouth offsets.

    Returns:
        (24, 2) or (B, 24, 2) float32 centres (x, y) in pixels.
    """
    lm = np.asarray(landmarks, dtype=np.float32)
    if lm.shape[-2:] != (NUM_LANDMARKS, 2):
        raise ValueError(f"landmarks must have shape (..., 68, 2), got {lm.shape}")
    out = np.einsum("pl,...lc->...pc", centre_matrix(), lm)
    return out + centre_offsets(input_size, mirror_mouth_offsets)


def window_starts(centres: np.ndarray, feature_size: int, patch_size: int, stride: int) -> np.ndarray:
    """Top-left corners (x, y) of the patch windows on the feature map (numpy reference).

    start = round(centre / stride - patch_size / 2), rounding half up, clamped to
    [0, feature_size - patch_size] so that every window lies inside the map.
    """
    start = np.floor(np.asarray(centres, dtype=np.float32) / stride - patch_size / 2.0 + 0.5)
    return np.clip(start, 0, feature_size - patch_size).astype(np.int32)


# Receptive fields (Decisions: Controls). 3x3 'same' convolutions and 2x2 poolings before Conv4_2
# (conv1, pool, conv2, pool, conv3, pool, conv4_1, conv4_2): a Conv4_2 unit sees 3, 4, 8, 10,
# 18, 22, 38, 54 pixels of the input at any input size.
CONV4_FIELD = 54
"""Side of a Conv4_2 unit's receptive field, input pixels."""


def patch_fields(
    centres: np.ndarray, input_size: int, patch_size: int, stride: int = 8, field: int = CONV4_FIELD
) -> np.ndarray:
    """The input pixels each patch window's units see, as boxes clipped to the image.

    A window of ``patch_size`` cells starting at cell ``c`` (:func:`window_starts`) sees pixels
    ``stride * c - (field - stride) // 2`` to ``stride * (c + patch_size - 1) + stride - 1 +
    (field - stride) // 2``: ``field + stride * (patch_size - 1)`` pixels wide before clipping.

    Args:
        centres: (N, 2) patch centres (x, y), input pixels.
        input_size: side of the model's input, pixels.
        patch_size: window side on the feature map, cells (``ModelConfig.patch_size``).

    Returns:
        (N, 4) int boxes ``(x0, y0, x1, y1)``, inclusive, inside ``[0, input_size - 1]``.
    """
    starts = window_starts(centres, input_size // stride, patch_size, stride)
    reach = (field - stride) // 2
    lo = stride * starts - reach
    hi = stride * (starts + patch_size - 1) + stride - 1 + reach
    box = np.concatenate([lo, hi], axis=-1)
    return np.clip(box, 0, input_size - 1).astype(int)


def field_union_mask(
    centres: np.ndarray, input_size: int, patch_size: int, stride: int = 8, field: int = CONV4_FIELD
) -> np.ndarray:
    """(input_size, input_size) bool: the pixels that at least one patch window's units see.

    ``centres``: (N, 2) or (F, N, 2) (the union over frames, e.g. a face with and without a cue).
    """
    mask = np.zeros((input_size, input_size), bool)
    for x0, y0, x1, y1 in patch_fields(np.asarray(centres).reshape(-1, 2), input_size, patch_size, stride, field):
        mask[y0 : y1 + 1, x0 : x1 + 1] = True
    return mask
