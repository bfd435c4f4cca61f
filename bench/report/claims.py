"""Claims from the literature (``claims.yaml``): what each one states, where it comes from,
and the numbers the verdict is decided with (:class:`ClaimSpec`, :class:`Settings`).

A claim says that the treatment methods beat each baseline method by a difference Δ inside an
interval (``lower``, ``upper``) in points, on enough tasks (``min_tasks``). It says whose words
its ``statement`` is (``wording``: the project brief's or the source's) and quotes the source
(``quote``). How a verdict is
decided from the runs is :mod:`bench.report.verdicts`; :meth:`ClaimSpec.rule` writes the rule
out in words, with the claim's numbers, for the report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UserError

DEFAULT_CLAIMS = Path(__file__).with_name("claims.yaml")
TOP_KEYS = ("settings", "claims")
SETTING_KEYS = ("confidence", "alpha", "power", "min_seeds")
CLAIM_KEYS = (
    "id",
    "statement",
    "wording",
    "quote",
    "source",
    "treatment",
    "baselines",
    "lower",
    "upper",
    "suite",
    "tasks",
    "min_tasks",
)
MIN_TASKS_WORDS = ("all", "majority")
WORDINGS = {
    "brief": "the project brief's wording of the claim",
    "source": "the claim as its source states it",
}
"""Whose words a claim's ``statement`` is."""


@dataclass(frozen=True)
class Settings:
    """How comparisons are tested; the same for every claim of a file."""

    confidence: float = field(
        default=0.95, metadata={"help": "Level of the two-sided Welch t-interval of Δ shown."}
    )
    alpha: float = field(
        default=0.05,
        metadata={"help": "Family-wise level of the Holm-adjusted one-sided Welch tests."},
    )
    power: float = field(
        default=0.8, metadata={"help": "Power of the minimum detectable difference shown."}
    )
    min_seeds: int = field(default=3, metadata={"help": "Fewest ok seeds per side to decide."})

    def __post_init__(self) -> None:
        if not 0.5 <= self.confidence < 1:
            raise UserError(f"settings.confidence must be in [0.5, 1), got {self.confidence!r}")
        if not 0 < self.alpha < 0.5:
            raise UserError(f"settings.alpha must be in (0, 0.5), got {self.alpha!r}")
        if not 0.5 <= self.power < 1:
            raise UserError(f"settings.power must be in [0.5, 1), got {self.power!r}")
        if self.min_seeds < 2:
            raise UserError(f"settings.min_seeds must be >= 2 got {self.min_seeds!r}")


@dataclass(frozen=True)
class ClaimSpec:
    """One claim: ``treatment`` beats each of ``baselines`` by Δ in (``lower``, ``upper``)
    points on at least ``min_tasks`` of the tasks (``tasks``, else the ``suite``'s, else all)."""

    id: str
    statement: str
    source: str
    treatment: tuple[str, ...]
    baselines: tuple[str, ...]
    lower: float
    upper: float | None = None
    suite: str | None = None
    tasks: tuple[str, ...] = ()
    min_tasks: int | str = "all"
    wording: str = field(default="source", metadata={"help": "Whose words: one of WORDINGS."})
    quote: str = field(default="", metadata={"help": "The source's own words, verbatim."})

    def __post_init__(self) -> None:
        from bench.errors import unknown_name_error
        from methods import method_names
        from tasks import get_task, suite_names

        where = f"claim '{self.id}'"
        if not self.id or not self.id.replace("_", "").replace("-", "").isalnum():
            raise UserError(f"claim id must be letters, digits, '_' or '-', got {self.id!r}")
        if not self.statement.strip():
            raise UserError(f"{where}: 'statement' is empty")
        if self.wording not in WORDINGS:
            raise UserError(
                f"{where}: unknown wording {self.wording!r}; valid: {', '.join(WORDINGS)}"
            )
        for name, methods in (("treatment", self.treatment), ("baselines", self.baselines)):
            if not methods:
                raise UserError(f"{where}: '{name}' lists no method")
            for method in methods:
                if method not in method_names():
                    raise unknown_name_error("method", method, method_names())
        overlap = sorted(set(self.treatment) & set(self.baselines))
        if overlap:
            raise UserError(f"{where}: {overlap} are both treatment and baseline")
        if not math.isfinite(self.lower):
            raise UserError(f"{where}: 'lower' must be a finite number, got {self.lower!r}")
        if self.upper is not None and not (math.isfinite(self.upper) and self.upper > self.lower):
            raise UserError(
                f"{where}: 'upper' must be a number above lower={self.lower:g}, got {self.upper!r}"
            )
        if self.suite is not None and self.suite not in suite_names():
            raise unknown_name_error("suite", self.suite, suite_names())
        if self.suite is not None and self.tasks:
            raise UserError(f"{where}: give 'suite' or 'tasks', not both")
        for task in self.tasks:
            get_task(task)
        valid_word = isinstance(self.min_tasks, str) and self.min_tasks in MIN_TASKS_WORDS
        valid_int = isinstance(self.min_tasks, int) and not isinstance(self.min_tasks, bool)
        if not (valid_word or (valid_int and self.min_tasks >= 1)):
            raise UserError(
                f"{where}: 'min_tasks' must be a positive integer or one of "
                f"{', '.join(MIN_TASKS_WORDS)}; got {self.min_tasks!r}"
            )

    def covers(self, task: str, suite: str) -> bool:
        """Whether ``task`` (of ``suite``) is one of the claim's tasks. A task whose file says
        ``claims: false`` is never counted."""
        from tasks import get_task, task_names

        if task in task_names() and not get_task(task).claims:
            return False
        if self.tasks:
            return task in self.tasks
        return self.suite is None or suite == self.suite

    def required(self, tasks_run: int) -> int:
        """How many supporting tasks a pair needs, given how many tasks were run."""
        if self.min_tasks == "all":
            return max(tasks_run, 1)
        if self.min_tasks == "majority":
            return tasks_run // 2 + 1
        return int(self.min_tasks)

    def interval(self) -> str:
        if self.upper is None:
            return f"Δ > {self.lower:g}"
        return f"{self.lower:g} < Δ < {self.upper:g}"

    def rule(self, settings: Settings) -> str:
        """The decision rule in words, with this claim's numbers."""
        scope = (
            "the tasks " + ", ".join(self.tasks)
            if self.tasks
            else f"the {self.suite} tasks that were run"
            if self.suite
            else "every task that was run"
        )
        need = {
            "all": "every remaining task supports it",
            "majority": "a majority of the remaining tasks support it",
        }.get(str(self.min_tasks), f"at least {self.min_tasks} of the remaining tasks support it")
        a = f"{settings.alpha:g}"
        if self.upper is None:
            support = f"H0: Δ ≤ {self.lower:g}"
            against = f"H0: Δ ≥ {self.lower:g}"
        else:
            support = (
                f"both H0: Δ ≤ {self.lower:g} and H0: Δ ≥ {self.upper:g} (the larger of the "
                f"two p-values counts)"
            )
            against = (
                f"H0: Δ ≥ {self.lower:g} or H0: Δ ≤ {self.upper:g} (twice the smaller p-value, "
                f"Bonferroni over the two ways)"
            )
        return (
            f"Δ = mean(treatment) − mean(baseline) over seeds, in points (×100) of each task's "
            f"primary metric on its reported split, for every pair of a treatment "
            f"({', '.join(self.treatment)}) and a baseline ({', '.join(self.baselines)}), on "
            f"each backbone separately, over {scope}. "
            f"Left out: a task where either method's cell is not learned (every ok run at the "
            f"level of a constant prediction: accuracy at or below the majority-class rate of "
            f"the reported split, Matthews correlation 0 or undefined, Pearson/Spearman "
            f"undefined, F1 0); it counts neither for nor against the claim and is listed. "
            f"Each remaining comparison is a Welch one-sided t-test (unequal variances, "
            f"Welch–Satterthwaite degrees of freedom): it supports the claim when it rejects "
            f"{support}, and contradicts it when it rejects {against}. "
            f"The family is every remaining (pair, task) comparison of the claim on the "
            f"backbone; Holm–Bonferroni adjusts the support p-values over the family, and "
            f"separately the contradiction p-values, and a test rejects when its adjusted "
            f"p-value is below α = {a}, so that in each direction the chance of any false "
            f"rejection in the family is at most {a}. A comparison with fewer than "
            f"{settings.min_seeds} ok seeds on a side, or with zero variance on both sides, "
            f"cannot be tested: it stays in the family with p = 1 and is inconclusive. "
            f"A pair supports the claim when {need}; it contradicts the claim when the "
            f"supporting and inconclusive tasks together are fewer than that; otherwise, or "
            f"when too few tasks remain, it is inconclusive. The claim is supported on a "
            f"backbone when every pair supports it, contradicted when any pair contradicts it, "
            f"and inconclusive otherwise. No verdict is issued from runs trained at a budget "
            f"marked smoke. Shown with each comparison: the two-sided "
            f"{settings.confidence:.0%} Welch t-interval of Δ, and the minimum detectable "
            f"distance of Δ from the bound (the distance the one-sided test at α/m, m the "
            f"family size, detects with power {settings.power:g} at the observed seed "
            f"variances; noncentral t) with the seeds per side that would detect the observed "
            f"distance."
        )


# --- loading -------------------------------------------------------------------------------------


def load_claims(path: Path | None = None) -> tuple[Settings, tuple[ClaimSpec, ...]]:
    """Read a claims YAML file (default: the packaged ``claims.yaml``); UserError naming the
    bad key or value and listing the valid ones."""
    import yaml

    path = Path(path) if path is not None else DEFAULT_CLAIMS
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UserError(f"cannot read the claims file {path}: {error}") from None
    except yaml.YAMLError as error:
        raise UserError(f"claims file {path} is not valid YAML: {error}") from None
    data = _mapping(data, f"claims file {path}", TOP_KEYS)
    settings = _settings(_mapping(data.get("settings") or {}, f"{path}: settings", SETTING_KEYS))
    entries = data.get("claims")
    if not isinstance(entries, list) or not entries:
        raise UserError(f"claims file {path}: 'claims' must be a non-empty list of claims")
    claims = tuple(_claim(entry, f"{path}: claims[{i}]") for i, entry in enumerate(entries))
    ids = [c.id for c in claims]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise UserError(f"claims file {path}: duplicate claim id(s) {duplicates}")
    return settings, claims


def _mapping(data: Any, where: str, allowed: Sequence[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping with keys {', '.join(allowed)}")
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {unknown}; allowed keys: {', '.join(allowed)}")
    return data


def _settings(data: dict[str, Any]) -> Settings:
    values = {}
    for key, value in data.items():
        expected = float if key in ("confidence", "alpha", "power") else int
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"settings.{key} must be a number, got {value!r}")
        if expected is int and not float(value).is_integer():
            raise UserError(f"settings.{key} must be an integer, got {value!r}")
        values[key] = expected(value)
    return Settings(**values)


def _claim(entry: Any, where: str) -> ClaimSpec:
    data = _mapping(entry, where, CLAIM_KEYS)
    missing = [
        k for k in ("id", "statement", "source", "treatment", "baselines", "lower") if k not in data
    ]
    if missing:
        raise UserError(f"{where}: missing key(s) {missing}; allowed keys: {', '.join(CLAIM_KEYS)}")
    where = f"{where} ('{data['id']}')"
    return ClaimSpec(
        id=_text(data["id"], where, "id"),
        statement=_text(data["statement"], where, "statement"),
        source=_text(data["source"], where, "source"),
        treatment=_names(data["treatment"], where, "treatment"),
        baselines=_names(data["baselines"], where, "baselines"),
        lower=_number(data["lower"], where, "lower"),
        upper=None if data.get("upper") is None else _number(data["upper"], where, "upper"),
        suite=None if data.get("suite") is None else _text(data["suite"], where, "suite"),
        tasks=_names(data.get("tasks") or [], where, "tasks"),
        min_tasks=data.get("min_tasks", "all"),
        wording=_text(data.get("wording", "source"), where, "wording"),
        quote=_text(data.get("quote", ""), where, "quote").strip(),
    )


def _text(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise UserError(f"{where}: '{key}' must be text, got {value!r}")
    return str(value)


def _names(value: Any, where: str, key: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise UserError(f"{where}: '{key}' must be a name or a list of names, got {value!r}")
    return tuple(items)


def _number(value: Any, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(f"{where}: '{key}' must be a number (points), got {value!r}")
    return float(value)
