"""Statistics against scipy and textbook values on known data."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from bastion.evaluation.significance import (
    describe,
    holm,
    mcnemar,
    mean_ci,
    paired_t,
    wilcoxon,
)

# Student's sleep data (Cushny & Peebles): extra hours of sleep under two drugs, 10 patients, paired.
DRUG_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
DRUG_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_t_interval_matches_the_textbook_sleep_data() -> None:
    d = np.subtract(DRUG_2, DRUG_1)
    ci = mean_ci(d)
    assert ci.n == 10 and ci.method == "t"
    # R: t.test(extra ~ group, paired = TRUE): mean difference 1.58, 95% CI [0.7001, 2.4599].
    assert ci.mean == pytest.approx(1.58)
    assert (ci.low, ci.high) == pytest.approx((0.700106, 2.459894), abs=1e-5)


def test_bootstrap_interval_is_scipys_bca_and_states_its_method() -> None:
    d = np.subtract(DRUG_2, DRUG_1)
    ci = mean_ci(d, method="bootstrap", n_resamples=2000, seed=3)
    ref = stats.bootstrap((d,), np.mean, n_resamples=2000, method="BCa", rng=np.random.default_rng(3))
    assert (ci.low, ci.high) == pytest.approx(tuple(ref.confidence_interval))
    assert ci.method == "bootstrap (BCa, 2000 resamples)"
    assert ci.low < ci.mean < ci.high


def test_intervals_of_degenerate_samples() -> None:
    one = mean_ci([0.7])
    assert one.mean == 0.7 and np.isnan(one.low) and np.isnan(one.high)
    same = mean_ci([0.5, 0.5, 0.5])
    assert (same.low, same.high) == (0.5, 0.5)
    with pytest.raises(ValueError, match="at least one"):
        mean_ci([])
    with pytest.raises(ValueError, match="NaN"):
        mean_ci([0.1, float("nan")])


def test_paired_t_matches_scipy_and_the_textbook() -> None:
    r = paired_t(DRUG_2, DRUG_1)
    ref = stats.ttest_rel(DRUG_2, DRUG_1)
    assert r.test == "paired t-test" and r.n == 10 and r.unit == "seeds"
    assert r.statistic == pytest.approx(ref.statistic) and r.p_value == pytest.approx(ref.pvalue)
    assert r.statistic == pytest.approx(4.0621, abs=1e-4)  # R's t = 4.0621, p = 0.002833
    assert r.p_value == pytest.approx(0.002833, abs=1e-6)
    d = np.subtract(DRUG_2, DRUG_1)
    assert r.effect_size == pytest.approx(d.mean() / d.std(ddof=1))
    assert r.difference_ci == pytest.approx((0.700106, 2.459894), abs=1e-5)


def test_paired_t_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="same length"):
        paired_t([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 2"):
        paired_t([1.0], [0.5])
    exact = paired_t([0.9, 0.8, 0.7], [0.8, 0.7, 0.6])  # a constant difference: no spread to test against
    assert exact.difference == pytest.approx(0.1) and exact.p_value == 0.0


def test_wilcoxon_matches_scipy_and_has_a_rank_biserial_effect() -> None:
    r = wilcoxon(DRUG_2, DRUG_1)
    ref = stats.wilcoxon(DRUG_2, DRUG_1, zero_method="wilcox")
    assert r.test == "Wilcoxon signed-rank" and r.n == 10
    assert r.statistic == pytest.approx(ref.statistic) and r.p_value == pytest.approx(ref.pvalue)
    assert r.effect_size == pytest.approx(1.0)  # drug 2 never gives less sleep: all nonzero ranks positive
    assert wilcoxon([0.5, 0.6], [0.5, 0.6]).p_value == 1.0


def test_mcnemar_exact_for_few_discordant_pairs() -> None:
    a = np.array([1] * 50 + [1] * 9 + [0] * 2 + [0] * 39, dtype=bool)
    b = np.array([1] * 50 + [0] * 9 + [1] * 2 + [0] * 39, dtype=bool)
    r = mcnemar(a, b)
    assert r.test == "McNemar (exact)" and r.n == 100 and r.unit == "examples"
    assert r.p_value == pytest.approx(stats.binomtest(9, 11, 0.5).pvalue)
    assert r.difference == pytest.approx(0.07) and r.effect_size == pytest.approx(4.5)


def test_mcnemar_chi_square_matches_the_textbook_example() -> None:
    # The classic 2x2 table (a, b, c, d) = (101, 121, 59, 33): chi2 with continuity correction = 20.672.
    a = np.array([1] * 101 + [1] * 121 + [0] * 59 + [0] * 33, dtype=bool)
    b = np.array([1] * 101 + [0] * 121 + [1] * 59 + [0] * 33, dtype=bool)
    r = mcnemar(a, b)
    assert r.test.startswith("McNemar (chi-square")
    assert r.statistic == pytest.approx(61**2 / 180)
    assert r.p_value == pytest.approx(stats.chi2.sf(61**2 / 180, 1))
    assert r.difference == pytest.approx((121 - 59) / 314)
    lo, hi = r.difference_ci
    assert lo < r.difference < hi


def test_holm_step_down_on_known_values() -> None:
    base = paired_t(DRUG_2, DRUG_1)
    family = [type(base)(**{**base.__dict__, "p_value": p}) for p in (0.01, 0.04, 0.03, 0.005)]
    adjusted = [r.p_adjusted for r in holm(family)]
    # sorted 0.005, 0.01, 0.03, 0.04 -> 0.02, 0.03, 0.06, 0.06 (monotone), back in input order
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert all(r.correction == "Holm over 4" for r in holm(family))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=12))
def test_holm_never_lowers_a_p_value_and_keeps_the_order(ps: list[float]) -> None:
    base = paired_t(DRUG_2, DRUG_1)
    family = [type(base)(**{**base.__dict__, "p_value": p}) for p in ps]
    adjusted = [r.p_adjusted for r in holm(family)]
    assert all(p <= q <= 1 for p, q in zip(ps, adjusted, strict=True))
    ranked = sorted(range(len(ps)), key=lambda i: ps[i])
    assert all(adjusted[i] <= adjusted[j] for i, j in itertools.pairwise(ranked))


def test_describe_names_the_test_the_n_and_the_interval() -> None:
    r = paired_t([0.62, 0.60, 0.65, 0.61, 0.63], [0.50, 0.52, 0.49, 0.51, 0.50])
    text = describe(r, "progressive-trades", "standard")
    assert text.startswith("progressive-trades beats standard by 11.8 points [")
    assert "(paired t-test, n = 5 seeds)" in text and "p < 0.001" in text
    worse = describe(wilcoxon([0.5, 0.4, 0.45], [0.6, 0.5, 0.5]), "A", "B")
    assert worse.startswith("A trails B by 10.0 points, p = 0.250")
    assert "Wilcoxon signed-rank, median difference, n = 3 seeds" in worse
    assert worse.endswith("not significant at 0.05")
    adjusted = describe(holm([r, r])[0], "A", "B")
    assert "Holm over 2" in adjusted
