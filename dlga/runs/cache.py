"""The run cache: one training + evaluation per parameter set, stored once, reused (Decisions: Runs and presets).

A run's id is a hash of everything that decides its numbers: the model and training
configurations, the dataset fingerprint (:func:`data_prep.store.store_fingerprint`: the
store's parameters, manifest and every stored frame) and :func:`numerics_identity` (a declared
numerics version, the numeric libraries' versions, the threads per run, oneDNN's switches), not
the text of any file: a comment or a move retrains nothing. It is written to
``runs/<id>.partial/`` (checkpoints included, so a rerun resumes) and renamed to
``runs/<id>/`` once ``COMPLETE`` is written, so a directory without the ``.partial`` suffix is
always a whole run. An existing complete run is returned as it is, never recomputed. The
files of a run directory and their format are :mod:`dlga.runs.rundir`'s.

Command line (:mod:`dlga.runs.cli`, ``python -m dlga.runs --help``)::

    python -m dlga.runs status                       # runs under runs/
    python -m dlga.runs plan --store S --settings G GA --lrs 1e-3 1e-4 --seeds 0 1 2
    python -m dlga.runs run  --store S --settings G --seeds 0     # run what is missing
    python -m dlga.runs run  --id G-1a2b3c4d5e6f                  # resume a partial run
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import time
from concurrent.futures import Executor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd
from tqdm import tqdm  # tqdm.auto warns in every notebook kernel without ipywidgets

from data_prep.origin import store_origin
from data_prep.store import library_versions, store_fingerprint
from dlga.config import MODEL_PRESETS, SETTINGS, ModelConfig, TrainConfig, compiled_key
from dlga.runs import executors, rundir
from dlga.runs.rundir import COMPLETE, Run, is_complete, load_run  # also this module's public names
from dlga.settings import RUNS_DIR, onednn_enabled
from dlga.training.metrics import paired_two_level_bootstrap

NUMERICS_VERSION = 1
"""The version of the numbers a run produces from a store: the model, its initialisation, the
training step and schedule, data loading and the metrics. Bump it with any change that changes
a run's numbers; tests/test_golden.py trains one tiny fixed run, compares its predictions with
stored golden ones and fails until it is bumped and the golden file is refreshed. A comment, an
import, a rename or a file move changes no run id."""

NUMERIC_LIBRARIES = ("tensorflow", "keras", "numpy")
"""The libraries whose versions decide a run's numbers beside :data:`NUMERICS_VERSION`."""


def numerics_identity() -> dict[str, Any]:
    """What decides a run's numbers besides its parameters and data: :data:`NUMERICS_VERSION`,
    the versions of :data:`NUMERIC_LIBRARIES`, the threads a run trains with and oneDNN's
    switches (``TF_ENABLE_ONEDNN_OPTS``, and ``ONEDNN_MAX_CPU_ISA`` where it restricts the
    instruction set: a run on another instruction set is another draw of training noise)."""
    versions = library_versions(("tensorflow", "tensorflow-cpu", *NUMERIC_LIBRARIES[1:]))
    tf = versions.pop("tensorflow-cpu")
    if versions["tensorflow"] == "absent":
        versions["tensorflow"] = tf
    out = {"numerics_version": NUMERICS_VERSION, "libraries": versions,
           "threads_per_run": executors.THREADS_PER_RUN, "onednn": onednn_enabled()}
    if os.environ.get("ONEDNN_MAX_CPU_ISA"):
        out["onednn_max_cpu_isa"] = os.environ["ONEDNN_MAX_CPU_ISA"]
    return out


def git_commit() -> str | None:
    """The checked-out commit of the project (with ``-dirty`` when files changed), or None."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=40"],
            cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _default_train() -> TrainConfig:
    return TrainConfig.preset("ci")


@dataclass(frozen=True)
class RunSpec:
    """What one run trains and on what data.

    Args:
        setting: one of the paper's ten settings (``"G"``, ``"GA"``, ...) or a ModelConfig.
        model_preset: ``paper``, ``small`` or ``tiny`` (ignored when ``setting`` is a ModelConfig).
        train: the training schedule.
        store_dir: the preprocessed store (only its fingerprint enters the id, not its path).
        seed: overrides ``train.seed`` when given.
        notes: free text kept in ``params.json``; not part of the id.
        test_store_dir: a second store whose Testing partition is evaluated instead of
            ``store_dir``'s (cross-dataset: train on AVEC2013, test on AVEC2014, or a synthetic
            cohort made with another seed). Its fingerprint enters the id.
    """

    setting: str | ModelConfig = "G"
    model_preset: str = "tiny"
    train: TrainConfig = field(default_factory=_default_train)
    store_dir: str = "data/ci/store"
    seed: int | None = None
    notes: str = ""
    test_store_dir: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.setting, str) and self.setting not in SETTINGS:
            raise ValueError(f"unknown setting {self.setting!r}; choose one of {list(SETTINGS)} or pass a ModelConfig")
        if not isinstance(self.setting, (str, ModelConfig)):
            raise TypeError(f"setting must be a setting name or a ModelConfig, got {type(self.setting).__name__}")
        if self.model_preset not in MODEL_PRESETS:
            raise ValueError(f"unknown model_preset {self.model_preset!r}; choose one of {sorted(MODEL_PRESETS)}")
        if not isinstance(self.train, TrainConfig):
            raise TypeError(f"train must be a TrainConfig, got {type(self.train).__name__}")
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise ValueError(f"seed must be None or a non-negative integer, got {self.seed!r}")
        object.__setattr__(self, "store_dir", str(self.store_dir))
        if self.test_store_dir is not None:
            object.__setattr__(self, "test_store_dir", str(self.test_store_dir))

    @property
    def model_config(self) -> ModelConfig:
        if isinstance(self.setting, ModelConfig):
            return self.setting
        return ModelConfig.setting(self.setting, preset=self.model_preset)

    @property
    def train_config(self) -> TrainConfig:
        return self.train if self.seed is None else self.train.replace(seed=self.seed)

    @property
    def label(self) -> str:
        """A readable prefix of the id: the setting name, also for a ModelConfig whose
        switches are a setting's (a changed width or input size), else ``custom``."""
        if isinstance(self.setting, str):
            return self.setting
        switches = {k: getattr(self.setting, k) for k in ("local", "cmp", "global_", "wspp")}
        return next((name for name, s in SETTINGS.items() if s == switches), "custom")

    def identity(self) -> dict[str, Any]:
        """Everything that enters the id (reads the store's fingerprint and the source)."""
        if not Path(self.store_dir).is_dir():
            raise FileNotFoundError(
                f"store_dir {self.store_dir!r} does not exist; make it with `make data` or "
                "`python -m data_prep preprocess`"
            )
        identity = {
            "model": self.model_config.to_dict(),
            "train": self.train_config.to_dict(),
            "store_fingerprint": store_fingerprint(self.store_dir),
            "numerics": numerics_identity(),
        }
        if self.test_store_dir is not None:
            if not Path(self.test_store_dir).is_dir():
                raise FileNotFoundError(f"test_store_dir {self.test_store_dir!r} does not exist")
            identity["test_store_fingerprint"] = store_fingerprint(self.test_store_dir)
        return identity

    @property
    def run_id(self) -> str:
        digest = hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()
        return f"{self.label}-{digest[:12]}"

    def run_dir(self, runs_root: str | os.PathLike = RUNS_DIR) -> Path:
        return Path(runs_root) / self.run_id

    def training_twin(self) -> "RunSpec | None":
        """For a cross-dataset spec, the run that trains exactly what it trains: the same spec
        tested on its own store (:func:`execute` tests a complete twin's weights elsewhere
        instead of training again); None for a spec without ``test_store_dir``."""
        return None if self.test_store_dir is None else dataclasses.replace(self, test_store_dir=None)

    def params(self) -> dict[str, Any]:
        """The content of ``params.json``: the identity plus readable fields (not in the id),
        among them ``training_data``, what the store's faces are (:func:`data_prep.origin.store_origin`)."""
        return {
            **self.identity(),
            "run_id": self.run_id,
            "setting": self.label,
            "model_preset": self.model_preset if isinstance(self.setting, str) else None,
            "store_dir": self.store_dir,
            "test_store_dir": self.test_store_dir,
            "preprocessing": _store_params(self.store_dir),
            # What the faces were (data_prep.origin): predictions on a real face say when they
            # were synthetic. Outside identity(): it changes no run id.
            "training_data": store_origin(self.store_dir),
            "format_version": rundir.FORMAT_VERSION,
            "notes": self.notes,
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "RunSpec":
        """Rebuild a spec from a ``params.json`` (to resume or rerun it)."""
        model = ModelConfig.from_dict(params["model"])
        setting: str | ModelConfig = model
        if params.get("setting") in SETTINGS and params.get("model_preset") in MODEL_PRESETS:
            if ModelConfig.setting(params["setting"], preset=params["model_preset"]) == model:
                setting = params["setting"]
        return cls(
            setting=setting,
            model_preset=params.get("model_preset") or "tiny",
            train=TrainConfig.from_dict(params["train"]),
            store_dir=params["store_dir"],
            notes=params.get("notes", ""),
            test_store_dir=params.get("test_store_dir"),
        )


def _store_params(store_dir: str) -> dict[str, Any] | None:
    """The store's preprocessing parameters, kept with the run so that it can score new videos
    the same way after the store has moved (:func:`dlga.inference.predict.run_preprocessing` reads them)."""
    path = Path(store_dir) / "params.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def execute(
    spec: RunSpec,
    runs_root: str | os.PathLike = RUNS_DIR,
    *,
    strategy=None,
    progress: bool = True,
    model_fn=None,
) -> Path:
    """Return the directory of the complete run of ``spec``, training it only if needed.

    A complete ``runs/<id>/`` is reused as it is. Otherwise training runs in
    ``runs/<id>.partial/`` (resuming from its checkpoint if an earlier attempt stopped), the
    results are written, ``COMPLETE`` last, and the directory is renamed to ``runs/<id>/``.

    Args:
        spec: what to run.
        runs_root: where runs live.
        strategy: a ``tf.distribute.Strategy`` for :func:`dlga.training.train.train`.
        progress: show the training progress bar.
        model_fn: a replacement for :func:`dlga.model.network.build_model` (its import path enters
            the parameters and so the id).
    """
    params = spec.params()
    if model_fn is not None:
        params["model_fn"] = f"{model_fn.__module__}:{model_fn.__qualname__}"
        digest = hashlib.sha256(json.dumps(params["model_fn"]).encode()).hexdigest()[:6]
        params["run_id"] = f"{params['run_id']}-{digest}"
    run_id = params["run_id"]
    final = rundir.final_dir(runs_root, run_id)
    if is_complete(final):
        return final
    if final.exists():
        raise FileExistsError(
            f"{final} exists but has no {COMPLETE} marker; it is not a run this code wrote. "
            "Move it away or delete it, then run again"
        )
    partial = rundir.partial_dir(runs_root, run_id)
    partial.mkdir(parents=True, exist_ok=True)
    rundir.write_params(partial, params)

    from dlga.training import train as train_lib  # TensorFlow: only where a run trains

    twin = spec.training_twin()
    trained = None if twin is None else rundir.final_dir(runs_root, twin.run_id)
    if trained is not None and model_fn is None and strategy is None and is_complete(trained):
        metrics = train_lib.test_elsewhere(trained, spec.model_config, spec.train_config, spec.store_dir, partial,
                                           spec.test_store_dir)
    else:
        metrics = train_lib.train(
            spec.model_config, spec.train_config, spec.store_dir, partial,
            strategy=strategy, progress=progress, model_fn=model_fn, test_store_dir=spec.test_store_dir,
        )
    metrics.update(run_id=run_id, git_commit=git_commit(), store_fingerprint=params["store_fingerprint"],
                   numerics=params["numerics"], finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    rundir.write_metrics(partial, metrics)
    # Full optimizer state is only needed to resume; the selected weights stay.
    shutil.rmtree(rundir.checkpoint_dir(partial, rundir.LATEST), ignore_errors=True)
    rundir.mark_complete(partial, run_id)
    try:
        os.replace(partial, final)
    except OSError:
        if not is_complete(final):  # another process finished the same run first: keep its copy
            raise
        shutil.rmtree(partial, ignore_errors=True)
    return final


def compare(
    run_a: str | os.PathLike | Run,
    run_b: str | os.PathLike | Run,
    partition: str = "Testing",
    metric: str = "rmse",
    n: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired bootstrap of ``metric(a) - metric(b)`` over the subjects both runs predicted.

    :func:`dlga.training.metrics.paired_two_level_bootstrap` with one seed a side: the subjects (all
    their videos together) are resampled, the same resample for both runs. Negative
    ``estimate`` means run ``a`` has the lower error; ``tie`` when the interval ``[lo, hi]``
    contains 0. Both runs must cover the same videos of ``partition`` (same store).
    """
    a = run_a if isinstance(run_a, Run) else load_run(run_a)
    b = run_b if isinstance(run_b, Run) else load_run(run_b)
    ta, tb = rundir.prediction_table([a], partition), rundir.prediction_table([b], partition)
    if set(ta["video_id"]) != set(tb["video_id"]):
        raise ValueError(
            f"runs {a.run_id} and {b.run_id} did not predict the same {partition} videos "
            f"({len(ta)} vs {len(tb)}); compare runs made on the same store"
        )
    return paired_two_level_bootstrap(ta, tb, metric, n=n, seed=seed)


class GridError(RuntimeError):
    """Some runs of a grid failed; the others completed and are cached."""


CHUNK_RUNS = 3
"""Most runs one worker task holds (:func:`run_chunks`)."""


def run_chunks(specs: Sequence[RunSpec], size: int = CHUNK_RUNS) -> list[list[RunSpec]]:
    """The worker tasks of a grid: runs that share a traced training step
    (:func:`dlga.config.compiled_key`: same architecture and step graph; seeds and stores may
    differ) in chunks of at most ``size``, largest chunks first.

    A worker starts every run of a chunk after the first from the step it traced
    (:class:`dlga.training.train.CompiledModel`; a tiny G run saves about 4 s on one core), and the
    small chunks come last, so that no core waits long for another's last task.
    """
    if int(size) < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    groups: dict[str, list[RunSpec]] = {}
    for spec in specs:
        groups.setdefault(compiled_key(spec.model_config, spec.train_config), []).append(spec)
    chunks = [group[i:i + size] for group in groups.values() for i in range(0, len(group), size)]
    return sorted(chunks, key=len, reverse=True)  # stable: the grid's order within one size


def _execute_chunk(specs: list[RunSpec], runs_root: str, threads: int) -> list[tuple[str, BaseException | None]]:
    """What a worker does: the runs of one chunk through the cache, each run's failure kept
    (returned with its id) so that the chunk's other runs still run."""
    executors.limit_threads(threads)
    done = []
    for spec in specs:
        try:
            execute(spec, runs_root, progress=False)
            done.append((spec.run_id, None))
        except Exception as exc:  # noqa: BLE001  reported by execute_all with the run's id
            done.append((spec.run_id, exc))
    return done


def _waves(todo: dict[str, RunSpec]) -> list[list[RunSpec]]:
    """The runs of ``todo`` (by id) to train, then the cross-dataset runs whose training twins
    are among them (they only test the twins' weights, so they start once the twins are complete)."""
    later = {run_id for run_id, s in todo.items() if s.test_store_dir is not None and s.training_twin().run_id in todo}
    waves = ([s for run_id, s in todo.items() if run_id not in later], [todo[run_id] for run_id in todo if run_id in later])
    return [wave for wave in waves if wave]


def execute_all(
    specs: Sequence[RunSpec] | Iterable[RunSpec],
    runs_root: str | os.PathLike = RUNS_DIR,
    executor: str | Executor | None = "local",
    *,
    progress: bool = True,
    desc: str = "runs",
    threads: int = executors.THREADS_PER_RUN,
    bar: tqdm | None = None,
) -> list[Path]:
    """The complete run directories of ``specs`` (in their order), training the missing ones
    on ``executor``.

    Complete runs are reused; the missing ones are submitted at once, in chunks of runs that
    share a traced step (:func:`run_chunks`), and a progress bar counts them (runs done of runs
    needed, with an ETA); ``bar``: move this bar instead, so that one
    bar can span several grids. A cross-dataset run whose training twin
    (:meth:`RunSpec.training_twin`) is in the grid waits for it and then only tests its
    weights. A failing run does not stop the others: they finish and are
    cached, then one :class:`GridError` names every run that failed.
    """
    specs = list(specs)
    root = Path(runs_root)
    ids = [spec.run_id for spec in specs]
    todo = {run_id: spec for run_id, spec in zip(ids, specs) if not is_complete(root / run_id)}
    if todo:
        owned = not isinstance(executor, Executor)
        pool = executors.make_executor(executor)
        failures: dict[str, BaseException] = {}
        try:
            own_bar = bar is None
            if own_bar:
                bar = tqdm(total=len(todo), desc=desc, unit="run", disable=not progress, dynamic_ncols=True)
            start, done = time.perf_counter(), 0
            with bar if own_bar else contextlib.nullcontext():
                for wave in _waves(todo):
                    # At least two tasks per worker, so that the cores finish together.
                    size = max(1, min(CHUNK_RUNS, len(wave) // (2 * executors.worker_count(pool))))
                    futures = {pool.submit(_execute_chunk, chunk, str(root), threads): chunk
                               for chunk in run_chunks(wave, size)}
                    for future in as_completed(futures):
                        chunk = futures[future]
                        exc = future.exception()  # the worker itself failed: every run of its chunk
                        results = [(spec.run_id, exc) for spec in chunk] if exc is not None else future.result()
                        failures.update({run_id: e for run_id, e in results if e is not None})
                        done += len(chunk)
                        bar.update(len(chunk))
                        bar.set_postfix(failed=len(failures), s_per_run=f"{(time.perf_counter() - start) / done:.0f}")
        finally:
            if owned:
                pool.shutdown(wait=True)
        if failures:
            lines = "\n".join(f"  {run_id}: {type(e).__name__}: {e}" for run_id, e in failures.items())
            raise GridError(
                f"{len(failures)} of {len(todo)} runs failed (the others are complete under {root}):\n{lines}"
            )
    return [root / run_id for run_id in ids]


def list_runs(runs_root: str | os.PathLike = RUNS_DIR) -> pd.DataFrame:
    """One row per run directory: id, state (complete/partial), setting, lr, seed, metrics."""
    rows = []
    root = Path(runs_root)
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if not path.is_dir() or not (path / rundir.PARAMS).is_file():
            continue
        params = rundir.read_json(path / rundir.PARAMS, "move the directory out of the runs folder")
        complete = is_complete(path)
        row = {
            "run_id": params.get("run_id", path.name),
            "state": "complete" if complete else "partial",
            "setting": params.get("setting"),
            "learning_rate": params["train"]["learning_rate"],
            "seed": params["train"]["seed"],
            "path": str(path),
        }
        if complete:
            m = rundir.read_metrics(path)
            row.update(steps=m["steps"], stop_reason=m["stop_reason"], dev_rmse=m["dev"]["rmse"],
                       test_rmse=m["test"]["rmse"], test_mae=m["test"]["mae"], wall_time_s=m["wall_time_s"])
        rows.append(row)
    return pd.DataFrame(rows)


def grid(
    store_dir: str | os.PathLike,
    settings: Iterable[str] = ("G",),
    learning_rates: Iterable[float] | None = None,
    seeds: Iterable[int] = (0,),
    model_preset: str = "tiny",
    train_preset: str = "ci",
    test_store_dir: str | os.PathLike | None = None,
    **train_overrides: Any,
) -> list[RunSpec]:
    """Specs for every combination of settings x learning rates x seeds (Testing from
    ``test_store_dir`` when given: a cross-dataset grid)."""
    base = TrainConfig.preset(train_preset, **train_overrides)
    rates = list(learning_rates) if learning_rates else [base.learning_rate]
    return [
        RunSpec(setting=s, model_preset=model_preset, train=base.replace(learning_rate=float(lr)),
                store_dir=str(store_dir), seed=int(seed),
                test_store_dir=None if test_store_dir is None else str(test_store_dir))
        for s in settings for lr in rates for seed in seeds
    ]


def plan(specs: Iterable[RunSpec], runs_root: str | os.PathLike = RUNS_DIR) -> pd.DataFrame:
    """Dry run: which runs of ``specs`` are complete, partial (resumable) or missing."""
    rows = []
    for spec in specs:
        run_id = spec.run_id
        rows.append({"run_id": run_id, "state": rundir.state(runs_root, run_id), "setting": spec.label,
                     "learning_rate": spec.train_config.learning_rate, "seed": spec.train_config.seed})
    return pd.DataFrame(rows, columns=["run_id", "state", "setting", "learning_rate", "seed"])
