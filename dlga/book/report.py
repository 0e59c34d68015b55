"""What several chapters of the book share: the paper's reported numbers, notices, tables, figures.

Chapters stay thin: a parameters cell, a few calls into :mod:`dlga.book.experiments` and this
module, and prose. Reported numbers are the paper's (He, Chan, Wang), copied from its Tables 3-8 and
section 4.3.3; measured numbers come from the runs under ``runs/``.
"""

from __future__ import annotations

import html
from functools import partial
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from IPython.display import HTML

from dlga.config import SETTING_LABELS, SETTINGS
from dlga.training.metrics import (
    BAND_NAMES, RESAMPLED, holm_comparisons, mean_predictor, paired_two_level_bootstrap, severity_band,
    two_level_bootstrap,
)
from dlga.book.rate_rule import LEARNED_MIN_SD, learned  # one threshold for the learning check and the rate rule
from dlga.runs.rundir import prediction_table

# --- the paper's numbers ("reported") --------------------------------------------------------
# Tables 3 (AVEC2013) and 4 (AVEC2014): test RMSE, MAE per setting.
PAPER_ABLATION = {
    "avec2013": {
        "LA-CMP-": (8.84, 7.26), "LA-CMP+": (8.80, 7.22), "A": (8.60, 6.90), "B": (8.44, 6.63),
        "GA": (9.14, 7.51), "C": (9.07, 7.44), "D": (8.80, 7.23), "E": (8.74, 7.10),
        "F": (8.61, 6.90), "G": (8.39, 6.59),
    },
    "avec2014": {
        "LA-CMP-": (8.81, 7.25), "LA-CMP+": (8.79, 7.22), "A": (8.60, 6.90), "B": (8.42, 6.62),
        "GA": (9.11, 7.50), "C": (9.00, 7.41), "D": (8.70, 7.02), "E": (8.66, 6.93),
        "F": (8.56, 6.81), "G": (8.30, 6.51),
    },
}
# Tables 5 (AVEC2013, G1) and 6 (AVEC2014, G2): test RMSE, MAE per learning rate.
PAPER_LR = {
    "avec2013": {1e-6: (8.39, 6.59), 1e-5: (8.59, 6.90), 1e-4: (8.78, 7.21), 1e-3: (9.10, 7.50),
                 1e-2: (9.28, 7.60), 1e-1: (9.36, 7.65)},
    "avec2014": {1e-6: (8.30, 6.51), 1e-5: (8.54, 6.89), 1e-4: (8.80, 7.22), 1e-3: (9.08, 7.49),
                 1e-2: (9.26, 7.48), 1e-1: (9.35, 7.65)},
}
# Tables 7 (AVEC2013) and 8 (AVEC2014): the literature as the paper reports it (MAE None: N/A).
PAPER_LITERATURE = {
    "avec2013": [
        ("Baseline [11] / LPQ, SVR", 13.61, 10.88), ("Cummins et al. [34] / STIP and PHOG, SVR", 10.45, None),
        ("Meng et al. [35] / EOH and LBP, PLSR", 11.19, 9.14), ("Wen et al. [2] / LPQ-TOP, SVR", 10.27, 8.22),
        ("Zhu et al. [19] / Optical Flow, 2D-CNN", 9.82, 7.58), ("Mohamad et al. [13] / C3D, RNN", 9.28, 7.37),
        ("He et al. [18] / MRLBP-TOP, DPFV, SVR", 9.20, 7.55), ("Md et al. [23] / LSTM", 8.93, 7.04),
        ("Zhou et al. [6] / 2D-CNN", 8.19, 6.30), ("Melo et al. [21] / C3D", 8.26, 6.40),
        ("Melo et al. [36] / ResNet-50", 8.25, 6.30), ("Proposed approach (DLGA-CNN, G1)", 8.39, 6.59),
    ],
    "avec2014": [
        ("Baseline [12] / LGBP-TOP, SVR", 10.86, 8.86), ("Sidorov et al. [37] / LGBP-TOP, SVR", 10.83, 8.32),
        ("Jan et al. [38] / EOH, LBP and LPQ, PLSR", 10.50, 8.44), ("Kaya et al. [39] / CCA, ELM", 10.27, 8.20),
        ("Zhu et al. [19] / Optical Flow, 2D-CNN", 9.55, 7.47), ("Mohamad et al. [13] / C3D, RNN", 9.20, 7.22),
        ("He et al. [18] / MRLBP-TOP, DPFV, SVR", 9.01, 7.21), ("Dhall et al. [4] / LBP-TOP, SVR", 8.91, 7.08),
        ("Md et al. [23] / LSTM", 8.78, 6.86), ("Zhou et al. [6] / 2D-CNN", 8.39, 6.21),
        ("Melo et al. [21] / C3D", 8.31, 6.59), ("Melo et al. [36] / ResNet-50", 8.23, 6.13),
        ("Proposed approach (DLGA-CNN, G2)", 8.30, 6.51),
    ],
}
PAPER_SECONDS_PER_IMAGE = 2.12  # section 4.3.3, Intel Core i7-6700 3.40 GHz, 32 GB, TensorFlow
PAPER_TRAINING_HOURS = 5
PAPER_MACHINE = "Intel Core i7-6700 CPU @ 3.40 GHz, 32 GB, TensorFlow"

# Table 2 of the paper: output size of each block at input 224 (side, channels).
PAPER_TABLE2 = [
    ("Conv1_1", 224, 64), ("Pool1", 112, 64), ("Conv2_1", 112, 128), ("Pool2", 56, 128),
    ("Conv3_1", 56, 256), ("Pool3", 28, 256), ("Conv4_1", 28, 512), ("Conv4_2", 28, 512),
    ("CMP", 28, 128),
]
# The layers of dlga.model.network.build_model that Table 2's rows name.
TABLE2_LAYERS = {
    "Conv1_1": "conv1", "Pool1": "pool1", "Conv2_1": "conv2", "Pool2": "pool2", "Conv3_1": "conv3",
    "Pool3": "pool3", "Conv4_1": "conv4_1", "Conv4_2": "conv4_2", "CMP": "cmp",
}


def paper_key(dataset: str) -> str:
    """The paper's table to set beside ours: AVEC2013 for ``avec2013``, else AVEC2014
    (the synthetic cohort has the AVEC2014 layout and label distribution)."""
    return "avec2013" if dataset == "avec2013" else "avec2014"


def table_suffix(dataset: str) -> str:
    return "1" if dataset == "avec2013" else "2"


# --- notices -----------------------------------------------------------------------------------
def _admonition(kind: str, title: str, body: str) -> str:
    return (f'<div class="admonition {kind}"><p class="admonition-title">{html.escape(title)}</p>'
            f"<p>{body}</p></div>")


def data_notice(dataset: str, preset: str):
    """The banner at the top of every page with results: what data the numbers come from."""
    if dataset == "synthetic":
        body = (f"Every number measured on this page comes from the <b>synthetic cohort</b> "
                f"(preset <code>{html.escape(preset)}</code>): synthetic faces with synthetic BDI-II "
                "labels. These numbers test the pipeline; they do not reproduce the paper's results "
                "on AVEC and must not be compared with them as if they did. The paper's numbers are "
                "labelled <i>reported</i>, ours <i>measured</i>.")
        return HTML(_admonition("warning", "Synthetic data", body))
    body = (f"Measured on <b>{html.escape(str(dataset))}</b> (preset <code>{html.escape(preset)}</code>). "
            "The paper's numbers are labelled <i>reported</i>, ours <i>measured</i>.")
    return HTML(_admonition("note", "Data", body))


# --- tables -------------------------------------------------------------------------------------
# Columns of p-values in the book's tables: formatted by p_value_cell when the table knows
# its resolution (attrs["p_floor"]).
P_COLUMNS = ("p", "p (Holm)")


P_FLOOR = 0.001
"""The smallest p-value the tables print as a number: below it they say "< 0.001" (three
decimals would print 0.000, and the tails of a t distribution so far out say little)."""


def p_value_cell(p: float, floor: float = P_FLOOR) -> str:
    """A p-value as a table cell (HTML): three decimals, or ``"&lt; floor"`` below ``floor``
    (never "0.000"). Escaped here because the Styler writes cells as they are."""
    if not np.isfinite(p):
        return "–"
    return html.escape(f"< {floor:.2g}") if p < floor else f"{p:.3f}"


def styled(frame: pd.DataFrame, caption: str | None = None, precision: int = 2, hide_index: bool = True,
           formats: dict[str, str] | None = None):
    """A pandas Styler with a caption and fixed precision (how the book shows tables);
    ``formats`` maps columns to their own format strings (e.g. ``"{:,.0f}"`` for a count).
    A table whose ``attrs`` carry ``p_floor`` shows its p-values with :func:`p_value_cell`."""
    sty = frame.style.format(precision=precision, na_rep="–")
    if "p_floor" in frame.attrs:
        p_cell = partial(p_value_cell, floor=frame.attrs["p_floor"])
        formats = {**{c: p_cell for c in P_COLUMNS}, **(formats or {})}
    own = {c: f for c, f in (formats or {}).items() if c in frame.columns}
    if own:
        # subset: a format call without one sets every other column back to pandas' 6 decimals.
        sty = sty.format(own, subset=list(own), na_rep="–")
    if hide_index:
        sty = sty.hide(axis="index")
    if caption:
        sty = sty.set_caption(caption)
    return sty.set_table_attributes('class="dataframe"')


def styled_comparisons(table: pd.DataFrame, caption: str):
    """:func:`styled` for a table of :func:`comparisons_with` or :func:`comparisons_with_mean`:
    the interval shown once, as its text column (``low``/``high`` stay in the frame for code)."""
    view = table.drop(columns=["low", "high"], errors="ignore")
    if "fragile" in view:  # a flag a reader scans for, not a boolean to decode
        view = view.assign(fragile=view["fragile"].map({True: "fragile", False: ""}))
    return styled(view, caption)


def mean_sd(values: Iterable[float]) -> str:
    v = np.asarray(list(values), dtype=float)
    if len(v) == 0:
        return "–"
    if len(v) == 1:
        return f"{v[0]:.2f}"
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}"


def runs_table(runs) -> pd.DataFrame:
    """One row per run: setting, lr, seed, steps, stop reason, Development and Testing metrics,
    the sd of its per-video predictions on Development (``pred_sd_dev``, what the learning
    check reads) and on Testing (``pred_sd_test``, shown only), wall time."""
    rows = []
    for r in runs:
        m = r.metrics
        rows.append({
            "run_id": r.run_id, "setting": r.params.get("setting"), "lr": r.params["train"]["learning_rate"],
            "seed": r.params["train"]["seed"], "steps": m["steps"], "best_step": m["best_step"],
            "stop": m["stop_reason"], "dev_rmse": m["dev"]["rmse"], "dev_mae": m["dev"]["mae"],
            "test_rmse": m["test"]["rmse"], "test_mae": m["test"]["mae"],
            "mean_dev_rmse": m["mean_predictor"]["dev"]["rmse"], "mean_test_rmse": m["mean_predictor"]["test"]["rmse"],
            "pred_sd_dev": _prediction_sd(r, "Development"), "pred_sd_test": _prediction_sd(r, "Testing"),
            "wall_s": m["wall_time_s"],
        })
    return pd.DataFrame(rows)


def _prediction_sd(run, partition: str) -> float:
    return float(run.predictions.loc[run.predictions["partition"] == partition, "prediction"].std())


# --- intervals and comparisons (Decisions: Statistics) -------------------------------------------
# Every interval resamples subjects (all of a subject's videos together) and, where a setting
# has several seeds, the seeds: dlga.training.metrics.two_level_bootstrap and its paired form.
CI_LABEL = f"95% CI ({RESAMPLED})"
ENSEMBLE_CI_LABEL = "95% CI (seed-averaged ensemble, subjects)"


def interval_text(lo: float, hi: float) -> str:
    """An interval as the book's tables print it: ``[lo, hi]``, two decimals."""
    return f"[{lo:.2f}, {hi:.2f}]"


def seed_subject_interval(runs, metric: str = "rmse", n: int = 2000, seed: int = 0) -> dict | None:
    """:func:`dlga.training.metrics.two_level_bootstrap` of the Testing ``metric`` of one setting's
    runs (its seeds): the estimate (mean over seeds of each seed's metric), ``lo``, ``hi``,
    resampling seeds x subjects. None for no runs."""
    runs = list(runs)
    if not runs:
        return None
    return two_level_bootstrap(prediction_table(runs), metric, n=n, seed=seed)


def interval(runs, metric: str = "rmse", n: int = 2000, seed: int = 0) -> str:
    """:func:`seed_subject_interval` as ``"[lo, hi]"`` (``""`` for no runs)."""
    res = seed_subject_interval(runs, metric, n, seed)
    return "" if res is None else interval_text(res["lo"], res["hi"])


def video_interval(runs, metric: str = "rmse", n: int = 2000, seed: int = 0) -> str:
    """The name the chapters call: :func:`interval`, the two-level interval over seeds x
    subjects (it resamples subjects, never single videos)."""
    return interval(runs, metric, n, seed)


def _ensemble_table(runs, partition: str = "Testing") -> pd.DataFrame:
    """The seed-averaged predictions of ``runs`` as a one-seed long table."""
    return pooled_predictions(runs, partition).assign(seed=0)


def ensemble_interval(runs, metric: str = "rmse", n: int = 2000, seed: int = 0) -> str:
    """Interval of the Testing ``metric`` of the seed-averaged ensemble of ``runs`` (one model
    whose prediction is the mean over seeds), resampling subjects: ``"[lo, hi]"``. It holds
    no training variance and measures another estimand than :func:`interval`; show it only
    beside it, named as such (:data:`ENSEMBLE_CI_LABEL`)."""
    runs = list(runs)
    if not runs:
        return ""
    res = two_level_bootstrap(_ensemble_table(runs), metric, n=n, seed=seed)
    return interval_text(res["lo"], res["hi"])


def mean_predictor_table(run, partition: str = "Testing") -> pd.DataFrame:
    """The training-mean predictor on ``partition`` of ``run``'s store, as a one-seed long
    table (:func:`dlga.runs.rundir.prediction_table` layout): it has no training variance."""
    table = prediction_table([run], partition).assign(seed=0)
    train = run.predictions.loc[run.predictions["partition"] == "Training", "bdi"].to_numpy(float)
    return table.assign(prediction=mean_predictor(train, len(table)))


def _cell(runs, metric: str, n: int) -> tuple[str, str]:
    """(mean ± sd over seeds, two-level interval) of the Testing ``metric``."""
    runs = list(runs)
    return mean_sd(r.metrics["test"][metric] for r in runs), interval(runs, metric, n)


def cross_dataset_table(within, across, dataset: str, other: str, n_boot: int = 2000) -> pd.DataFrame:
    """G tested on its own dataset's Testing partition beside G tested on another dataset's.

    ``within`` and ``across`` are runs of the same specs (setting, schedule, seeds) that differ
    only in the test store, so the rows differ only in the test data. Intervals resample seeds
    x subjects; the training-mean predictor (one seed: subjects only) is the yardstick.
    """
    rows = []
    for runs, tested_on in ((within, dataset), (across, other)):
        rmse, rmse_ci = _cell(runs, "rmse", n_boot)
        mae, mae_ci = _cell(runs, "mae", n_boot)
        mean = two_level_bootstrap(mean_predictor_table(runs[0]), "rmse", n=n_boot) if runs else None
        rows.append({"trained on": dataset, "tested on": tested_on, "seeds": len(runs),
                     "RMSE measured": rmse, f"RMSE {CI_LABEL}": rmse_ci, "MAE measured": mae, f"MAE {CI_LABEL}": mae_ci,
                     "mean predictor RMSE": np.nan if mean is None else mean["estimate"],
                     "mean predictor RMSE 95% CI (subjects)": "" if mean is None else interval_text(mean["lo"], mean["hi"])})
    return pd.DataFrame(rows)


def ablation_table(runs, dataset: str, n_boot: int = 2000) -> pd.DataFrame:
    """Tables 3/4: the paper's Testing RMSE/MAE beside ours for the ten settings.

    Measured: mean ± sd over seeds, the two-level 95 % interval (seeds x subjects,
    :func:`interval`) of RMSE and MAE, the seed-averaged ensemble's interval beside it
    (:func:`ensemble_interval`, named as such), Development RMSE and the seed count; a last row
    gives the training-mean predictor (one seed, subjects resampled). ``_rmse``: the mean
    Testing RMSE, for sorting.
    """
    runs = list(runs)
    paper = PAPER_ABLATION[paper_key(dataset)]
    suffix = table_suffix(dataset)
    rows = []
    for s in SETTINGS:
        sub = [r for r in runs if r.params["setting"] == s]
        label = SETTING_LABELS[s]
        if ":" in label:
            letter, rest = label.split(":", 1)
            label = f"{letter}{suffix}:{rest}"
        rmse, rmse_ci = _cell(sub, "rmse", n_boot)
        mae, mae_ci = _cell(sub, "mae", n_boot)
        rows.append({
            "setting": label, "RMSE reported": paper[s][0], "MAE reported": paper[s][1],
            "RMSE measured": rmse, f"RMSE {CI_LABEL}": rmse_ci, "MAE measured": mae, f"MAE {CI_LABEL}": mae_ci,
            f"RMSE {ENSEMBLE_CI_LABEL}": ensemble_interval(sub, n=n_boot),
            "Dev RMSE measured": mean_sd(r.metrics["dev"]["rmse"] for r in sub), "seeds": len(sub),
            "_rmse": float(np.mean([r.metrics["test"]["rmse"] for r in sub])) if sub else np.nan,
        })
    if runs:
        table = mean_predictor_table(runs[0])
        r_, m_ = (two_level_bootstrap(table, metric, n=n_boot) for metric in ("rmse", "mae"))
        rmse_ci = interval_text(r_["lo"], r_["hi"])
        rows.append({
            "setting": "training-mean predictor", "RMSE reported": np.nan, "MAE reported": np.nan,
            "RMSE measured": f"{r_['estimate']:.2f}", f"RMSE {CI_LABEL}": rmse_ci,
            "MAE measured": f"{m_['estimate']:.2f}", f"MAE {CI_LABEL}": interval_text(m_["lo"], m_["hi"]),
            # One model: its seed-averaged ensemble is itself, so the interval is the same.
            f"RMSE {ENSEMBLE_CI_LABEL}": rmse_ci, "Dev RMSE measured": f"{runs[0].metrics['mean_predictor']['dev']['rmse']:.2f}",
            "seeds": 1, "_rmse": r_["estimate"],
        })
    return pd.DataFrame(rows)


def lr_table(runs, dataset: str, chosen: float, n_boot: int = 2000) -> pd.DataFrame:
    """Tables 5/6: setting G per learning rate, the paper's Testing RMSE/MAE beside ours
    (mean ± sd over seeds, the two-level interval over seeds x subjects) and the Development
    RMSE; ``chosen`` marks the rate selected on Development. Diverged runs (a training loss
    that is not finite) are counted; ``worst Dev RMSE measured`` is the highest Development
    RMSE of any evaluation of the rate's runs, which shows a run that blew up and came back."""
    runs = list(runs)
    paper = PAPER_LR[paper_key(dataset)]
    rows = []
    for lr in sorted({r.params["train"]["learning_rate"] for r in runs}):
        sub = [r for r in runs if r.params["train"]["learning_rate"] == lr]
        reported = paper.get(lr, (np.nan, np.nan))
        rmse, rmse_ci = _cell(sub, "rmse", n_boot)
        rows.append({"learning rate": f"{lr:g}", "RMSE reported": reported[0], "MAE reported": reported[1],
                     "RMSE measured": rmse, f"RMSE {CI_LABEL}": rmse_ci,
                     "MAE measured": mean_sd(r.metrics["test"]["mae"] for r in sub),
                     "Dev RMSE measured": mean_sd(r.metrics["dev"]["rmse"] for r in sub), "seeds": len(sub),
                     "worst Dev RMSE measured": max(_worst_dev_rmse(r) for r in sub),
                     "diverged": sum(r.metrics.get("stop_reason") == "diverged" for r in sub),
                     "selected on Development": "yes" if lr == chosen else ""})
    return pd.DataFrame(rows)


def _worst_dev_rmse(run) -> float:
    """The highest Development RMSE of a run's evaluations (its final one if none is recorded)."""
    evaluated = run.history["dev_rmse"].dropna()
    return float(evaluated.max()) if len(evaluated) else float(run.metrics["dev"]["rmse"])


def backbone_table(model) -> pd.DataFrame:
    """Table 2 beside the built model: for each row of :data:`PAPER_TABLE2`, the reported
    output size and the output size of the layer of ``model`` (a :func:`dlga.model.network.build_model`
    model) that the row names, as ``side x side x channels``; ``absent`` where the model has no
    such layer (CMP in a CMP- setting)."""
    names = {layer.name for layer in model.layers}
    rows = []
    for row, side, channels in PAPER_TABLE2:
        layer = TABLE2_LAYERS[row]
        if layer in names:
            _, h, w, c = model.get_layer(layer).output.shape
            built = f"{h}x{w}x{c}"
        else:
            built = "absent"
        rows.append({"layer": row, "Table 2 (reported)": f"{side}x{side}x{channels}", "built (measured)": built})
    return pd.DataFrame(rows)


def face_frame_index(frames: np.ndarray) -> int:
    """The index of a frame with a face in view: the one whose central half varies most.

    ``frames`` is ``(N, S, S, 3)`` uint8 aligned faces. A frame where preprocessing reused an
    earlier box can show background, which is flatter than a face.
    """
    s = frames.shape[1]
    centre = frames[:, s // 4:3 * s // 4, s // 4:3 * s // 4]
    return int(np.argmax(centre.reshape(len(frames), -1).std(axis=1)))


def pooled_predictions(runs, partition: str = "Testing") -> pd.DataFrame:
    """Per-video predictions of a partition, averaged over the runs (seeds): video_id,
    subject_id, session_id, bdi, prediction (the seed-averaged ensemble)."""
    runs = list(runs)
    tables = [t.set_index("video_id") for _, t in prediction_table(runs, partition).groupby("seed", sort=False)]
    if len(tables) != len(runs):
        raise ValueError(f"runs share seeds ({[r.params['train']['seed'] for r in runs]}); pass one run per seed")
    base = tables[0][["subject_id", "session_id", "bdi"]].copy()
    base["prediction"] = np.mean([t.loc[base.index, "prediction"].to_numpy() for t in tables], axis=0)
    return base.reset_index()


def paired_comparison(runs_a, runs_b, n: int = 2000, seed: int = 0, metric: str = "rmse") -> dict:
    """Paired two-level bootstrap of Testing metric(a) - metric(b) (seeds x subjects, the same
    subject resamples for both; :func:`dlga.training.metrics.paired_two_level_bootstrap`). Unadjusted:
    a family of comparisons goes through :func:`comparisons_with`."""
    return paired_two_level_bootstrap(prediction_table(runs_a), prediction_table(runs_b), metric, n=n, seed=seed)


def _bounds(res) -> tuple[float, float, float, str]:
    """(estimate, lo, hi, how the interval was made) of a comparison: a two-level result, a
    Holm row, or a one-run :func:`dlga.training.metrics.paired_bootstrap` result (over videos)."""
    if "lo_holm" in res:
        k = res.get("holm_k", "")
        return res["estimate"], res["lo_holm"], res["hi_holm"], f"Holm-adjusted over {k} comparisons, {RESAMPLED}"
    if "lo" in res:
        return res["estimate"], res["lo"], res["hi"], str(res.get("resampled", RESAMPLED))
    return res["diff"], res["low"], res["high"], "videos of one set of predictions"


EQUIVALENCE_BDI = 1.0
"""BDI points: a tie whose Holm-adjusted interval lies inside +-this is "equivalent within 1 BDI";
a wider tie is "inconclusive" (Decisions: Statistics). Neither is ranked."""

FRAGILE_BDI = 0.25
"""BDI points: an interval end this close to a verdict's boundary (0, or +-EQUIVALENCE_BDI for
equivalence) can move across it on another CPU (Decisions: "Verdicts that reproduce"; the
cross-CPU spread of interval ends measured between two demo builds)."""

ONE_SEED = "subjects only (one seed: training variance not included)"


def verdict_label(res, name_a: str, name_b: str) -> str:
    """``"tie"`` when the (adjusted, for a Holm row) 95 % interval of metric(a) - metric(b)
    contains 0, else ``"<name> better"`` for the side with the lower error."""
    estimate, lo, hi, _ = _bounds(res)
    if lo <= 0 <= hi:
        return "tie"
    return f"{name_a if estimate < 0 else name_b} better"


def reading(lo: float, hi: float, margin: float = EQUIVALENCE_BDI) -> str:
    """What an interval [lo, hi] of a difference says: ``"difference"`` (it excludes 0),
    ``"equivalent within 1 BDI"`` (it contains 0 and lies inside +-``margin``) or
    ``"inconclusive"`` (a wider tie)."""
    if not lo <= 0 <= hi:
        return "difference"
    return f"equivalent within {margin:g} BDI" if -margin < lo and hi < margin else "inconclusive"


def is_fragile(lo: float, hi: float, spread: float = FRAGILE_BDI, margin: float = EQUIVALENCE_BDI) -> bool:
    """Whether an interval end lies within ``spread`` of a boundary its reading depends on:
    0 (tie or difference) or +-``margin`` (equivalence, for an interval that contains 0)."""
    ends = (lo, hi)
    near_zero = min(abs(e) for e in ends) < spread
    near_margin = lo <= 0 <= hi and min(abs(abs(e) - margin) for e in ends) < spread
    return bool(near_zero or near_margin)


def verdict(res, name_a: str, name_b: str, unit: str = "BDI points") -> str:
    """A comparison in words. ``res``: :func:`paired_comparison`'s result or a row of
    :func:`comparisons_with`'s Holm family. A tie when the interval contains 0 (equivalent
    within 1 BDI when it lies inside +-1, else inconclusive); ties are not ranked."""
    estimate, lo, hi, how = _bounds(res)
    ci = f"{estimate:+.2f} {unit} (95 % interval, {how}: [{lo:+.2f}, {hi:+.2f}])"
    label = verdict_label(res, name_a, name_b)
    if label == "tie":
        return f"{name_a} vs {name_b}: {ci}: a **tie** ({reading(lo, hi)}), the interval contains 0; neither is ranked above the other."
    return f"{name_a} vs {name_b}: {ci}: **{label.removesuffix(' better')}** has the lower error."


def _holm_table(holm: pd.DataFrame, reference: str, sign: float, column: str, n: int,
                reference_is_model: bool = True) -> tuple[pd.DataFrame, list[str]]:
    """The book's view of a :func:`dlga.training.metrics.holm_comparisons` family of ``n`` draws
    (``sign`` -1 flips reference - other into other - reference). A trained side with one seed
    gets the verdict :data:`ONE_SEED`: its interval holds no training variance, so no verdict is
    drawn (``reference_is_model=False``: the reference is the training-mean predictor, one
    model by nature)."""
    k = len(holm)
    ci_name = f"95% CI (Holm, {k} comparisons; {RESAMPLED})"
    rows, lines = [], []
    for row in holm.to_dict("records"):
        est, lo, hi = sign * row["estimate"], *sorted((sign * row["lo_holm"], sign * row["hi_holm"]))
        res = {"estimate": est, "lo_holm": lo, "hi_holm": hi, "holm_k": k}
        a, b = (reference, row["setting"]) if sign > 0 else (row["setting"], reference)
        one_seed = row["n_seeds"] < 2 or (reference_is_model and row["n_seeds_reference"] < 2)
        label = ONE_SEED if one_seed else verdict_label(res, a, b)
        rows.append({column: row["setting"], "diff RMSE": est, "low": lo, "high": hi, ci_name: interval_text(lo, hi),
                     "p (Holm)": row["p_holm"], "seeds": row["n_seeds"], "verdict": label,
                     "reading": "no verdict" if one_seed else reading(lo, hi),
                     "fragile": False if one_seed else is_fragile(lo, hi)})
        lines.append(f"{a} vs {b}: {ONE_SEED}; no verdict." if one_seed else verdict(res, a, b))
    out = pd.DataFrame(rows)
    out.attrs.update(resampled=RESAMPLED, adjustment=f"Holm, {k} comparisons", p_floor=P_FLOOR)
    return out, lines


def comparisons_with(runs, reference: str = "G", n: int = 2000, seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """The paired comparisons of ``reference`` with every other setting among ``runs``, as one
    Holm-adjusted family (:func:`dlga.training.metrics.holm_comparisons`: seeds x subjects, the same
    subject resamples for every comparison).

    Returns a table, one row per other setting in the order of :data:`dlga.config.SETTINGS`:
    the difference of Testing RMSE (reference minus it), ``low``/``high`` and the interval
    text of the Holm-adjusted 95 % interval (the column names the family size and what was
    resampled), the Holm-adjusted p, the seeds and the verdict (``"tie"`` iff the adjusted
    interval contains 0); and the same comparisons in words (:func:`verdict`).
    """
    by = {s: [r for r in runs if r.params["setting"] == s] for s in SETTINGS}
    if not by.get(reference):
        raise ValueError(f"no runs of the reference setting {reference!r}; settings present: {[s for s in SETTINGS if by[s]]}")
    others = {s: prediction_table(by[s]) for s in SETTINGS if s != reference and by[s]}
    if not others:
        return pd.DataFrame(columns=[f"{reference} minus", "diff RMSE", "low", "high", "p (Holm)", "seeds", "verdict"]), []
    holm = holm_comparisons(prediction_table(by[reference]), others, n=n, seed=seed)
    return _holm_table(holm, reference, 1.0, f"{reference} minus", n)


def comparisons_with_mean(runs, n: int = 2000, seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """Every setting among ``runs`` against the training-mean predictor (a one-seed side), one
    Holm-adjusted family: the null control's test (a setting that beats the mean on a cohort
    without cues has found a leak). Table and lines as :func:`comparisons_with`, the
    difference being setting minus mean predictor."""
    runs = list(runs)
    by = {s: [r for r in runs if r.params["setting"] == s] for s in SETTINGS}
    settings = {s: prediction_table(v) for s, v in by.items() if v}
    if not settings:
        raise ValueError("no runs to compare with the training-mean predictor")
    holm = holm_comparisons(mean_predictor_table(runs[0]), settings, n=n, seed=seed)
    return _holm_table(holm, "training mean", -1.0, "setting", n, reference_is_model=False)


def compare_with_predictions(runs, predictions: pd.DataFrame, n: int = 2000, seed: int = 0,
                             metric: str = "rmse") -> dict:
    """Paired two-level bootstrap of metric(runs) - metric(other) on Testing: the runs' seeds
    x subjects against another model's per-video predictions (a baseline: one seed).

    ``predictions``: ``video_id``, ``partition``, ``prediction`` (e.g.
    :attr:`dlga.book.baselines.BaselineResult.predictions`), matched to the runs' videos by id.
    """
    ours = prediction_table(runs)
    return paired_two_level_bootstrap(ours, _other_side(ours, predictions), metric, n=n, seed=seed)


def _other_side(ours: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """A baseline's Testing predictions on ``ours``'s videos, with their subjects and labels."""
    other = predictions[predictions["partition"] == "Testing"].set_index("video_id")
    videos = ours.drop_duplicates("video_id")
    missing = sorted(set(videos["video_id"]) - set(other.index))
    if missing:
        raise ValueError(f"the other predictions lack {len(missing)} Testing videos of the runs, e.g. {missing[:3]}; "
                         "compare predictions made on the same store")
    return videos.assign(seed=0, prediction=other.loc[videos["video_id"], "prediction"].to_numpy(float))


def paired_with_predictions(pooled: pd.DataFrame, predictions: pd.DataFrame, n: int = 2000, seed: int = 0,
                            metric: str = "rmse") -> dict:
    """Paired bootstrap of metric(pooled) - metric(other) on the Testing videos of ``pooled``,
    resampling subjects: the seed-averaged ensemble against another model (both one seed).
    Prefer :func:`compare_with_predictions`, which keeps the training variance.

    Args:
        pooled: per-video predictions (``video_id``, ``subject_id`` or ``session_id``,
            ``bdi``, ``prediction``), e.g. from :func:`pooled_predictions`.
        predictions: another model's per-video predictions with ``video_id``, ``partition``
            and ``prediction`` (a baseline's), matched to ``pooled`` by video id.
    """
    ours = pooled.assign(seed=0)
    if "subject_id" not in ours.columns:
        ours["subject_id"] = ours["session_id"]
    res = paired_two_level_bootstrap(ours, _other_side(ours, predictions), metric, n=n, seed=seed)
    return {**res, "resampled": "subjects (seed-averaged ensemble)"}


# --- checks of the runs themselves ---------------------------------------------------------------


def learning_check(runs) -> pd.DataFrame:
    """Per setting (in :data:`dlga.config.SETTINGS` order): has every seed learned?

    A run has learned when its Development predictions are not constant (sd over videos above
    :data:`LEARNED_MIN_SD`) and its Development RMSE is below the training-mean predictor's.
    Development only: Testing is read once, for the tables, never to judge a run.
    Columns: setting, seeds, dev_rmse (mean over seeds), mean_predictor_dev_rmse,
    min_prediction_sd_dev, ``learned (all seeds)``.
    """
    t = runs_table(runs)
    if t.empty:
        return pd.DataFrame(columns=["setting", "seeds", "dev_rmse", "mean_predictor_dev_rmse",
                                     "min_prediction_sd_dev", "learned (all seeds)"])
    t = t.assign(ok=(t["dev_rmse"] < t["mean_dev_rmse"]) & (t["pred_sd_dev"] > LEARNED_MIN_SD))
    out = t.groupby("setting").agg(seeds=("seed", "count"), dev_rmse=("dev_rmse", "mean"),
                                   mean_predictor_dev_rmse=("mean_dev_rmse", "mean"),
                                   min_prediction_sd_dev=("pred_sd_dev", "min"), **{"learned (all seeds)": ("ok", "all")})
    order = [s for s in SETTINGS if s in out.index] + [s for s in out.index if s not in SETTINGS]
    return out.loc[order].reset_index()


def early_stopping_note(train_config, runs=()) -> str:
    """Whether early stopping can end a schedule, in one sentence (and how often it did).

    Early stopping (:class:`dlga.training.early_stopping.EarlyStopping`) fires once the smoothed training loss
    has made no new minimum for ``patience`` steps; the first step sets the first minimum, so
    the earliest step it can fire is ``patience + 1``. ``train_config``: a
    :class:`dlga.config.TrainConfig`; ``runs``: runs of that schedule, whose stop reasons are
    counted.
    """
    patience, max_steps = int(train_config.patience), int(train_config.max_steps)
    if patience == 0:
        text = f"Early stopping is off (patience 0): every run trains its {max_steps} steps."
    elif patience + 1 > max_steps:
        text = (f"Early stopping (patience {patience}) cannot fire before step {patience + 1}: with max_steps "
                f"{max_steps} it never does, and every run ends at step {max_steps} or when its loss diverges.")
    else:
        text = (f"Early stopping (patience {patience}) can fire from step {patience + 1} of {max_steps}, and only "
                f"if the smoothed training loss makes no new minimum after step {max_steps - patience}, "
                f"in the last {patience} steps.")
    runs = list(runs)
    if runs:
        stopped = sum(r.metrics.get("stop_reason") == "early_stopping" for r in runs)
        text += f" Measured: {stopped} of {len(runs)} runs stopped early."
    return text


def difficulty_table(runs, floor: Mapping[str, float] | None = None) -> pd.DataFrame:
    """How hard the task is: per setting among ``runs``, the mean RMSE over seeds against the
    training-mean predictor's, on **Development** (``Dev ratio``: what the cohort's difficulty
    is calibrated on; AVEC2014: 0.72 for the paper's G on Testing) and on Testing (``ratio``:
    reported, never tuned on), the lowest Development ratio first (a description of the task,
    not a model selection); ``floor`` (:func:`data_prep.synthetic.difficulty_floor`) adds the
    row of a perfect reading of the synthetic cues (Testing)."""
    t = runs_table(runs)
    rows = []
    if not t.empty:
        g = t.groupby("setting").agg(seeds=("seed", "count"), dev_rmse=("dev_rmse", "mean"),
                                     mean_dev_rmse=("mean_dev_rmse", "mean"), test_rmse=("test_rmse", "mean"),
                                     mean_test_rmse=("mean_test_rmse", "mean"))
        g = g.assign(dev_ratio=g["dev_rmse"] / g["mean_dev_rmse"], ratio=g["test_rmse"] / g["mean_test_rmse"])
        g = g.sort_values("dev_ratio")
        # "lowest" describes the cohort's difficulty (the calibration's target); it selects nothing.
        rows = [{"reader": f"{s} (measured{', lowest' if i == 0 else ''})", "seeds": int(r.seeds),
                 "Development RMSE": r.dev_rmse, "Dev ratio": r.dev_ratio,
                 "Testing RMSE": r.test_rmse, "training mean RMSE": r.mean_test_rmse, "ratio": r.ratio}
                for i, (s, r) in enumerate(g.iterrows())]
    if floor is not None:
        rows.append({"reader": "the cues themselves (least squares on cue values + offsets)", "seeds": 0,
                     "Development RMSE": np.nan, "Dev ratio": np.nan,
                     "Testing RMSE": floor["rmse_cues"], "training mean RMSE": floor["rmse_mean"], "ratio": floor["ratio"]})
    return pd.DataFrame(rows, columns=["reader", "seeds", "Development RMSE", "Dev ratio", "Testing RMSE",
                                       "training mean RMSE", "ratio"])


POWER_HALF_WIDTH = 1.0
"""BDI points: the largest half-width of a paired interval of G against a single-branch setting
at which the book counts a grid as large enough to tell 1 BDI apart (Decisions: Statistics)."""


def kept_before_last(runs) -> tuple[int, int]:
    """How many of ``runs`` kept a checkpoint from before their last evaluation (their best
    Development step is earlier than their last step), and how many runs there are. A run that
    keeps its last evaluation was still improving when its schedule ended."""
    runs = list(runs)
    return sum(int(r.metrics["best_step"]) < int(r.metrics["steps"]) for r in runs), len(runs)


def power_table(comparisons: pd.DataFrame, runs, settings: Iterable[str] = ("GA", "LA-CMP+"),
                reference: str = "G") -> pd.DataFrame:
    """The half-width of the Holm-adjusted paired interval of ``reference`` against each of
    ``settings`` (rows of :func:`comparisons_with`'s table), the seeds on each side, whether it
    is at most :data:`POWER_HALF_WIDTH`, and the share of that setting's runs that kept a
    checkpoint from before their last evaluation."""
    col = f"{reference} minus"
    rows = []
    for row in comparisons[comparisons[col].isin(list(settings))].to_dict("records"):
        mine = [r for r in runs if r.params["setting"] == row[col]]
        kept, n = kept_before_last(mine)
        half = (row["high"] - row["low"]) / 2
        rows.append({"comparison": f"{reference} vs {row[col]}", "seeds": row["seeds"], "half-width (BDI)": half,
                     f"at most {POWER_HALF_WIDTH:g} BDI": bool(half <= POWER_HALF_WIDTH),
                     "kept checkpoint before the last evaluation": f"{kept} of {n}"})
    return pd.DataFrame(rows)


# --- figures --------------------------------------------------------------------------------------
def setup_plots():
    """Seaborn's whitegrid theme at a modest resolution; returns ``matplotlib.pyplot``."""
    # The plotting libraries load here and in rank_plot, when a chapter first draws: the
    # package's other users (tests, the command line) never pay for them.
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    plt.rcParams["figure.dpi"] = 90
    return plt


def draw_centres(ax, image: np.ndarray, centres: np.ndarray, numbered: bool = True, weights=None, cmap="magma"):
    """An aligned face with the 24 patch centres (numbered 1-24), optionally coloured by weight."""
    ax.imshow(image)
    if weights is None:
        ax.scatter(centres[:, 0], centres[:, 1], s=14, c="#00e5ff", edgecolors="k", linewidths=0.4)
    else:
        sc = ax.scatter(centres[:, 0], centres[:, 1], s=40 + 260 * np.asarray(weights), c=weights, cmap=cmap,
                        vmin=0, vmax=1, edgecolors="w", linewidths=0.6)
        ax.figure.colorbar(sc, ax=ax, fraction=0.046, pad=0.02, label="local weight α")
    if numbered:
        for i, (x, y) in enumerate(centres, 1):
            ax.annotate(str(i), (x, y), xytext=(2, -2), textcoords="offset points", fontsize=6, color="yellow")
    ax.set_axis_off()


def severity_band_counts(labels: pd.DataFrame) -> pd.DataFrame:
    """Sessions per partition and BDI-II severity band (paper Table 1)."""
    per = labels.drop_duplicates("session_id").copy()
    per["band"] = [BAND_NAMES[i] for i in severity_band(per["bdi"])]
    out = per.pivot_table(index="partition", columns="band", values="session_id", aggfunc="count", fill_value=0)
    out = out.reindex(columns=list(BAND_NAMES), fill_value=0)
    return out.reindex([p for p in ("Training", "Development", "Testing") if p in out.index])


def describe_versions(versions: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in versions.items() if k != "platform")


def rank_plot(table: pd.DataFrame, ax, value: str = "test_rmse", by: str = "setting", reference: float | None = None):
    """Settings ranked by mean Testing RMSE, one dot per seed, the mean predictor as a line."""
    import seaborn as sns

    order = table.groupby(by)[value].mean().sort_values().index.tolist()
    sns.pointplot(data=table, y=by, x=value, order=order, ax=ax, linestyle="none", errorbar="sd", color="k",
                  markers="D", markersize=4)
    sns.stripplot(data=table, y=by, x=value, order=order, ax=ax, alpha=0.5, size=4)
    if reference is not None:
        ax.axvline(reference, ls="--", c="grey", lw=1)
        ax.text(reference, -0.6, " training-mean predictor", fontsize=8, color="grey", va="bottom")
    ax.set_xlabel("Testing RMSE per video (BDI points)")
    ax.set_ylabel("")
    return order


def listing(items: Sequence[str]) -> str:
    return ", ".join(items[:-1]) + (" and " if len(items) > 1 else "") + items[-1] if items else ""


# --- trained models -------------------------------------------------------------------------------
def load_run_model(run):
    """Rebuild a run's model and restore its kept (best Development) weights. Returns (model, config).

    ``run``: a :class:`dlga.runs.rundir.Run`. Raises :class:`dlga.runs.rundir.RunError` as
    :func:`dlga.inference.predict.restore_run_model` does.
    """
    from dlga.inference.predict import restore_run_model  # TensorFlow: only for chapters that load models

    model, config, _ = restore_run_model(run.path)
    return model, config


def attention(model, part, input_size: int, batch_size: int = 64) -> pd.DataFrame:
    """Per frame of a partition, in evaluation order: ``video_id``, ``session_id``,
    ``partition``, ``bdi``, then :func:`dlga.inference.predict.predict_frames`'s columns (``prediction``,
    the 24 local weights ``a1..a24``, ``global_attention``) and ``local_mean``, the mean of the
    local weights (when the model has them).

    Args:
        model: a model of :func:`load_run_model`.
        part: a :class:`dlga.training.data.Partition` (in memory or streaming).
        input_size: the model's input side.
        batch_size: frames per model call.
    """
    from dlga.training import data as data_lib
    from dlga.inference.predict import ATTENTION_COLUMNS, predict_frames

    chunk = 16 * int(batch_size)  # streamed partitions are read this many frames at a time
    tables = []
    for start in range(0, part.n_frames, chunk):
        if part.in_memory:
            frames, landmarks = part.frames[start : start + chunk], part.landmarks[start : start + chunk]
        else:
            pairs = [part.frame(i) for i in range(start, min(start + chunk, part.n_frames))]
            frames, landmarks = np.stack([f for f, _ in pairs]), np.stack([lm for _, lm in pairs])
        tables.append(predict_frames(model, frames, landmarks, input_size, batch_size))
    table = pd.concat(tables, ignore_index=True)
    local = [c for c in ATTENTION_COLUMNS if c in table]
    if local:
        table["local_mean"] = table[local].mean(axis=1)
    return pd.concat([data_lib.frame_table(part), table], axis=1)
