"""Significance of comparisons: intervals over seeds, paired tests, multiple-comparison correction.

Every result names its test and its n, so nothing prints a bare p-value. Seeds compare with the paired
t-test and the Wilcoxon signed-rank test (pairs = the same seed for both methods); examples compare with
McNemar's test (pairs = the same test example under both models). The computations are scipy's; this
module only chooses the test, the effect size and the wording.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from scipy import stats

#: Below this many discordant pairs McNemar uses the exact binomial test, above it the chi-square one.
MCNEMAR_EXACT_BELOW = 25


@dataclass(frozen=True)
class Interval:
    """A mean with its confidence interval, and how the interval was computed."""

    mean: float
    low: float
    high: float
    n: int
    method: str  # "t" or "bootstrap (BCa, 9999 resamples)"
    confidence: float = 0.95

    def to_dict(self) -> dict[str, float | int | str | None]:
        return {
            "mean": self.mean,
            "low": _finite_or_none(self.low),
            "high": _finite_or_none(self.high),
            "n": self.n,
            "method": self.method,
            "confidence": self.confidence,
        }


@dataclass(frozen=True)
class TestResult:
    """One paired comparison of A against B.

    ``difference`` is A - B (mean over seeds for the t-test, median for Wilcoxon, accuracy difference for
    McNemar) with its interval ``difference_ci`` (None where the test gives none). ``effect_size`` is
    Cohen's d_z (paired t), the matched-pairs rank-biserial correlation (Wilcoxon) or the conditional odds
    ratio b/c (McNemar). ``p_adjusted`` is set by :func:`holm`.
    """

    test: str
    n: int
    unit: str  # "seeds" or "examples"
    statistic: float
    p_value: float
    difference: float
    difference_ci: tuple[float, float] | None
    effect_size: float
    effect_size_name: str
    p_adjusted: float | None = None
    correction: str | None = None

    @property
    def p(self) -> float:
        """The p-value to read: Holm-adjusted when the result is part of a family."""
        return self.p_adjusted if self.p_adjusted is not None else self.p_value

    def to_dict(self) -> dict[str, object]:
        return {
            "test": self.test,
            "n": self.n,
            "unit": self.unit,
            "statistic": _finite_or_none(self.statistic),
            "p_value": _finite_or_none(self.p_value),
            "p_adjusted": None if self.p_adjusted is None else _finite_or_none(self.p_adjusted),
            "correction": self.correction,
            "difference": _finite_or_none(self.difference),
            "difference_ci": None if self.difference_ci is None else [_finite_or_none(v) for v in self.difference_ci],
            "effect_size": _finite_or_none(self.effect_size),
            "effect_size_name": self.effect_size_name,
        }


def _finite_or_none(v: float) -> float | None:
    """JSON has no NaN or inf: undefined numbers are written as null."""
    return float(v) if math.isfinite(v) else None


def _as_array(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or inf: {arr.tolist()}")
    return arr


def _constant(x: np.ndarray) -> bool:
    """No spread beyond float round-off (differences of rates like 0.9 - 0.8 are not exact)."""
    return bool(np.ptp(x) <= 1e-12 * max(1.0, float(np.abs(x).max())))


def _paired(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_array(a, "a"), _as_array(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"paired samples need the same length, got {len(x)} and {len(y)}")
    return x, y


def mean_ci(
    values: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    *,
    method: Literal["t", "bootstrap"] = "t",
    n_resamples: int = 9999,
    seed: int = 0,
) -> Interval:
    """Mean and ``confidence`` interval: Student's t (default) or a BCa bootstrap of the mean.

    With n = 1 the interval is undefined (NaN); with identical values it collapses to the mean.
    """
    x = _as_array(values, "values")
    n = len(x)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = float(x.mean())
    label = "t" if method == "t" else f"bootstrap (BCa, {n_resamples} resamples)"
    if n == 1:
        return Interval(mean, float("nan"), float("nan"), n, label, confidence)
    if _constant(x):
        return Interval(mean, mean, mean, n, label, confidence)
    if method == "t":
        low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=stats.sem(x))
    elif method == "bootstrap":
        res = stats.bootstrap(
            (x,),
            np.mean,
            confidence_level=confidence,
            n_resamples=n_resamples,
            method="BCa",
            rng=np.random.default_rng(seed),
        )
        low, high = res.confidence_interval
    else:
        raise ValueError(f"method must be 't' or 'bootstrap', got {method!r}")
    return Interval(mean, float(low), float(high), n, label, confidence)


def paired_t(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, confidence: float = 0.95) -> TestResult:
    """Paired t-test of A - B across seeds; effect size Cohen's d_z = mean(d) / sd(d)."""
    x, y = _paired(a, b)
    if len(x) < 2:
        raise ValueError(f"a paired t-test needs at least 2 pairs, got {len(x)}")
    d = x - y
    mean = float(d.mean())
    if _constant(d):  # no spread: the t statistic is undefined; the difference is exact
        p = 1.0 if mean == 0 else 0.0
        return TestResult(
            "paired t-test",
            len(d),
            "seeds",
            math.copysign(math.inf, mean) if mean else 0.0,
            p,
            mean,
            (mean, mean),
            math.copysign(math.inf, mean) if mean else 0.0,
            "Cohen's d_z",
        )
    res = stats.ttest_rel(x, y)
    ci = res.confidence_interval(confidence)
    return TestResult(
        test="paired t-test",
        n=len(d),
        unit="seeds",
        statistic=float(res.statistic),
        p_value=float(res.pvalue),
        difference=mean,
        difference_ci=(float(ci.low), float(ci.high)),
        effect_size=mean / float(d.std(ddof=1)),
        effect_size_name="Cohen's d_z",
    )


def wilcoxon(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> TestResult:
    """Wilcoxon signed-rank test of A - B (exact distribution for small n, zero differences dropped).

    Effect size: the matched-pairs rank-biserial correlation (sum of positive ranks minus sum of negative
    ranks, over the total), from -1 (B always better) to 1 (A always better).
    """
    x, y = _paired(a, b)
    d = x - y
    nonzero = d[d != 0]
    if len(nonzero) == 0:
        return TestResult("Wilcoxon signed-rank", len(d), "seeds", 0.0, 1.0, 0.0, None, 0.0, "rank-biserial r")
    res = stats.wilcoxon(x, y, zero_method="wilcox")
    ranks = stats.rankdata(np.abs(nonzero))
    r = float((ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum()) / ranks.sum())
    return TestResult(
        test="Wilcoxon signed-rank",
        n=len(d),
        unit="seeds",
        statistic=float(res.statistic),
        p_value=float(res.pvalue),
        difference=float(np.median(d)),
        difference_ci=None,
        effect_size=r,
        effect_size_name="rank-biserial r",
    )


def mcnemar(
    correct_a: Sequence[bool] | np.ndarray, correct_b: Sequence[bool] | np.ndarray, confidence: float = 0.95
) -> TestResult:
    """McNemar's test on per-example outcomes of two models on the same examples.

    b = examples only A gets right, c = only B. With fewer than :data:`MCNEMAR_EXACT_BELOW` discordant
    pairs the p-value is the exact two-sided binomial test of b ~ Bin(b + c, 1/2), otherwise the
    chi-square test with continuity correction. ``difference`` = accuracy(A) - accuracy(B) = (b - c) / n
    with a Wald interval for paired proportions; effect size = conditional odds ratio b / c.
    """
    ca, cb = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if ca.shape != cb.shape or ca.ndim != 1:
        raise ValueError(f"McNemar needs two 1-D outcome vectors of one length, got {ca.shape} and {cb.shape}")
    n = len(ca)
    if n == 0:
        raise ValueError("McNemar needs at least one example")
    b, c = int((ca & ~cb).sum()), int((~ca & cb).sum())
    diff = (b - c) / n
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    se = math.sqrt(max((b + c) - (b - c) ** 2 / n, 0.0)) / n
    ci = (diff - z * se, diff + z * se)
    odds = b / c if c else (math.inf if b else float("nan"))
    if b + c == 0:
        return TestResult("McNemar (exact)", n, "examples", 0.0, 1.0, diff, ci, odds, "odds ratio b/c")
    if b + c < MCNEMAR_EXACT_BELOW:
        p = float(stats.binomtest(b, b + c, 0.5).pvalue)
        return TestResult("McNemar (exact)", n, "examples", float(b), p, diff, ci, odds, "odds ratio b/c")
    chi2 = (abs(b - c) - 1) ** 2 / (b + c)
    p = float(stats.chi2.sf(chi2, df=1))
    return TestResult(
        "McNemar (chi-square, continuity-corrected)", n, "examples", chi2, p, diff, ci, odds, "odds ratio b/c"
    )


def holm(results: Sequence[TestResult]) -> list[TestResult]:
    """Holm's step-down correction over a family of tests (controls the family-wise error rate).

    Returns the results in their input order with ``p_adjusted`` set:
    the k-th smallest p becomes max over j <= k of min(1, (m - j + 1) p_(j)).
    """
    m = len(results)
    order = sorted(range(m), key=lambda i: results[i].p_value)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * results[i].p_value))
        adjusted[i] = running
    return [replace(r, p_adjusted=adjusted[i], correction=f"Holm over {m}") for i, r in enumerate(results)]


def _p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def describe(
    result: TestResult, a: str, b: str, *, scale: float = 100.0, unit: str = "points", alpha: float = 0.05
) -> str:
    """One sentence: "A beats B by 3.2 points [1.1, 5.3], p = 0.012 (paired t-test, n = 5 seeds)".

    ``scale`` turns rates into points (100); the p-value is the Holm-adjusted one when there is one.
    """
    diff = result.difference * scale
    verb = "beats" if diff > 0 else "trails" if diff < 0 else "ties with"
    ci = ""
    if result.difference_ci is not None:
        lo, hi = (v * scale for v in result.difference_ci)
        ci = f" [{lo:.1f}, {hi:.1f}]"
    size = "" if diff == 0 else f" by {abs(diff):.1f} {unit}"
    what = "median difference, " if result.test.startswith("Wilcoxon") else ""
    how = f"{result.test}, {what}n = {result.n} {result.unit}"
    if result.correction:
        how += f", {result.correction}"
    verdict = "" if result.p < alpha else f"; not significant at {alpha:g}"
    return f"{a} {verb} {b}{size}{ci}, {_p_text(result.p)} ({how}){verdict}"
