"""The learning-rate rule on simulated studies (no training) and on hand-made tables.

A simulated study is the demo's: G at each rate of the preset, over its seeds. A run's
Development RMSE is the rate's true value plus seed noise of ``SEED_SD`` BDI, independent
between rates (no credit for pairing: the real pairing by seed can only help). The true
values are the native means measured at a11ed6a (three seeds; Decisions: "The learning-rate
rule"): 1e-4 8.98, 1e-3 8.96, 1e-2 8.65; 1e-5 learns slowly (11.5), 1e-6 does not learn and
1e-1 diverges for some seed. Two redraws of the seed noise stand for two CPUs.
"""

import numpy as np
import pandas as pd
import pytest

from dlga.book import rate_rule
from dlga.book.presets import BOOK_PRESETS

DEMO = BOOK_PRESETS["demo"]
SEEDS = tuple(DEMO.lr_seeds)
DEFAULT = DEMO.train_config().learning_rate
SEED_SD = 0.6  # BDI: the per-run spread of Development RMSE at one rate (0.63 moved one run between CPUs)
TRUTH = {1e-6: 13.4, 1e-5: 11.5, 1e-4: 8.98, 1e-3: 8.96, 1e-2: 8.65, 1e-1: 9.5}
N_STUDIES = 400


def _study(rng, truth) -> pd.DataFrame:
    rows = []
    for rate, mean in truth.items():
        for seed in SEEDS:
            rows.append({"rate": rate, "seed": seed, "dev_rmse": mean + rng.normal(0, SEED_SD),
                         "diverged": rate == 1e-1 and seed == SEEDS[-1], "learned": rate != 1e-6})
    return pd.DataFrame(rows)


def _argmin(table) -> float:
    return float(table.groupby("rate")["dev_rmse"].mean().idxmin())


def _agreement(truth, select, rng_seed=0) -> float:
    rng = np.random.default_rng(rng_seed)
    return float(np.mean([select(_study(rng, truth)) == select(_study(rng, truth)) for _ in range(N_STUDIES)]))


def _rule(table) -> float:
    return rate_rule.select_rate(table, DEFAULT).rate


def test_the_demo_study_has_the_ablation_seed_count():
    assert len(SEEDS) == len(DEMO.seeds) >= 5
    assert DEFAULT == pytest.approx(1e-3)


def test_two_redraws_of_the_noise_pick_the_same_rate_in_at_least_90_percent():
    assert _agreement(TRUTH, _rule) >= 0.90


def test_the_argmin_of_means_is_not_a_rule():
    # What the issue measured for three seeds (52-72 %): the argmin flips between 1e-4, 1e-3 and 1e-2.
    assert _agreement(TRUTH, _argmin) < 0.80


def test_a_rate_truly_one_bdi_better_is_found_in_at_least_80_percent():
    truth = {**TRUTH, 1e-2: TRUTH[1e-3] - 1.0}
    rng = np.random.default_rng(3)
    found = np.mean([_rule(_study(rng, truth)) == 1e-2 for _ in range(N_STUDIES)])
    assert found >= 0.80


def test_rates_with_a_diverged_or_non_learning_seed_are_out():
    rng = np.random.default_rng(1)
    truth = {**TRUTH, 1e-1: 5.0, 1e-6: 5.0}  # far better, but one diverged seed / not learning
    choice = rate_rule.select_rate(_study(rng, truth), DEFAULT)
    assert choice.rate not in (1e-1, 1e-6)
    c = choice.comparisons.set_index("rate")
    assert not c.loc[1e-1, "eligible"] and "diverged" in c.loc[1e-1, "why"]
    assert not c.loc[1e-6, "eligible"] and "did not learn" in c.loc[1e-6, "why"]


def _table(values: dict[float, list[float]], **flags) -> pd.DataFrame:
    return pd.DataFrame([{"rate": r, "seed": s, "dev_rmse": v, "diverged": False, "learned": True, **flags}
                         for r, vs in values.items() for s, v in enumerate(vs)])


def test_a_switch_needs_the_margin_and_a_bound_above_zero():
    base = [9.0, 9.2, 8.8, 9.1, 8.9]
    # 0.6 better on every seed: bound above 0 but below the 0.75 margin: the default stays.
    assert rate_rule.select_rate(_table({1e-3: base, 1e-2: [v - 0.6 for v in base]}), 1e-3).rate == 1e-3
    # 0.8 better on average but noisy (one seed 2 BDI worse): the bound includes 0.
    noisy = [v - d for v, d in zip(base, [2.0, 2.0, 2.0, -2.0, 2.0])]
    choice = rate_rule.select_rate(_table({1e-3: base, 1e-2: noisy}), 1e-3)
    assert choice.rate == 1e-3 and choice.comparisons.set_index("rate").loc[1e-2, "lower"] < 0
    # 0.8 better on every seed: switch; the chosen rate is tied only with itself here.
    choice = rate_rule.select_rate(_table({1e-3: base, 1e-2: [v - 0.9 for v in base]}), 1e-3)
    assert choice.rate == 1e-2 and choice.tied == [1e-2]
    assert "0.75 BDI" in choice.how


def test_of_two_qualifying_rates_the_nearest_to_the_default_wins():
    base = [9.0, 9.2, 8.8, 9.1, 8.9]
    t = _table({1e-4: base, 1e-3: [v + 1 for v in base], 1e-2: [v + 0.1 for v in base], 1e-1: [v - 0.5 for v in base]})
    assert rate_rule.select_rate(t, 1e-3).rate == 1e-4  # 1e-4 and 1e-2 both qualify: 1e-4 is as near, and smaller


def test_one_seed_never_switches_and_a_bad_default_moves_to_the_nearest_eligible_rate():
    assert rate_rule.select_rate(_table({1e-3: [9.0], 1e-2: [5.0]}), 1e-3).rate == 1e-3
    t = _table({1e-3: [9.0, 9.1], 1e-2: [9.0, 9.0], 1e-4: [9.5, 9.6]})
    t.loc[t["rate"] == 1e-3, "learned"] = False
    choice = rate_rule.select_rate(t, 1e-3)
    assert choice.rate == 1e-4 and "nearest to the default" in choice.how


def test_bad_tables_and_rules_raise_clear_errors():
    with pytest.raises(ValueError, match="lacks columns"):
        rate_rule.select_rate(pd.DataFrame({"rate": [1e-3]}), 1e-3)
    with pytest.raises(ValueError, match="empty"):
        rate_rule.select_rate(pd.DataFrame(columns=list(rate_rule.TABLE_COLUMNS)), 1e-3)
    with pytest.raises(ValueError, match="two runs of rate"):
        rate_rule.select_rate(_table({1e-3: [9.0]}).pipe(lambda t: pd.concat([t, t])), 1e-3)
    with pytest.raises(ValueError, match="margin"):
        rate_rule.RateRule(margin=-1)
    assert rate_rule.RateRule().to_dict() == {"default": None, "margin": 0.75, "level": 0.95}
