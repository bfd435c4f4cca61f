"""Hyperparameter search: grids, the equal-budget subset, winner selection and the search record.

A suite's ``search`` block (see :mod:`bench.suites`) gives, per (task, method), a grid over train
or method config keys. A sweep runs every grid point with the *search seeds*; once a cell's search
is complete (every search run finished ``ok`` or ``diverged``), the winner is the point with the
best mean selection-split score, and it runs with the *final seeds*. Final runs whose resolved
config and seed equal a search run are that run (same key), so they are not trained twice.

Tie-break (documented in docs/search.md): among points with equal mean score, the one that comes
first in grid order wins. Grid order is the product of the grid's values in the order written,
the first key varying slowest (``{lr: [a, b], m: [8, 20]}`` → (a, 8), (a, 20), (b, 8), (b, 20)),
so a suite lists its preferred (cheaper, default-like) values first. A point with a failed,
diverged or non-finite search run scores −inf and never beats one with a score.

The driver writes one *search record* per cell to ``OUTPUT/searches/<cell>.json``: the grid,
the budget and its seeded subset, the run keys of every point × seed, and the final keys of every
point. Reports recompute the winner from it and the run records (the same function), so a report
written mid-search shows the search as it stands.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UserError

SEARCH_KEYS = (
    "source",
    "tasks",
    "methods",
    "grid",
    "search_seeds",
    "final_seeds",
    "budget",
    "budget_seed",
)
DEFAULT_SEARCH_SEEDS = 1
DEFAULT_FINAL_SEEDS = 5
DEFAULT_BUDGET_SEED = 0
#: Statuses that end a search run for good (results of the configuration); ``failed`` and
#: ``timeout`` can be rerun (``--rerun-failed``), so a cell holding them still waits.
FINAL_STATUSES = ("ok", "diverged")


@dataclass(frozen=True)
class SearchBlock:
    """One ``search`` entry of a suite: a grid for the runs of some tasks × methods."""

    source: str = field(metadata={"help": "Where the grid comes from: paper, script, measured."})
    tasks: tuple[str, ...] = field(default=(), metadata={"help": "Tasks it applies to (all)."})
    methods: tuple[str, ...] = field(default=(), metadata={"help": "Methods it applies to (all)."})
    grid: dict[str, tuple[Any, ...]] = field(
        default_factory=dict, metadata={"help": "Config key → values to try, in order."}
    )
    search_seeds: int | None = field(
        default=None, metadata={"help": f"Seeds per grid point (default {DEFAULT_SEARCH_SEEDS})."}
    )
    final_seeds: int | None = field(
        default=None, metadata={"help": f"Seeds of the winner (default {DEFAULT_FINAL_SEEDS})."}
    )
    budget: int | None = field(
        default=None, metadata={"help": "Cap on grid points: a seeded random subset of N."}
    )
    budget_seed: int | None = field(
        default=None, metadata={"help": f"Seed of that subset (default {DEFAULT_BUDGET_SEED})."}
    )

    def applies(self, task: str, method: str) -> bool:
        return (not self.tasks or task in self.tasks) and (
            not self.methods or method in self.methods
        )


@dataclass(frozen=True)
class Search:
    """The search of one (task, method): matching blocks merged in file order."""

    grid: dict[str, tuple[Any, ...]]
    search_seeds: int = DEFAULT_SEARCH_SEEDS
    final_seeds: int = DEFAULT_FINAL_SEEDS
    budget: int | None = None
    budget_seed: int = DEFAULT_BUDGET_SEED
    sources: tuple[str, ...] = ()

    def all_points(self) -> list[dict[str, Any]]:
        """Every grid point in grid order (first key slowest)."""
        keys = list(self.grid)
        products = itertools.product(*self.grid.values())
        return [dict(zip(keys, values, strict=True)) for values in products]

    def chosen(self) -> list[int]:
        """Indexes (into :meth:`all_points`) searched: all, or a seeded subset of ``budget``,
        kept in grid order. Python's ``random.Random(int).sample`` is stable across versions."""
        total = math.prod(len(v) for v in self.grid.values())
        if self.budget is None or self.budget >= total:
            return list(range(total))
        return sorted(random.Random(self.budget_seed).sample(range(total), self.budget))

    def without(self, keys: Sequence[str]) -> Search:
        """The search with ``keys`` dropped from the grid (they are fixed by command-line flags;
        with every key dropped, the grid is one point: the flags' values)."""
        return dataclasses.replace(self, grid={k: v for k, v in self.grid.items() if k not in keys})


def merge_blocks(blocks: Sequence[SearchBlock], task: str, method: str) -> Search | None:
    """The search of (task, method): every matching block in order, later keys winning (grid keys
    one by one, like ``settings``); None when no block matches."""
    grid: dict[str, tuple[Any, ...]] = {}
    scalars: dict[str, Any] = {}
    sources = []
    for block in blocks:
        if not block.applies(task, method):
            continue
        grid.update(block.grid)
        for name in ("search_seeds", "final_seeds", "budget", "budget_seed"):
            if getattr(block, name) is not None:
                scalars[name] = getattr(block, name)
        sources.append(block.source)
    if not sources:
        return None
    if not grid:
        raise UserError(
            f"search of {task} × {method}: the matching search entries give no 'grid' "
            f"(sources: {sources})"
        )
    return Search(grid=grid, sources=tuple(sources), **scalars)


# --- parsing (called by bench.suites) -------------------------------------------------------


def _count(data: dict[str, Any], key: str, where: str, minimum: int) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{where}: '{key}' must be an integer >= {minimum}, got {value!r}")
    return value


def _grid_value(value: Any) -> Any:
    """YAML 1.1 reads ``1e-2`` as a string; a numeric-looking string means the number."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_grid(data: Any, where: str, valid_keys: Callable[[str], list[str] | None]) -> dict:
    """A grid mapping: every key known (``valid_keys(key)`` returns None when the key is known,
    else the allowed keys), every value a non-empty list of scalars without repeats."""
    if not isinstance(data, dict) or not data:
        raise UserError(f"{where}: 'grid' must be a non-empty mapping of key → list of values")
    grid = {}
    for key, values in data.items():
        allowed = valid_keys(str(key))
        if allowed is not None:
            raise UserError(f"{where}: grid key {key!r} is not a config key; allowed: {allowed}")
        if not isinstance(values, list):
            raise UserError(f"{where}: grid key {key!r} must be a list of values, got {values!r}")
        if not values:
            raise UserError(f"{where}: grid key {key!r} is an empty list; give at least one value")
        if not all(v is None or isinstance(v, str | int | float | bool) for v in values):
            raise UserError(f"{where}: grid key {key!r} holds a non-scalar value: {values!r}")
        parsed = tuple(_grid_value(v) for v in values)
        repeats = sorted({repr(v) for v in parsed if parsed.count(v) > 1})
        if repeats:
            raise UserError(f"{where}: grid key {key!r} repeats value(s) {repeats}")
        grid[str(key)] = parsed
    return grid


def parse_block(
    data: Any,
    where: str,
    names: Callable[[dict[str, Any], str, str], tuple[str, ...]],
    valid_keys: Callable[[str], list[str] | None],
) -> SearchBlock:
    """A SearchBlock from YAML (``names`` reads a list of names the way suites do)."""
    if not isinstance(data, dict):
        raise UserError(f"{where} must be a mapping, got {data!r}")
    unknown = sorted(set(data) - set(SEARCH_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(SEARCH_KEYS)}")
    source = data.get("source")
    if not isinstance(source, str) or not source.strip():
        raise UserError(f"{where}: 'source' is required (where the grid comes from)")
    return SearchBlock(
        source=source.strip(),
        tasks=names(data, "tasks", where),
        methods=names(data, "methods", where),
        grid=parse_grid(data["grid"], where, valid_keys) if "grid" in data else {},
        search_seeds=_count(data, "search_seeds", where, 1),
        final_seeds=_count(data, "final_seeds", where, 1),
        budget=_count(data, "budget", where, 1),
        budget_seed=_count(data, "budget_seed", where, 0),
    )


# --- winner selection -------------------------------------------------------------------------


@dataclass(frozen=True)
class PointScore:
    """One grid point's search outcome: per-seed selection scores (None: no usable score)."""

    index: int
    point: dict[str, Any]
    scores: tuple[float | None, ...]
    statuses: tuple[str, ...]

    @property
    def complete(self) -> bool:
        return all(s in FINAL_STATUSES for s in self.statuses)

    @property
    def mean(self) -> float:
        """Mean selection score; −inf when any seed has no finite score (never preferred)."""
        if not self.scores or any(s is None or not math.isfinite(s) for s in self.scores):
            return -math.inf
        return sum(self.scores) / len(self.scores)  # type: ignore[arg-type]


def choose_winner(points: Sequence[PointScore]) -> PointScore | None:
    """The best mean score; ties → the first in grid order. None when no point has a score."""
    best = None
    for point in sorted(points, key=lambda p: p.index):
        if point.mean == -math.inf:
            continue
        if best is None or point.mean > best.mean:
            best = point
    return best


def edge_keys(search_grid: dict[str, Sequence[Any]], winner: dict[str, Any]) -> list[str]:
    """Numeric grid keys (≥ 2 values searched) where the winner takes the smallest or largest
    value, as ``"lr=max"``: the optimum may lie outside the grid."""
    out = []
    for key, values in search_grid.items():
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if len(numbers) < 2 or len(numbers) != len(values):
            continue
        if winner.get(key) == min(numbers):
            out.append(f"{key}=min")
        elif winner.get(key) == max(numbers):
            out.append(f"{key}=max")
    return out


def selection_score(record: dict[str, Any] | None) -> float | None:
    """The selection-split score a run was selected on (its best checkpoint's primary metric)."""
    if not record or record.get("status") != "ok":
        return None
    value = (record.get("best") or {}).get("score")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


# --- the search record of one cell ------------------------------------------------------------


def searches_dir(output: Path) -> Path:
    return Path(output) / "searches"


def cell_id(cell: dict[str, Any]) -> str:
    """File stem of a search record: readable names plus a hash of everything that defines it."""
    identity = {k: cell[k] for k in ("backbone_identity", "task", "method", "protocol", "grid")}
    identity.update(
        {k: cell[k] for k in ("budget", "budget_seed", "search_seeds", "final_seeds", "chosen")}
    )
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    return f"{cell['backbone']}__{cell['task']}__{cell['method']}__{digest}".replace("/", "_")


def load_cells(output: Path) -> list[dict[str, Any]]:
    """Every readable search record under ``output/searches`` (sorted by file name)."""
    folder = searches_dir(output)
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("points"), list):
            out.append(data)
    return out


def score_points(
    cell: dict[str, Any], read: Callable[[str], dict[str, Any] | None]
) -> list[PointScore]:
    """Each searched point's outcome from the run records (``read(key)`` → record or None)."""
    out = []
    for point in cell["points"]:
        found = [read(key) for key in point["search_keys"].values()]
        out.append(
            PointScore(
                index=int(point["index"]),
                point=dict(point["values"]),
                scores=tuple(selection_score(r) for r in found),
                statuses=tuple((r or {}).get("status", "pending") for r in found),
            )
        )
    return out


@dataclass(frozen=True)
class CellState:
    """Where one cell's search stands: its points, whether complete, and the winner."""

    cell: dict[str, Any]
    points: list[PointScore]
    complete: bool
    winner: PointScore | None
    edge: list[str]
    ties: int = 0  # points whose mean equals the winner's (1: the winner is strictly best)

    @property
    def final_keys(self) -> dict[str, str]:
        """Seed → run key of the winner's final runs (empty until there is a winner)."""
        if self.winner is None:
            return {}
        for point in self.cell["points"]:
            if int(point["index"]) == self.winner.index:
                return dict(point["final_keys"])
        return {}

    @property
    def search_keys(self) -> set[str]:
        return {k for p in self.cell["points"] for k in p["search_keys"].values()}


def cell_state(cell: dict[str, Any], read: Callable[[str], dict[str, Any] | None]) -> CellState:
    points = score_points(cell, read)
    complete = bool(points) and all(p.complete for p in points)
    winner = choose_winner(points) if complete else None
    ties = sum(p.mean == winner.mean for p in points) if winner else 0
    searched = {k: tuple(v) for k, v in cell["searched_grid"].items()}
    # A winner by tie-break says nothing about where the optimum lies: no edge flag then.
    edge = edge_keys(searched, winner.point) if winner and ties == 1 else []
    return CellState(
        cell=cell, points=points, complete=complete, winner=winner, edge=edge, ties=ties
    )


def selected_keys(output: Path, read: Callable[[str], dict[str, Any] | None]) -> tuple[set, set]:
    """(keys that belong to searches, keys of the winners' final runs) under ``output``; a
    table shows a search's runs only when they are a winner's final runs."""
    in_search: set[str] = set()
    for cell in load_cells(output):
        in_search |= {k for p in cell["points"] for k in p["search_keys"].values()}
        in_search |= {k for p in cell["points"] for k in p["final_keys"].values()}
    selected: set[str] = set()
    for cell in latest_cells(output, read):
        selected |= set(cell_state(cell, read).final_keys.values())
    return in_search, selected


def latest_cells(
    output: Path, read: Callable[[str], dict[str, Any] | None]
) -> list[dict[str, Any]]:
    """One search record per (backbone, task, method, protocol): when a cell was searched more
    than once (another grid or budget), the one whose runs finished last (then the larger id)."""

    def last(cell: dict[str, Any]) -> tuple[str, str]:
        stamps = [
            str((read(k) or {}).get("finished_at") or "")
            for p in cell["points"]
            for k in p["search_keys"].values()
        ]
        return max(stamps, default=""), str(cell["id"])

    latest: dict[tuple, dict[str, Any]] = {}
    for cell in load_cells(output):
        name = (cell["backbone"], cell["task"], cell["method"], cell.get("protocol", "carved"))
        if name not in latest or last(cell) > last(latest[name]):
            latest[name] = cell
    return [latest[name] for name in sorted(latest)]


def write_cells(output: Path, cells: Sequence[dict[str, Any]]) -> None:
    """Store each cell's search record (atomically; the same plan rewrites the same file)."""
    from bench.records import atomic_write_json

    for cell in cells:
        atomic_write_json(searches_dir(output) / f"{cell['id']}.json", cell)


def describe_searches(states: Sequence[CellState]) -> str:
    """One line per searched cell: its winner, or how far its search is and what waits."""
    lines = []
    for state in states:
        cell = state.cell
        name = f"{cell['backbone']}/{cell['task']}/{cell['method']}"
        runs = [s for p in state.points for s in p.statuses]
        done = sum(s in FINAL_STATUSES for s in runs)
        size = f"{len(state.points)} of {cell['grid_points']} grid points"
        if state.winner is not None:
            edge = f"; on the grid's edge: {', '.join(state.edge)}" if state.edge else ""
            if state.ties > 1:
                edge += f"; {state.ties} points tie, the first in grid order won"
            lines.append(
                f"search {name}: {size} done, winner {state.winner.point} "
                f"(mean selection {cell['metric']} {state.winner.mean:.4f}){edge}; final seeds "
                f"{cell['final_seeds']}"
            )
        elif state.complete:
            lines.append(f"search {name}: {size} done, no point has a score (all diverged)")
        else:
            lines.append(
                f"search {name}: {done}/{len(runs)} search runs finished ({size}); waiting: "
                f"{len(waiting_final_keys(cell))} final run(s) of its winner"
            )
    if any(state.winner is None and not state.complete for state in states):
        lines.append(
            "Final runs start when their cell's search is complete, in the same command; with "
            "Slurm --no-wait, run the same command again once the search runs are done."
        )
    return "\n".join(lines)


def waiting_final_keys(cell: dict[str, Any]) -> list[str]:
    """Final keys of a cell's winner that no search run provides (the winner's point is not known
    yet, so the first point stands for it: every point has the same seeds)."""
    point = cell["points"][0]
    reused = {seed for seed in point["final_keys"] if seed in point["search_keys"]}
    return [key for seed, key in point["final_keys"].items() if seed not in reused]
