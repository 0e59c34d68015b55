"""Controls: what the synthetic cohort can and cannot show (book/decisions.md, "Controls").

Three cohorts identical to the book's synthetic cohort but for their label cues. They share its
seed, so they hold the same subjects, labels, offsets, poses and lighting; only the cue differs:

* ``null`` (``cues=()``): no label cue at all. Every setting must tie with the training-mean
  predictor; a setting that beats it has found a leak (identity, lighting, file order, video
  length, face loss that depends on the label) and the book says so.
* ``local only`` and ``global only``: which settings read which cue.

Whether a branch *can* see a cue is geometry, not training: the 24 patch windows see the
union of their units' receptive fields (:func:`dlga.patches.field_union_mask`).
:func:`cue_visibility` measures the share of each cue's pixel change that falls inside that
union; a branch separation is claimed only where the share is at most
:data:`SEPARATION_MAX_SHARE`.

Planning only describes runs (:func:`control_specs`); the chapter trains them with
:func:`dlga.experiments.ensure_runs`, the book build with everything else under one bar.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from data_prep.synthetic import CUES, cue_stills
from dlga import report
from dlga.config import FEATURE_STRIDE, SETTINGS
from dlga.experiments import BookPreset, cohort_config, get_preset, prepare_data, run_specs
from dlga.patches import CONV4_FIELD, field_union_mask, patch_centres
from dlga.runs import RunSpec

CONTROLS: dict[str, tuple[str, ...]] = {"null": (), "local only": ("local",), "global only": ("global",)}
"""The control cohorts and their cues."""

SEPARATION_MAX_SHARE = 0.5
"""A cue is outside the local branch's view only if at most this share of its pixel change
falls inside the union of the patch windows' receptive fields."""


def control_preset(preset: str | BookPreset, control: str) -> BookPreset:
    """The preset with the control cohort's cues (its cohort lives in its own directory)."""
    preset = get_preset(preset)
    if control not in CONTROLS:
        raise ValueError(f"unknown control {control!r}; choose one of {list(CONTROLS)}")
    if preset.cohort is None:
        raise ValueError(f"preset {preset.name!r} runs on real data: the controls need the synthetic cohort")
    return preset.with_overrides(cues=CONTROLS[control], **dict(preset.control_overrides))


def cohort_note(preset: str | BookPreset) -> str:
    """One sentence on how the control cohorts differ from the book's cohort besides their cues
    (Markdown): their size, where the preset makes them smaller (``control_overrides``)."""
    preset = get_preset(preset)
    base = cohort_config(preset)
    cfg = cohort_config(control_preset(preset, "null"))
    changed = {k: (getattr(base, k), getattr(cfg, k)) for k, _ in preset.control_overrides}
    if not any(a != b for a, b in changed.values()):
        return "The control cohorts are the book's cohort but for their cues."
    sizes = ", ".join(f"{k} {b} (book cohort: {a})" for k, (a, b) in changed.items() if a != b)
    return (f"At the {preset.name} preset the control cohorts are also smaller: {sizes}; they share the "
            "book cohort's seed but not its partitions, so each comparison stays within one control "
            "cohort (a setting against the training mean, or two settings on the same subjects).")


def control_stores(preset: str | BookPreset, progress: bool = False) -> dict[str, Path]:
    """The preprocessed store of every control cohort, made first where missing."""
    return {c: prepare_data(control_preset(preset, c), "synthetic", progress=progress) for c in CONTROLS}


def control_specs(preset: str | BookPreset, stores: Mapping[str, os.PathLike], learning_rate: float
                  ) -> dict[str, list[RunSpec]]:
    """The runs of each control: the null cohort trains ``null_settings``, the single-cue
    cohorts ``branch_settings``, all at the book's ablation rate with ``control_seeds``."""
    preset = get_preset(preset)
    out = {}
    for control, store in stores.items():
        settings = preset.null_settings if control == "null" else preset.branch_settings
        out[control] = run_specs(control_preset(preset, control), store, settings, [learning_rate],
                                 preset.control_seeds)
    return out


def cue_visibility(preset: str | BookPreset, index: int = 0) -> tuple[pd.DataFrame, dict]:
    """The share of each cue's pixel change inside the union of the patch fields, at the
    preset's model input size.

    For each cue, one subject of the cohort (row ``index``) is rendered as a still at BDI 0 and
    at the label cap with only that cue acting (:func:`data_prep.synthetic.cue_stills`),
    aligned at the model's input size; the union is taken over the windows of both images.

    Returns:
        A table (cue, input size, patch cells, field px, share of the image inside the union,
        share of the cue's change inside it, whether a branch separation may be claimed) and,
        per cue, the stills, the change image (size, size) and the union mask, for figures.
    """
    preset = get_preset(preset)
    model = preset.model_config("G")
    size, cells = model.input_size, model.patch_size
    cohort = cohort_config(preset)
    rows, images = [], {}
    for cue in CUES:
        stills = cue_stills(cohort, cue, size, index=index)
        change = np.abs(stills["images"][1].astype(float) - stills["images"][0].astype(float)).sum(-1)
        mask = field_union_mask(patch_centres(stills["landmarks"], size), size, cells)
        share = float((change * mask).sum() / change.sum()) if change.sum() else float("nan")
        rows.append({"cue": cue, "input px": size, "patch cells": cells, "field px": CONV4_FIELD + FEATURE_STRIDE * (cells - 1),
                     "image inside union": float(mask.mean()), "change inside union": share,
                     "branch separation claimable": bool(share <= SEPARATION_MAX_SHARE)})
        images[cue] = {**stills, "change": change, "mask": mask}
    return pd.DataFrame(rows), images


def draw_visibility(axes, images: Mapping[str, dict]) -> None:
    """For each cue, its high-severity still with the union of the patch fields outlined and
    the cue's pixel change overlaid (one axis per cue)."""
    for ax, (cue, im) in zip(axes, images.items()):
        ax.imshow(im["images"][1])
        change = np.ma.masked_less(im["change"], 1e-6 + 0.02 * im["change"].max())
        ax.imshow(change, cmap="autumn", alpha=0.7)
        ax.contour(im["mask"].astype(float), levels=[0.5], colors="#00e5ff", linewidths=1.2)
        ax.contourf(~im["mask"], levels=[0.5, 1.5], colors="k", alpha=0.45)
        ax.set_title(f"{cue} cue: pixel change (red) and union of patch fields (cyan)", fontsize=8)
        ax.set_axis_off()


def leaks(comparisons: pd.DataFrame) -> list[str]:
    """The settings of a null-control table (:func:`dlga.report.comparisons_with_mean`) whose
    Holm-adjusted interval lies wholly below zero: better than the training mean on a cohort
    without a cue."""
    if comparisons.empty:
        return []
    return comparisons.loc[comparisons["high"] < 0, "setting"].tolist()


def setting_table(runs, n: int = 2000) -> pd.DataFrame:
    """One row per setting among ``runs`` (in :data:`dlga.config.SETTINGS` order): seeds,
    Testing RMSE mean ± sd over seeds with its two-level 95 % interval (seeds x subjects), the
    training-mean predictor's Testing RMSE and the ratio of the two."""
    rows = []
    for setting in SETTINGS:
        mine = [r for r in runs if r.params["setting"] == setting]
        if not mine:
            continue
        res = report.seed_subject_interval(mine, n=n)
        mean = mine[0].metrics["mean_predictor"]["test"]["rmse"]
        rows.append({"setting": setting, "seeds": len(mine),
                     "Testing RMSE": report.mean_sd(r.metrics["test"]["rmse"] for r in mine),
                     report.CI_LABEL: report.interval_text(res["lo"], res["hi"]),
                     "training mean RMSE": round(mean, 2), "ratio to mean": round(res["estimate"] / mean, 3)})
    return pd.DataFrame(rows)
