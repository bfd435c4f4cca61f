"""Planning: methods × tasks × seeds × backbones → one resolved RunSpec per run.

Each run's configuration is layered: method defaults, then the suite's settings that match its
(task, method, backbone) in file order, then the grid point of a search (:func:`build_sweep`),
then command-line flags; its selection protocol is resolved per task (:mod:`bench.protocols`).
Cells (backbone, task, method) the suite excludes are not planned.
Execution lives in :mod:`bench.sweep` (driver), :mod:`bench.executors` and :mod:`bench.worker`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import records
from bench.config import RunSpec, TrainConfig, check_finite
from bench.errors import UserError
from bench.suites import Suite

DEFAULT_SEEDS = (13, 21, 42, 87, 100)


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"3"`` → the first 3 default seeds; ``"13,21,42"`` (or ``"42,"``) → exactly those."""
    text = text.strip()
    try:
        if "," not in text:
            count = int(text)
            if count < 1:
                raise UserError(f"--seeds {text}: the number of seeds must be at least 1")
            extra = tuple(1000 + i for i in range(max(0, count - len(DEFAULT_SEEDS))))
            return (DEFAULT_SEEDS + extra)[:count]
        seeds = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UserError(
            f"--seeds {text!r}: give a count (3) or a comma-separated list (13,21,42)"
        ) from None
    if not seeds:
        raise UserError("--seeds: the list of seeds is empty")
    if any(seed < 0 for seed in seeds):
        raise UserError(f"--seeds {text}: seeds must be >= 0")
    duplicates = sorted({s for s in seeds if seeds.count(s) > 1})
    if duplicates:
        raise UserError(f"--seeds {text}: duplicate seed(s) {duplicates}")
    return seeds


@dataclass(frozen=True)
class PlanRequest:
    """What the user asked for, before resolution."""

    tasks: Sequence[str]
    methods: Sequence[str]
    seeds: Sequence[int]
    backbones: Sequence[str]
    data_dir: str | None
    train: dict[str, Any] = field(default_factory=dict)
    method_overrides: dict[str, Any] = field(default_factory=dict)
    suite: Suite | None = None
    device: str | None = None  # where runs go, for precision auto (default: cuda if available)
    explicit_seeds: bool = False  # seeds given on the command line (they win over a search's)


def build_plan(request: PlanRequest) -> list[RunSpec]:
    """Resolve names, identities and configs into one RunSpec per run (UserError on bad input).
    The suite's ``search`` blocks are not expanded here; :func:`build_sweep` does that."""
    context = _Context.of(request)
    plan = []
    for ref in context.refs:
        for spec in context.specs:
            for cls in context.method_classes:
                if context.excluded(ref, spec, cls):
                    continue
                for seed in request.seeds:
                    plan.append(context.run(ref, spec, cls, seed, {}, where=""))
    return plan


def _resolved_precision(train: TrainConfig, method: str, device: str | None) -> TrainConfig:
    """``train`` with precision ``auto`` resolved for ``method`` on the runs' device, so that
    the run key names the precision that runs (see bench/precision.py)."""
    import dataclasses

    from bench.precision import resolve_precision, target_device

    if train.precision != "auto":
        return train
    resolved = resolve_precision("auto", target_device(device), method)
    return dataclasses.replace(train, precision=resolved)


@dataclass(frozen=True)
class _Context:
    """Resolved names of a request, and the one place where a run's values are layered."""

    request: PlanRequest
    specs: list[Any]
    method_classes: list[Any]
    refs: list[Any]
    identities: dict[str, str]

    @classmethod
    def of(cls, request: PlanRequest) -> _Context:
        from bench.backbones import resolve_backbone
        from bench.data import data_identity
        from methods import get_method
        from tasks import get_task

        specs = [get_task(name) for name in _unique(request.tasks)]
        method_classes = [get_method(name) for name in _unique(request.methods)]
        check_method_args(
            request.method_overrides, {m.name: config_fields(m) for m in method_classes}
        )
        return cls(
            request=request,
            specs=specs,
            method_classes=method_classes,
            refs=[resolve_backbone(name) for name in _unique(request.backbones)],
            identities={
                spec.name: data_identity(
                    spec,
                    request.data_dir,
                    missing_ok=request.suite is not None and spec.name in request.suite.tasks,
                )
                for spec in specs
            },
        )

    def excluded(self, ref: Any, spec: Any, cls: Any) -> bool:
        """Whether the suite leaves this (backbone, task, method) cell out of the plan."""
        suite = self.request.suite
        return bool(suite and suite.excluded(spec.name, cls.name, ref.name))

    def run(self, ref: Any, spec: Any, cls: Any, seed: int, point: dict[str, Any], where: str):
        """One RunSpec: method defaults < suite settings < grid ``point`` < command line."""
        import dataclasses

        from bench.protocols import resolve
        from tasks.input_formats import with_input_format

        request = self.request
        suite_train, suite_method = (
            request.suite.overrides(spec.name, cls.name, ref.name) if request.suite else ({}, {})
        )
        train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
        point_train = {k: v for k, v in point.items() if k in train_keys}
        point_method = {k: v for k, v in point.items() if k not in train_keys}
        known = config_fields(cls)
        everyone = set().union(*(config_fields(m) for m in self.method_classes))
        # each key goes to the methods whose config has it; a command-line key that no selected
        # method has reaches the config, which names it
        method_values = {k: v for k, v in suite_method.items() if k in known}
        method_values.update(point_method)
        method_values.update(
            (k, v) for k, v in request.method_overrides.items() if k in known or k not in everyone
        )
        try:
            values = {**suite_train, **point_train, **request.train}
            train = TrainConfig.from_dict(values)
            train = dataclasses.replace(train, protocol=resolve(train.protocol, spec))
            train = _resolved_precision(train, cls.name, request.device)
            with_input_format(spec, train.input_format)
            check_finite(method_values, "method config")
            config = cls.config_cls.from_dict(method_values).to_dict()
        except UserError as error:
            raise UserError(f"{spec.name} × {cls.name}{where}: {error}") from None
        data_dir = request.data_dir
        return RunSpec(
            task=spec.name,
            method=cls.name,
            method_config=config,
            backbone=ref.name,
            backbone_identity=ref.identity,
            data_dir=str(Path(data_dir).expanduser().resolve()) if data_dir else None,
            data_identity=self.identities[spec.name],
            seed=seed,
            train=train,
            suite=request.suite.name if request.suite else None,
            budget=request.suite.budget if request.suite else None,
        )


@dataclass(frozen=True)
class SweepPlan:
    """A sweep in two stages. Stage one: the plain runs (cells without a search) and every
    searched grid point × search seed. Stage two: each complete search's winner × final seeds,
    known only once stage one's records exist (:meth:`finals`). ``cells`` are the search
    records (see :mod:`bench.search`); ``final_runs`` maps every point's final keys to runs."""

    plain: list[RunSpec]
    search_runs: list[RunSpec]
    cells: list[dict[str, Any]]
    final_runs: dict[str, RunSpec]

    def stage_one(self) -> list[RunSpec]:
        return list({r.key: r for r in [*self.plain, *self.search_runs]}.values())

    def states(self, output: Path) -> list[Any]:
        from bench.search import cell_state

        def read(key: str) -> dict[str, Any] | None:
            return records.read_record(output, key)

        return [cell_state(cell, read) for cell in self.cells]

    def finals(self, output: Path) -> list[RunSpec]:
        """The final runs of every cell whose search is complete (winner × final seeds)."""
        runs = [self.final_runs[k] for s in self.states(output) for k in s.final_keys.values()]
        return list({r.key: r for r in runs}.values())


def _search_seeds(request: PlanRequest, search: Any, where: str) -> tuple[list[int], list[int]]:
    """(search seeds, final seeds) of a searched cell (see bench.suites on seeds)."""
    wanted = max(search.search_seeds, search.final_seeds)
    if request.explicit_seeds:
        pool = list(request.seeds)
    elif request.suite is not None and request.suite.seeds:
        pool = list(request.suite.seeds)
    else:
        pool = list(parse_seeds(str(wanted)))
    if len(pool) < search.search_seeds:
        raise UserError(
            f"{where}: search_seeds {search.search_seeds} needs that many seeds, the seed list "
            f"has {len(pool)}: {pool}"
        )
    if not request.explicit_seeds and len(pool) < search.final_seeds:
        raise UserError(
            f"{where}: final_seeds {search.final_seeds} needs that many seeds, the suite's "
            f"'seeds' lists {len(pool)}: {pool}"
        )
    final = pool if request.explicit_seeds else pool[: search.final_seeds]
    return pool[: search.search_seeds], final


def build_sweep(request: PlanRequest) -> SweepPlan:
    """The plan of a sweep whose suite may hold ``search`` blocks (UserError on bad input, before
    anything is written): cells without a search as :func:`build_plan`, searched cells as every
    chosen grid point × search seed, with every point's final runs resolved in advance."""
    from bench import protocols
    from bench.search import cell_id

    context = _Context.of(request)
    fixed = set(request.train) | set(request.method_overrides)
    plain: list[RunSpec] = []
    search_runs: list[RunSpec] = []
    cells: list[dict[str, Any]] = []
    final_runs: dict[str, RunSpec] = {}
    for ref in context.refs:
        for spec in context.specs:
            for cls in context.method_classes:
                if context.excluded(ref, spec, cls):
                    continue
                search = request.suite.search_for(spec.name, cls.name) if request.suite else None
                if search is None:
                    plain += [context.run(ref, spec, cls, s, {}, "") for s in request.seeds]
                    continue
                where = f"{spec.name} × {cls.name} search"
                dropped = sorted(fixed & set(search.grid))
                search = search.without(dropped)
                seeds, final_seeds = _search_seeds(request, search, where)
                points, chosen = search.all_points(), search.chosen()
                cell_points = []
                for index in chosen:
                    point = points[index]
                    label = f" (search point {point})"
                    runs = {s: context.run(ref, spec, cls, s, point, label) for s in seeds}
                    finals = {s: context.run(ref, spec, cls, s, point, label) for s in final_seeds}
                    search_runs += runs.values()
                    final_runs.update({r.key: r for r in finals.values()})
                    cell_points.append(
                        {
                            "index": index,
                            "values": point,
                            "search_keys": {str(s): r.key for s, r in runs.items()},
                            "final_keys": {str(s): r.key for s, r in finals.items()},
                        }
                    )
                first = search_runs[-1]
                cell = {
                    "backbone": ref.name,
                    "backbone_identity": ref.identity,
                    "task": spec.name,
                    "method": cls.name,
                    "protocol": protocols.name_of(first.train),
                    "metric": spec.primary_metric,
                    "grid": {k: list(v) for k, v in search.grid.items()},
                    "searched_grid": {
                        k: list(dict.fromkeys(points[i][k] for i in chosen)) for k in search.grid
                    },
                    "fixed_by_flags": dropped,
                    "grid_points": len(points),
                    "budget": search.budget,
                    "budget_seed": search.budget_seed,
                    "chosen": chosen,
                    "search_seeds": seeds,
                    "final_seeds": final_seeds,
                    "sources": list(search.sources),
                    "suite": request.suite.name,
                    "points": cell_points,
                }
                cell["id"] = cell_id(cell)
                cells.append(cell)
    return SweepPlan(plain=plain, search_runs=search_runs, cells=cells, final_runs=final_runs)


def config_fields(method_cls: Any) -> set[str]:
    """The config keys a method class accepts."""
    import dataclasses

    return {f.name for f in dataclasses.fields(method_cls.config_cls)}


def check_method_args(values: dict[str, Any], fields: dict[str, set[str]]) -> None:
    """``--method-args`` apply to the selected methods that have each key; a key that none of
    them has is an error naming it, the methods and the keys they accept."""
    if len(fields) < 2:
        return  # one method: its config names an unknown key itself
    known = set().union(*fields.values())
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(
            f"--method-args {unknown} belong to none of the selected methods {sorted(fields)}; "
            f"allowed keys: {sorted(known)}"
        )


def _unique(names: Sequence[str]) -> list[str]:
    """``names`` without repeats, in order (``--tasks rte,rte`` plans rte once)."""
    return list(dict.fromkeys(names))


def preflight(plan: Sequence[RunSpec]) -> None:
    """Load every task's data and check every backbone before the first run starts, so that bad
    input fails at once with a clear message instead of once per run."""
    from bench.backbones import load_tokenizer, resolve_backbone
    from tasks import get_task

    check_data(plan)
    check_weight_files(plan)
    for backbone, task in sorted({(r.backbone, r.task) for r in plan}):
        load_tokenizer(resolve_backbone(backbone), get_task(task))
    check_positions(plan)


@dataclass(frozen=True)
class DataCheck:
    """What :func:`check_data` found for one task: split sizes and where they came from."""

    task: str
    sizes: dict[str, int]  # split name -> examples; empty when not checked (Hub data)
    source: str

    @property
    def line(self) -> str:
        found = ", ".join(f"{n:,} {name}" for name, n in self.sizes.items())
        return f"{self.task}: {found} ({self.source})" if found else f"{self.task}: {self.source}"


def check_data(plan: Sequence[RunSpec], hub: bool = True) -> dict[str, DataCheck]:
    """Load every task's data (files, rows, labels; UserError on the first problem) and say what
    was found, per task. ``hub=False`` skips data that comes from the Hub (a download)."""
    from bench.data import load_task
    from tasks import get_task

    found = {}
    for task, data_dir in sorted({(r.task, r.data_dir) for r in plan}, key=str):
        if data_dir is None and not hub:
            found[task] = DataCheck(task, {}, "Hugging Face Hub, checked when the runs start")
            continue
        loaded = load_task(get_task(task), data_dir)
        sizes = {name: len(split) for name, split in loaded.splits.items()}
        found[task] = DataCheck(task, sizes, loaded.source)
    return found


def check_weight_files(plan: Sequence[RunSpec]) -> None:
    """A local backbone must hold safetensors weights: a pickled-only one (``*.bin``) is refused
    here, before anything is tokenized or loaded."""
    from bench.backbones import resolve_backbone

    for name in sorted({r.backbone for r in plan}):
        ref = resolve_backbone(name)
        if ref.is_local and not any(Path(ref.location).glob("*.safetensors")):
            found = sorted(p.name for p in Path(ref.location).iterdir() if p.is_file())
            raise UserError(
                f"backbone '{name}' ({ref.location}) has no *.safetensors weights (found: "
                f"{', '.join(found) or 'nothing'}); peft-bench loads weights only from "
                "safetensors files, never pickled .bin files"
            )


def check_positions(plan: Sequence[RunSpec]) -> None:
    """Runs whose input prompts take positions (``position: shift``) must fit ``max_length``
    plus the prompt into the backbone's position table: the method's own check, on the real
    backbone, before any data is tokenized (once per backbone, task, method config and length).
    """
    from bench.backbones import load_backbone, load_tokenizer, resolve_backbone
    from bench.train import ordinary_vocab_ids
    from methods import AttachData, build_method
    from tasks import get_task

    seen = set()
    for run in plan:
        if run.method_config.get("position") != "shift":
            continue
        spec = get_task(run.task)
        max_length = run.train.max_length or spec.max_length
        config = tuple(sorted((k, str(v)) for k, v in run.method_config.items()))
        ident = (run.backbone, run.task, run.method, config, max_length)
        if ident in seen:
            continue
        seen.add(ident)
        ref = resolve_backbone(run.backbone)
        tokenizer = load_tokenizer(ref, spec)
        method = build_method(run.method, run.method_config)
        keywords = tokenizer(" ".join(spec.keywords), add_special_tokens=False)["input_ids"]
        vocab = ordinary_vocab_ids(tokenizer)  # stands in for training tokens (cluster init)
        data = AttachData(keyword_ids=keywords, sample_ids=vocab, vocab_ids=vocab)
        model = method.attach(load_backbone(ref, spec, tokenizer.pad_token_id), spec, data)
        try:
            method.check_length(model, max_length)
        except UserError as error:
            raise UserError(f"{run.task} × {run.method}: {error}") from None


def run_serial(
    plan: Sequence[RunSpec],
    output: Path,
    device: str | None = None,
    progress: bool = False,
    save_delta: bool = False,
) -> list[dict[str, Any]]:
    """Run every pending run of ``plan`` in this process (finished runs are skipped) and
    return the plan's records; the programmatic form of ``run --executor serial``."""
    from bench.executors import ExecutorConfig
    from bench.sweep import run_sweep
    from bench.worker import WorkerOptions

    records.ensure_writable(output)
    options = WorkerOptions(output=str(output), device=device, save_delta=save_delta)
    return run_sweep(plan, output, ExecutorConfig(kind="serial"), options, progress=progress)
