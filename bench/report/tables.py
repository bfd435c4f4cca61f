"""Accuracy tables, one per backbone, in Markdown, LaTeX and CSV.

Rows are methods (with their trainable share of the backbone), columns are tasks (primary metric
on the headline split, ×100) plus the average. A cell is ``mean ± std (n)`` over seeds, with the
sample standard deviation (ddof=1). Runs that failed, diverged, timed out or never ran are
counted in the cell itself, never dropped: ``78.1 ± 0.4 (2/3, 1 failed)``, ``failed (3/3)``, or
``—`` when the method never ran on the task. The best value of a column is bold and the second
underlined, ranked on the printed (rounded) mean so that what looks tied is tied. A cell whose
every ok run sits at the level of a constant prediction (:mod:`bench.report.learned`) is marked
``not learned`` and left out of that ranking.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bench.report import collect, learned, render
from bench.report.budget import budget_texts
from bench.report.stats import Summary, summarize

if TYPE_CHECKING:
    import pandas as pd

AVERAGE = "Average"
METRIC_ABBREVIATIONS = {
    "accuracy": "acc",
    "matthews_correlation": "mcc",
    "pearson": "pearson",
    "spearmanr": "spearman",
    "f1": "f1",
}
#: The budget lines of the footnote: (label, flat config key, how a value prints).
BUDGET_FIELDS = (
    ("training pool", "train.max_train_samples", lambda v: "all of train" if v is None else f"{v}"),
    ("epochs", "train.epochs", lambda v: f"{v}"),
    ("batch size", "train.batch_size", lambda v: f"{v}"),
    ("eval cap", "train.max_eval_samples", lambda v: "none" if v is None else f"{v}"),
    ("learning rate", "lr", lambda v: "default" if v is None else f"{v:g}"),
)


@dataclass(frozen=True)
class Cell:
    """One (row, task) cell: the ok scores' summary, and what happened to the other seeds."""

    summary: Summary
    planned: int
    not_ok: tuple[tuple[str, int], ...] = ()
    missing: int = 0
    not_learned: bool = False

    @property
    def has_value(self) -> bool:
        return self.summary.n > 0

    @property
    def text(self) -> str:
        text = self._counts_text
        return f"{text} not learned" if self.not_learned else text

    @property
    def _counts_text(self) -> str:
        n = self.summary.n
        details = [f"{c} {s}" for s, c in self.not_ok] + (
            [f"{self.missing} missing"] if self.missing else []
        )
        if n == 0 and not self.not_ok:
            return render.DASH
        if n == 0:
            if len(self.not_ok) == 1 and not self.missing:
                status, c = self.not_ok[0]
                return f"{status} ({c}/{self.planned})"
            return f"no ok run (0/{self.planned}, {', '.join(details)})"
        base = render.points(self.summary.mean)
        if n > 1:
            base += f" ± {render.points(self.summary.std)}"
        if not details:
            return f"{base} ({n})"
        return f"{base} ({n}/{self.planned}, {', '.join(details)})"


@dataclass(frozen=True)
class AccuracyTable:
    """The table of one backbone, ready to render."""

    backbone: str
    tasks: tuple[str, ...]
    headers: tuple[str, ...]
    rows: tuple[str, ...]
    labels: tuple[str, ...]
    cells: dict[tuple[str, str], Cell]
    averages: dict[str, float | None]
    marks: dict[tuple[str, str], str]
    footnote: tuple[str, ...]
    splits: dict[str, tuple[str, str]] = field(default_factory=dict)

    def cell_text(self, row: str, column: str) -> str:
        if column == AVERAGE:
            value = self.averages[row]
            return render.DASH if value is None else render.points(value)
        return self.cells[(row, column)].text


def build_accuracy(frame: pd.DataFrame, backbone: str) -> AccuracyTable:
    """The accuracy table of ``backbone`` from the run frame (:func:`collect.run_frame`)."""
    runs = frame[frame["backbone"] == backbone]
    tasks = collect.ordered_tasks(runs)
    rows = collect.ordered_rows(runs)
    cells = {(row, task): _cell(runs, row, task) for row in rows for task in tasks}
    averages = {row: _average([cells[(row, t)] for t in tasks]) for row in rows}
    splits = {t: _split_metric(runs, t) for t in tasks}
    headers = (
        "method",
        *(f"{t} ({METRIC_ABBREVIATIONS.get(splits[t][1], splits[t][1])})" for t in tasks),
        AVERAGE,
    )
    table = AccuracyTable(
        backbone=backbone,
        tasks=tuple(tasks),
        headers=headers,
        rows=tuple(rows),
        labels=tuple(f"{row} ({_pct_range(runs, row)})" for row in rows),
        cells=cells,
        averages=averages,
        marks={},
        footnote=tuple(footnote(frame, backbone)),
        splits=splits,
    )
    return _with_marks(table)


def _cell(runs: pd.DataFrame, row: str, task: str) -> Cell:
    planned = collect.planned_seeds(runs, task)
    mine = runs[(runs["row"] == row) & (runs["task"] == task)]
    ok = mine[mine["status"] == collect.STATUS_OK]
    scores = [s for s in ok["score"] if not math.isnan(s)]
    statuses = list(mine.loc[mine["status"] != collect.STATUS_OK, "status"])
    unscored = len(ok) - len(scores)  # ok, but the metric is missing or not finite
    order = [*collect.NOT_OK_ORDER, *sorted(set(statuses) - set(collect.NOT_OK_ORDER))]
    not_ok = [(s, statuses.count(s)) for s in order if statuses.count(s)]
    if unscored:
        not_ok.append(("without score", unscored))
    missing = len(set(planned) - {int(s) for s in mine["seed"]})
    chance = list(ok["at_chance"])
    not_learned = bool(chance) and all(v is not None and v == v and bool(v) for v in chance)
    return Cell(summarize(scores), len(planned), tuple(not_ok), missing, not_learned)


def _average(cells: list[Cell]) -> float | None:
    """Unweighted mean of the task means; None unless every task has a value."""
    if not cells or not all(c.has_value for c in cells):
        return None
    return sum(c.summary.mean for c in cells) / len(cells)


def _split_metric(runs: pd.DataFrame, task: str) -> tuple[str, str]:
    first = runs[runs["task"] == task].iloc[0]
    return (str(first["split"]), str(first["metric"]))


def _pct_range(runs: pd.DataFrame, row: str) -> str:
    values = [float(v) for v in runs.loc[runs["row"] == row, "pct"] if _finite(v)]
    if not values:
        return "n/a"
    low, high = render.percent(min(values)), render.percent(max(values))
    return low if low == high else f"{low[:-1]}–{high}"


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _with_marks(table: AccuracyTable) -> AccuracyTable:
    """Bold the best printed value of each column, underline the second best."""
    marks: dict[tuple[str, str], str] = {}
    for column in (*table.tasks, AVERAGE):
        printed = {}
        for row in table.rows:
            if column == AVERAGE:
                value = table.averages[row]
            else:
                cell = table.cells[(row, column)]
                value = cell.summary.mean if cell.has_value and not cell.not_learned else None
            if value is not None:
                printed[row] = float(render.points(value))
        ranked = sorted(set(printed.values()), reverse=True)
        for row, value in printed.items():
            if value == ranked[0]:
                marks[(row, column)] = "best"
            elif len(ranked) > 1 and value == ranked[1]:
                marks[(row, column)] = "second"
    return AccuracyTable(**{**table.__dict__, "marks": marks})


def footnote(frame: pd.DataFrame, backbone: str) -> list[str]:
    """The protocol, in sentences taken from the records of ``backbone``: how cells are made,
    the selection split, the reported split of each task, and the training budget (listing the
    differences when runs differ)."""
    runs = frame[frame["backbone"] == backbone]
    tasks = collect.ordered_tasks(runs)
    rows = collect.ordered_rows(runs)
    lines = [
        "Cells: mean ± sample std (ddof=1) over seeds of the task's primary metric on its "
        "reported split, ×100, and the number of ok runs. (n/N, …): of the N seeds run for the "
        "task on this backbone (by any method), n are ok; the rest failed, diverged, timed out "
        "or never ran (missing). — : never run. Best per column in bold, second underlined, "
        "ranked on the printed mean. not learned: every ok run at the level of a constant "
        "prediction (accuracy at or below the majority-class rate of the split, MCC 0 or "
        "undefined, Pearson/Spearman undefined, F1 0); left out of the ranking and of claims.",
        f"{AVERAGE}: unweighted mean of the task means, shown only when every task has an ok "
        "run. Method labels give trainable parameters as a share of the backbone's.",
        "Selection: "
        + "; ".join(sorted(set(runs["selection_split"]) - {""}) or ["not recorded"])
        + ".",
        "Reported: "
        + "; ".join(f"{t} {_split_metric(runs, t)[0]} ({_split_metric(runs, t)[1]})" for t in tasks)
        + ".",
        *_marker_notes(runs),
        "Budget: " + "; ".join(_budget(runs, rows, tasks, f) for f in BUDGET_FIELDS) + ".",
    ]
    lines += _identity_notes(runs, tasks)
    superseded = [key for b, key in frame.attrs.get("superseded", []) if b == backbone]
    if superseded:
        lines.append(
            f"Set aside: {len(superseded)} older or failed duplicate record(s) of a run that "
            f"also has a newer or ok record (same task, row and seed): {', '.join(superseded)}."
        )
    return lines


def _budget(runs: pd.DataFrame, rows: list[str], tasks: list[str], spec: tuple) -> str:
    name, key, fmt = spec
    values: dict[tuple[str, str], set[str]] = {}
    for row, task, config in zip(runs["row"], runs["task"], runs["config"], strict=True):
        values.setdefault((row, task), set()).add(fmt(json.loads(config).get(key)))
    distinct = set().union(*values.values()) if values else set()
    if len(distinct) <= 1:
        return f"{name} {next(iter(distinct), 'not recorded')}"
    parts = []
    for row in rows:
        per_task = [(t, "/".join(sorted(values[(row, t)]))) for t in tasks if (row, t) in values]
        if len({v for _, v in per_task}) == 1:
            parts.append(f"{row} {per_task[0][1]}")
        else:
            parts.append(f"{row} (" + ", ".join(f"{t} {v}" for t, v in per_task) + ")")
    return f"{name}: " + ", ".join(parts)


def _marker_notes(runs: pd.DataFrame) -> list[str]:
    """The suites' budget markers, and how many records could not say what chance is."""
    ok = runs[runs["status"] == collect.STATUS_OK]
    markers = budget_texts(ok)
    notes = [f"Budget marker: {'; '.join(markers)}."] if markers else []
    kinds = list(ok["chance_levels"])
    none, majority = kinds.count(learned.NONE), kinds.count(learned.MAJORITY_ONLY)
    unknown = int(sum(v is None for v in ok["at_chance"]))
    if majority:
        notes.append(
            f"Chance levels: {majority} of {len(ok)} ok record(s) predate the recorded chance "
            f"levels and carry only the majority rate of their split, added afterwards from the "
            f"data files; whether their predictions were constant is unknown."
        )
    if none:
        cannot = (
            f"; {unknown} of them (an accuracy without a binary F1 beside it) cannot be judged "
            f"and count as learned"
            if unknown
            else ""
        )
        notes.append(
            f"Chance levels: {none} of {len(ok)} ok record(s) carry none and are judged from "
            f"their metrics alone{cannot}."
        )
    return notes


def _identity_notes(runs: pd.DataFrame, tasks: list[str]) -> list[str]:
    notes = []
    identities = sorted(set(runs["backbone_identity"]) - {""})
    if len(identities) > 1:
        notes.append("Backbone: runs used different weights: " + ", ".join(identities) + ".")
    for task in tasks:
        data = sorted(set(runs.loc[runs["task"] == task, "data_identity"]) - {""})
        if len(data) > 1:
            notes.append(f"Data: {task} runs read different data: " + ", ".join(data) + ".")
    return notes


# --- rendering ---------------------------------------------------------------------------------


def _columns(table: AccuracyTable) -> tuple[str, ...]:
    return (*table.tasks, AVERAGE)


def to_markdown(table: AccuracyTable) -> str:
    """The table and its protocol footnote, as Markdown (no heading)."""
    rows = []
    for row, label in zip(table.rows, table.labels, strict=True):
        cells = []
        for column in _columns(table):
            text, mark = table.cell_text(row, column), table.marks.get((row, column))
            cells.append(f"**{text}**" if mark == "best" else f"<u>{text}</u>" if mark else text)
        rows.append([label, *cells])
    notes = "\n".join(f"- {line}" for line in table.footnote)
    return f"{render.markdown_table(table.headers, rows)}\n\n{notes}\n"


def to_latex(table: AccuracyTable) -> str:
    """The table as a booktabs LaTeX ``table``, the footnote as its caption."""
    rows = []
    for row, label in zip(table.rows, table.labels, strict=True):
        cells = []
        for column in _columns(table):
            text = render.latex_escape(table.cell_text(row, column))
            mark = table.marks.get((row, column))
            cells.append(
                rf"\textbf{{{text}}}"
                if mark == "best"
                else rf"\underline{{{text}}}"
                if mark
                else text
            )
        rows.append([render.latex_escape(label), *cells])
    caption = render.latex_escape(
        f"Accuracy on backbone {table.backbone}. " + " ".join(table.footnote)
    )
    headers = [render.latex_escape(h) for h in table.headers]
    return render.latex_table(headers, rows, caption)


def to_frame(table: AccuracyTable) -> pd.DataFrame:
    """One CSV row per (method row, task), then one per row for the average."""
    import pandas as pd

    records = []
    for row, label in zip(table.rows, table.labels, strict=True):
        for task in table.tasks:
            cell = table.cells[(row, task)]
            counts = dict(cell.not_ok)
            records.append(
                {
                    "backbone": table.backbone,
                    "row": row,
                    "label": label,
                    "task": task,
                    "split": table.splits[task][0],
                    "metric": table.splits[task][1],
                    "mean": cell.summary.mean,
                    "std": cell.summary.std,
                    "n_ok": cell.summary.n,
                    "n_planned": cell.planned,
                    **{f"n_{s}": counts.get(s, 0) for s in collect.NOT_OK_ORDER},
                    "n_missing": cell.missing,
                    "mark": table.marks.get((row, task), ""),
                    "not_learned": cell.not_learned,
                    "cell": cell.text,
                }
            )
        average = table.averages[row]
        records.append(
            {
                "backbone": table.backbone,
                "row": row,
                "label": label,
                "task": AVERAGE.lower(),
                "mean": math.nan if average is None else average,
                "mark": table.marks.get((row, AVERAGE), ""),
                "cell": table.cell_text(row, AVERAGE),
            }
        )
    frame = pd.DataFrame.from_records(records, columns=list(records[0]) if records else None)
    for column in frame.columns:
        if column.startswith("n_"):
            frame[column] = frame[column].astype("Int64")  # integers stay integers in the CSV
    return frame
