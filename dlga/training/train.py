"""Training and evaluation of DLGA-CNN (paper section 4.2-4.3.1).

One call of :func:`train` trains a model on the Training partition of a store, evaluates
Development every ``eval_every`` steps, keeps the checkpoint with the lowest Development RMSE
(per video), and evaluates Testing once, at the end, with that checkpoint. Testing is never
looked at before (the paper also stopped on test accuracy; we do not).

What the paper fixes: Adam (0.9, 0.999, 1e-8), L2 5e-4, lr 1e-6, batch 32, 50k iterations,
loss 1/2 MSE (Eq. 7), stop when the training loss has not decreased for 200 iterations.

Decisions (the book's Decisions chapter, book/decisions.md, "Architecture"):

* L2 is coupled, in the TensorFlow convention of the paper's time:
  ``loss += weight_decay * sum(w**2) / 2`` over every kernel (Keras ``L2(2.5e-4)``); biases
  are not decayed. ``decoupled=True`` uses AdamW instead (decay ``lr * weight_decay * w``).
* A linear warm-up of the learning rate over ``warmup_steps`` (``ci``/``demo``: 100).
* Early stopping watches an exponential moving average of the per-step data loss
  (1/2 MSE, without the L2 term, which keeps falling as weights shrink), with factor
  ``loss_smoothing`` (0 = raw per-step loss): training stops when it has not reached a new
  minimum for ``patience`` steps. A raw per-step loss on 32 frames is too noisy to stop on.
* Runs are exact on resume: model, optimizer, step, best-so-far and early-stopping state are
  checkpointed at every evaluation, and the data order is a function of ``(seed, step)``
  (:mod:`dlga.training.data`), so an interrupted run ends with the metrics of an uninterrupted one.

This module is the run loop; its pieces have modules of their own: the schedule and the
optimizer (:mod:`dlga.training.optimizer`), the training and prediction steps
(:mod:`dlga.training.step`), the checkpointed state (:mod:`dlga.training.checkpoints`) and
early stopping (:mod:`dlga.training.early_stopping`).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import os
import platform
import random
import shutil
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Sequence

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from keras.src.random import seed_generator as keras_seed_generator
from tensorflow.core.framework import summary_pb2
from tensorflow.python.framework import config as tf_config
from tqdm import tqdm  # tqdm.auto warns in every notebook kernel without ipywidgets

from dlga.config import TRAIN_PRESETS, ModelConfig, TrainConfig, compiled_key  # noqa: F401  also this module's public names
from dlga.model.network import build_model
from dlga.runs import rundir
from dlga.runs.rundir import HISTORY_COLUMNS  # noqa: F401  also this module's public name
from dlga.training import data as data_lib
from dlga.training import metrics as metrics_lib
from dlga.training.checkpoints import Checkpoints, TrainState
from dlga.training.early_stopping import EarlyStopping
from dlga.training.optimizer import make_optimizer, make_schedule
from dlga.training.step import Evaluator, make_predict_fn, make_train_step


def runtime_versions() -> dict[str, str]:
    """The versions a run's ``metrics.json`` records (of the modules this process imported)
    and the platform: provenance only; the run id hashes
    :func:`dlga.runs.cache.numerics_identity` instead."""
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": importlib.metadata.version("scikit-learn"),
        "platform": platform.platform(),
    }


# The scalars-plugin metadata is what ``tf.summary.scalar`` writes, so TensorBoard shows them.
_SCALARS = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))


def _scalar(tag: str, value: float) -> None:
    """A TensorBoard scalar without the ``tensorboard`` package (``tf.summary.scalar`` needs it)."""
    tf.summary.write(tag, tf.constant(value, tf.float32), metadata=_SCALARS)


class _StepScalars:
    """The TensorBoard scalars written every step (``tags``), in one traced call: three eager
    writes cost a demo run about 0.35 s of its 12."""

    def __init__(self, writer, tags: Sequence[str]):
        self.tags = tuple(tags)

        def write(step, values):
            with writer.as_default(step=step):
                for i, tag in enumerate(self.tags):
                    tf.summary.write(tag, values[i], metadata=_SCALARS)

        self._write = tf.function(write, input_signature=[
            tf.TensorSpec((), tf.int64), tf.TensorSpec((len(self.tags),), tf.float32)])

    def __call__(self, step: int, *values: float) -> None:
        self._write(tf.constant(step, tf.int64), tf.constant(values, tf.float32))


def final_report(
    *,
    videos: dict[str, pd.DataFrame],
    state: TrainState,
    train_config: TrainConfig,
    model_config: ModelConfig,
    parts: dict[str, Any],
    replicas: int,
    wall_time_s: float,
    bootstrap: int,
) -> dict[str, Any]:
    """The metrics of a finished run (the ``metrics.json`` :func:`train` returns).

    Args:
        videos: per-video predictions of ``Training``, ``Development`` and ``Testing``
            (:func:`dlga.training.metrics.video_scores`) with the selected weights.
        state: the run's counters (steps, stop reason, best step and RMSE).
        train_config, model_config: the run's configurations (``warm_start_bias`` set).
        parts: the loaded partitions (for the videos they skipped).
        replicas: devices the batch was split over.
        wall_time_s: seconds of training and evaluation, over all attempts.
        bootstrap: resamples for the Testing intervals (0: none).
    """
    train_video_labels = videos["Training"]["bdi"].to_numpy(float)
    baseline = {}
    for name, key in (("Development", "dev"), ("Testing", "test")):
        v = videos[name]
        base = v.assign(prediction=metrics_lib.mean_predictor(train_video_labels, len(v)))
        baseline[key] = metrics_lib.summarize(base)
    test = videos["Testing"]
    return {
        "dev": metrics_lib.summarize(videos["Development"]),
        "test": metrics_lib.summarize(test, bootstrap=bootstrap, seed=train_config.seed),
        "train": metrics_lib.summarize(videos["Training"]),
        "test_band_confusion": metrics_lib.band_confusion(test["bdi"], test["prediction"]).to_numpy().tolist(),
        "bands": list(metrics_lib.BAND_NAMES),
        "mean_predictor": baseline,
        "steps": state.step,
        "stop_reason": state.stop_reason,
        "best_step": state.best_step,
        "best_dev_rmse": state.best_dev_rmse,
        "wall_time_s": round(wall_time_s, 3),
        "seed": train_config.seed,
        "replicas": replicas,
        "skipped_videos": {name: part.skipped for name, part in parts.items() if part.skipped},
        "versions": runtime_versions(),
        "model_config": model_config.to_dict(),
        "train_config": train_config.to_dict(),
    }


def train(
    model_config: ModelConfig,
    train_config: TrainConfig,
    store_dir: str | os.PathLike,
    run_dir: str | os.PathLike,
    *,
    strategy=None,
    progress: bool = True,
    model_fn: Callable[[ModelConfig], Any] | None = None,
    on_step: Callable[[int, dict], None] | None = None,
    bootstrap: int = 2000,
    test_store_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Train, select by Development RMSE, evaluate Testing once; resume if ``run_dir`` has a checkpoint.

    Args:
        model_config: the architecture; its ``warm_start_bias`` is set here to the mean
            training label (per frame).
        train_config: the schedule.
        store_dir: a preprocessed store with Training, Development and Testing videos.
        run_dir: written (names from :mod:`dlga.runs.rundir`): ``checkpoints/latest`` (full state,
            for resuming), ``checkpoints/best`` (weights with the best Development RMSE),
            ``tb/`` (TensorBoard), ``history.csv`` (one row per step) and ``predictions.csv``.
        strategy: a ``tf.distribute.Strategy`` (default: the default strategy). The batch is
            split over its replicas; ``batch_size`` must divide evenly.
        progress: show a tqdm bar with loss, Development RMSE and ETA.
        model_fn: builds the Keras model from a ModelConfig (default:
            :func:`dlga.model.network.build_model`); inputs ``{"image", "landmarks"}``, output
            ``{"score": (B,)}``.
        on_step: called after every step as ``on_step(step, logs)``; may raise to stop.
        bootstrap: resamples for the 95 % intervals of the Testing metrics (0: none).
        test_store_dir: evaluate the Testing partition of this other store instead
            (cross-dataset runs); Training and Development still come from ``store_dir``.

    Returns:
        A JSON-serialisable dict (:func:`final_report`): ``dev``/``test``/``train`` metric
        dicts (per video and per session, see :func:`dlga.training.metrics.summarize`),
        ``test_band_confusion``, ``mean_predictor`` (baseline), ``steps``, ``stop_reason``
        (one of :data:`~dlga.training.checkpoints.STOP_REASONS`: ``max_steps``, ``early_stopping``,
        or ``diverged`` when the training loss became infinite or NaN; the weights evaluated are
        then the best Development checkpoint, or the initial weights if none was saved yet),
        ``best_step``,
        ``wall_time_s``, ``seed``, ``versions``, ``model_config``, ``train_config``.
    """
    if not isinstance(model_config, ModelConfig):
        raise TypeError(f"model_config must be a ModelConfig, got {type(model_config).__name__}")
    if not isinstance(train_config, TrainConfig):
        raise TypeError(f"train_config must be a TrainConfig, got {type(train_config).__name__}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    if train_config.batch_size % replicas:
        raise ValueError(
            f"batch_size={train_config.batch_size} does not split over {replicas} replicas; "
            f"use a multiple of {replicas}"
        )

    with _seeded(train_config):
        return _Run(
            model_config=model_config, train_config=train_config, store_dir=store_dir, run_dir=run_dir,
            strategy=strategy, model_fn=model_fn or build_model, test_store_dir=test_store_dir,
        ).execute(progress=progress, on_step=on_step, bootstrap=bootstrap)


@contextlib.contextmanager
def _seeded(train_config: TrainConfig):
    """The run's seed, and op determinism for the uncompiled path, for the block's duration.

    XLA refuses MaxPoolGrad while op determinism is on (even on CPU), so the flag is set only
    for the uncompiled path; XLA's CPU code is deterministic on one machine (tested).
    """
    keras.utils.set_random_seed(train_config.seed)
    previous_determinism = _op_determinism(not train_config.jit_compile)
    try:
        yield
    finally:
        _op_determinism(previous_determinism)


def test_elsewhere(
    trained_dir: str | os.PathLike,
    model_config: ModelConfig,
    train_config: TrainConfig,
    store_dir: str | os.PathLike,
    run_dir: str | os.PathLike,
    test_store_dir: str | os.PathLike,
    *,
    bootstrap: int = 2000,
) -> dict[str, Any]:
    """What :func:`train` returns with ``test_store_dir``, without training again.

    ``trained_dir`` is a complete run of the same model, schedule, seed and ``store_dir``
    (the same run but for its Testing store: :meth:`dlga.runs.cache.RunSpec.training_twin`). Training
    is deterministic on one machine, so training again would give its weights bit for bit: its
    selected weights, history and counters are taken, and every partition is evaluated with
    them, Testing from ``test_store_dir`` (test_runs checks the result against a run trained
    anew). The metrics name the run under ``"trained_in"``; ``wall_time_s`` is its training
    time plus this evaluation.
    """
    trained_dir, run_dir = Path(trained_dir), Path(run_dir)
    best = rundir.checkpoint_dir(trained_dir, rundir.BEST)
    if best.is_dir():
        shutil.copytree(best, rundir.checkpoint_dir(run_dir, rundir.BEST), dirs_exist_ok=True)
    with _seeded(train_config):  # the seed builds the initial weights, for a run that diverged at once
        run = _Run(model_config=model_config, train_config=train_config, store_dir=store_dir, run_dir=run_dir,
                   strategy=tf.distribute.get_strategy(), model_fn=build_model, test_store_dir=test_store_dir)
        run.take_training_of(trained_dir)
        return {**run.finish(bootstrap), "trained_in": trained_dir.name}


@contextlib.contextmanager
def dtype_policy(name: str):
    """Build layers under the Keras dtype policy ``name`` (``"float32"``, ``"mixed_bfloat16"``)
    within this block. A layer keeps the policy it was built with, so only building needs it;
    the process's global policy is restored after, for whatever runs next in the worker."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@contextlib.contextmanager
def private_default_seeds(seed: int):
    """Keras draws the seed of every unseeded initializer from Python's global ``random``;
    within this block it draws them from a generator of its own, seeded with ``seed``.

    Other threads of the process (a Dask worker's, for one) also draw from the global
    ``random``, so without this a model's initial weights depend on what ran beside it. The
    private generator yields what the global one yields right after ``random.seed(seed)``
    (as ``keras.utils.set_random_seed`` leaves it), so single-threaded runs are unchanged.
    """
    previous = keras_seed_generator.python_random  # private Keras name: no public hook exists
    keras_seed_generator.python_random = random.Random(seed)
    try:
        yield
    finally:
        keras_seed_generator.python_random = previous


def _op_determinism(enabled: bool) -> bool:
    """Set TensorFlow's process-wide op determinism; return the previous setting."""
    previous = tf_config.is_op_determinism_enabled()
    if enabled:
        tf_config.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()
    return previous


class CompiledModel:
    """A model with its optimizer and its traced training step and predict function.

    Tracing the step and TensorFlow's first optimisation of its graph cost a tiny G run about
    2.5 s on one core (a ``ci`` run's 80 steps take about 5 s), the predict function about
    one more. A worker process trains many runs of one architecture and schedule one after
    another, so it keeps the last few of these (:data:`COMPILED_CACHE_SIZE`, keyed by
    :func:`compiled_key`) and starts the next run from them: :meth:`start_from` copies in the
    new run's freshly built initial weights and resets the optimizer's variables to their
    initial values. The graph holds no random op and nothing of a run but its variables, so a
    run started this way computes what it computes in a fresh process, bit for bit
    (test_train checks it).
    """

    def __init__(self, model, train_config: TrainConfig, input_size: int, strategy=None):
        self.model = model
        self.optimizer = make_optimizer(train_config, model)
        self.optimizer.build(model.trainable_variables)
        self._optimizer_start = [v.numpy() for v in self.optimizer.variables]
        self.train_step = make_train_step(model, train_config, self.optimizer, strategy)
        self.predict = make_predict_fn(model, input_size, train_config.jit_compile)

    def start_from(self, model) -> None:
        """Take ``model``'s weights (same architecture) and reset the optimizer (step 0, no moments)."""
        self.model.set_weights(model.get_weights())
        for variable, value in zip(self.optimizer.variables, self._optimizer_start):
            variable.assign(value)

    @classmethod
    def for_run(cls, fresh, model_config: ModelConfig, train_config: TrainConfig, strategy, cacheable: bool):
        """The compiled model a run trains: this process's cached one for its
        :func:`compiled_key`, started from ``fresh`` (the run's newly built model), else a new
        one around ``fresh``, kept for the next run when ``cacheable``."""
        if not cacheable:
            return cls(fresh, train_config, model_config.input_size, strategy)
        key = compiled_key(model_config, train_config)
        compiled = _COMPILED.pop(key, None)
        if compiled is None:
            compiled = cls(fresh, train_config, model_config.input_size, strategy)
        else:
            compiled.start_from(fresh)
        _COMPILED[key] = compiled  # most recently used last
        while len(_COMPILED) > COMPILED_CACHE_SIZE:
            _COMPILED.popitem(last=False)
        return compiled


COMPILED_CACHE_SIZE = 3
_COMPILED: "OrderedDict[str, CompiledModel]" = OrderedDict()

def _default_strategy(strategy) -> bool:
    # Other strategies hold their own variables and devices: their runs are not cached.
    return not tf.distribute.has_strategy() and strategy is tf.distribute.get_strategy()


class _Run:
    """One call of :func:`train`: the data, the model and its state, the loop, the final evaluation."""

    def __init__(self, *, model_config, train_config, store_dir, run_dir, strategy, model_fn, test_store_dir):
        self.t0 = time.perf_counter()
        self.tc = tc = train_config
        self.run_dir = run_dir
        self.strategy = strategy
        # Cross-dataset runs (train on AVEC2013, test on AVEC2014) take Testing elsewhere.
        sources = {"Training": store_dir, "Development": store_dir, "Testing": test_store_dir or store_dir}
        self.parts = {
            name: data_lib.cached_partition(source, name) if tc.in_memory
            else data_lib.load_partition(source, name, in_memory=False)
            for name, source in sources.items()
        }
        self.config = model_config.replace(warm_start_bias=float(np.mean(self.parts["Training"].labels)))
        with strategy.scope(), private_default_seeds(tc.seed), dtype_policy(tc.precision):
            compiled = CompiledModel.for_run(model_fn(self.config), self.config, tc, strategy,
                                             cacheable=model_fn is build_model and _default_strategy(strategy))
            self.model, self.optimizer = compiled.model, compiled.optimizer
            self.state = TrainState()
        self.checkpoints = Checkpoints(run_dir, self.model, self.optimizer, self.state)
        self.history: list[dict] = []
        self.initial_weights = None
        # The Development videos of the best checkpoint, set where it is saved: the final
        # evaluation restores those weights and would compute them again.
        self.best_dev_videos: pd.DataFrame | None = None
        if self.checkpoints.resume():
            history_path = run_dir / rundir.HISTORY
            if history_path.is_file():
                old = rundir.read_history(run_dir)
                self.history = old[old["step"] <= self.state.step].to_dict("records")
        else:
            # Kept to evaluate a run that diverges before its first checkpoint.
            self.initial_weights = [w.numpy() for w in self.model.weights]
        self.elapsed_before = float(self.state["wall_time"].numpy())
        self.train_step = compiled.train_step
        self.evaluators = {
            name: Evaluator(compiled.predict, part, self.config.input_size, tc.eval_batch_size)
            for name, part in self.parts.items()
        }
        self.writer = tf.summary.create_file_writer(str(run_dir / rundir.TENSORBOARD))

    def wall_time(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t0

    def evaluate_dev(self) -> tuple[float, float, pd.DataFrame]:
        videos = self.evaluators["Development"].videos()
        y, p = videos["bdi"].to_numpy(float), videos["prediction"].to_numpy(float)
        return metrics_lib.rmse(y, p), metrics_lib.mae(y, p), videos

    def save(self, step: int, early: EarlyStopping, stop_reason: str) -> None:
        """Checkpoint the full state at ``step`` and write the history so far."""
        early.store(self.state)
        self.state.set_stop_reason(stop_reason)
        self.state["wall_time"].assign(self.wall_time())
        self.checkpoints.save_latest(step)
        rundir.write_history(self.run_dir, self.history)

    def loop(self, progress: bool, on_step) -> None:
        """Train from the current step until max_steps, early stopping or divergence."""
        tc = self.tc
        start = self.state.step
        if self.state.stop_reason != "running" or start >= tc.max_steps:
            return
        dataset = data_lib.training_dataset(
            self.parts["Training"], self.config.input_size, tc.batch_size, tc.max_steps, tc.seed,
            start_step=start, frames_per_video=tc.frames_per_video, shuffle_buffer=tc.shuffle_buffer,
        )
        early = EarlyStopping(tc.patience, tc.loss_smoothing)
        early.load(self.state)
        schedule = make_schedule(tc)
        step_scalars = _StepScalars(self.writer, ("train/loss", "train/l2", "train/lr"))
        bar = tqdm(total=tc.max_steps, initial=start, disable=not progress, desc="train", unit="step",
                   dynamic_ncols=True)
        try:
            for inputs, labels in self.strategy.experimental_distribute_dataset(dataset):
                lr = schedule.value(self.state.step)  # the rate of this step's update
                data_loss, l2 = self.train_step(inputs, labels)
                step = int(self.state["step"].assign_add(1).numpy())
                loss, l2 = float(data_loss), float(l2)
                if not math.isfinite(loss):
                    stop = "diverged"
                elif early.update(loss):
                    stop = "early_stopping"
                elif step >= tc.max_steps:
                    stop = "max_steps"
                else:
                    stop = "running"
                row = {"step": step, "train_loss": loss, "l2": l2, "dev_rmse": np.nan, "dev_mae": np.nan, "lr": lr}
                step_scalars(step, loss, l2, lr)
                checkpoint = step % tc.eval_every == 0 or stop != "running"
                # Weights that diverged are not evaluated: the best checkpoint so far stands.
                if checkpoint and stop != "diverged":
                    self.evaluate_and_select(step, row)
                self.history.append(row)
                if checkpoint:
                    self.save(step, early, stop)
                bar.update(1)
                if step % 10 == 0 or stop != "running":
                    bar.set_postfix(loss=f"{early.ema:.3g}", best_dev_rmse=f"{self.state.best_dev_rmse:.2f}")
                if on_step is not None:
                    on_step(step, row)
                if stop != "running":
                    break
        finally:
            bar.close()
            self.writer.flush()

    def evaluate_and_select(self, step: int, row: dict) -> None:
        """Evaluate Development into ``row``; save the weights if they are the best so far."""
        dev_rmse, dev_mae, videos = self.evaluate_dev()
        row.update(dev_rmse=dev_rmse, dev_mae=dev_mae)
        with self.writer.as_default(step=step):
            _scalar("dev/rmse", dev_rmse)
            _scalar("dev/mae", dev_mae)
        if dev_rmse < self.state.best_dev_rmse:
            self.state["best_dev_rmse"].assign(dev_rmse)
            self.state["best_step"].assign(step)
            self.checkpoints.save_best(step)
            self.best_dev_videos = videos

    def select_final_weights(self) -> None:
        """Load the best Development weights; after a divergence without any, the initial ones."""
        if self.checkpoints.restore_best():
            return
        if self.state.stop_reason == "diverged":
            if self.initial_weights is None:
                raise FloatingPointError(
                    f"{self.run_dir}: the training loss diverged and the run has no Development checkpoint "
                    f"to fall back on; lower learning_rate ({self.tc.learning_rate}) and rerun in a new run_dir"
                )
            self.model.set_weights(self.initial_weights)

    def execute(self, *, progress: bool, on_step, bootstrap: int) -> dict[str, Any]:
        self.loop(progress, on_step)
        return self.finish(bootstrap)

    def take_training_of(self, trained_dir: Path) -> None:
        """Take the counters and history of the complete run in ``trained_dir`` as this run's
        own (its best weights were copied in before the checkpoints were opened)."""
        metrics = rundir.read_metrics(trained_dir)
        for name, value in (("step", metrics["steps"]), ("best_step", metrics["best_step"]),
                            ("best_dev_rmse", metrics["best_dev_rmse"])):
            self.state[name].assign(value)
        self.state.set_stop_reason(metrics["stop_reason"])
        self.elapsed_before = float(metrics["wall_time_s"])
        self.history = rundir.read_history(trained_dir).to_dict("records")

    def finish(self, bootstrap: int) -> dict[str, Any]:
        """Select the final weights, evaluate every partition once, write the predictions."""
        self.select_final_weights()
        videos = {name: self.best_dev_videos if name == "Development" and self.best_dev_videos is not None
                  else ev.videos() for name, ev in self.evaluators.items()}
        predictions = pd.concat([videos[p] for p in ("Training", "Development", "Testing")], ignore_index=True)
        rundir.write_predictions(self.run_dir, predictions)
        rundir.write_history(self.run_dir, self.history)
        return final_report(
            videos=videos, state=self.state, train_config=self.tc, model_config=self.config, parts=self.parts,
            replicas=self.strategy.num_replicas_in_sync, wall_time_s=self.wall_time(), bootstrap=bootstrap,
        )
