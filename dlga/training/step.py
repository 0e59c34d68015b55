"""One optimisation step and one prediction step as ``tf.function``s, and the evaluation of a
partition with the latter: what :func:`dlga.training.train.train` runs and ``python -m dlga
bench`` times.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import tensorflow as tf

from dlga.config import TrainConfig
from dlga.training import data as data_lib
from dlga.training import metrics as metrics_lib
from dlga.training.optimizer import kernel_variables, make_optimizer


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


class Evaluator:
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
