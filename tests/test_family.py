"""Family-wise error and power of the book's Holm family on simulated predictions (no training).

A simulated study is ten settings, G and nine others, on one Testing partition of the demo
cohort's size (two videos a subject), drawn with the generator of tests/test_calibration.py,
whose error model and sizes are described there. The family is the book's:
``metrics.holm_comparisons(G, others, n=2000)``, Holm over the nine comparisons at 95 %.

Under the global null (all ten settings drawn from one distribution) the family must call
no difference in at least 93 % of 400 studies (at most 7 % family-wise error: nominal 5 %
plus a Monte-Carlo margin, the sd of a share near 5 % over 400 studies being 1.1 points).
With few seeds a setting's seed-to-seed spread is estimated from 3 to 10 numbers; the
percentile interval of the bootstrap treats it as known and under-covers, which the t
interval (Welch-Satterthwaite degrees of freedom) corrects. Measured here (400 studies;
family error under the global null, power to find a true 1-BDI difference of G against one
setting, Holm-adjusted and of the right sign):

    ======================  =====================  =========================
    seeds per setting       t: error / power       percentile: error / power
    ======================  =====================  =========================
    10 (G and the others)   3.8 % / 49.8 %         8.3 % / 65.3 %
    5                       3.8 % / 13.8 %         16.8 % / 41.3 %
    3                       3.8 % / 5.3 %          32.3 % / 29.0 %
    G 10, the others 3      10.5 % / -             28.8 % / -
    G 10, the others 1      33.5 % / -             38.0 % / -
    ======================  =====================  =========================

At the seed-to-seed spread measured in the demo build (Development RMSE sd over ten seeds
0.41 BDI, against about 0.65 in the generator's default; ``SEED_NOISE_DEMO``) ten seeds per
setting give a family error of 2.0 % and find the 1-BDI difference in 90.8 % of studies.
At the default spread the power is far below the 80 % that one comparison at 95 % reaches with 10 seeds a side
(tests/test_calibration.py): Holm's first step asks for 99.4 %, and few seeds cost degrees
of freedom. The book's demo preset sets the seeds per setting (``DEMO_SEEDS``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_calibration import N_SUBJECTS, ONE_BDI_WORSE, simulate_settings

from dlga.book.presets import BOOK_PRESETS, BookPreset
from dlga.training import metrics

N_STUDIES = 400
N_RESAMPLES = 2000
N_OTHERS = 9
MAX_FAMILY_ERROR = 0.07
MC_MARGIN = 0.05  # about four Monte-Carlo sd of a share near 80 % over 400 studies


def seeds_per_setting(preset: BookPreset) -> int:
    """The fewest seeds any setting of the preset's ablation grid gets."""
    power = set(preset.power_seeds)
    return min(len(set(preset.seeds) | power) if s in preset.power_settings else len(set(preset.seeds))
               for s in preset.settings)


DEMO_SEEDS = seeds_per_setting(BOOK_PRESETS["demo"])
# Power to find the 1-BDI difference with interval="t" (Holm over 9, 400 studies, rng seed 12),
# measured at these seeds per setting; the test asks for it less MC_MARGIN.
MEASURED_POWER = {3: 0.0525, 5: 0.1375, 10: 0.4975}


def _families(n_seeds_g: int, n_seeds_others: int, scale_first: float, interval: str, rng_seed: int,
              seed_noise: float = 1.0) -> pd.DataFrame:
    """One row per study: whether the family called any difference among the settings drawn
    like G (``false_call``), whether it found the first setting's difference (``found``), and
    the fewest degrees of freedom of a comparison (``min_df``)."""
    rng = np.random.default_rng(rng_seed)
    scales = (1.0, scale_first) + (1.0,) * (N_OTHERS - 1)
    rows = []
    for i in range(N_STUDIES):
        g, *others = simulate_settings(rng, scales, (n_seeds_g,) + (n_seeds_others,) * N_OTHERS, seed_noise)
        family = metrics.holm_comparisons(g, {f"s{k}": t for k, t in enumerate(others)}, n=N_RESAMPLES, seed=i,
                                          interval=interval)
        called = ~family["tie"].to_numpy()
        null = called[1:] if scale_first != 1.0 else called
        rows.append({"false_call": bool(null.any()),
                     "found": bool(called[0] and family.loc[0, "hi_holm"] < 0),  # G better: right sign
                     "estimate": family.loc[0, "estimate"], "min_df": family["df"].min(),
                     "max_df": family["df"].max(), "n_seeds": family["n_seeds"].min(),
                     "seed_sd": float(np.mean([_per_seed_rmse(t).std(ddof=1) for t in (g, *others)]))})
    return pd.DataFrame(rows)


def _per_seed_rmse(table: pd.DataFrame) -> pd.Series:
    return ((table["prediction"] - table["bdi"]) ** 2).groupby(table["seed"]).mean() ** 0.5


# The seed-to-seed spread measured in the demo build at b3db70e (AVX2): the sd over ten seeds of
# each setting's Development RMSE at the chosen rate, 0.41 BDI (root mean square over the ten
# settings; 0.29 to 0.57), against about 0.65 in the generator's default. Development, not
# Testing, sets it. SEED_NOISE_DEMO scales the generator's seed-level terms to match it.
DEMO_SEED_SD = 0.41
SEED_NOISE_DEMO = 0.6


@pytest.fixture(scope="module")
def one_bdi_demo_noise():
    return _families(DEMO_SEEDS, DEMO_SEEDS, ONE_BDI_WORSE, "t", rng_seed=16, seed_noise=SEED_NOISE_DEMO)


@pytest.fixture(scope="module")
def null_demo_noise():
    return _families(DEMO_SEEDS, DEMO_SEEDS, 1.0, "t", rng_seed=17, seed_noise=SEED_NOISE_DEMO)


@pytest.fixture(scope="module")
def null_demo():
    return _families(DEMO_SEEDS, DEMO_SEEDS, 1.0, "t", rng_seed=11)


@pytest.fixture(scope="module")
def one_bdi_demo():
    return _families(DEMO_SEEDS, DEMO_SEEDS, ONE_BDI_WORSE, "t", rng_seed=12)


@pytest.fixture(scope="module")
def null_unequal():
    return _families(10, 3, 1.0, "t", rng_seed=13)


@pytest.fixture(scope="module")
def null_one_seed():
    return _families(10, 1, 1.0, "t", rng_seed=14)


@pytest.fixture(scope="module")
def null_five_percentile():
    return _families(5, 5, 1.0, "percentile", rng_seed=11)


def test_demo_family_calls_no_difference_under_the_global_null(null_demo):
    assert DEMO_SEEDS >= 2, "with one seed a setting's training variance is not seen (see the one-seed test)"
    assert null_demo["false_call"].mean() <= MAX_FAMILY_ERROR


def test_demo_family_finds_a_one_bdi_difference_as_often_as_measured(one_bdi_demo):
    """Power of the Holm family (9 comparisons) to find G better by 1 BDI than one setting,
    interval="t", 400 studies: 49.75 % at 10 seeds per setting, 13.75 % at 5, 5.25 % at 3
    (percentile: 65.25 %, 41.25 %, 29 %, bought with a family error of 7 %, 16 %, 30 %). Not
    the 80 % a single comparison at 95 % reaches with 10 seeds (tests/test_calibration.py):
    Holm's first step asks for 99.4 %, and few seeds cost degrees of freedom."""
    measured = [s for s in MEASURED_POWER if s <= DEMO_SEEDS]
    assert measured, f"no power measured at {DEMO_SEEDS} seeds per setting or fewer; measure it (see the docstring)"
    assert one_bdi_demo["estimate"].mean() == pytest.approx(-1.0, abs=0.1)  # G minus the worse setting
    assert one_bdi_demo["found"].mean() >= MEASURED_POWER[max(measured)] - MC_MARGIN
    assert one_bdi_demo["false_call"].mean() <= MAX_FAMILY_ERROR  # among the eight others, still drawn like G


@pytest.mark.xfail(strict=True, reason="measured 10.5 %: Welch-Satterthwaite with 2-df seed parts on nine "
                   "independent comparisons under-covers in Holm's far tail")
def test_unequal_seeds_keep_the_family_error(null_unequal):
    # G with 10 seeds, the others with 3 (the control runs' count). Not met yet: see the reason.
    assert null_unequal["false_call"].mean() <= MAX_FAMILY_ERROR


def test_unequal_seeds_t_interval_errs_far_less_than_percentile(null_unequal):
    """What holds with G at 10 seeds and the others at 3: each comparison's df counts the
    others' 2 (so at least 2), and the family error, 10.5 % measured, is a third of the
    percentile interval's 28.8 % on the same studies (bounded here at 13 %)."""
    assert null_unequal["min_df"].min() >= 2
    assert null_unequal["false_call"].mean() <= 0.13


def test_one_seed_side_is_reported_not_covered(null_one_seed):
    """G with 10 seeds, each other setting with one: that side's training variance is not seen
    (no seed part, no degrees of freedom from it), so the interval is too narrow and the family
    errs far above 5 % (measured: 33.5 %; percentile 38 %). The table says so: ``n_seeds`` 1 and ``df``
    from G's seeds and the subjects alone. Comparisons with a one-seed setting are not evidence."""
    assert (null_one_seed["n_seeds"] == 1).all()
    assert (null_one_seed["max_df"] <= (10 - 1) + (N_SUBJECTS - 1)).all()
    assert null_one_seed["false_call"].mean() > MAX_FAMILY_ERROR


def test_percentile_interval_errs_too_often_at_five_seeds(null_five_percentile):
    # The old method, which the t interval replaces: measured 16.75 % (t: 3.75 %) on the same studies.
    assert null_five_percentile["false_call"].mean() > MAX_FAMILY_ERROR


def test_at_the_demos_measured_seed_spread_the_family_finds_one_bdi_in_80_percent(one_bdi_demo_noise, null_demo_noise):
    # The generator's default seed noise is larger than the demo's measured spread; at the
    # measured spread (Development) the targets are asked for directly.
    assert null_demo_noise["seed_sd"].mean() == pytest.approx(DEMO_SEED_SD, abs=0.08)
    assert null_demo_noise["false_call"].mean() <= MAX_FAMILY_ERROR
    assert one_bdi_demo_noise["found"].mean() >= 0.80
