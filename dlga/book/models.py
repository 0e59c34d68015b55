"""Trained models in the chapters: a run's selected model and the attention it pays on a
partition (TensorFlow, imported inside the functions: chapters that only read runs stay without it).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


# --- trained models -------------------------------------------------------------------------------
def load_run_model(run):
    """Rebuild a run's model and restore its kept (best Development) weights. Returns (model, config).

    ``run``: a :class:`dlga.runs.rundir.Run`. Raises :class:`dlga.runs.rundir.RunError` as
    :func:`dlga.inference.predict.restore_run_model` does.
    """
    from dlga.inference.predict import restore_run_model  # TensorFlow: only for chapters that load models

    model, config, _ = restore_run_model(run.path)
    return model, config


def attention(model, part, input_size: int, batch_size: int = 64) -> pd.DataFrame:
    """Per frame of a partition, in evaluation order: ``video_id``, ``session_id``,
    ``partition``, ``bdi``, then :func:`dlga.inference.predict.predict_frames`'s columns (``prediction``,
    the 24 local weights ``a1..a24``, ``global_attention``) and ``local_mean``, the mean of the
    local weights (when the model has them).

    Args:
        model: a model of :func:`load_run_model`.
        part: a :class:`dlga.training.data.Partition` (in memory or streaming).
        input_size: the model's input side.
        batch_size: frames per model call.
    """
    from dlga.training import data as data_lib
    from dlga.inference.predict import ATTENTION_COLUMNS, predict_frames

    chunk = 16 * int(batch_size)  # streamed partitions are read this many frames at a time
    tables = []
    for start in range(0, part.n_frames, chunk):
        if part.in_memory:
            frames, landmarks = part.frames[start : start + chunk], part.landmarks[start : start + chunk]
        else:
            pairs = [part.frame(i) for i in range(start, min(start + chunk, part.n_frames))]
            frames, landmarks = np.stack([f for f, _ in pairs]), np.stack([lm for _, lm in pairs])
        tables.append(predict_frames(model, frames, landmarks, input_size, batch_size))
    table = pd.concat(tables, ignore_index=True)
    local = [c for c in ATTENTION_COLUMNS if c in table]
    if local:
        table["local_mean"] = table[local].mean(axis=1)
    return pd.concat([data_lib.frame_table(part), table], axis=1)
