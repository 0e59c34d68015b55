"""The book's experiment plan: presets, the data they use, and the runs each chapter needs.

Three book presets, all in :data:`BOOK_PRESETS` (the book's Decisions chapter,
book/decisions.md, "Runs and presets"):

* ``ci``: the tiny synthetic cohort, the tiny model, a short schedule; what the tests and nbval
  run (minutes for everything);
* ``demo``: the default of ``make book``: the demo synthetic cohort, the tiny model, the
  ``demo`` schedule and several seeds (goal: at most 45 minutes on 2 CPU cores);
* ``paper``: real AVEC data, the paper's 224 px model and schedule (a GPU job).

Planning never trains. The functions that return specs (:func:`run_specs`,
:func:`lr_study_specs`, :func:`rate_selection_specs`, :func:`ablation_specs`,
:func:`cross_dataset_specs`) only describe runs; :func:`ensure_runs` is the one function here
that executes them. The ablation rate is passed in: a chapter first runs the study that chooses
it, then asks for the ablation specs with it::

    study = ensure_runs(rate_selection_specs(P, store))      # [] when the preset fixes the rate
    lr, how = ablation_learning_rate(P, study)
    runs = ensure_runs(ablation_specs(P, store, lr))

A chapter that changes a knob of its experiment (a rate, a step budget, the model's width)
derives a preset with :meth:`BookPreset.with_overrides`; every spec is built from the preset, so
the change reaches the run specs (and their ids), and an unchanged preset reuses stored runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from data_prep.datasets import load_dataset
from data_prep.preprocess import preprocess
from data_prep.store import atomic_write_json
from data_prep.synthetic import CohortConfig, make_cohort
from dlga.config import SETTINGS, ModelConfig
from dlga.runs import Run, RunSpec, execute, load_run
from dlga.train import TrainConfig

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RUNS_ROOT = PROJECT_ROOT / "runs"
DATASETS = ("synthetic", "avec2013", "avec2014")

_TRAIN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))
_MODEL_FIELDS = frozenset(f.name for f in dataclasses.fields(ModelConfig)) - {
    "local", "cmp", "global_", "wspp",  # the switches belong to the setting, not to the preset
}


@dataclass(frozen=True)
class BookPreset:
    """Everything a preset fixes for the book.

    Args:
        name: ``ci``, ``demo`` or ``paper``.
        cohort: the synthetic cohort preset (``data_prep.synthetic.COHORT_PRESETS``); None for
            real data.
        model_preset: :data:`dlga.config.MODEL_PRESETS` name.
        train_preset: :data:`dlga.train.TRAIN_PRESETS` name.
        train_overrides: fields of the training schedule changed for the book.
        model_overrides: fields of the model configuration changed for the book (input size,
            width, ...); empty in the presets, so their runs keep the setting's name.
        seeds: seeds of the ablation grid (every setting, every seed).
        lr_seeds: seeds of the learning-rate study.
        learning_rates: the rates of the learning-rate study (setting G).
        ablation_lr: the rate of the ablation runs; None: the rate the learning-rate study
            selects on Development (lowest mean Development RMSE over ``lr_seeds``).
        size: side of the aligned faces in the store (the model resizes to its input).
        sample_fps: frames per second kept by preprocessing.
        max_frames: faces kept per video by preprocessing (None: all).
        workers: processes for the cohort and preprocessing.
        bootstrap: resamples of the paired bootstrap in the summary chapters.
        bench_quick: the efficiency chapter times the tiny preset only.
    """

    name: str
    cohort: str | None
    model_preset: str = "tiny"
    train_preset: str = "ci"
    train_overrides: tuple[tuple[str, Any], ...] = ()
    model_overrides: tuple[tuple[str, Any], ...] = ()
    seeds: tuple[int, ...] = (0, 1, 2)
    lr_seeds: tuple[int, ...] = (0,)
    learning_rates: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
    ablation_lr: float | None = None
    size: int = 64
    sample_fps: float | None = 5.0
    max_frames: int | None = None
    workers: int = 2
    bootstrap: int = 2000
    bench_quick: bool = True

    def train_config(self, **changes: Any) -> TrainConfig:
        """The preset's training schedule, with ``changes`` on top of its overrides."""
        return TrainConfig.preset(self.train_preset, **{**dict(self.train_overrides), **changes})

    def model_config(self, setting: str) -> ModelConfig:
        """One of the ten settings at the preset's model preset, with its model overrides."""
        return ModelConfig.setting(setting, self.model_preset, **dict(self.model_overrides))

    def with_overrides(self, **knobs: Any) -> "BookPreset":
        """A copy with some knobs changed: a field of this preset (``seeds``, ``ablation_lr``,
        ``bootstrap``, ...), of the training schedule (``max_steps``, ``batch_size``, ...) or
        of the model (``input_size``, ``width``, ...). An unknown name raises ValueError
        naming it and listing the known ones; values are validated by the configurations."""
        own = {f.name for f in dataclasses.fields(self)} - {"name", "train_overrides", "model_overrides"}
        unknown = sorted(set(knobs) - own - _TRAIN_FIELDS - _MODEL_FIELDS)
        if unknown:
            raise ValueError(f"unknown parameters {unknown}; known: {sorted(own | _TRAIN_FIELDS | _MODEL_FIELDS)}")
        train = {**dict(self.train_overrides), **{k: v for k, v in knobs.items() if k in _TRAIN_FIELDS}}
        model = {**dict(self.model_overrides), **{k: v for k, v in knobs.items() if k in _MODEL_FIELDS}}
        changed = dataclasses.replace(
            self, **{k: v for k, v in knobs.items() if k in own},
            train_overrides=tuple(sorted(train.items())), model_overrides=tuple(sorted(model.items())),
        )
        changed.train_config()  # validate now, at the boundary, not when a run starts
        changed.model_config("G")
        return changed

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["train_overrides"] = dict(self.train_overrides)
        d["model_overrides"] = dict(self.model_overrides)
        return d


BOOK_PRESETS: dict[str, BookPreset] = {
    # Tests: 10 settings x 3 seeds of a short schedule; the learning-rate study with one seed.
    # jit_compile=False: compiling the training step with XLA took longer on a busy 2-core
    # machine than a whole short run costs without it.
    # Warm-up 20 of 80 steps: with 40, setting C (GA + WSPP) collapsed to the mean for one
    # seed (its global gate shut; Decisions: Architecture); with 20 every setting learned.
    # The ablation rate is fixed at 1e-3 (the rate the demo study selects; the ci chapter
    # shows its own study beside it) so that the ablation grid does not wait for the study.
    "ci": BookPreset(
        name="ci", cohort="ci", train_preset="ci",
        train_overrides=(("max_steps", 80), ("eval_every", 20), ("warmup_steps", 20), ("jit_compile", False)),
        seeds=(0, 1, 2), lr_seeds=(0,), learning_rates=(1e-5, 1e-4, 1e-3, 1e-2),
        ablation_lr=1e-3, bootstrap=500,
    ),
    # `make book`: the demo cohort and schedule; the ablation rate is selected on Development.
    # The study spans 1e-5..1e-2 to fit the time goal: in a few hundred steps 1e-6 barely moves
    # the weights and 1e-1 diverges; the paper preset studies all six rates.
    "demo": BookPreset(
        name="demo", cohort="demo", train_preset="demo",
        train_overrides=(("max_steps", 300), ("eval_every", 50), ("jit_compile", False)),
        seeds=(0, 1, 2), lr_seeds=(0,), learning_rates=(1e-5, 1e-4, 1e-3, 1e-2), ablation_lr=None,
        bootstrap=2000,
    ),
    # Real data on a GPU: the paper's model and schedule, lr 1e-6 as the paper.
    "paper": BookPreset(
        name="paper", cohort=None, model_preset="paper", train_preset="paper",
        seeds=(0, 1, 2), lr_seeds=(0,), ablation_lr=1e-6, size=224, sample_fps=5.0,
        workers=4, bench_quick=False,
    ),
}


def get_preset(preset: str | BookPreset) -> BookPreset:
    """The book preset of that name (a BookPreset is returned as it is)."""
    if isinstance(preset, BookPreset):
        return preset
    if preset not in BOOK_PRESETS:
        raise ValueError(f"unknown book preset {preset!r}; choose one of {sorted(BOOK_PRESETS)}")
    return BOOK_PRESETS[preset]


# --- data -----------------------------------------------------------------------------------
def data_root(preset: BookPreset) -> Path:
    return PROJECT_ROOT / "data" / preset.name


def cohort_dir(preset: BookPreset, seed: int = 0) -> Path:
    return data_root(preset) / ("cohort" if seed == 0 else f"cohort-seed{seed}")


def is_synthetic(dataset: str) -> bool:
    return dataset == "synthetic"


def _stamp_path(preset: BookPreset, dataset: str, root: str | None, seed: int = 0) -> Path:
    data = [preset.cohort, preset.size, preset.sample_fps, preset.max_frames, dataset, str(root)]
    if seed:
        data.append(seed)
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
        cohort = CohortConfig.preset(preset.cohort)
        if cohort_seed:  # only Testing is read from a cross-dataset cohort
            cohort = dataclasses.replace(cohort, n_train=1, n_dev=1, name=f"{cohort.name}-seed{cohort_seed}")
        make_cohort(cohort, cohort_dir(preset, cohort_seed), seed=cohort_seed,
                    workers=preset.workers, progress=progress)
        adapter, where = "avec2014", cohort_dir(preset, cohort_seed)
    elif dataset in ("avec2013", "avec2014"):
        if root is None:
            raise ValueError(f"--dataset {dataset} needs --root: the folder of your {dataset.upper()} copy")
        adapter, where = dataset, Path(root)
    else:
        adapter, where = "manifest", Path(dataset)
    manifest, _report = load_dataset(adapter, where)
    name = "synthetic" if is_synthetic(dataset) else adapter
    if cohort_seed:
        name = f"synthetic-seed{cohort_seed}"
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


# --- run specs (planning: nothing here trains) -------------------------------------------------
def run_specs(
    preset: str | BookPreset,
    store: str | os.PathLike,
    settings: Iterable[str] = ("G",),
    learning_rates: Iterable[float] | None = None,
    seeds: Iterable[int] | None = None,
) -> list[RunSpec]:
    """RunSpecs of settings x learning rates x seeds for the preset's model and schedule.

    ``learning_rates=None``: the schedule's own rate; ``seeds=None``: the preset's seeds.
    """
    preset = get_preset(preset)
    seeds = preset.seeds if seeds is None else tuple(seeds)
    rates = [preset.train_config().learning_rate] if learning_rates is None else list(learning_rates)
    return [
        RunSpec(setting=_setting(preset, s), model_preset=preset.model_preset,
                train=preset.train_config(learning_rate=float(lr)), store_dir=str(store), seed=int(seed))
        for s in settings for lr in rates for seed in seeds
    ]


def _setting(preset: BookPreset, setting: str) -> str | ModelConfig:
    # Without model overrides the spec names the setting, so the run id (and the stored runs)
    # stay those of the plain setting.
    return preset.model_config(setting) if preset.model_overrides else setting


def lr_study_specs(preset: str | BookPreset, store, seeds: Iterable[int] | None = None) -> list[RunSpec]:
    """Setting G at every rate of the learning-rate study (``seeds=None``: ``lr_seeds``)."""
    preset = get_preset(preset)
    return run_specs(preset, store, ["G"], preset.learning_rates, preset.lr_seeds if seeds is None else seeds)


def rate_selection_specs(preset: str | BookPreset, store) -> list[RunSpec]:
    """The runs the ablation rate depends on: the learning-rate study, or none when the preset
    fixes the rate."""
    preset = get_preset(preset)
    return [] if preset.ablation_lr is not None else lr_study_specs(preset, store)


def select_learning_rate(runs: Sequence[Run]) -> float:
    """The rate with the lowest mean Development RMSE (per video) over its seeds; Testing is
    never read."""
    if not runs:
        raise ValueError("no learning-rate study runs to select a rate from; run lr_study_specs first")
    table = pd.DataFrame({"lr": [r.params["train"]["learning_rate"] for r in runs],
                          "dev_rmse": [r.metrics["dev"]["rmse"] for r in runs]})
    return float(table.groupby("lr")["dev_rmse"].mean().idxmin())


def ablation_learning_rate(preset: str | BookPreset, study: Sequence[Run] = ()) -> tuple[float, str]:
    """The ablation rate and how it was chosen: the preset's fixed rate, or the one the
    learning-rate study's runs ``study`` select on Development."""
    preset = get_preset(preset)
    if preset.ablation_lr is not None:
        return float(preset.ablation_lr), "fixed by the preset"
    return select_learning_rate(study), "selected by the learning-rate study on Development"


def ablation_specs(preset: str | BookPreset, store, learning_rate: float,
                   settings: Iterable[str] | None = None, seeds: Iterable[int] | None = None) -> list[RunSpec]:
    """The ablation grid (every setting unless ``settings``, every seed) at ``learning_rate``."""
    return run_specs(preset, store, list(settings or SETTINGS), [learning_rate], seeds)


def cross_dataset_specs(preset: str | BookPreset, store, test_store, learning_rate: float,
                        seeds: Iterable[int] | None = None) -> list[RunSpec]:
    """Setting G trained (and selected) on ``store`` at ``learning_rate``, tested on the
    Testing partition of ``test_store``: the cross-dataset runs (``seeds=None``: the seeds of
    the learning-rate study)."""
    preset = get_preset(preset)
    specs = run_specs(preset, store, ["G"], [learning_rate], preset.lr_seeds if seeds is None else seeds)
    return [dataclasses.replace(s, test_store_dir=str(test_store)) for s in specs]


def book_specs(preset: str | BookPreset, store, learning_rate: float,
               seeds: Iterable[int] | None = None) -> list[RunSpec]:
    """Every run the book's chapters train on ``store`` at this ablation rate, each once: the
    learning-rate study and the ablation grid (the cross-dataset runs need a second store)."""
    specs = lr_study_specs(preset, store) + ablation_specs(preset, store, learning_rate, seeds=seeds)
    seen: set[str] = set()
    return [s for s in specs if not (s.run_id in seen or seen.add(s.run_id))]


# --- execution ----------------------------------------------------------------------------------
def ensure_runs(specs: Iterable[RunSpec], runs_root: str | os.PathLike = RUNS_ROOT,
                progress: bool = False) -> list[Run]:
    """Execute the missing runs of ``specs`` (complete ones are reused); return loaded Runs."""
    return [load_run(execute(spec, runs_root, progress=progress)) for spec in specs]

