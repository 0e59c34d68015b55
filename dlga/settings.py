"""Process-wide switches that decide numbers, and where runs, data and builds live: set in one place.

TensorFlow's CPU kernels cannot take the gradient of a grouped convolution (the per-patch
convolutions of LocalAttention); its oneDNN kernels can. TensorFlow turns oneDNN on by default
only on CPUs with AVX-512, so the package asks for it on every CPU. This must happen before
TensorFlow is imported (``import dlga`` does it); a user's own setting wins, and the run id
records the value (:func:`dlga.runs.cache.numerics_identity`).

Runs, data and book builds live under the checkout by default (``runs/``, ``data/``,
``_build/``); the environment variables ``DLGA_RUNS``, ``DLGA_DATA`` and ``DLGA_BUILD`` move
them (read once, when this module is imported, so a process and the notebook kernels and
workers it starts, which inherit its environment, agree on them). Where a run or a store lives
enters no run id: the id hashes what decides the numbers, not paths.

The library versions come from a lock file (``locks/cpu.txt`` or ``locks/gpu.txt``, installed by
``make``); ``DLGA_LOCK`` names the one in use, and the Status page and ``verify`` show its hash
(:func:`lock_hash`). TensorFlow itself is an extra (``cpu`` or ``gpu``): ``import dlga`` checks
that one is installed (:func:`require_tensorflow`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The checkout: the folder that holds ``dlga/``, ``data_prep/``, ``book/`` and ``_toc.yml``."""


def _location(variable: str, default: str) -> Path:
    """``$variable`` when it is set and not empty, else ``PROJECT_ROOT / default``."""
    value = os.environ.get(variable)
    return Path(value).expanduser() if value else PROJECT_ROOT / default


RUNS_DIR = _location("DLGA_RUNS", "runs")
"""The run cache of the book and ``python -m dlga.runs`` (``$DLGA_RUNS``, default ``runs/``)."""
DATA_DIR = _location("DLGA_DATA", "data")
"""Cohorts and preprocessed stores, one folder per book preset (``$DLGA_DATA``, default ``data/``)."""
BUILD_DIR = _location("DLGA_BUILD", "_build")
"""Executed chapters and the HTML book (``$DLGA_BUILD``, default ``_build/``)."""

LOCK_FILE = _location("DLGA_LOCK", "locks/cpu.txt")
"""The lock file the environment was installed from (``$DLGA_LOCK``, set by ``make`` to
``locks/$(DEVICE).txt``; default ``locks/cpu.txt``)."""

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def enable_onednn() -> None:
    """Ask TensorFlow for its oneDNN kernels unless the environment already says otherwise."""
    os.environ.setdefault(ONEDNN_VARIABLE, "1")


def onednn_enabled() -> str:
    """The oneDNN switch this process runs with (``"1"`` unless the user set another value)."""
    return os.environ.get(ONEDNN_VARIABLE, "1")


def require_tensorflow() -> None:
    """Stop with what to install when no TensorFlow is installed.

    pyproject.toml leaves TensorFlow to the extras ``cpu`` (``tensorflow-cpu``) and ``gpu``
    (``tensorflow[and-cuda]``), which install the same ``tensorflow`` package and so cannot both
    be dependencies. Looks the package up without importing it (importing costs seconds, and the
    chapters that only read runs never do).
    """
    if importlib.util.find_spec("tensorflow") is None:
        raise ModuleNotFoundError(
            "dlga needs TensorFlow, which is not installed: TensorFlow comes with one of the extras of "
            "dlga-book, so install dlga-book[cpu] (CPU) or dlga-book[gpu] (NVIDIA GPU with CUDA, Linux), "
            "e.g. `pip install -e '.[cpu]'` in the checkout, or `make` / `make DEVICE=gpu`, which install the lock.",
            name="tensorflow")


def lock_hash(path: Path | None = None) -> str:
    """``"<file name> sha256 <first 12 hex digits>"`` of the lock file in use (default
    :data:`LOCK_FILE`), or ``"no lock"`` when there is none (a package installed outside the
    checkout): which exact environment produced a build."""
    path = LOCK_FILE if path is None else Path(path)
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return f"no lock ({path} not found)"
    return f"{path.name} sha256 {digest[:12]}"
