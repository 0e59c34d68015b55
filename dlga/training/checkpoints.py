"""What a run checkpoints so that a resumed run ends as an uninterrupted one: its counters
(:class:`TrainState`) and the ``latest`` (to resume) and ``best`` (selected on Development)
checkpoints of its run directory (:mod:`dlga.runs.rundir` names them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from dlga.runs import rundir


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
