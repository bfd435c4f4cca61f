"""The budget a run was trained at: the suite that planned it and that suite's budget marker.

Runs record both (``config.suite``, ``config.budget``; see :data:`bench.suites.BUDGETS`).
Records written before the marker existed carry neither; for them the budget is inferred from
the shipped suites marked ``smoke``: a record belongs to such a suite when its task, method,
seed and backbone are among the suite's and its training and method configs hold every value
the suite's settings fix for that (task, method), where the record has the key at all (a setting
added to the suite after the record was written, such as ``precision``, cannot contradict it).
Inference only ever finds ``smoke`` (the direction that withholds verdicts); anything else stays
"not marked".
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

SMOKE = "smoke"
NOT_MARKED = "not marked"


@dataclass(frozen=True)
class RunBudget:
    """The suite (``""`` when unknown) and budget of one run, and whether it was inferred."""

    suite: str
    budget: str
    inferred: bool = False

    @property
    def text(self) -> str:
        """``smoke (suite cpu-mini)``, or ``not marked``: an unmarked budget names no suite, so
        that the same runs planned with or without a suite report the same."""
        if self.budget == NOT_MARKED:
            return NOT_MARKED
        suite = f"suite {self.suite}" if self.suite else "suite not recorded"
        how = ", inferred from the shipped suite's settings" if self.inferred else ""
        return f"{self.budget} ({suite}{how})"


def budget_texts(runs: Any) -> list[str]:
    """The distinct :attr:`RunBudget.text` of the rows of a run frame (``budget``,
    ``run_suite``, ``budget_inferred`` columns), in order of first appearance."""
    columns = zip(runs["run_suite"], runs["budget"], runs["budget_inferred"], strict=True)
    return list(dict.fromkeys(RunBudget(s, b, bool(i)).text for s, b, i in columns))


def run_budget(record: dict[str, Any]) -> RunBudget:
    """The budget of ``record`` (see the module docstring)."""
    config = record.get("config") or {}
    if config.get("budget") or config.get("suite"):
        return RunBudget(str(config.get("suite") or ""), str(config.get("budget") or NOT_MARKED))
    for suite in _smoke_suites():
        if _belongs(record, config, suite):
            return RunBudget(suite.name, SMOKE, inferred=True)
    return RunBudget("", NOT_MARKED)


@functools.cache
def _smoke_suites() -> tuple[Any, ...]:
    from bench.suites import builtin_suites

    return tuple(s for s in builtin_suites().values() if s.budget == SMOKE)


def _belongs(record: dict[str, Any], config: dict[str, Any], suite: Any) -> bool:
    task, method = str(record.get("task")), str(record.get("method"))
    checks = (
        (task, suite.tasks),
        (method, suite.methods),
        (record.get("seed"), suite.seeds),
        (record.get("backbone"), suite.backbones),
    )
    if any(values and value not in values for value, values in checks):
        return False
    train, method_values = suite.overrides(task, method)
    recorded_train = config.get("train") or {}
    recorded_method = config.get("method_config") or {}
    return all(k not in recorded_train or recorded_train[k] == v for k, v in train.items()) and all(
        k not in recorded_method or recorded_method[k] == v for k, v in method_values.items()
    )
