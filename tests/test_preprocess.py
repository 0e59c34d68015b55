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
    assert qc.loc["304_1_Freeform", "reason"] == ("no face found in any of 4 sampled frames (640x480 frames; a face "
                                                  "smaller than about 80 pixels is not found)")
    for vid in ("302_1_Freeform", "303_1_Freeform", "305_1_Freeform"):
        assert qc.loc[vid, "status"] == "failed"
        assert "cannot open" in qc.loc[vid, "reason"] or "no frame could be decoded" in qc.loc[vid, "reason"]
    manifest = store.read_manifest(store_dir)
    assert manifest.video_id.tolist() == ["203_1_Freeform", "204_1_Freeform", "205_1_Freeform"]
    assert manifest.npz.tolist() == [f"videos/{v}.npz" for v in manifest.video_id]
    for _, row in manifest.iterrows():
        data = store.read_video(store_dir / row.npz)
        # Frame 2 shows no face: the last box is not verified there, the frame is not stored.
        assert data["frames"].shape == (5, 64, 64, 3) and data["landmarks"].shape == (5, 68, 2)
        assert data["frame_index"].tolist() == [0, 1, 3, 4, 5] and row.n_frames == 5
        assert data["how"].tolist() == ["detected"] * 5
        assert data["score"] == row.bdi
    assert qc.loc["203_1_Freeform", ["detected", "reused", "none"]].tolist() == [5, 0, 1]
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
    assert summary.loc["Training", "frames_kept"] == 3 and summary.loc["Training", "detection_rate"] == 0.75
    img = cv2.imread(str(store_dir / "qc_report" / "montage.png"))
    assert img.shape == (2 * 112, 3 * 112, 3)


# --- OpenFace outputs and the cascade fallback ------------------------------------------------


def write_openface_output(csv_path: Path, frames_rgb, landmarks, fps=10.0, success0=(), low_conf=(), aligned_side=112):
    """An OpenFace FeatureExtraction output made here: ``<name>.csv`` (", "-separated, 1-based
    ``frame``) and ``<name>_aligned/frame_det_00_<frame>.bmp`` aligned the way OpenFace does it: a
    similarity from the rigid landmarks to one fixed reference shape (ours, shrunk and shifted so
    that it is *not* our template)."""
    from data_prep.align import similarity_transform, template
    from data_prep.openface import OPENFACE_RIGID

    cols = ["frame", "face_id", "timestamp", "confidence", "success"] + [f"x_{i}" for i in range(68)] + [f"y_{i}" for i in range(68)]
    lines = [", ".join(cols)]
    for i, pts in enumerate(landmarks):
        conf, ok = (0.3 if i in low_conf else 0.98), (0 if i in success0 else 1)
        vals = [i + 1, 0, f"{i / fps:.3f}", conf, ok] + [f"{v:.3f}" for v in pts[:, 0]] + [f"{v:.3f}" for v in pts[:, 1]]
        lines.append(", ".join(str(v) for v in vals))
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    csv_path.write_text("\n".join(lines) + "\n")
    folder = csv_path.parent / f"{csv_path.stem}_aligned"
    folder.mkdir(exist_ok=True)
    c = aligned_side / 2
    ref = (template(aligned_side)[OPENFACE_RIGID] - c) * 0.85 + c + np.array([3.0, -4.0])
    for i, (rgb, pts) in enumerate(zip(frames_rgb, landmarks)):
        m = similarity_transform(pts[OPENFACE_RIGID], ref)
        img = cv2.warpAffine(rgb, m, (aligned_side, aligned_side), flags=cv2.INTER_LINEAR)
        cv2.imwrite(str(folder / f"frame_det_00_{i + 1:06d}.bmp"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return csv_path


def test_openface_outputs_are_preprocessed_with_their_landmarks(tmp_path, face_photos, make_face_video):
    from data_prep.align import eye_centres, template
    from data_prep.datasets import load_dataset
    from data_prep.faces import LandmarkDetector
    from data_prep.openface import source_video
    from data_prep.video import iter_sampled_frames

    of = tmp_path / "of"
    of.mkdir()
    video = make_face_video(of / "A.mp4", face_photos[3], n_frames=10, fps=10.0)
    det = LandmarkDetector()
    frames = [rgb for _, rgb in iter_sampled_frames(video, None)]
    marks = [det.detect_landmarks(rgb) for rgb in frames]  # stand-ins for OpenFace's landmarks
    assert len(frames) == 10 and all(m is not None for m in marks)
    # A: the source video sits next to the CSV. B: only the CSV and the aligned images.
    write_openface_output(of / "A.csv", frames, marks, success0=(2,), low_conf=(6,))
    write_openface_output(of / "B.csv", frames, marks, success0=(4,))
    assert source_video(of / "A.csv") == video and source_video(of / "B.csv") is None
    (of / "C_of_details.txt").write_text(f"Input:{video}\nCamera parameters:500,500,320,240\n")
    assert source_video(of / "C.csv") == video

    pd.DataFrame({"video_id": ["A", "B"], "subject_id": ["1", "2"], "task": ["T", "T"],
                  "partition": ["Training", "Testing"], "bdi": [3, 30]}).to_csv(tmp_path / "labels.csv", index=False)
    manifest, _ = load_dataset("openface", of, labels=tmp_path / "labels.csv", require_partitions=("Training", "Testing"))
    store_dir = preprocess(manifest, tmp_path / "out", size=96, sample_fps=5, dataset="openface", progress=False)
    params = store.read_manifest(store_dir)  # both videos made it
    assert params.video_id.tolist() == ["A", "B"] and params.n_frames.tolist() == [3, 4]
    qc = read_qc(store_dir).set_index("video_id")
    # Sampled at 5 of 10 frames/s: frames 0, 2, 4, 6, 8. A drops 2 (success 0) and 6 (confidence 0.3).
    assert qc.loc["A", ["faces_from", "frames_sampled", "openface", "dropped", "none", "detected"]].tolist() == [
        "openface-video", 5, 3, 2, 0, 0]
    assert qc.loc["B", ["faces_from", "frames_sampled", "openface", "dropped", "none"]].tolist() == ["openface-aligned", 5, 4, 1, 0]
    assert qc.loc["A", "detection_rate"] == 0.6 and qc.loc["B", "fps"] == pytest.approx(10.0)
    tpl_eyes = eye_centres(template(96))
    for vid, index in (("A", [0, 4, 8]), ("B", [0, 2, 6, 8])):
        data = store.read_video(store.video_path(store_dir, vid))
        assert data["frame_index"].tolist() == index
        assert data["frames"].shape == (len(index), 96, 96, 3) and data["landmarks"].shape == (len(index), 68, 2)
        assert np.abs(eye_centres(data["landmarks"]) - tpl_eyes).max() < 1.0
        # The stored landmarks sit on the face in the stored frames: dlib agrees within a few px.
        again = LandmarkDetector(detect_max_side=None, upsample=1).detect_landmarks(data["frames"][0])
        assert again is not None and np.abs(eye_centres(again) - eye_centres(data["landmarks"][0])).max() < 3.0
    a, b = (store.read_video(store.video_path(store_dir, v)) for v in ("A", "B"))
    assert a["score"] == 3.0
    # Frame 8 through the aligned image (B) matches frame 8 from the video (A) where B has pixels.
    np.testing.assert_allclose(a["landmarks"][2], b["landmarks"][3], atol=0.05)
    diff = np.abs(a["frames"][2, 24:72, 24:72].astype(float) - b["frames"][3, 24:72, 24:72]).mean()
    assert diff < 8.0
    assert read_params(store_dir)["openface_min_confidence"] == 0.8
    # Everything dropped: a clear reason in QC.
    write_openface_output(of / "A.csv", frames, marks, success0=range(10))
    qc = process_video(manifest.iloc[0], tmp_path / "alone", make_params(size=32))
    assert qc["status"] == "failed" and qc["dropped"] == 10 and "10 dropped for OpenFace's success or confidence" in qc["reason"]


def read_params(store_dir: Path) -> dict:
    import json

    return json.loads((store_dir / "params.json").read_text())


def test_cascade_fallback_when_hog_finds_no_face(tmp_path, face_photos, make_face_video, monkeypatch):
    from data_prep.align import eye_centres, template
    from data_prep.faces import LandmarkDetector

    assert "fallback" not in make_params() and "openface_min_confidence" not in make_params()  # store keys unchanged
    assert make_params(fallback="cascade")["fallback"] == "cascade"
    with pytest.raises(ValueError, match="fallback"):
        make_params(fallback="haar")
    video = make_face_video(tmp_path / "v.mp4", face_photos[1], n_frames=5, fps=10.0, blank=(3,))
    row = dict(video_id="v", subject_id="1", session_id="v", task="T", partition="Training", bdi=7.0, path=str(video))
    det = LandmarkDetector(fallback="cascade")
    monkeypatch.setattr(det, "detect", lambda image: [])  # HOG never finds the face
    qc = process_video(row, tmp_path / "s", make_params(size=64, fallback="cascade"), det)
    assert qc["status"] == "ok" and qc["faces_from"] == "dlib"
    assert [qc[k] for k in ("detected", "cascade", "reused", "none")] == [0, 4, 0, 1]  # frame 3 has no face
    assert qc["detection_rate"] == 0.8
    data = store.read_video(store.video_path(tmp_path / "s", "v"))
    assert data["frame_index"].tolist() == [0, 1, 2, 4] and data["how"].tolist() == ["cascade"] * 4
    assert np.abs(eye_centres(data["landmarks"]) - eye_centres(template(64))).max() < 1.5
    plain = LandmarkDetector()
    monkeypatch.setattr(plain, "detect", lambda image: [])
    qc = process_video(row, tmp_path / "s2", make_params(size=64), plain)
    assert qc["status"] == "failed" and qc["none"] == 5 and qc["cascade"] == 0


def test_data_workers_do_not_import_the_parents_main(tmp_path):
    # A parent run as `python -m dlga.book` would make every spawned worker import the book and
    # TensorFlow; the data path's pools leave __main__ out, and restore it afterwards.
    script = tmp_path / "heavy_main.py"
    script.write_text(
        "import math, multiprocessing, os, sys\n"
        "from pathlib import Path\n"
        "if __name__ == '__mp_main__':  # a spawned child importing its parent's main\n"
        "    Path(os.environ['MARK']).write_text('imported')\n"
        "if __name__ == '__main__':\n"
        "    from data_prep.workers import spawn_context\n"
        "    with spawn_context() as ctx, ctx.Pool(1) as pool:\n"
        "        assert pool.map(math.sqrt, [4.0]) == [2.0]\n"
        "    print('after', Path(os.environ['MARK']).exists(), __file__ == sys.argv[0], flush=True)\n"
        "    with multiprocessing.get_context('spawn').Pool(1) as pool:  # the plain way, for contrast\n"
        "        pool.map(math.sqrt, [9.0])\n"
        "    print('plain', Path(os.environ['MARK']).exists(), flush=True)\n"
    )
    mark = tmp_path / "mark"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "MARK": str(mark)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["after False True", "plain True"]
