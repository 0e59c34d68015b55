"""Export a trained run as a model file for inference on aligned faces plus landmarks (issue 7).

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

      import dlga.layers, keras
      model = keras.models.load_model("model.keras")

Both carry ``dlga.json`` (in ``assets.extra/`` of the SavedModel, inside the ``.keras`` zip):
the export format version, the run id, the model configuration and the preprocessing
parameters of the training store (size S, sampling rate, detector settings), so that
``python -m dlga predict --model PATH`` preprocesses videos as training did. Faces must be
aligned as :func:`data_prep.align.align_face` does (eye-corner similarity to the project's
template) for the predictions to mean anything.

Example::

    python -m dlga export runs/G-1a2b3c4d5e6f --format savedmodel --out exports/G
    python -c "import tensorflow as tf; m = tf.saved_model.load('exports/G'); print(m.signatures)"
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from dlga.predict import (
    EXPORT_FORMAT,
    EXPORT_FORMAT_VERSION,
    EXPORT_METADATA,
    load_trained_model,
)

FORMATS = ("savedmodel", "keras")


def export_metadata(run_dir: Path, config, preprocessing: dict[str, Any], model) -> dict[str, Any]:
    """The ``dlga.json`` of an export (JSON-serialisable)."""
    params = json.loads((Path(run_dir) / "params.json").read_text())
    return {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "run_id": params.get("run_id", Path(run_dir).name),
        "setting": params.get("setting"),
        "input_size": config.input_size,
        "inputs": {
            "image": f"float32 (None, {config.input_size}, {config.input_size}, 3) aligned RGB, 0-255",
            "landmarks": f"float32 (None, 68, 2) aligned (x, y) pixels at {config.input_size}",
        },
        "outputs": sorted(model.output.keys()) if isinstance(model.output, dict) else ["score"],
        "preprocessing": preprocessing,
        "model_config": config.to_dict(),
        "note": "frames of size preprocessing.size are resized to input_size (bilinear, antialiased) and "
                "landmarks scaled by input_size / size before the model",
    }


def _serving_module(model, input_size: int):
    """A ``tf.Module`` whose ``serve`` traces the Keras model into a self-contained graph."""
    import tensorflow as tf

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
        format: ``savedmodel`` (self-contained) or ``keras`` (needs ``import dlga.layers``).
        store_dir: the training store, when the run's recorded one has moved.
        overwrite: replace an existing ``out``.

    Returns:
        The path written. Written under a temporary name and renamed, so ``out`` is either
        absent or complete.

    Raises:
        RunError: the run cannot be loaded (see :func:`dlga.predict.load_trained_model`).
        FileExistsError: ``out`` exists and ``overwrite`` is False.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    run_dir = Path(run_dir)
    model, config, preprocessing = load_trained_model(run_dir, store_dir)
    meta = export_metadata(run_dir, config, preprocessing, model)
    out = Path(out)
    if format == "keras":
        if out.suffix != ".keras":
            out = out.with_name(out.name + ".keras")
        _fresh_target(out, overwrite)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=".keras", dir=out.parent)
        os.close(fd)
        try:
            model.save(tmp)
            # Keras reads only the entries it wrote; ours travels inside the same file.
            with zipfile.ZipFile(tmp, "a") as zf:
                zf.writestr(EXPORT_METADATA, json.dumps(meta, indent=2, sort_keys=True))
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return out

    import tensorflow as tf

    _fresh_target(out, overwrite)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        module = _serving_module(model, config.input_size)
        tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve})
        (tmp / "assets.extra").mkdir(exist_ok=True)
        (tmp / "assets.extra" / EXPORT_METADATA).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
