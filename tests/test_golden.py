"""Golden numbers: the run id and the store folder follow declared versions, not file text, so
these tests are what keeps the versions honest.

* A tiny fixed run (conftest's ``trained_run``: setting G, 3 steps on the toy store) must give
  the stored predictions at :data:`dlga.runs.cache.NUMERICS_VERSION`; a change of numerics without a
  version bump fails here.
* A fixed clip (a CC0 photo written as a 4-frame video) preprocessed at 64 px must give the
  stored frames and landmarks at :data:`data_prep.store.DATA_VERSION`.

Tolerances cover another CPU's rounding (oneDNN and OpenCV pick kernels by instruction set),
not a change of method. To refresh after a deliberate change: bump the version, then run
``DLGA_WRITE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py`` and commit the files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_prep import store
from data_prep.preprocess import preprocess
from dlga.runs import cache as runs

GOLDEN = Path(__file__).parent / "golden"
WRITE = os.environ.get("DLGA_WRITE_GOLDEN") == "1"
ROOT = Path(__file__).resolve().parents[1]


def _check_version(kind: str, stored: int, current: int) -> None:
    if stored != current:
        pytest.fail(f"tests/golden holds {kind} version {stored}, the code declares {current}: refresh the golden "
                    "files (DLGA_WRITE_GOLDEN=1, see this module's docstring)")


def test_a_tiny_fixed_run_gives_the_golden_predictions(trained_run):
    predictions = pd.read_csv(trained_run / "predictions.csv", dtype={"video_id": str})
    got = dict(zip(predictions["video_id"], predictions["prediction"].astype(float)))
    path = GOLDEN / "run_predictions.json"
    if WRITE:
        path.write_text(json.dumps({"numerics_version": runs.NUMERICS_VERSION, "predictions": got}, indent=1, sort_keys=True) + "\n")
    golden = json.loads(path.read_text())
    _check_version("numerics", golden["numerics_version"], runs.NUMERICS_VERSION)
    assert sorted(got) == sorted(golden["predictions"])
    diff = max(abs(got[k] - golden["predictions"][k]) for k in got)
    assert diff < 0.01, (f"a tiny fixed run's predictions moved by {diff:.4f} BDI at the same NUMERICS_VERSION: "
                         "bump dlga.runs.cache.NUMERICS_VERSION and refresh the golden file")


def test_a_fixed_clip_preprocesses_to_the_golden_frames(tmp_path, face_photos, make_face_video):
    video = make_face_video(tmp_path / "clip.mp4", face_photos[4], n_frames=4, fps=10.0)
    manifest = pd.DataFrame([dict(video_id="clip", subject_id="1", session_id="clip", task="T", partition="Training",
                                  bdi=7.0, path=str(video))])
    data = store.read_video(store.video_path(preprocess(manifest, tmp_path / "out", size=64, progress=False), "clip"))
    path = GOLDEN / "data_clip.npz"
    if WRITE:
        np.savez_compressed(path, frames=data["frames"], landmarks=data["landmarks"],
                            data_version=np.int32(store.DATA_VERSION))
    with np.load(path, allow_pickle=False) as golden:
        _check_version("data", int(golden["data_version"]), store.DATA_VERSION)
        assert data["frames"].shape == golden["frames"].shape
        frame_diff = float(np.abs(data["frames"].astype(float) - golden["frames"]).mean())
        landmark_diff = float(np.abs(data["landmarks"] - golden["landmarks"]).max())
    assert frame_diff < 1.0 and landmark_diff < 0.5, (
        f"the fixed clip's frames moved by {frame_diff:.2f} grey levels (landmarks {landmark_diff:.2f} px) at the same "
        "DATA_VERSION: bump data_prep.store.DATA_VERSION and refresh the golden file")


_RUN_ID = """
import sys
from dlga.config import TrainConfig
from dlga.runs.cache import RunSpec
print(RunSpec("G", "tiny", TrainConfig.preset("ci", max_steps=3), sys.argv[1]).run_id)
"""


def test_a_comment_or_a_move_changes_no_run_id(tmp_path, trained_run):
    # A copy of the packages with a comment added to the training code and a module renamed:
    # the same spec must get the same id there as here.
    import shutil

    store_dir = json.loads((trained_run / "params.json").read_text())["store_dir"]
    copy = tmp_path / "copy"
    for package in ("dlga", "data_prep"):
        shutil.copytree(ROOT / package, copy / package, ignore=shutil.ignore_patterns("__pycache__"))
    train = copy / "dlga" / "training" / "train.py"
    train.write_text("# a comment that changes no number\n" + train.read_text())
    (copy / "dlga" / "bench.py").rename(copy / "dlga" / "benchmarks_moved.py")
    env = {**os.environ, "PYTHONPATH": ""}

    def run_id(where: Path) -> str:
        out = subprocess.run([sys.executable, "-c", _RUN_ID, store_dir], cwd=where, env=env, capture_output=True,
                             text=True, timeout=300, check=True)
        return out.stdout.strip()

    here, there = run_id(ROOT), run_id(copy)
    assert here.startswith("G-") and here == there
