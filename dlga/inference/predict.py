"""Using a trained model: score face videos with a run or an exported model.

A video is preprocessed exactly as the training store was (same sampling rate, detector
settings, aligned size: the store's ``params.json``), every frame with a face is scored, and
the video's estimate is the mean of its frames' predictions, as in evaluation (Decisions: Architecture).

Three kinds of model are accepted wherever a "model" is asked for:

* a complete run directory (``runs/<id>/``, see :mod:`dlga.runs.cache`): the model is rebuilt from
  its recorded configuration and the best-by-Development checkpoint is restored;
* a SavedModel directory written by ``python -m dlga export --format savedmodel``;
* a ``.keras`` file written by ``python -m dlga export --format keras``.

Every output says what the number may claim (:mod:`dlga.inference.notice`): "research model, not
a diagnosis", and, for a model that learned from synthetic faces (the book's demo runs: its
``Predictor.training_data``, recorded by the run or the export, :mod:`data_prep.origin`), that
the number means nothing for a real person: the printed lines, the CSV's ``training_data`` and
``notice`` columns and the overlay's bottom band.

Example::

    >>> predictor = load_predictor("runs/G-1a2b3c4d5e6f")
    >>> result = predict_video("interview.mp4", predictor)
    >>> result.score, result.band          # (17.3, 'mild')
    >>> result.frames.head()               # one row per frame with a face
    >>> write_overlay(result, "interview_overlay.mp4", predictor)

Command line: ``python -m dlga predict VIDEO... --run RUN_DIR [--out CSV] [--overlay OUT.mp4]``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import cv2
import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from data_prep.align import transform_points
from data_prep.extract import FaceTrack, extract_faces as extract_video_faces
from data_prep.faces import LandmarkDetector
from data_prep.origin import store_origin
from data_prep.preprocess import PARAMS_VERSION, params_from_record
from data_prep.video import VideoError, iter_sampled_frames
from data_prep.store import STORE_VERSION
from dlga.config import ModelConfig
from dlga.inference.exportdir import export_kind, read_metadata
from dlga.inference.notice import notice, notice_lines, training_data_or_unknown
from dlga.model.network import build_model  # also registers the custom layers that .keras files name
from dlga.model.patches import NUM_PATCHES, patch_centres
from dlga.runs import rundir
from dlga.runs.rundir import RunError
from dlga.training.data import resize_batch
from dlga.training.metrics import BAND_NAMES, severity_band

ALIGN_POINTS_NAME = "eye-corners"  # what data_prep.preprocess.make_params records for align_face
ATTENTION_COLUMNS = tuple(f"a{j}" for j in range(1, NUM_PATCHES + 1))
FRAME_COLUMNS = ("video", "frame_index", "how", "prediction")
NOTICE_COLUMNS = ("training_data", "notice")
"""Last columns of the ``--out`` CSV: the training data's kind (``synthetic``, ``real``,
``unknown``; :mod:`data_prep.origin`) and :func:`dlga.inference.notice.notice`, on every row."""


class PredictError(RuntimeError):
    """One video cannot be scored (unreadable, no face); the message names the file."""


# --- loading ---------------------------------------------------------------------------------
def _find_store(run_dir: Path, recorded: str | None, store_dir: str | os.PathLike | None) -> Path:
    """The store a run trained on: ``store_dir`` if given, else the recorded path.

    A relative recorded path is tried from the working directory and from the project root
    that holds ``runs/`` (the parent of the runs folder), where ``dlga.runs.cache`` writes it from.
    """
    if store_dir is not None:
        path = Path(store_dir)
        if not (path / "params.json").is_file():
            raise RunError(f"store {path} has no params.json; pass the store directory the run was trained on")
        return path
    if not recorded:
        raise RunError(
            f"{run_dir}/{rundir.PARAMS} records neither the preprocessing nor a store_dir; pass the training "
            "store with --store STORE_DIR (store_dir=...)"
        )
    for path in _store_candidates(run_dir, recorded):
        if (path / "params.json").is_file():
            return path
    raise RunError(
        f"{run_dir}/{rundir.PARAMS} records no preprocessing parameters and the training store {recorded!r} it "
        "records is not found (its params.json holds them); pass it with --store STORE_DIR (store_dir=...), or "
        "export the model on a machine that has it (`python -m dlga export`): exports carry the parameters"
    )


def _store_candidates(run_dir: Path, recorded: str) -> list[Path]:
    candidates = [Path(recorded)]
    if not Path(recorded).is_absolute():
        candidates.append(run_dir.resolve().parent.parent / recorded)
    return candidates


def run_training_data(
    run_dir: str | os.PathLike, params: dict[str, Any], store_dir: str | os.PathLike | None = None
) -> dict[str, Any]:
    """What a run's training faces were (:mod:`data_prep.origin`'s record), for the notice.

    The record the run kept in ``params.json``; for runs written before it, what the training
    store shows (``store_dir`` if given, else the recorded store where it is found), the
    evidence then starting ``store <path>: inferred``; else ``unknown``, saying why.
    """
    run_dir = Path(run_dir)
    recorded = rundir.recorded_training_data(params)
    if recorded is not None:
        return recorded
    if store_dir is not None:
        stores = [Path(store_dir)]
    else:
        stores = _store_candidates(run_dir, params["store_dir"]) if params.get("store_dir") else []
    for store in stores:
        if (store / "manifest.csv").is_file() or (store / "params.json").is_file():
            found = store_origin(store)
            return {**found, "evidence": f"not recorded by the run; store {store}: {found['evidence']}"}
    return training_data_or_unknown(
        None, f"{run_dir}/{rundir.PARAMS} records no training data (runs made before it was kept) and its store "
              f"{params.get('store_dir')!r} is not found")


def run_preprocessing(
    run_dir: str | os.PathLike, params: dict[str, Any], store_dir: str | os.PathLike | None = None
) -> dict[str, Any]:
    """The preprocessing a run's model expects, validated (:func:`validate_preprocessing`).

    From, in this order: the ``params.json`` of ``store_dir`` when it is given (the caller
    says where the store is); the copy the run recorded in its own ``params.json``, so that
    the run scores videos after its store has moved or been deleted; the ``params.json`` of
    the store the run recorded (runs written before the copy was kept).

    Raises:
        RunError: none of these exists, or the parameters are of another version.
    """
    run_dir = Path(run_dir)
    recorded = rundir.recorded_preprocessing(params)
    if store_dir is None and recorded is not None:
        return validate_preprocessing(recorded, f"{run_dir}/{rundir.PARAMS} (preprocessing)")
    store = _find_store(run_dir, params.get("store_dir"), store_dir)
    path = store / "params.json"
    return validate_preprocessing(rundir.read_json(path, "pass --store STORE_DIR"), str(path))


def validate_preprocessing(params: dict[str, Any], source: str) -> dict[str, Any]:
    """Check preprocessing parameters recorded by :func:`data_prep.preprocess.make_params`.

    Args:
        params: the store's ``params.json`` (or the copy in an export).
        source: where they came from, for messages.

    Returns:
        The parameters, normalised by ``make_params``.

    Raises:
        RunError: parameters of another version, or a store not written by ``data_prep``.
    """
    if "version" not in params or "size" not in params:
        raise RunError(
            f"{source} holds no preprocessing parameters (keys: {sorted(params)}); it was not written by "
            "`python -m data_prep preprocess`. Pass the preprocessed store with --store STORE_DIR"
        )
    if params["version"] != PARAMS_VERSION or params.get("store_version", STORE_VERSION) != STORE_VERSION:
        raise RunError(
            f"{source}: preprocessing parameters version {params['version']} (store version "
            f"{params.get('store_version')}), this code reads version {PARAMS_VERSION} (store {STORE_VERSION}); "
            "use the project version that trained the run, or retrain"
        )
    if params.get("align_points", ALIGN_POINTS_NAME) != ALIGN_POINTS_NAME:
        raise RunError(f"{source}: alignment {params['align_points']!r}, this code aligns on {ALIGN_POINTS_NAME!r}")
    try:
        return params_from_record(params)  # every recorded key, the fallback included
    except (TypeError, ValueError) as exc:
        raise RunError(f"{source}: invalid preprocessing parameters ({exc})") from None

def check_run(run_dir: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Check that ``run_dir`` is a complete run this code can read.

    Returns:
        ``(params, metrics, checkpoint_prefix)`` of the run.

    Raises:
        RunError: not a directory, not complete, no checkpoint, or another format version.
    """
    run_dir = rundir.require_complete(run_dir)
    params = rundir.read_params(run_dir)
    metrics = rundir.read_metrics(run_dir)
    recorded = (metrics.get("versions") or {}).get("keras")
    if recorded and recorded.split(".")[0] != keras.__version__.split(".")[0]:
        raise RunError(
            f"{run_dir} was trained with Keras {recorded}, this is Keras {keras.__version__}: "
            "checkpoints do not carry over between major versions; install Keras "
            f"{recorded.split('.')[0]}.x or retrain"
        )
    best = rundir.checkpoint_dir(run_dir, rundir.BEST)
    prefix = tf.train.latest_checkpoint(str(best))
    if prefix is None:
        raise RunError(f"{best} holds no checkpoint; the run is damaged, rerun it")
    return params, metrics, prefix


def restore_run_model(run_dir: str | os.PathLike) -> tuple[Any, ModelConfig, dict[str, Any]]:
    """Rebuild the model of a complete run and restore its selected (best Development) weights.

    Returns:
        ``(model, config, params)``: the ``keras.Model`` of :func:`dlga.model.network.build_model`, its
        :class:`~dlga.config.ModelConfig` (with the trained ``warm_start_bias``) and the run's
        ``params.json``.

    Raises:
        RunError: the run is incomplete, damaged, of another version, was built by a custom
            ``model_fn``, or its checkpoint does not fit the model this code builds.
    """
    run_dir = Path(run_dir)
    params, metrics, prefix = check_run(run_dir)
    if params.get("model_fn"):
        raise RunError(
            f"{run_dir} was trained with a custom model_fn {params['model_fn']!r}, not dlga.model.network.build_model; "
            "rebuild it with that function and restore checkpoints/best yourself"
        )
    try:
        config = ModelConfig.from_dict(metrics.get("model_config") or params["model"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(
            f"{run_dir}: the recorded model configuration does not fit this code ({exc}); "
            "use the project version that wrote the run, or rerun it"
        ) from None
    model = build_model(config)
    try:
        tf.train.Checkpoint(model=model).restore(prefix).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as exc:
        raise RunError(
            f"{prefix}: the checkpoint does not match the model this code builds from the run's configuration "
            f"({str(exc).splitlines()[0][:200]}); use the project version that wrote the run, or rerun it"
        ) from None
    return model, config, params


def load_trained_model(
    run_dir: str | os.PathLike, store_dir: str | os.PathLike | None = None
) -> tuple[Any, ModelConfig, dict[str, Any]]:
    """Rebuild the model of a complete run with its selected (best Development) weights.

    Args:
        run_dir: a complete run directory (``runs/<id>/``).
        store_dir: the training store, to read the preprocessing from it instead of the
            run's recorded copy (see :func:`run_preprocessing`).

    Returns:
        ``(model, config, preprocessing)``: the ``keras.Model`` (inputs ``{"image": (B, S, S, 3)
        float32 0-255, "landmarks": (B, 68, 2) float32 pixels at S}``, S = ``config.input_size``),
        its :class:`~dlga.config.ModelConfig` (with the trained ``warm_start_bias``) and the
        store's preprocessing parameters (:func:`data_prep.preprocess.make_params`).

    Raises:
        RunError: the run is incomplete, damaged, of another version, or its preprocessing is
            neither recorded nor in a store that can be found.
    """
    model, config, params = restore_run_model(run_dir)
    return model, config, run_preprocessing(run_dir, params, store_dir)


@dataclass
class Predictor:
    """A model ready to score aligned faces, with the preprocessing it expects.

    Attributes:
        fn: ``fn({"image": (B, s, s, 3) float32 0-255, "landmarks": (B, 68, 2) float32}) ->
            {"score": (B,), "local_attention": (B, 24)?, "global_attention": (B,)?}``.
        input_size: s, the side the model takes (frames are resized to it).
        preprocessing: :func:`data_prep.preprocess.make_params` of the training store.
        mirror_mouth_offsets: the model's patch-centre reading (for drawing the centres).
        source: the run directory or exported file it came from.
        model: the ``keras.Model`` (None for a SavedModel).
        config: the :class:`ModelConfig` (None when unknown).
        metadata: an export's ``dlga.json`` (empty for a run).
        training_data: what the model's training faces were (:mod:`data_prep.origin`'s record:
            ``kind`` synthetic, real or unknown), for the notice on every output
            (:mod:`dlga.inference.notice`).
    """

    fn: Callable[[dict], dict]
    input_size: int
    preprocessing: dict[str, Any]
    mirror_mouth_offsets: bool = False
    source: str = ""
    model: Any = None
    config: ModelConfig | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    training_data: dict[str, Any] = field(
        default_factory=lambda: training_data_or_unknown(None, "the model's training data were not given"))


def _keras_fn(model) -> Callable[[dict], dict]:
    return lambda inputs: model(inputs, training=False)


def _keras_predictor(model, config: ModelConfig, preprocessing: dict[str, Any], source: Path,
                     training_data: dict[str, Any], metadata: dict[str, Any] | None = None) -> Predictor:
    return Predictor(fn=_keras_fn(model), input_size=config.input_size, preprocessing=preprocessing,
                     mirror_mouth_offsets=config.mirror_mouth_offsets, source=str(source), model=model,
                     config=config, metadata=metadata or {}, training_data=training_data)


def load_predictor(path: str | os.PathLike, store_dir: str | os.PathLike | None = None) -> Predictor:
    """Load a run directory, an exported SavedModel directory or an exported ``.keras`` file.

    Args:
        path: the run directory or the export.
        store_dir: a run's training store (see :func:`load_trained_model`); unused for exports.

    Raises:
        RunError: ``path`` is none of these, or is incomplete or of another version.
    """
    path = Path(path)
    kind = export_kind(path)
    if kind is not None:
        meta, meta_source = read_metadata(path)
        prep = validate_preprocessing(meta["preprocessing"], meta_source)
        config = ModelConfig.from_dict(meta["model_config"])
        training_data = training_data_or_unknown(
            meta.get("training_data"), f"{meta_source} records no training data (exported before it was kept)")
        if kind == "keras":
            return _keras_predictor(keras.models.load_model(path, compile=False), config, prep, path, training_data,
                                    meta)
        loaded = tf.saved_model.load(str(path))
        return Predictor(
            fn=lambda x: loaded.serve(x["image"], x["landmarks"]),
            input_size=int(meta["input_size"]),
            preprocessing=prep,
            mirror_mouth_offsets=config.mirror_mouth_offsets,
            source=str(path),
            config=config,
            metadata=meta,
            training_data=training_data,
        )
    if path.is_dir() and (path / rundir.PARAMS).is_file():
        model, config, prep = load_trained_model(path, store_dir)
        return _keras_predictor(model, config, prep, path, run_training_data(path, rundir.read_params(path), store_dir))
    if not path.exists():
        raise RunError(f"{path}: no such run directory or exported model")
    raise RunError(
        f"{path} is neither a run directory (params.json), an exported SavedModel directory (saved_model.pb) "
        "nor a .keras file; pass --run RUN_DIR or --model PATH from `python -m dlga export`"
    )


# --- scoring ---------------------------------------------------------------------------------
def predict_frames(
    model: Any, frames: np.ndarray, landmarks: np.ndarray, input_size: int, batch_size: int = 64
) -> pd.DataFrame:
    """Score aligned faces.

    Args:
        model: a ``keras.Model`` from :func:`dlga.model.network.build_model`, a :class:`Predictor`, or
            any callable ``{"image", "landmarks"} -> {"score", ...}``.
        frames: uint8 (N, S, S, 3) aligned RGB faces (a store's ``frames``).
        landmarks: float (N, 68, 2) aligned landmarks, pixels at S.
        input_size: the model's input side s; frames are resized to it and landmarks scaled
            by s / S exactly as in training (:func:`dlga.training.data.resize_batch`).
        batch_size: frames per model call.

    Returns:
        One row per frame: ``prediction`` (BDI-II points), ``a1..a24`` (local attention
        alpha_j, if the model has the local branch), ``global_attention`` (if it has the global
        branch).
    """
    frames = np.asarray(frames)
    landmarks = np.asarray(landmarks, dtype=np.float32)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[1] != frames.shape[2] or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (N, S, S, 3) aligned faces, got {frames.dtype} {frames.shape}")
    if landmarks.shape != (len(frames), 68, 2):
        raise ValueError(f"landmarks must be (N, 68, 2) with N = {len(frames)} frames, got {landmarks.shape}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    fn = model.fn if isinstance(model, Predictor) else model
    size = int(frames.shape[1])
    outputs: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(frames), int(batch_size)):
        images, lms = resize_batch(frames[start : start + batch_size], landmarks[start : start + batch_size],
                                   size, int(input_size))
        out = fn({"image": images, "landmarks": lms})
        for key, value in out.items():
            outputs.setdefault(key, []).append(np.asarray(value, dtype=np.float64))
    if not outputs:  # no frame: keep the columns
        return pd.DataFrame(columns=["prediction"])
    table = pd.DataFrame({"prediction": np.concatenate(outputs["score"]).reshape(-1)})
    if "local_attention" in outputs:
        local = np.concatenate(outputs["local_attention"]).reshape(len(table), -1)
        table = pd.concat([table, pd.DataFrame(local, columns=list(ATTENTION_COLUMNS[: local.shape[1]]))], axis=1)
    if "global_attention" in outputs:
        table["global_attention"] = np.concatenate(outputs["global_attention"]).reshape(-1)
    return table


def extract_faces(
    path: str | os.PathLike, preprocessing: dict[str, Any], detector: LandmarkDetector | None = None
) -> FaceTrack:
    """Sample, detect and align one video the way the training store was made
    (:func:`data_prep.extract.extract_faces`, the function preprocessing calls).

    Raises:
        PredictError: the file is missing, unreadable, has no decodable frame, or no face.
    """
    try:
        track = extract_video_faces(path, preprocessing, detector)
        track.check()
    except VideoError as exc:
        reason = str(exc)
        if reason.startswith("no face found"):
            advice = "the model needs a frontal face of at least about 80 pixels, reasonably lit"
        elif reason.startswith("no frame could be decoded"):
            advice = "re-encode it, e.g. `ffmpeg -i IN -c:v mpeg4 OUT.mp4`"
        else:
            advice = "check the path, and that the file plays (re-encode it to mp4 if not)"
        raise PredictError(f"{path}: {reason}; {advice}") from None
    return track


@dataclass
class VideoPrediction:
    """The estimate for one video.

    Attributes:
        path: the video.
        score: BDI-II estimate, the mean of the frame predictions (points, 0-63 scale; not
            clipped, as in evaluation).
        band: severity band of the score (``minimal``/``mild``/``moderate``/``severe``).
        frames: one row per frame with a face: ``video``, ``frame_index``, ``how``,
            ``prediction``, ``a1..a24`` and ``global_attention`` when the model has them.
        track: the aligned faces and source geometry (for :func:`write_overlay`).
        training_data: the model's :attr:`Predictor.training_data`, for the notice.
    """

    path: str
    score: float
    band: str
    frames: pd.DataFrame
    track: FaceTrack
    training_data: dict[str, Any] = field(
        default_factory=lambda: training_data_or_unknown(None, "the model's training data were not given"))

    def summary(self) -> str:
        """Two lines: the estimate, then the notice (:func:`dlga.inference.notice.notice`)."""
        t = self.track
        return (f"{self.path}: BDI-II {self.score:.1f} ({self.band}); {len(self.frames)} of {t.frames_sampled} "
                f"sampled frames with a face\n  note: {notice(self.training_data)}")


def band_name(score: float) -> str:
    """Name of the BDI-II severity band of a score (0-13 minimal, 14-19 mild, 20-28 moderate, 29-63 severe)."""
    return BAND_NAMES[int(severity_band([score])[0])]


def predict_video(
    path: str | os.PathLike,
    run_or_model: str | os.PathLike | Predictor,
    *,
    store_dir: str | os.PathLike | None = None,
    detector: LandmarkDetector | None = None,
    batch_size: int = 64,
) -> VideoPrediction:
    """Preprocess a video like the training store and score it.

    Args:
        path: a video file OpenCV can read.
        run_or_model: a :class:`Predictor`, or a path for :func:`load_predictor` (loading once
            and passing the Predictor is faster for many videos).
        store_dir: the training store, when a run's recorded one has moved.
        detector: a :class:`~data_prep.faces.LandmarkDetector` to reuse across videos.
        batch_size: frames per model call.

    Raises:
        PredictError: the video is unreadable or shows no face.
        RunError: the run or exported model cannot be used.
    """
    predictor = run_or_model if isinstance(run_or_model, Predictor) else load_predictor(run_or_model, store_dir)
    track = extract_faces(path, predictor.preprocessing, detector)
    table = predict_frames(predictor, track.frames, track.landmarks, predictor.input_size, batch_size)
    table.insert(0, "how", track.how)
    table.insert(0, "frame_index", track.frame_index)
    table.insert(0, "video", str(path))
    score = float(table["prediction"].mean())
    return VideoPrediction(path=str(path), score=score, band=band_name(score), frames=table, track=track,
                           training_data=predictor.training_data)


# --- overlay ---------------------------------------------------------------------------------
def source_patch_centres(track: FaceTrack, mirror_mouth_offsets: bool = False) -> np.ndarray:
    """The 24 patch centres of every face in source-video pixels, (N, 24, 2) float64.

    Computed in the aligned frame (:func:`dlga.model.patches.patch_centres` at the aligned size,
    which equals the model's centres scaled back from its input size) and mapped back with
    the inverse of each frame's alignment matrix.
    """
    size = int(track.frames.shape[1])
    centres = patch_centres(track.landmarks, size, mirror_mouth_offsets)
    return np.stack([transform_points(c, cv2.invertAffineTransform(m)) for c, m in zip(centres, track.matrices)])


def _attention_colours(alpha: np.ndarray | None) -> list[tuple[int, int, int]]:
    """BGR colours from blue (lowest) to red (highest weight of this frame)."""
    if alpha is None:
        return [(255, 255, 255)] * NUM_PATCHES
    lo, hi = float(np.min(alpha)), float(np.max(alpha))
    # Sigmoid gates of one frame often sit in a narrow band: spread them over the colour map.
    scaled = np.zeros_like(alpha) if hi - lo < 1e-6 else (alpha - lo) / (hi - lo)
    lut = cv2.applyColorMap(np.uint8(np.rint(scaled * 255))[:, None], cv2.COLORMAP_JET)[:, 0]
    return [tuple(int(v) for v in c) for c in lut]


NOTICE_FONT = cv2.FONT_HERSHEY_SIMPLEX
NOTICE_MAX_SCALE = 0.6


def notice_band(lines: Iterable[str], width: int) -> tuple[float, int, int]:
    """``(font scale, line height, band height)`` in pixels of the notice on a ``width``-pixel
    frame: the largest scale up to :data:`NOTICE_MAX_SCALE` at which the longest line fits."""
    lines = list(lines)
    widest = max(cv2.getTextSize(line, NOTICE_FONT, 1.0, 1)[0][0] for line in lines)
    scale = min(NOTICE_MAX_SCALE, (width - 12) / widest)
    line_height = int(round(30 * scale)) + 2
    return scale, line_height, line_height * len(lines) + 6


def draw_notice(bgr: np.ndarray, lines: Iterable[str]) -> None:
    """Draw ``lines`` (:func:`dlga.inference.notice.notice_lines`) on a black band at the bottom
    of a BGR frame, in place: yellow on black, shrunk to fit the frame's width."""
    lines = list(lines)
    height, width = bgr.shape[:2]
    scale, line_height, band = notice_band(lines, width)
    bgr[max(0, height - band):] = 0
    for i, line in enumerate(lines):
        y = height - band + 4 + line_height * (i + 1) - int(round(8 * scale))
        cv2.putText(bgr, line, (6, y), NOTICE_FONT, scale, (0, 255, 255), 1, cv2.LINE_AA)


def write_overlay(result: VideoPrediction, out_path: str | os.PathLike, predictor: Predictor | None = None) -> Path:
    """Write the video with the face box, the 24 patch centres, the running estimate and the notice.

    Every decoded frame of the source is written (``mp4v`` in ``.mp4``), so the overlay has
    as many frames as the source decodes. A frame between two sampled frames shows what the
    latest sampled frame found (its face, or "no face"); frames after the last sampled one
    (``max_frames`` reached) say so. The estimate is the mean of the frame predictions so far. Patch
    centres are coloured by their local attention in that frame, blue (lowest) to red
    (highest); the global attention is printed when the model has it. Every frame carries the
    notice of ``result.training_data`` (:func:`draw_notice`): "research model, not a
    diagnosis", and for a model trained on synthetic faces that its number means nothing for a
    real person.

    Returns:
        ``out_path``.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    track, table = result.track, result.frames
    mirror = bool(predictor.mirror_mouth_offsets) if predictor is not None else False
    centres = source_patch_centres(track, mirror)
    local = table[[c for c in ATTENTION_COLUMNS if c in table]].to_numpy() if "a1" in table else None
    running = table["prediction"].expanding().mean().to_numpy()
    lines = notice_lines(result.training_data)
    width, height = track.frame_size
    tmp = out_path.with_name(f".{out_path.stem}.tmp{out_path.suffix}")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), track.fps, (width, height))
    if not writer.isOpened():
        raise PredictError(f"{out_path}: OpenCV cannot write an mp4v video here; choose a path ending in .mp4")
    row_of = {int(f): k for k, f in enumerate(track.frame_index)}
    sampled = track.sampled_index
    j, k = -1, -1  # latest sampled frame, and latest face row, at or before the current frame
    try:
        for index, rgb in iter_sampled_frames(result.path, None):
            while j + 1 < len(sampled) and sampled[j + 1] <= index:
                j += 1
                k = row_of.get(int(sampled[j]), k)
            bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            past_end = track.stopped_early and index > int(sampled[-1])
            if j >= 0 and int(sampled[j]) in row_of and not past_end:
                left, top, right, bottom = (int(v) for v in track.boxes[k])
                cv2.rectangle(bgr, (left, top), (right, bottom), (0, 255, 0), 2)
                colours = _attention_colours(None if local is None else local[k])
                for (x, y), colour in zip(centres[k], colours):
                    cv2.circle(bgr, (int(round(x)), int(round(y))), 4, colour, -1, cv2.LINE_AA)
                text = f"BDI-II {running[k]:.1f} ({band_name(running[k])})"
                if "global_attention" in table:
                    text += f"  global a={table['global_attention'].iat[k]:.2f}"
            elif k >= 0:
                why = "not scored: max_frames reached" if past_end else "no face"
                text = f"BDI-II {running[k]:.1f} ({band_name(running[k])})  {why}"
            else:
                text = "no face yet"
            cv2.putText(bgr, text, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 4, cv2.LINE_AA)
            cv2.putText(bgr, text, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 1, cv2.LINE_AA)
            draw_notice(bgr, lines)
            writer.write(bgr)
        writer.release()
        os.replace(tmp, out_path)
    finally:
        writer.release()
        tmp.unlink(missing_ok=True)
    return out_path


# --- many videos -----------------------------------------------------------------------------
def overlay_paths(overlay: str | os.PathLike, videos: Iterable[str | os.PathLike]) -> list[Path]:
    """``OUT.mp4`` for one video; ``OUT_<video stem>.mp4`` for each of several."""
    overlay = Path(overlay)
    videos = [Path(v) for v in videos]
    if len(videos) == 1:
        return [overlay]
    return [overlay.with_name(f"{overlay.stem}_{v.stem}{overlay.suffix or '.mp4'}") for v in videos]


def _notice_columns(result: VideoPrediction) -> dict[str, str]:
    return dict(zip(NOTICE_COLUMNS, (result.training_data["kind"], notice(result.training_data))))


def frame_table(results: Iterable[VideoPrediction]) -> pd.DataFrame:
    """Per-frame predictions of several videos in one table (the ``--out`` CSV), each row
    ending with :data:`NOTICE_COLUMNS` (what the model's training faces were, and the notice)."""
    tables = [r.frames.assign(**_notice_columns(r)) for r in results]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=[*FRAME_COLUMNS, *NOTICE_COLUMNS])


def video_table(results: Iterable[VideoPrediction]) -> pd.DataFrame:
    """One row per video: ``video``, ``prediction``, ``band``, ``n_frames``, ``frames_sampled``
    and :data:`NOTICE_COLUMNS`."""
    columns = ["video", "prediction", "band", "n_frames", "frames_sampled", *NOTICE_COLUMNS]
    rows = [{"video": r.path, "prediction": r.score, "band": r.band, "n_frames": len(r.frames),
             "frames_sampled": r.track.frames_sampled, **_notice_columns(r)} for r in results]
    return pd.DataFrame(rows, columns=columns)

