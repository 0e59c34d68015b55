"""The learning-rate rule: which rate the ablation runs use, decided before any result is read.

The argmin of a few seeds' mean Development RMSE is not a rule: two redraws of the training
noise (another CPU is one) pick the same rate about half the time, and every later table
follows that pick. The rule here (book/decisions.md, "The learning-rate rule"):

1. The **default** is fixed in advance: the schedule's own rate (1e-3 for ``ci`` and ``demo``).
2. A rate is **eligible** only if every one of its seeds learned (Development predictions not
   constant, Development RMSE below the training-mean predictor's) and none diverged.
3. Another eligible rate replaces the default only when it is better on Development in a
   **paired** comparison over the same seeds (seed ``k`` at one rate against seed ``k`` at the
   default) by more than :attr:`RateRule.margin` BDI on average, with the one-sided
   lower bound of the improvement (Student t over the seeds' paired differences, at
   :attr:`RateRule.level`) above 0.
4. When several rates qualify, the one **nearest to the default** (on a log scale; the smaller
   on a tie) is chosen: the smallest move that the evidence supports, not the largest
   estimated gain, which is the noisiest choice.
5. If the default itself is not eligible, the eligible rate nearest to it is the new default
   and the rule is applied from there; with no eligible rate at all the default stands and the
   table says so.

Testing is never read. The rule is a pure function of the study's table
(:func:`study_table`): rate, seed, Development RMSE, diverged, learned.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats

TABLE_COLUMNS = ("rate", "seed", "dev_rmse", "diverged", "learned")

LEARNED_MIN_SD = 0.1
"""BDI points: Development predictions with a smaller sd over videos are taken as constant."""


@dataclass(frozen=True)
class RateRule:
    """The rule's constants, fixed before the study runs.

    Args:
        default: the rate kept unless another is shown better (None: the schedule's own).
        margin: BDI points of mean paired Development improvement a rate must exceed (0.75:
            the smallest margin at which the simulated demo study keeps its choice in 90 % of
            redraws of the seed noise and still finds a rate 1 BDI better in 80 %; tests/test_rate_rule.py).
        level: one-sided confidence of the lower bound that must exclude 0.
    """

    default: float | None = None
    margin: float = 0.75
    level: float = 0.95

    def __post_init__(self) -> None:
        if self.default is not None and not (isinstance(self.default, (int, float)) and 0 < self.default < 10):
            raise ValueError(f"default must be a rate in (0, 10), got {self.default!r}")
        if not (isinstance(self.margin, (int, float)) and self.margin >= 0):
            raise ValueError(f"margin must be a number of BDI points >= 0, got {self.margin!r}")
        if not 0.5 <= self.level < 1:
            raise ValueError(f"level must be in [0.5, 1), got {self.level!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RateChoice:
    """What the rule decided.

    ``comparisons``: one row per rate of the study: ``rate``, ``seeds`` (paired with the
    default), ``eligible``, ``why`` (why not, when not), ``improvement`` (mean of default minus
    rate over the paired seeds, BDI; positive: the rate is better), ``lower`` and ``upper``
    (the one-sided lower bound at the rule's level, and the two-sided interval's upper end),
    ``qualifies`` (beats the default by the rule), ``tied`` (its two-sided interval against the
    chosen rate contains 0, or it is the chosen rate).
    """

    rate: float
    default: float
    how: str
    comparisons: pd.DataFrame
    rule: RateRule

    @property
    def tied(self) -> list[float]:
        """The eligible rates whose Development RMSE is not told apart from the chosen rate's."""
        c = self.comparisons
        return sorted(c.loc[c["tied"], "rate"].tolist())


def learned(run) -> bool:
    """Whether a run learned: its Development predictions vary (sd over videos above
    :data:`LEARNED_MIN_SD`) and its Development RMSE is below the training-mean predictor's."""
    m = run.metrics
    dev = run.predictions.loc[run.predictions["partition"] == "Development", "prediction"]
    sd = float(dev.std()) if len(dev) > 1 else 0.0
    return bool(sd > LEARNED_MIN_SD and float(m["dev"]["rmse"]) < float(m["mean_predictor"]["dev"]["rmse"]))


def study_table(runs) -> pd.DataFrame:
    """The learning-rate study as the rule reads it: one row per run with :data:`TABLE_COLUMNS`.

    ``runs``: :class:`dlga.runs.rundir.Run` objects (``metrics.json`` and Development predictions);
    ``learned`` as :func:`learned`.
    """
    rows = []
    for r in runs:
        m = r.metrics
        rows.append({"rate": float(r.params["train"]["learning_rate"]), "seed": int(r.params["train"]["seed"]),
                     "dev_rmse": float(m["dev"]["rmse"]), "diverged": m.get("stop_reason") == "diverged",
                     "learned": learned(r)})
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def _check_table(table: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"the study table lacks columns {missing}; it needs {list(TABLE_COLUMNS)} (see study_table)")
    if table.empty:
        raise ValueError("the study table is empty: train the learning-rate study first")
    if table.duplicated(["rate", "seed"]).any():
        dup = table[table.duplicated(["rate", "seed"], keep=False)].iloc[0]
        raise ValueError(f"the study table has two runs of rate {dup['rate']:g}, seed {dup['seed']}")
    if not np.isfinite(table.loc[~table["diverged"].astype(bool), "dev_rmse"].to_numpy(float)).all():
        raise ValueError("the study table has a non-finite Development RMSE for a run that did not diverge")
    return table


def _nearest(rates: Sequence[float], to: float) -> float:
    """The rate nearest to ``to`` on a log scale, the smaller on a tie."""
    return min(rates, key=lambda r: (abs(math.log10(r) - math.log10(to)), r))


def _paired(table: pd.DataFrame, rate: float, reference: float) -> np.ndarray:
    """Development RMSE of ``reference`` minus ``rate``, over the seeds both have (positive:
    ``rate`` is better)."""
    a = table[table["rate"] == reference].set_index("seed")["dev_rmse"]
    b = table[table["rate"] == rate].set_index("seed")["dev_rmse"]
    seeds = a.index.intersection(b.index)
    return (a.loc[seeds] - b.loc[seeds]).to_numpy(float)


def _bounds(d: np.ndarray, level: float) -> tuple[float, float, float, float]:
    """Mean, one-sided lower bound at ``level``, and the two-sided interval's lower and upper
    ends at ``level`` of the paired differences ``d`` (Student t over seeds); no bound with
    fewer than two seeds."""
    nan = float("nan")
    if len(d) == 0:
        return nan, nan, nan, nan
    mean = float(d.mean())
    if len(d) < 2:
        return mean, nan, nan, nan
    se = float(d.std(ddof=1) / np.sqrt(len(d)))
    one = stats.t.ppf(level, len(d) - 1)
    two = stats.t.ppf(1 - (1 - level) / 2, len(d) - 1)
    return mean, mean - one * se, mean - two * se, mean + two * se


def select_rate(table: pd.DataFrame, default: float, rule: RateRule | None = None) -> RateChoice:
    """Apply the rule to the study ``table`` (:func:`study_table`) with the schedule's
    ``default`` rate (the rule's own ``default`` wins when set). Returns a :class:`RateChoice`."""
    rule = rule or RateRule()
    table = _check_table(table.copy())
    default = float(rule.default if rule.default is not None else default)
    rates = sorted(table["rate"].unique().tolist())
    why: dict[float, str] = {}
    for rate in rates:
        runs = table[table["rate"] == rate]
        if runs["diverged"].any():
            why[rate] = f"{int(runs['diverged'].sum())} of {len(runs)} seeds diverged"
        elif not runs["learned"].all():
            why[rate] = f"{int((~runs['learned'].astype(bool)).sum())} of {len(runs)} seeds did not learn"
    eligible = [r for r in rates if r not in why]
    if default not in rates:
        why.setdefault(default, "not in the study")
    if not eligible:
        start, how = default, "no rate of the study is eligible (every rate has a seed that diverged or did not learn); the default stands"
    elif default in eligible:
        start, how = default, "the default"
    else:
        start = _nearest(eligible, default)
        how = f"the eligible rate nearest to the default {default:g} ({why[default]})"
    rows = []
    for rate in rates:
        d = _paired(table, rate, start) if rate in eligible and start in eligible else np.array([])
        mean, lower, _low, upper = _bounds(d, rule.level)
        qualifies = bool(rate != start and len(d) >= 2 and mean > rule.margin and lower > 0)
        rows.append({"rate": rate, "seeds": int(len(d)), "eligible": rate in eligible, "why": why.get(rate, ""),
                     "improvement": mean if rate != start else 0.0, "lower": lower, "upper": upper,
                     "qualifies": qualifies})
    out = pd.DataFrame(rows)
    better = out.loc[out["qualifies"], "rate"].tolist()
    if better:
        chosen = _nearest(better, start)
        how = (f"better than {start:g} on Development by more than {rule.margin:g} BDI over "
               f"{int(out.loc[out['rate'] == chosen, 'seeds'].iat[0])} paired seeds, "
               f"one-sided {rule.level:.0%} bound above 0")
    else:
        chosen = start
        if eligible and how == "the default":
            how = f"the default: no rate beats it on Development by more than {rule.margin:g} BDI with a bound above 0"
    tied = []
    for rate in rates:
        if rate == chosen:
            tied.append(True)
            continue
        d = _paired(table, rate, chosen) if rate in eligible and chosen in eligible else np.array([])
        _mean, _one_sided, low, up = _bounds(d, rule.level)
        tied.append(bool(np.isfinite(up) and low <= 0 <= up))
    out["tied"] = tied
    return RateChoice(rate=float(chosen), default=default, how=how, comparisons=out, rule=rule)
