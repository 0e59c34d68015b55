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
"""

from __future__ import annotations

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

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def enable_onednn() -> None:
    """Ask TensorFlow for its oneDNN kernels unless the environment already says otherwise."""
    os.environ.setdefault(ONEDNN_VARIABLE, "1")


def onednn_enabled() -> str:
    """The oneDNN switch this process runs with (``"1"`` unless the user set another value)."""
    return os.environ.get(ONEDNN_VARIABLE, "1")
