"""What a store's faces are: the project's synthetic faces, real recordings, or not known.

A model that learned from the synthetic cohort (:mod:`data_prep.synthetic`) or the toy store
(:mod:`data_prep.toystore`) has only seen synthetic faces and synthetic labels: its number on
a real person's face means nothing. :mod:`dlga.inference` says so on every output, and needs
to know where a model's training faces came from. That is this module's record::

    {"kind": "synthetic" | "real" | "unknown", "dataset": "<name>" | None, "evidence": "<how we know>"}

``real`` means "preprocessed from videos none of which lies in a synthetic cohort folder"
(AVEC, or the user's own manifest); ``unknown`` that nothing says either way.

:func:`data_prep.preprocess.preprocess` and :func:`data_prep.toystore.make_store` write it to
``STORE/origin.json``. That file is not part of :func:`data_prep.store.store_fingerprint` (its
parameters, manifest and frames are), so writing it changes no store fingerprint and no run id.
For stores written before it, :func:`store_origin` infers the record from what the store shows
(a toy store's ``params.json``, the book's ``synthetic-*`` folder names, source videos inside a
synthetic cohort folder) and says ``unknown`` where nothing shows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from .store import StoreError, atomic_write_json, read_manifest

ORIGIN_FILE = "origin.json"
"""The record's file in a store directory (not covered by the store's fingerprint)."""
COHORT_FILE = "cohort.json"
"""The identity file at the top of a synthetic cohort folder (:func:`data_prep.synthetic.make_cohort`)."""
SYNTHETIC, REAL, UNKNOWN = "synthetic", "real", "unknown"
KINDS = (SYNTHETIC, REAL, UNKNOWN)
SYNTHETIC_STORE_PREFIX = "synthetic"
"""Stores of the synthetic cohort made by the book (:func:`dlga.book.data.prepare_data`) are
named ``synthetic[-...]-s<size>-<hash>``."""


def origin_record(kind: str, dataset: str | None, evidence: str) -> dict[str, Any]:
    """A record (see the module docstring); raises ValueError for a kind not in :data:`KINDS`."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return {"kind": kind, "dataset": dataset, "evidence": str(evidence)}


def unknown(evidence: str) -> dict[str, Any]:
    """The record for a model or store whose training data nothing records or shows."""
    return origin_record(UNKNOWN, None, evidence)


def check_record(record: Any) -> dict[str, Any] | None:
    """``record`` normalised if it is a valid record, else None (a damaged or foreign value)."""
    if not isinstance(record, dict) or record.get("kind") not in KINDS:
        return None
    dataset = record.get("dataset")
    return origin_record(record["kind"], None if dataset is None else str(dataset), str(record.get("evidence", "")))


def cohort_root(path: str | os.PathLike, levels: int = 6) -> Path | None:
    """The synthetic cohort folder that holds ``path`` (an ancestor with a cohort's
    ``cohort.json``, up to ``levels`` above it), or None. Needs the folder on disk."""
    for parent in list(Path(path).parents)[:levels]:
        meta = parent / COHORT_FILE
        if meta.is_file():
            try:
                value = json.loads(meta.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(value, dict) and {"version", "seed", "config"} <= set(value):
                return parent
    return None


def sources_origin(paths: Iterable[str], dataset: str | None) -> dict[str, Any] | None:
    """The record the source videos of a manifest show: ``synthetic`` if one of them lies in a
    synthetic cohort folder, ``real`` if they exist and none does, None if none of them is on
    disk (then they show nothing). Relative paths are skipped (relative to what is not known)."""
    seen: dict[Path, Path | None] = {}  # a folder -> its cohort root: one look per folder
    found = 0
    for text in paths:
        path = Path(str(text))
        if not path.is_absolute() or not path.exists():
            continue
        found += 1
        if path.parent not in seen:
            seen[path.parent] = cohort_root(path)
        if seen[path.parent] is not None:
            return origin_record(SYNTHETIC, dataset, f"source video {path} lies in the synthetic cohort "
                                                      f"{seen[path.parent]} ({COHORT_FILE})")
    if not found:
        return None
    return origin_record(REAL, dataset, f"{found} source videos on disk, none in a synthetic cohort folder")


def manifest_origin(paths: Iterable[str], dataset: str | None) -> dict[str, Any]:
    """The record :func:`data_prep.preprocess.preprocess` writes: from the store's name
    (``synthetic*``: the book's synthetic cohort) or its source videos (:func:`sources_origin`)."""
    if dataset is not None and dataset.startswith(SYNTHETIC_STORE_PREFIX):
        return origin_record(SYNTHETIC, dataset, f"preprocessed as dataset {dataset!r} (the synthetic cohort)")
    return sources_origin(paths, dataset) or unknown(f"preprocessed as dataset {dataset!r}; no source video on disk")


def write_origin(store_dir: str | os.PathLike, record: dict[str, Any]) -> None:
    """Write ``STORE/origin.json`` (atomically)."""
    checked = check_record(record)
    if checked is None:
        raise ValueError(f"not an origin record: {record!r}")
    atomic_write_json(Path(store_dir) / ORIGIN_FILE, checked)


def store_origin(store_dir: str | os.PathLike) -> dict[str, Any]:
    """What the faces of a store are: its ``origin.json`` if it has one, else inferred from the
    store (a toy store's ``params.json``, a ``synthetic*`` folder name, the manifest's source
    videos), else ``unknown``. The evidence says which."""
    store_dir = Path(store_dir)
    path = store_dir / ORIGIN_FILE
    if path.is_file():
        try:
            recorded = check_record(json.loads(path.read_text()))
        except (OSError, ValueError):
            recorded = None
        if recorded is not None:
            return recorded
    try:
        params = json.loads((store_dir / "params.json").read_text())
    except (OSError, ValueError):
        params = {}
    if isinstance(params, dict) and params.get("synthetic") is True:
        return origin_record(SYNTHETIC, "toy", f"inferred: {store_dir}/params.json says synthetic (a toy store)")
    if store_dir.name.startswith(SYNTHETIC_STORE_PREFIX + "-"):
        return origin_record(SYNTHETIC, SYNTHETIC_STORE_PREFIX,
                             f"inferred: the store's folder name {store_dir.name!r} (the book's synthetic cohort)")
    try:
        paths = read_manifest(store_dir)["path"].astype(str)
    except (StoreError, OSError, ValueError):
        paths = []
    shown = sources_origin(paths, None)
    if shown is not None:
        return {**shown, "evidence": f"inferred: {shown['evidence']}"}
    return unknown(f"{store_dir} records no origin ({ORIGIN_FILE}: stores made before it) and shows none")
