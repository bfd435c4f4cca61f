"""Planning (methods × tasks × seeds × backbones → RunSpecs) and serial execution with records.

Finished runs (a record with status ``ok``) are skipped. A run that raises gets a ``failed``
record carrying the original exception; a NaN/inf loss gives ``diverged``. The sweep goes on.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import records
from bench.config import RunSpec, TrainConfig
from bench.errors import UserError

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


def build_plan(request: PlanRequest) -> list[RunSpec]:
    """Resolve names, identities and configs into one RunSpec per run (UserError on bad input)."""
    from bench.backbones import resolve_backbone
    from bench.data import data_identity
    from methods import get_method
    from tasks import get_task

    specs = [get_task(name) for name in _unique(request.tasks)]
    method_classes = [get_method(name) for name in _unique(request.methods)]
    refs = [resolve_backbone(name) for name in _unique(request.backbones)]
    train = TrainConfig.from_dict(request.train)
    identities = {spec.name: data_identity(spec, request.data_dir) for spec in specs}
    plan = []
    for ref in refs:
        for spec in specs:
            for cls in method_classes:
                config = cls.config_cls.from_dict(request.method_overrides).to_dict()
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


def _unique(names: Sequence[str]) -> list[str]:
    """``names`` without repeats, in order (``--tasks rte,rte`` plans rte once)."""
    return list(dict.fromkeys(names))


def status_of(output: Path, run: RunSpec) -> str:
    """``ok``/``failed``/``diverged`` from an existing record, else ``pending``."""
    record = records.read_record(output, run.key)
    return record.get("status", "pending") if record else "pending"


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


def execute_run(
    run: RunSpec,
    output: Path,
    device: str | None = None,
    progress: bool = True,
    save_delta: bool = False,
) -> dict[str, Any]:
    """Train ``run``, write its record atomically and append it to the index; return the record."""
    from bench.train import DivergedError, train_run
    from tasks import get_task

    spec = get_task(run.task)
    record: dict[str, Any] = {
        "schema": records.SCHEMA_VERSION,
        "key": run.key,
        "task": run.task,
        "method": run.method,
        "seed": run.seed,
        "backbone": run.backbone,
        "config": run.to_dict(),
        "protocol": {
            "selection_split": f"carved from train (val_fraction {run.train.val_fraction}, "
            f"seeded by the run seed)",
            "report_splits": list(spec.report_splits),
            "primary_metric": spec.primary_metric,
        },
        "started_at": records.utc_now(),
        "environment": records.environment(),
    }
    started = time.perf_counter()
    try:
        delta = records.delta_path(output, run.key) if save_delta else None
        result = train_run(run, device=device, progress=progress, delta_path=delta)
    except DivergedError as error:
        record.update(status="diverged", error=_error_info(error))
    except (KeyboardInterrupt, SystemExit, UserError):
        raise  # bad input (e.g. a mode the backbone cannot run) stops the sweep, writes nothing
    except Exception as error:  # isolation: one broken run must not stop the sweep
        record.update(status="failed", error=_error_info(error))
    else:
        record.update(
            status=records.STATUS_OK,
            metrics=result.metrics,
            primary={s: result.metrics[s][spec.primary_metric] for s in spec.report_splits},
            best=result.best,
            curve=result.curve,
            params=result.params,
            sizes=result.sizes,
            timing=result.timing,
            peak_memory_bytes=result.peak_memory_bytes,
            device=result.device,
            max_length=result.max_length,
            **result.extra,
        )
    if save_delta and record["status"] == records.STATUS_OK:
        record["delta_file"] = str(records.delta_path(output, run.key).relative_to(output))
    record["wall_time_s"] = time.perf_counter() - started
    record["finished_at"] = records.utc_now()
    records.atomic_write_json(records.record_path(output, run.key), record)
    records.append_index(output, record)
    return record


def _error_info(error: BaseException) -> dict[str, str]:
    return {
        "type": type(error).__name__,
        "message": str(error),
        "traceback": "".join(traceback.format_exception(error)),
    }


def run_serial(
    plan: Sequence[RunSpec],
    output: Path,
    device: str | None = None,
    progress: bool = True,
    save_delta: bool = False,
) -> list[dict[str, Any]]:
    """Run every pending run of ``plan`` in this process; finished runs are skipped."""
    done = []
    for run in plan:
        existing = records.read_record(output, run.key)
        finished = existing and existing.get("status") == records.STATUS_OK
        if finished and not (save_delta and "delta_file" not in existing):
            done.append(existing)
            continue
        record = execute_run(run, output, device=device, progress=progress, save_delta=save_delta)
        done.append(record)
    return done
