"""Export a trained run as a model file for inference on aligned faces plus landmarks.

Two formats:

* ``savedmodel`` (self-contained): a TensorFlow SavedModel directory that loads with
  ``tf.saved_model.load`` in a process that has neither ``dlga`` nor ``data_prep`` (nor
  Keras) installed; the custom layers are traced into the graph. Its ``serving_default``
  signature (also callable as ``loaded.serve(image, landmarks)``) takes

  - ``image``: float32 (None, S, S, 3) aligned RGB faces, raw pixels 0-255;
  - ``landmarks``: float32 (None, 68, 2) aligned landmarks (x, y) in pixels at S;

  and returns ``score`` (None,) BDI-II points, plus ``local_attention`` (None, 24) and
  ``global_attention`` (None,) when the model has those branches.
* ``keras``: ``model.save(PATH.keras)``. The ``.keras`` format stores the layer classes by
  name, so loading it needs the project's layers registered first::

      import dlga.model.layers, keras
      model = keras.models.load_model("model.keras")

Both carry ``dlga.json`` (:mod:`dlga.inference.exportdir`; in ``assets.extra/`` of the SavedModel, inside the zip):
the export format version, the run id, the model configuration, what the training faces were
with the notice (:mod:`dlga.inference.notice`; ``NOTICE.txt`` beside it says it in words: a
model trained on synthetic faces means nothing for a real person) and the preprocessing
parameters of the training store (size S, sampling rate, detector settings), so that
``python -m dlga predict --model PATH`` preprocesses videos as training did. Faces must be
aligned as :func:`data_prep.align.align_face` does (eye-corner similarity to the project's
template) for the predictions to mean anything.

Example::

    python -m dlga export runs/G-1a2b3c4d5e6f --format savedmodel --out exports/G
    python -c "import tensorflow as tf; m = tf.saved_model.load('exports/G'); print(m.signatures)"
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

from dlga.inference.exportdir import FORMATS, make_metadata, write_keras_metadata, write_savedmodel_metadata
from dlga.inference.predict import load_trained_model, run_training_data
from dlga.runs import rundir


def _serving_module(model, input_size: int):
    """A ``tf.Module`` whose ``serve`` traces the Keras model into a self-contained graph."""
    spec = (
        tf.TensorSpec((None, input_size, input_size, 3), tf.float32, name="image"),
        tf.TensorSpec((None, 68, 2), tf.float32, name="landmarks"),
    )

    class Serving(tf.Module):
        def __init__(self):
            super().__init__(name="dlga_serving")
            self.model = model  # tracked: its variables are saved with the graph

        @tf.function(input_signature=spec)
        def serve(self, image, landmarks):
            outputs = self.model({"image": image, "landmarks": landmarks}, training=False)
            return {name: tf.identity(value, name=name) for name, value in outputs.items()}

    return Serving()


def _fresh_target(out: Path, overwrite: bool) -> None:
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out} exists; choose another --out or pass --overwrite")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)


def export_run(
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    format: str = "savedmodel",
    *,
    store_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Export the selected weights of a complete run.

    Args:
        run_dir: a complete run directory.
        out: the SavedModel directory, or the ``.keras`` file (the suffix is added if missing).
        format: ``savedmodel`` (self-contained) or ``keras`` (needs ``import dlga.model.layers``).
        store_dir: the training store, to take the preprocessing from it instead of the run's
            recorded copy (see :func:`dlga.inference.predict.run_preprocessing`).
        overwrite: replace an existing ``out``.

    Returns:
        The path written. Written under a temporary name and renamed, so ``out`` is either
        absent or complete.

    Raises:
        RunError: the run cannot be loaded (see :func:`dlga.inference.predict.load_trained_model`).
        FileExistsError: ``out`` exists and ``overwrite`` is False.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    run_dir = Path(run_dir)
    model, config, preprocessing = load_trained_model(run_dir, store_dir)
    params = rundir.read_params(run_dir)
    outputs = list(model.output) if isinstance(model.output, dict) else ["score"]
    meta = make_metadata(run_id=params.get("run_id", run_dir.name), setting=params.get("setting"), config=config,
                         preprocessing=preprocessing, outputs=outputs,
                         training_data=run_training_data(run_dir, params, store_dir))
    out = Path(out)
    if format == "keras":
        if out.suffix != ".keras":
            out = out.with_name(out.name + ".keras")
        _fresh_target(out, overwrite)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=".keras", dir=out.parent)
        os.close(fd)
        try:
            model.save(tmp)
            write_keras_metadata(tmp, meta)
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return out

    _fresh_target(out, overwrite)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        module = _serving_module(model, config.input_size)
        tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve})
        write_savedmodel_metadata(tmp, meta)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
