"""Claim verdicts as evidence: Welch intervals and tests, Holm over a claim's family, power,
not-learned cells left out, smoke budgets withheld, chance levels, and the rule's error rates
measured by simulation (2,000 simulated 5-vs-5 comparisons per case)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import stats as scipy_stats

from bench.chance import split_levels
from bench.errors import UserError
from bench.report import budget, claims, collect, learned, simulate, stats, tables, verdicts
from bench.suites import builtin_suites, parse_suite
from tests.test_report import record

ALPHA = simulate.ALPHA
#: Monte Carlo margin of a rate estimated from 2,000 draws at ALPHA: two standard errors.
MARGIN = 2 * math.sqrt(ALPHA * (1 - ALPHA) / simulate.SIMULATIONS)


def claim_frame(
    scores: dict[tuple[str, str], list[float]], budget_marker: str | None = None, **fields: Any
):
    """Records from {(method, task): [score per seed, in points]}; ``budget_marker`` goes into
    each record's config as a suite's budget would; ``fields`` replace record fields."""
    records = []
    for (method, task), values in scores.items():
        for i, value in enumerate(values):
            r = record(task, method, 13 + i, value / 100)
            if budget_marker is not None:
                r["config"] |= {"suite": "cpu-mini", "budget": budget_marker}
            records.append(r | fields)
    return collect.run_frame(records)


def spec(**changes: Any) -> claims.ClaimSpec:
    base = {
        "id": "gain",
        "statement": "P-Tuning v2 gains 2-5 points over fine-tuning.",
        "source": "test",
        "treatment": ("p_tuning_v2",),
        "baselines": ("full_finetune",),
        "lower": 2.0,
        "upper": 5.0,
        "suite": "glue",
        "min_tasks": 2,
    }
    return claims.ClaimSpec(**{**base, **changes})


def verdict_of(scores, claim: claims.ClaimSpec, budget_marker: str | None = None):
    frame = claim_frame(scores, budget_marker)
    (result,) = verdicts.evaluate(frame, [claim], claims.Settings())
    return result


FT = [80.0, 80.2, 79.8, 80.1, 79.9]
GAIN = [83.0, 83.2, 82.8, 83.1, 82.9]
LOSS = [77.0, 77.2, 76.8, 77.1, 76.9]


def on(tasks: tuple[str, ...], treatment: list[float], baseline: list[float] = FT) -> dict:
    scores = {}
    for task in tasks:
        scores[("full_finetune", task)] = baseline
        scores[("p_tuning_v2", task)] = treatment
    return scores


# --- the rule on constructed runs -----------------------------------------------------------------


def test_claim_supported_with_welch_interval_and_holm() -> None:
    result = verdict_of(on(("sst2", "rte"), GAIN), spec())
    assert result.verdict == verdicts.SUPPORTED and result.family == 2
    c = result.comparisons[0]
    assert c.delta == pytest.approx(3.0)
    assert 2.0 < c.ci[0] < 3.0 < c.ci[1] < 5.0
    assert c.p_support_holm < ALPHA and c.p_contradict_holm > 0.5
    assert c.reason.startswith("Holm p ") and "2 < Δ < 5" in c.reason
    assert result.protocol.startswith("budget not marked; seeds 13, 14, 15, 16, 17")


def test_claim_contradicted_below_and_above() -> None:
    result = verdict_of(on(("sst2", "rte"), LOSS), spec())
    assert result.verdict == verdicts.CONTRADICTED
    assert all("Δ < 2 or Δ > 5" in c.reason for c in result.comparisons)
    above = [90.0, 90.2, 89.8, 90.1, 89.9]
    assert verdict_of(on(("sst2", "rte"), above), spec()).verdict == verdicts.CONTRADICTED


def test_few_seeds_and_zero_variance_are_untestable_never_significant() -> None:
    result = verdict_of(on(("sst2", "rte"), GAIN[:2]), spec())
    assert result.verdict == verdicts.INCONCLUSIVE
    assert all(c.status == verdicts.UNTESTABLE for c in result.comparisons)
    assert all("3 per side needed" in c.reason for c in result.comparisons)
    # both sides constant and learned (above the 50% majority rate): Δ = 3 exactly, but no test
    constant = on(("sst2", "rte"), [83.0] * 5, [80.0] * 5)
    result = verdict_of(constant, spec())
    assert result.verdict == verdicts.INCONCLUSIVE
    for c in result.comparisons:
        assert c.status == verdicts.UNTESTABLE and "zero variance on both sides" in c.reason
        assert math.isnan(c.p_support) and c.p_support_holm == 1.0
    assert math.isnan(stats.p_greater([3.0] * 3, [0.0] * 3, 2.0))
    assert math.isnan(stats.p_less([3.0] * 3, [0.0] * 3, 4.0))


def test_p_of_no_difference_is_one_at_delta_zero() -> None:
    assert stats.welch([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]).p_two_sided == 1.0
    assert stats.welch([0.0] * 3, [0.0] * 3).p_two_sided == 1.0  # zero variance, Δ = 0
    assert math.isnan(stats.welch([1.0] * 3, [0.0] * 3).p_two_sided)  # zero variance, Δ ≠ 0
    result = verdict_of(on(("sst2", "rte"), [79.0, 80.0, 81.0], [81.0, 80.0, 79.0]), spec())
    assert all(c.p_two_sided == 1.0 for c in result.comparisons)


def test_welch_interval_is_the_t_interval_on_satterthwaite_df() -> None:
    a, b = [83.0, 84.5, 82.0, 85.0, 83.5], [80.0, 79.0, 80.5]
    test = stats.welch(a, b)
    va, vb = np.var(a, ddof=1) / 5, np.var(b, ddof=1) / 3
    df = (va + vb) ** 2 / (va**2 / 4 + vb**2 / 2)
    half = scipy_stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    delta = np.mean(a) - np.mean(b)
    assert test.df == pytest.approx(df) and test.se == pytest.approx(math.sqrt(va + vb))
    assert test.ci == pytest.approx((delta - half, delta + half))
    assert stats.p_greater(a, b, 2.0) == pytest.approx(
        scipy_stats.t.sf((delta - 2.0) / math.sqrt(va + vb), df)
    )


def test_holm_adjustment_and_its_use_over_a_claims_family() -> None:
    assert stats.holm([0.01, 0.04, 0.03, math.nan]) == pytest.approx([0.04, 0.09, 0.09, 1.0])
    assert stats.holm([0.2, 0.01]) == pytest.approx([0.2, 0.02])
    # Each task alone supports Δ > 2 (one-sided p about 0.02), but three of them form a family
    # of three: Holm's smallest threshold is α/3, and none passes it.
    weak = [82.0, 84.5, 83.0, 85.5, 84.0]
    claim = spec(upper=None, min_tasks=1)
    (single,) = verdict_of(on(("sst2",), weak), claim).comparisons
    assert single.p_support < ALPHA and single.verdict == verdicts.SUPPORTED
    result = verdict_of(on(("sst2", "rte", "mrpc"), weak), claim)
    assert result.family == 3 and result.verdict == verdicts.INCONCLUSIVE
    raw = [c.p_support for c in result.comparisons]
    assert [c.p_support_holm for c in result.comparisons] == pytest.approx(stats.holm(raw))
    assert all(c.p_support < ALPHA <= c.p_support_holm for c in result.comparisons)


# --- not learned --------------------------------------------------------------------------------


def test_not_learned_cells_are_left_out_and_listed() -> None:
    scores = on(("sst2", "rte"), GAIN)
    scores |= {("full_finetune", "cola"): [0.0] * 5, ("p_tuning_v2", "cola"): [0.0] * 5}
    result = verdict_of(scores, spec())
    cola = next(c for c in result.comparisons if c.task == "cola")
    assert cola.status == verdicts.LEFT_OUT and cola.not_learned == ("p_tuning_v2", "full_finetune")
    assert result.verdict == verdicts.SUPPORTED and result.family == 2
    assert result.left_out_tasks == ("cola",) and result.counted_tasks == ("rte", "sst2")
    (pair,) = result.pairs
    assert pair.left_out == ("cola",) and "1 left out as not learned (cola)" in pair.reason
    # One side at the majority rate (50% here) is enough to leave the task out; "all" then
    # needs only the remaining tasks.
    scores[("p_tuning_v2", "rte")] = [50.0, 49.0, 50.0, 48.0, 50.0]
    result = verdict_of(scores, spec(lower=-1.0, upper=None, min_tasks="all"))
    assert result.left_out_tasks == ("cola", "rte") and result.verdict == verdicts.SUPPORTED
    text = verdicts.to_markdown([result], claims.Settings())
    assert "left out as not learned: cola, rte" in text


def test_at_chance_per_metric_with_and_without_recorded_levels() -> None:
    r = record("sst2", "p_tuning_v2", 13, 0.52)
    assert learned.at_chance(r, "validation", "accuracy") is False  # majority rate 0.5
    r["chance"]["validation"] = {"majority_rate": 0.52, "constant_predictions": False}
    assert learned.at_chance(r, "validation", "accuracy") is True
    r["chance"]["validation"] = {"majority_rate": 0.4, "constant_predictions": True}
    assert learned.at_chance(r, "validation", "accuracy") is True
    cola = record("cola", "p_tuning_v2", 13, 0.0)
    assert learned.at_chance(cola, "validation", "matthews_correlation") is True
    cola["metrics"]["validation"]["matthews_correlation"] = 0.21
    assert learned.at_chance(cola, "validation", "matthews_correlation") is False
    stsb = record("stsb", "p_tuning_v2", 13, math.nan)
    stsb["metrics"]["validation"] = {"pearson": math.nan}
    assert learned.at_chance(stsb, "validation", "pearson") is True
    conll = record("conll2003", "p_tuning_v2", 13, 0.0)
    assert learned.at_chance(conll, "test", "f1") is True
    # Older records without chance levels: judged from the metrics alone.
    old = record("mrpc", "p_tuning_v2", 13, 0.685)
    del old["chance"]
    old["metrics"]["validation"]["f1"] = 2 * 0.685 / 1.685  # the F1 of predicting "yes" always
    assert learned.at_chance(old, "validation", "accuracy") is True
    old["metrics"]["validation"]["f1"] = 0.75
    assert learned.at_chance(old, "validation", "accuracy") is False
    del old["metrics"]["validation"]["f1"]
    assert learned.at_chance(old, "validation", "accuracy") is None
    assert learned.levels_kind(old, "validation") == learned.NONE
    old["chance"] = {"validation": {"majority_rate": 0.685}}
    assert learned.at_chance(old, "validation", "accuracy") is True
    assert learned.levels_kind(old, "validation") == learned.MAJORITY_ONLY


def test_split_levels_from_predictions() -> None:
    levels = split_levels("classification", [1, 1, 1, 1], [0, 1, 1, 1])
    assert levels == {
        "examples": 4,
        "majority_rate": 0.75,
        "constant_predictions": True,
        "distinct_predictions": 1,
    }
    assert split_levels("regression", [0.2, 0.2], [0.1, 0.9])["majority_rate"] is None
    tags = split_levels("token_classification", [["O", "O"], ["O"]], [["B-PER", "O"], ["O"]])
    assert tags["constant_predictions"] and tags["majority_rate"] is None
    assert not split_levels("token_classification", [["O", "B-PER"]], [["O", "O"]])[
        "constant_predictions"
    ]


def test_tables_mark_not_learned_cells_and_do_not_rank_them() -> None:
    summary = stats.summarize([0.0, 0.0, 0.0])
    assert tables.Cell(summary, 3, not_learned=True).text == "0.0 ± 0.0 (3) not learned"
    scores = {("full_finetune", "cola"): [0.0] * 3, ("p_tuning_v2", "cola"): [10.0, 12.0, 11.0]}
    table = tables.build_accuracy(claim_frame(scores), "minilm")
    assert table.cells[("full_finetune", "cola")].not_learned
    assert ("full_finetune", "cola") not in table.marks
    assert table.marks[("p_tuning_v2", "cola")] == "best"
    frame = tables.to_frame(table)
    assert list(frame.loc[frame["task"] == "cola", "not_learned"]) == [True, False]


# --- budgets --------------------------------------------------------------------------------------


def test_smoke_budget_withholds_every_verdict_and_names_the_budget() -> None:
    scores = on(("sst2", "rte"), GAIN)
    result = verdict_of(scores, spec(), budget_marker="smoke")
    assert result.verdict == verdicts.NOT_ISSUED
    assert {p.verdict for p in result.pairs} == {verdicts.NOT_ISSUED}
    assert {c.verdict for c in result.comparisons} == {verdicts.NOT_ISSUED}
    assert "budget smoke (suite cpu-mini)" in result.protocol
    assert all("Holm p" not in c.reason for c in result.comparisons)  # no verdict in disguise
    assert result.pairs[0].reason == "2 remaining task(s)"
    issued = verdict_of(scores, spec(), budget_marker="full")
    assert issued.verdict == verdicts.SUPPORTED and "budget full (suite cpu-mini)" in (
        issued.protocol
    )


def test_budget_of_old_records_is_inferred_from_the_smoke_suites_settings() -> None:
    cpu_mini = builtin_suites()["cpu-mini"]
    assert cpu_mini.budget == "smoke"
    train = {"max_train_samples": 600, "epochs": 2, "batch_size": 16, "max_eval_samples": 400}
    old = record("sst2", "p_tuning_v2", 13, 0.6, method_config={"lr": 0.01}, train=train)
    old["config"]["train"]["max_length"] = 64
    assert budget.run_budget(old) == budget.RunBudget("cpu-mini", "smoke", inferred=True)
    old["config"]["train"]["epochs"] = 20
    assert budget.run_budget(old) == budget.RunBudget("", budget.NOT_MARKED)
    old["config"] |= {"suite": "glue", "budget": None}
    assert budget.run_budget(old).text == "not marked"  # the same with or without a suite
    old["config"] |= {"budget": "smoke"}
    assert budget.run_budget(old).text == "smoke (suite glue)"


def test_suite_budget_marker_is_validated() -> None:
    suite = parse_suite({"tasks": ["rte"], "budget": "full"}, "x.yaml")
    assert suite.budget == "full" and parse_suite({"tasks": ["rte"]}, "x.yaml").budget is None
    with pytest.raises(UserError, match="unknown budget 'tiny'; valid: smoke, full"):
        parse_suite({"tasks": ["rte"], "budget": "tiny"}, "x.yaml")


# --- power ----------------------------------------------------------------------------------------


def test_min_detectable_difference_has_the_stated_power() -> None:
    rng = np.random.default_rng(7)
    var_a, var_b, n = 4.0, 9.0, 5
    mde = stats.min_detectable(var_a, n, var_b, n, ALPHA)
    a = rng.normal(mde, math.sqrt(var_a), (20_000, n))
    b = rng.normal(0.0, math.sqrt(var_b), (20_000, n))
    power = float(np.mean(stats.p_greater(a, b, 0.0) < ALPHA))
    assert power == pytest.approx(0.8, abs=0.03)  # Welch's df approximation, and MC noise
    needed = stats.seeds_for_power(var_a, var_b, mde, ALPHA)
    assert needed in (n - 1, n, n + 1)
    assert stats.seeds_for_power(var_a, var_b, mde / 2, ALPHA) > needed
    assert math.isnan(stats.min_detectable(0.0, 5, 0.0, 5, ALPHA))
    result = verdict_of(on(("sst2",), [79.0, 84.0, 81.0, 86.0, 83.0]), spec(upper=None))
    (c,) = result.comparisons
    assert c.verdict == verdicts.INCONCLUSIVE and c.mde > 0 and c.seeds_needed > 5
    assert f"MDE of {c.mde:.2f}" in c.reason and f"about {c.seeds_needed} seeds" in c.reason


# --- error rates, simulated (bench.report.simulate; the rates are in docs/statistics.md) ---------


@pytest.mark.parametrize("kind", simulate.NOISES)
def test_supported_at_most_alpha_under_the_null_and_mostly_when_true(kind: str) -> None:
    for _, delta, bound, sd, seed in simulate.CASES[:3]:
        assert delta == bound
        assert simulate.supported_rate(delta, bound, kind, sd, seed) <= ALPHA + MARGIN
    assert simulate.supported_rate(2.0 + 3.0, 2.0, kind, sd=1.0, seed=4) >= 0.9


@pytest.mark.parametrize("kind", simulate.NOISES)
def test_holm_keeps_the_family_wise_error_of_a_claim(kind: str) -> None:
    """Five tasks all at the bound: "any task supported" happens in at most α of the claims,
    and without Holm in far more."""
    assert simulate.supported_rate(2.0, 2.0, kind, 1.0, 5, tasks=5) <= ALPHA + MARGIN
    assert simulate.supported_rate(2.0, 2.0, kind, 1.0, 5, tasks=5, holm=False) > 2 * ALPHA


def test_welch_interval_holds_its_coverage_where_the_bootstrap_did_not() -> None:
    covered = simulate.coverage(seeds=3, seed=11, n=200)
    assert covered["welch"] >= 0.95 - 2 * math.sqrt(0.05 * 0.95 / 200)
    assert covered["bootstrap"] < 0.9
