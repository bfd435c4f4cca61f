"""The parameter table: per backbone and method, what trains, what is stored after the merge,
the head, the backbone, the trainable share, the closed-form formula and whether the count
matches it.

Counts come from ok runs (a failed run may not have built its model). The head depends on the
task (its number of labels), so tasks with identical counts share one line and the others get
their own: nothing is averaged away.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.report import collect, render

if TYPE_CHECKING:
    import pandas as pd

HEADERS = (
    "backbone",
    "method",
    "tasks",
    "trainable",
    "stored",
    "head",
    "backbone params",
    "% of backbone",
    "formula",
    "matches",
)
_FIELDS = ("trainable", "stored", "head", "backbone_params", "pct", "formula", "matches")
BUDGET = "tuning budget"


def build_params(frame: pd.DataFrame, budgets: Any = None) -> pd.DataFrame:
    """One row per (backbone, method row, distinct counts), with the tasks that share them.
    ``budgets`` (``(backbone, method) → text``), given when the results hold a search, adds the
    ``tuning budget`` column: what the method's hyperparameter search cost."""
    import pandas as pd

    ok = frame[frame["status"] == collect.STATUS_OK]
    lines = []
    for backbone in sorted(set(ok["backbone"])):
        runs = ok[ok["backbone"] == backbone]
        for row in collect.ordered_rows(runs):
            groups: dict[tuple, list[str]] = {}
            for task in collect.ordered_tasks(runs):
                mine = runs[(runs["row"] == row) & (runs["task"] == task)]
                for values in sorted({tuple(_key(v) for v in r) for r in _values(mine)}, key=str):
                    groups.setdefault(values, []).append(task)
            method = str(runs.loc[runs["row"] == row, "method"].iloc[0])
            for values, tasks in groups.items():
                line = {"backbone": backbone, "method": row, "tasks": ", ".join(tasks)}
                if budgets is not None:
                    line[BUDGET] = budgets(backbone, method)
                lines.append(line | dict(zip(_FIELDS, values, strict=True)))
    extra = [BUDGET] if budgets is not None else []
    columns = ["backbone", "method", "tasks", *_FIELDS, *extra]
    return pd.DataFrame.from_records(lines, columns=columns)


def _values(runs: pd.DataFrame) -> list[tuple]:
    return list(runs[list(_FIELDS)].itertuples(index=False, name=None))


def _key(value: object) -> object:
    """NaN and None compare equal here (both mean "not recorded")."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value


def _cells(line: dict) -> list[str]:
    pct = line["pct"]
    matches = line["matches"]
    return [
        str(line["backbone"]),
        str(line["method"]),
        str(line["tasks"]),
        render.count(line["trainable"]),
        render.count(line["stored"]),
        render.count(line["head"]),
        render.count(line["backbone_params"]),
        render.DASH if pct is None else render.percent(float(pct)),
        render.DASH if line["formula"] is None else str(line["formula"]),
        render.DASH if matches is None else ("yes" if matches else "no"),
        *([str(line[BUDGET])] if BUDGET in line else []),
    ]


def _headers(table: pd.DataFrame) -> list[str]:
    return [*HEADERS, *([BUDGET] if BUDGET in table.columns else [])]


def to_markdown(table: pd.DataFrame) -> str:
    rows = [_cells(line) for line in table.to_dict("records")]
    note = (
        "Trainable: parameters that receive gradients during training (prompt encoders "
        "included). Stored: what the delta file holds after the reparameterization is merged. "
        "Both include the task head. Matches: the counted number equals the closed form. "
        "Counts from ok runs."
    )
    if BUDGET in table.columns:
        note += (
            " Tuning budget: the runs of the method's hyperparameter search and their "
            "device-hours (search.md)."
        )
    return f"{render.markdown_table(_headers(table), rows)}\n\n{note}\n"


def to_latex(table: pd.DataFrame) -> str:
    rows = [[render.latex_escape(c) for c in _cells(line)] for line in table.to_dict("records")]
    headers = [render.latex_escape(h) for h in _headers(table)]
    caption = render.latex_escape(
        "Parameter counts per backbone and method: trainable at training time, stored after "
        "merging the reparameterization, head, backbone, trainable share of the backbone, "
        "closed form and whether the count matches it."
    )
    align = "lllrrrrrll" + ("l" if BUDGET in table.columns else "")
    return render.latex_table(headers, rows, caption, align=align)


def to_frame(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    for column in ("trainable", "stored", "head", "backbone_params"):
        out[column] = out[column].astype("Int64")
    return out
