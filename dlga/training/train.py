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
from keras import ops
from keras.src.random import seed_generator as keras_seed_generator
from tensorflow.core.framework import summary_pb2
from tensorflow.python.framework import config as tf_config
from tqdm import tqdm  # tqdm.auto warns in every notebook kernel without ipywidgets

from dlga.training import data as data_lib
from dlga.training import metrics as metrics_lib
from dlga.runs import rundir
from dlga.config import TRAIN_PRESETS, ModelConfig, TrainConfig, compiled_key  # noqa: F401  also this module's public names
from dlga.model.network import build_model
from dlga.runs.rundir import HISTORY_COLUMNS  # noqa: F401  also this module's public name


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


class WarmupConstant(keras.optimizers.schedules.LearningRateSchedule):
    """lr * min(1, (step + 1) / warmup_steps): linear warm-up, then constant."""

    def __init__(self, learning_rate: float, warmup_steps: int):
        self.learning_rate = float(learning_rate)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        if self.warmup_steps <= 0:
            return ops.convert_to_tensor(self.learning_rate, "float32")
        frac = ops.minimum(1.0, (ops.cast(step, "float32") + 1.0) / self.warmup_steps)
        return self.learning_rate * frac

    def value(self, step: int) -> float:
        """The rate at ``step`` as :meth:`__call__` computes it (the same float32 operations),
        without running TensorFlow ops: the training loop logs it every step."""
        if self.warmup_steps <= 0:
            return float(np.float32(self.learning_rate))
        one = np.float32(1.0)
        frac = np.minimum(one, (np.float32(step) + one) / np.float32(self.warmup_steps))
        return float(np.float32(self.learning_rate) * frac)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps}


class FusedAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with one fused TensorFlow kernel per variable.

    Keras's Adam updates each variable with about 28 small ops (two powers, two square roots,
    three assignments, ...): on the tiny model's 36 variables that is 1,000 ops a step and about
    18 ms of an 80-115 ms step on one core, op dispatch rather than arithmetic. This subclass
    applies the same update (Kingma & Ba with the "epsilon hat" form Keras uses:
    ``m += (g - m)(1 - b1)``, ``v += (g^2 - v)(1 - b2)``,
    ``w -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)``) with TensorFlow's
    ``ResourceApplyAdam``, which computes it in one kernel. The variables, their names and
    checkpoints are Adam's; results agree with Adam to float32 rounding, not bit for bit
    (test_train). AMSGrad and sparse gradients take Adam's own path.
    """

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad or isinstance(gradient, tf.IndexedSlices) or not hasattr(variable, "handle"):
            return super().update_step(gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[index].handle, v=self._velocities[index].handle,
            beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype), use_locking=False,
        )


def make_schedule(config: TrainConfig) -> WarmupConstant:
    """The learning-rate schedule of ``config``: the optimizer's, and the one the loop logs."""
    return WarmupConstant(config.learning_rate, config.warmup_steps)


def make_optimizer(config: TrainConfig, model):
    """Adam(0.9, 0.999, 1e-8) with :func:`make_schedule` (:class:`FusedAdam` unless
    ``fused_adam`` is off); AdamW on kernels if ``decoupled``."""
    schedule = make_schedule(config)
    kwargs = dict(learning_rate=schedule, beta_1=0.9, beta_2=0.999, epsilon=1e-8)
    if config.decoupled:
        optimizer = keras.optimizers.AdamW(weight_decay=config.weight_decay, **kwargs)
        optimizer.exclude_from_weight_decay(
            var_list=[v for v in model.trainable_variables if "kernel" not in v.path]
        )
    else:
        optimizer = (FusedAdam if config.fused_adam else keras.optimizers.Adam)(**kwargs)
    return optimizer


def kernel_variables(model) -> list:
    """The variables that L2 applies to: every trainable variable whose path has 'kernel'."""
    kernels = [v for v in model.trainable_variables if "kernel" in v.path]
    if not kernels:
        raise ValueError(
            f"model {model.name!r} has no trainable variable whose path contains 'kernel'; "
            "name the weight matrices '...kernel' so that L2 applies to them"
        )
    return kernels


def make_train_step(model, train_config: TrainConfig, optimizer=None, strategy=None):
    """One optimisation step as a ``tf.function``: ``step(inputs, labels) -> (data_loss, l2)``.

    The loss is 1/2 MSE (Eq. 7) averaged over the global batch, plus the coupled L2 term
    ``weight_decay * sum(w**2) / 2`` over every kernel (none when ``decoupled``). Under a
    strategy the batch is split over its replicas and the losses are summed back. This is the
    step :func:`train` runs and the one ``python -m dlga bench`` times.
    """
    tc = train_config
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    if optimizer is None:
        optimizer = make_optimizer(tc, model)
    kernels = kernel_variables(model)
    variables = model.trainable_variables
    l2_factor = 0.0 if tc.decoupled else 0.5 * tc.weight_decay
    global_batch = tc.batch_size

    def compute_gradients(inputs, labels):
        with tf.GradientTape() as tape:
            score = model(inputs, training=True)["score"]
            per_frame = 0.5 * tf.square(tf.cast(score, tf.float32) - labels)  # Eq. 7
            data_loss = tf.nn.compute_average_loss(per_frame, global_batch_size=global_batch)
            l2 = l2_factor * tf.add_n([tf.reduce_sum(tf.square(k)) for k in kernels])
            # Gradients are summed over replicas: each adds its share of the L2 term.
            loss = data_loss + l2 / replicas
        return tape.gradient(loss, variables), data_loss, l2 / replicas

    grad_fn = tf.function(compute_gradients, jit_compile=tc.jit_compile)

    def replica_step(inputs, labels):
        grads, data_loss, l2 = grad_fn(inputs, labels)
        optimizer.apply_gradients(zip(grads, variables))
        return data_loss, l2

    @tf.function
    def train_step(inputs, labels):
        data_loss, l2 = strategy.run(replica_step, args=(inputs, labels))
        sum_ = tf.distribute.ReduceOp.SUM
        return strategy.reduce(sum_, data_loss, axis=None), strategy.reduce(sum_, l2, axis=None)

    return train_step

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


def make_predict_fn(model, input_size: int, jit: bool = False):
    """``predict({"image": (B, s, s, 3), "landmarks": (B, 68, 2)}) -> (B,)`` scores, as one
    ``tf.function`` for any batch size B (s = ``input_size``).

    The batch dimension is left open so that one trace serves every partition and its short
    last batch: a trace of the 24-patch graph costs about a second, and a shape-specialised
    function would trace twice per partition, six times per run.
    """
    signature = {
        "image": tf.TensorSpec((None, input_size, input_size, 3), tf.float32),
        "landmarks": tf.TensorSpec((None, 68, 2), tf.float32),
    }
    return tf.function(lambda x: model(x, training=False)["score"], input_signature=[signature], jit_compile=jit)


class _Evaluator:
    """Frame predictions of a partition, averaged per video (``predict``: :func:`make_predict_fn`)."""

    def __init__(self, predict, part, input_size: int, batch_size: int):
        self.part = part
        self.dataset = data_lib.evaluation_dataset(part, input_size, batch_size)
        self.frames = data_lib.frame_table(part)
        self._predict = predict

    def videos(self) -> pd.DataFrame:
        preds = np.concatenate([self._predict(x).numpy() for x in self.dataset]).astype(np.float64)
        frames = self.frames.assign(prediction=preds)
        return metrics_lib.video_scores(frames)


# --- the pieces of a run -----------------------------------------------------------------------
STOP_REASONS = ("running", "max_steps", "early_stopping", "diverged")
"""Why training ended. The checkpoint keeps the position in this tuple (a tf.Variable holds
numbers); ``metrics.json`` and :attr:`TrainState.stop_reason` give the name."""


class TrainState:
    """The checkpointed counters of a run: step, best Development RMSE and its step, the
    early-stopping state, the stop reason and the wall time so far (tf.Variables)."""

    def __init__(self) -> None:
        self.variables = {
            "step": tf.Variable(0, dtype=tf.int64, trainable=False),
            "best_dev_rmse": tf.Variable(np.inf, dtype=tf.float64, trainable=False),
            "best_step": tf.Variable(-1, dtype=tf.int64, trainable=False),
            "ema_loss": tf.Variable(np.nan, dtype=tf.float64, trainable=False),
            "best_ema_loss": tf.Variable(np.inf, dtype=tf.float64, trainable=False),
            "since_best": tf.Variable(0, dtype=tf.int64, trainable=False),
            "stop_code": tf.Variable(0, dtype=tf.int64, trainable=False),
            "wall_time": tf.Variable(0.0, dtype=tf.float64, trainable=False),
        }

    def __getitem__(self, name: str):
        return self.variables[name]

    @property
    def step(self) -> int:
        return int(self.variables["step"].numpy())

    @property
    def best_dev_rmse(self) -> float:
        return float(self.variables["best_dev_rmse"].numpy())

    @property
    def best_step(self) -> int:
        return int(self.variables["best_step"].numpy())

    @property
    def stop_reason(self) -> str:
        return STOP_REASONS[int(self.variables["stop_code"].numpy())]

    def set_stop_reason(self, reason: str) -> None:
        if reason not in STOP_REASONS:
            raise ValueError(f"stop reason must be one of {STOP_REASONS}, got {reason!r}")
        self.variables["stop_code"].assign(STOP_REASONS.index(reason))


class EarlyStopping:
    """Stop when the smoothed per-step data loss has not reached a new minimum for ``patience`` steps.

    The watched value is an exponential moving average with factor ``smoothing`` (0: the raw
    loss); the first step starts it. ``patience`` 0 never stops.
    """

    def __init__(self, patience: int, smoothing: float):
        self.patience = int(patience)
        self.smoothing = float(smoothing)
        self.ema = math.nan
        self.best = math.inf
        self.since_best = 0

    def update(self, loss: float) -> bool:
        """Take one step's loss; True when training should stop."""
        self.ema = loss if math.isnan(self.ema) else self.smoothing * self.ema + (1 - self.smoothing) * loss
        if self.ema < self.best:
            self.best, self.since_best = self.ema, 0
        else:
            self.since_best += 1
        return bool(self.patience) and self.since_best >= self.patience

    def load(self, state: TrainState) -> None:
        self.ema = float(state["ema_loss"].numpy())
        self.best = float(state["best_ema_loss"].numpy())
        self.since_best = int(state["since_best"].numpy())

    def store(self, state: TrainState) -> None:
        state["ema_loss"].assign(self.ema)
        state["best_ema_loss"].assign(self.best)
        state["since_best"].assign(self.since_best)


class Checkpoints:
    """``checkpoints/latest`` (model, optimizer and :class:`TrainState`, to resume) and
    ``checkpoints/best`` (the model weights with the lowest Development RMSE so far)."""

    def __init__(self, run_dir: Path, model, optimizer, state: TrainState):
        self._full = tf.train.Checkpoint(model=model, optimizer=optimizer, **state.variables)
        self._latest = tf.train.CheckpointManager(
            self._full, str(rundir.checkpoint_dir(run_dir, rundir.LATEST)), max_to_keep=1)
        self._weights = tf.train.Checkpoint(model=model)
        self._best = tf.train.CheckpointManager(
            self._weights, str(rundir.checkpoint_dir(run_dir, rundir.BEST)), max_to_keep=1)

    def resume(self) -> bool:
        """Restore the latest full state if there is one; True if restored."""
        if not self._latest.latest_checkpoint:
            return False
        self._full.restore(self._latest.latest_checkpoint).assert_existing_objects_matched()
        return True

    def save_latest(self, step: int) -> None:
        self._latest.save(checkpoint_number=step)

    def save_best(self, step: int) -> None:
        self._best.save(checkpoint_number=step)

    def restore_best(self) -> bool:
        """Load the best weights into the model if any were saved; True if loaded."""
        if not self._best.latest_checkpoint:
            return False
        self._weights.restore(self._best.latest_checkpoint).assert_existing_objects_matched()
        return True


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
        (one of :data:`STOP_REASONS`: ``max_steps``, ``early_stopping``, or ``diverged`` when
        the training loss became infinite or NaN; the weights evaluated are then the best
        Development checkpoint, or the initial weights if none was saved yet), ``best_step``,
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
            name: _Evaluator(compiled.predict, part, self.config.input_size, tc.eval_batch_size)
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
