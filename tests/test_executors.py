"""Runs on executors: local worker processes, in-process, and a Dask cluster give the same numbers."""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import Executor

import distributed
import pytest

from dlga.config import TrainConfig
from dlga.runs import executors, cache as runs
from helpers_store import make_store

FAST = TrainConfig.preset("ci", max_steps=12, eval_every=6, warmup_steps=4, batch_size=8)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("store"), {"Training": 10, "Development": 4, "Testing": 4},
                      frames_per_video=2, seed=3)


@pytest.fixture(scope="module")
def specs(store):
    return [runs.RunSpec(setting=s, model_preset="tiny", train=FAST, store_dir=str(store), seed=seed)
            for s, seed in (("G", 0), ("GA", 0), ("G", 1))]


def _metrics(paths) -> list[dict]:
    """The numbers of each run (without wall time, dates and versions, which may differ)."""
    out = []
    for path in paths:
        m = json.loads((path / "metrics.json").read_text())
        out.append({k: m[k] for k in ("dev", "test", "train", "steps", "stop_reason", "best_step", "best_dev_rmse")})
    return out


@pytest.fixture(scope="module")
def local_results(specs, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs-local")
    return runs.execute_all(specs, root, "local:2", progress=False)


def test_local_executor_completes_every_run_in_order(specs, local_results):
    assert [p.name for p in local_results] == [s.run_id for s in specs]
    assert all(runs.is_complete(p) for p in local_results)


def test_a_run_alone_and_beside_another_gives_the_same_metrics(specs, local_results, tmp_path):
    alone = runs.execute_all(specs[:1], tmp_path, "local:1", progress=False)
    assert _metrics(alone) == _metrics(local_results[:1])


def test_complete_runs_are_not_submitted_again(specs, local_results):
    class Refuse(Executor):
        def submit(self, fn, /, *args, **kwargs):
            raise AssertionError("a complete run was submitted again")

    assert runs.execute_all(specs, local_results[0].parent, Refuse(), progress=False) == local_results


def test_dask_local_cluster_gives_the_same_ids_and_metrics(specs, local_results, tmp_path):
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=logging.ERROR) as cluster:
        address = cluster.scheduler_address
        paths = runs.execute_all(specs, tmp_path, f"dask://{address.split('://', 1)[1]}", progress=False)
        pool = executors.make_executor(f"dask://{address.split('://', 1)[1]}")
        assert executors.worker_count(pool) == 2  # the cluster's threads, which size the chunks
        pool.shutdown()
        assert pool._client.status == "closed"  # closed with its executor, before the cluster
    assert [p.name for p in paths] == [p.name for p in local_results]
    assert _metrics(paths) == _metrics(local_results)


def test_a_failing_run_is_named_and_the_others_complete(specs, tmp_path, monkeypatch):
    bad = runs.RunSpec(setting="G", model_preset="tiny", train=FAST, store_dir=specs[0].store_dir, seed=7)

    def execute(spec, root, progress=True):
        if spec.run_id == bad.run_id:
            raise FloatingPointError("boom")
        return original(spec, root, progress=progress)

    original = runs.execute
    monkeypatch.setattr(runs, "execute", execute)
    with pytest.raises(runs.GridError, match=rf"1 of 2 runs failed[\s\S]*{bad.run_id}: FloatingPointError: boom"):
        runs.execute_all([specs[0], bad], tmp_path, "serial", progress=False)
    assert runs.is_complete(tmp_path / specs[0].run_id)


@pytest.mark.parametrize("name, message", [
    ("cluster", "unknown executor 'cluster'"),
    ("local:0", "positive number of workers"),
    ("local:x", "positive number of workers"),
])
def test_bad_executor_names_say_what_is_allowed(name, message):
    with pytest.raises(ValueError, match=message):
        executors.make_executor(name)


def test_worker_count_of_each_executor():
    assert executors.worker_count(executors.SerialExecutor()) == 1
    with executors.local_executor(workers=3) as pool:
        assert executors.worker_count(pool) == 3
    assert executors.worker_count(Refusing()) == (os.cpu_count() or 1)


class Refusing(Executor):
    """An executor that says nothing about its workers."""
