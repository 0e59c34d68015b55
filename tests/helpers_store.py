"""Test helpers: the toy store lives in the package (benchmarks use it too)."""

from data_prep.toystore import CUE_POINTS, make_store, synthetic_frames, template_landmarks  # noqa: F401
