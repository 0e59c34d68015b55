"""The synthetic cohort: face videos with BDI-II labels in the AVEC2014 layout (Decisions: Data).

The AVEC data is licensed per user, so the book makes its own: ``python -m data_prep synth
--preset {ci,demo} --out DIR [--seed S]`` writes real MPEG-4 videos (640 x 480; 25 frames/s by default,
5 for the ci and demo presets, the rate the book samples at)
that the ``avec2014`` adapter and the whole pipeline read exactly as they would read AVEC2014::

    DIR/
      Video/{Training,Development,Testing}/{Freeform,Northwind}/<id>_<Task>_video.mp4
      Training_DepressionLabels/<id>_Depression.csv             one number: the BDI-II score
      Development_DepressionLabels/<id>_Depression.csv
      AVEC2014_Labels_Testset/Testing/DepressionLabels/<id>_Depression.csv
      Landmarks/{Partition}/{Task}/<id>_<Task>_landmarks.npz    ground truth, see below
      cohort.csv      one row per session: partition, BDI, morph photos and weights, offsets, cues
      videos.csv      one row per video: frames, frames with a face, blurred frames
      cohort.json     its identity (:func:`cohort_identity`: seed, CohortConfig, cue constants,
                      source hash), the cue model in words and the photo list

Ground truth: each ``_landmarks.npz`` holds ``landmarks`` (float32, frames x 68 x 2, video
pixels, iBUG order 0-indexed, NaN rows where no face is in view), ``face`` and ``blurred``
(bool, frames).

**Subjects.** Every subject is a unique synthetic identity: a landmark-aligned morph of 3 or 4 of
the CC0 photos (no weight above ``max_weight``), with the photos' own expressions removed first
(:func:`data_prep.morph.neutral_shape`), plus a random face shape and skin colour, and its own
background. One session per subject, so partitions are subject-disjoint; every partition draws
on all photos and the label is drawn independently of them.

**Labels and cues.** BDI-II is drawn from a rounded gamma distribution cut at 45, with AVEC2014's
training mean (15) and sd (12) after the cut. Severity ``s = bdi / 63`` acts through documented cues:

- ``local`` (what the paper's 24 patches cover), with strength ``m = local_strength`` scaling
  the calibration of the book's Decisions chapter (book/decisions.md, "Data"; m = 1 is its low
  end, 2 its high end), in inter-ocular distances
  (IOD) per unit severity: mouth corners down ``0.2 m``, inner brows up ``0.16 m``, upper lids
  down ``0.075 m`` (at most 0.15 IOD), and smiles ``smile_drop * s`` rarer and weaker.
- ``global`` (shows in one aligned frame, not at a patch): the head pitched down by
  ``pitch_deg * s`` degrees, rendered by rotating the mesh with a generic depth profile
  (:func:`data_prep.morph.pose_mesh`; capped at ``MAX_PITCH``).

Label-free variation: identity, talking, blinks, smiles, head motion (yaw, roll, small pitch
jitter, translation, scale), lighting level and direction, Gaussian blur stretches and
stretches with no face in view. Per-subject fixed offsets of the cue landmarks
(``offset_sd`` IOD, ``pitch_offset_sd`` degrees) set the difficulty. ``cues=("local",)`` or
``("global",)`` makes single-cue cohorts, identical in everything but the missing cue.

**Determinism.** Every random draw comes from ``numpy.random.SeedSequence(seed)``: the cohort
table from the root, each video from its own child keyed by (subject, task), so the output does
not depend on the number of worker processes. Same seed, same labels (byte for byte) and same
frames.

The numbers measured on this cohort are synthetic; they do not reproduce the paper's.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from scipy import optimize, stats
from sklearn.linear_model import Ridge
from tqdm import tqdm  # tqdm.auto warns in every notebook kernel without ipywidgets

from . import align, morph
from .extract import extract_faces, make_detector
from .origin import COHORT_FILE
from .preprocess import make_params
from .store import atomic_write_bytes, atomic_write_csv, atomic_write_json, atomic_write_text, library_versions
from .workers import spawn_context

PARTITIONS = ("Training", "Development", "Testing")
TASKS = ("Freeform", "Northwind")
CUES = ("local", "global")
BDI_MAX = 63
MAX_PITCH = 45.0
"""Largest head pitch rendered, degrees: beyond it the 2-D mesh starts to fold at the jaw line."""

# The calibration (Decisions: Data), IOD per unit severity at local_strength m = 1 (its low end).
MOUTH_PER_S, BROW_PER_S, LID_PER_S, LID_MAX = 0.2, 0.16, 0.075, 0.15

LABEL_DIRS = {
    "Training": Path("Training_DepressionLabels"),
    "Development": Path("Development_DepressionLabels"),
    "Testing": Path("AVEC2014_Labels_Testset") / "Testing" / "DepressionLabels",
}
COHORT_VERSION = 1
"""The version of the cohort's numbers: bump it with any change to how subjects are drawn,
morphed or rendered (a comment, an import or a move changes nothing, so it makes no new cohort)."""
VIDEO_COLUMNS = ("video_id", "session_id", "partition", "task", "bdi", "n_frames", "n_face", "n_blurred",
                 "mean_pitch", "video", "landmarks")
"""The columns of videos.csv, one row per video (:func:`render_subject`'s stats)."""
PARTIAL_DIR = ".partial"
"""Inside a cohort folder being made: the request and one stats file per finished subject."""
COHORT_LIBRARIES = ("numpy", "opencv-python-headless", "dlib-bin", "scikit-image")
"""The libraries that draw and render a cohort: their versions are part of its identity."""


@dataclass(frozen=True)
class CohortConfig:
    """Everything that defines a synthetic cohort (with the seed, all of it).

    Args:
        n_train, n_dev, n_test: sessions (= subjects) per partition.
        seconds: length of every video, seconds; fps: frames per second.
        width, height: video size, pixels.
        cues: which label cues act, a subset of ("local", "global"); () makes a label-free cohort.
        local_strength: m, the local cue scale (1 = the calibration's low end, 2 = its high end; Decisions: Data).
        smile_drop: fraction of smile rate and amplitude lost at severity 1 (local cue).
        pitch_deg: head pitch down per unit severity, degrees (global cue).
        offset_sd: sd of each subject's fixed offsets of mouth corners, inner brows and upper
            lids, IOD (label-free; the difficulty knob).
        pitch_offset_sd: sd of each subject's fixed head pitch, degrees (label-free).
        pitch_jitter_deg: amplitude of the frame-to-frame pitch motion, degrees.
        bdi_mean, bdi_sd, bdi_cap: label distribution (a rounded gamma cut at the cap, with
            this mean and sd after the cut; see :func:`bdi_pmf`).
        photos_min, photos_max: photos per morph; max_weight: largest morph weight.
        face_iod: mean inter-ocular distance in the video, pixels.
        no_face_prob: probability that a video has a stretch with no face in view.
        blur_prob: probability that a video has a blurred stretch.
        name: a label for printouts (the preset's name).
    """

    n_train: int = 60
    n_dev: int = 20
    n_test: int = 20
    seconds: float = 1.6
    fps: int = 25
    width: int = 640
    height: int = 480
    cues: tuple[str, ...] = CUES
    local_strength: float = 1.5
    smile_drop: float = 0.8
    pitch_deg: float = 60.0
    offset_sd: float = 0.03
    pitch_offset_sd: float = 4.0
    pitch_jitter_deg: float = 1.5
    bdi_mean: float = 15.0
    bdi_sd: float = 12.0
    bdi_cap: int = 45
    photos_min: int = 3
    photos_max: int = 4
    max_weight: float = 0.6
    face_iod: float = 85.0
    no_face_prob: float = 0.3
    blur_prob: float = 0.3
    name: str = "custom"

    def __post_init__(self):
        object.__setattr__(self, "cues", tuple(self.cues))
        problems = []
        for f in ("n_train", "n_dev", "n_test"):
            if int(getattr(self, f)) < 1:
                problems.append(f"{f} must be >= 1, got {getattr(self, f)}")
        if not 0.2 <= self.seconds <= 60:
            problems.append(f"seconds must be in [0.2, 60], got {self.seconds}")
        if not 1 <= self.fps <= 60:
            problems.append(f"fps must be in [1, 60], got {self.fps}")
        if self.width < 320 or self.height < 240:
            problems.append(f"video size must be at least 320x240, got {self.width}x{self.height}")
        bad = [c for c in self.cues if c not in CUES]
        if bad or len(set(self.cues)) != len(self.cues):
            problems.append(f"cues must be distinct names from {CUES}, got {self.cues}")
        for f in ("local_strength", "pitch_deg", "offset_sd", "pitch_offset_sd", "pitch_jitter_deg", "bdi_sd"):
            if getattr(self, f) < 0:
                problems.append(f"{f} must be >= 0, got {getattr(self, f)}")
        if not 0 <= self.smile_drop <= 1:
            problems.append(f"smile_drop must be in [0, 1], got {self.smile_drop}")
        if not 0 < self.bdi_mean < self.bdi_cap <= BDI_MAX:
            problems.append(f"need 0 < bdi_mean < bdi_cap <= {BDI_MAX}, got {self.bdi_mean}, {self.bdi_cap}")
        if not 3 <= self.photos_min <= self.photos_max:
            problems.append(f"need 3 <= photos_min <= photos_max (no real person alone), got {self.photos_min}, {self.photos_max}")
        if not 1 / self.photos_min < self.max_weight <= 0.6:
            problems.append(f"max_weight must be in (1/photos_min, 0.6], got {self.max_weight}")
        if not 50 <= self.face_iod <= 150:
            problems.append(f"face_iod must be in [50, 150] pixels, got {self.face_iod}")
        for f in ("no_face_prob", "blur_prob"):
            if not 0 <= getattr(self, f) <= 1:
                problems.append(f"{f} must be a probability, got {getattr(self, f)}")
        if problems:
            raise ValueError("invalid CohortConfig: " + "; ".join(problems))

    @property
    def frames_per_video(self) -> int:
        return max(1, int(round(self.seconds * self.fps)))

    @property
    def n_sessions(self) -> int:
        return self.n_train + self.n_dev + self.n_test

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["cues"] = list(self.cues)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CohortConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown CohortConfig fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    def replace(self, **changes) -> "CohortConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def preset(cls, name: str) -> "CohortConfig":
        """``ci`` (100 sessions, 1.6 s videos) or ``demo`` (200/50/90 sessions, 1.2 s videos)."""
        if name not in COHORT_PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(COHORT_PRESETS)}")
        return COHORT_PRESETS[name]


# The book's preprocessing keeps 5 frames per second, so its cohorts are rendered at 5 fps:
# the frames it reads are the ones a 25-fps video would give it at the same instants, and the
# cohort costs a quarter of the time to make (rendering is most of it).
COHORT_PRESETS = {
    "ci": CohortConfig(n_train=60, n_dev=20, n_test=20, seconds=1.6, fps=5, name="ci"),
    # Subjects carry the signal, not frames (Decisions: Data): many short sessions. The
    # per-subject offsets are 3.5 times the ci cohort's so that the task is about as hard as
    # AVEC2014's (Decisions: Controls): with the ci offsets the demo's G reached 0.35 of the
    # training-mean predictor's Testing RMSE, with 4 times them 0.74 and 0.81 (two seeds).
    "demo": CohortConfig(n_train=200, n_dev=50, n_test=90, seconds=1.2, fps=5, offset_sd=0.105,
                         pitch_offset_sd=14.0, name="demo"),
}


def cue_constants() -> dict:
    """The module constants of the cue model, read when called (a test may patch them)."""
    return {"BDI_MAX": BDI_MAX, "MAX_PITCH": MAX_PITCH, "MOUTH_PER_S": MOUTH_PER_S, "BROW_PER_S": BROW_PER_S,
            "LID_PER_S": LID_PER_S, "LID_MAX": LID_MAX}


def cohort_identity(cfg: CohortConfig | str, seed: int = 0) -> dict:
    """Everything that decides a cohort's files: :data:`COHORT_VERSION`, seed, configuration,
    the cue constants and the versions of the libraries that render it. ``cfg``: a config or a
    preset name.

    ``cohort.json`` holds it; :func:`make_cohort` rebuilds a folder whose cohort has another."""
    cfg = CohortConfig.preset(cfg) if isinstance(cfg, str) else cfg
    return {"version": COHORT_VERSION, "seed": int(seed), "config": cfg.to_dict(),
            "cue_constants": cue_constants(), "libraries": library_versions(COHORT_LIBRARIES)}


def cohort_key(cfg: CohortConfig | str, seed: int = 0) -> str:
    """A short hash of :func:`cohort_identity`, for folder and stamp names."""
    return hashlib.sha256(json.dumps(cohort_identity(cfg, seed), sort_keys=True).encode()).hexdigest()[:12]


# ---------------------------------------------------------------- the cohort table


def bdi_pmf(cfg: CohortConfig) -> np.ndarray:
    """(bdi_cap + 1,) probabilities of the integer scores 0..cap.

    A gamma distribution rounded to integers and cut at the cap, its two parameters solved so
    that the *cut* distribution has exactly ``bdi_mean`` and ``bdi_sd`` (AVEC2014 training: 15
    and 12, range 0-45); cutting a gamma with those moments would lower both.
    """

    x = np.arange(cfg.bdi_cap + 1)

    def pmf(logp):
        k, theta = np.exp(logp)
        cdf = stats.gamma.cdf(np.r_[0.0, x[:-1] + 0.5, cfg.bdi_cap + 0.5], k, scale=theta)
        p = np.diff(cdf)
        return p / p.sum()

    def moments(logp):
        p = pmf(logp)
        m = (x * p).sum()
        return np.array([m - cfg.bdi_mean, np.sqrt(((x - m) ** 2 * p).sum()) - cfg.bdi_sd])

    start = np.log([(cfg.bdi_mean / max(cfg.bdi_sd, 1e-3)) ** 2, max(cfg.bdi_sd, 1e-3) ** 2 / cfg.bdi_mean])
    sol, _, ok, msg = optimize.fsolve(moments, start, full_output=True)
    if ok != 1 or np.abs(moments(sol)).max() > 0.05:
        raise ValueError(
            f"cannot draw BDI with mean {cfg.bdi_mean} and sd {cfg.bdi_sd} within 0-{cfg.bdi_cap}; "
            f"choose a smaller sd or a mean nearer the middle of the range ({msg})"
        )
    return pmf(sol)


def draw_bdi(rng: np.random.Generator, n: int, cfg: CohortConfig) -> np.ndarray:
    """(n,) int BDI-II scores drawn from :func:`bdi_pmf`."""
    return rng.choice(cfg.bdi_cap + 1, size=n, p=bdi_pmf(cfg)).astype(int)


def draw_weights(rng: np.random.Generator, n_photos: int, cfg: CohortConfig) -> np.ndarray:
    """(n_photos,) morph weights: 3-4 photos, Dirichlet(2) weights, none above max_weight."""
    k = int(rng.integers(cfg.photos_min, min(cfg.photos_max, n_photos) + 1))
    chosen = np.sort(rng.choice(n_photos, size=k, replace=False))
    while True:
        w = rng.dirichlet(np.full(k, 2.0))
        if w.max() <= cfg.max_weight:
            break
    out = np.zeros(n_photos)
    out[chosen] = w
    return out


def cue_values(bdi: float, cfg: CohortConfig) -> dict:
    """The label's cues for one subject: IOD displacements, smile factor, pitch in degrees."""
    s = bdi / BDI_MAX
    local, glob = "local" in cfg.cues, "global" in cfg.cues
    m = cfg.local_strength if local else 0.0
    return {
        "mouth_drop": MOUTH_PER_S * m * s,
        "brow_raise": BROW_PER_S * m * s,
        "lid_droop": min(LID_PER_S * m * s, LID_MAX),
        "smile_factor": 1.0 - (cfg.smile_drop * s if local else 0.0),
        "pitch_cue": cfg.pitch_deg * s if glob else 0.0,
    }


def draw_cohort(cfg: CohortConfig, seed: int, n_photos: int) -> pd.DataFrame:
    """One row per session: ids, partition, BDI, morph weights, identity, offsets and cues.

    Label, identity and offsets come from separate child streams of the seed, so single-cue
    cohorts with the same seed share subjects, labels and offsets exactly.
    """
    ss = np.random.SeedSequence(seed)
    r_label, r_morph, r_ident, r_off = (np.random.default_rng(c) for c in ss.spawn(4))
    n = cfg.n_sessions
    bdi = draw_bdi(r_label, n, cfg)
    parts = np.repeat(PARTITIONS, [cfg.n_train, cfg.n_dev, cfg.n_test])
    rows = []
    for i in range(n):
        w = draw_weights(r_morph, n_photos, cfg)
        ident = {
            "shape_width": r_ident.normal(1, 0.04),
            "shape_length": r_ident.normal(1, 0.04),
            "mouth_width": r_ident.normal(1, 0.05),
            "skin_b": r_ident.normal(1, 0.05),
            "skin_g": r_ident.normal(1, 0.05),
            "skin_r": r_ident.normal(1, 0.05),
            "brightness": r_ident.normal(1, 0.06),
        }
        off = {
            "off_mouth": r_off.normal(0, cfg.offset_sd),
            "off_brow": r_off.normal(0, cfg.offset_sd),
            "off_lid": r_off.normal(0, cfg.offset_sd / 2),
            "off_pitch": r_off.normal(0, cfg.pitch_offset_sd),
        }
        subject = str(101 + i)  # AVEC-like ids (203_1); no leading zero, adapters read them as ints
        row = {"subject_id": subject, "session_id": f"{subject}_1", "partition": parts[i], "bdi": int(bdi[i])}
        row["photos"] = ";".join(str(j) for j in np.flatnonzero(w))
        row["weights"] = ";".join(f"{x:.4f}" for x in w[w > 0])
        row.update({f"w_{j:02d}": float(w[j]) for j in range(n_photos)})
        row.update(ident)
        row.update(off)
        row.update(cue_values(bdi[i], cfg))
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- animation


def _events(rng, rate: float, t_end: float, t_start: float) -> np.ndarray:
    n = rng.poisson(max(rate, 0.0) * (t_end - t_start))
    return np.sort(rng.uniform(t_start, t_end, size=n))


def _smooth(rng, t: np.ndarray, amp: float, fmin: float, fmax: float, n: int = 2) -> np.ndarray:
    """Sum of n random sinusoids: slow label-free motion, peak about ``amp``."""
    out = np.zeros_like(t)
    for _ in range(n):
        out += rng.uniform(0.3, 1.0) * amp / n * np.sin(2 * np.pi * rng.uniform(fmin, fmax) * t + rng.uniform(0, 2 * np.pi))
    return out


def _frames(seconds: float, fps: float) -> int:
    """At least one frame: ``seconds`` at ``fps``, rounded."""
    return max(1, int(round(seconds * fps)))


def _stretch(rng, n_frames: int, frac_lo: float, frac_hi: float, min_len: int) -> np.ndarray:
    mask = np.zeros(n_frames, bool)
    length = min(n_frames - 1, max(min_len, int(round(rng.uniform(frac_lo, frac_hi) * n_frames))))
    if length <= 0:
        return mask
    start = int(rng.integers(1, n_frames - length + 1))  # never the first frame
    mask[start : start + length] = True
    return mask


def animate(row: dict, task: str, cfg: CohortConfig, rng: np.random.Generator) -> dict:
    """Per-frame expression, pose, lighting and events of one video.

    Returns a dict of (F,) arrays: ``talk`` (mouth opening, IOD), ``blink`` (0-1 lid closure),
    ``smile`` (0-1), ``pitch``/``yaw``/``roll`` (degrees), ``scale`` (video px per canonical
    px), ``cx``/``cy`` (eye midpoint, px), ``gain`` (light level per frame), ``tilt`` and
    ``cast`` (left-right light gradient and colour cast of the video), ``face`` and ``blurred`` (bool) and the scalar ``blur_sigma``.
    """
    n = cfg.frames_per_video
    t = np.arange(n) / cfg.fps
    T = n / cfg.fps
    free = task == "Freeform"
    # Talking: syllables at 3-5 Hz; Freeform speech pauses, Northwind (reading) runs on.
    rate = rng.uniform(3.0, 5.0)
    phase = 2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi) + _smooth(rng, t, 1.0, 0.3, 1.0)
    envelope = np.clip(0.6 + _smooth(rng, t, 1.4 if free else 0.6, 0.2, 0.6), 0, 1)
    talk = rng.uniform(0.08, 0.22) * envelope * np.maximum(np.sin(phase), 0) ** 1.5
    # Blinks: 0.1 s closing, 0.1 s opening.
    blink = np.zeros(n)
    for tb in _events(rng, 0.35, T + 0.1, -0.1):
        blink = np.maximum(blink, np.clip(1 - np.abs(t - tb) / 0.1, 0, 1))
    # Smiles: rarer and weaker with severity (local cue; smile_factor = 1 without it).
    f = row["smile_factor"]
    smile = np.zeros(n)
    for ts in _events(rng, (0.5 if free else 0.25) * f, T, -1.5):
        dur, amp = rng.uniform(0.8, 2.0), rng.uniform(0.5, 1.0) * f
        x = (t - ts) / dur
        smile = np.maximum(smile, amp * np.where((x > 0) & (x < 1), np.sin(np.pi * x) ** 2, 0))
    base_scale = cfg.face_iod / morph.IOD_C * rng.uniform(0.92, 1.08)
    out = {
        "talk": talk,
        "blink": blink,
        "smile": smile,
        "pitch": np.clip(row["pitch_cue"] + row["off_pitch"] + _smooth(rng, t, cfg.pitch_jitter_deg, 0.2, 1.0), -MAX_PITCH, MAX_PITCH),
        "yaw": rng.normal(0, 2) + _smooth(rng, t, 6.0 if free else 3.0, 0.1, 0.6),
        "roll": rng.normal(0, 2) + _smooth(rng, t, 4.0 if free else 2.0, 0.1, 0.6),
        "scale": base_scale * (1 + _smooth(rng, t, 0.03, 0.1, 0.5)),
        "cx": cfg.width / 2 + rng.normal(0, cfg.width * 0.04) + _smooth(rng, t, 15.0, 0.1, 0.5),
        "cy": cfg.height * 0.42 + rng.normal(0, cfg.height * 0.03) + _smooth(rng, t, 10.0, 0.1, 0.5),
        "gain": rng.uniform(0.8, 1.12) * (1 + _smooth(rng, t, 0.08, 0.2, 0.8)),
        "tilt": rng.uniform(-0.3, 0.3),
        "cast": rng.normal(1, 0.04, size=3),
        # Shortest stretches in seconds (3 and 2 frames at 25 fps), so a 5-fps video has them too.
        "face": (~_stretch(rng, n, 0.15, 0.3, _frames(0.12, cfg.fps)) if rng.random() < cfg.no_face_prob
                 else np.ones(n, bool)),
        "blurred": (_stretch(rng, n, 0.2, 0.5, _frames(0.08, cfg.fps)) if rng.random() < cfg.blur_prob
                    else np.zeros(n, bool)),
        "blur_sigma": rng.uniform(1.0, 2.5),
    }
    return out


def subject_shape(bank: morph.PhotoBank, row: dict) -> np.ndarray:
    """Neutral canonical shape (68, 2) of a subject: morph plus its own face proportions."""
    w = np.array([row[f"w_{j:02d}"] for j in range(len(bank))])
    s = morph.neutral_shape(bank, w)
    jaw = np.arange(0, 17)
    s[jaw, 0] = morph.EYE_X + (s[jaw, 0] - morph.EYE_X) * row["shape_width"]
    below = s[:, 1] > morph.EYE_Y + 0.3 * morph.IOD_C
    s[below, 1] = morph.EYE_Y + (s[below, 1] - morph.EYE_Y) * row["shape_length"]
    mc = s[morph.MOUTH].mean(0)
    s[morph.MOUTH, 0] = mc[0] + (s[morph.MOUTH, 0] - mc[0]) * row["mouth_width"]
    return s


def subject_landmarks(shape: np.ndarray, row: dict) -> np.ndarray:
    """Canonical shape with the subject's fixed offsets and label cues applied, (68, 2).

    Mouth corners (48, 54, 60, 64) go down by ``mouth_drop + off_mouth`` IOD, their neighbours
    by 70 % (55, 59), 40 % (49, 53) and 20 % (56, 58) of it; inner brows (21, 22) go up by ``brow_raise + off_brow``,
    20 and 23 by half, 19 and 24 by 15 %; upper lids (37, 38, 43, 44) go down by
    ``lid_droop + off_lid``, never closing more than 70 % of the eye.
    """
    s = shape.copy()
    iod = morph.IOD_C
    mouth = (row["mouth_drop"] + row["off_mouth"]) * iod
    s[[48, 54, 60, 64], 1] += mouth
    s[[55, 59], 1] += 0.7 * mouth  # the lower lip follows, so the corner never folds under it
    s[[49, 53], 1] += 0.4 * mouth
    s[[56, 58], 1] += 0.2 * mouth
    brow = (row["brow_raise"] + row["off_brow"]) * iod
    s[[21, 22], 1] -= brow
    s[[20, 23], 1] -= 0.5 * brow
    s[[19, 24], 1] -= 0.15 * brow
    opening = s[morph.LOWER_LIDS, 1] - s[morph.UPPER_LIDS, 1]
    droop = np.minimum((row["lid_droop"] + row["off_lid"]) * iod, 0.7 * opening)
    s[morph.UPPER_LIDS, 1] += droop
    return s


def expression(base: np.ndarray, talk: float, smile: float, blink: float) -> np.ndarray:
    """One frame's canonical landmarks (68, 2): talking, smiling and blinking on top of ``base``.

    Args:
        talk: mouth opening, IOD (lower lip and chin down, upper lip up 10 %).
        smile: 0-1; at 1 the mouth corners rise 0.12 IOD and widen 0.08 IOD each side.
        blink: 0-1 closure of the upper lids towards the lower lids.
    """
    s = base.copy()
    iod = morph.IOD_C
    a = talk * iod
    for idx, k in (([56, 57, 58, 65, 66, 67], 1.0), ([55, 59], 0.6), ([48, 54, 60, 64], 0.25), ([7, 8, 9], 0.7),
                   ([6, 10], 0.5), ([5, 11], 0.3), ([4, 12], 0.15)):
        s[idx, 1] += k * a
    s[[50, 51, 52, 61, 62, 63], 1] -= 0.1 * a
    sm = smile * iod
    s[[48, 60], 0] -= 0.08 * sm
    s[[54, 64], 0] += 0.08 * sm
    s[[48, 54, 60, 64], 1] -= 0.12 * sm
    s[49, 0] -= 0.04 * sm
    s[53, 0] += 0.04 * sm
    s[[49, 53], 1] -= 0.05 * sm
    s[[55, 59], 1] -= 0.03 * sm
    s[morph.LOWER_LIDS, 1] -= 0.03 * sm
    if blink > 0:
        s[morph.UPPER_LIDS, 1] += 0.9 * blink * (s[morph.LOWER_LIDS, 1] - s[morph.UPPER_LIDS, 1])
    return s


def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A smooth (height, width, 3) uint8 BGR room: a colour gradient and a few soft panels."""
    low = rng.uniform(60, 200, size=(3, 4, 3)).astype(np.float32)
    bg = cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(1, 4))):
        x0, y0 = int(rng.integers(0, width - 60)), int(rng.integers(0, height - 60))
        x1, y1 = x0 + int(rng.integers(40, width // 2)), y0 + int(rng.integers(40, height // 2))
        cv2.rectangle(bg, (x0, y0), (x1, y1), tuple(float(c) for c in rng.uniform(40, 220, 3)), -1)
    bg = cv2.GaussianBlur(bg, (0, 0), 6.0)
    bg = 0.5 * bg + 0.5 * bg.mean()  # muted, room-like colours
    return np.clip(bg, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- rendering

_BANK: morph.PhotoBank | None = None


def _init_worker(bank: morph.PhotoBank) -> None:
    global _BANK
    _BANK = bank
    cv2.setNumThreads(1)  # one process per core; OpenCV's own threads would oversubscribe


def _bank() -> morph.PhotoBank:
    global _BANK
    if _BANK is None:
        _BANK = morph.PhotoBank()
    return _BANK


def render_video(
    texture: np.ndarray, shape: np.ndarray, base: np.ndarray, bg: np.ndarray, shirt: tuple, anim: dict,
    cfg: CohortConfig,
):
    """Yield ``(frame_bgr, landmarks_or_None)`` for every frame of one video.

    Args:
        texture: (CANVAS_H, CANVAS_W, 4) uint8 subject texture (BGR + alpha) drawn in ``shape``.
        shape: (68, 2) the texture's canonical landmarks (the subject's neutral shape).
        base: (68, 2) canonical landmarks with the subject's offsets and cues.
        bg: (H, W, 3) uint8 background; shirt: BGR colour of the torso.
        anim: :func:`animate`'s per-frame values.

    Landmarks are (68, 2) float32 video pixels, None where the face is out of view.
    """
    src_mesh = morph.mesh_points(shape)
    h, w = cfg.height, cfg.width
    # Light: a left-right gradient and colour cast fixed per video, a level that drifts per frame.
    xn = np.arange(w, dtype=np.float32) / (w - 1) - 0.5
    light = np.ascontiguousarray(np.broadcast_to(
        (1 + anim["tilt"] * 2 * xn)[None, :, None] * anim["cast"][None, None, :], (h, w, 3)
    ).astype(np.float32))
    for i in range(cfg.frames_per_video):
        frame = bg.copy()
        pts = None
        if anim["face"][i]:
            lm = expression(base, anim["talk"][i], anim["smile"][i], anim["blink"][i])
            dst = morph.pose_mesh(
                morph.mesh_points(lm), anim["pitch"][i], anim["yaw"][i], anim["roll"][i], anim["scale"][i],
                (anim["cx"][i], anim["cy"][i]),
            )
            iod = morph.IOD_C * anim["scale"][i]
            chin = dst[8]
            cv2.ellipse(frame, (int(chin[0]), int(chin[1] + 2.2 * iod)), (int(2.3 * iod), int(1.4 * iod)), 0, 0, 360,
                        shirt, -1, cv2.LINE_AA)
            patch, (x0, y0) = morph.warp_piecewise(texture, src_mesh, dst, (h, w))
            ph, pw = patch.shape[:2]
            if ph and pw:
                region = frame[y0 : y0 + ph, x0 : x0 + pw]
                alpha = patch[..., 3].astype(np.float32) * (1 / 255)
                region[:] = cv2.blendLinear(cv2.cvtColor(patch, cv2.COLOR_BGRA2BGR), region, alpha, 1 - alpha)
            # The mouth cavity: a dark polygon inside the inner lips (a line when closed).
            cv2.fillPoly(frame, [np.round(dst[morph.INNER_MOUTH] * 16).astype(np.int32)], (40, 30, 70), cv2.LINE_AA, 4)
            pts = dst[:68].astype(np.float32)
        frame = cv2.multiply(frame, light, scale=float(anim["gain"][i]), dtype=cv2.CV_8U)
        if anim["blurred"][i]:
            frame = cv2.GaussianBlur(frame, (0, 0), anim["blur_sigma"])
        yield frame, pts


def _write_npz(path: Path, **arrays) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def video_path(out: Path, partition: str, task: str, session: str) -> Path:
    return out / "Video" / partition / task / f"{session}_{task}_video.mp4"


def landmarks_path(out: Path, partition: str, task: str, session: str) -> Path:
    return out / "Landmarks" / partition / task / f"{session}_{task}_landmarks.npz"


def subject_texture(bank: morph.PhotoBank, row: dict) -> tuple[np.ndarray, np.ndarray]:
    """A subject's skin texture (BGR + alpha, drawn in its neutral shape) and that shape (68, 2)."""
    shape = subject_shape(bank, row)
    w = np.array([row[f"w_{j:02d}"] for j in range(len(bank))])
    texture = morph.morph_texture(bank, w, shape)
    skin = np.array([row["skin_b"], row["skin_g"], row["skin_r"]]) * row["brightness"]
    texture[..., :3] = np.clip(texture[..., :3] * skin.astype(np.float32), 0, 255).astype(np.uint8)
    return texture, shape


def still_animation(row: dict, cfg: CohortConfig) -> dict:
    """:func:`animate`'s values for a still, frontal, evenly lit face: no talking, blinking,
    smiling, yaw, roll or motion; the head pitch is the subject's (its cue plus its offset)."""
    n = cfg.frames_per_video
    const = lambda v: np.full(n, float(v))  # noqa: E731
    return {
        "talk": const(0), "blink": const(0), "smile": const(0),
        "pitch": const(np.clip(row["pitch_cue"] + row["off_pitch"], -MAX_PITCH, MAX_PITCH)),
        "yaw": const(0), "roll": const(0), "scale": const(cfg.face_iod / morph.IOD_C),
        "cx": const(cfg.width / 2), "cy": const(cfg.height * 0.42), "gain": const(1),
        "tilt": 0.0, "cast": np.ones(3), "face": np.ones(n, bool), "blurred": np.zeros(n, bool), "blur_sigma": 1.0,
    }


def cue_stills(cfg: CohortConfig, cue: str, size: int, seed: int = 0, index: int = 0,
               bdi_high: int | None = None) -> dict:
    """One subject of the cohort as a still face at BDI 0 and at ``bdi_high`` (default: the
    label cap) with only ``cue`` acting, aligned as preprocessing aligns (eye corners).

    What changes between the two images is what that cue shows in one aligned frame (the
    local cue's rarer smiles act over time and are not in a still).

    Args:
        cfg: the cohort; ``cue``: ``"local"`` or ``"global"``; ``size``: side of the aligned
            faces, pixels; ``seed``, ``index``: the cohort seed and the subject's row.

    Returns:
        dict with ``images`` (2, size, size, 3) uint8 RGB and ``landmarks`` (2, 68, 2) float32
        aligned pixels, low severity first, and ``bdi`` (the two labels).
    """
    if cue not in CUES:
        raise ValueError(f"cue must be one of {CUES}, got {cue!r}")
    bank = _bank()
    row = draw_cohort(cfg, seed, len(bank)).iloc[index].to_dict()
    texture, shape = subject_texture(bank, row)
    grey = np.full((cfg.height, cfg.width, 3), 128, np.uint8)
    high = cfg.bdi_cap if bdi_high is None else int(bdi_high)
    images, landmarks = [], []
    for bdi in (0, high):
        posed = {**row, **cue_values(bdi, cfg.replace(cues=(cue,)))}
        frame, pts = next(render_video(texture, shape, subject_landmarks(shape, posed), grey, (90.0, 90.0, 90.0),
                                       still_animation(posed, cfg), cfg))
        aligned, lm, _ = align.align_face(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), pts, size)
        images.append(aligned)
        landmarks.append(lm)
    return {"images": np.stack(images), "landmarks": np.stack(landmarks), "bdi": (0, high)}


def render_subject(job: tuple) -> list[dict]:
    """Render and write both videos of one subject; return one stats dict per video.

    Args:
        job: ``(index, row, cfg_dict, seed, out_dir)``; ``index`` keys the subject's seeds.
    """
    index, row, cfg_dict, seed, out = job
    cfg = CohortConfig.from_dict(cfg_dict)
    out = Path(out)
    bank = _bank()
    ss = np.random.SeedSequence(seed, spawn_key=(1, index))
    r_look, *r_tasks = (np.random.default_rng(c) for c in ss.spawn(1 + len(TASKS)))
    texture, shape = subject_texture(bank, row)
    base = subject_landmarks(shape, row)
    bg = background(r_look, cfg.width, cfg.height)
    shirt = tuple(float(c) for c in r_look.uniform(20, 200, 3))
    stats = []
    for task, rng in zip(TASKS, r_tasks):
        anim = animate(row, task, cfg, rng)
        vpath = video_path(out, row["partition"], task, row["session_id"])
        vpath.parent.mkdir(parents=True, exist_ok=True)
        tmp = vpath.with_name(f".{vpath.stem}.tmp.mp4")
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), cfg.fps, (cfg.width, cfg.height))
        if not writer.isOpened():
            raise RuntimeError(f"{tmp}: OpenCV cannot write MPEG-4 (mp4v) video here")
        lms = np.full((cfg.frames_per_video, 68, 2), np.nan, np.float32)
        try:
            for i, (frame, pts) in enumerate(render_video(texture, shape, base, bg, shirt, anim, cfg)):
                writer.write(frame)
                if pts is not None:
                    lms[i] = pts
        finally:
            writer.release()
        os.replace(tmp, vpath)
        _write_npz(landmarks_path(out, row["partition"], task, row["session_id"]), landmarks=lms,
                   face=anim["face"], blurred=anim["blurred"])
        stats.append({
            "video_id": f"{row['session_id']}_{task}",
            "session_id": row["session_id"],
            "partition": row["partition"],
            "task": task,
            "bdi": row["bdi"],
            "n_frames": cfg.frames_per_video,
            "n_face": int(anim["face"].sum()),
            "n_blurred": int(anim["blurred"].sum()),
            "mean_pitch": float(anim["pitch"][anim["face"]].mean()) if anim["face"].any() else float("nan"),
            "video": str(vpath.relative_to(out)),
            "landmarks": str(landmarks_path(out, row["partition"], task, row["session_id"]).relative_to(out)),
        })
    return stats


def label_path(out: Path, partition: str, session: str) -> Path:
    return out / LABEL_DIRS[partition] / f"{session}_Depression.csv"


def make_cohort(
    cfg: CohortConfig, out: str | os.PathLike, seed: int = 0, workers: int | None = None, force: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Write a synthetic cohort to ``out``; return the cohort table (one row per session).

    Args:
        cfg: the cohort's definition.
        out: target directory; it must be empty or absent unless it holds this very cohort
            (then nothing is redone) or ``force`` is set (then it is rewritten).
        seed: root seed of every random draw.
        workers: processes rendering subjects (default: all cores; 1 renders in this process).
            The output does not depend on it.
        progress: show a tqdm bar.
    """
    out = Path(out)
    meta = cohort_identity(cfg, seed)
    meta_path = out / COHORT_FILE  # data_prep.origin finds cohorts by it
    if meta_path.is_file() and not force:
        old = json.loads(meta_path.read_text())
        if {k: old.get(k) for k in meta} == meta and (out / "cohort.csv").is_file():
            print(f"{out}: this cohort is already there (same seed and parameters); nothing to do")
            return pd.read_csv(out / "cohort.csv", dtype={"subject_id": str, "session_id": str})
        same_request = all(old.get(k) == meta[k] for k in ("version", "seed", "config"))
        if not same_request:
            raise FileExistsError(f"{out} holds a different synthetic cohort; pass --force to overwrite it or choose another --out")
        # The same seed and configuration drawn by another cue model or other rendering code:
        # stale output of this very request, so it is made again.
        print(f"{out}: the cohort there was made by another cue model or code version; making it again")
        force = True
    # An interrupted run of this very request left its finished subjects in PARTIAL_DIR: resume.
    partial = out / PARTIAL_DIR
    request = partial / "request.json"
    resuming = (not force and not meta_path.is_file() and request.is_file()
                and json.loads(request.read_text()) == json.loads(json.dumps(meta)))
    if out.is_dir() and any(out.iterdir()) and not meta_path.is_file() and not force and not resuming:
        if request.is_file():
            force = True  # an interrupted cohort of another request: this function's own files
        else:
            raise FileExistsError(f"{out} is not empty and holds no synthetic cohort; choose an empty --out or pass --force")
    out.mkdir(parents=True, exist_ok=True)
    if force:
        meta_path.unlink(missing_ok=True)  # an interrupted forced run must not look complete
        # Only what a cohort writes: a larger earlier cohort must not leave sessions behind.
        for name in ("Video", "Landmarks", PARTIAL_DIR, *{p.parts[0] for p in LABEL_DIRS.values()}):
            if (out / name).is_dir():
                shutil.rmtree(out / name)
    partial.mkdir(exist_ok=True)
    atomic_write_json(request, meta)

    t0 = time.perf_counter()
    bank = _bank()
    table = draw_cohort(cfg, seed, len(bank))
    jobs = [(i, row, cfg.to_dict(), int(seed), str(out)) for i, row in enumerate(table.to_dict("records"))]
    results: list[list[dict]] = [None] * len(jobs)  # type: ignore[list-item]
    for i in range(len(jobs)):
        done = partial / f"{i}.json"
        if done.is_file():
            results[i] = json.loads(done.read_text())
    todo = [job for job in jobs if results[job[0]] is None]
    if len(todo) < len(jobs):
        print(f"{out}: resuming an interrupted cohort: {len(jobs) - len(todo)} of {len(jobs)} subjects already rendered")
    workers = max(1, min(int(workers or os.cpu_count() or 1), max(1, len(todo))))

    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=f"synth {cfg.name}", unit="subject",
               disable=not progress)

    def finished(index: int, stats: list[dict]) -> None:
        results[index] = stats
        atomic_write_json(partial / f"{index}.json", stats)  # this subject is never rendered again
        bar.update()

    if workers == 1:
        for job in todo:
            finished(job[0], render_subject(job))
    else:

        with spawn_context() as ctx, ctx.Pool(workers, initializer=_init_worker, initargs=(bank,)) as pool:
            for job, res in zip(todo, pool.imap(render_subject, todo, chunksize=1)):
                finished(job[0], res)
    bar.close()
    videos = pd.DataFrame([s for res in results for s in res])[list(VIDEO_COLUMNS)]  # JSON reorders keys
    for row in table.itertuples():
        atomic_write_text(label_path(out, row.partition, row.session_id), f"{row.bdi}\n")
    atomic_write_csv(out / "videos.csv", videos)
    atomic_write_csv(out / "cohort.csv", table)
    meta["photos"] = bank.names
    meta["cue_model"] = {
        "severity": f"s = bdi / {BDI_MAX}",
        "mouth_drop_iod": f"{MOUTH_PER_S} * local_strength * s",
        "brow_raise_iod": f"{BROW_PER_S} * local_strength * s",
        "lid_droop_iod": f"min({LID_PER_S} * local_strength * s, {LID_MAX})",
        "smile_factor": "1 - smile_drop * s",
        "pitch_deg": f"pitch_deg * s, capped at {MAX_PITCH}",
    }
    meta["wall_seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(meta_path, meta)  # last: its presence marks a complete cohort
    shutil.rmtree(partial, ignore_errors=True)
    print(summary(table, videos, cfg, out, meta["wall_seconds"]))
    return table


def summary(table: pd.DataFrame, videos: pd.DataFrame, cfg: CohortConfig, out: Path, seconds: float) -> str:
    """What was made: subjects, videos, frames and label statistics per partition."""
    lines = [
        f"synthetic cohort '{cfg.name}' in {out} ({seconds:.1f} s): cues {list(cfg.cues) or 'none'}, "
        f"{cfg.frames_per_video} frames per video ({cfg.seconds:g} s at {cfg.fps} fps, {cfg.width}x{cfg.height})",
        f"{'partition':<12}{'subjects':>9}{'videos':>8}{'frames':>8}{'no face':>9}{'BDI mean':>10}{'sd':>6}{'min':>5}{'max':>5}",
    ]
    for part in PARTITIONS:
        t, v = table[table.partition == part], videos[videos.partition == part]
        lines.append(
            f"{part:<12}{len(t):>9}{len(v):>8}{int(v.n_frames.sum()):>8}{int((v.n_frames - v.n_face).sum()):>9}"
            f"{t.bdi.mean():>10.1f}{t.bdi.std():>6.1f}{t.bdi.min():>5}{t.bdi.max():>5}"
        )
    lines.append("These are synthetic subjects and labels; numbers measured on them do not reproduce the paper's.")
    return "\n".join(lines)


# ---------------------------------------------------------------- checks


def load_landmarks(out: str | os.PathLike, row) -> dict:
    """Ground truth of one video (a videos.csv row): landmarks (F, 68, 2), face, blurred."""
    with np.load(Path(out) / row["landmarks"], allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def aligned_cues(landmarks: np.ndarray) -> dict:
    """Label cues measured on landmarks after eye-corner alignment, per frame, in IOD.

    Args:
        landmarks: (F, 68, 2) video pixels; NaN frames give NaN.

    Returns:
        dict of (F,) arrays: ``mouth_corner_drop`` (corners 48/54 below the upper-lip centre 51),
        ``inner_brow_raise`` (brows 21/22 above the inner eye corners), ``lid_opening`` (mean
        upper-to-lower lid gap) and ``pitch_est`` (degrees, a least-squares fit of the generic
        depth model of :func:`data_prep.morph.pose_mesh` to the rigid points' heights).
    """
    ref = morph.canonical_reference()
    rigid = np.r_[0:5, 12:17, 27:36, 36:48]
    out = {k: np.full(len(landmarks), np.nan) for k in ("mouth_corner_drop", "inner_brow_raise", "lid_opening", "pitch_est")}
    y0 = ref[rigid, 1] - morph.EYE_Y
    z0 = morph.DEPTH[rigid] * morph.IOD_C
    design = np.stack([y0, z0], 1)
    for i, lm in enumerate(landmarks):
        if not np.isfinite(lm).all():
            continue
        m = align.similarity_transform(lm[align.ALIGN_POINTS], ref[align.ALIGN_POINTS])
        p = align.transform_points(lm, m)
        iod = align.inter_ocular(p)
        out["mouth_corner_drop"][i] = ((p[48, 1] + p[54, 1]) / 2 - p[51, 1]) / iod
        out["inner_brow_raise"][i] = ((p[39, 1] + p[42, 1]) / 2 - (p[21, 1] + p[22, 1]) / 2) / iod
        out["lid_opening"][i] = (p[morph.LOWER_LIDS, 1] - p[morph.UPPER_LIDS, 1]).mean() / iod
        (c, s), *_ = np.linalg.lstsq(design, p[rigid, 1] - morph.EYE_Y, rcond=None)
        out["pitch_est"][i] = np.degrees(np.arctan2(s, c))
    return out


def session_cues(out_dir: str | os.PathLike) -> pd.DataFrame:
    """Per session: BDI and the median over all face frames of each :func:`aligned_cues` value."""
    out_dir = Path(out_dir)
    videos = pd.read_csv(out_dir / "videos.csv", dtype={"session_id": str})
    per = {}
    for row in videos.to_dict("records"):
        cues = aligned_cues(load_landmarks(out_dir, row)["landmarks"])
        acc = per.setdefault(row["session_id"], {"partition": row["partition"], "bdi": row["bdi"]})
        for k, v in cues.items():
            acc.setdefault(k, []).append(v)
    rows = []
    for sid, acc in per.items():
        r = {"session_id": sid, "partition": acc.pop("partition"), "bdi": acc.pop("bdi")}
        r.update({k: float(np.nanmedian(np.concatenate(v))) for k, v in acc.items()})
        rows.append(r)
    return pd.DataFrame(rows)


def difficulty_floor(cfg: CohortConfig, seed: int = 0) -> dict:
    """How well the label can be read from the cues themselves: least squares of BDI on each
    subject's cue values plus its fixed offsets (mouth, brows, lids, head pitch; what a
    perfect landmark reader would measure), fitted on Training and scored on Testing.

    Computed from the cohort table alone (no video), so it is a floor for the difficulty: a
    model reading frames also meets frame-to-frame variation and detector error. Returns the
    RMSEs of this reading and of the training-mean predictor and their ratio (AVEC2014: the
    paper's G reaches 0.72 of the mean predictor's RMSE).
    """
    table = draw_cohort(cfg, seed, len(_bank()))
    x = np.c_[table.mouth_drop + table.off_mouth, table.brow_raise + table.off_brow, table.lid_droop + table.off_lid,
              np.clip(table.pitch_cue + table.off_pitch, -MAX_PITCH, MAX_PITCH), np.ones(len(table))]
    y = table.bdi.to_numpy(float)
    train, test = (table.partition == "Training").to_numpy(), (table.partition == "Testing").to_numpy()
    coef, *_ = np.linalg.lstsq(x[train], y[train], rcond=None)
    rmse = float(np.sqrt(np.mean((x[test] @ coef - y[test]) ** 2)))
    base = float(np.sqrt(np.mean((y[train].mean() - y[test]) ** 2)))
    return {"rmse_cues": rmse, "rmse_mean": base, "ratio": rmse / base}


def weights_vs_mean(out_dir: str | os.PathLike, alpha: float = 1.0) -> dict:
    """Ridge regression of BDI on the morph weights, fitted on Training, scored on Testing.

    Returns RMSEs of the regression and of the training-mean predictor and their ratio (above
    about 1: the photos a subject is made of tell nothing about the label).
    """

    table = pd.read_csv(Path(out_dir) / "cohort.csv", dtype={"session_id": str})
    wcols = [c for c in table.columns if c.startswith("w_")]
    tr, te = table[table.partition == "Training"], table[table.partition == "Testing"]
    pred = Ridge(alpha=alpha).fit(tr[wcols], tr.bdi).predict(te[wcols])
    rmse = float(np.sqrt(np.mean((pred - te.bdi) ** 2)))
    base = float(np.sqrt(np.mean((tr.bdi.mean() - te.bdi) ** 2)))
    return {"rmse_weights": rmse, "rmse_mean": base, "ratio": rmse / base}


def detection_check(
    out_dir: str | os.PathLike, max_videos: int | None = 40, frame_step: int | None = None, detector=None,
    params: dict | None = None,
) -> dict:
    """Run preprocessing's tracker on a spread of videos: face rates and landmark error.

    Each video goes through :func:`data_prep.extract.extract_faces`, the function that writes
    the store, so reused boxes count as found: ``false_rate`` is the share of sampled frames
    without a face in view that would be stored. ``params``: the store's preprocessing
    parameters (default: :func:`preprocess.make_params` sampling every ``frame_step``-th frame;
    None: the frames a 5-fps sampling keeps, as the book's preprocessing does).
    Landmark error = mean point-to-point distance over the 68 points, in source pixels, divided
    by the ground-truth inter-ocular distance (also over the 51 inner points, 17-67, without the
    jaw outline, whose position along the contour is ill-defined).

    Returns counts, rates and error quantiles, plus ``frames_ok``: videos whose decoded frame
    count matches the promise.
    """
    out_dir = Path(out_dir)
    fps = CohortConfig.from_dict(json.loads((out_dir / "cohort.json").read_text())["config"]).fps
    frame_step = frame_step or _frames(0.2, fps)
    params = params or make_params(size=112, sample_fps=fps / frame_step)
    videos = pd.read_csv(out_dir / "videos.csv", dtype={"session_id": str})
    if max_videos is not None and len(videos) > max_videos:
        videos = videos.iloc[np.linspace(0, len(videos) - 1, max_videos).round().astype(int)]
    det = detector or make_detector(params)
    found_face = n_face = found_empty = n_empty = frames_ok = 0
    err68, err51 = [], []
    for row in videos.to_dict("records"):
        gt = load_landmarks(out_dir, row)
        track = extract_faces(out_dir / row["video"], params, det)
        in_view = np.array([i < len(gt["face"]) and bool(gt["face"][i]) for i in track.sampled_index], bool)
        found = track.sampled_how != "none"
        n_face += int(in_view.sum())
        found_face += int((in_view & found).sum())
        n_empty += int((~in_view).sum())
        found_empty += int((~in_view & found).sum())
        for k, i in enumerate(track.frame_index):
            if i < len(gt["face"]) and gt["face"][i]:
                pts = align.transform_points(track.landmarks[k], cv2.invertAffineTransform(track.matrices[k]))
                g = gt["landmarks"][i]
                d = np.linalg.norm(pts - g, axis=1) / align.inter_ocular(g)
                err68.append(d.mean())
                err51.append(d[17:].mean())
        frames_ok += track.frames_read == row["n_frames"]
    q = lambda a, p: float(np.percentile(a, p)) if a else float("nan")  # noqa: E731
    return {
        "videos": len(videos),
        "frames_ok": frames_ok,
        "face_frames": n_face,
        "face_rate": found_face / max(n_face, 1),
        "empty_frames": n_empty,
        "false_rate": found_empty / max(n_empty, 1),
        "nme68_median": q(err68, 50),
        "nme68_p90": q(err68, 90),
        "nme51_median": q(err51, 50),
        "nme51_p90": q(err51, 90),
    }


def cohort_checks(out_dir: str | os.PathLike, max_videos: int | None = 40, frame_step: int | None = None) -> pd.DataFrame:
    """The fit-for-purpose table of a cohort (the book's QC table).

    Rows: videos with the promised frame count, face found in frames with a face (>= 95 %),
    frames without a face in view that preprocessing's tracker would store (0 %), landmark error of the detector against the ground
    truth (normalised by IOD), Spearman correlation with BDI of each cue measured on
    ground-truth landmarks (mouth corners >= 0.5 when the local cue is on), and the ridge
    regression of BDI on the morph weights against the training-mean predictor on Testing.

    Returns a DataFrame with columns ``check``, ``value``, ``target``, ``ok`` (None: reported).
    """

    out_dir = Path(out_dir)
    cfg = CohortConfig.from_dict(json.loads((out_dir / "cohort.json").read_text())["config"])
    d = detection_check(out_dir, max_videos=max_videos, frame_step=frame_step)
    rows = [
        ("videos with the promised frame count", f"{d['frames_ok']}/{d['videos']}", "all", d["frames_ok"] == d["videos"]),
        ("face found, frames with a face", round(d["face_rate"], 3), ">= 0.95", d["face_rate"] >= 0.95),
        ("stored, frames without a face in view", round(d["false_rate"], 3), "0", d["empty_frames"] == 0 or d["false_rate"] == 0),
        ("landmark error / IOD, 68 points, median", round(d["nme68_median"], 3), "reported", None),
        ("landmark error / IOD, 68 points, 90th pct", round(d["nme68_p90"], 3), "reported", None),
        ("landmark error / IOD, 51 inner points, median", round(d["nme51_median"], 3), "reported", None),
    ]
    cues = session_cues(out_dir)
    local, glob = "local" in cfg.cues, "global" in cfg.cues
    for name, sign, on in (("mouth_corner_drop", 1, local), ("inner_brow_raise", 1, local), ("lid_opening", -1, local),
                           ("pitch_est", 1, glob)):
        rho = float(stats.spearmanr(cues[name], cues.bdi).statistic)
        target = ">= 0.5" if (name == "mouth_corner_drop" and on) else "reported"
        ok = (sign * rho >= 0.5) if target != "reported" else None
        rows.append((f"Spearman(BDI, {name}) on ground truth", round(rho, 3), target, ok))
    w = weights_vs_mean(out_dir)
    rows.append(("Testing RMSE, ridge on morph weights / training mean", round(w["ratio"], 3), ">= 0.97", w["ratio"] >= 0.97))
    return pd.DataFrame(rows, columns=["check", "value", "target", "ok"])


# ---------------------------------------------------------------- command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Register the ``synth`` subcommand's arguments."""
    p.add_argument("--preset", choices=sorted(COHORT_PRESETS), default="ci", help="cohort size (default: ci)")
    p.add_argument("--out", required=True, help="output directory (empty, absent, or this very cohort)")
    p.add_argument("--seed", type=int, default=0, help="root seed (default 0)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--force", action="store_true", help="overwrite a different cohort in --out")
    p.add_argument("--cues", default=None, help="comma-separated subset of local,global ('none' for no cue)")
    for flag, typ, hlp in (
        ("--local-strength", float, "local cue scale m (1 and 2: the calibration's low and high ends)"),
        ("--pitch-deg", float, "head pitch per unit severity, degrees"),
        ("--offset-sd", float, "per-subject cue-landmark offsets, IOD"),
        ("--seconds", float, "video length, seconds"),
        ("--n-train", int, "training sessions"),
        ("--n-dev", int, "development sessions"),
        ("--n-test", int, "testing sessions"),
    ):
        p.add_argument(flag, type=typ, default=None, help=hlp + " (default: the preset's)")
    p.add_argument("--check", action="store_true", help="print the QC table after making the cohort")


def config_from_args(args: argparse.Namespace) -> CohortConfig:
    cfg = CohortConfig.preset(args.preset)
    changes = {}
    for name in ("local_strength", "pitch_deg", "offset_sd", "seconds", "n_train", "n_dev", "n_test"):
        value = getattr(args, name, None)
        if value is not None:
            changes[name] = value
    if getattr(args, "cues", None) is not None:
        text = args.cues.strip().lower()
        changes["cues"] = () if text in ("", "none") else tuple(c.strip() for c in text.split(","))
    return cfg.replace(**changes) if changes else cfg


def run(args: argparse.Namespace) -> int:
    """Make the cohort the arguments describe; 0 on success, 2 on a usage error."""
    try:
        cfg = config_from_args(args)
        make_cohort(cfg, args.out, seed=args.seed, workers=args.workers, force=args.force)
    except (ValueError, FileExistsError) as exc:
        print(f"synth: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "check", False):
        with pd.option_context("display.width", 140, "display.max_colwidth", 60):
            print(cohort_checks(args.out).to_string(index=False))
    return 0
