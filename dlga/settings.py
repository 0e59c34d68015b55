"""Process-wide switches that decide numbers, set in one place.

TensorFlow's CPU kernels cannot take the gradient of a grouped convolution (the per-patch
convolutions of LocalAttention); its oneDNN kernels can. TensorFlow turns oneDNN on by default
only on CPUs with AVX-512, so the package asks for it on every CPU. This must happen before
TensorFlow is imported (``import dlga`` does it); a user's own setting wins, and the run id
records the value (:func:`dlga.runs.cache.numerics_identity`).
"""

from __future__ import annotations

import os

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def enable_onednn() -> None:
    """Ask TensorFlow for its oneDNN kernels unless the environment already says otherwise."""
    os.environ.setdefault(ONEDNN_VARIABLE, "1")


def onednn_enabled() -> str:
    """The oneDNN switch this process runs with (``"1"`` unless the user set another value)."""
    return os.environ.get(ONEDNN_VARIABLE, "1")
