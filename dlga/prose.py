"""Sentences computed from a chapter's results, for its closing prose (glued in with myst-nb).

Each function takes the table a chapter shows and returns Markdown, so the text says what the
table says and cannot contradict it. A difference whose 95 % paired bootstrap interval contains
zero is a tie (the book's Decisions chapter, book/decisions.md, "Statistics").
"""

from __future__ import annotations

from typing import Mapping

import pandas as pd


def difference_sentence(a: str, b: str, diff: float, low: float, high: float, unit: str = "BDI") -> str:
    """``diff`` = error(a) - error(b) with its interval, in words: "a beats b by 0.70 BDI
    [0.30, 1.10]" (the margin and its interval are b's error minus a's), "b beats a by ...",
    or "a and b are tied (+0.12 BDI [-0.30, +0.54])"."""
    if low <= 0 <= high:
        return f"{a} and {b} are tied ({diff:+.2f} {unit} [{low:+.2f}, {high:+.2f}])"
    if diff < 0:
        return f"{a} beats {b} by {-diff:.2f} {unit} [{-high:.2f}, {-low:.2f}]"
    return f"{b} beats {a} by {diff:.2f} {unit} [{low:.2f}, {high:.2f}]"


def ablation_conclusion(comparisons: pd.DataFrame, reference: str = "G") -> str:
    """The closing sentence of the ablation chapter from :func:`dlga.report.comparisons_with`'s
    table (one row per other setting: ``"<reference> minus"``, ``diff RMSE``, ``low``,
    ``high``, ``verdict``)."""
    col = f"{reference} minus"
    verdicts = comparisons["verdict"]
    better = int((verdicts == f"{reference} better").sum())
    tied = int((verdicts == "tie").sum())
    worse = len(comparisons) - better - tied
    parts = [difference_sentence(reference, row[col], row["diff RMSE"], row["low"], row["high"])
             for _, row in comparisons.iterrows()]
    return (f"On Testing RMSE (paired two-level bootstrap over seeds x subjects, 95 % intervals Holm-adjusted "
            f"over the {len(comparisons)} comparisons), {reference} has the lower error than "
            f"**{better}** of the {len(comparisons)} other settings, is tied with **{tied}** and has the higher "
            f"error than **{worse}**: " + "; ".join(parts) + ".")


def training_conclusion(metrics: Mapping) -> str:
    """The closing sentence of the training chapter from a run's ``metrics.json``."""
    dev, mean_dev = metrics["dev"]["rmse"], metrics["mean_predictor"]["dev"]["rmse"]
    test, mean_test = metrics["test"]["rmse"], metrics["mean_predictor"]["test"]["rmse"]
    learned = "below" if dev < mean_dev else "not below"
    return (f"This run stopped after **{metrics['steps']}** steps ({metrics['stop_reason']}) and kept the "
            f"checkpoint of step **{metrics['best_step']}**. Its Development RMSE, **{dev:.2f}**, is {learned} the "
            f"training-mean predictor's {mean_dev:.2f}; on Testing it scored **{test:.2f}** against {mean_test:.2f}.")


def learning_rate_conclusion(table: pd.DataFrame, chosen: float) -> str:
    """The closing sentence of the learning-rate chapter from :func:`dlga.report.runs_table`
    of the study (columns ``lr``, ``dev_rmse``, ``test_rmse``) and the rate selected."""
    by = table.groupby("lr")[["dev_rmse", "test_rmse"]].mean().sort_index()
    smallest = float(by.index.min())
    best_test = float(by["test_rmse"].idxmin())
    holds = "holds" if best_test == smallest else "does not hold"
    return (f"Selected on Development: **{chosen:g}** (Development RMSE {by.loc[chosen, 'dev_rmse']:.2f}). "
            f"The lowest Testing RMSE, {by['test_rmse'].min():.2f}, is at {best_test:g}, so the paper's ordering "
            f"(the smallest rate, {smallest:g}, is best) {holds} at this schedule.")


def comparison_conclusion(results: Mapping[str, Mapping[str, float]], name: str = "DLGA-CNN G") -> str:
    """The closing sentence of the comparison chapter: ``results`` maps each measured
    baseline to the paired two-level result of ``name`` minus it (``estimate``, ``lo``, ``hi``:
    :func:`dlga.report.compare_with_predictions`)."""
    return "Measured on the same Testing subjects (seeds x subjects resampled): " + "; ".join(
        difference_sentence(name, other, r["estimate"], r["lo"], r["hi"]) for other, r in results.items()) + "."


def attention_conclusion(weights: pd.DataFrame) -> str:
    """The closing sentence of the attention chapter from its per-patch table (columns
    ``patch``, ``name``, ``high - low``)."""
    row = weights.loc[weights["high - low"].abs().idxmax()]
    return (f"The local weight that differs most between high and low BDI is patch **{int(row['patch'])}** "
            f"({row['name']}): {row['high - low']:+.3f} (high minus low, mean over Testing frames).")


def controls_conclusion(visibility: pd.DataFrame, null_comparisons: pd.DataFrame, leaks: list[str],
                        branch: Mapping[str, pd.DataFrame], reference: str = "LA-CMP+") -> str:
    """The closing sentences of the Controls chapter.

    Args:
        visibility: :func:`dlga.controls.cue_visibility`'s table.
        null_comparisons: :func:`dlga.report.comparisons_with_mean` on the null cohort.
        leaks: :func:`dlga.controls.leaks` of it.
        branch: per single-cue cohort, :func:`dlga.report.comparisons_with` with ``reference``.
    """
    seen = "; ".join(f"{row['change inside union']:.0%} of the {row['cue']} cue's pixel change" for _, row in visibility.iterrows())
    separable = visibility.loc[visibility["branch separation claimable"], "cue"].tolist()
    parts = [f"At the {int(visibility['input px'].iloc[0])}-pixel input the union of the patch fields holds {seen}"]
    if separable:
        parts.append(f"so only the {', '.join(separable)} cue can be called outside the local branch's view")
    else:
        parts.append("so every cue is visible to both branches: the single-cue cohorts compare how well each "
                     "setting reads a cue, not which branch can see it")
    text = ", ".join(parts) + "."
    if null_comparisons.empty:
        return text
    k = len(null_comparisons)
    if leaks:
        text += (f" **Leak: on the cohort without a cue, {', '.join(leaks)} beat{'s' if len(leaks) == 1 else ''} the "
                 f"training-mean predictor** (Holm-adjusted over {k} settings): something other than the cues carries "
                 "the label, and the other chapters' differences cannot be trusted until it is found.")
    else:
        tied = int((null_comparisons["verdict"] == "tie").sum())
        text += (f" On the cohort without a cue no setting beats the training-mean predictor ({tied} of {k} tied, "
                 f"Holm-adjusted): the null control finds no leak.")
    for cohort, table in branch.items():
        if table.empty:
            continue
        col = f"{reference} minus"
        sentences = [difference_sentence(reference, row[col], row["diff RMSE"], row["low"], row["high"])
                     for _, row in table.iterrows()]
        text += f" On the {cohort} cohort: " + "; ".join(sentences) + "."
    return text
