"""Intervals, paired comparisons and verdicts of the book's tables (Decisions: Statistics).

An interval over several seeds resamples seeds and subjects (:func:`dlga.training.metrics.two_level_bootstrap`);
a difference whose 95 % interval contains zero is a tie, one within :data:`EQUIVALENCE_BDI` an
equivalence, and a verdict near its boundary is fragile (:func:`is_fragile`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dlga.book.report import PAPER_ABLATION, PAPER_LR, P_FLOOR, collapsed_seeds, mean_sd, paper_key, table_suffix
from dlga.config import SETTING_LABELS, SETTINGS
from dlga.runs.rundir import prediction_table
from dlga.training.metrics import (
    RESAMPLED, holm_comparisons, mean_predictor, paired_two_level_bootstrap, two_level_bootstrap,
)


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
    """(mean ± sd over seeds, two-level interval) of the Testing ``metric``; an interval from
    one seed says that it resamples subjects only (:data:`ONE_SEED`)."""
    runs = list(runs)
    text = interval(runs, metric, n)
    if len(runs) == 1 and text:
        text += f" ({ONE_SEED})"
    return mean_sd(r.metrics["test"][metric] for r in runs), text


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


ABLATION_CORE = ("setting", "RMSE reported", "RMSE measured", f"RMSE {CI_LABEL}", "MAE reported", "MAE measured", "seeds")
"""The columns of :func:`ablation_table` shown first; the rest follow in a second table
(:func:`dlga.book.report.split_columns`) so that each fits the page."""
LR_CORE = ("learning rate", "RMSE reported", "RMSE measured", f"RMSE {CI_LABEL}", "MAE reported", "MAE measured",
           "selected on Development")
"""The same for :func:`lr_table`."""


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
            "seeds that diverged or did not learn": collapsed_seeds(sub),
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
            "seeds": 1, "seeds that diverged or did not learn": 0, "_rmse": r_["estimate"],
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

FRAGILE_BDI = 0.55
"""BDI points: an interval end this close to a verdict's boundary (0, or +-EQUIVALENCE_BDI for
equivalence) can move across it on another CPU (Decisions: "Verdicts that reproduce"). Set from
the demo ablation built twice on one machine, natively (AVX2) and with oneDNN limited to AVX:
the Holm-adjusted interval ends of G's nine comparisons moved by up to 0.51 BDI (G vs C's lower
end), rounded up."""

ONE_SEED = "subjects only (one seed: training variance not included)"

UNEQUAL_SEEDS_FAMILY_ERROR = 0.105
"""How often a Holm family of nine comparisons with unequal seeds (G 10, the others 3) called a
difference where none was, in simulation (tests/test_family.py: 400 studies; 5 % is the aim,
which equal seeds meet). A table with unequal seeds carries them in ``attrs["unequal_seeds"]``."""


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
    rows, lines, unequal = [], [], {}
    for row in holm.to_dict("records"):
        est, lo, hi = sign * row["estimate"], *sorted((sign * row["lo_holm"], sign * row["hi_holm"]))
        res = {"estimate": est, "lo_holm": lo, "hi_holm": hi, "holm_k": k}
        a, b = (reference, row["setting"]) if sign > 0 else (row["setting"], reference)
        one_seed = row["n_seeds"] < 2 or (reference_is_model and row["n_seeds_reference"] < 2)
        label = ONE_SEED if one_seed else verdict_label(res, a, b)
        if reference_is_model and not one_seed and row["n_seeds"] != row["n_seeds_reference"]:
            unequal[row["setting"]] = (int(row["n_seeds_reference"]), int(row["n_seeds"]))
        rows.append({column: row["setting"], "diff RMSE": est, "low": lo, "high": hi, ci_name: interval_text(lo, hi),
                     "p (Holm)": row["p_holm"], "seeds": row["n_seeds"], "verdict": label,
                     "reading": "no verdict" if one_seed else reading(lo, hi),
                     "fragile": False if one_seed else is_fragile(lo, hi)})
        lines.append(f"{a} vs {b}: {ONE_SEED}; no verdict." if one_seed else verdict(res, a, b))
    out = pd.DataFrame(rows)
    out.attrs.update(resampled=RESAMPLED, adjustment=f"Holm, {k} comparisons", p_floor=P_FLOOR, unequal_seeds=unequal)
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


