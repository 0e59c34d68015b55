"""The data a book preset uses: its synthetic cohort (or a copy of AVEC) and the preprocessed store.

Cohorts and stores live under :data:`dlga.settings.DATA_DIR`, one folder per preset; a stamp
per preset, dataset and root makes a second :func:`prepare_data` return at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from data_prep.datasets import load_dataset
from data_prep.preprocess import preprocess
from data_prep.store import atomic_write_json
from data_prep.synthetic import make_cohort
from data_prep.synthetic import cohort_key as synthetic_cohort_key
from dlga.book.presets import AVEC_DATASETS, BookPreset, cohort_config, get_preset
from dlga.settings import DATA_DIR


def data_root(preset: BookPreset) -> Path:
    return DATA_DIR / preset.name


def cohort_overrides_key(preset: BookPreset) -> str:
    """"" for the preset's own cohort, else a hash of the changed cohort's configuration."""
    if not preset.cohort_overrides:
        return ""
    return hashlib.sha256(json.dumps(cohort_config(preset).to_dict(), sort_keys=True).encode()).hexdigest()[:10]


def cohort_dir(preset: BookPreset, seed: int = 0) -> Path:
    """``data/<preset>/cohort[-<key>][-seed<S>]``: an unchanged cohort keeps its directory, a
    changed one gets its own (:func:`cohort_overrides_key`)."""
    key = cohort_overrides_key(preset)
    return data_root(preset) / ("cohort" + (f"-{key}" if key else "") + (f"-seed{seed}" if seed else ""))


def is_synthetic(dataset: str) -> bool:
    return dataset == "synthetic"


def _stamp_path(preset: BookPreset, dataset: str, root: str | None, seed: int = 0) -> Path:
    data = [preset.cohort, preset.size, preset.sample_fps, preset.max_frames, dataset, str(root)]
    if seed:
        data.append(seed)
    if is_synthetic(dataset) and preset.cohort is not None:
        # The cohort's whole identity (configuration, cue constants, the code that draws it):
        # a changed cue model makes a new cohort and store, never a stale one.
        data.append(synthetic_cohort_key(cohort_config(preset, seed), seed))
    key = hashlib.sha256(json.dumps(data).encode()).hexdigest()[:12]
    return data_root(preset) / f"store-{dataset}-{key}.json"


def prepare_data(
    preset: str | BookPreset = "ci",
    dataset: str = "synthetic",
    root: str | os.PathLike | None = None,
    *,
    progress: bool = False,
    cohort_seed: int = 0,
) -> Path:
    """Return the preprocessed store the book uses, making it first if needed.

    ``dataset="synthetic"`` makes the preset's synthetic cohort under ``data/<preset>/cohort``
    (nothing is redone if it is there) and preprocesses it. ``avec2013``/``avec2014`` read the
    user's copy at ``root``; any other value is taken as a path to a manifest CSV (the
    ``manifest`` adapter). The store is ``data/<preset>/stores/<dataset>-s<size>-<hash>/``.
    A stamp file remembers a finished store, so a second call costs milliseconds.

    ``cohort_seed`` > 0 makes another synthetic cohort of the same preset with that seed (new
    subjects and labels), of which only Testing is full-size: the cross-dataset test set.
    """
    preset = get_preset(preset)
    stamp = _stamp_path(preset, dataset, None if root is None else str(root), cohort_seed)
    if stamp.is_file():
        info = json.loads(stamp.read_text())
        store = Path(info["store"])
        if (store / "manifest.csv").is_file() and (store / "qc.csv").is_file():
            return store
    if is_synthetic(dataset):
        if preset.cohort is None:
            raise ValueError(
                f"preset {preset.name!r} runs on real data: pass --dataset avec2014 (or avec2013) --root DIR"
            )
        make_cohort(cohort_config(preset, cohort_seed), cohort_dir(preset, cohort_seed), seed=cohort_seed,
                    workers=preset.workers, progress=progress)
        adapter, where = "avec2014", cohort_dir(preset, cohort_seed)
    elif dataset in AVEC_DATASETS:
        if root is None:
            raise ValueError(f"--dataset {dataset} needs --root: the folder of your {dataset.upper()} copy")
        adapter, where = dataset, Path(root)
    else:
        adapter, where = "manifest", Path(dataset)
    manifest, _report = load_dataset(adapter, where)
    name = "synthetic" if is_synthetic(dataset) else adapter
    if is_synthetic(dataset):
        # The store's folder is keyed by the preprocessing only: another cohort needs another name.
        name += (f"-{cohort_overrides_key(preset)}" if preset.cohort_overrides else "") + (f"-seed{cohort_seed}" if cohort_seed else "")
    store = preprocess(
        manifest, data_root(preset) / "stores", size=preset.size, sample_fps=preset.sample_fps,
        workers=preset.workers, dataset=name, max_frames=preset.max_frames, progress=progress,
    )
    atomic_write_json(stamp, {"store": str(store), "dataset": dataset, "root": None if root is None else str(root),
                              "made": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return store


def cross_test_store(preset: str | BookPreset, dataset: str, cross: str | None = None,
                     cross_root=None) -> tuple[Path | None, str]:
    """The store G is tested on across datasets, and its name.

    ``cross=None`` on synthetic data: a second synthetic cohort made with another seed. For
    real data name the other dataset (``avec2013`` <-> ``avec2014``) and its ``cross_root``.
    Returns ``(None, reason)`` when no second dataset is given.
    """
    if cross is None:
        if not is_synthetic(dataset):
            return None, "no second dataset given (set cross_dataset and cross_root)"
        return prepare_data(preset, "synthetic", cohort_seed=1), "synthetic, seed 1"
    return prepare_data(preset, cross, cross_root), cross


