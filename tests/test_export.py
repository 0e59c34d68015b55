"""Exporting a trained run (dlga.inference.export, `python -m dlga export`) and using the export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from data_prep.store import read_manifest, read_video, video_path
from dlga import __main__ as cli
from dlga.inference.export import export_run
from data_prep import origin
from dlga.inference.exportdir import EXPORT_FORMAT_VERSION, EXPORT_METADATA, EXPORT_NOTICE, read_metadata
from dlga.inference.notice import RESEARCH_NOTICE, SYNTHETIC_NOTICE, UNKNOWN_NOTICE, notice
from dlga.inference.predict import load_predictor, load_trained_model, predict_video
from dlga.runs.rundir import RunError

TOL = 1e-5

# Runs in a fresh interpreter from /tmp with no PYTHONPATH: only TensorFlow and numpy.
LOAD_WITHOUT_PROJECT = """
import sys, numpy as np, tensorflow as tf
model_dir, inputs_path, outputs_path = sys.argv[1:]
x = np.load(inputs_path)
loaded = tf.saved_model.load(model_dir)
out = loaded.signatures["serving_default"](image=tf.constant(x["image"]), landmarks=tf.constant(x["landmarks"]))
np.savez(outputs_path, **{k: v.numpy() for k, v in out.items()})
assert not any(m.split(".")[0] in ("dlga", "data_prep") for m in sys.modules), "the project was imported"
"""


@pytest.fixture(scope="module")
def reference(trained_run):
    """Inputs (10 frames of the store at the model's size) and the restored model's outputs."""
    model, config, _ = load_trained_model(trained_run)
    store_dir = json.loads((trained_run / "params.json").read_text())["store_dir"]
    ids = read_manifest(store_dir)["video_id"][:3]
    data = [read_video(video_path(store_dir, v)) for v in ids]
    image = np.concatenate([d["frames"] for d in data])[:10].astype(np.float32)
    landmarks = np.concatenate([d["landmarks"] for d in data])[:10].astype(np.float32)
    outputs = {k: np.asarray(v) for k, v in model({"image": image, "landmarks": landmarks}, training=False).items()}
    assert image.shape == (10, config.input_size, config.input_size, 3)
    return {"image": image, "landmarks": landmarks}, outputs


def test_savedmodel_loads_without_the_project_and_matches(trained_run, reference, tmp_path):
    inputs, expected = reference
    out = export_run(trained_run, tmp_path / "exports" / "G", "savedmodel")
    meta = json.loads((out / "assets.extra" / EXPORT_METADATA).read_text())
    assert meta["format_version"] == 1 and meta["preprocessing"]["size"] == 64 and meta["input_size"] == 64
    assert meta["outputs"] == ["global_attention", "local_attention", "score"]
    # The run learned from synthetic faces: the export's files say so.
    assert meta["training_data"]["kind"] == "synthetic" and meta["notice"] == f"{SYNTHETIC_NOTICE}; {RESEARCH_NOTICE}"
    text = (out / "assets.extra" / EXPORT_NOTICE).read_text()
    assert "training data: synthetic (toy; data_prep.toystore" in text
    assert f"\n{SYNTHETIC_NOTICE}\n{RESEARCH_NOTICE}\n" in text
    np.savez(tmp_path / "inputs.npz", **inputs)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_PROJECT, str(out), str(tmp_path / "inputs.npz"), str(tmp_path / "o.npz")],
        cwd="/tmp", env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(tmp_path / "o.npz")
    assert sorted(got.files) == sorted(expected) == ["global_attention", "local_attention", "score"]
    for key in expected:
        assert got[key].shape == expected[key].shape
        np.testing.assert_allclose(got[key], expected[key], atol=TOL, rtol=0)
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_run(trained_run, out, "savedmodel")
    # An export written before training_data was kept: its scores say the training data are unknown.
    assert read_metadata(out)[0] == meta
    old = {k: v for k, v in meta.items() if k not in ("training_data", "notice")}
    (out / "assets.extra" / EXPORT_METADATA).write_text(json.dumps(old))
    unknown = load_predictor(out).training_data
    assert unknown["kind"] == "unknown" and "records no training data (exported before it was kept)" in unknown["evidence"]
    assert notice(unknown) == f"{UNKNOWN_NOTICE}; {RESEARCH_NOTICE}"
    # An export of another format version is refused by the reader, with what to do.
    (out / "assets.extra" / EXPORT_METADATA).write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(RunError, match=f"version 99, this code reads 'dlga-export' version {EXPORT_FORMAT_VERSION}; "
                                       "export the run again"):
        load_predictor(out)


def test_keras_export_matches_and_predicts_like_the_run(trained_run, reference, tmp_path, face_photos, make_face_video):
    import keras

    import dlga.model.layers  # noqa: F401  the .keras format needs the custom layers registered

    inputs, expected = reference
    out = export_run(trained_run, tmp_path / "model", "keras")
    assert out.name == "model.keras"
    assert {EXPORT_METADATA, EXPORT_NOTICE} <= set(zipfile.ZipFile(out).namelist())
    assert SYNTHETIC_NOTICE in zipfile.ZipFile(out).read(EXPORT_NOTICE).decode()
    model = keras.models.load_model(out, compile=False)
    got = model(inputs, training=False)
    for key in expected:
        np.testing.assert_allclose(np.asarray(got[key]), expected[key], atol=TOL, rtol=0)
    # A video scored through the export and through the run gets the same estimate.
    video = make_face_video(tmp_path / "v.mp4", face_photos[1], n_frames=3)
    by_run = predict_video(video, load_predictor(trained_run))
    by_export = predict_video(video, load_predictor(out))
    np.testing.assert_allclose(by_export.frames["prediction"], by_run.frames["prediction"], atol=TOL, rtol=0)
    assert by_export.band == by_run.band
    assert by_export.training_data == by_run.training_data and by_export.training_data["kind"] == "synthetic"


def test_export_of_a_model_of_real_recordings_carries_only_the_research_notice(relabel_run, tmp_path, capsys):
    run = relabel_run(tmp_path / "avec_run", origin.origin_record(origin.REAL, "avec2014", "a test's record"))
    assert cli.main(["export", str(run), "--format", "keras", "--out", str(tmp_path / "m")]) == 0
    assert f"training data: real (avec2014; a test's record)\nnote: {RESEARCH_NOTICE}\n" in capsys.readouterr().out
    meta, _ = read_metadata(tmp_path / "m.keras")
    assert meta["training_data"]["kind"] == "real" and meta["notice"] == RESEARCH_NOTICE
    text = zipfile.ZipFile(tmp_path / "m.keras").read(EXPORT_NOTICE).decode()
    assert text.endswith(f"\n{RESEARCH_NOTICE}\n") and "SYNTHETIC" not in text


def test_export_cli(trained_run, tmp_path, capsys, face_photos, make_face_video):
    target = tmp_path / "sm"
    assert cli.main(["export", str(trained_run), "--format", "savedmodel", "--out", str(target)]) == 0
    printed = capsys.readouterr().out
    assert (target / "saved_model.pb").is_file() and "exported" in printed
    assert f"note: {SYNTHETIC_NOTICE}; {RESEARCH_NOTICE}\n" in printed
    assert cli.main(["export", str(trained_run), "--out", str(target)]) == 2
    assert "exists; choose another --out or pass --overwrite" in capsys.readouterr().err
    assert cli.main(["export", str(trained_run), "--out", str(target), "--overwrite"]) == 0
    # predict --model reads the SavedModel with its recorded preprocessing.
    video = make_face_video(tmp_path / "v.mp4", face_photos[2], n_frames=3)
    capsys.readouterr()
    assert cli.main(["predict", str(video), "--model", str(target)]) == 0
    by_model = capsys.readouterr().out
    assert cli.main(["predict", str(video), "--run", str(trained_run)]) == 0
    assert capsys.readouterr().out == by_model and "BDI-II" in by_model
    assert f"  note: {SYNTHETIC_NOTICE}; {RESEARCH_NOTICE}" in by_model  # the export's scores say it too
    assert cli.main(["export", str(tmp_path / "not_a_run"), "--out", str(tmp_path / "x")]) == 2
    assert "no such run directory" in capsys.readouterr().err
