"""The search report: per searched cell, every grid point's selection score, the winner, the
edge flag and the budget; per method, what its tuning cost (the *tuning budget* column).

Input: the search records under ``RESULTS/searches/`` (written by ``bench run``) and the run
records. The winner is recomputed from them with :func:`bench.search.cell_state`, the same
function the runner uses, so a report written mid-search shows the search as it stands. When a
cell was searched more than once (another grid), the latest search record counts.

Scores are the selection-split primary metric ×100 (points), per search seed and their mean.
Device-hours: the sum of the search runs' wall time (``wall_time_s`` of each record: load,
train, evaluate) on whatever device ran them, over the runs that exist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import records
from bench.report import render
from bench.search import CellState, cell_state, latest_cells

if TYPE_CHECKING:
    import pandas as pd

CSV_COLUMNS = (
    "backbone",
    "task",
    "method",
    "protocol",
    "point",
    "index",
    "scores",
    "mean",
    "statuses",
    "winner",
    "edge",
)


@dataclass(frozen=True)
class SearchSummary:
    """The cells' states, and per (backbone, method) the search runs and device-hours spent."""

    states: tuple[CellState, ...]
    budgets: dict[tuple[str, str], tuple[int, float]]

    @property
    def empty(self) -> bool:
        return not self.states


def summarize(results: Path) -> SearchSummary:
    """Every cell's latest search record under ``results`` and what each method's search cost."""

    def read(key: str) -> dict[str, Any] | None:
        return records.read_record(Path(results), key)

    states = tuple(cell_state(cell, read) for cell in latest_cells(Path(results), read))
    budgets: dict[tuple[str, str], tuple[int, float]] = {}
    for state in states:
        keys = state.search_keys
        found = [read(key) for key in sorted(keys)]
        runs = sum(r is not None for r in found)
        seconds = sum(float(r.get("wall_time_s") or 0.0) for r in found if r is not None)
        name = (state.cell["backbone"], state.cell["method"])
        before = budgets.get(name, (0, 0.0))
        budgets[name] = (before[0] + runs, before[1] + seconds / 3600)
    return SearchSummary(states=states, budgets=budgets)


def budget_label(summary: SearchSummary, backbone: str, method: str) -> str:
    """The tuning budget of one method on one backbone: ``"6 runs, 0.12 device-h"``."""
    if (backbone, method) not in summary.budgets:
        return "not searched"
    runs, hours = summary.budgets[(backbone, method)]
    return f"{runs} runs, {hours:.2f} device-h"


def _points(value: float | None) -> str:
    return render.DASH if value is None or not math.isfinite(value) else render.points(100 * value)


def _cell_title(state: CellState) -> str:
    cell = state.cell
    official = cell.get("protocol") == "official-dev"
    mark = " (official-dev: selected on the reported dev split)" if official else ""
    return f"{cell['backbone']} · {cell['task']} · {cell['method']}{mark}"


def _budget_text(cell: dict[str, Any]) -> str:
    searched = len(cell["points"])
    if cell.get("budget") is not None and searched < cell["grid_points"]:
        return (
            f"budget {cell['budget']}: {searched} of {cell['grid_points']} grid points, a random "
            f"subset seeded with {cell['budget_seed']} (indexes {cell['chosen']})"
        )
    return f"all {cell['grid_points']} grid points"


def cell_markdown(state: CellState) -> str:
    """One cell: its grid table (one row per point) and the lines about winner, edge, budget."""
    cell = state.cell
    keys = list(cell["grid"])
    seeds = [str(s) for s in cell["search_seeds"]]
    headers = [*keys, *(f"seed {s}" for s in seeds), "mean", ""]
    rows = []
    for point in state.points:
        mark = "winner" if state.winner and point.index == state.winner.index else ""
        scores = [
            _points(v) if status == "ok" else status
            for v, status in zip(point.scores, point.statuses, strict=True)
        ]
        mean = _points(point.mean) if point.mean != -math.inf else render.DASH
        rows.append([*(_value(point.point.get(k)) for k in keys), *scores, mean, mark])
    lines = [f"### {_cell_title(state)}", "", render.markdown_table(headers, rows), ""]
    metric = cell.get("metric", "primary metric")
    if state.winner is not None:
        lines.append(
            f"- Winner: {_point_text(state.winner.point)} (mean selection {metric} "
            f"{_points(state.winner.mean)}), run with final seeds {cell['final_seeds']}."
        )
        if state.ties > 1:
            lines.append(
                f"- Tie: {state.ties} points share the best mean; the first in grid order won "
                "(no edge flag: a tie says nothing about where the optimum lies)."
            )
    elif state.complete:
        lines.append("- No winner: no grid point has a finite selection score.")
    else:
        done = sum(p.complete for p in state.points)
        lines.append(f"- Search not complete: {done} of {len(state.points)} points finished.")
    if state.edge:
        lines.append(
            f"- **Edge of the grid**: the winner takes an extreme value ({', '.join(state.edge)});"
            " the best setting may lie outside the grid."
        )
    lines.append(f"- Searched: {_budget_text(cell)}; {len(seeds)} search seed(s) per point.")
    if cell.get("fixed_by_flags"):
        lines.append(f"- Fixed by command-line flags, not searched: {cell['fixed_by_flags']}.")
    lines.append(f"- Source: {' / '.join(cell.get('sources') or ['not recorded'])}")
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _point_text(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_value(v)}" for k, v in point.items()) or "the only point"


def to_markdown(summary: SearchSummary) -> str:
    """The whole search page: the budget per method, then every cell."""
    rows = [
        [backbone, method, str(runs), f"{hours:.2f}"]
        for (backbone, method), (runs, hours) in sorted(summary.budgets.items())
    ]
    points: dict[tuple[str, str], list[str]] = {}
    for state in summary.states:
        cell = state.cell
        budget = f", budget {cell['budget']}" if cell.get("budget") is not None else ""
        points.setdefault((cell["backbone"], cell["method"]), []).append(
            f"{cell['task']} {len(cell['points'])}/{cell['grid_points']}{budget}"
        )
    for row in rows:
        row.append("; ".join(points[(row[0], row[1])]))
    intro = (
        "Each method's hyperparameters were chosen on the selection split (never the reported "
        "split, except cells marked official-dev); the accuracy tables, plots and claims use "
        "only the winners' final runs. Tuning budget: the search runs each method got and "
        "their wall time on the device that ran them."
    )
    head = ["backbone", "method", "search runs", "device-hours", "grid points searched / grid size"]
    parts = ["# Hyperparameter search", "", intro, "", "## Tuning budget", ""]
    parts += [render.markdown_table(head, rows), "", "## Cells", ""]
    parts += [cell_markdown(state) for state in summary.states]
    return "\n".join(parts)


def to_frame(summary: SearchSummary) -> pd.DataFrame:
    """One row per searched point (CSV)."""
    import json

    import pandas as pd

    lines = []
    for state in summary.states:
        cell = state.cell
        for point in state.points:
            lines.append(
                {
                    "backbone": cell["backbone"],
                    "task": cell["task"],
                    "method": cell["method"],
                    "protocol": cell.get("protocol", "carved"),
                    "point": json.dumps(point.point, sort_keys=True),
                    "index": point.index,
                    "scores": json.dumps(list(point.scores)),
                    "mean": None if point.mean == -math.inf else point.mean,
                    "statuses": ",".join(point.statuses),
                    "winner": bool(state.winner and state.winner.index == point.index),
                    "edge": ",".join(state.edge) if state.winner else "",
                }
            )
    return pd.DataFrame.from_records(lines, columns=list(CSV_COLUMNS))


def heatmap_frame(state: CellState) -> pd.DataFrame | None:
    """Mean selection score (points) over a two-key grid: rows the first key's values, columns
    the second's (None for other grids)."""
    import pandas as pd

    keys = list(state.cell["grid"])
    if len(keys) != 2:
        return None
    first, second = (state.cell["searched_grid"][k] for k in keys)
    table = pd.DataFrame(index=[_value(v) for v in first], columns=[_value(v) for v in second])
    for point in state.points:
        mean = point.mean
        table.loc[_value(point.point[keys[0]]), _value(point.point[keys[1]])] = (
            100 * mean if math.isfinite(mean) else math.nan
        )
    table.index.name, table.columns.name = keys
    return table.astype(float)


def heatmaps(summary: SearchSummary, folder: Path) -> list[Path]:
    """A seaborn heatmap per two-key cell (``folder/<cell id>.{png,pdf}``), the winner boxed."""
    from bench.report.plots import _pyplot, _style, save

    written = []
    for state in summary.states:
        table = heatmap_frame(state)
        if table is None:
            continue
        plt, sns = _pyplot()
        with _style():
            fig, ax = plt.subplots(figsize=(1.2 + 0.9 * table.shape[1], 1.0 + 0.6 * table.shape[0]))
            sns.heatmap(table, annot=True, fmt=".1f", cmap="viridis", cbar=False, ax=ax)
            if state.winner is not None:
                keys = list(state.cell["grid"])
                row = list(table.index).index(_value(state.winner.point[keys[0]]))
                col = list(table.columns).index(_value(state.winner.point[keys[1]]))
                ax.add_patch(plt.Rectangle((col, row), 1, 1, fill=False, lw=2, ec="red"))
            metric = state.cell.get("metric", "score")
            ax.set_title(f"{_cell_title(state)}\nmean selection {metric} ×100", fontsize=8)
            written += save(fig, folder / state.cell["id"])
    return written
