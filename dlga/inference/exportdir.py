"""The export format: which files an exported model has, its metadata, reading and writing it.

An export is one of

* a SavedModel directory (``saved_model.pb``), the metadata in ``assets.extra/dlga.json``;
* a ``.keras`` file (a zip), the metadata as the ``dlga.json`` entry of the zip.

The metadata (:func:`make_metadata`) holds the export format and its version, the run id,
the model configuration and the preprocessing parameters of the training store, so that
``python -m dlga predict --model PATH`` preprocesses videos as training did, and what the
training faces were (``training_data``, :mod:`data_prep.origin`) with the notice
(:mod:`dlga.inference.notice`), so that the export's scores carry it too. ``NOTICE.txt`` beside
``dlga.json`` says the notice in words. Exports written before ``training_data`` read as
``unknown``.
:mod:`dlga.inference.export` writes exports through this module and :mod:`dlga.inference.predict` reads them
through it.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

from dlga.inference.notice import describe, notice, notice_lines
from dlga.runs.rundir import RunError, read_json

EXPORT_FORMAT = "dlga-export"
EXPORT_FORMAT_VERSION = 1
EXPORT_METADATA = "dlga.json"
"""Name of the metadata file: in ``<savedmodel>/assets.extra/`` and inside the ``.keras`` zip."""
EXPORT_NOTICE = "NOTICE.txt"
"""Name of the notice in words, beside :data:`EXPORT_METADATA`."""
SAVEDMODEL_ASSETS = "assets.extra"
FORMATS = ("savedmodel", "keras")


def export_kind(path: str | os.PathLike) -> str | None:
    """``savedmodel`` or ``keras`` for what this module writes, None for anything else."""
    path = Path(path)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return "savedmodel"
    if path.is_file() and path.suffix == ".keras":
        return "keras"
    return None


def make_metadata(
    *, run_id: str, setting: str | None, config, preprocessing: dict[str, Any], outputs: list[str],
    training_data: dict[str, Any],
) -> dict[str, Any]:
    """The content of ``dlga.json`` (JSON-serialisable).

    Args:
        run_id: the exported run.
        setting: its setting name (None for a custom model).
        config: its :class:`~dlga.config.ModelConfig`.
        preprocessing: the training store's validated preprocessing parameters.
        outputs: names of the model's outputs.
        training_data: what its training faces were (:mod:`data_prep.origin`'s record).
    """
    s = config.input_size
    return {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "run_id": run_id,
        "setting": setting,
        "input_size": s,
        "inputs": {
            "image": f"float32 (None, {s}, {s}, 3) aligned RGB, 0-255",
            "landmarks": f"float32 (None, 68, 2) aligned (x, y) pixels at {s}",
        },
        "outputs": sorted(outputs),
        "preprocessing": preprocessing,
        "model_config": config.to_dict(),
        "training_data": training_data,
        "notice": notice(training_data),
        "note": "frames of size preprocessing.size are resized to input_size (bilinear, antialiased) and "
                "landmarks scaled by input_size / size before the model",
    }


def _encode(meta: dict[str, Any]) -> str:
    return json.dumps(meta, indent=2, sort_keys=True) + "\n"


def notice_text(meta: dict[str, Any]) -> str:
    """``NOTICE.txt``: the model, what its training faces were, and the notice, one line each."""
    lines = notice_lines(meta.get("training_data"))
    return (f"DLGA-CNN run {meta.get('run_id')}: BDI-II estimates from face videos.\n"
            f"training data: {describe(meta.get('training_data'))}\n" + "".join(f"{line}\n" for line in lines))


def write_savedmodel_metadata(savedmodel_dir: str | os.PathLike, meta: dict[str, Any]) -> None:
    assets = Path(savedmodel_dir) / SAVEDMODEL_ASSETS
    assets.mkdir(exist_ok=True)
    (assets / EXPORT_METADATA).write_text(_encode(meta))
    (assets / EXPORT_NOTICE).write_text(notice_text(meta))


def write_keras_metadata(keras_file: str | os.PathLike, meta: dict[str, Any]) -> None:
    # Keras reads only the entries it wrote; ours travels inside the same file.
    with zipfile.ZipFile(keras_file, "a") as zf:
        zf.writestr(EXPORT_METADATA, _encode(meta))
        zf.writestr(EXPORT_NOTICE, notice_text(meta))


def check_metadata(meta: dict[str, Any], source: str) -> dict[str, Any]:
    """``meta`` if it is of this format and version and has the fields a reader needs.

    Raises:
        RunError: another format or version, or a field missing.
    """
    if meta.get("format") != EXPORT_FORMAT or meta.get("format_version") != EXPORT_FORMAT_VERSION:
        raise RunError(
            f"{source}: export format {meta.get('format')!r} version {meta.get('format_version')!r}, this code "
            f"reads {EXPORT_FORMAT!r} version {EXPORT_FORMAT_VERSION}; export the run again with this version"
        )
    missing = [k for k in ("input_size", "preprocessing", "model_config") if not isinstance(meta.get(k), (int, dict))]
    if missing:
        raise RunError(f"{source}: export metadata lacks {missing}; export the run again with this version")
    return meta


def read_metadata(path: str | os.PathLike) -> tuple[dict[str, Any], str]:
    """The checked ``dlga.json`` of an export and where it was read (for messages).

    Raises:
        RunError: ``path`` is not an export, or its metadata is missing, damaged or of another version.
    """
    path = Path(path)
    kind = export_kind(path)
    if kind == "savedmodel":
        meta_path = path / SAVEDMODEL_ASSETS / EXPORT_METADATA
        return check_metadata(read_json(meta_path, "export the run again"), str(path)), str(meta_path)
    if kind == "keras":
        try:
            with zipfile.ZipFile(path) as zf:
                meta = json.loads(zf.read(EXPORT_METADATA))
        except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
            raise RunError(f"{path}: not a .keras file written by `python -m dlga export` ({exc})") from None
        return check_metadata(meta, str(path)), f"{path}:{EXPORT_METADATA}"
    raise RunError(f"{path}: not an exported model (a SavedModel directory or a .keras file)")
