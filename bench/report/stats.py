"""Statistics over seeds: mean and sample std, a bootstrap CI of a difference of means, and
Welch's t-test against a threshold.

Everything is deterministic: the bootstrap draws from ``numpy.random.default_rng(seed)``, created
afresh for every comparison, so a result does not depend on the order comparisons are made in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


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


def bootstrap_diff_ci(
    treatment: Sequence[float],
    baseline: Sequence[float],
    resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``mean(treatment) - mean(baseline)``: each resample draws the
    seeds of each side with replacement, independently (the two methods' runs are not paired)."""
    import numpy as np

    a = np.asarray(list(treatment), dtype=float)
    b = np.asarray(list(baseline), dtype=float)
    if a.size == 0 or b.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means_a = a[rng.integers(0, a.size, size=(resamples, a.size))].mean(axis=1)
    means_b = b[rng.integers(0, b.size, size=(resamples, b.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means_a - means_b, [tail, 1.0 - tail])
    return (float(low), float(high))


@dataclass(frozen=True)
class Welch:
    """Welch's t statistic of ``mean(a) - mean(b) - threshold`` and the one-sided p-value of
    "the difference exceeds the threshold" (``p_greater``). ``1 - p_greater`` is the p-value of
    "the difference is below the threshold" (the t distribution is continuous)."""

    t: float
    p_greater: float


def welch_vs_threshold(a: Sequence[float], b: Sequence[float], threshold: float) -> Welch:
    """Welch's unequal-variance t-test of H0: mean(a) - mean(b) <= threshold against
    H1: mean(a) - mean(b) > threshold (``scipy.stats.ttest_ind``, ``equal_var=False``).

    When both samples have zero variance the test is undefined; the difference is then exact,
    and the p-value is 0 when it exceeds the threshold and 1 when it does not."""
    import numpy as np
    from scipy import stats

    x = np.asarray(list(a), dtype=float) - threshold
    y = np.asarray(list(b), dtype=float)
    if x.size < 2 or y.size < 2:
        return Welch(math.nan, math.nan)
    if x.var(ddof=1) == 0 and y.var(ddof=1) == 0:
        diff = float(x.mean() - y.mean())
        return Welch(math.copysign(math.inf, diff) if diff else 0.0, 0.0 if diff > 0 else 1.0)
    result = stats.ttest_ind(x, y, equal_var=False, alternative="greater")
    return Welch(float(result.statistic), float(result.pvalue))
