"""Planning: methods × tasks × seeds × backbones → one resolved RunSpec per run.

Each run's configuration is layered: method defaults, then the suite's settings that match its
(task, method) in file order, then command-line flags. Execution lives in :mod:`bench.sweep`
(driver), :mod:`bench.executors` and :mod:`bench.worker`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import records
from bench.config import RunSpec, TrainConfig
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


def build_plan(request: PlanRequest) -> list[RunSpec]:
    """Resolve names, identities and configs into one RunSpec per run (UserError on bad input)."""
    from bench.backbones import resolve_backbone
    from bench.data import data_identity
    from methods import get_method
    from tasks import get_task

    specs = [get_task(name) for name in _unique(request.tasks)]
    method_classes = [get_method(name) for name in _unique(request.methods)]
    refs = [resolve_backbone(name) for name in _unique(request.backbones)]
    identities = {spec.name: data_identity(spec, request.data_dir) for spec in specs}
    plan = []
    for ref in refs:
        for spec in specs:
            for cls in method_classes:
                suite_train, suite_method = (
                    request.suite.overrides(spec.name, cls.name) if request.suite else ({}, {})
                )
                try:
                    train = TrainConfig.from_dict({**suite_train, **request.train})
                    config = cls.config_cls.from_dict(
                        {**suite_method, **request.method_overrides}
                    ).to_dict()
                except UserError as error:
                    raise UserError(f"{spec.name} × {cls.name}: {error}") from None
                train = _resolved_precision(train, cls.name, request.device)
                for seed in request.seeds:
                    plan.append(
                        RunSpec(
                            task=spec.name,
                            method=cls.name,
                            method_config=config,
                            backbone=ref.name,
                            backbone_identity=ref.identity,
                            data_dir=str(Path(request.data_dir).expanduser().resolve())
                            if request.data_dir
                            else None,
                            data_identity=identities[spec.name],
                            seed=seed,
                            train=train,
                        )
                    )
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


def _unique(names: Sequence[str]) -> list[str]:
    """``names`` without repeats, in order (``--tasks rte,rte`` plans rte once)."""
    return list(dict.fromkeys(names))


def preflight(plan: Sequence[RunSpec]) -> None:
    """Load every task's data and check every backbone before the first run starts, so that bad
    input fails at once with a clear message instead of once per run."""
    from bench.backbones import load_tokenizer, resolve_backbone
    from bench.data import load_task
    from tasks import get_task

    for task, data_dir in sorted({(r.task, r.data_dir) for r in plan}, key=str):
        load_task(get_task(task), data_dir)
    for backbone, task in sorted({(r.backbone, r.task) for r in plan}):
        load_tokenizer(resolve_backbone(backbone), get_task(task))


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
