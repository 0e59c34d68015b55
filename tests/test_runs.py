"""The run cache: ids, reuse without retraining, atomic completion, the command line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

import dlga.training.train
from data_prep.store import read_video, store_fingerprint, video_path, write_video
from dlga.config import TrainConfig
from dlga.runs import cache as runs, cli, rundir
from helpers_store import make_store

FAST = TrainConfig.preset("ci", max_steps=10, eval_every=5, warmup_steps=5)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("store"), {"Training": 12, "Development": 6, "Testing": 6},
                      frames_per_video=2, tasks=("Freeform", "Northwind"), seed=1)


@pytest.fixture(scope="module")
def spec(store):
    return runs.RunSpec(setting="G", model_preset="tiny", train=FAST, store_dir=str(store), seed=0, notes="test")


@pytest.fixture(scope="module")
def complete_run(spec, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return runs.execute(spec, root, progress=False), root


def test_run_id_depends_on_parameters_and_data_not_notes(spec, store, tmp_path):
    assert spec.run_id.startswith("G-")
    assert runs.RunSpec(setting="G", train=FAST, store_dir=str(store), seed=0, notes="other").run_id == spec.run_id
    assert runs.RunSpec(setting="G", train=FAST, store_dir=str(store), seed=1).run_id != spec.run_id
    assert runs.RunSpec(setting="GA", train=FAST, store_dir=str(store), seed=0).run_id != spec.run_id
    other_store = make_store(tmp_path / "s2", {"Training": 12, "Development": 6, "Testing": 6},
                             frames_per_video=2, tasks=("Freeform", "Northwind"), seed=2)
    assert runs.RunSpec(setting="G", train=FAST, store_dir=str(other_store), seed=0).run_id != spec.run_id
    assert runs.RunSpec.from_params(spec.params()).run_id == spec.run_id
    with pytest.raises(ValueError, match="unknown setting"):
        runs.RunSpec(setting="H")
    with pytest.raises(FileNotFoundError, match="make data"):
        runs.RunSpec(store_dir=str(tmp_path / "missing")).run_id


def test_execute_writes_a_complete_run(complete_run, spec):
    path, root = complete_run
    assert path == root / spec.run_id and runs.is_complete(path)
    assert not (root / f"{spec.run_id}.partial").exists()
    assert not (path / "checkpoints" / "latest").exists() and (path / "checkpoints" / "best").is_dir()
    run = runs.load_run(path)
    assert run.params["notes"] == "test" and run.params["train"]["seed"] == 0
    m = run.metrics
    for part in ("dev", "test"):
        assert {"mae", "rmse", "session_mae", "session_rmse"} <= set(m[part])
    assert m["test"]["n_videos"] == 12 and m["test"]["n_sessions"] == 6  # two tasks per session
    assert {"rmse_low", "rmse_high", "mae_low", "mae_high"} <= set(m["test"])
    assert m["steps"] == 10 and m["stop_reason"] == "max_steps" and m["seed"] == 0
    assert {"tensorflow", "keras", "numpy"} <= set(m["versions"]) and "git_commit" in m
    assert list(run.predictions.columns) == ["video_id", "subject_id", "session_id", "partition", "bdi",
                                             "prediction", "n_frames"]
    # The subject comes from the store's manifest (AVEC ids: <subject>_<session>).
    assert (run.predictions["subject_id"] + "_1" == run.predictions["session_id"]).all()
    assert list(run.history.columns[:5]) == ["step", "train_loss", "l2", "dev_rmse", "dev_mae"]


def test_complete_run_is_reused_not_retrained(complete_run, spec, monkeypatch):
    path, root = complete_run
    stamp = (path / "metrics.json").stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("a complete run was trained again")

    monkeypatch.setattr(dlga.training.train, "train", no_training)
    assert runs.execute(spec, root, progress=False) == path
    assert (path / "metrics.json").stat().st_mtime_ns == stamp


def test_interrupted_run_leaves_only_a_partial_dir(spec, store, tmp_path, monkeypatch):
    def crash(model_config, train_config, store_dir, run_dir, **kwargs):
        (run_dir / "history.csv").write_text("step\n1\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(dlga.training.train, "train", crash)
    with pytest.raises(KeyboardInterrupt):
        runs.execute(spec, tmp_path, progress=False)
    partial = tmp_path / f"{spec.run_id}.partial"
    assert partial.is_dir() and not (tmp_path / spec.run_id).exists()
    assert not runs.is_complete(partial)
    (partial / runs.COMPLETE).write_text("x")  # even a marker inside a .partial dir is not a run
    assert not runs.is_complete(partial)
    assert runs.plan([spec], tmp_path)["state"].tolist() == ["partial"]
    assert runs.list_runs(tmp_path)["state"].tolist() == ["partial"]
    with pytest.raises(FileNotFoundError, match="not a complete run"):
        runs.load_run(partial)


def test_plan_status_and_cli(complete_run, spec, store, capsys):
    path, root = complete_run
    table = runs.plan(runs.grid(store, ["G"], [FAST.learning_rate], [0, 1], train_preset="ci",
                                max_steps=10, eval_every=5, warmup_steps=5), root)
    assert table["state"].tolist() == ["complete", "missing"]
    assert table["run_id"].iloc[0] == spec.run_id
    listing = runs.list_runs(root)
    assert listing.loc[0, "state"] == "complete" and listing.loc[0, "test_rmse"] > 0
    assert cli.main(["--runs", str(root), "status"]) == 0
    assert spec.run_id in capsys.readouterr().out
    assert cli.main(["--runs", str(root), "plan", "--store", str(store), "--seeds", "0", "--max-steps", "10"]) == 0
    assert cli.main(["--runs", str(root), "run", "--id", spec.run_id]) == 0  # complete: no training
    assert str(path) in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["--help"])


def test_paired_bootstrap_between_two_runs(complete_run, tmp_path):
    """Two runs on the same test videos: a run against itself ties; a worse copy loses."""
    path, _ = complete_run
    same = runs.compare(path, path, n=200)
    assert same["estimate"] == same["lo"] == same["hi"] == 0 and same["tie"]
    assert same["resampled"] == "seeds x subjects" and same["n_subjects"] == 6 and same["n_videos"] == 12
    run = runs.load_run(path)
    worse = runs.Run(path=run.path, params=run.params, metrics=run.metrics, history=run.history,
                     predictions=run.predictions.assign(prediction=run.predictions["prediction"] + 30.0))
    res = runs.compare(path, worse, n=200, seed=0)
    assert res["hi"] < 0 and res["estimate"] < 0 and not res["tie"]
    json.dumps(res)
    shorter = runs.Run(path=run.path, params=run.params, metrics=run.metrics, history=run.history,
                       predictions=run.predictions.iloc[:-1])
    with pytest.raises(ValueError, match="same Testing videos"):
        runs.compare(path, shorter)


def test_run_id_follows_the_stored_frames_not_only_params_and_manifest(tmp_path):
    """Rewriting one video's frames (same parameters, same manifest) gives a new fingerprint and id."""
    store = make_store(tmp_path / "s", {"Training": 3, "Development": 2, "Testing": 2}, frames_per_video=2, seed=3)
    spec = runs.RunSpec(setting="G", train=FAST, store_dir=str(store), seed=0)
    before, first_id = store_fingerprint(store), spec.run_id
    assert store_fingerprint(store) == before  # cached per file: stable
    video = read_video(video_path(store, "001_1_Freeform"))
    frames = video["frames"].copy()
    frames[0, 0, 0, 0] ^= 1  # one bit of one pixel
    write_video(video_path(store, "001_1_Freeform"), frames, video["landmarks"], video["frame_index"], video["score"])
    assert store_fingerprint(store) != before and spec.run_id != first_id


def test_cross_dataset_run_tests_on_the_other_store(store, tmp_path):
    """Train and select on one store, evaluate Testing of another (e.g. AVEC2013 -> AVEC2014)."""
    other = make_store(tmp_path / "other", {"Training": 2, "Development": 2, "Testing": 5},
                       frames_per_video=2, seed=7)
    spec = runs.RunSpec(setting="GA", train=FAST, store_dir=str(store), seed=0, test_store_dir=str(other))
    same = runs.RunSpec(setting="GA", train=FAST, store_dir=str(store), seed=0)
    assert spec.run_id != same.run_id
    assert runs.RunSpec.from_params(spec.params()).run_id == spec.run_id
    run = runs.load_run(runs.execute(spec, tmp_path / "runs", progress=False))
    assert run.params["test_store_dir"] == str(other)
    test = run.predictions[run.predictions["partition"] == "Testing"]
    assert len(test) == 5 and run.metrics["test"]["n_videos"] == 5
    assert run.metrics["dev"]["n_videos"] == 12  # two tasks per session, from the training store
    with pytest.raises(FileNotFoundError, match="test_store_dir"):
        runs.RunSpec(store_dir=str(store), test_store_dir=str(tmp_path / "nowhere")).run_id


def test_run_directory_format_is_defined_once_and_read_back(complete_run, tmp_path):
    """dlga.runs.rundir owns the names and the version; reading checks them with clear errors."""
    path, root = complete_run
    assert sorted(p.name for p in path.iterdir() if p.is_file()) == sorted(rundir.RUN_FILES)
    assert rundir.state(root, path.name) == "complete" and rundir.state(root, "G-none") == "missing"
    assert rundir.read_params(path)["format_version"] == rundir.FORMAT_VERSION
    pd.testing.assert_frame_equal(rundir.read_predictions(path), runs.load_run(path).predictions)
    assert list(rundir.read_predictions(path).columns) == rundir.PREDICTION_COLUMNS
    assert list(rundir.read_history(path).columns) == rundir.HISTORY_COLUMNS
    # The version and the marker are defined in one module; the others import them.
    package = Path(rundir.__file__).parents[1]
    defining = [p.name for p in sorted(package.rglob("*.py"))
                if any(line.startswith(("FORMAT_VERSION =", "RUN_FORMAT_VERSION =", "COMPLETE =",
                                        "EXPORT_FORMAT_VERSION ="))
                       for line in p.read_text().splitlines())]
    assert defining == ["exportdir.py", "rundir.py"]

    future = tmp_path / "future"
    future.mkdir()
    (future / rundir.PARAMS).write_text(json.dumps({"run_id": "x", "format_version": 2}))
    rundir.mark_complete(future, "x")
    with pytest.raises(rundir.RunError, match="run format version 2, this code reads version 1"):
        runs.load_run(future)
    (future / rundir.PARAMS).write_text("[1, 2]")
    with pytest.raises(rundir.RunError, match="holds a JSON list, not an object; the run is damaged"):
        rundir.read_params(future)
    with pytest.raises(rundir.IncompleteRunError, match="no such run directory"):
        rundir.require_complete(tmp_path / "nothing")
    partial = rundir.partial_dir(tmp_path, "G-abc")
    partial.mkdir()
    with pytest.raises(rundir.RunError, match="resume it with `python -m dlga runs run --id G-abc`"):
        rundir.require_complete(partial)


def test_run_chunks_group_runs_of_one_traced_step_largest_first():
    fast = TrainConfig.preset("ci", max_steps=4)

    def spec(setting="G", seed=0, store="a", **train):
        return runs.RunSpec(setting=setting, train=fast.replace(**train), store_dir=store, seed=seed)

    g = [spec(seed=s, store="a" if s % 2 else "b") for s in range(4)]  # seeds and stores may differ
    ga, other_rate = spec("GA"), spec(learning_rate=1e-2)
    chunks = runs.run_chunks([g[0], ga, g[1], other_rate, g[2], g[3]])
    assert chunks == [[g[0], g[1], g[2]], [g[3]], [ga], [other_rate]]
    assert runs.run_chunks(g, size=2) == [[g[0], g[1]], [g[2], g[3]]]
    with pytest.raises(ValueError, match="positive"):
        runs.run_chunks(g, size=0)


def test_a_cross_dataset_run_tests_its_twins_weights_as_a_new_run_would(store, tmp_path):
    """With its training twin complete, a cross-dataset run is not trained again: the twin's
    weights are tested on the other store, and every number is what training anew gives."""
    other = make_store(tmp_path / "other", {"Training": 2, "Development": 2, "Testing": 5},
                       frames_per_video=2, seed=8)
    cross = runs.RunSpec(setting="G", train=FAST, store_dir=str(store), seed=2, test_store_dir=str(other))
    twin = cross.training_twin()
    assert twin.test_store_dir is None and twin.run_id == runs.RunSpec(setting="G", train=FAST, store_dir=str(store),
                                                                        seed=2).run_id
    assert twin.training_twin() is None
    anew = runs.load_run(runs.execute(cross, tmp_path / "anew", progress=False))
    assert "trained_in" not in anew.metrics
    # Twin and cross run in one grid, the cross run first: it waits for the twin.
    submitted = []

    class Recording(runs.executors.SerialExecutor):
        def submit(self, fn, /, *args, **kwargs):
            submitted.append([s.run_id for s in args[0]])
            return super().submit(fn, *args, **kwargs)

    paths = runs.execute_all([cross, twin], tmp_path / "grid", Recording(), progress=False)
    assert submitted == [[twin.run_id], [cross.run_id]]
    tested = runs.load_run(paths[0])
    assert tested.metrics["trained_in"] == twin.run_id
    volatile = {"wall_time_s", "versions", "finished", "trained_in", "git_commit"}
    assert {k: v for k, v in tested.metrics.items() if k not in volatile} == {
        k: v for k, v in anew.metrics.items() if k not in volatile}
    pd.testing.assert_frame_equal(tested.predictions, anew.predictions)
    pd.testing.assert_frame_equal(rundir.read_history(paths[0]), rundir.read_history(anew.path))
    assert sorted(p.name for p in paths[0].iterdir()) == sorted(p.name for p in anew.path.iterdir())


def test_a_moved_store_keeps_its_fingerprint_and_a_changed_label_does_not(tmp_path):
    """The source videos' absolute paths are provenance: a store copied to another checkout (its
    manifest naming other paths) keeps its fingerprint and run ids; a changed score does not."""
    import shutil

    import pandas as pd

    store = make_store(tmp_path / "a" / "s", {"Training": 3, "Development": 2, "Testing": 2}, frames_per_video=2, seed=3)
    moved = tmp_path / "b" / "s"
    shutil.copytree(store, moved)
    manifest = pd.read_csv(moved / "manifest.csv", dtype=str)
    manifest["path"] = [f"/elsewhere/checkout/{i}.mp4" for i in range(len(manifest))]
    manifest.to_csv(moved / "manifest.csv", index=False)
    assert (moved / "manifest.csv").read_bytes() != (store / "manifest.csv").read_bytes()
    assert store_fingerprint(moved) == store_fingerprint(store)
    spec = runs.RunSpec(setting="G", train=FAST, store_dir=str(store), seed=0)
    assert runs.RunSpec(setting="G", train=FAST, store_dir=str(moved), seed=0).run_id == spec.run_id
    manifest.loc[0, "bdi"] = str(float(manifest.loc[0, "bdi"]) + 1)
    manifest.to_csv(moved / "manifest.csv", index=False)
    assert store_fingerprint(moved) != store_fingerprint(store)


def test_tests_write_into_their_own_cache_never_into_the_users_folders():
    from dlga import settings

    users = {settings.PROJECT_ROOT / name for name in ("runs", "data", "_build")}
    for folder in (settings.RUNS_DIR, settings.DATA_DIR, settings.BUILD_DIR):
        assert folder.resolve() not in users, f"tests would write into {folder}"
    assert os.environ["DLGA_RUNS"] and settings.RUNS_DIR == Path(os.environ["DLGA_RUNS"])
