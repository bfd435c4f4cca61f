"""The verdict on each claim: ``supported``, ``contradicted``, ``inconclusive`` or
``not issued``, with the evidence, the rule that decided it and the budget it was judged at.

Per claim and backbone (the rule in words: :meth:`ClaimSpec.rule`):

1. Every (treatment row, baseline row) pair × task is a :class:`Comparison`. It is *left out*
   when either cell is not learned (:mod:`bench.report.learned`), *untestable* with fewer than
   ``min_seeds`` ok seeds on a side or zero variance on both sides, else *tested*: Welch's
   one-sided t-tests give a support p-value and a contradiction p-value.
2. The family is every comparison that is not left out. Holm–Bonferroni adjusts each
   direction's p-values over it (untestable ones count as p = 1); a comparison supports
   (contradicts) the claim when its adjusted support (contradiction) p-value is below α.
3. Per pair: supported when enough of its remaining tasks support it (``min_tasks`` of them),
   contradicted when fewer than that could (supporting + inconclusive), else inconclusive.
4. Per claim and backbone: supported when every pair is, contradicted when any pair is, else
   inconclusive; *not issued* when any run that counted was trained at a ``smoke`` budget.

:func:`decide` is the part of the rule that maps adjusted p-values to a verdict; it takes
arrays, so that the simulation test runs the rule itself on thousands of comparisons.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.report import collect, render
from bench.report.budget import SMOKE, budget_texts
from bench.report.claims import ClaimSpec, Settings
from bench.report.stats import (
    MAX_SEEDS,
    holm,
    min_detectable,
    p_greater,
    p_less,
    seeds_for_power,
    summarize,
    welch,
)

if TYPE_CHECKING:
    import pandas as pd

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
NOT_ISSUED = "not issued"
VERDICTS = (SUPPORTED, CONTRADICTED, INCONCLUSIVE)
TESTED, UNTESTABLE, LEFT_OUT = "tested", "untestable", "left out: not learned"


@dataclass(frozen=True)
class Comparison:
    """One task and one (treatment row, baseline row) pair on one backbone.

    ``status``: ``tested``, ``untestable`` or ``left out: not learned``. ``welch_t`` and
    ``p_two_sided`` are Welch's test of Δ = 0 and ``ci`` its two-sided t-interval;
    ``p_support`` / ``p_contradict`` are the one-sided p-values of the claim's directions and
    ``*_holm`` the same adjusted over the family. ``mde`` is the minimum detectable distance of
    Δ from the bound and ``seeds_needed`` the seeds per side that would detect the observed
    distance (None: more than :data:`bench.report.stats.MAX_SEEDS` or nothing to detect)."""

    task: str
    treatment: str
    baseline: str
    n_treatment: int
    n_baseline: int
    mean_treatment: float
    mean_baseline: float
    delta: float
    ci: tuple[float, float]
    welch_t: float
    p_two_sided: float
    p_support: float
    p_contradict: float
    status: str
    verdict: str = INCONCLUSIVE
    reason: str = ""
    p_support_holm: float = math.nan
    p_contradict_holm: float = math.nan
    mde: float = math.nan
    seeds_needed: int | None = None
    not_learned: tuple[str, ...] = ()
    variances: tuple[float, float] = (math.nan, math.nan)


@dataclass(frozen=True)
class Pair:
    """The verdict for one (treatment row, baseline row) pair over the tasks that remain."""

    treatment: str
    baseline: str
    tasks_run: int
    required: int
    counts: dict[str, int]
    verdict: str
    reason: str
    left_out: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClaimResult:
    """The verdict on one claim for one backbone, with every pair and comparison, and the
    budget/protocol it was judged at (``protocol``)."""

    claim: ClaimSpec
    backbone: str
    verdict: str
    reason: str
    pairs: tuple[Pair, ...] = ()
    comparisons: tuple[Comparison, ...] = ()
    protocol: str = ""
    family: int = 0

    @property
    def counted_tasks(self) -> tuple[str, ...]:
        """Tasks with at least one comparison in the family."""
        return tuple(dict.fromkeys(c.task for c in self.comparisons if c.status != LEFT_OUT))

    @property
    def left_out_tasks(self) -> tuple[str, ...]:
        """Tasks whose every comparison was left out as not learned."""
        counted = set(self.counted_tasks)
        return tuple(dict.fromkeys(c.task for c in self.comparisons if c.task not in counted))


def decide(p_support_holm: Any, p_contradict_holm: Any, alpha: float) -> Any:
    """The verdict of comparisons from their Holm-adjusted p-values (arrays or floats; NaN
    never rejects): an array of ``supported`` / ``contradicted`` / ``inconclusive``."""
    import numpy as np

    support = np.asarray(p_support_holm, dtype=float)
    against = np.asarray(p_contradict_holm, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.where(
            support < alpha, SUPPORTED, np.where(against < alpha, CONTRADICTED, INCONCLUSIVE)
        )


def direction_p_values(a: Any, b: Any, lower: float, upper: float | None) -> tuple[Any, Any]:
    """(support, contradiction) one-sided Welch p-values of Δ = mean(a) − mean(b) against the
    claim's interval, for inputs ``(..., n)``: support rejects Δ ≤ lower (and Δ ≥ upper: the
    larger p); contradiction rejects Δ ≥ lower or Δ ≤ upper (twice the smaller p, at most 1)."""
    import numpy as np

    support, against = p_greater(a, b, lower), p_less(a, b, lower)
    if upper is not None:
        support = np.maximum(support, p_less(a, b, upper))  # NaN (no test) stays NaN
        above = p_greater(a, b, upper)
        against = np.minimum(1.0, 2 * np.minimum(against, above))
        if np.ndim(support) == 0:
            support, against = float(support), float(against)
    return support, against


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
    protocol = _protocol(runs)
    if not treatments or not baselines:
        absent = claim.treatment if not treatments else claim.baselines
        return ClaimResult(
            claim,
            backbone,
            INCONCLUSIVE,
            f"no runs of {', '.join(absent)} on this backbone",
            protocol=protocol,
        )
    tasks = collect.ordered_tasks(runs)
    raw = [
        _compare(runs, task, treatment, baseline, claim, settings)
        for treatment in treatments
        for baseline in baselines
        for task in tasks
    ]
    comparisons = _adjust(raw, claim, settings)
    family = sum(c.status != LEFT_OUT for c in comparisons)
    pairs = [
        _pair(t, b, [c for c in comparisons if (c.treatment, c.baseline) == (t, b)], claim)
        for t in treatments
        for b in baselines
    ]
    verdicts = [p.verdict for p in pairs]
    verdict = (
        CONTRADICTED
        if CONTRADICTED in verdicts
        else SUPPORTED
        if set(verdicts) == {SUPPORTED}
        else INCONCLUSIVE
    )
    reason = "; ".join(f"{p.treatment} vs {p.baseline}: {p.reason}" for p in pairs)
    counted = set(runs.loc[runs["status"] == collect.STATUS_OK, "budget"])
    if SMOKE in counted:
        reason = (
            "not issued: runs trained at a smoke budget; the statistics below describe them, "
            "they decide nothing"
        )
        comparisons = [
            dataclasses.replace(c, verdict=NOT_ISSUED, reason=_power_text(c, claim))
            if c.status == TESTED
            else dataclasses.replace(c, verdict=NOT_ISSUED)
            for c in comparisons
        ]
        pairs = [dataclasses.replace(p, verdict=NOT_ISSUED, reason=_untallied(p)) for p in pairs]
        verdict = NOT_ISSUED
    return ClaimResult(
        claim, backbone, verdict, reason, tuple(pairs), tuple(comparisons), protocol, family
    )


def _protocol(runs: pd.DataFrame) -> str:
    """The budget(s), seeds and selection of ``runs``, in words."""
    ok = runs[runs["status"] == collect.STATUS_OK]
    budgets = budget_texts(ok)
    seeds = sorted({int(s) for s in ok["seed"]})
    selection = sorted(set(ok["selection_split"]) - {""}) or ["not recorded"]
    return (
        f"budget {'; '.join(budgets) or 'of no ok run'}; seeds {', '.join(map(str, seeds))}; "
        f"selection: {'; '.join(selection)}"
    )


def _cell(runs: pd.DataFrame, row: str, task: str) -> tuple[list[float], bool]:
    """The ok scores of a cell (NaN dropped) and whether the cell is not learned."""
    mine = runs[(runs["row"] == row) & (runs["task"] == task) & (runs["status"] == "ok")]
    mine = mine.sort_values("seed")
    scores = [float(s) for s in mine["score"] if not math.isnan(s)]
    not_learned = len(mine) > 0 and all(_true(v) for v in mine["at_chance"])
    return scores, not_learned


def _true(value: Any) -> bool:
    """A frame's True (Python or numpy), never None or NaN."""
    return value is not None and value == value and bool(value)


def _compare(
    runs: pd.DataFrame,
    task: str,
    treatment: str,
    baseline: str,
    claim: ClaimSpec,
    settings: Settings,
) -> Comparison:
    (a, a_chance), (b, b_chance) = _cell(runs, treatment, task), _cell(runs, baseline, task)
    sa, sb = summarize(a), summarize(b)
    test = welch(a, b, settings.confidence)
    not_learned = tuple(r for r, flag in ((treatment, a_chance), (baseline, b_chance)) if flag)
    base = Comparison(
        task,
        treatment,
        baseline,
        len(a),
        len(b),
        sa.mean,
        sb.mean,
        test.delta,
        test.ci,
        test.t,
        test.p_two_sided,
        math.nan,
        math.nan,
        TESTED,
        not_learned=not_learned,
        variances=(sa.std**2, sb.std**2),
    )
    if not_learned:
        reason = f"not learned: {', '.join(not_learned)} (every ok run at chance level)"
        return dataclasses.replace(base, status=LEFT_OUT, reason=reason)
    if min(len(a), len(b)) < settings.min_seeds:
        reason = f"{len(a)} and {len(b)} ok seeds; {settings.min_seeds} per side needed"
        return dataclasses.replace(base, status=UNTESTABLE, reason=reason)
    if test.se == 0:
        reason = "zero variance on both sides: no test"
        return dataclasses.replace(base, status=UNTESTABLE, reason=reason)
    support, against = direction_p_values(a, b, claim.lower, claim.upper)
    return dataclasses.replace(base, p_support=support, p_contradict=against)


def _adjust(raw: list[Comparison], claim: ClaimSpec, settings: Settings) -> list[Comparison]:
    """Holm over the family (every comparison not left out), the verdicts, and the power."""
    family = [i for i, c in enumerate(raw) if c.status != LEFT_OUT]
    support = holm([raw[i].p_support for i in family])
    against = holm([raw[i].p_contradict for i in family])
    level = settings.alpha / max(1, len(family))
    out = list(raw)
    for position, i in enumerate(family):
        c = raw[i]
        verdict = str(decide(support[position], against[position], settings.alpha))
        mde, needed = math.nan, None
        if c.status == TESTED:
            var_a, var_b = c.variances
            mde = min_detectable(var_a, c.n_treatment, var_b, c.n_baseline, level, settings.power)
            distance = _distance(c.delta, claim)
            needed = seeds_for_power(var_a, var_b, distance, level, settings.power)
        c = dataclasses.replace(
            c,
            p_support_holm=support[position],
            p_contradict_holm=against[position],
            verdict=verdict,
            mde=mde,
            seeds_needed=needed,
        )
        out[i] = dataclasses.replace(c, reason=c.reason or _reason(c, claim, settings))
    return out


def _distance(delta: float, claim: ClaimSpec) -> float:
    """How far Δ lies from the nearest bound of the claim's interval."""
    bounds = [claim.lower] + ([claim.upper] if claim.upper is not None else [])
    return min(abs(delta - bound) for bound in bounds)


def _reason(c: Comparison, claim: ClaimSpec, settings: Settings) -> str:
    a = f"{settings.alpha:g}"
    if c.verdict == SUPPORTED:
        return f"Holm p {c.p_support_holm:.3f} < {a}: {claim.interval()}"
    if c.verdict == CONTRADICTED:
        outside = f"Δ < {claim.lower:g}" + (
            f" or Δ > {claim.upper:g}" if claim.upper is not None else ""
        )
        return f"Holm p {c.p_contradict_holm:.3f} < {a}: {outside}"
    smaller = min(c.p_support_holm, c.p_contradict_holm)
    return f"Holm p {smaller:.3f} ≥ {a}; {_power_text(c, claim)}"


def _power_text(c: Comparison, claim: ClaimSpec) -> str:
    """How far Δ is from the bound against what the seeds can detect."""
    seeds = (
        f"about {c.seeds_needed} seeds per side would detect it"
        if c.seeds_needed is not None
        else f"more than {MAX_SEEDS} seeds per side would be needed"
    )
    return f"|Δ − bound| = {_distance(c.delta, claim):.2f} against an MDE of {c.mde:.2f}: {seeds}"


def _untallied(pair: Pair) -> str:
    """A pair's reason without the tally of verdicts (for a verdict that is not issued)."""
    out = pair.left_out
    gone = f", {len(out)} left out as not learned ({', '.join(out)})" if out else ""
    return f"{pair.tasks_run} remaining task(s){gone}"


def _pair(treatment: str, baseline: str, done: list[Comparison], claim: ClaimSpec) -> Pair:
    remaining = [c for c in done if c.status != LEFT_OUT]
    left_out = tuple(c.task for c in done if c.status == LEFT_OUT)
    counts = {v: sum(c.verdict == v for c in remaining) for v in VERDICTS}
    run = len(remaining)
    need = claim.required(run)
    out = f", {len(left_out)} left out as not learned ({', '.join(left_out)})" if left_out else ""
    summary = (
        f"{counts[SUPPORTED]} supported, {counts[CONTRADICTED]} contradicted, "
        f"{counts[INCONCLUSIVE]} inconclusive of {run} remaining task(s){out}; {need} needed"
    )
    if run < need:
        return Pair(
            treatment,
            baseline,
            run,
            need,
            counts,
            INCONCLUSIVE,
            f"{summary}, but only {run} remain",
            left_out,
        )
    if counts[SUPPORTED] >= need:
        verdict = SUPPORTED
    elif counts[SUPPORTED] + counts[INCONCLUSIVE] < need:
        verdict = CONTRADICTED
    else:
        verdict = INCONCLUSIVE
    return Pair(treatment, baseline, run, need, counts, verdict, summary, left_out)


# --- rendering -----------------------------------------------------------------------------------


def _headers(settings: Settings) -> tuple[str, ...]:
    return (
        "task",
        "treatment",
        "baseline",
        "n (T/B)",
        "mean T",
        "mean B",
        "Δ",
        f"{settings.confidence:.0%} Welch CI of Δ",
        "p (Δ≠0)",
        "p support (Holm)",
        "p contra (Holm)",
        f"MDE ({settings.power:.0%})",
        "seeds for it",
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


def _p_pair(raw: float, adjusted: float) -> str:
    return "n/a" if math.isnan(raw) else f"{raw:.3f} ({adjusted:.3f})"


def _comparison_cells(c: Comparison) -> list[str]:
    ci = (
        render.DASH
        if math.isnan(c.ci[0])
        else (f"[{render.signed(c.ci[0], 2)}, {render.signed(c.ci[1], 2)}]")
    )
    tested = c.status == TESTED
    return [
        c.task,
        c.treatment,
        c.baseline,
        f"{c.n_treatment}/{c.n_baseline}",
        _num(c.mean_treatment),
        _num(c.mean_baseline),
        render.DASH if math.isnan(c.delta) else render.signed(c.delta, 2),
        ci,
        _p(c.p_two_sided),
        _p_pair(c.p_support, c.p_support_holm) if tested else render.DASH,
        _p_pair(c.p_contradict, c.p_contradict_holm) if tested else render.DASH,
        _num(c.mde) if tested else render.DASH,
        str(c.seeds_needed) if c.seeds_needed is not None else render.DASH,
        c.verdict if c.status != LEFT_OUT else "left out",
        c.reason,
    ]


def to_markdown(results: Sequence[ClaimResult], settings: Settings) -> str:
    """Every claim: statement, source, verdict per backbone, rule, pairs and comparisons."""
    from bench.report.claims import WORDINGS

    lines = [
        "# Claims",
        "",
        "Verdicts on published claims, computed from the run records by `python -m bench "
        "report`. Δ is in points (×100) of each task's primary metric on its reported split. "
        "p support / p contra: the one-sided Welch p-value for and against the claim, Holm-"
        "adjusted over the claim's family in brackets. MDE: the smallest distance of Δ from the "
        "bound the test detects with the stated power at the observed seed spread; seeds for "
        "it: the seeds per side that would detect the observed distance.",
        "",
    ]
    claims: dict[str, list[ClaimResult]] = {}
    for result in results:
        claims.setdefault(result.claim.id, []).append(result)
    for claim_id, group in claims.items():
        claim = group[0].claim
        lines += [f"## {claim_id}", "", f"> {claim.statement}", ""]
        lines += [f"Wording: {WORDINGS[claim.wording]}.", ""]
        if claim.quote:
            lines += [f"Quote: “{claim.quote}”", ""]
        lines += [f"Source: {claim.source}", "", f"Decision rule: {claim.rule(settings)}", ""]
        for result in group:
            lines += [f"### Backbone `{result.backbone}`: **{result.verdict}**", ""]
            if result.protocol:
                lines += [f"Judged at: {result.protocol}.", ""]
            if result.verdict == NOT_ISSUED:
                lines += [f"{result.reason}.", ""]
            if result.comparisons:
                left = ", ".join(result.left_out_tasks) or "none"
                lines += [
                    f"Family: {result.family} comparison(s) over the tasks "
                    f"{', '.join(result.counted_tasks) or 'none'}; left out as not learned: "
                    f"{left}.",
                    "",
                ]
            for pair in result.pairs:
                lines.append(
                    f"- {pair.treatment} vs {pair.baseline}: **{pair.verdict}** ({pair.reason})"
                )
            if not result.pairs:
                lines.append(f"- {result.reason}")
            lines.append("")
            if result.comparisons:
                rows = [_comparison_cells(c) for c in result.comparisons]
                lines += [render.markdown_table(_headers(settings), rows), ""]
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
            "protocol": result.protocol,
            "family": result.family,
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
                    "status": c.status,
                    "n_treatment": c.n_treatment,
                    "n_baseline": c.n_baseline,
                    "mean_treatment": c.mean_treatment,
                    "mean_baseline": c.mean_baseline,
                    "delta": c.delta,
                    "ci_low": c.ci[0],
                    "ci_high": c.ci[1],
                    "welch_t": c.welch_t,
                    "p_two_sided": c.p_two_sided,
                    "p_support": c.p_support,
                    "p_support_holm": c.p_support_holm,
                    "p_contradict": c.p_contradict,
                    "p_contradict_holm": c.p_contradict_holm,
                    "mde": c.mde,
                    "seeds_needed": c.seeds_needed,
                    "verdict": c.verdict,
                    "reason": c.reason,
                }
            )
    frame = pd.DataFrame.from_records(records)
    for column in ("n_treatment", "n_baseline", "seeds_needed", "family"):
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    return frame


SUMMARY_HEADERS = (
    "claim",
    "backbone",
    "verdict",
    "judged at",
    "tasks counted",
    "left out: not learned",
    "statement",
)


def summary_rows(results: Sequence[ClaimResult]) -> list[list[str]]:
    """One row per claim and backbone for the index (see :data:`SUMMARY_HEADERS`)."""
    return [
        [
            r.claim.id,
            r.backbone,
            f"**{r.verdict}**",
            r.protocol or render.DASH,
            ", ".join(r.counted_tasks) or render.DASH,
            ", ".join(r.left_out_tasks) or render.DASH,
            r.claim.statement,
        ]
        for r in results
    ]
