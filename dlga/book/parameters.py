"""A chapter's parameters: the knobs of its experiment, their checks, and the table and
command that show them.

A chapter's parameters cell names the data (``preset``, ``dataset``, ...) and any knob of
:data:`KNOBS`; :func:`chapter_preset` turns them into a derived :class:`~dlga.book.presets.BookPreset`
(one message for every bad name or value), :func:`parameter_table` shows them and
:func:`rerun_command` gives the command that builds the chapter again with them.
"""

from __future__ import annotations

import difflib
import types
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import pandas as pd

from data_prep.synthetic import CUES
from dlga.book import report
from dlga.book.data import is_synthetic
from dlga.book.presets import COHORT_KNOBS, MODEL_FIELDS, TRAIN_FIELDS, BookPreset, cohort_config, get_preset
from dlga.config import MODEL_PRESETS, PRECISIONS, SETTINGS


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

CHAPTER_OPTIONS = ("preset", "dataset", "root", "show_faces", "cross_dataset", "cross_root", "executor")
"""The chapter parameters that choose the data, the display and where runs train, not the experiment."""

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
    if name in TRAIN_FIELDS:
        return getattr(preset.train_config(), name)
    if name in MODEL_FIELDS:
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



def parameter_block(preset: BookPreset, params: Mapping[str, Any], learning_rate: tuple[float, str] | None = None):
    """:func:`parameter_table` as the chapter shows it: a collapsed block titled "Parameters of
    this chapter" (its rows are read by whoever reruns the chapter, not on every visit)."""
    table = report.styled(parameter_table(preset, params, learning_rate), "Parameters of this chapter")
    return report.collapsed(table, "Parameters of this chapter (click to show)")


_UNSAID_DEFAULTS = {"dataset": "synthetic", "executor": "local"}
"""Chapter options a rerun command leaves out at these values (every chapter's default)."""


def rerun_command(chapter: str, params: Mapping[str, Any]) -> str:
    """The commands that rerun ``chapter`` with the parameters it ran with (papermill alone,
    and the book build), as a Markdown code block."""
    chosen = {k: v for k, v in params.items() if v is not None and k not in ("show_faces",)
              and not (k in _UNSAID_DEFAULTS and v == _UNSAID_DEFAULTS[k])}
    preset = chosen.pop("preset", "ci")
    opts = {k: chosen.pop(k) for k in ("dataset", "root", "executor") if k in chosen}
    papermill = " ".join([f"papermill book/{chapter}.ipynb out.ipynb -p preset {preset}",
                          *(f"-p {k} {format_value(v)}" for k, v in {**opts, **chosen}.items())])
    build = " ".join([f"python -m dlga.book build --preset {preset}", *(f"--{k} {v}" for k, v in opts.items()),
                      f"--only {chapter.split('_', 1)[0]}",
                      *(f"--set {k}={format_value(v)}" for k, v in chosen.items() if k in KNOBS)])
    return ("```bash\n" + papermill + "\n" + build + "\n```\n\nChange any parameter of the table at the top "
            "with another `-p NAME VALUE` (papermill) or `--set NAME=VALUE` (the book build; lists "
            "comma-separated, e.g. `--set seeds=0,1`).")
