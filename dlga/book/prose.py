"""Sentences computed from a chapter's results, for its closing prose (glued in with myst-nb).

Each function takes the table a chapter shows and returns Markdown, so the text says what the
table says and cannot contradict it. A difference whose 95 % paired bootstrap interval contains
zero is a tie (the book's Decisions chapter, book/decisions.md, "Statistics").
"""

from __future__ import annotations

from typing import Mapping

import pandas as pd

from dlga.book.intervals import UNEQUAL_SEEDS_FAMILY_ERROR


def difference_sentence(a: str, b: str, diff: float, low: float, high: float, unit: str = "BDI") -> str:
    """``diff`` = error(a) - error(b) with its interval, in words: "a beats b by 0.70 BDI
    [0.30, 1.10]" (the margin and its interval are b's error minus a's), "b beats a by ...",
    or "a and b are tied (+0.12 BDI [-0.30, +0.54])"."""
    if low <= 0 <= high:
        return f"{a} and {b} are tied ({diff:+.2f} {unit} [{low:+.2f}, {high:+.2f}])"
    if diff < 0:
        return f"{a} beats {b} by {-diff:.2f} {unit} [{-high:.2f}, {-low:.2f}]"
    return f"{b} beats {a} by {diff:.2f} {unit} [{low:.2f}, {high:.2f}]"


def _count_verdicts(comparisons: pd.DataFrame, better_label: str) -> dict[str, int]:
    """How many comparisons of a Holm family read each way: ``better`` (verdict
    ``better_label``), ``tied`` (of which ``equivalent`` within 1 BDI and ``inconclusive``),
    ``none`` (one seed: no verdict) and ``worse`` (the rest)."""
    verdicts = comparisons["verdict"]
    readings = comparisons["reading"] if "reading" in comparisons else pd.Series("", index=comparisons.index)
    tied = verdicts == "tie"
    counts = {"better": int((verdicts == better_label).sum()), "tied": int(tied.sum()),
              "equivalent": int((tied & readings.str.startswith("equivalent")).sum()),
              "inconclusive": int((tied & (readings == "inconclusive")).sum()),
              "none": int((readings == "no verdict").sum())}
    counts["worse"] = len(comparisons) - counts["better"] - counts["tied"] - counts["none"]
    return counts


def verdict_counts(comparisons: pd.DataFrame, reference: str = "G") -> str:
    """How a Holm family's comparisons read, in words: differences each way, ties split into
    equivalent within 1 BDI and inconclusive, comparisons without a verdict (one seed), and the
    fragile ones (an interval end near a boundary, :func:`dlga.book.report.is_fragile`)."""
    c = _count_verdicts(comparisons, f"{reference} better")
    better, worse, tied, equivalent, inconclusive, none = (c[k] for k in ("better", "worse", "tied", "equivalent",
                                                                          "inconclusive", "none"))
    text = (f"{reference} has the lower error than **{better}**, the higher error than **{worse}**, and ties with "
            f"**{tied}** of the {len(comparisons)} ({equivalent} equivalent within 1 BDI, {inconclusive} "
            "inconclusive: wider than +-1 BDI, so neither a difference nor an equivalence is shown)")
    if none:
        text += f"; {none} have one seed and get no verdict"
    fragile = comparisons.loc[comparisons.get("fragile", pd.Series(False, index=comparisons.index)).astype(bool)]
    if len(fragile):
        col = comparisons.columns[0]
        text += (f". Fragile (an interval end within the cross-CPU spread of its boundary, so another CPU may "
                 f"read it otherwise): {', '.join(str(v) for v in fragile[col])}")
    return text + "."


def ablation_conclusion(comparisons: pd.DataFrame, reference: str = "G", collapsed: Mapping[str, int] | None = None) -> str:
    """The closing sentence of the ablation chapter from :func:`dlga.book.intervals.comparisons_with`'s
    table (one row per other setting: ``"<reference> minus"``, ``diff RMSE``, ``low``,
    ``high``, ``verdict``, ``reading``, ``fragile``). The table carries the numbers; this says
    what they add up to, without ranking ties. ``collapsed``: seeds per setting that diverged
    or did not learn (:func:`dlga.book.report.collapsed_seeds`), named so that no difference is read
    as the architecture's when it is a collapse."""
    text = (f"On Testing RMSE (paired two-level bootstrap over seeds x subjects, 95 % intervals Holm-adjusted "
            f"over the {len(comparisons)} comparisons), " + verdict_counts(comparisons, reference))
    unequal = comparisons.attrs.get("unequal_seeds") or {}
    if unequal:
        n_ref = next(iter(unequal.values()))[0]
        text += (f" Seeds are unequal ({reference} {n_ref}; " + ", ".join(f"{s} {n}" for s, (_, n) in unequal.items())
                 + f"): with unequal seeds such a family called a difference where there was none in "
                 f"{UNEQUAL_SEEDS_FAMILY_ERROR:.1%} of simulated studies, not 5 %, so a difference against these "
                 "settings is weaker evidence than its interval says.")
    bad = {s: n for s, n in (collapsed or {}).items() if n}
    if bad:
        text += (" Seeds that diverged or did not learn: " + ", ".join(f"{s} {n}" for s, n in bad.items())
                 + ". They stay in their setting's interval (a setting is estimated by what its seeds do), but a "
                 "difference against such a setting may be its collapsed seeds, not its architecture.")
    return text


def training_conclusion(metrics: Mapping) -> str:
    """The closing sentence of the training chapter from a run's ``metrics.json``."""
    dev, mean_dev = metrics["dev"]["rmse"], metrics["mean_predictor"]["dev"]["rmse"]
    test, mean_test = metrics["test"]["rmse"], metrics["mean_predictor"]["test"]["rmse"]
    learned = "below" if dev < mean_dev else "not below"
    return (f"This run stopped after **{metrics['steps']}** steps ({metrics['stop_reason']}) and kept the "
            f"checkpoint of step **{metrics['best_step']}**. Its Development RMSE, **{dev:.2f}**, is {learned} the "
            f"training-mean predictor's {mean_dev:.2f}; on Testing it scored **{test:.2f}** against {mean_test:.2f}.")


def learning_rate_conclusion(table: pd.DataFrame, chosen: float, choice=None) -> str:
    """The closing sentence of the learning-rate chapter from :func:`dlga.book.report.runs_table`
    of the study (columns ``lr``, ``dev_rmse``, ``test_rmse``), the rate chosen and, when
    given, the rule's :class:`dlga.book.rate_rule.RateChoice` (how, and the rates tied with it)."""
    by = table.groupby("lr")[["dev_rmse", "test_rmse"]].mean().sort_index()
    smallest = float(by.index.min())
    best_test = float(by["test_rmse"].idxmin())
    holds = "holds" if best_test == smallest else "does not hold"
    text = f"Chosen on Development: **{chosen:g}** (mean Development RMSE {by.loc[chosen, 'dev_rmse']:.2f})"
    if choice is not None:
        tied = [r for r in choice.tied if r != chosen]
        text += f", {choice.how}" + (f"; tied with it on Development: {', '.join(f'{r:g}' for r in tied)}" if tied else "")
    return (text + f". The paper's ordering (the smallest rate, {smallest:g}, is best) {holds} at this schedule: "
            f"the lowest mean Testing RMSE, {by['test_rmse'].min():.2f}, is at {best_test:g} (reported for the "
            "comparison with the paper only; Testing chose nothing).")


def _names(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def seed_counts(settings: list[str]) -> str:
    """How many seeds each setting has, from one setting name per run: "10 seeds for G, GA and
    LA-CMP+; 1 for the other 7" (settings in order of first appearance within a count)."""
    if not settings:
        return "no runs"
    counts = pd.Series(settings).value_counts(sort=False)
    groups = {}
    for name, n in counts.items():
        groups.setdefault(int(n), []).append(str(name))
    parts = []
    for i, (n, names) in enumerate(sorted(groups.items(), reverse=True)):
        unit = "seed" if n == 1 else "seeds"
        if i and i == len(groups) - 1 and len(names) > 1:
            parts.append(f"{n} for the other {len(names)}")
        else:
            parts.append(f"{n} {unit} for {_names(names)}")
    return "; ".join(parts)


def learning_check_sentence(check: pd.DataFrame) -> str:
    """One sentence on :func:`dlga.book.report.learning_check`'s table: that every setting learned
    on every seed, or which did not (a seed with constant Development predictions or an RMSE
    not below the training mean's), and what that means for its comparisons."""
    failed = check.loc[~check["learned (all seeds)"].astype(bool), "setting"].astype(str).tolist()
    if not failed:
        return "Every setting learned on every seed (Development)."
    verb = "does" if len(failed) == 1 else "do"
    return (f"**{_names(failed)}** {verb} not learn on every seed (Development predictions constant, or "
            f"an RMSE not below the training mean's, on at least one seed): "
            f"the comparisons that involve {'it' if len(failed) == 1 else 'them'} include a seed no better than the "
            f"training mean, so a tie there may be a tie with a model that partly failed to train.")


def failed_checks(checks: pd.DataFrame) -> str:
    """One sentence on a QC table (columns ``check``, ``value``, ``target``, ``ok``; ``ok`` None
    for a value that is only reported): that every check with a target passed, or which failed."""
    judged = checks[checks["ok"].notna()]
    failed = judged[~judged["ok"].astype(bool)]
    if failed.empty:
        return f"All {len(judged)} checks with a target pass."
    items = "; ".join(f"{r['check']}: {r['value']} against {r['target']}" for _, r in failed.iterrows())
    return f"**{len(failed)} of {len(judged)}** checks with a target fail: {items}."


def comparison_conclusion(results: Mapping[str, Mapping[str, float]], name: str = "DLGA-CNN G") -> str:
    """The closing sentence of the comparison chapter: ``results`` maps each measured
    baseline to the paired two-level result of ``name`` minus it (``estimate``, ``lo``, ``hi``:
    :func:`dlga.book.report.compare_with_predictions`)."""
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
        visibility: :func:`dlga.book.controls.cue_visibility`'s table.
        null_comparisons: :func:`dlga.book.report.comparisons_with_mean` on the null cohort.
        leaks: :func:`dlga.book.controls.leaks` of it.
        branch: per single-cue cohort, :func:`dlga.book.report.comparisons_with` with ``reference``.
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
                 f"training-mean predictor** (Holm-adjusted over {k} settings): the pipeline lets the label through "
                 "(file order, ids or the evaluation), and the other chapters' differences cannot be trusted until it is found.")
    else:
        text += (f" On the cohort without a cue no setting beats the training-mean predictor ({_tie_count(null_comparisons)}, "
                 "Holm-adjusted): no pipeline leak. Its images carry no path from the label, so this checks file "
                 "order, ids and the evaluation, not leaks inside the images; the positive control below measures those.")
    return text


def _tie_count(comparisons: pd.DataFrame) -> str:
    """"3 of 3 tied", with the rest said: worse than the training mean, or one seed (no verdict)."""
    c = _count_verdicts(comparisons, "setting better")
    worse = c["better"] + c["worse"]  # any verdict but a tie is a setting apart from the training mean
    return ", ".join([f"{c['tied']} of {len(comparisons)} tied"] + ([f"{worse} worse"] if worse else [])
                     + ([f"{c['none']} with one seed, so no verdict"] if c["none"] else []))


def leak_conclusion(permuted: pd.DataFrame, leaks: pd.DataFrame, smallest: Mapping | None,
                    robust: Mapping | None = None) -> str:
    """The permuted-label and positive controls in words: ``permuted`` is
    :func:`dlga.book.report.comparisons_with_mean` on the permuted-label store, ``leaks``
    :func:`dlga.book.controls.leak_table`, ``smallest`` :func:`dlga.book.controls.smallest_flagged`
    and ``robust`` the same among levels flagged with no fragile interval (said when
    ``smallest`` is fragile)."""
    parts = []
    if not permuted.empty:
        better = permuted.loc[permuted["high"] < 0, "setting"].tolist()
        if better:
            parts.append(f"**The permuted-label control fails: {', '.join(better)} beat the training mean** with "
                         "shuffled Training labels, so something other than the faces carries the label.")
        else:
            parts.append(f"With Training labels shuffled no setting beats the training-mean predictor "
                         f"({_tie_count(permuted)}): what the settings learn on the book's cohort comes "
                         "from the label, as it should.")
    if not leaks.empty:
        levels = ", ".join(f"{v:g}" for v in sorted(leaks["leak (grey levels at BDI 63)"].unique()))
        if smallest is None:
            parts.append(f"**The positive control fails: no injected leak ({levels} grey levels at BDI 63) was "
                         "flagged**, so the null control cannot be trusted to see a leak of that size.")
        else:
            parts.append(f"Of the injected leaks ({levels} grey levels at BDI 63, a whole-frame brightness shift "
                         f"linear in the label), the smallest flagged is **{smallest['level']:g}**, where G beat the "
                         f"training mean by {smallest['gain']:.2f} BDI: leaks larger than **{smallest['gain']:.2f} BDI** "
                         "would have been seen by the null control's procedure.")
            if smallest.get("fragile"):
                parts.append("That flag is fragile (an interval end within the cross-CPU spread of 0): on another CPU "
                             "this level may not be flagged. "
                             + ("No level is flagged robustly." if robust is None else
                                f"The smallest level flagged robustly is **{robust['level']:g}** (gain {robust['gain']:.2f} "
                                f"BDI): leaks larger than **{robust['gain']:.2f} BDI** are seen on any CPU."))
    return " ".join(parts)
