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
  (:mod:`dlga.data`), so an interrupted run ends with the metrics of an uninterrupted one.
"""

from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from dlga import data as data_lib
from dlga import metrics as metrics_lib
from dlga.config import JsonConfig, ModelConfig

TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    # The paper's schedule (section 4.2.1); for GPUs and real data.
    "paper": {"learning_rate": 1e-6, "batch_size": 32, "max_steps": 50_000, "patience": 200,
              "eval_every": 500, "warmup_steps": 0},
    # `make book`: hundreds of steps on 2 CPU cores; lr chosen by the learning-rate study.
    "demo": {"learning_rate": 1e-3, "batch_size": 32, "max_steps": 1000, "patience": 200,
             "eval_every": 50, "warmup_steps": 100},
    # Tests and nbval: minutes for everything.
    "ci": {"learning_rate": 1e-3, "batch_size": 16, "max_steps": 300, "patience": 200,
           "eval_every": 25, "warmup_steps": 100},
}

STOP_REASONS = {0: "running", 1: "max_steps", 2: "early_stopping"}
HISTORY_COLUMNS = ["step", "train_loss", "l2", "dev_rmse", "dev_mae", "lr"]


@dataclass(frozen=True)
class TrainConfig(JsonConfig):
    """The training schedule of one run.

    Args:
        learning_rate: peak Adam learning rate (paper: 1e-6).
        batch_size: frames per step, over all replicas (paper: 32).
        max_steps: iteration budget (paper: 50k).
        patience: early stopping: steps without a new minimum of the smoothed training loss
            (paper: 200). 0 disables early stopping.
        eval_every: steps between Development evaluations (and checkpoints).
        warmup_steps: linear learning-rate warm-up from lr/warmup_steps to lr.
        weight_decay: L2 factor (paper: 5e-4), see ``decoupled``.
        decoupled: False: coupled L2 in the loss (paper). True: AdamW decoupled decay.
        seed: seeds initialisation and the data order.
        frames_per_video: at most this many frames of each video per epoch (None: all).
        jit_compile: compile the gradient and predict steps with XLA. Off by default: with the
            grouped per-patch model, XLA's constant folding took minutes to compile a tiny G
            step on CPU (TF 2.21), while the uncompiled step costs ~0.06 s. XLA refuses
            MaxPoolGrad under TensorFlow's op determinism, so that flag is on only when this
            is False.
        shuffle_buffer: 0: uniform shuffle of all frames every epoch. >0: streaming shuffle
            through a buffer of this many frames (for stores read with ``in_memory=False``).
        loss_smoothing: EMA factor of the training loss watched by early stopping.
        eval_batch_size: frames per evaluation batch.
        in_memory: load all frames of a partition into memory (else stream videos).
    """

    learning_rate: float = 1e-6
    batch_size: int = 32
    max_steps: int = 50_000
    patience: int = 200
    eval_every: int = 500
    warmup_steps: int = 0
    weight_decay: float = 5e-4
    decoupled: bool = False
    seed: int = 0
    frames_per_video: int | None = None
    jit_compile: bool = False
    shuffle_buffer: int = 0
    loss_smoothing: float = 0.9
    eval_batch_size: int = 64
    in_memory: bool = True

    def __post_init__(self) -> None:
        if not (isinstance(self.learning_rate, (int, float)) and 0 < self.learning_rate < 10):
            raise ValueError(f"learning_rate must be a positive number below 10, got {self.learning_rate!r}")
        positive = ("batch_size", "max_steps", "eval_every", "eval_batch_size")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("patience", "warmup_steps", "seed", "shuffle_buffer"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.frames_per_video is not None and (
            not isinstance(self.frames_per_video, int) or self.frames_per_video < 1
        ):
            raise ValueError(f"frames_per_video must be None or a positive integer, got {self.frames_per_video!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not 0 <= self.loss_smoothing < 1:
            raise ValueError(f"loss_smoothing must be in [0, 1), got {self.loss_smoothing!r}")
        for name in ("decoupled", "jit_compile", "in_memory"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

    @classmethod
    def preset(cls, name: str = "paper", **overrides: Any) -> "TrainConfig":
        """A named schedule (``paper``, ``demo``, ``ci``) with optional field overrides."""
        if name not in TRAIN_PRESETS:
            raise ValueError(f"unknown training preset {name!r}; choose one of {sorted(TRAIN_PRESETS)}")
        return cls(**{**TRAIN_PRESETS[name], **overrides})


def library_versions() -> dict[str, str]:
    import keras
    import sklearn
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
        "platform": platform.platform(),
    }


def _lr_schedule(config: TrainConfig):
    import keras

    class WarmupConstant(keras.optimizers.schedules.LearningRateSchedule):
        """lr * min(1, (step + 1) / warmup_steps): linear warm-up, then constant."""

        def __init__(self, learning_rate: float, warmup_steps: int):
            self.learning_rate = float(learning_rate)
            self.warmup_steps = int(warmup_steps)

        def __call__(self, step):
            import keras.ops as ops

            if self.warmup_steps <= 0:
                return ops.convert_to_tensor(self.learning_rate, "float32")
            frac = ops.minimum(1.0, (ops.cast(step, "float32") + 1.0) / self.warmup_steps)
            return self.learning_rate * frac

        def get_config(self):
            return {"learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps}

    return WarmupConstant(config.learning_rate, config.warmup_steps)


def make_optimizer(config: TrainConfig, model):
    """Adam(0.9, 0.999, 1e-8) with the warm-up schedule; AdamW on kernels if ``decoupled``."""
    import keras

    schedule = _lr_schedule(config)
    kwargs = dict(learning_rate=schedule, beta_1=0.9, beta_2=0.999, epsilon=1e-8)
    if config.decoupled:
        optimizer = keras.optimizers.AdamW(weight_decay=config.weight_decay, **kwargs)
        optimizer.exclude_from_weight_decay(
            var_list=[v for v in model.trainable_variables if "kernel" not in v.path]
        )
    else:
        optimizer = keras.optimizers.Adam(**kwargs)
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
    import tensorflow as tf

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


def _scalar(tag: str, value: float) -> None:
    """A TensorBoard scalar without the ``tensorboard`` package (``tf.summary.scalar`` needs it).

    The scalars-plugin metadata is what ``tf.summary.scalar`` writes, so TensorBoard shows it.
    """
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    meta = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    tf.summary.write(tag, tf.constant(value, tf.float32), metadata=meta)


def _default_model_fn(config: ModelConfig):
    from dlga.model import build_model

    return build_model(config)


class _Evaluator:
    """Frame predictions of a partition, averaged per video."""

    def __init__(self, model, part, input_size: int, batch_size: int, jit: bool):
        import tensorflow as tf

        self.part = part
        self.dataset = data_lib.evaluation_dataset(part, input_size, batch_size)
        self.frames = data_lib.frame_table(part)
        self._predict = tf.function(lambda x: model(x, training=False)["score"], jit_compile=jit)

    def videos(self) -> pd.DataFrame:
        preds = np.concatenate([self._predict(x).numpy() for x in self.dataset]).astype(np.float64)
        frames = self.frames.assign(prediction=preds)
        return metrics_lib.video_scores(frames)


def train(
    model_config: ModelConfig,
    train_config: TrainConfig,
    store_dir: str | os.PathLike,
    run_dir: str | os.PathLike,
    strategy=None,
    progress: bool = True,
    *,
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
        run_dir: written: ``checkpoints/latest`` (full state, for resuming),
            ``checkpoints/best`` (weights with the best Development RMSE), ``tb/``
            (TensorBoard), ``history.csv`` (one row per step) and ``predictions.csv``.
        strategy: a ``tf.distribute.Strategy`` (default: the default strategy). The batch is
            split over its replicas; ``batch_size`` must divide evenly.
        progress: show a tqdm bar with loss, Development RMSE and ETA.
        model_fn: builds the Keras model from a ModelConfig (default:
            :func:`dlga.model.build_model`); inputs ``{"image", "landmarks"}``, output
            ``{"score": (B,)}``.
        on_step: called after every step as ``on_step(step, logs)``; may raise to stop.
        bootstrap: resamples for the 95 % intervals of the Testing metrics (0: none).
        test_store_dir: evaluate the Testing partition of this other store instead
            (cross-dataset runs); Training and Development still come from ``store_dir``.

    Returns:
        A JSON-serialisable dict: ``dev``/``test``/``train`` metric dicts (per video and per
        session, see :func:`dlga.metrics.summarize`), ``test_band_confusion``,
        ``mean_predictor`` (baseline), ``steps``, ``stop_reason``, ``best_step``,
        ``wall_time_s``, ``seed``, ``versions``, ``model_config``, ``train_config``.
    """
    import keras
    import tensorflow as tf

    if not isinstance(model_config, ModelConfig):
        raise TypeError(f"model_config must be a ModelConfig, got {type(model_config).__name__}")
    if not isinstance(train_config, TrainConfig):
        raise TypeError(f"train_config must be a TrainConfig, got {type(train_config).__name__}")
    tc = train_config
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    model_fn = model_fn or _default_model_fn
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    if tc.batch_size % replicas:
        raise ValueError(
            f"batch_size={tc.batch_size} does not split over {replicas} replicas; use a multiple of {replicas}"
        )

    keras.utils.set_random_seed(tc.seed)
    # XLA refuses MaxPoolGrad while op determinism is on (even on CPU), so the flag is set only
    # for the uncompiled path; XLA's CPU code is deterministic on one machine (tested).
    previous_determinism = _op_determinism(not tc.jit_compile)
    try:
        return _train(
            model_config, tc, store_dir, run_dir, strategy, progress, model_fn, on_step, bootstrap, test_store_dir
        )
    finally:
        _op_determinism(previous_determinism)


def _op_determinism(enabled: bool) -> bool:
    """Set TensorFlow's process-wide op determinism; return the previous setting."""
    from tensorflow.python.framework import config as tf_config

    previous = tf_config.is_op_determinism_enabled()
    if enabled:
        tf_config.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()
    return previous


def _train(model_config, tc, store_dir, run_dir, strategy, progress, model_fn, on_step, bootstrap, test_store_dir):
    import tensorflow as tf
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    replicas = strategy.num_replicas_in_sync

    # Cross-dataset runs (train on AVEC2013, test on AVEC2014) take Testing elsewhere.
    sources = {"Training": store_dir, "Development": store_dir, "Testing": test_store_dir or store_dir}
    parts = {
        name: data_lib.load_partition(source, name, in_memory=tc.in_memory)
        for name, source in sources.items()
    }
    train_part = parts["Training"]
    config = model_config.replace(warm_start_bias=float(np.mean(train_part.labels)))
    size = config.input_size

    with strategy.scope():
        model = model_fn(config)
        optimizer = make_optimizer(tc, model)
        optimizer.build(model.trainable_variables)
        state = {
            "step": tf.Variable(0, dtype=tf.int64, trainable=False),
            "best_dev_rmse": tf.Variable(np.inf, dtype=tf.float64, trainable=False),
            "best_step": tf.Variable(-1, dtype=tf.int64, trainable=False),
            "ema_loss": tf.Variable(np.nan, dtype=tf.float64, trainable=False),
            "best_ema_loss": tf.Variable(np.inf, dtype=tf.float64, trainable=False),
            "since_best": tf.Variable(0, dtype=tf.int64, trainable=False),
            "stop_code": tf.Variable(0, dtype=tf.int64, trainable=False),
            "wall_time": tf.Variable(0.0, dtype=tf.float64, trainable=False),
        }
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, **state)
    latest = tf.train.CheckpointManager(ckpt, str(run_dir / "checkpoints" / "latest"), max_to_keep=1)
    best_ckpt = tf.train.Checkpoint(model=model)
    best = tf.train.CheckpointManager(best_ckpt, str(run_dir / "checkpoints" / "best"), max_to_keep=1)
    history_path = run_dir / "history.csv"
    history: list[dict] = []
    if latest.latest_checkpoint:
        ckpt.restore(latest.latest_checkpoint).assert_existing_objects_matched()
        if history_path.is_file():
            old = pd.read_csv(history_path)
            history = old[old["step"] <= int(state["step"].numpy())].to_dict("records")
    elapsed_before = float(state["wall_time"].numpy())

    train_step = make_train_step(model, tc, optimizer, strategy)

    evaluators = {
        name: _Evaluator(model, part, size, tc.eval_batch_size, tc.jit_compile) for name, part in parts.items()
    }
    writer = tf.summary.create_file_writer(str(run_dir / "tb"))
    def evaluate_dev(step: int) -> tuple[float, float]:
        videos = evaluators["Development"].videos()
        y, p = videos["bdi"].to_numpy(float), videos["prediction"].to_numpy(float)
        return metrics_lib.rmse(y, p), metrics_lib.mae(y, p)

    def save(step: int) -> None:
        state["wall_time"].assign(elapsed_before + time.perf_counter() - t0)
        latest.save(checkpoint_number=step)
        pd.DataFrame(history, columns=HISTORY_COLUMNS).to_csv(history_path, index=False)

    # --- the loop -----------------------------------------------------------------------
    start = int(state["step"].numpy())
    if int(state["stop_code"].numpy()) == 0 and start < tc.max_steps:
        dataset = data_lib.training_dataset(
            train_part, size, tc.batch_size, tc.max_steps, tc.seed, start_step=start,
            frames_per_video=tc.frames_per_video, shuffle_buffer=tc.shuffle_buffer,
        )
        dist = strategy.experimental_distribute_dataset(dataset)
        ema = float(state["ema_loss"].numpy())
        best_ema = float(state["best_ema_loss"].numpy())
        since_best = int(state["since_best"].numpy())
        bar = tqdm(total=tc.max_steps, initial=start, disable=not progress, desc="train", unit="step",
                   dynamic_ncols=True)
        try:
            for inputs, labels in dist:
                lr = float(optimizer.learning_rate)  # the schedule's value at this step
                data_loss, l2 = train_step(inputs, labels)
                step = int(state["step"].assign_add(1).numpy())
                loss, l2 = float(data_loss), float(l2)
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"training loss is {loss} at step {step}; lower learning_rate ({tc.learning_rate})"
                    )
                ema = loss if math.isnan(ema) else tc.loss_smoothing * ema + (1 - tc.loss_smoothing) * loss
                if ema < best_ema:
                    best_ema, since_best = ema, 0
                else:
                    since_best += 1
                stop = 0
                if tc.patience and since_best >= tc.patience:
                    stop = 2
                elif step >= tc.max_steps:
                    stop = 1
                row = {"step": step, "train_loss": loss, "l2": l2, "dev_rmse": np.nan, "dev_mae": np.nan, "lr": lr}
                with writer.as_default(step=step):
                    _scalar("train/loss", loss)
                    _scalar("train/l2", l2)
                    _scalar("train/lr", lr)
                if step % tc.eval_every == 0 or stop:
                    dev_rmse, dev_mae = evaluate_dev(step)
                    row.update(dev_rmse=dev_rmse, dev_mae=dev_mae)
                    with writer.as_default(step=step):
                        _scalar("dev/rmse", dev_rmse)
                        _scalar("dev/mae", dev_mae)
                    if dev_rmse < float(state["best_dev_rmse"].numpy()):
                        state["best_dev_rmse"].assign(dev_rmse)
                        state["best_step"].assign(step)
                        best.save(checkpoint_number=step)
                history.append(row)
                if step % tc.eval_every == 0 or stop:
                    state["ema_loss"].assign(ema)
                    state["best_ema_loss"].assign(best_ema)
                    state["since_best"].assign(since_best)
                    state["stop_code"].assign(stop)
                    save(step)
                bar.update(1)
                if step % 10 == 0 or stop:
                    bar.set_postfix(loss=f"{ema:.3g}", best_dev_rmse=f"{float(state['best_dev_rmse'].numpy()):.2f}")
                if on_step is not None:
                    on_step(step, row)
                if stop:
                    break
        finally:
            bar.close()
            writer.flush()

    # --- final evaluation with the best checkpoint ----------------------------------------
    if best.latest_checkpoint:
        best_ckpt.restore(best.latest_checkpoint).assert_existing_objects_matched()
    videos = {name: ev.videos() for name, ev in evaluators.items()}
    predictions = pd.concat([videos[p] for p in ("Training", "Development", "Testing")], ignore_index=True)
    predictions = predictions[["video_id", "session_id", "partition", "bdi", "prediction", "n_frames"]]
    predictions.to_csv(run_dir / "predictions.csv", index=False)
    pd.DataFrame(history, columns=HISTORY_COLUMNS).to_csv(history_path, index=False)

    train_video_labels = videos["Training"]["bdi"].to_numpy(float)
    baseline = {}
    for name, key in (("Development", "dev"), ("Testing", "test")):
        v = videos[name]
        base = v.assign(prediction=metrics_lib.mean_predictor(train_video_labels, len(v)))
        baseline[key] = metrics_lib.summarize(base)
    test = videos["Testing"]
    wall = elapsed_before + time.perf_counter() - t0
    result = {
        "dev": metrics_lib.summarize(videos["Development"]),
        "test": metrics_lib.summarize(test, bootstrap=bootstrap, seed=tc.seed),
        "train": metrics_lib.summarize(videos["Training"]),
        "test_band_confusion": metrics_lib.band_confusion(test["bdi"], test["prediction"]).to_numpy().tolist(),
        "bands": list(metrics_lib.BAND_NAMES),
        "mean_predictor": baseline,
        "steps": int(state["step"].numpy()),
        "stop_reason": STOP_REASONS[int(state["stop_code"].numpy())],
        "best_step": int(state["best_step"].numpy()),
        "best_dev_rmse": float(state["best_dev_rmse"].numpy()),
        "wall_time_s": round(wall, 3),
        "seed": tc.seed,
        "replicas": replicas,
        "skipped_videos": {name: part.skipped for name, part in parts.items() if part.skipped},
        "versions": library_versions(),
        "model_config": config.to_dict(),
        "train_config": tc.to_dict(),
    }
    return result
