"""The claim rule's error rates, measured by simulation: ``python -m bench.report.simulate``.

Each case draws ``n`` simulated comparisons of ``seeds`` runs per side. The treatment is
``70 + Δ + noise`` and the baseline ``70 + noise``. The noise is normal, or heavy-tailed: a t
distribution with 3 degrees of freedom scaled to the same variance. Each comparison is decided
with the report's own functions (:func:`bench.report.verdicts.direction_p_values`, then
:func:`bench.report.stats.holm` over a family and :func:`bench.report.verdicts.decide`). The
same generators and seeds give the same rates; ``tests/test_claims.py`` checks them.
"""

from __future__ import annotations

import math
from typing import Any

NOISES = ("normal", "heavy-tailed")
SIMULATIONS = 2000
ALPHA = 0.05


def noise(rng: Any, kind: str, shape: tuple[int, ...]) -> Any:
    """Unit-variance noise of ``shape``: ``normal`` or ``heavy-tailed`` (t, 3 df, scaled)."""
    if kind not in NOISES:
        raise ValueError(f"unknown noise {kind!r}; valid: {', '.join(NOISES)}")
    if kind == "normal":
        return rng.normal(0.0, 1.0, shape)
    return rng.standard_t(3, shape) / math.sqrt(3.0)


def supported_rate(
    true_delta: float,
    bound: float,
    kind: str,
    sd: float,
    seed: int,
    tasks: int = 1,
    seeds: int = 5,
    n: int = SIMULATIONS,
    alpha: float = ALPHA,
    holm: bool = True,
) -> float:
    """The share of ``n`` simulated claims (each a family of ``tasks`` comparisons, all with
    true Δ ``true_delta``) in which the rule calls at least one comparison "supported" for
    Δ > ``bound``. ``holm=False`` decides on unadjusted p-values (to show what Holm buys)."""
    import numpy as np

    from bench.report import stats, verdicts

    rng = np.random.default_rng(seed)
    a = 70.0 + true_delta + sd * noise(rng, kind, (n, tasks, seeds))
    b = 70.0 + sd * noise(rng, kind, (n, tasks, seeds))
    support, against = verdicts.direction_p_values(a, b, bound, None)
    if holm:
        support = np.array([stats.holm(row) for row in support])
        against = np.array([stats.holm(row) for row in against])
    decided = verdicts.decide(support, against, alpha)
    return float(np.mean(np.any(decided == verdicts.SUPPORTED, axis=1)))


def coverage(seeds: int, seed: int, n: int = SIMULATIONS, confidence: float = 0.95) -> dict:
    """How often the two-sided ``confidence`` interval of Δ covers the true Δ = 0 over ``n``
    simulated ``seeds``-vs-``seeds`` comparisons with normal noise: Welch's t-interval, and the
    percentile bootstrap the report used before (10,000 resamples, numpy default_rng(0))."""
    import numpy as np

    from bench.report import stats

    rng = np.random.default_rng(seed)
    a, b = rng.normal(0, 1, (n, seeds)), rng.normal(0, 1, (n, seeds))
    welch = [stats.welch(x, y, confidence).ci for x, y in zip(a, b, strict=True)]
    tail = (1 - confidence) / 2
    boot = []
    for x, y in zip(a, b, strict=True):
        draw = np.random.default_rng(0)
        means_a = x[draw.integers(0, seeds, (10_000, seeds))].mean(axis=1)
        means_b = y[draw.integers(0, seeds, (10_000, seeds))].mean(axis=1)
        boot.append(np.quantile(means_a - means_b, [tail, 1 - tail]))
    return {
        "welch": float(np.mean([low <= 0 <= high for low, high in welch])),
        "bootstrap": float(np.mean([low <= 0 <= high for low, high in boot])),
    }


#: (label, true Δ, bound, sd, generator seed) of the single-comparison cases.
CASES = (
    ("null: true Δ = bound = 2", 2.0, 2.0, 2.0, 1),
    ("null: true Δ = bound = -1", -1.0, -1.0, 2.0, 2),
    ("null: true Δ = bound = 0", 0.0, 0.0, 2.0, 3),
    ("true Δ = bound + 3 = 5", 5.0, 2.0, 1.0, 4),
    ("true Δ = bound + 1 = 3", 3.0, 2.0, 1.0, 6),
)


def main() -> None:
    """Print every case's rates as Markdown tables (the ones in docs/statistics.md)."""
    print('| case | sd | "supported", normal | "supported", heavy-tailed |\n|---|---|---|---|')
    for label, delta, bound, sd, seed in CASES:
        rates = [supported_rate(delta, bound, kind, sd, seed) for kind in NOISES]
        print(f"| {label} | {sd:g} | {rates[0]:.4f} | {rates[1]:.4f} |")
    for holm in (True, False):
        rates = [supported_rate(2.0, 2.0, kind, 1.0, 5, tasks=5, holm=holm) for kind in NOISES]
        label = "with Holm" if holm else "without correction"
        print(
            f"| 5 tasks at the bound, any supported, {label} | 1 | {rates[0]:.4f} | "
            f"{rates[1]:.4f} |"
        )
    print("\n| seeds per side | Welch t-interval | percentile bootstrap |\n|---|---|---|")
    for seeds in (3, 5):
        covered = coverage(seeds, 11)
        print(f"| {seeds} vs {seeds} | {covered['welch']:.4f} | {covered['bootstrap']:.4f} |")


if __name__ == "__main__":
    main()
