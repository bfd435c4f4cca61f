"""The verdict on each claim: ``supported``, ``contradicted`` or ``inconclusive``, with the
evidence and the rule that decided it.

The decision is made in three steps, each written out in the report (:meth:`ClaimSpec.rule`):

1. Per task and (treatment, baseline) pair: Δ = difference of the seed means. *Supported* when
   the bootstrap CI of Δ lies inside the claim's interval and Welch's one-sided test rejects each
   bound; *contradicted* when the CI lies wholly beyond a bound and Welch's test rejects the other
   side; *inconclusive* otherwise, including fewer than ``min_seeds`` ok seeds on a side.
2. Per pair: supported when at least ``min_tasks`` tasks support it; contradicted when fewer than
   that are left that could (supporting + inconclusive); inconclusive otherwise, and whenever
   fewer tasks were run than required.
3. Per claim and backbone: supported when every pair is, contradicted when any pair is,
   inconclusive otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.report import collect, render
from bench.report.claims import ClaimSpec, Settings
from bench.report.stats import bootstrap_diff_ci, summarize, welch_vs_threshold

if TYPE_CHECKING:
    import pandas as pd

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
VERDICTS = (SUPPORTED, CONTRADICTED, INCONCLUSIVE)


@dataclass(frozen=True)
class Comparison:
    """One task and one (treatment row, baseline row) pair on one backbone. ``t`` and
    ``p_two_sided`` are Welch's test of Δ = 0; ``p_above_lower`` is the one-sided p-value of
    Δ > lower and ``p_below_upper`` that of Δ < upper (NaN without an upper bound)."""

    task: str
    treatment: str
    baseline: str
    n_treatment: int
    n_baseline: int
    mean_treatment: float
    mean_baseline: float
    delta: float
    ci: tuple[float, float]
    t: float
    p_two_sided: float
    p_above_lower: float
    p_below_upper: float
    verdict: str
    reason: str


@dataclass(frozen=True)
class Pair:
    """The verdict for one (treatment row, baseline row) pair over the tasks that were run."""

    treatment: str
    baseline: str
    tasks_run: int
    required: int
    counts: dict[str, int]
    verdict: str
    reason: str


@dataclass(frozen=True)
class ClaimResult:
    """The verdict on one claim for one backbone, with every pair and comparison."""

    claim: ClaimSpec
    backbone: str
    verdict: str
    reason: str
    pairs: tuple[Pair, ...] = ()
    comparisons: tuple[Comparison, ...] = ()


def evaluate(
    frame: pd.DataFrame, claims: Sequence[ClaimSpec], settings: Settings
) -> list[ClaimResult]:
    """A verdict per claim and backbone (every backbone with runs of the claim's methods)."""
    import pandas as pd

    results = []
    for claim in claims:
        methods = set(claim.treatment) | set(claim.baselines)
        mine = frame[frame["method"].isin(methods)]
        covered = [claim.covers(t, s) for t, s in zip(mine["task"], mine["suite"], strict=True)]
        mine = mine[pd.Series(covered, index=mine.index, dtype=bool)]
        backbones = sorted(set(mine["backbone"]))
        if not backbones:
            results.append(
                ClaimResult(claim, render.DASH, INCONCLUSIVE, "no runs of its methods on its tasks")
            )
        for backbone in backbones:
            results.append(_evaluate_backbone(mine[mine["backbone"] == backbone], claim, settings))
    return results


def _evaluate_backbone(runs: pd.DataFrame, claim: ClaimSpec, settings: Settings) -> ClaimResult:
    backbone = str(runs["backbone"].iloc[0])
    rows = collect.ordered_rows(runs)
    method_of = dict(zip(runs["row"], runs["method"], strict=True))
    treatments = [r for r in rows if method_of[r] in claim.treatment]
    baselines = [r for r in rows if method_of[r] in claim.baselines]
    if not treatments or not baselines:
        absent = claim.treatment if not treatments else claim.baselines
        return ClaimResult(
            claim, backbone, INCONCLUSIVE, f"no runs of {', '.join(absent)} on this backbone"
        )
    tasks = collect.ordered_tasks(runs)
    pairs, comparisons = [], []
    for treatment in treatments:
        for baseline in baselines:
            done = [_compare(runs, task, treatment, baseline, claim, settings) for task in tasks]
            comparisons += done
            pairs.append(_pair(treatment, baseline, done, claim))
    verdicts = [p.verdict for p in pairs]
    verdict = (
        CONTRADICTED
        if CONTRADICTED in verdicts
        else SUPPORTED
        if set(verdicts) == {SUPPORTED}
        else INCONCLUSIVE
    )
    reason = "; ".join(f"{p.treatment} vs {p.baseline}: {p.reason}" for p in pairs)
    return ClaimResult(claim, backbone, verdict, reason, tuple(pairs), tuple(comparisons))


def _scores(runs: pd.DataFrame, row: str, task: str) -> list[float]:
    mine = runs[(runs["row"] == row) & (runs["task"] == task) & (runs["status"] == "ok")]
    return [float(s) for s in mine.sort_values("seed")["score"] if not math.isnan(s)]


def _compare(
    runs: pd.DataFrame,
    task: str,
    treatment: str,
    baseline: str,
    claim: ClaimSpec,
    settings: Settings,
) -> Comparison:
    a, b = _scores(runs, treatment, task), _scores(runs, baseline, task)
    sa, sb = summarize(a), summarize(b)
    delta = sa.mean - sb.mean if a and b else math.nan
    if min(len(a), len(b)) < settings.min_seeds:
        return Comparison(
            task,
            treatment,
            baseline,
            len(a),
            len(b),
            sa.mean,
            sb.mean,
            delta,
            (math.nan, math.nan),
            math.nan,
            math.nan,
            math.nan,
            math.nan,
            INCONCLUSIVE,
            f"{len(a)} and {len(b)} ok seeds; {settings.min_seeds} per side needed",
        )
    ci = bootstrap_diff_ci(
        a, b, settings.bootstrap_resamples, settings.bootstrap_seed, settings.confidence
    )
    zero = welch_vs_threshold(a, b, 0.0)
    lower = welch_vs_threshold(a, b, claim.lower)
    upper = welch_vs_threshold(a, b, claim.upper) if claim.upper is not None else None
    p_above_lower = lower.p_greater
    p_below_upper = 1.0 - upper.p_greater if upper else math.nan
    verdict, reason = _decide(ci, p_above_lower, p_below_upper, claim, settings.alpha)
    return Comparison(
        task,
        treatment,
        baseline,
        len(a),
        len(b),
        sa.mean,
        sb.mean,
        delta,
        ci,
        zero.t,
        2 * min(zero.p_greater, 1 - zero.p_greater),
        p_above_lower,
        p_below_upper,
        verdict,
        reason,
    )


def _decide(
    ci: tuple[float, float],
    p_above_lower: float,
    p_below_upper: float,
    claim: ClaimSpec,
    alpha: float,
) -> tuple[str, str]:
    """The verdict of one comparison (see :meth:`ClaimSpec.rule`)."""
    low, high = ci
    span = f"CI [{render.signed(low, 2)}, {render.signed(high, 2)}]"
    upper = claim.upper
    inside = low > claim.lower and (upper is None or high < upper)
    significant = p_above_lower < alpha and (upper is None or p_below_upper < alpha)
    if inside and significant:
        return SUPPORTED, f"{span} inside {claim.interval()}, Welch significant"
    if high < claim.lower and 1 - p_above_lower < alpha:
        return CONTRADICTED, f"{span} below {claim.lower:g}, Welch significant"
    if upper is not None and low > upper and 1 - p_below_upper < alpha:
        return CONTRADICTED, f"{span} above {upper:g}, Welch significant"
    for bound in (claim.lower, upper):
        if bound is not None and low <= bound <= high:
            return INCONCLUSIVE, f"{span} straddles {bound:g}"
    return INCONCLUSIVE, f"{span}, but Welch's test is not significant at α = {alpha:g}"


def _pair(treatment: str, baseline: str, done: list[Comparison], claim: ClaimSpec) -> Pair:
    counts = {v: sum(c.verdict == v for c in done) for v in VERDICTS}
    run = len(done)
    need = claim.required(run)
    summary = (
        f"{counts[SUPPORTED]} supported, {counts[CONTRADICTED]} contradicted, "
        f"{counts[INCONCLUSIVE]} inconclusive of {run} task(s); {need} needed"
    )
    if run < need:
        return Pair(
            treatment, baseline, run, need, counts, INCONCLUSIVE, f"{summary}, but only {run} run"
        )
    if counts[SUPPORTED] >= need:
        verdict = SUPPORTED
    elif counts[SUPPORTED] + counts[INCONCLUSIVE] < need:
        verdict = CONTRADICTED
    else:
        verdict = INCONCLUSIVE
    return Pair(treatment, baseline, run, need, counts, verdict, summary)


# --- rendering -----------------------------------------------------------------------------------

COMPARISON_HEADERS = (
    "task",
    "treatment",
    "baseline",
    "n (T/B)",
    "mean T",
    "mean B",
    "Δ",
    "95% CI of Δ",
    "Welch t",
    "p (Δ≠0)",
    "p (Δ>lower)",
    "p (Δ<upper)",
    "verdict",
    "why",
)


def _p(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def _num(value: float, digits: int = 2) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "−inf"
    return render.points(value, digits)


def _comparison_cells(c: Comparison) -> list[str]:
    ci = (
        render.DASH
        if math.isnan(c.ci[0])
        else (f"[{render.signed(c.ci[0], 2)}, {render.signed(c.ci[1], 2)}]")
    )
    return [
        c.task,
        c.treatment,
        c.baseline,
        f"{c.n_treatment}/{c.n_baseline}",
        _num(c.mean_treatment),
        _num(c.mean_baseline),
        render.DASH if math.isnan(c.delta) else render.signed(c.delta, 2),
        ci,
        _num(c.t),
        _p(c.p_two_sided),
        _p(c.p_above_lower),
        _p(c.p_below_upper),
        c.verdict,
        c.reason,
    ]


def to_markdown(results: Sequence[ClaimResult], settings: Settings) -> str:
    """Every claim: statement, source, verdict per backbone, rule, pairs and comparisons."""
    lines = [
        "# Claims",
        "",
        "Verdicts on published claims, computed from the run records by `python -m bench "
        "report`. Δ is in points (×100) of each task's primary metric on its reported split.",
        "",
    ]
    claims: dict[str, list[ClaimResult]] = {}
    for result in results:
        claims.setdefault(result.claim.id, []).append(result)
    for claim_id, group in claims.items():
        claim = group[0].claim
        lines += [
            f"## {claim_id}",
            "",
            f"> {claim.statement}",
            "",
            f"Source: {claim.source}",
            "",
            f"Decision rule: {claim.rule(settings)}",
            "",
        ]
        for result in group:
            lines += [f"### Backbone `{result.backbone}`: **{result.verdict}**", ""]
            for pair in result.pairs:
                lines.append(
                    f"- {pair.treatment} vs {pair.baseline}: **{pair.verdict}** ({pair.reason})"
                )
            if not result.pairs:
                lines.append(f"- {result.reason}")
            lines.append("")
            if result.comparisons:
                rows = [_comparison_cells(c) for c in result.comparisons]
                lines += [render.markdown_table(COMPARISON_HEADERS, rows), ""]
    return "\n".join(lines)


def to_frame(results: Sequence[ClaimResult]) -> pd.DataFrame:
    """One CSV row per comparison (and one per claim/backbone without any)."""
    import pandas as pd

    records = []
    for result in results:
        base = {
            "claim": result.claim.id,
            "backbone": result.backbone,
            "claim_verdict": result.verdict,
        }
        if not result.comparisons:
            records.append(base | {"reason": result.reason})
        for c in result.comparisons:
            records.append(
                base
                | {
                    "task": c.task,
                    "treatment": c.treatment,
                    "baseline": c.baseline,
                    "n_treatment": c.n_treatment,
                    "n_baseline": c.n_baseline,
                    "mean_treatment": c.mean_treatment,
                    "mean_baseline": c.mean_baseline,
                    "delta": c.delta,
                    "ci_low": c.ci[0],
                    "ci_high": c.ci[1],
                    "welch_t": c.t,
                    "p_two_sided": c.p_two_sided,
                    "p_above_lower": c.p_above_lower,
                    "p_below_upper": c.p_below_upper,
                    "verdict": c.verdict,
                    "reason": c.reason,
                }
            )
    frame = pd.DataFrame.from_records(records)
    for column in ("n_treatment", "n_baseline"):
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    return frame


def summary_rows(results: Sequence[ClaimResult]) -> list[list[str]]:
    """(claim, backbone, verdict, statement) rows for the index."""
    return [[r.claim.id, r.backbone, f"**{r.verdict}**", r.claim.statement] for r in results]
