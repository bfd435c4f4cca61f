"""Statistics over seeds: summaries, Welch's t-interval and tests of a difference of means
against a bound, Holm–Bonferroni adjustment, and the power of a comparison.

Two methods' runs are independent samples (different seeds train different models; nothing
pairs seed 13 of one method with seed 13 of the other), so a difference of means
Δ = mean(a) − mean(b) is judged with Welch's unequal-variance t statistic
t = (Δ − bound) / se, se = √(s²_a/n_a + s²_b/n_b), on Welch–Satterthwaite degrees of freedom
(``scipy.stats.ttest_ind(equal_var=False)``). Its interval holds its coverage for normal seed
noise at any number of seeds ≥ 2; a percentile bootstrap over 3 seeds does not (10 distinct
resample means per side).

When both samples have zero variance there is no test: se = 0, and a t statistic of ±∞ would
turn two identical constant outputs into "significant". Every test then returns NaN (never
significant), except that Δ = 0 exactly gives p(Δ ≠ 0) = 1.

The test functions take arrays whose last axis holds the seeds (shape ``(..., n)``), so that a
simulation of thousands of comparisons runs in one call.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

POWER = 0.8
"""Power at which the minimum detectable difference is computed."""
MAX_SEEDS = 1000
"""Search limit of :func:`seeds_for_power`."""


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation (ddof=1; NaN below 2 values) of ``n`` values."""

    mean: float
    std: float
    n: int


def summarize(values: Sequence[float]) -> Summary:
    import numpy as np

    array = np.asarray(list(values), dtype=float)
    if array.size == 0:
        return Summary(math.nan, math.nan, 0)
    std = float(array.std(ddof=1)) if array.size > 1 else math.nan
    return Summary(float(array.mean()), std, int(array.size))


def _pair(a: Any, b: Any) -> tuple[Any, Any]:
    import numpy as np

    return np.asarray(a, dtype=float), np.asarray(b, dtype=float)


def zero_variance(a: Any, b: Any) -> Any:
    """Whether both samples are constant (shape ``(...)`` for inputs ``(..., n)``)."""
    x, y = _pair(a, b)
    return (x.max(axis=-1) == x.min(axis=-1)) & (y.max(axis=-1) == y.min(axis=-1))


def p_greater(a: Any, b: Any, bound: float) -> Any:
    """Welch's one-sided p-value of H0: mean(a) − mean(b) ≤ ``bound`` against
    H1: mean(a) − mean(b) > ``bound``; NaN where both samples are constant or a side has fewer
    than 2 values. Inputs ``(..., n_a)`` and ``(..., n_b)``; output ``(...)`` (a float for 1-D)."""
    return _one_sided(a, b, bound, "greater")


def p_less(a: Any, b: Any, bound: float) -> Any:
    """Welch's one-sided p-value of H0: Δ ≥ ``bound`` against H1: Δ < ``bound`` (see
    :func:`p_greater`)."""
    return _one_sided(a, b, bound, "less")


def _one_sided(a: Any, b: Any, bound: float, alternative: str) -> Any:
    import numpy as np
    from scipy import stats

    x, y = _pair(a, b)
    if x.shape[-1] < 2 or y.shape[-1] < 2:
        return _nan_like(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = stats.ttest_ind(x - bound, y, equal_var=False, alternative=alternative, axis=-1).pvalue
    p = np.where(zero_variance(x, y), np.nan, p)
    return float(p) if p.ndim == 0 else p


def _nan_like(x: Any) -> Any:
    import numpy as np

    shape = x.shape[:-1]
    return math.nan if not shape else np.full(shape, np.nan)


@dataclass(frozen=True)
class Welch:
    """Welch's comparison of two samples: Δ = mean(a) − mean(b), its standard error ``se`` and
    Welch–Satterthwaite degrees of freedom ``df``, the t statistic of Δ = 0, the two-sided
    p-value of Δ ≠ 0 and the two-sided ``confidence`` interval of Δ. NaN where undefined (a side
    with fewer than 2 values; both sides constant, except p = 1 when Δ = 0 exactly)."""

    delta: float
    se: float
    df: float
    t: float
    p_two_sided: float
    ci: tuple[float, float]
    confidence: float


def welch(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Welch:
    """Welch's t-interval and test of Δ = 0 for one comparison (``scipy.stats.ttest_ind``)."""
    from scipy import stats

    x, y = _pair(list(a), list(b))
    nan2 = (math.nan, math.nan)
    delta = float(x.mean() - y.mean()) if x.size and y.size else math.nan
    if x.size < 2 or y.size < 2:
        return Welch(delta, math.nan, math.nan, math.nan, math.nan, nan2, confidence)
    if bool(zero_variance(x, y)):
        p = 1.0 if delta == 0 else math.nan
        return Welch(delta, 0.0, math.nan, math.nan, p, nan2, confidence)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # one constant side: scipy's precision
        result = stats.ttest_ind(x, y, equal_var=False)  # warning; the test is still defined
    interval = result.confidence_interval(confidence)
    se = math.sqrt(x.var(ddof=1) / x.size + y.var(ddof=1) / y.size)
    return Welch(
        delta,
        se,
        float(result.df),
        float(result.statistic),
        float(result.pvalue),
        (float(interval.low), float(interval.high)),
        confidence,
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order: sorted ascending, the k-th
    smallest (k = 0, 1, …) becomes max over j ≤ k of min(1, (m − j)·p_(j)). Rejecting where the
    adjusted value is below α controls the family-wise error rate at α. NaN (no test) counts as
    1 and stays in the family (m includes it)."""
    values = [1.0 if math.isnan(p) else float(p) for p in p_values]
    m = len(values)
    adjusted = [1.0] * m
    running = 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: values[i])):
        running = max(running, min(1.0, (m - rank) * values[index]))
        adjusted[index] = running
    return adjusted


def _power(se: float, df: float, distance: float, alpha: float) -> float:
    """Power of the one-sided level-``alpha`` Welch test when the true Δ lies ``distance``
    beyond the bound (noncentral t with noncentrality distance / se)."""
    from scipy import stats

    return float(stats.nct.sf(stats.t.isf(alpha, df), df, distance / se))


def welch_df(var_a: float, n_a: int, var_b: float, n_b: int) -> float:
    """Welch–Satterthwaite degrees of freedom of two samples' variances and sizes."""
    qa, qb = var_a / n_a, var_b / n_b
    return (qa + qb) ** 2 / (qa**2 / (n_a - 1) + qb**2 / (n_b - 1))


def min_detectable(
    var_a: float, n_a: int, var_b: float, n_b: int, alpha: float, power: float = POWER
) -> float:
    """The smallest distance of the true Δ beyond a bound that the one-sided level-``alpha``
    Welch test detects with probability ``power``, if the seed variances were the observed
    ``var_a``, ``var_b`` (noncentral t, ``scipy.stats.nct``). NaN when both variances are 0
    or a side has fewer than 2 seeds."""
    from scipy import optimize

    if n_a < 2 or n_b < 2 or not (var_a > 0 or var_b > 0):
        return math.nan
    se = math.sqrt(var_a / n_a + var_b / n_b)
    df = welch_df(var_a, n_a, var_b, n_b)
    high = se
    while _power(se, df, high, alpha) < power:
        high *= 2
    return float(
        optimize.brentq(lambda d: _power(se, df, d, alpha) - power, 0.0, high, xtol=1e-9 * se)
    )


def seeds_for_power(
    var_a: float, var_b: float, distance: float, alpha: float, power: float = POWER
) -> int | None:
    """The fewest seeds per side (equal on both sides) at which the one-sided level-``alpha``
    Welch test detects a true Δ ``distance`` beyond the bound with probability ``power``, at
    the observed seed variances; None when no number up to :data:`MAX_SEEDS` does (or the
    inputs leave nothing to detect)."""
    if not distance > 0 or not (var_a > 0 or var_b > 0):
        return None
    for n in range(2, MAX_SEEDS + 1):
        se = math.sqrt((var_a + var_b) / n)
        if _power(se, welch_df(var_a, n, var_b, n), distance, alpha) >= power:
            return n
    return None
