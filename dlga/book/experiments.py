"""The book's experiment plan: the runs each chapter needs, and executing them.

Planning never trains. The functions that return specs (:func:`run_specs`,
:func:`lr_study_specs`, :func:`rate_selection_specs`, :func:`ablation_specs`,
:func:`cross_dataset_specs`) only describe runs; :func:`ensure_runs` is the one function here
that executes them. The ablation rate is passed in: a chapter first runs the study that chooses
it, then asks for the ablation specs with it::

    study = ensure_runs(rate_selection_specs(P, store))      # [] when the preset fixes the rate
    lr, how = ablation_learning_rate(P, study)
    runs = ensure_runs(ablation_specs(P, store, lr))

The presets are :mod:`dlga.book.presets`', their data :mod:`dlga.book.data`'s and a
chapter's parameters :mod:`dlga.book.parameters`'.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

from tqdm import tqdm  # tqdm.auto warns in every notebook kernel without ipywidgets

from dlga.book.presets import BookPreset, get_preset
from dlga.book.rate_rule import RateChoice, RateRule, select_rate, study_table
from dlga.config import ModelConfig
from dlga.runs.cache import Run, RunSpec, execute_all, is_complete, load_run
from dlga.runs.executors import make_executor
from dlga.settings import RUNS_DIR


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
def ensure_runs(specs: Iterable[RunSpec], runs_root: str | os.PathLike = RUNS_DIR,
                executor: str | concurrent.futures.Executor | None = "local", progress: bool = False) -> list[Run]:
    """Execute the missing runs of ``specs`` on ``executor`` (a name of :mod:`dlga.runs.executors`,
    a chapter's ``executor`` parameter; None: ``local``, as :func:`dlga.runs.executors.make_executor`
    reads it); complete ones are reused. Returns the loaded Runs, in order."""
    dirs = execute_all(list(specs), runs_root, executor, progress=progress)
    return [load_run(d) for d in dirs]


def chapter_learning_rate(preset: BookPreset, store, runs_root: str | os.PathLike = RUNS_DIR,
                          executor: str | concurrent.futures.Executor | None = "local") -> tuple[float, str]:
    """The rate of a chapter's runs and how it was chosen, training the learning-rate study
    first (on ``executor``) when the rate is selected on Development."""
    return ablation_learning_rate(preset, ensure_runs(rate_selection_specs(preset, store), runs_root, executor))


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
                    extra: Callable[[float], list[RunSpec]] | None = None,
                    announce: Callable[[int], None] | None = None) -> float:
    """Train every run the book needs, on one executor, under one progress bar (runs done of
    runs needed, with an ETA): the learning-rate study first, then, at the rate it selects on
    Development (or the preset's fixed rate), :func:`book_specs` and ``extra(rate)`` (the
    cross-dataset runs). Returns the ablation rate. The chapters then find their runs complete.

    ``announce(n)`` is called once, before anything trains, with the number of runs to train (at
    most ``n`` while the learning-rate study that picks the rate is incomplete); not at all when
    every run is complete, and then no executor is started."""
    root = Path(runs_root)
    study = rate_selection_specs(preset, store)

    def grid(lr: float) -> list[RunSpec]:
        return book_specs(preset, store, lr) + (extra(lr) if extra else [])

    missing_study = _missing(study, root)
    if missing_study:  # the rate is unknown: a rate of none of the study's (1.0) gives an upper bound
        todo = len(missing_study | _missing(grid(1.0), root))
    else:
        todo = len(_missing(grid(_study_rate(preset, study, root)), root))
        if not todo:
            return _study_rate(preset, study, root)
    if announce:
        announce(todo)
    owned = not isinstance(executor, concurrent.futures.Executor)
    pool = make_executor(executor)
    bar = tqdm(total=todo, desc="runs", unit="run", disable=not progress, dynamic_ncols=True)
    try:
        with bar:
            if missing_study:
                execute_all(study, root, pool, bar=bar)
            lr = _study_rate(preset, study, root)
            specs = grid(lr)
            bar.total = bar.n + len(_missing(specs, root))
            bar.refresh()
            execute_all(specs, root, pool, bar=bar)
    finally:
        if owned:
            pool.shutdown(wait=True)
    return lr


def _study_rate(preset: BookPreset, study: Sequence[RunSpec], runs_root: Path) -> float:
    """The ablation rate from the complete learning-rate study (the preset's, if fixed)."""
    lr, _how = ablation_learning_rate(preset, [load_run(runs_root / s.run_id) for s in study])
    return lr


