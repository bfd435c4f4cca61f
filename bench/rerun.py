"""``python -m bench rerun RUN_ID``: run a recorded run again from its record alone, and compare.

The record's ``config`` is the fully resolved RunSpec (task, method and its config, backbone and
its content identity, data location and content identity, seed, training config), so nothing
else is needed. Before training, the backbone and data found now are checked against the
identities in the record: rerunning on different weights or data would not be a rerun.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from pathlib import Path
from typing import Any

from bench import records
from bench.config import RunSpec, TrainConfig
from bench.errors import UserError


def find_record(results: Path, run_id: str) -> dict[str, Any]:
    """The record whose key is ``run_id`` or starts with it (UserError if none or ambiguous)."""
    if not run_id or not all(c in "0123456789abcdef" for c in run_id):
        raise UserError(f"RUN_ID {run_id!r} must be a run key (hexadecimal), as in the index")
    matches = sorted(records.runs_dir(results).glob(f"{run_id}*.json"))
    if not matches:
        raise UserError(f"no record with key {run_id!r} under {records.runs_dir(results)}")
    if len(matches) > 1:
        keys = [m.stem for m in matches[:5]]
        raise UserError(f"RUN_ID {run_id!r} is ambiguous: {keys}; give more characters")
    record = records.read_record(results, matches[0].stem)
    if record is None or "config" not in record:
        raise UserError(f"record {matches[0]} is unreadable or has no config")
    return record


def spec_from_record(
    record: dict[str, Any], backbone: str | None = None, data_dir: str | None = None
) -> RunSpec:
    """The RunSpec of ``record``, optionally with the backbone or data found elsewhere; both
    must have the recorded content identity."""
    from bench.backbones import resolve_backbone
    from bench.data import data_identity
    from tasks import get_task

    config = dict(record["config"])
    config.pop("key", None)
    allowed = {f.name for f in dataclasses.fields(RunSpec)}
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise UserError(f"record config has unknown field(s) {unknown}; allowed: {sorted(allowed)}")
    # Records made before the precision field trained in fp32 on CPU (bf16 autocast on CUDA).
    cuda = str(record.get("device", "")).startswith("cuda")
    train = {"precision": "bf16" if cuda else "fp32", **config["train"]}
    config["train"] = TrainConfig.from_dict(train)
    ref = resolve_backbone(backbone or config["backbone"])
    if backbone:
        config["backbone"] = backbone  # the location here; the identity (in the key) is checked
    if ref.identity != config["backbone_identity"]:
        raise UserError(
            f"backbone {ref.name} has identity {ref.identity}, the record was trained on "
            f"{config['backbone_identity']}: not the same weights (pass --backbone)"
        )
    if data_dir is not None:
        config["data_dir"] = str(Path(data_dir).expanduser().resolve())
    found = data_identity(get_task(config["task"]), config["data_dir"])
    if found != config["data_identity"]:
        raise UserError(
            f"data for {config['task']} at {config['data_dir']} has identity {found}, the record "
            f"used {config['data_identity']}: not the same data (pass --data-dir)"
        )
    run = RunSpec(**config)
    if run.key != record["key"]:
        raise UserError(f"the record's config hashes to {run.key}, not its key {record['key']}")
    return run


def compare(recorded: dict[str, Any], again: dict[str, Any]) -> list[tuple[str, Any, Any, float]]:
    """(split/metric, recorded, rerun, |difference|) for every metric of the record."""
    rows = []
    for split, metrics in sorted((recorded.get("metrics") or {}).items()):
        for name, value in sorted(metrics.items()):
            new = ((again.get("metrics") or {}).get(split) or {}).get(name)
            if value is None or new is None:
                diff = 0.0 if value is None and new is None else math.inf
            else:
                diff = abs(float(value) - float(new))
            rows.append((f"{split}/{name}", value, new, diff))
    return rows


def rerun(
    results: Path,
    run_id: str,
    output: Path | None = None,
    device: str | None = None,
    backbone: str | None = None,
    data_dir: str | None = None,
    tolerance: float = 0.0,
) -> int:
    """Rerun the record ``run_id``, print the comparison, return 0 when metrics agree."""
    from tabulate import tabulate

    from bench.worker import WorkerOptions, run_one

    record = find_record(results, run_id)
    run = spec_from_record(record, backbone, data_dir)
    if output is None:
        output = Path(tempfile.mkdtemp(prefix=f"peft-bench-rerun-{run.key}-"))
    if output.resolve() == results.resolve():
        raise UserError("--output must differ from --results: a rerun never overwrites a record")
    records.ensure_writable(output)
    again = run_one(run, WorkerOptions(output=str(output), device=device))
    print(f"rerun of {run.label} (key {run.key}): status {again['status']}; record in {output}")
    if again["status"] != records.STATUS_OK or record.get("status") != records.STATUS_OK:
        print(f"recorded status {record.get('status')}, rerun status {again['status']}")
        return 0 if again["status"] == record.get("status") else 1
    rows = compare(record, again)
    print(tabulate(rows, headers=["metric", "recorded", "rerun", "|difference|"], floatfmt=".6g"))
    worst = max((row[3] for row in rows), default=0.0)
    if worst <= tolerance:
        print("reproduced: " + ("identical" if worst == 0 else f"within {tolerance:g}"))
        return 0
    print(f"NOT reproduced: largest difference {worst:.6g} > tolerance {tolerance:g}")
    return 1
