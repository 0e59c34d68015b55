"""The learning-rate schedule and the optimizer of a run (paper section 4.2).

Adam (0.9, 0.999, 1e-8) with the coupled L2 term of :mod:`dlga.training.step` by default,
AdamW when ``decoupled`` (Decisions: Architecture), a linear warm-up of the rate, and
:class:`FusedAdam`, the same update through TensorFlow's fused kernel.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from dlga.config import TrainConfig


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
