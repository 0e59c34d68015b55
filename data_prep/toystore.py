"""A tiny learnable store written without videos, through data_prep.store (tests, benchmarks).

Faces are not real: a grey oval with dark squares at six landmark sites (mouth corners, inner
brows, eye centres) whose darkness grows with the BDI label, plus per-video and per-frame
noise and landmark jitter. A model that looks near the landmarks can learn the label.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from data_prep.origin import SYNTHETIC, origin_record, write_origin
from data_prep.store import MANIFEST_COLUMNS, atomic_write_csv, atomic_write_json, video_path, write_video


def template_landmarks(size: int = 64) -> np.ndarray:
    """A plausible frontal 68-point iBUG layout, (68, 2) pixels (x, y), at ``size`` px."""
    pts = np.zeros((68, 2), np.float64)
    t = np.linspace(-1.0, 1.0, 17)  # jaw 0-16: a U from ear to ear
    pts[0:17, 0] = 0.5 + 0.40 * t
    pts[0:17, 1] = 0.40 + 0.45 * np.sqrt(1 - 0.85 * t**2)
    pts[17:22, 0] = np.linspace(0.18, 0.44, 5)  # brows
    pts[22:27, 0] = np.linspace(0.56, 0.82, 5)
    pts[17:27, 1] = 0.30
    pts[27:31, 0], pts[27:31, 1] = 0.5, np.linspace(0.36, 0.56, 4)  # nose bridge
    pts[31:36, 0], pts[31:36, 1] = np.linspace(0.42, 0.58, 5), 0.60
    for start, cx in ((36, 0.32), (42, 0.68)):  # eyes: six points on an ellipse
        a = np.linspace(np.pi, -np.pi, 7)[:6]
        pts[start : start + 6, 0] = cx + 0.07 * np.cos(a)
        pts[start : start + 6, 1] = 0.38 + 0.025 * np.sin(a)
    a = np.linspace(np.pi, -np.pi, 13)[:12]  # outer lip 48-59, inner lip 60-67
    pts[48:60, 0], pts[48:60, 1] = 0.5 + 0.15 * np.cos(a), 0.74 + 0.05 * np.sin(a)
    a = np.linspace(np.pi, -np.pi, 9)[:8]
    pts[60:68, 0], pts[60:68, 1] = 0.5 + 0.10 * np.cos(a), 0.74 + 0.02 * np.sin(a)
    return (pts * size).astype(np.float32)


CUE_POINTS = (48, 54, 21, 22, 39, 42)  # 0-indexed: mouth corners, inner brows, inner eye corners


def synthetic_frames(bdi: float, n_frames: int, size: int, rng: np.random.Generator):
    """(frames uint8 (n, size, size, 3), landmarks float32 (n, 68, 2)) for one video."""
    base = template_landmarks(size) + rng.normal(0, 0.02 * size, size=(1, 2))  # per-video offset
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    tone = rng.uniform(165, 185)
    face = ((xx - size / 2) / (0.42 * size)) ** 2 + ((yy - 0.55 * size) / (0.5 * size)) ** 2 < 1
    frames = np.empty((n_frames, size, size, 3), np.uint8)
    landmarks = np.empty((n_frames, 68, 2), np.float32)
    r = max(1, size // 12)
    for k in range(n_frames):
        lm = base + rng.normal(0, 0.005 * size, size=(68, 2))
        img = np.full((size, size), 60.0, np.float32)
        img[face] = tone
        darkness = 0.9 * (bdi / 63.0) + rng.normal(0, 0.05)
        for p in CUE_POINTS:
            x, y = np.rint(lm[p]).astype(int)
            img[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1] *= 1.0 - np.clip(darkness, 0, 1)
        img += rng.normal(0, 6, size=img.shape)
        frames[k] = np.clip(img, 0, 255).astype(np.uint8)[..., None].repeat(3, axis=-1)
        landmarks[k] = lm
    return frames, landmarks


def make_store(
    root: str | Path,
    n_videos: dict[str, int] | None = None,
    frames_per_video: int = 4,
    size: int = 64,
    seed: int = 0,
    tasks: tuple[str, ...] = ("Freeform",),
) -> Path:
    """Write a synthetic store to ``root`` and return it.

    ``n_videos`` counts sessions per partition (default 40/15/15); each session has one video
    per task, with the same label, like AVEC2014. ``origin.json`` says the faces are synthetic
    (:mod:`data_prep.origin`).
    """
    root = Path(root)
    n_videos = n_videos or {"Training": 40, "Development": 15, "Testing": 15}
    rng = np.random.default_rng(seed)
    rows, subject = [], 0
    for partition, count in n_videos.items():
        for _ in range(count):
            subject += 1
            bdi = float(np.clip(np.rint(rng.gamma(1.6, 9.0)), 0, 63))
            session = f"{subject:03d}_1"
            for task in tasks:
                video_id = f"{session}_{task}"
                frames, lms = synthetic_frames(bdi, frames_per_video, size, rng)
                write_video(video_path(root, video_id), frames, lms, np.arange(frames_per_video), bdi)
                rows.append(
                    {
                        "video_id": video_id,
                        "subject_id": f"{subject:03d}",
                        "session_id": session,
                        "task": task,
                        "partition": partition,
                        "bdi": bdi,
                        "path": f"synthetic/{video_id}.mp4",
                        "npz": f"videos/{video_id}.npz",
                        "n_frames": frames_per_video,
                    }
                )
    atomic_write_csv(root / "manifest.csv", pd.DataFrame(rows, columns=MANIFEST_COLUMNS + ["npz", "n_frames"]))
    atomic_write_json(root / "params.json", {"synthetic": True, "size": size, "seed": seed,
                                             "frames_per_video": frames_per_video, "n_videos": n_videos})
    write_origin(root, origin_record(SYNTHETIC, "toy", "data_prep.toystore: drawn ovals, not faces"))
    return root

