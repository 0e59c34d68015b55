"""Shared pytest fixtures. Sections are owned by different parts of the project; keep additive."""

from __future__ import annotations

import os
from pathlib import Path

# Tests never write into a user's runs/, data/ or _build/: unless the caller named other
# folders (make test names these same ones), the ci book, its runs and its stores live in one
# named cache under .cache/test. dlga.settings reads the variables when it is first imported,
# and the notebook kernels and run workers the tests start inherit them.
TEST_CACHE = Path(__file__).resolve().parents[1] / ".cache" / "test"
for _variable, _folder in (("DLGA_RUNS", "runs"), ("DLGA_DATA", "data"), ("DLGA_BUILD", "build")):
    os.environ.setdefault(_variable, str(TEST_CACHE / _folder))

# Before any test module imports TensorFlow: the package's one oneDNN switch (dlga.settings).
import dlga  # noqa: E402,F401  (importing the package sets it)

import numpy as np
import pytest

# --- faces (data_prep.faces / align / preprocess) -------------------------------------------

FACES_DIR = Path(__file__).resolve().parents[1] / "data_prep" / "assets" / "faces"


@pytest.fixture(scope="session")
def face_photos() -> list[Path]:
    """The ten CC0 face photos (data_prep/assets/faces)."""
    photos = sorted(FACES_DIR.glob("face_*.jpg"))
    assert len(photos) == 10, f"expected 10 CC0 photos in {FACES_DIR}"
    return photos


def _write_face_video(path, photo, n_frames=4, fps=10.0, face_px=320, blank=()):
    """Paste a CC0 photo into 640x480 frames with small shifts and write an mp4v video.

    ``blank``: frame indices written without the face (grey frames).
    """
    import cv2

    img = cv2.imread(str(photo))
    img = cv2.resize(img, (face_px, face_px), interpolation=cv2.INTER_AREA)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (640, 480))
    assert writer.isOpened(), "OpenCV cannot write mp4v videos here"
    for i in range(n_frames):
        canvas = np.full((480, 640, 3), 90, np.uint8)
        if i not in blank:
            x, y = 160 + 4 * (i % 5), 80 + 3 * (i % 3)
            canvas[y : y + face_px, x : x + face_px] = img
        writer.write(canvas)
    writer.release()
    return Path(path)


@pytest.fixture(scope="session")
def make_face_video():
    """Factory: ``make_face_video(path, photo, n_frames=4, fps=10, face_px=320, blank=())``."""
    return _write_face_video

# ---------------------------------------------------------------------------------------------

# --- a trained run (dlga.inference.predict / dlga.inference.export) -----------------------------------------------


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A complete run of a tiny setting-G model trained for 3 steps on a small synthetic store.

    The store is tests/helpers_store.py's (its origin.json says synthetic: the run's notice is
    the synthetic one), with the preprocessing parameters of a 64-px store
    (``data_prep.preprocess.make_params``) in its params.json, so that the run can score real
    videos the way a store made by ``python -m data_prep preprocess`` would.
    """
    from data_prep.preprocess import make_params
    from data_prep.store import atomic_write_json
    from dlga.runs.cache import RunSpec, execute
    from dlga.config import TrainConfig
    from helpers_store import make_store

    root = tmp_path_factory.mktemp("trained")
    store_dir = make_store(root / "store", {"Training": 8, "Development": 3, "Testing": 3}, frames_per_video=4, size=64)
    atomic_write_json(store_dir / "params.json", make_params(size=64))
    schedule = TrainConfig.preset("ci", max_steps=3, eval_every=3, batch_size=8, warmup_steps=0, jit_compile=False)
    return execute(RunSpec("G", "tiny", schedule, str(store_dir)), root / "runs", progress=False)


@pytest.fixture(scope="session")
def relabel_run(trained_run):
    """Factory: ``relabel_run(dst, training_data, **params)`` copies ``trained_run`` (its store is
    the toy store, so its recorded ``training_data`` is synthetic) to ``dst`` with another
    ``training_data`` record in params.json (None: removed, as in runs made before it was kept)
    and other params.json values; no training."""
    import json
    import shutil

    def relabel(dst, training_data, **params):
        run = Path(shutil.copytree(trained_run, dst))
        old = json.loads((run / "params.json").read_text())
        new = {**{k: v for k, v in old.items() if k != "training_data"}, **params}
        if training_data is not None:
            new["training_data"] = training_data
        (run / "params.json").write_text(json.dumps(new))
        return run

    return relabel

# ---------------------------------------------------------------------------------------------
