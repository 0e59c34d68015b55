"""The run directory: its files, its format version, reading and writing them.

A run (see :mod:`dlga.runs.cache`) is trained in ``runs/<id>.partial/`` and renamed to
``runs/<id>/`` once its ``COMPLETE`` marker is written, so a directory without the
``.partial`` suffix that holds the marker is always a whole run. A complete run holds:

* ``params.json``: what the run is (identity, configurations, the store's path and its
  preprocessing parameters, what its faces were (``training_data``), ``format_version``);
* ``metrics.json``: the final report of :func:`dlga.training.train.train` plus provenance;
* ``predictions.csv``: one row per video (:data:`PREDICTION_COLUMNS`);
* ``history.csv``: one row per training step (:data:`HISTORY_COLUMNS`);
* ``checkpoints/best``: the weights selected on Development; ``tb/``: TensorBoard;
* ``COMPLETE``: written last.

This module is the only place that knows these names; :mod:`dlga.training.train` and
:mod:`dlga.runs.cache` write through it, :mod:`dlga.inference.predict`, :mod:`dlga.inference.export` and
:mod:`dlga.book.report` read through it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from data_prep.origin import check_record
from data_prep.store import atomic_write_csv, atomic_write_json, atomic_write_text

FORMAT_VERSION = 1
"""Layout of a run directory. A ``params.json`` without ``format_version`` is of layout 1."""

PARAMS = "params.json"
METRICS = "metrics.json"
PREDICTIONS = "predictions.csv"
HISTORY = "history.csv"
COMPLETE = "COMPLETE"
PARTIAL_SUFFIX = ".partial"
CHECKPOINTS = "checkpoints"
BEST = "best"  # under checkpoints/: the Development-selected weights, kept
LATEST = "latest"  # under checkpoints/: the full state to resume, removed when the run completes
TENSORBOARD = "tb"
RUN_FILES = (PARAMS, METRICS, PREDICTIONS, HISTORY, COMPLETE)

PREDICTION_COLUMNS = ["video_id", "subject_id", "session_id", "partition", "bdi", "prediction", "n_frames"]
"""``predictions.csv``; runs written before ``subject_id`` read it as ``session_id`` (a subject a session)."""
HISTORY_COLUMNS = ["step", "train_loss", "l2", "dev_rmse", "dev_mae", "lr"]


class RunError(ValueError):
    """A run directory or exported model cannot be used; the message says what to do."""


class IncompleteRunError(RunError, FileNotFoundError):
    """The directory is not a complete run (no ``COMPLETE`` marker, or still ``.partial``)."""


# --- paths -------------------------------------------------------------------------------------
def final_dir(runs_root: str | os.PathLike, run_id: str) -> Path:
    """``runs_root/<id>``: where the run lives once complete."""
    return Path(runs_root) / run_id


def partial_dir(runs_root: str | os.PathLike, run_id: str) -> Path:
    """``runs_root/<id>.partial``: where the run trains (and resumes)."""
    return Path(runs_root) / f"{run_id}{PARTIAL_SUFFIX}"


def checkpoint_dir(run_dir: str | os.PathLike, which: str) -> Path:
    """``run_dir/checkpoints/<which>`` for ``which`` in (:data:`BEST`, :data:`LATEST`)."""
    if which not in (BEST, LATEST):
        raise ValueError(f"which must be {BEST!r} or {LATEST!r}, got {which!r}")
    return Path(run_dir) / CHECKPOINTS / which


def is_complete(path: str | os.PathLike) -> bool:
    """True for a run directory whose ``COMPLETE`` marker exists (and is not ``.partial``)."""
    path = Path(path)
    return not path.name.endswith(PARTIAL_SUFFIX) and (path / COMPLETE).is_file()


def state(runs_root: str | os.PathLike, run_id: str) -> str:
    """``complete``, ``partial`` (resumable) or ``missing``."""
    if is_complete(final_dir(runs_root, run_id)):
        return "complete"
    return "partial" if partial_dir(runs_root, run_id).is_dir() else "missing"


# --- reading -----------------------------------------------------------------------------------
def read_json(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """A JSON object from ``path``; ``what`` (what to do) ends the error message.

    Raises:
        RunError: the file is missing, unreadable or not a JSON object.
    """
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{path}: missing; {what}") from None
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: cannot be read as JSON ({exc}); {what}") from None
    if not isinstance(value, dict):
        raise RunError(f"{path}: holds a JSON {type(value).__name__}, not an object; {what}")
    return value


def require_complete(run_dir: str | os.PathLike) -> Path:
    """``run_dir`` as a Path, if it is a complete run.

    Raises:
        IncompleteRunError: not a directory, still ``.partial``, or no ``COMPLETE`` marker; the
            message says how to finish it.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise IncompleteRunError(f"{run_dir}: no such run directory; list runs with `python -m dlga runs status`")
    if not is_complete(run_dir):
        if run_dir.name.endswith(PARTIAL_SUFFIX):
            run_id = run_dir.name[: -len(PARTIAL_SUFFIX)]
            hint = f"it is unfinished; resume it with `python -m dlga runs run --id {run_id}`"
        else:
            hint = "train it to the end with `python -m dlga runs run` first"
        raise IncompleteRunError(f"{run_dir} is not a complete run (no {COMPLETE} marker): {hint}")
    return run_dir


def read_params(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``params.json`` of a run, checked to be of :data:`FORMAT_VERSION`.

    Raises:
        RunError: missing, damaged, or of another format version.
    """
    run_dir = Path(run_dir)
    params = read_json(run_dir / PARAMS, "the run is damaged; rerun it")
    version = params.get("format_version", 1)
    if version != FORMAT_VERSION:
        raise RunError(
            f"{run_dir}: run format version {version!r}, this code reads version {FORMAT_VERSION}; "
            "use the project version that wrote the run, or rerun it with this one"
        )
    return params


def read_metrics(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``metrics.json`` of a run (:func:`dlga.training.train.train`'s report plus provenance)."""
    return read_json(Path(run_dir) / METRICS, "the run is damaged; rerun it")


def read_predictions(run_dir: str | os.PathLike) -> pd.DataFrame:
    """``predictions.csv``: one row per video, :data:`PREDICTION_COLUMNS` (ids kept as text).

    A run written before the ``subject_id`` column gets it from ``session_id``."""
    frame = pd.read_csv(Path(run_dir) / PREDICTIONS, dtype={"video_id": str, "subject_id": str, "session_id": str})
    if "subject_id" not in frame.columns:
        frame.insert(PREDICTION_COLUMNS.index("subject_id"), "subject_id", frame["session_id"])
    return frame


def read_history(run_dir: str | os.PathLike) -> pd.DataFrame:
    """``history.csv``: one row per training step, :data:`HISTORY_COLUMNS`."""
    return pd.read_csv(Path(run_dir) / HISTORY)


def recorded_preprocessing(params: dict[str, Any]) -> dict[str, Any] | None:
    """The training store's preprocessing parameters as the run recorded them (None if it
    recorded none: runs of stores without a ``params.json``)."""
    prep = params.get("preprocessing")
    return prep if isinstance(prep, dict) else None


def recorded_training_data(params: dict[str, Any]) -> dict[str, Any] | None:
    """What the training faces were (:mod:`data_prep.origin`'s record) as the run recorded it
    (None if it recorded none: runs written before the record was kept)."""
    return check_record(params.get("training_data"))


# --- writing -----------------------------------------------------------------------------------
def write_params(run_dir: str | os.PathLike, params: dict[str, Any]) -> None:
    """Write ``params.json`` (:meth:`dlga.runs.cache.RunSpec.params`, which records :data:`FORMAT_VERSION`)."""
    atomic_write_json(Path(run_dir) / PARAMS, params)


def write_metrics(run_dir: str | os.PathLike, metrics: dict[str, Any]) -> None:
    atomic_write_json(Path(run_dir) / METRICS, metrics)


def write_predictions(run_dir: str | os.PathLike, videos: pd.DataFrame) -> None:
    """Write ``predictions.csv`` from per-video scores (columns beyond :data:`PREDICTION_COLUMNS` dropped)."""
    atomic_write_csv(Path(run_dir) / PREDICTIONS, videos[PREDICTION_COLUMNS])


def write_history(run_dir: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """Write ``history.csv`` from one dict per step (keys :data:`HISTORY_COLUMNS`)."""
    atomic_write_csv(Path(run_dir) / HISTORY, pd.DataFrame(rows, columns=HISTORY_COLUMNS))


def mark_complete(run_dir: str | os.PathLike, run_id: str) -> None:
    """Write the ``COMPLETE`` marker (last, after every other file)."""
    atomic_write_text(Path(run_dir) / COMPLETE, f"{run_id}\n")


# --- a run read back -----------------------------------------------------------------------------
@dataclass
class Run:
    """A complete run read back from disk."""

    path: Path
    params: dict[str, Any]
    metrics: dict[str, Any]
    predictions: pd.DataFrame
    history: pd.DataFrame

    @property
    def run_id(self) -> str:
        return self.params["run_id"]


def load_run(path: str | os.PathLike) -> Run:
    """Read a complete run directory (params, metrics, per-video predictions, history).

    Raises:
        IncompleteRunError: not a complete run (also a ``FileNotFoundError``).
        RunError: a damaged file or another format version.
    """
    path = require_complete(path)
    return Run(path=path, params=read_params(path), metrics=read_metrics(path),
               predictions=read_predictions(path), history=read_history(path))


def prediction_table(runs, partition: str = "Testing") -> pd.DataFrame:
    """The predictions of one partition of several runs (the seeds of one setting) as one long
    table: one row per (run, video), ``seed`` (the run's training seed) first, then
    :data:`PREDICTION_COLUMNS` (those present; ``subject_id`` from ``session_id`` where the
    run has none); what :func:`dlga.training.metrics.two_level_bootstrap` reads.

    ``runs``: :class:`Run` objects. Raises ValueError when ``runs`` is empty or a run has no
    video of ``partition``.
    """
    runs = list(runs)
    if not runs:
        raise ValueError(f"no runs to tabulate for {partition}; train the runs first")
    tables = []
    for run in runs:
        p = run.predictions[run.predictions["partition"] == partition]
        if p.empty:
            raise ValueError(f"run {run.run_id} has no {partition} predictions; partitions: "
                             f"{sorted(run.predictions['partition'].unique())}")
        if "subject_id" not in p.columns:
            p = p.assign(subject_id=p["session_id"])
        columns = [c for c in PREDICTION_COLUMNS if c in p.columns]  # n_frames is optional
        tables.append(p.assign(seed=int(run.params["train"]["seed"]))[["seed", *columns]])
    return pd.concat(tables, ignore_index=True)
