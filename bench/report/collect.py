"""Read run records and flatten them into one row per run, ready for tables, claims and plots.

Every file under ``RESULTS/runs/*.json`` is read. A file that is not JSON, or lacks the fields a
report needs, is kept as :class:`Unreadable` and listed in the report: nothing is dropped
silently. Scores are the task's primary metric on its headline split, times 100 (papers print
points); the headline split is ``test`` when the task reports it, else its first reported split.

Rows of a table are *methods*, split into *variants* only where one task holds runs of the same
method with different configurations (say ``injection=kv`` and ``injection=hidden``). Values that
differ only from task to task (a per-task learning rate) do not split a row; the footnote lists
them instead.

Each row also says whether the run scored at chance (:mod:`bench.report.learned`: ``at_chance``
True, False or None when the record cannot tell, ``chance_levels``) and the budget it was
trained at (:mod:`bench.report.budget`: ``budget``, ``run_suite``, ``budget_inferred``).

Searches (:mod:`bench.search`): where ``RESULTS/searches/`` holds search records, the runs of a
search count only as its winner's final runs; every other search run is set aside (listed in
:attr:`Collection.set_aside`, shown by the search report), so tables, plots and claims compare
tuned methods. Runs selected on the reported dev split (``protocol: official-dev``) always carry
``[official-dev]`` in their row label, so they never share a cell or a claim with others.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

REQUIRED_FIELDS = ("key", "status", "task", "method", "seed", "backbone")
STATUS_OK = "ok"
#: Order in which non-ok statuses are listed in a cell.
NOT_OK_ORDER = ("failed", "diverged", "timeout")
#: Row order of the tables: the paper's methods first, then peft's comparison rows.
METHOD_ORDER = (
    "full_finetune",
    "prompt_tuning",
    "p_tuning",
    "p_tuning_v2",
    "prefix_tuning",
    "peft_prompt_tuning",
    "peft_p_tuning",
    "peft_prefix_tuning",
)
SUITE_ORDER = ("glue", "ner")
#: The flat config key of a run's selection protocol (see bench/protocols.py).
PROTOCOL_KEY = "train.protocol"
COLUMNS = (
    "key",
    "backbone",
    "backbone_identity",
    "task",
    "suite",
    "method",
    "seed",
    "status",
    "split",
    "metric",
    "score",
    "trainable",
    "stored",
    "head",
    "backbone_params",
    "pct",
    "formula",
    "matches",
    "config",
    "selection_split",
    "data_identity",
    "finished_at",
    "error",
    "metrics",
    "at_chance",
    "budget",
    "run_suite",
    "budget_inferred",
    "chance_levels",
)


@dataclass(frozen=True)
class Unreadable:
    """A record file the report could not use, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class Collection:
    """The readable records (sorted by key) and the files that could not be used."""

    records: tuple[dict[str, Any], ...]
    unreadable: tuple[Unreadable, ...]
    set_aside: tuple[str, ...] = ()  # keys of search runs that are not a winner's final runs


def load_records(results: Path) -> Collection:
    """Every record under ``results/runs``; UserError when there is no record at all."""
    runs = Path(results) / "runs"
    if not runs.is_dir():
        raise UserError(
            f"--results {results}: no runs/ folder with records (expected {runs}/<key>.json, "
            f"written by `python -m bench run --output {results}`)"
        )
    records, unreadable = [], []
    for path in sorted(runs.glob("*.json")):
        name = f"runs/{path.name}"
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            unreadable.append(Unreadable(name, f"not readable JSON: {error}"))
            continue
        missing = [f for f in REQUIRED_FIELDS if not isinstance(record, dict) or f not in record]
        if missing:
            unreadable.append(Unreadable(name, f"missing field(s) {', '.join(missing)}"))
            continue
        if isinstance(record["seed"], bool) or not isinstance(record["seed"], int):
            unreadable.append(Unreadable(name, f"seed {record['seed']!r} is not an integer"))
            continue
        records.append(record)
    if not records and not unreadable:
        raise UserError(f"no run records in {runs}; run `python -m bench run` first")
    records.sort(key=lambda r: str(r["key"]))
    kept, set_aside = only_selected(Path(results), records)
    return Collection(tuple(kept), tuple(unreadable), tuple(set_aside))


def only_selected(
    results: Path, records: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[str]]:
    """(records a table may use, keys set aside): a run of a search is kept only when it is
    one of its cell's winner's final runs (a cell still searching contributes nothing)."""
    from bench.search import selected_keys

    by_key = {str(r["key"]): r for r in records}
    in_search, selected = selected_keys(results, by_key.get)
    kept = [r for r in records if str(r["key"]) not in in_search or str(r["key"]) in selected]
    aside = sorted(str(r["key"]) for r in records if str(r["key"]) in in_search - selected)
    return kept, aside


def headline(record: dict[str, Any]) -> tuple[str, str]:
    """(split, metric) a table reports for this record's task: ``test`` if reported, else the
    first reported split; the task's primary metric. Taken from the record's protocol, so that
    records stay readable if the task file changes; the task registry is the fallback."""
    protocol = record.get("protocol") or {}
    splits = list(protocol.get("report_splits") or [])
    metric = protocol.get("primary_metric")
    if not splits or not metric:
        from tasks import get_task

        spec = get_task(record["task"])
        splits, metric = list(spec.report_splits), spec.primary_metric
    return ("test" if "test" in splits else splits[0]), metric


def task_suite(task: str) -> str:
    """The suite a task belongs to ("" when the task is not registered any more)."""
    from tasks import task_names

    for suite in SUITE_ORDER:
        if task in task_names(suite):
            return suite
    try:
        from tasks import get_task

        return get_task(task).suite
    except UserError:
        return ""


def flat_config(record: dict[str, Any]) -> dict[str, Any]:
    """The settings that change the run's result, in one dict: the method config (bare keys) and
    the training config (``train.`` keys). A key an older record lacks counts as its default
    (records written before a field existed ran with it at its default), and fields proven
    result-neutral (:data:`bench.config.NEVER_KEYED`) are left out, so that neither splits a row.
    """
    from bench.config import NEVER_KEYED, TrainConfig

    config = record.get("config") or {}
    flat = {**_method_defaults(str(record.get("method"))), **(config.get("method_config") or {})}
    train = {**_defaults(TrainConfig), **(config.get("train") or {})}
    flat.update({f"train.{k}": v for k, v in train.items() if k not in NEVER_KEYED})
    return flat


def _method_defaults(method: str) -> dict[str, Any]:
    """Default config of a registered method ({} for a name no longer registered)."""
    from methods import get_method

    try:
        return _defaults(get_method(method).config_cls)
    except UserError:
        return {}


def _defaults(cls: type) -> dict[str, Any]:
    """The dataclass ``cls``'s fields that have a plain default, with that default."""
    import dataclasses

    return {
        f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING
    }


def score_of(record: dict[str, Any], split: str, metric: str) -> float:
    """The record's ``metric`` on ``split`` in points (×100); NaN when absent or not finite."""
    value = ((record.get("metrics") or {}).get(split) or {}).get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return math.nan
    return 100.0 * float(value)


def _row(record: dict[str, Any], suites: dict[str, str]) -> dict[str, Any]:
    from bench.report.budget import run_budget
    from bench.report.learned import at_chance, levels_kind

    split, metric = headline(record)
    ok = record["status"] == STATUS_OK
    budget = run_budget(record)
    params = (record.get("params") or {}) if ok else {}
    config = record.get("config") or {}
    error = record.get("error") or {}
    return {
        "key": str(record["key"]),
        "backbone": str(record["backbone"]),
        "backbone_identity": str(config.get("backbone_identity") or ""),
        "task": str(record["task"]),
        "suite": suites[str(record["task"])],
        "method": str(record["method"]),
        "seed": int(record["seed"]),
        "status": str(record["status"]),
        "split": split,
        "metric": metric,
        "score": score_of(record, split, metric) if ok else math.nan,
        "trainable": params.get("trainable"),
        "stored": params.get("stored"),
        "head": params.get("head"),
        "backbone_params": params.get("backbone"),
        "pct": params.get("trainable_pct_of_backbone"),
        "formula": params.get("formula"),
        "matches": params.get("matches_formula"),
        "config": json.dumps(flat_config(record), sort_keys=True),
        "selection_split": str((record.get("protocol") or {}).get("selection_split") or ""),
        "data_identity": str(config.get("data_identity") or ""),
        "finished_at": str(record.get("finished_at") or ""),
        "error": f"{error.get('type', '')}: {error.get('message', '')}".strip(": ")
        if error
        else "",
        "metrics": json.dumps(record.get("metrics") or {} if ok else {}, sort_keys=True),
        "at_chance": at_chance(record, split, metric) if ok else None,
        "budget": budget.budget,
        "run_suite": budget.suite,
        "budget_inferred": budget.inferred,
        "chance_levels": levels_kind(record, split),
    }


def run_frame(records: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run (see :data:`COLUMNS`) plus ``row`` (the table row it belongs to),
    deduplicated (see :func:`deduplicate`) and sorted by backbone, task, row and seed."""
    import pandas as pd

    suites = {task: task_suite(task) for task in sorted({str(r["task"]) for r in records})}
    frame = pd.DataFrame([_row(r, suites) for r in records], columns=list(COLUMNS))
    frame["row"] = row_labels(frame)
    frame = deduplicate(frame)
    return sort_runs(frame)


def row_labels(frame: pd.DataFrame) -> list[str]:
    """The table row of each run: the method name, ``(official)`` when the run used the method's
    official profile, plus ``[key=value, ...]`` for the other config keys that differ between
    runs of that method on the same task and backbone."""
    labels = [""] * len(frame)
    positions = {index: i for i, index in enumerate(frame.index)}
    for (_, method), group in frame.groupby(["backbone", "method"], sort=True):
        keys = sorted(set(_variant_keys(group)) | set(_choice_keys(str(method), group)))
        for index, config in zip(group.index, group["config"], strict=True):
            flat = json.loads(config)
            # a non-default profile (``official``) always shows, even without a variant to tell
            name = f"{method} ({flat['profile']})" if flat.get("profile", "project") != (
                "project"
            ) else str(method)
            keys_left = [k for k in keys if k != "profile"]
            suffix = ", ".join(f"{k}={_short(flat.get(k))}" for k in keys_left)
            label = f"{name} [{suffix}]" if keys_left else name
            if flat.get(PROTOCOL_KEY) == "official-dev" and PROTOCOL_KEY not in keys:
                label += " [official-dev]"
            labels[positions[index]] = label
    return labels


def _variant_keys(group: pd.DataFrame) -> list[str]:
    keys: set[str] = set()
    for _, task_group in group.groupby("task", sort=True):
        configs = [json.loads(c) for c in sorted(set(task_group["config"]))]
        if len(configs) < 2:
            continue
        for key in set().union(*configs):
            if len({json.dumps(c.get(key), sort_keys=True) for c in configs}) > 1:
                keys.add(key)
    return sorted(keys)


def _choice_keys(method: str, group: pd.DataFrame) -> list[str]:
    """Method options that choose a variant (string-valued fields: injection, reparam, ...) and
    differ from the method's default in some run: a run of ``p_tuning_v2`` with
    ``injection=hidden`` is labelled so even when no other variant ran beside it."""
    from bench.errors import UserError
    from methods import get_method

    try:
        defaults = get_method(method).config_cls().to_dict()
    except UserError:  # a record of a method that is no longer registered
        return []
    keys = set()
    for config in set(group["config"]):
        flat = json.loads(config)
        for key, default in defaults.items():
            if isinstance(default, str) and key in flat and flat[key] != default:
                keys.add(key)
    return sorted(keys)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


def deduplicate(frame: pd.DataFrame) -> pd.DataFrame:
    """One run per (backbone, task, row, seed): an ok run wins over a failed one, then the
    latest ``finished_at``, then the smallest key. The losers' (backbone, key) pairs go to
    ``frame.attrs["superseded"]`` so that the footnote can say which were set aside."""
    ordered = frame.assign(_bad=frame["status"] != STATUS_OK).sort_values(
        ["_bad", "finished_at", "key"], ascending=[True, False, True], kind="mergesort"
    )
    duplicated = ordered.duplicated(["backbone", "task", "row", "seed"], keep="first")
    kept = ordered[~duplicated].drop(columns="_bad")
    losers = ordered.loc[duplicated, ["backbone", "key"]]
    kept.attrs["superseded"] = sorted(zip(losers["backbone"], losers["key"], strict=True))
    return kept


def method_rank(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method), "") if method in METHOD_ORDER else (99, method)


def task_rank(task: str, suite: str) -> tuple[int, str]:
    rank = SUITE_ORDER.index(suite) if suite in SUITE_ORDER else len(SUITE_ORDER)
    return (rank, task)


def sort_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by backbone, task (suite order), method order, row label, seed."""
    superseded = frame.attrs.get("superseded", [])
    if frame.empty:
        return frame
    keys = frame.apply(
        lambda r: (
            r["backbone"],
            task_rank(r["task"], r["suite"]),
            method_rank(r["method"]),
            r["row"],
            r["seed"],
            r["key"],
        ),
        axis=1,
    )
    out = frame.iloc[sorted(range(len(frame)), key=lambda i: keys.iloc[i])].reset_index(drop=True)
    out.attrs["superseded"] = superseded
    return out


def ordered_rows(frame: pd.DataFrame) -> list[str]:
    """Row labels of ``frame`` in table order."""
    pairs = {(m, r) for m, r in zip(frame["method"], frame["row"], strict=True)}
    return [r for m, r in sorted(pairs, key=lambda p: (method_rank(p[0]), p[1]))]


def ordered_tasks(frame: pd.DataFrame) -> list[str]:
    """Tasks of ``frame`` in column order (suite order, then name)."""
    pairs = {(t, s) for t, s in zip(frame["task"], frame["suite"], strict=True)}
    return [t for t, s in sorted(pairs, key=lambda p: task_rank(p[0], p[1]))]


def planned_seeds(frame: pd.DataFrame, task: str) -> list[int]:
    """Seeds run for ``task`` by any method in ``frame`` (one backbone): the denominator of a
    cell. A method missing one of them shows it as *missing*."""
    return sorted({int(s) for s in frame.loc[frame["task"] == task, "seed"]})
