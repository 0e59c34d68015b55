"""The synthetic cohort (data_prep.synthetic, data_prep.morph): layout, determinism, cues, QC.

Cohorts here are tiny (a few subjects, short videos) so that the file runs in well under a
minute on two cores; the demo-preset numbers come from ``synthetic.cohort_checks`` in the book.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from data_prep import morph, synthetic
from data_prep.synthetic import CohortConfig

SMALL = CohortConfig(n_train=3, n_dev=1, n_test=2, seconds=1.0, no_face_prob=1.0, blur_prob=0.5, name="test")
# Many subjects, few frames: the label-recovery checks need subjects, not frames.
MANY = CohortConfig(n_train=30, n_dev=6, n_test=24, seconds=0.2, no_face_prob=0.0, blur_prob=0.0, name="many")


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "small"
    synthetic.make_cohort(SMALL, out, seed=7, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "many"
    synthetic.make_cohort(MANY, out, seed=3, workers=1, progress=False)
    return out


def read_frames(path: Path) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return np.stack(frames)


# ---------------------------------------------------------------- configuration


def test_config_validates_and_round_trips():
    for name in ("ci", "demo"):
        cfg = CohortConfig.preset(name)
        assert CohortConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    demo = CohortConfig.preset("demo")
    assert demo.n_train >= 180 and demo.n_dev >= 40 and 80 <= demo.n_test <= 100
    with pytest.raises(ValueError, match="cues"):
        CohortConfig(cues=("local", "mood"))
    with pytest.raises(ValueError, match="photos_min"):
        CohortConfig(photos_min=2)
    with pytest.raises(ValueError, match="max_weight"):
        CohortConfig(max_weight=0.9)
    with pytest.raises(ValueError, match="unknown preset"):
        CohortConfig.preset("huge")
    with pytest.raises(ValueError, match="unknown CohortConfig fields"):
        CohortConfig.from_dict({"n_subjects": 3})


def test_labels_and_morphs_are_drawn_like_avec():
    cfg = CohortConfig(n_train=2000, n_dev=1, n_test=1)
    table = synthetic.draw_cohort(cfg, seed=0, n_photos=10)
    bdi = table.bdi[table.partition == "Training"]
    assert bdi.min() >= 0 and bdi.max() <= 45
    assert abs(bdi.mean() - 15) < 1.5 and abs(bdi.std() - 12) < 2
    w = table[[f"w_{j:02d}" for j in range(10)]].to_numpy()
    assert np.allclose(w.sum(1), 1)
    assert ((w > 0).sum(1) >= 3).all() and w.max() <= 0.6  # never one real person alone
    assert (w > 0).any(0).all()  # every photo is used
    assert table.session_id.is_unique and table.subject_id.is_unique


# ---------------------------------------------------------------- files and layout


def test_layout_labels_and_frame_counts(small):
    cfg = SMALL
    table = pd.read_csv(small / "cohort.csv", dtype={"session_id": str, "subject_id": str})
    assert list(table.partition.value_counts().reindex(synthetic.PARTITIONS)) == [3, 1, 2]
    for row in table.itertuples():
        label = synthetic.label_path(small, row.partition, row.session_id)
        assert label.read_text().strip() == str(row.bdi)
        for task in synthetic.TASKS:
            video = small / "Video" / row.partition / task / f"{row.session_id}_{task}_video.mp4"
            frames = read_frames(video)
            assert frames.shape == (cfg.frames_per_video, cfg.height, cfg.width, 3)
            with np.load(synthetic.landmarks_path(small, row.partition, task, row.session_id)) as z:
                lm, face = z["landmarks"], z["face"]
            assert lm.shape == (cfg.frames_per_video, 68, 2) and lm.dtype == np.float32
            assert (~face).sum() >= 3  # no_face_prob=1: every video has a stretch without a face
            assert np.isnan(lm[~face]).all() and np.isfinite(lm[face]).all()
            assert (lm[face] >= 0).all() and (lm[face][..., 0] < cfg.width).all() and (lm[face][..., 1] < cfg.height).all()
    meta = json.loads((small / "cohort.json").read_text())
    assert meta["seed"] == 7 and CohortConfig.from_dict(meta["config"]) == cfg and len(meta["photos"]) == 10


def test_avec2014_adapter_reads_the_cohort(small):
    datasets = pytest.importorskip("data_prep.datasets")
    manifest, _ = datasets.load_dataset("avec2014", small)
    assert len(manifest) == 2 * SMALL.n_sessions
    table = pd.read_csv(small / "cohort.csv", dtype={"session_id": str})
    bdi = dict(zip(table.session_id, table.bdi))
    for row in manifest.itertuples():
        assert row.bdi == bdi[row.session_id]
        assert row.partition == table.set_index("session_id").partition[row.session_id]


def test_existing_cohort_is_reused_and_a_different_one_refused(small, capsys):
    synthetic.make_cohort(SMALL, small, seed=7, workers=1, progress=False)
    assert "nothing to do" in capsys.readouterr().out
    with pytest.raises(FileExistsError, match="--force"):
        synthetic.make_cohort(SMALL, small, seed=8, workers=1, progress=False)


def test_an_interrupted_cohort_resumes_where_it_stopped(small, tmp_path, monkeypatch, capsys):
    """Subjects rendered before an interruption are kept; the rest are rendered on the next
    call, and the cohort equals one made in one go."""
    out = tmp_path / "resumed"
    render = synthetic.render_subject
    calls = []

    def flaky(job):
        calls.append(job[0])
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user's Ctrl-C while the third subject renders
        return render(job)

    monkeypatch.setattr(synthetic, "render_subject", flaky)
    with pytest.raises(KeyboardInterrupt):
        synthetic.make_cohort(SMALL, out, seed=7, workers=1, progress=False)
    assert not (out / "cohort.json").exists() and len(list((out / synthetic.PARTIAL_DIR).glob("*.json"))) == 3
    calls.clear()
    monkeypatch.setattr(synthetic, "render_subject", render_counted := lambda job: calls.append(job[0]) or render(job))
    synthetic.make_cohort(SMALL, out, seed=7, workers=1, progress=False)
    assert "resuming an interrupted cohort: 2 of 6 subjects already rendered" in capsys.readouterr().out
    assert calls == [2, 3, 4, 5] and not (out / synthetic.PARTIAL_DIR).exists()
    assert (out / "cohort.csv").read_bytes() == (small / "cohort.csv").read_bytes()
    assert (out / "videos.csv").read_bytes() == (small / "videos.csv").read_bytes()
    del render_counted


def test_same_seed_same_bytes_and_frames(small, tmp_path):
    """Same seed: identical labels (bytes), frames and ground truth, whatever the worker count."""
    again = tmp_path / "again"
    synthetic.make_cohort(SMALL, again, seed=7, workers=2, progress=False)
    labels = sorted(p.relative_to(small) for p in small.rglob("*_Depression.csv"))
    assert labels == sorted(p.relative_to(again) for p in again.rglob("*_Depression.csv"))
    for rel in labels:
        assert (small / rel).read_bytes() == (again / rel).read_bytes()
    assert (small / "cohort.csv").read_bytes() == (again / "cohort.csv").read_bytes()
    for video in sorted(small.rglob("*_video.mp4")):
        rel = video.relative_to(small)
        assert np.array_equal(read_frames(video), read_frames(again / rel)), rel
    for lm in sorted(small.rglob("*_landmarks.npz")):
        with np.load(lm) as a, np.load(again / lm.relative_to(small)) as b:
            assert np.array_equal(a["landmarks"], b["landmarks"], equal_nan=True)


# ---------------------------------------------------------------- cues


def test_single_cue_cohorts_differ_only_in_their_cue():
    both = synthetic.draw_cohort(CohortConfig(), seed=5, n_photos=10)
    local = synthetic.draw_cohort(CohortConfig(cues=("local",)), seed=5, n_photos=10)
    glob = synthetic.draw_cohort(CohortConfig(cues=("global",)), seed=5, n_photos=10)
    cue_cols = ["mouth_drop", "brow_raise", "lid_droop", "smile_factor", "pitch_cue"]
    rest = [c for c in both.columns if c not in cue_cols]
    pd.testing.assert_frame_equal(both[rest], local[rest])
    pd.testing.assert_frame_equal(both[rest], glob[rest])
    assert (local.pitch_cue == 0).all() and np.allclose(local[cue_cols[:4]], both[cue_cols[:4]])
    assert np.allclose(glob.pitch_cue, both.pitch_cue) and (glob.mouth_drop == 0).all() and (glob.smile_factor == 1).all()

    # Rendering inputs: the local cohort's landmarks differ from the global one's only at the
    # cue points, and its pitch only by the pitch cue.
    bank = synthetic._bank()
    r_local, r_glob = local.iloc[0].to_dict(), glob.iloc[0].to_dict()
    shape = synthetic.subject_shape(bank, r_local)
    diff = np.abs(synthetic.subject_landmarks(shape, r_local) - synthetic.subject_landmarks(shape, r_glob)).max(1)
    moved = set(np.flatnonzero(diff > 1e-9))
    assert moved and moved <= {48, 54, 60, 64, 49, 53, 55, 56, 58, 59, 19, 20, 21, 22, 23, 24, 37, 38, 43, 44}
    cfg_b, cfg_l = CohortConfig(), CohortConfig(cues=("local",))
    rb = both.iloc[0].to_dict()
    a_b = synthetic.animate(rb, "Northwind", cfg_b, np.random.default_rng(1))
    a_l = synthetic.animate(r_local, "Northwind", cfg_l, np.random.default_rng(1))
    assert np.allclose(a_b["pitch"] - a_l["pitch"], rb["pitch_cue"])
    for key in ("talk", "blink", "smile", "yaw", "roll", "face"):
        assert np.array_equal(a_b[key], a_l[key])


def test_mesh_does_not_fold_over_the_rendered_range():
    bank = synthetic._bank()
    ref = morph.signed_areas(morph.mesh_points(morph.canonical_reference()))
    table = synthetic.draw_cohort(CohortConfig(), seed=2, n_photos=len(bank))
    for row in table.head(5).to_dict("records"):
        base = synthetic.subject_landmarks(synthetic.subject_shape(bank, row), row)
        for talk, smile, blink in ((0, 0, 0), (0.22, 1, 1)):
            lm = synthetic.expression(base, talk, smile, blink)
            for pitch in (-10, 30):
                pts = morph.pose_mesh(morph.mesh_points(lm), pitch, 8, 5, 1.0, (320, 200))
                assert (np.sign(morph.signed_areas(pts)) == np.sign(ref)).all()


def test_label_is_recoverable_but_not_from_the_photos(many):
    cues = synthetic.session_cues(many)
    rho = spearmanr(cues.mouth_corner_drop, cues.bdi).statistic
    assert rho >= 0.5, rho
    # The pitch estimate (generic depth model fitted to the ground truth) tracks the pitch cue.
    assert spearmanr(cues.pitch_est, cues.bdi).statistic >= 0.5
    w = synthetic.weights_vs_mean(many)
    assert w["ratio"] >= 0.97, w


# ---------------------------------------------------------------- the detector on it


def test_detector_finds_faces_only_where_there_are_faces(small):
    d = synthetic.detection_check(small, max_videos=None, frame_step=2)
    assert d["frames_ok"] == d["videos"] == 2 * SMALL.n_sessions
    assert d["face_rate"] >= 0.95, d
    assert d["empty_frames"] > 0 and d["false_rate"] == 0.0, d
    # dlib's 68-point fit on these frames: median 0.03 IOD (68 points), 0.018 on the 51 inner
    # points (measured); the jaw outline slides along the contour. 0.05 is well above both and
    # below the ~0.1 IOD at which a patch centre (6/28 of the face) would visibly move.
    assert d["nme68_median"] < 0.05 and d["nme51_median"] < 0.035, d


def test_cli_makes_a_cohort(tmp_path):
    parser = argparse.ArgumentParser()
    synthetic.add_arguments(parser)
    out = tmp_path / "cli"
    args = parser.parse_args(
        ["--out", str(out), "--n-train", "2", "--n-dev", "1", "--n-test", "1", "--seconds", "0.2",
         "--cues", "local", "--workers", "1", "--seed", "4"]
    )
    assert synthetic.run(args) == 0
    meta = json.loads((out / "cohort.json").read_text())
    assert meta["config"]["cues"] == ["local"] and meta["config"]["n_train"] == 2
    assert len(list(out.rglob("*_video.mp4"))) == 8
    # A different cohort in the same folder is refused, then rewritten with --force.
    args.seed, args.n_train = 5, 1
    assert synthetic.run(args) == 2
    args.force = True
    assert synthetic.run(args) == 0
    assert json.loads((out / "cohort.json").read_text())["seed"] == 5
    assert len(list(out.rglob("*_video.mp4"))) == 6  # nothing left from the larger cohort
    bad = parser.parse_args(["--out", str(tmp_path / "bad"), "--cues", "mood"])
    assert synthetic.run(bad) == 2


# ---------------------------------------------------------------- identity: the cue model decides the cohort

TINY = CohortConfig(n_train=1, n_dev=1, n_test=1, seconds=0.2, no_face_prob=0.0, blur_prob=0.0, name="tiny")


def test_a_changed_cue_constant_makes_a_new_cohort_store_and_run_id(tmp_path, monkeypatch):
    from data_prep.datasets import load_dataset
    from data_prep.preprocess import preprocess
    from data_prep.store import store_fingerprint
    from dlga.runs.cache import RunSpec
    from dlga.config import TrainConfig

    def build(name: str):
        out = tmp_path / "cohort"
        synthetic.make_cohort(TINY, out, seed=2, workers=1, progress=False)
        meta = json.loads((out / "cohort.json").read_text())
        manifest, _ = load_dataset("avec2014", out)
        store = preprocess(manifest, tmp_path / name, size=64, sample_fps=None, progress=False)
        spec = RunSpec("G", "tiny", TrainConfig.preset("ci", max_steps=2), str(store), seed=0)
        return meta, store_fingerprint(store), spec.run_id

    key = synthetic.cohort_key(TINY, 2)
    meta, fingerprint, run_id = build("before")
    assert meta["cue_constants"]["MOUTH_PER_S"] == synthetic.MOUTH_PER_S
    assert {k: meta[k] for k in synthetic.cohort_identity(TINY, 2)} == synthetic.cohort_identity(TINY, 2)
    monkeypatch.setattr(synthetic, "MOUTH_PER_S", 2 * synthetic.MOUTH_PER_S)
    assert synthetic.cohort_key(TINY, 2) != key
    # The same folder, seed and configuration: made again by the new cue model, not reused.
    meta2, fingerprint2, run_id2 = build("after")
    assert meta2["cue_constants"]["MOUTH_PER_S"] == 2 * meta["cue_constants"]["MOUTH_PER_S"]
    assert fingerprint2 != fingerprint and run_id2 != run_id
    # A different configuration in the folder is still refused.
    with pytest.raises(FileExistsError, match="different synthetic cohort"):
        synthetic.make_cohort(TINY.replace(seconds=0.4), tmp_path / "cohort", seed=2, workers=1, progress=False)


def test_a_5_fps_cohort_shows_the_instants_a_5_fps_sampling_of_25_fps_reads():
    """The presets render at the book's sampling rate (5 fps): the expression, pose, motion and
    light of each frame are those a 25-fps video has at the same instant; the shortest
    no-face stretch is 0.12 s (3 frames at 25 fps, 1 at 5)."""
    for name in ("ci", "demo"):
        assert CohortConfig.preset(name).fps == 5
    cfg25 = CohortConfig(seconds=1.2, fps=25, no_face_prob=1.0, blur_prob=1.0)
    cfg5 = cfg25.replace(fps=5)
    bank = synthetic._bank()
    row = synthetic.draw_cohort(cfg25, 0, len(bank)).iloc[0].to_dict()
    a25 = synthetic.animate(row, "Freeform", cfg25, np.random.default_rng(7))
    a5 = synthetic.animate(row, "Freeform", cfg5, np.random.default_rng(7))
    assert len(a25["talk"]) == 30 and len(a5["talk"]) == 6
    for key in ("talk", "blink", "smile", "pitch", "yaw", "roll", "scale", "cx", "cy", "gain"):
        np.testing.assert_allclose(a5[key], a25[key][::5], rtol=1e-12, atol=1e-12, err_msg=key)
    assert 3 <= int((~a25["face"]).sum()) <= 9 and 1 <= int((~a5["face"]).sum()) <= 2
    assert 1 <= int(a5["blurred"].sum()) <= 3
