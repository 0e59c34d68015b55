"""What several chapters of the book share: the paper's reported numbers, notices, tables and
checks of the runs.

Chapters stay thin: a parameters cell, a few calls into :mod:`dlga.book.experiments` and this
module, and prose. Reported numbers are the paper's (He, Chan, Wang), copied from its Tables 3-8 and
section 4.3.3; measured numbers come from the runs under ``runs/``. Intervals, comparisons and
verdicts are :mod:`dlga.book.intervals`', figures :mod:`dlga.book.figures`' and trained models
:mod:`dlga.book.models`'.
"""

from __future__ import annotations

import html
from functools import partial
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
from IPython.display import HTML

from dlga.book.rate_rule import LEARNED_MIN_SD, learned  # one threshold for the learning check and the rate rule
from dlga.config import SETTINGS


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
    # Labels like frames_kept are one unbreakable word: spaced, a header wraps inside the column.
    sty = sty.format_index(lambda label: str(label).replace("_", " "), axis="columns")
    return sty.set_table_attributes('class="dataframe"')


def split_columns(frame: pd.DataFrame, core: Iterable[str], key: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A wide table as two that fit the text column: ``core`` columns (in that order) and the
    rest, each led by ``key`` (default: the first column) so that rows can be matched."""
    key = frame.columns[0] if key is None else key
    core = [key] + [c for c in core if c != key]
    missing = [c for c in core if c not in frame.columns]
    if missing:
        raise KeyError(f"split_columns: no columns {missing} in {list(frame.columns)}")
    return frame[core], frame[[key] + [c for c in frame.columns if c not in core]]


def transposed(frame: pd.DataFrame, precision: int = 3) -> pd.DataFrame:
    """``frame`` with rows and columns swapped, as text: a table of many measures for a few
    groups (partitions) fits the page as one row per measure. Whole numbers lose their
    decimals, the rest keep ``precision``."""
    def text(v) -> str:
        if pd.isna(v):
            return "–"
        return f"{v:,.0f}" if float(v).is_integer() else f"{v:.{precision}f}"

    out = frame.T.astype(object).map(text)
    out.index = [str(i).replace("_", " ") for i in out.index]
    return out


def constant_columns(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """``frame`` without the columns that hold one value in every row, and those values
    (a column shown once instead of repeated in each row)."""
    if len(frame) < 2:
        return frame, {}
    same = [c for c in frame.columns if frame[c].astype(str).nunique() == 1]
    return frame.drop(columns=same), {c: frame[c].iloc[0] for c in same}


def collapsed(table, summary: str) -> HTML:
    """``table`` (a Styler or DataFrame) inside a closed ``<details>`` block titled ``summary``:
    shown on a click, so that a chapter opens with its results, not its settings."""
    body = table.to_html()
    return HTML(f'<details class="dlga-collapsed"><summary>{html.escape(summary)}</summary>\n{body}\n</details>')


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


# --- checks of the runs themselves ---------------------------------------------------------------


def collapsed_seeds(runs) -> int:
    """How many of ``runs`` diverged or did not learn (:func:`dlga.book.rate_rule.learned`): such a
    seed pulls its setting toward the training mean, and the book says so where it counts."""
    return sum(r.metrics.get("stop_reason") == "diverged" or not learned(r) for r in runs)


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


