"""Scoring videos with a trained run (dlga.inference.predict, `python -m dlga predict`)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest

from data_prep.store import read_manifest, read_video, video_path
from data_prep.video import iter_sampled_frames
from dlga import __main__ as cli
from dlga.book import models
from dlga.training import data as data_lib
from dlga.training.metrics import BAND_NAMES, severity_band
from data_prep import origin
from dlga.inference import predict as predict_module
from dlga.inference.notice import RESEARCH_NOTICE, SYNTHETIC_NOTICE, UNKNOWN_NOTICE, notice
from dlga.inference.predict import (
    ATTENTION_COLUMNS, PredictError, RunError, load_predictor, load_trained_model, notice_band, predict_frames,
    predict_video, run_preprocessing, source_patch_centres, validate_preprocessing, write_overlay,
)
from dlga.runs.rundir import load_run


def _frames(path) -> list[np.ndarray]:
    """Every decoded frame, RGB."""
    return [rgb for _, rgb in iter_sampled_frames(path, None)]


def _frame_count(path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


@pytest.fixture
def notices_drawn(monkeypatch):
    """The lines each overlay frame's notice band got (one tuple per frame written)."""
    calls = []
    draw = predict_module.draw_notice

    def spy(bgr, lines):
        calls.append(tuple(lines))
        draw(bgr, lines)

    monkeypatch.setattr(predict_module, "draw_notice", spy)
    return calls


def _assert_notice_band(overlay, video, lines):
    """The overlay's bottom band is the notice (black, yellow text) on every frame, where the source is grey."""
    got, source = _frames(overlay), _frames(video)
    _, _, band = notice_band(lines, got[0].shape[1])
    for frame, src in zip(got, source):
        region = frame[-band:].astype(int)
        assert np.abs(src[-band:].astype(int) - 90).mean() < 5  # the source's background there
        assert region.mean() < 45  # black band
        yellow = (region[..., 0] > 150) & (region[..., 1] > 150) & (region[..., 2] < 110)  # RGB
        assert yellow.sum() > 50 * len(lines), "no notice text drawn in the band"


def test_restored_model_reproduces_the_runs_own_predictions(trained_run):
    model, config, prep = load_trained_model(trained_run)
    assert config.input_size == 64 and config.local and config.global_ and prep["size"] == 64
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert config.warm_start_bias == metrics["model_config"]["warm_start_bias"] != 0
    # The store's Testing videos, scored through predict_frames, give the run's predictions.csv.
    store_dir = json.loads((trained_run / "params.json").read_text())["store_dir"]
    expected = pd.read_csv(trained_run / "predictions.csv", dtype={"video_id": str}).set_index("video_id")
    for video_id in read_manifest(store_dir).query("partition == 'Testing'")["video_id"]:
        data = read_video(video_path(store_dir, video_id))
        table = predict_frames(model, data["frames"], data["landmarks"], config.input_size)
        assert list(table.columns) == ["prediction", *ATTENTION_COLUMNS, "global_attention"]
        assert table["prediction"].mean() == pytest.approx(expected.loc[video_id, "prediction"], abs=1e-4)
        assert ((table[list(ATTENTION_COLUMNS)] > 0) & (table[list(ATTENTION_COLUMNS)] < 1)).all().all()
    with pytest.raises(ValueError, match=r"landmarks must be \(N, 68, 2\)"):
        predict_frames(model, data["frames"], data["landmarks"][:1], 64)


def test_cli_scores_a_video_writes_csv_and_overlay(trained_run, face_photos, make_face_video, tmp_path, capsys,
                                                   notices_drawn):
    video = make_face_video(tmp_path / "talk.mp4", face_photos[0], n_frames=6, blank=(2,))
    csv, overlay = tmp_path / "frames.csv", tmp_path / "out" / "talk_overlay.mp4"
    assert cli.main(["predict", str(video), "--run", str(trained_run), "--out", str(csv), "--overlay", str(overlay)]) == 0
    out = capsys.readouterr().out
    frames = pd.read_csv(csv)
    assert list(frames.columns) == ["video", "frame_index", "how", "prediction", *ATTENTION_COLUMNS, "global_attention",
                                    "training_data", "notice"]
    # The blank frame 2 shows no face: the last box is not verified there, so it is not scored.
    assert frames["frame_index"].tolist() == [0, 1, 3, 4, 5] and set(frames["how"]) == {"detected"}
    score = frames["prediction"].mean()
    band = BAND_NAMES[int(severity_band([score])[0])]
    assert f"{video}: BDI-II {score:.1f} ({band}); 5 of 6 sampled frames with a face" in out
    assert _frame_count(overlay) == _frame_count(video) == 6
    assert not list(overlay.parent.glob(".*tmp*"))
    # The run learned from the toy store's synthetic faces: every output says so.
    assert "training data: synthetic (toy; data_prep.toystore" in out
    assert f"with a face\n  note: {SYNTHETIC_NOTICE}; {RESEARCH_NOTICE}\n" in out
    assert set(frames["training_data"]) == {"synthetic"}
    assert set(frames["notice"]) == {f"{SYNTHETIC_NOTICE}; {RESEARCH_NOTICE}"}
    assert notices_drawn == [(SYNTHETIC_NOTICE, RESEARCH_NOTICE)] * 6
    _assert_notice_band(overlay, video, (SYNTHETIC_NOTICE, RESEARCH_NOTICE))


def test_a_model_of_real_recordings_carries_only_the_research_notice(relabel_run, face_photos, make_face_video,
                                                                     tmp_path, capsys, notices_drawn):
    run = relabel_run(tmp_path / "avec_run", origin.origin_record(origin.REAL, "avec2014", "a test's record"))
    video = make_face_video(tmp_path / "v.mp4", face_photos[1], n_frames=3)
    csv, overlay = tmp_path / "frames.csv", tmp_path / "o.mp4"
    assert cli.main(["predict", str(video), "--run", str(run), "--out", str(csv), "--overlay", str(overlay)]) == 0
    out = capsys.readouterr().out
    assert "training data: real (avec2014; a test's record)" in out and f"  note: {RESEARCH_NOTICE}\n" in out
    assert "SYNTHETIC" not in out and "unknown" not in out
    frames = pd.read_csv(csv)
    assert set(frames["training_data"]) == {"real"} and set(frames["notice"]) == {RESEARCH_NOTICE}
    assert notices_drawn == [(RESEARCH_NOTICE,)] * 3
    _assert_notice_band(overlay, video, (RESEARCH_NOTICE,))


def test_runs_without_a_record_infer_it_from_their_store_or_say_unknown(trained_run, relabel_run, tmp_path):
    store = json.loads((trained_run / "params.json").read_text())["store_dir"]
    assert load_predictor(trained_run).training_data == origin.origin_record(
        origin.SYNTHETIC, "toy", "data_prep.toystore: drawn ovals, not faces")
    # An older run: no record, but its store (the toy store, origin.json) is there.
    older = load_predictor(relabel_run(tmp_path / "older", None)).training_data
    assert older["kind"] == "synthetic" and older["evidence"].startswith(f"not recorded by the run; store {store}")
    # ... and its store is gone: unknown, and the outputs say it cannot tell.
    gone = relabel_run(tmp_path / "gone", None, store_dir=str(tmp_path / "no_store"))
    predictor = load_predictor(gone)
    assert predictor.training_data["kind"] == "unknown"
    assert "records no training data" in predictor.training_data["evidence"]
    assert notice(predictor.training_data) == f"{UNKNOWN_NOTICE}; {RESEARCH_NOTICE}"
    # A damaged record counts as none.
    damaged = relabel_run(tmp_path / "damaged", {"kind": "maybe"}, store_dir=str(tmp_path / "no_store"))
    assert load_predictor(damaged).training_data["kind"] == "unknown"


def test_store_origin_is_recorded_by_preprocess_and_inferred_for_older_stores(face_photos, make_face_video, tmp_path):
    from data_prep.preprocess import preprocess

    # preprocess records it: a video inside a synthetic cohort folder (its cohort.json) is synthetic.
    cohort = tmp_path / "cohort"
    (cohort / "Video" / "Training" / "Freeform").mkdir(parents=True)
    (cohort / origin.COHORT_FILE).write_text(json.dumps({"version": 1, "seed": 0, "config": {}}))
    clip = make_face_video(cohort / "Video" / "Training" / "Freeform" / "1_1_Freeform_video.mp4", face_photos[4],
                           n_frames=2)
    manifest = pd.DataFrame([dict(video_id="1_1_Freeform", subject_id="1", session_id="1_1", task="Freeform",
                                  partition="Training", bdi=7.0, path=str(clip))])
    made = preprocess(manifest, tmp_path / "stores", size=64, dataset="avec2014", progress=False)
    recorded = json.loads((made / origin.ORIGIN_FILE).read_text())
    assert recorded["kind"] == "synthetic" and str(cohort) in recorded["evidence"]
    assert origin.store_origin(made) == recorded
    # Videos outside a cohort are real; the book's synthetic store names are synthetic.
    elsewhere = make_face_video(tmp_path / "2_1_Freeform_video.mp4", face_photos[5], n_frames=2)
    assert origin.manifest_origin([str(elsewhere)], "avec2014")["kind"] == "real"
    assert origin.manifest_origin([str(tmp_path / "absent.mp4")], "avec2014")["kind"] == "unknown"
    assert origin.manifest_origin([], "synthetic-seed1")["kind"] == "synthetic"

    # Older stores (no origin.json): what the store shows, else unknown.
    def older(name, paths=None, params=None):
        store = shutil.copytree(made, tmp_path / "older" / name)
        (store / origin.ORIGIN_FILE).unlink()
        if paths is not None:
            table = read_manifest(store).iloc[[0] * len(paths)].assign(path=paths)
            table.to_csv(store / "manifest.csv", index=False)
        if params is not None:
            (store / "params.json").write_text(json.dumps(params))
        return origin.store_origin(store)

    assert older("avec2014-s64-x")["kind"] == "synthetic"  # its source is still in the cohort folder
    assert older("avec2014-s64-y", [str(elsewhere)])["kind"] == "real"
    assert older("avec2014-s64-z", [str(tmp_path / "gone.mp4")])["kind"] == "unknown"
    assert older("synthetic-seed1-s64-abc", [str(tmp_path / "gone.mp4")])["kind"] == "synthetic"
    assert older("toy", ["synthetic/a.mp4"], {"synthetic": True, "size": 64})["kind"] == "synthetic"


def test_patch_centres_map_back_onto_the_source_face(trained_run, face_photos, make_face_video, tmp_path):
    video = make_face_video(tmp_path / "v.mp4", face_photos[3], n_frames=3)
    predictor = load_predictor(trained_run)
    result = predict_video(video, predictor)
    assert result.band in BAND_NAMES and len(result.frames) == 3
    centres = source_patch_centres(result.track, predictor.mirror_mouth_offsets)
    assert centres.shape == (3, 24, 2)
    for box, pts in zip(result.track.boxes, centres):
        left, top, right, bottom = box
        margin = 0.15 * (right - left)
        assert (pts[:, 0] > left - margin).all() and (pts[:, 0] < right + margin).all()
        assert (pts[:, 1] > top - margin).all() and (pts[:, 1] < bottom + margin).all()
    # Mouth corners (patches 11, 15) sit below the eyes (patches 2, 8) in the source frame.
    assert (centres[:, [10, 14], 1].min(1) > centres[:, [1, 7], 1].max(1)).all()


def test_sampling_and_max_frames_follow_the_store(trained_run, face_photos, make_face_video, tmp_path):
    video = make_face_video(tmp_path / "v.mp4", face_photos[5], n_frames=10, fps=10.0)
    predictor = load_predictor(trained_run)
    sampled = dataclasses.replace(predictor, preprocessing={**predictor.preprocessing, "sample_fps": 4.0, "max_frames": 2})
    result = predict_video(video, sampled)
    assert result.frames["frame_index"].tolist() == [0, 3] and result.track.stopped_early
    # The overlay still has every source frame.
    assert _frame_count(write_overlay(result, tmp_path / "o.mp4", sampled)) == 10


def test_videos_without_face_or_unreadable_fail_clearly(trained_run, tmp_path, capsys):
    predictor = load_predictor(trained_run)
    blank = tmp_path / "blank.mp4"
    writer = cv2.VideoWriter(str(blank), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (320, 240))
    for _ in range(3):
        writer.write(np.full((240, 320, 3), 90, np.uint8))
    writer.release()
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(PredictError, match=r"blank\.mp4: no face found in any of 3 sampled frames"):
        predict_video(blank, predictor)
    with pytest.raises(PredictError, match=r"garbage\.mp4: (cannot open|no frame could be decoded)"):
        predict_video(garbage, predictor)
    with pytest.raises(PredictError, match=r"missing\.mp4: file not found"):
        predict_video(tmp_path / "missing.mp4", predictor)
    assert cli.main(["predict", str(blank), str(garbage), "--run", str(trained_run)]) == 1
    err = capsys.readouterr().err
    assert f"error: {blank}: no face found" in err and f"error: {garbage}:" in err
    assert "2 of 2 video(s) could not be scored" in err


def test_unusable_runs_are_refused_with_what_to_do(trained_run, tmp_path, capsys):
    def copy(name):
        dst = tmp_path / name
        shutil.copytree(trained_run, dst)
        return dst

    incomplete = copy("incomplete")
    (incomplete / "COMPLETE").unlink()
    with pytest.raises(RunError, match="not a complete run"):
        load_trained_model(incomplete)
    assert cli.main(["predict", "x.mp4", "--run", str(incomplete)]) == 2
    assert "not a complete run" in capsys.readouterr().err

    future = copy("future")
    params = json.loads((future / "params.json").read_text())
    (future / "params.json").write_text(json.dumps({**params, "format_version": 99}))
    with pytest.raises(RunError, match="run format version 99, this code reads version 1"):
        load_trained_model(future)

    other = copy("other_model")
    metrics = json.loads((other / "metrics.json").read_text())
    metrics["model_config"]["share_local_weights"] = True  # the checkpoint holds per-patch weights
    (other / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(RunError, match="checkpoint does not match"):
        load_trained_model(other)

    # A run that recorded no preprocessing (older runs) needs its store; gone, it says how to pass it.
    unrecorded = copy("unrecorded")
    store_dir = params["store_dir"]
    bare_params = {k: v for k, v in params.items() if k != "preprocessing"}
    (unrecorded / "params.json").write_text(json.dumps({**bare_params, "store_dir": str(tmp_path / "gone")}))
    with pytest.raises(RunError, match="records no preprocessing parameters and the training store .*--store STORE_DIR"):
        load_trained_model(unrecorded)
    assert load_trained_model(unrecorded, store_dir=store_dir)[2]["size"] == 64
    (unrecorded / "params.json").write_text(json.dumps({**bare_params, "store_dir": None}))
    with pytest.raises(RunError, match="records neither the preprocessing nor a store_dir"):
        load_trained_model(unrecorded)

    bare_store = tmp_path / "bare_store"
    bare_store.mkdir()
    (bare_store / "params.json").write_text(json.dumps({"synthetic": True}))
    with pytest.raises(RunError, match="holds no preprocessing parameters"):
        load_trained_model(unrecorded, store_dir=bare_store)
    with pytest.raises(RunError, match="no such run directory"):
        load_predictor(tmp_path / "nothing")


def test_cli_help_and_delegated_commands(trained_run, capsys):
    for argv in (["--help"], ["predict", "--help"], ["export", "--help"], ["bench", "--help"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 0
    text = capsys.readouterr().out
    assert all(word in text for word in ("predict", "export", "runs", "bench", "0-13 minimal", "--quick"))
    assert cli.main(["runs", "--runs", str(trained_run.parent), "status"]) == 0
    assert trained_run.name in capsys.readouterr().out


def test_run_scores_videos_from_its_recorded_preprocessing_after_the_store_moved(
    trained_run, face_photos, make_face_video, tmp_path, capsys
):
    """The run keeps its store's preprocessing in params.json: moving or deleting the store
    does not stop `predict --run`, and the estimate does not change."""
    params = json.loads((trained_run / "params.json").read_text())
    store = shutil.copytree(params["store_dir"], tmp_path / "store")
    run = shutil.copytree(trained_run, tmp_path / "runs" / trained_run.name)
    (run / "params.json").write_text(json.dumps({**params, "store_dir": str(store)}))
    from_store = validate_preprocessing(json.loads((store / "params.json").read_text()), "store")
    assert run_preprocessing(run, {**params, "store_dir": str(store), "preprocessing": None}) == from_store
    assert run_preprocessing(run, params) == from_store  # the recorded copy: the same parameters
    video = make_face_video(tmp_path / "v.mp4", face_photos[4], n_frames=3)
    before = predict_video(video, load_predictor(run, store_dir=store))  # read from the store itself

    store.rename(tmp_path / "moved_store")
    after = predict_video(video, load_predictor(run))
    assert np.isfinite(after.score) and after.score == before.score
    assert after.frames["prediction"].tolist() == before.frames["prediction"].tolist()
    shutil.rmtree(tmp_path / "moved_store")
    capsys.readouterr()
    assert cli.main(["predict", str(video), "--run", str(run)]) == 0
    assert f"{video}: BDI-II {before.score:.1f} ({before.band})" in capsys.readouterr().out


def test_report_attention_is_predict_frames_on_a_partition(trained_run):
    """models.attention and models.load_run_model go through dlga.inference.predict: same model, same
    columns (a1..a24, global_attention), same predictions as the run's predictions.csv."""
    run = load_run(trained_run)
    model, config = models.load_run_model(run)
    part = data_lib.load_partition(run.params["store_dir"], "Testing")
    table = models.attention(model, part, config.input_size, batch_size=5)
    assert list(table.columns) == ["video_id", "subject_id", "session_id", "partition", "bdi", "prediction",
                                   *ATTENTION_COLUMNS, "global_attention", "local_mean"]
    assert len(table) == part.n_frames
    np.testing.assert_allclose(table["local_mean"], table[list(ATTENTION_COLUMNS)].mean(axis=1))
    direct = predict_frames(model, part.frames, part.landmarks, config.input_size, batch_size=5)
    np.testing.assert_array_equal(table["prediction"], direct["prediction"])
    streamed = models.attention(model, data_lib.load_partition(run.params["store_dir"], "Testing", in_memory=False),
                                config.input_size, batch_size=5)
    pd.testing.assert_frame_equal(streamed, table)
    per_video = table.groupby("video_id")["prediction"].mean()
    expected = run.predictions.set_index("video_id").loc[per_video.index, "prediction"]
    np.testing.assert_allclose(per_video.to_numpy(), expected.to_numpy(), atol=1e-4)


# --- the store's detector at inference: the cascade fallback ------------------------------------


def test_a_store_made_with_the_cascade_fallback_is_scored_with_it(trained_run, face_photos, make_face_video, tmp_path,
                                                                   monkeypatch):
    from data_prep.faces import LandmarkDetector
    from data_prep.preprocess import make_params
    from data_prep.store import atomic_write_json

    store_dir = json.loads((trained_run / "params.json").read_text())["store_dir"]
    cascade_store = tmp_path / "cascade_store"
    shutil.copytree(store_dir, cascade_store)
    atomic_write_json(cascade_store / "params.json", make_params(size=64, fallback="cascade"))
    video = make_face_video(tmp_path / "v.mp4", face_photos[2], n_frames=4)
    monkeypatch.setattr(LandmarkDetector, "detect", lambda self, image: [])  # HOG never finds the face
    predictor = load_predictor(trained_run, store_dir=cascade_store)
    assert predictor.preprocessing["fallback"] == "cascade"
    result = predict_video(video, predictor)
    assert result.frames["how"].tolist() == ["cascade"] * 4
    csv = tmp_path / "frames.csv"
    assert cli.main(["predict", str(video), "--run", str(trained_run), "--store", str(cascade_store),
                     "--out", str(csv)]) == 0
    assert pd.read_csv(csv)["how"].tolist() == ["cascade"] * 4
    # The same video with the run's own store (no fallback): HOG alone finds nothing.
    with pytest.raises(PredictError, match="no face found in any of 4 sampled frames"):
        predict_video(video, load_predictor(trained_run))
