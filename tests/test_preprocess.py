"""Preprocessing into the store: bad inputs, resumption, parameter folders, QC (data_prep.preprocess)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from data_prep import __main__ as cli
from data_prep import store
from data_prep.preprocess import preprocess, process_video, make_params, read_qc

ROOT = Path(__file__).resolve().parents[1]


def build_avec(root: Path, face_photos, make_face_video, n_frames=6, extra=True) -> Path:
    """A small AVEC2014 tree with three good videos and (``extra``) every kind of bad one."""
    good = [("Training", "203_1", 0), ("Development", "204_1", 1), ("Testing", "205_1", 2)]
    for part, sid, k in good:
        d = root / "Video" / part / "Freeform"
        d.mkdir(parents=True, exist_ok=True)
        make_face_video(d / f"{sid}_Freeform_video.mp4", face_photos[k], n_frames=n_frames, blank=(2,))
    bad = {}
    if extra:
        d = root / "Video" / "Training" / "Freeform"
        (d / "301_1_Freeform_video.mp4").write_bytes(b"")  # zero bytes
        data = (root / "Video" / "Training" / "Freeform" / "203_1_Freeform_video.mp4").read_bytes()
        (d / "302_1_Freeform_video.mp4").write_bytes(data[: len(data) // 2])  # truncated
        (d / "303_1_Freeform_video.mp4").write_bytes(np.random.default_rng(0).bytes(5000))  # garbage
        w = cv2.VideoWriter(str(d / "304_1_Freeform_video.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (640, 480))
        for _ in range(4):
            w.write(np.full((480, 640, 3), 90, np.uint8))  # no face
        w.release()
        w = cv2.VideoWriter(str(d / "305_1_Freeform_video.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (640, 480))
        w.release()  # no frame at all: shorter than one sample
        bad = {"301_1": "empty file (0 bytes)", "302_1": "", "303_1": "", "304_1": "no face found in any of 4 sampled frames",
               "305_1": ""}
    labels = root / "labels"
    labels.mkdir(parents=True, exist_ok=True)
    for i, sid in enumerate([g[1] for g in good] + list(bad)):
        (labels / f"{sid}_Depression.csv").write_text(str(5 + i))
    return root


def test_bad_inputs_are_reported_and_never_stop_the_others(tmp_path, face_photos, make_face_video, capsys):
    root = build_avec(tmp_path / "d", face_photos, make_face_video)
    args = ["preprocess", "--dataset", "avec2014", "--root", str(root), "--out", str(tmp_path / "out"), "--size", "64", "--quiet"]
    assert cli.main(args) == 1
    text = capsys.readouterr().out
    assert "5 video(s) failed" in text and "--allow-failures" in text
    (store_dir,) = (tmp_path / "out").iterdir()
    qc = read_qc(store_dir).set_index("video_id")
    assert qc.loc["301_1_Freeform", "reason"] == "empty file (0 bytes)"
    assert qc.loc["304_1_Freeform", "reason"] == "no face found in any of 4 sampled frames"
    for vid in ("302_1_Freeform", "303_1_Freeform", "305_1_Freeform"):
        assert qc.loc[vid, "status"] == "failed"
        assert "cannot open" in qc.loc[vid, "reason"] or "no frame could be decoded" in qc.loc[vid, "reason"]
    manifest = store.read_manifest(store_dir)
    assert manifest.video_id.tolist() == ["203_1_Freeform", "204_1_Freeform", "205_1_Freeform"]
    assert manifest.npz.tolist() == [f"videos/{v}.npz" for v in manifest.video_id]
    for _, row in manifest.iterrows():
        data = store.read_video(store_dir / row.npz)
        assert data["frames"].shape == (6, 64, 64, 3) and data["landmarks"].shape == (6, 68, 2)
        assert data["frame_index"].tolist() == list(range(6)) and row.n_frames == 6
        assert data["score"] == row.bdi
    assert qc.loc["203_1_Freeform", ["detected", "reused", "none"]].tolist() == [5, 1, 0]
    assert cli.main(args + ["--allow-failures"]) == 0  # and the rerun skips everything finished


def test_sampling_alignment_and_parameter_folders(tmp_path, face_photos, make_face_video):
    video = make_face_video(tmp_path / "v.mp4", face_photos[4], n_frames=10, fps=10.0)
    row = dict(video_id="v", subject_id="1", session_id="v", task="T", partition="Training", bdi=7.0, path=str(video))
    manifest = pd.DataFrame([row])
    a = preprocess(manifest, tmp_path / "out", size=96, sample_fps=4, progress=False)
    data = store.read_video(store.video_path(a, "v"))
    assert data["frame_index"].tolist() == [0, 3, 5, 8]  # first frame at or after k / 4 s
    assert data["frames"].shape == (4, 96, 96, 3)
    from data_prep.align import eye_centres, template

    assert np.abs(eye_centres(data["landmarks"]) - eye_centres(template(96))).max() < 2.0
    b = preprocess(manifest, tmp_path / "out", size=96, sample_fps=5, progress=False)
    assert a != b and a.parent == b.parent and (a / "params.json").is_file()
    assert preprocess(manifest, tmp_path / "out", size=96, sample_fps=4, progress=False) == a
    qc = process_video(row, tmp_path / "alone", make_params(size=32))
    assert qc["status"] == "ok" and qc["frames_kept"] == 10
    with pytest.raises(ValueError, match="sample_fps"):
        make_params(sample_fps=0)


def _npz_contents(store_dir: Path) -> dict:
    out = {}
    for p in sorted((store_dir / "videos").glob("*.npz")):
        d = store.read_video(p)
        out[p.name] = d
    return out


def test_killed_run_resumes_to_the_same_files(tmp_path, face_photos, make_face_video):
    root = tmp_path / "d"
    sessions = [("Training", "203_1", 0), ("Training", "203_2", 1), ("Development", "204_1", 2), ("Testing", "205_1", 3),
                ("Testing", "206_1", 5)]
    for part, sid, k in sessions:
        d = root / "Video" / part / "Freeform"
        d.mkdir(parents=True, exist_ok=True)
        make_face_video(d / f"{sid}_Freeform_video.mp4", face_photos[k], n_frames=40, fps=20.0)
        (root / f"{sid}_Depression.csv").write_text(str(k + 10))
    cmd = [sys.executable, "-m", "data_prep", "preprocess", "--dataset", "avec2014", "--root", str(root), "--size", "64", "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd + ["--out", str(tmp_path / "killed")], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    done = []
    while time.time() < deadline and not done:
        done = list((tmp_path / "killed").glob("*/qc/*.json"))
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert done, "the first video never finished"
    (killed_dir,) = (tmp_path / "killed").iterdir()
    finished_before = len(list((killed_dir / "qc").glob("*.json")))
    assert 1 <= finished_before < 5, "the run was not interrupted halfway"
    assert not (killed_dir / "manifest.csv").exists()
    subprocess.run(cmd + ["--out", str(tmp_path / "killed")], env=env, cwd=ROOT, check=True, capture_output=True)
    subprocess.run(cmd + ["--out", str(tmp_path / "clean")], env=env, cwd=ROOT, check=True, capture_output=True)
    (clean_dir,) = (tmp_path / "clean").iterdir()
    assert killed_dir.name == clean_dir.name
    a, b = _npz_contents(killed_dir), _npz_contents(clean_dir)
    assert sorted(a) == sorted(b) and len(a) == 5
    for name in a:
        for key in store.VIDEO_KEYS:
            np.testing.assert_array_equal(a[name][key], b[name][key])
    assert (killed_dir / "manifest.csv").read_text() == (clean_dir / "manifest.csv").read_text()
    assert not list(killed_dir.rglob("*.tmp"))


def test_qc_report(tmp_path, face_photos, make_face_video, capsys):
    root = build_avec(tmp_path / "d", face_photos, make_face_video, n_frames=4, extra=False)
    from data_prep.datasets import load_dataset

    manifest, _ = load_dataset("avec2014", root)
    store_dir = preprocess(manifest, tmp_path / "out", size=64, progress=False)
    assert cli.main(["qc", str(store_dir), "--videos", "2", "--per-video", "3"]) == 0
    assert "lowest detection rates" in capsys.readouterr().out
    summary = pd.read_csv(store_dir / "qc_report" / "qc_summary.csv").set_index("partition")
    assert summary.loc["Training", "frames_kept"] == 4 and summary.loc["Training", "detection_rate"] == 1.0
    img = cv2.imread(str(store_dir / "qc_report" / "montage.png"))
    assert img.shape == (2 * 112, 3 * 112, 3)
