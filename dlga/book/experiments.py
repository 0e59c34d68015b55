"""The book's experiment plan: presets, the data they use, and the runs each chapter needs.

Three book presets, all in :data:`BOOK_PRESETS` (the book's Decisions chapter,
book/decisions.md, "Runs and presets"):

* ``ci``: the tiny synthetic cohort, the tiny model, a short schedule; what the tests and nbval
  run (minutes for everything);
* ``demo``: the default of ``make book``: the demo synthetic cohort, the tiny model, the
  ``demo`` schedule and several seeds (60 min on 2 CPU cores from a clean clone, measured);
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

import concurrent.futures
import dataclasses
import difflib
import hashlib
import json
import os
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import pandas as pd
from tqdm import tqdm  # tqdm.auto warns in every notebook kernel without ipywidgets

from data_prep.datasets import load_dataset
from data_prep.preprocess import preprocess
from data_prep.store import atomic_write_json
from data_prep.synthetic import CUES, CohortConfig, make_cohort
from data_prep.synthetic import cohort_key as synthetic_cohort_key
from dlga.config import MODEL_PRESETS, PRECISIONS, SETTINGS, ModelConfig, TrainConfig
from dlga.runs.executors import make_executor
from dlga.book.rate_rule import RateChoice, RateRule, select_rate, study_table
from dlga.runs.cache import Run, RunSpec, execute_all, is_complete, load_run
from dlga.settings import DATA_DIR, RUNS_DIR

DATASETS = ("synthetic", "avec2013", "avec2014")

_TRAIN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))
_MODEL_FIELDS = frozenset(f.name for f in dataclasses.fields(ModelConfig)) - {
    "local", "cmp", "global_", "wspp",  # the switches belong to the setting, not to the preset
}
# The synthetic cohort's fields a chapter may change: its cues, their strengths and its size.
# (CohortConfig.width is the video's width; the knob ``width`` is the model's.)
COHORT_KNOBS = ("cues", "local_strength", "smile_drop", "pitch_deg", "offset_sd",
                "n_train", "n_dev", "n_test", "seconds")


@dataclass(frozen=True)
class BookPreset:
    """Everything a preset fixes for the book.

    Args:
        name: ``ci``, ``demo`` or ``paper``.
        cohort: the synthetic cohort preset (``data_prep.synthetic.COHORT_PRESETS``); None for
            real data.
        model_preset: :data:`dlga.config.MODEL_PRESETS` name.
        train_preset: :data:`dlga.config.TRAIN_PRESETS` name.
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
        settings: the settings of the ablation grid.
        cohort_overrides: fields of the synthetic cohort changed (:data:`COHORT_KNOBS`); a
            changed cohort lives in its own directory, keyed by its configuration.
        power_settings, power_seeds: settings of the ablation grid trained with more seeds
            (the grid is ``settings x seeds`` plus ``power_settings x power_seeds``), so that
            the comparisons of G with the single-branch settings can tell 1 BDI apart.
        null_settings: the settings trained on the null control cohort (no cue).
        branch_settings: the settings trained on the single-cue control cohorts.
        control_seeds: the seeds of the control runs (:mod:`dlga.book.controls`).
        control_overrides: fields of the synthetic cohort (:data:`COHORT_KNOBS` but ``cues``)
            changed in the control cohorts on top of the book cohort's; empty: the control
            cohorts are the book's cohort but for their cues.
        permuted_settings: the settings trained on the book's cohort with its Training labels
            shuffled (the permuted-label control).
        leak_levels: the positive control's injected leaks: a whole-frame brightness shift of
            this many grey levels at the label cap (BDI 63), linear in the label, added to the
            null cohort's frames (:mod:`dlga.book.controls`).
        leak_settings: the settings trained on each leak level.
        rate_margin: BDI points a rate must beat the schedule's own by, on Development, to be
            chosen (:mod:`dlga.book.rate_rule`).
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
    settings: tuple[str, ...] = tuple(SETTINGS)
    cohort_overrides: tuple[tuple[str, Any], ...] = ()
    power_settings: tuple[str, ...] = ()
    power_seeds: tuple[int, ...] = ()
    null_settings: tuple[str, ...] = tuple(SETTINGS)
    branch_settings: tuple[str, ...] = ("G", "GA", "LA-CMP+")
    control_seeds: tuple[int, ...] = (0,)
    control_overrides: tuple[tuple[str, Any], ...] = ()
    permuted_settings: tuple[str, ...] = ("G",)
    leak_levels: tuple[float, ...] = (64.0,)
    leak_settings: tuple[str, ...] = ("G",)
    rate_margin: float = 0.75

    def __post_init__(self) -> None:
        bad = sorted({k for k, _ in self.control_overrides} - (set(COHORT_KNOBS) - {"cues"}))
        if bad:
            raise ValueError(f"control_overrides {bad} are not cohort fields; known: "
                             f"{sorted(set(COHORT_KNOBS) - {'cues'})}")

    def train_config(self, **changes: Any) -> TrainConfig:
        """The preset's training schedule, with ``changes`` on top of its overrides."""
        return TrainConfig.preset(self.train_preset, **{**dict(self.train_overrides), **changes})

    def model_config(self, setting: str) -> ModelConfig:
        """One of the ten settings at the preset's model preset, with its model overrides."""
        return ModelConfig.setting(setting, self.model_preset, **dict(self.model_overrides))

    def with_overrides(self, **knobs: Any) -> "BookPreset":
        """A copy with some knobs changed: a field of this preset (``seeds``, ``ablation_lr``,
        ``bootstrap``, ``settings``, ...), of the training schedule (``max_steps``,
        ``batch_size``, ...), of the model (``input_size``, ``width``, ...) or of the
        synthetic cohort (:data:`COHORT_KNOBS`). ``learning_rate`` fixes the rate of every run
        outside the learning-rate study (so no rate is selected); ``seeds`` also sets the seed
        of the study to the first of them unless ``lr_seeds`` is given. An unknown name raises
        ValueError naming it and listing the known ones; values are validated by the
        configurations."""
        own = {f.name for f in dataclasses.fields(self)} - {
            "name", "train_overrides", "model_overrides", "cohort_overrides", "control_overrides"}
        known = own | _TRAIN_FIELDS | _MODEL_FIELDS | set(COHORT_KNOBS)
        unknown = sorted(set(knobs) - known)
        if unknown:
            raise ValueError(f"unknown parameters {unknown}; known: {sorted(known)}")
        if not knobs:
            return self  # the preset itself, equal to the stored one
        knobs = dict(knobs)
        if "learning_rate" in knobs:
            knobs.setdefault("ablation_lr", knobs["learning_rate"])
        if "seeds" in knobs:
            knobs["seeds"] = tuple(int(v) for v in knobs["seeds"])
            knobs.setdefault("lr_seeds", knobs["seeds"])  # the rule pairs the study's seeds with the ablation's
            knobs.setdefault("power_seeds", knobs["seeds"])  # the reader's seeds, for every setting
            knobs.setdefault("control_seeds", knobs["seeds"])
        for name in ("settings", "learning_rates", "lr_seeds", "power_settings", "power_seeds", "null_settings",
                     "branch_settings", "control_seeds", "permuted_settings", "leak_levels", "leak_settings"):
            if name in knobs:
                knobs[name] = tuple(knobs[name])
        bad = [s for s in knobs.get("settings", ()) if s not in SETTINGS]
        if bad or ("settings" in knobs and not knobs["settings"]):
            raise ValueError(f"settings must be names from {list(SETTINGS)}, got {list(knobs['settings'])}")
        train = {**dict(self.train_overrides), **{k: v for k, v in knobs.items() if k in _TRAIN_FIELDS}}
        model = {**dict(self.model_overrides), **{k: v for k, v in knobs.items() if k in _MODEL_FIELDS}}
        cohort = {**dict(self.cohort_overrides), **{k: v for k, v in knobs.items() if k in COHORT_KNOBS}}
        if cohort and self.cohort is None:
            raise ValueError(f"preset {self.name!r} uses real data: the cohort parameters {sorted(cohort)} "
                             "apply to the synthetic cohort only")
        changed = dataclasses.replace(
            self, **{k: v for k, v in knobs.items() if k in own},
            train_overrides=tuple(sorted(train.items())), model_overrides=tuple(sorted(model.items())),
            cohort_overrides=tuple(sorted((k, tuple(v) if k == "cues" else v) for k, v in cohort.items())),
        )
        changed.train_config()  # validate now, at the boundary, not when a run starts
        changed.model_config("G")
        if changed.cohort is not None:
            cohort_config(changed)
        return changed

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["train_overrides"] = dict(self.train_overrides)
        d["model_overrides"] = dict(self.model_overrides)
        d["cohort_overrides"] = dict(self.cohort_overrides)
        d["control_overrides"] = dict(self.control_overrides)
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
        ablation_lr=1e-3, bootstrap=500, leak_levels=(64.0,), leak_settings=("G",), permuted_settings=("G",),
        # The Controls chapter's code on the ci cohorts, at the least cost: one seed, G on the
        # null cohort, the two single-branch settings on the single-cue ones, and control
        # cohorts of 40 of the 100 subjects (the three full-size ones took 4 of the ci book's
        # 17 minutes here); their comparisons are within each control cohort.
        null_settings=("G",), branch_settings=("GA", "LA-CMP+"), control_seeds=(0,),
        control_overrides=(("n_dev", 8), ("n_test", 8), ("n_train", 24)),
    ),
    # `make book`: the demo cohort and schedule. Every setting trains the same ten seeds, and
    # the learning-rate study the same ten at each rate, so that the rate rule pairs seeds and
    # the Holm family of G against the nine other settings holds its error rate (Decisions:
    # Statistics; tests/test_family.py). The ablation rate comes from the rule (default 1e-3,
    # the schedule's own). 300 steps, evaluated every 50 (Decisions: Runs and presets). The
    # controls: three seeds each; G, GA and LA-CNN (CMP+) on the null cohort, on each
    # single-cue cohort and on the permuted-label cohort, G on each leak level.
    "demo": BookPreset(
        name="demo", cohort="demo", train_preset="demo",
        train_overrides=(("max_steps", 300), ("eval_every", 50), ("jit_compile", False)),
        seeds=tuple(range(10)), lr_seeds=tuple(range(10)),
        learning_rates=(1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1), ablation_lr=None,
        null_settings=("G", "GA", "LA-CMP+"), branch_settings=("G", "GA", "LA-CMP+"), control_seeds=(0, 1, 2),
        permuted_settings=("G", "GA", "LA-CMP+"), leak_levels=(4.0, 16.0, 64.0), leak_settings=("G",),
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
    return DATA_DIR / preset.name


def cohort_config(preset: BookPreset, seed: int = 0) -> CohortConfig:
    """The preset's synthetic cohort with its overrides; ``seed`` > 0: the cross-dataset cohort
    of that seed, of which only Testing is read (so Training and Development hold one session)."""
    if preset.cohort is None:
        raise ValueError(f"preset {preset.name!r} runs on real data: it has no synthetic cohort")
    cohort = CohortConfig.preset(preset.cohort).replace(**dict(preset.cohort_overrides))
    if seed:
        cohort = cohort.replace(n_train=1, n_dev=1, name=f"{cohort.name}-seed{seed}")
    return cohort


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
    elif dataset in ("avec2013", "avec2014"):
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


def rate_choice(preset: str | BookPreset, study: Sequence[Run]) -> RateChoice:
    """What the learning-rate rule (:mod:`dlga.book.rate_rule`) decides on the study's runs, with
    the schedule's own rate as the default; Testing is never read."""
    preset = get_preset(preset)
    if not study:
        raise ValueError("no learning-rate study runs to select a rate from; run lr_study_specs first")
    return select_rate(study_table(study), preset.train_config().learning_rate, RateRule(margin=preset.rate_margin))


def ablation_learning_rate(preset: str | BookPreset, study: Sequence[Run] = ()) -> tuple[float, str]:
    """The ablation rate and how it was chosen: the preset's fixed rate, or the one the
    learning-rate rule chooses on the study's runs ``study`` (:func:`rate_choice`)."""
    preset = get_preset(preset)
    if preset.ablation_lr is not None:
        return float(preset.ablation_lr), "fixed by the preset"
    choice = rate_choice(preset, study)
    return choice.rate, f"the learning-rate rule on Development: {choice.how}"


def ablation_specs(preset: str | BookPreset, store, learning_rate: float,
                   settings: Iterable[str] | None = None, seeds: Iterable[int] | None = None) -> list[RunSpec]:
    """The ablation grid at ``learning_rate``: the preset's settings (unless ``settings``)
    with its seeds, and its ``power_settings`` among them with ``power_seeds`` as well (unless
    ``seeds`` is given: then every setting with those)."""
    preset = get_preset(preset)
    settings = list(settings or preset.settings)
    specs = run_specs(preset, store, settings, [learning_rate], seeds)
    if seeds is None:
        extra = [s for s in preset.power_settings if s in settings]
        have = set(preset.seeds)
        specs += run_specs(preset, store, extra, [learning_rate], [x for x in preset.power_seeds if x not in have])
    return _by_setting(specs, settings)


def _by_setting(specs: list[RunSpec], settings: list[str]) -> list[RunSpec]:
    """Specs grouped by setting in the order of ``settings``, seeds ascending within each."""
    order = {s: i for i, s in enumerate(settings)}
    return sorted(specs, key=lambda sp: (order.get(sp.label, len(order)), sp.seed))


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
def default_executor() -> str:
    """The executor runs go to when none is named: ``$DLGA_EXECUTOR`` (the book build sets it
    for the chapters' kernels), else ``local``."""
    return os.environ.get("DLGA_EXECUTOR") or "local"


def ensure_runs(specs: Iterable[RunSpec], runs_root: str | os.PathLike = RUNS_DIR,
                executor: str | concurrent.futures.Executor | None = None, progress: bool = False) -> list[Run]:
    """Execute the missing runs of ``specs`` on ``executor`` (None: :func:`default_executor`;
    see :mod:`dlga.runs.executors`); complete ones are reused. Returns the loaded Runs, in order."""
    dirs = execute_all(list(specs), runs_root, executor or default_executor(), progress=progress)
    return [load_run(d) for d in dirs]


def chapter_learning_rate(preset: BookPreset, store, runs_root: str | os.PathLike = RUNS_DIR) -> tuple[float, str]:
    """The rate of a chapter's runs and how it was chosen, training the learning-rate study
    first when the rate is selected on Development."""
    return ablation_learning_rate(preset, ensure_runs(rate_selection_specs(preset, store), runs_root))


def trained_ablation_runs(preset: BookPreset, store, runs_root: str | os.PathLike = RUNS_DIR) -> list[Run]:
    """The ablation grid's runs that are complete, without training anything: [] while the
    learning-rate study that chooses their rate is incomplete (a chapter that only reads,
    like the data chapter's difficulty, calls this)."""
    root = Path(runs_root)
    study = rate_selection_specs(preset, store)
    if _missing(study, root):
        return []
    lr, _how = ablation_learning_rate(preset, [load_run(root / s.run_id) for s in study])
    return [load_run(root / s.run_id) for s in ablation_specs(preset, store, lr) if is_complete(root / s.run_id)]


def _missing(specs: Sequence[RunSpec], runs_root: Path) -> set[str]:
    return {s.run_id for s in specs if not is_complete(runs_root / s.run_id)}


def train_book_runs(preset: BookPreset, store, runs_root: str | os.PathLike = RUNS_DIR,
                    executor: str | concurrent.futures.Executor | None = None, progress: bool = True,
                    extra: Callable[[float], list[RunSpec]] | None = None) -> float:
    """Train every run the book needs, on one executor, under one progress bar (runs done of
    runs needed, with an ETA): the learning-rate study first, then, at the rate it selects on
    Development (or the preset's fixed rate), :func:`book_specs` and ``extra(rate)`` (the
    cross-dataset runs). Returns the ablation rate. The chapters then find their runs complete."""
    root = Path(runs_root)
    owned = not isinstance(executor, concurrent.futures.Executor)
    pool = make_executor(executor or default_executor())
    study = rate_selection_specs(preset, store)
    n_grid = len(ablation_specs(preset, store, 1.0))  # an estimate until the rate is known
    bar = tqdm(total=len(_missing(study, root)) + n_grid, desc="runs", unit="run", disable=not progress,
               dynamic_ncols=True)
    try:
        with bar:
            if study:
                execute_all(study, root, pool, bar=bar)
            lr, _how = ablation_learning_rate(preset, [load_run(root / s.run_id) for s in study])
            grid = book_specs(preset, store, lr) + (extra(lr) if extra else [])
            bar.total = bar.n + len(_missing(grid, root))
            bar.refresh()
            execute_all(grid, root, pool, bar=bar)
    finally:
        if owned:
            pool.shutdown(wait=True)
    return lr


# --- chapter parameters -------------------------------------------------------------------------
@dataclass(frozen=True)
class Knob:
    """A chapter parameter that changes the experiment: its type, range and meaning.

    ``many``: a tuple of ``kind`` (a papermill ``-p`` or ``--set`` value may be one value or a
    comma-separated list); ``low``/``high``: the range (``open_low``/``open_high``: the bound
    itself is excluded); ``choices``: the allowed values.
    """

    kind: type
    help: str
    many: bool = False
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    choices: tuple = ()

    def range_text(self) -> str:
        if self.choices:
            return f"one of {list(self.choices)}"
        lo = "" if self.low is None else f"{'>' if self.open_low else '>='} {self.low:g}"
        hi = "" if self.high is None else f"{'<' if self.open_high else '<='} {self.high:g}"
        return " and ".join(t for t in (lo, hi) if t)

    def coerce(self, name: str, value: Any) -> Any:
        """``value`` as this knob's type, checked against its range (ValueError naming ``name``)."""
        if self.many:
            items = [v.strip() for v in value.strip("[]() ").split(",") if v.strip()] if isinstance(value, str) \
                else list(value) if isinstance(value, (list, tuple)) else [value]
            return tuple(self._one(name, v) for v in items)
        return self._one(name, value)

    def _one(self, name: str, value: Any) -> Any:
        kind = self.kind.__name__
        try:
            if self.kind is bool:
                if not isinstance(value, bool) and str(value) not in ("True", "False"):
                    raise TypeError
                value = value if isinstance(value, bool) else value == "True"
            elif isinstance(value, bool):
                raise TypeError
            elif self.kind is int:
                if isinstance(value, float) and not value.is_integer():
                    raise TypeError
                value = int(value)
            else:
                value = self.kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"parameter {name}: {value!r} is not {'an' if kind == 'int' else 'a'} {kind}"
                             f"{' list' if self.many else ''}; {self.help}") from None
        ok = (not self.choices or value in self.choices) and (
            self.low is None or (value > self.low if self.open_low else value >= self.low)) and (
            self.high is None or (value < self.high if self.open_high else value <= self.high))
        if not ok:
            raise ValueError(f"parameter {name}={value!r} is out of range: it must be {self.range_text()}")
        return value


KNOBS: dict[str, Knob] = {
    "learning_rate": Knob(float, "the rate of every run outside the learning-rate study (None: the preset's, "
                          "fixed or selected on Development)", low=0, high=10, open_low=True, open_high=True),
    "learning_rates": Knob(float, "the rates of the learning-rate study", many=True, low=0, high=10,
                           open_low=True, open_high=True),
    "max_steps": Knob(int, "the step budget of a run", low=1),
    "batch_size": Knob(int, "frames per step", low=1),
    "warmup_steps": Knob(int, "steps of linear learning-rate warm-up", low=0),
    "eval_every": Knob(int, "steps between Development evaluations", low=1),
    "patience": Knob(int, "early stopping: steps without a new minimum of the training loss (0: off)", low=0),
    "precision": Knob(str, "float32 or mixed_bfloat16: the precision runs train in", choices=PRECISIONS),
    "model_preset": Knob(str, "the model's size preset", choices=tuple(sorted(MODEL_PRESETS))),
    "input_size": Knob(int, "side of the model's input, pixels (a multiple of 16)", low=32),
    "width": Knob(float, "multiplier on the conv channels", low=0, high=4, open_low=True),
    "share_local_weights": Knob(bool, "one local module for all 24 patches"),
    "settings": Knob(str, "the settings of the ablation grid", many=True, choices=tuple(SETTINGS)),
    "seeds": Knob(int, "the seeds of the runs (the learning-rate study uses the first)", many=True, low=0),
    "bootstrap": Knob(int, "resamples of the paired bootstrap", low=10),
    "cues": Knob(str, "the synthetic cohort's label cues", many=True, choices=CUES),
    "local_strength": Knob(float, "the local cue's scale m (1 and 2: the calibration's ends)", low=0),
    "smile_drop": Knob(float, "fraction of smiles lost at severity 1 (local cue)", low=0, high=1),
    "pitch_deg": Knob(float, "head pitch per unit severity, degrees (global cue)", low=0),
    "offset_sd": Knob(float, "per-subject offsets of the cue landmarks, IOD (the difficulty)", low=0),
    "n_train": Knob(int, "Training sessions of the synthetic cohort", low=1),
    "n_dev": Knob(int, "Development sessions of the synthetic cohort", low=1),
    "n_test": Knob(int, "Testing sessions of the synthetic cohort", low=1),
    "seconds": Knob(float, "length of each synthetic video, seconds", low=0.2, high=60),
}
"""Every parameter a chapter may have that changes its experiment (``None`` in a chapter's
parameters cell: the preset's value)."""

CHAPTER_OPTIONS = ("preset", "dataset", "root", "show_faces", "cross_dataset", "cross_root")
"""The chapter parameters that choose the data and the display, not the experiment."""

_NOTEBOOK_PARAMETERS: dict[int, tuple[str, ...]] = {}


def notebook_parameters(shell) -> dict[str, Any]:
    """The parameters of a chapter notebook: the names its parameters cell and papermill's
    injected cell set, with their values, read from IPython ``shell``'s namespace.

    Called from the first cell after the parameters; the names are remembered on the first
    call, so running that cell again later in the same kernel reads the same names.
    """
    names = _NOTEBOOK_PARAMETERS.get(id(shell))
    if names is None:
        hidden = getattr(shell, "user_ns_hidden", {})
        # Parameters are values: the imports of the calling cell (modules, functions, classes) are not.
        names = tuple(k for k, v in shell.user_ns.items()
                      if not k.startswith("_") and k not in hidden and not callable(v) and not isinstance(v, types.ModuleType))
        _NOTEBOOK_PARAMETERS[id(shell)] = names
    return {k: shell.user_ns[k] for k in names if k in shell.user_ns}


def unknown_parameters_message(unknown: Iterable[str], known: Iterable[str]) -> str:
    known = sorted(known)
    hints = [f"{u!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(u, known, 1)) else repr(u)
             for u in sorted(unknown)]
    return f"unknown parameter {', '.join(hints)}; known parameters: {', '.join(known)}"


def coerce_knobs(params: Mapping[str, Any]) -> dict[str, Any]:
    """The knobs of ``params`` that are set (not None), typed and range-checked; the chapter
    options are left out. An unknown name raises one ValueError naming it and listing the
    known ones."""
    unknown = [k for k in params if k not in KNOBS and k not in CHAPTER_OPTIONS]
    if unknown:
        raise ValueError(unknown_parameters_message(unknown, [*CHAPTER_OPTIONS, *KNOBS]))
    return {k: KNOBS[k].coerce(k, v) for k, v in params.items() if k in KNOBS and v is not None}


def chapter_preset(preset: str | BookPreset = "ci", dataset: str = "synthetic", **params: Any) -> BookPreset:
    """The book preset a chapter runs with: ``preset`` with the chapter's knobs (``params``,
    None: the preset's value) on top. Validation happens here, once: an unknown name, a wrong
    type or a value out of range raises one ValueError naming the parameter (and listing the
    known ones, or the range)."""
    knobs = coerce_knobs(params)
    cohort = sorted(set(knobs) & set(COHORT_KNOBS))
    if cohort and not is_synthetic(dataset):
        raise ValueError(f"parameters {cohort} change the synthetic cohort; dataset {dataset!r} is not synthetic")
    if "settings" in knobs and "G" not in knobs["settings"]:
        raise ValueError(f"parameter settings={list(knobs['settings'])} must include 'G': the chapters compare "
                         "every setting with it")
    try:
        return get_preset(preset).with_overrides(**knobs)
    except ValueError as exc:  # a configuration's own check: say which parameters led to it
        raise ValueError(f"chapter parameters {', '.join(f'{k}={format_value(v)}' for k, v in knobs.items())}: {exc}") from None


def knob_value(preset: BookPreset, name: str) -> Any:
    """The value a knob has in ``preset`` (what a chapter runs with)."""
    if name == "learning_rate":
        return preset.ablation_lr
    if name in ("learning_rates", "settings", "seeds", "bootstrap", "model_preset"):
        return getattr(preset, name)
    if name in _TRAIN_FIELDS:
        return getattr(preset.train_config(), name)
    if name in _MODEL_FIELDS:
        return getattr(preset.model_config("G"), name)
    if name in COHORT_KNOBS:
        return getattr(cohort_config(preset), name) if preset.cohort else None
    raise ValueError(unknown_parameters_message([name], KNOBS))


def format_value(value: Any) -> str:
    """A knob's value as a ``-p``/``--set`` argument reads it back (lists comma-separated)."""
    if isinstance(value, (list, tuple)):
        return ",".join(format_value(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def parameter_table(preset: BookPreset, params: Mapping[str, Any], learning_rate: tuple[float, str] | None = None
                    ) -> pd.DataFrame:
    """The parameters a chapter ran with: one row per parameter of its parameters cell, the
    value used and where it came from (the preset, or set for this run). ``learning_rate``:
    the rate actually used and how it was chosen, when the chapter knows it."""
    rows = [{"parameter": k, "value": "–" if params.get(k) is None else str(params[k]), "source": "chapter"}
            for k in ("preset", "dataset", "root") if k in params]
    for name in (k for k in params if k in KNOBS):
        if name == "learning_rate" and learning_rate is not None:
            value = f"{learning_rate[0]:g}" + ("" if params[name] is not None else f" ({learning_rate[1]})")
        else:
            v = knob_value(preset, name)
            value = "selected on Development" if v is None and name == "learning_rate" else (
                "–" if v is None else format_value(v))
        rows.append({"parameter": name, "value": value,
                     "source": "set for this run" if params[name] is not None else f"preset {preset.name}"})
    return pd.DataFrame(rows, columns=["parameter", "value", "source"])


def rerun_command(chapter: str, params: Mapping[str, Any]) -> str:
    """The commands that rerun ``chapter`` with the parameters it ran with (papermill alone,
    and the book build), as a Markdown code block."""
    chosen = {k: v for k, v in params.items() if v is not None and k not in ("show_faces",)
              and not (k == "dataset" and v == "synthetic")}
    preset = chosen.pop("preset", "ci")
    opts = {k: chosen.pop(k) for k in ("dataset", "root") if k in chosen}
    papermill = " ".join([f"papermill book/{chapter}.ipynb out.ipynb -p preset {preset}",
                          *(f"-p {k} {format_value(v)}" for k, v in {**opts, **chosen}.items())])
    build = " ".join([f"python -m dlga.book build --preset {preset}", *(f"--{k} {v}" for k, v in opts.items()),
                      f"--only {chapter.split('_', 1)[0]}",
                      *(f"--set {k}={format_value(v)}" for k, v in chosen.items() if k in KNOBS)])
    return ("```bash\n" + papermill + "\n" + build + "\n```\n\nChange any parameter of the table at the top "
            "with another `-p NAME VALUE` (papermill) or `--set NAME=VALUE` (the book build; lists "
            "comma-separated, e.g. `--set seeds=0,1`).")
