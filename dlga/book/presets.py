"""The book's presets: what each fixes (data, model, schedule, seeds, settings), and deriving one.

Three book presets, all in :data:`BOOK_PRESETS` (the book's Decisions chapter,
book/decisions.md, "Runs and presets"):

* ``ci``: the tiny synthetic cohort, the tiny model, a short schedule; what the tests and nbval
  run (minutes for everything);
* ``demo``: the default of ``make book``: the demo synthetic cohort, the tiny model, the
  ``demo`` schedule and several seeds (60 min on 2 CPU cores from a clean clone, measured);
* ``paper``: real AVEC data, the paper's 224 px model and schedule (a GPU job).

A chapter that changes a knob of its experiment (a rate, a step budget, the model's width)
derives a preset with :meth:`BookPreset.with_overrides`; every spec is built from the preset, so
the change reaches the run specs (and their ids), and an unchanged preset reuses stored runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from data_prep.synthetic import CohortConfig
from dlga.config import SETTINGS, ModelConfig, TrainConfig


AVEC_DATASETS = ("avec2013", "avec2014")
"""The AVEC challenges a book can read from a ``--root`` folder (the paper's two)."""
DATASETS = ("synthetic", *AVEC_DATASETS)
"""What ``--dataset`` names besides the path of a manifest CSV."""

TRAIN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))
MODEL_FIELDS = frozenset(f.name for f in dataclasses.fields(ModelConfig)) - {
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
        known = own | TRAIN_FIELDS | MODEL_FIELDS | set(COHORT_KNOBS)
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
        train = {**dict(self.train_overrides), **{k: v for k, v in knobs.items() if k in TRAIN_FIELDS}}
        model = {**dict(self.model_overrides), **{k: v for k, v in knobs.items() if k in MODEL_FIELDS}}
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


def cohort_config(preset: BookPreset, seed: int = 0) -> CohortConfig:
    """The preset's synthetic cohort with its overrides; ``seed`` > 0: the cross-dataset cohort
    of that seed, of which only Testing is read (so Training and Development hold one session)."""
    if preset.cohort is None:
        raise ValueError(f"preset {preset.name!r} runs on real data: it has no synthetic cohort")
    cohort = CohortConfig.preset(preset.cohort).replace(**dict(preset.cohort_overrides))
    if seed:
        cohort = cohort.replace(n_train=1, n_dev=1, name=f"{cohort.name}-seed{seed}")
    return cohort
