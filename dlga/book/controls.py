"""Controls: what the synthetic cohort can and cannot show (book/decisions.md, "Controls").

Three cohorts identical to the book's synthetic cohort but for their label cues. They share its
seed, so they hold the same subjects, labels, offsets, poses and lighting; only the cue differs:

* ``null`` (``cues=()``): no label cue at all. Its images carry no path from the label, so it
  can only catch a pipeline bug (labels joined to the wrong files, ids, file order, the
  evaluation); every setting must tie with the training-mean predictor.
* ``local only`` and ``global only``: which settings read which cue.

Two stores derived from stores the book already has (no new cohort is drawn):

* ``permuted labels``: the book's store with its Training labels shuffled across sessions
  (Development and Testing untouched): whatever a model learns there cannot carry over, so
  every setting must tie with (or do worse than) the training-mean predictor.
* ``leak L`` (the positive control): the null store with a whole-frame brightness shift of
  ``L * bdi / 63`` grey levels (:data:`LEAK_UNIT`), in every partition: a leak of known size
  that the null control's procedure must flag. The smallest level flagged says how large a
  leak the null control would have seen.

Whether a branch *can* see a cue is geometry, not training: the 24 patch windows see the
union of their units' receptive fields (:func:`dlga.model.patches.field_union_mask`).
:func:`cue_visibility` measures the share of each cue's pixel change that falls inside that
union; a branch separation is claimed only where the share is at most
:data:`SEPARATION_MAX_SHARE`.

Planning only describes runs (:func:`control_specs`); the chapter trains them with
:func:`dlga.book.experiments.ensure_runs`, the book build with everything else under one bar.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from data_prep.store import (atomic_write_csv, atomic_write_json, read_manifest, read_video, store_fingerprint,
                             video_path, write_video)
from data_prep.synthetic import CUES, cue_stills
from dlga.book import intervals, report
from dlga.book.data import prepare_data
from dlga.book.experiments import run_specs
from dlga.book.presets import BookPreset, cohort_config, get_preset
from dlga.config import FEATURE_STRIDE, SETTINGS
from dlga.model.patches import CONV4_FIELD, field_union_mask, patch_centres
from dlga.runs.cache import RunSpec

CONTROLS: dict[str, tuple[str, ...]] = {"null": (), "local only": ("local",), "global only": ("global",)}
"""The control cohorts and their cues."""

PERMUTED = "permuted labels"
LEAK_UNIT = 63.0
"""BDI at which a leak level's brightness shift is reached in full (the label cap)."""
DERIVED_VERSION = 1
"""Bump when the way a derived store is made changes (its directory and fingerprint follow)."""


def leak_name(level: float) -> str:
    return f"leak {level:g}"

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
    """The preprocessed store of every control, made first where missing: the three control
    cohorts, the permuted-label store (from the book's store) and one leak store per
    ``leak_levels`` (from the null store)."""
    preset = get_preset(preset)
    stores = {c: prepare_data(control_preset(preset, c), "synthetic", progress=progress) for c in CONTROLS}
    if preset.permuted_settings:
        stores[PERMUTED] = permuted_store(prepare_data(preset, "synthetic", progress=progress))
    for level in preset.leak_levels:
        stores[leak_name(level)] = leak_store(stores["null"], level)
    return stores


def _derived(source: Path, kind: str, make) -> Path:
    """``<source>-<kind>``: a store made from ``source`` by ``make(manifest, read, write)``,
    reused while the source's fingerprint and :data:`DERIVED_VERSION` match. Frames are read
    and written through :mod:`data_prep.store`; the ``derived.json`` stamp is written last,
    so an interrupted derivation is redone."""
    source = Path(source)
    key = {"source": store_fingerprint(source), "kind": kind, "version": DERIVED_VERSION}
    dst = source.parent / f"{source.name}-{kind.replace(' ', '')}"
    stamp = dst / "derived.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == key:
        return dst
    if dst.exists():
        shutil.rmtree(dst)
    (dst / "videos").mkdir(parents=True)
    params = json.loads((source / "params.json").read_text()) if (source / "params.json").is_file() else {}
    atomic_write_json(dst / "params.json", {**params, "derived": key})
    for name in ("qc.csv",):
        if (source / name).is_file():
            shutil.copyfile(source / name, dst / name)
    manifest = read_manifest(source)
    atomic_write_csv(dst / "manifest.csv", make(manifest, source, dst))
    atomic_write_json(stamp, key)
    return dst


def _link_videos(manifest: pd.DataFrame, source: Path, dst: Path) -> None:
    for vid in manifest["video_id"]:
        src = video_path(source, vid)
        if src.is_file():
            try:
                os.link(src, video_path(dst, vid))
            except OSError:  # another file system: copy
                shutil.copyfile(src, video_path(dst, vid))


def permuted_store(source: str | os.PathLike, seed: int = 0) -> Path:
    """The store ``source`` with its Training labels shuffled across sessions (a session's
    videos keep one label; Development and Testing keep theirs); frames are shared."""
    def make(manifest, src, dst):
        train = manifest["partition"] == "Training"
        sessions = manifest.loc[train].drop_duplicates("session_id")[["session_id", "bdi"]]
        shuffled = np.random.default_rng(seed).permutation(sessions["bdi"].to_numpy())
        new = dict(zip(sessions["session_id"], shuffled))
        out = manifest.copy()
        out.loc[train, "bdi"] = out.loc[train, "session_id"].map(new)
        _link_videos(manifest, src, dst)
        return out
    return _derived(Path(source), f"permuted{seed}", make)


def leak_store(source: str | os.PathLike, level: float) -> Path:
    """The store ``source`` with every frame brightened by ``round(level * bdi / LEAK_UNIT)``
    grey levels (clipped to 255), ``bdi`` being the video's label: a label leak of known size."""
    if not level > 0:
        raise ValueError(f"a leak level must be a positive number of grey levels, got {level!r}")

    def make(manifest, src, dst):
        for vid, bdi in zip(manifest["video_id"], manifest["bdi"]):
            path = video_path(src, vid)
            if not path.is_file():
                continue
            v = read_video(path)
            shift = int(round(level * float(bdi) / LEAK_UNIT))
            frames = np.clip(v["frames"].astype(np.int16) + shift, 0, 255).astype(np.uint8)
            write_video(video_path(dst, vid), frames, v["landmarks"], v["frame_index"], v["score"], v["how"])
        return manifest
    return _derived(Path(source), f"leak{level:g}", make)


def control_specs(preset: str | BookPreset, stores: Mapping[str, os.PathLike], learning_rate: float
                  ) -> dict[str, list[RunSpec]]:
    """The runs of each control at the book's ablation rate with ``control_seeds``: the null
    cohort trains ``null_settings``, the single-cue cohorts ``branch_settings``, the
    permuted-label store ``permuted_settings`` and each leak store ``leak_settings``."""
    preset = get_preset(preset)
    out = {}
    for control, store in stores.items():
        if control == "null":
            settings, schedule = preset.null_settings, control_preset(preset, control)
        elif control in CONTROLS:
            settings, schedule = preset.branch_settings, control_preset(preset, control)
        elif control == PERMUTED:
            settings, schedule = preset.permuted_settings, preset
        else:
            settings, schedule = preset.leak_settings, control_preset(preset, "null")
        out[control] = run_specs(schedule, store, settings, [learning_rate], preset.control_seeds)
    return out


def leak_table(comparisons: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The positive control: per leak level (``{control name: comparisons_with_mean table}``),
    the setting, its gain over the training-mean predictor (BDI; mean minus setting), the
    Holm-adjusted interval of the difference, and whether the null-control procedure flagged it."""
    rows = []
    for name, table in comparisons.items():
        for row in table.to_dict("records"):
            rows.append({"leak (grey levels at BDI 63)": float(name.split()[-1]), "setting": row["setting"],
                         "gain over the training mean (BDI)": -row["diff RMSE"], "low": row["low"], "high": row["high"],
                         "flagged as a leak": bool(row["high"] < 0),
                         "fragile": intervals.is_fragile(row["low"], row["high"])})
    return pd.DataFrame(rows)


def smallest_flagged(table: pd.DataFrame, robust: bool = False) -> dict | None:
    """The smallest leak level of :func:`leak_table` flagged by every setting trained on it,
    with the smallest gain it produced (BDI) and whether any of its intervals is fragile (an end
    within the cross-CPU spread of 0: another CPU may not flag it); None when no level was
    flagged. ``robust``: only levels flagged with no fragile interval."""
    if table.empty:
        return None
    fragile = table["fragile"] if "fragile" in table else pd.Series(False, index=table.index)
    by = table.assign(fragile=fragile).groupby("leak (grey levels at BDI 63)")
    flagged = [lvl for lvl, t in by if t["flagged as a leak"].all() and not (robust and t["fragile"].any())]
    if not flagged:
        return None
    level = min(flagged)
    at = table["leak (grey levels at BDI 63)"] == level
    return {"level": level, "gain": float(table.loc[at, "gain over the training mean (BDI)"].min()),
            "fragile": bool(fragile[at].any())}


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
    """The settings of a null-control table (:func:`dlga.book.report.comparisons_with_mean`) whose
    Holm-adjusted interval lies wholly below zero: better than the training mean on a cohort
    without a cue."""
    if comparisons.empty:
        return []
    return comparisons.loc[comparisons["high"] < 0, "setting"].tolist()


def setting_table(runs, n: int = 2000) -> pd.DataFrame:
    """One row per setting among ``runs`` (in :data:`dlga.config.SETTINGS` order): seeds,
    Testing RMSE mean ± sd over seeds with its two-level 95 % interval (seeds x subjects; with
    one seed, subjects only, and the column says so), the training-mean predictor's Testing
    RMSE, the ratio of the two, and the seeds that diverged or did not learn (constant
    Development predictions, or no better than the training mean on Development): a collapsed
    seed pulls a setting toward the training mean, and the prose says so."""
    rows = []
    for setting in SETTINGS:
        mine = [r for r in runs if r.params["setting"] == setting]
        if not mine:
            continue
        res = intervals.seed_subject_interval(mine, n=n)
        mean = mine[0].metrics["mean_predictor"]["test"]["rmse"]
        rows.append({"setting": setting, "seeds": len(mine),
                     "Testing RMSE": report.mean_sd(r.metrics["test"]["rmse"] for r in mine),
                     intervals.CI_LABEL: intervals.interval_text(res["lo"], res["hi"]) + ("" if len(mine) > 1 else f" ({intervals.ONE_SEED})"),
                     "training mean RMSE": round(mean, 2), "ratio to mean": round(res["estimate"] / mean, 3),
                     "diverged or did not learn": report.collapsed_seeds(mine)})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class ControlReadings:
    """What the controls' runs say, computed once for the chapter and the reference file.

    Attributes:
        null: the null cohort's settings minus the training-mean predictor (Holm), or empty.
        permuted: the same for the permuted-label store, or empty.
        leak_rows: the positive control's :func:`leak_table`, or empty.
        smallest: :func:`smallest_flagged` of ``leak_rows`` (None: no level was flagged).
        robust: the same among the levels flagged with no fragile interval.
    """

    null: pd.DataFrame = field(default_factory=pd.DataFrame)
    permuted: pd.DataFrame = field(default_factory=pd.DataFrame)
    leak_rows: pd.DataFrame = field(default_factory=pd.DataFrame)
    smallest: dict | None = None
    robust: dict | None = None

    def verdicts(self) -> dict[str, Any]:
        """The verdicts a reader compares across builds: leak or no leak for the null and
        permuted controls (and whether an interval end is fragile), the positive control's
        smallest flagged level and its gain (BDI)."""
        out: dict[str, Any] = {}
        for name, table in (("null", self.null), (PERMUTED, self.permuted)):
            if not table.empty:
                out[name] = {"verdict": "leak" if leaks(table) else "no leak", "fragile": bool(table["fragile"].any())}
        if not self.leak_rows.empty:
            out["positive"] = {"smallest flagged level": None if self.smallest is None else self.smallest["level"],
                               "gain at it (BDI)": None if self.smallest is None else round(self.smallest["gain"], 3),
                               "fragile": bool(self.smallest and self.smallest["fragile"]),
                               "smallest robustly flagged level": None if self.robust is None else self.robust["level"]}
        return out


def read_controls(runs: Mapping[str, list], n: int = 2000) -> ControlReadings:
    """The comparisons with the training-mean predictor of the null and permuted-label controls
    and of each leak level (``runs``: control name to its runs, as :func:`control_specs` names
    them); ``n`` bootstrap resamples each."""
    def with_mean(name):
        return intervals.comparisons_with_mean(runs[name], n=n)[0] if runs.get(name) else pd.DataFrame()

    leak_runs = [c for c in runs if c.startswith("leak ") and runs[c]]
    rows = leak_table({c: with_mean(c) for c in leak_runs}) if leak_runs else pd.DataFrame()
    return ControlReadings(null=with_mean("null"), permuted=with_mean(PERMUTED), leak_rows=rows,
                           smallest=smallest_flagged(rows), robust=smallest_flagged(rows, robust=True))
