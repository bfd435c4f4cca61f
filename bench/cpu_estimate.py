"""A rough CPU-time estimate of a plan, shown by ``run --dry-run`` on machines without CUDA.

It is calibrated on measured runs, not on FLOPs: the shipped reference sweep
(``results/reference/cpu-mini``, MiniLM-L6 on 2 CPU cores) records for each (task, method) its
training seconds, examples and epochs, and its evaluation seconds and examples. A planned run is
predicted as

    seconds ≈ s_train × train examples × epochs + s_eval × evaluated examples

with ``s_train`` and ``s_eval`` the median seconds per example of the reference runs of the same
(task, method), else of the same method, else of all; scaled by the backbone's parameter count
against MiniLM's and by the reference's torch threads against this process's. The reference
runs shared their 2 cores with tests, so the estimate errs on the long side.
"""

from __future__ import annotations

import functools
import json
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.config import RunSpec

REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference" / "cpu-mini"
ASSUMPTION = (
    "calibrated on the shipped cpu-mini runs (MiniLM, 2 CPU cores), scaled by backbone size and "
    "threads"
)


@dataclass(frozen=True)
class Rate:
    """Measured seconds per example of one reference run."""

    task: str
    method: str
    train_s: float  # per training example and epoch
    eval_s: float  # per evaluated example
    threads: int
    parameters: float  # the reference backbone's


def _rate(record: dict[str, Any]) -> Rate | None:
    timing, sizes = record.get("timing") or {}, record.get("sizes") or {}
    train = (record.get("config") or {}).get("train") or {}
    epochs = train.get("epochs")
    if record.get("status") != "ok" or not sizes.get("train") or not epochs:
        return None
    evaluations = len(record.get("curve") or []) or epochs
    evaluated = sizes.get("selection", 0) * evaluations + sum(
        n for k, n in sizes.items() if k.startswith("eval_")
    )
    eval_seconds = timing.get("selection_eval_s", 0.0) + timing.get("final_eval_s", 0.0)
    threads = re.search(r"(\d+) threads", str(record.get("device", "")))
    params = (record.get("params") or {}).get("backbone") or 0
    if not params or not evaluated:
        return None
    return Rate(
        task=str(record["task"]),
        method=str(record["method"]),
        train_s=float(timing["train_s"]) / (sizes["train"] * epochs),
        eval_s=eval_seconds / evaluated,
        threads=int(threads.group(1)) if threads else 1,
        parameters=float(params),
    )


@functools.cache
def reference_rates(folder: Path = REFERENCE) -> tuple[Rate, ...]:
    """Rates of the reference records in ``folder`` (empty when it is absent)."""
    out = []
    for path in sorted(Path(folder).glob("runs/*.json")):
        try:
            rate = _rate(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if rate is not None:
            out.append(rate)
    return tuple(out)


def _matching(rates: tuple[Rate, ...], task: str, method: str) -> list[Rate]:
    for chosen in (
        [r for r in rates if r.task == task and r.method == method],
        [r for r in rates if r.method == method],
        list(rates),
    ):
        if chosen:
            return chosen
    return []


def estimate_cpu_seconds(
    run: RunSpec,
    train_size: int | None,
    eval_sizes: dict[str, int],
    parameters: float | None,
    threads: int,
    rates: tuple[Rate, ...] | None = None,
) -> float | None:
    """Predicted CPU seconds of ``run`` (None when the data's size or the backbone's is
    unknown, or no reference run exists). ``train_size``: examples in the task's train split;
    ``eval_sizes``: examples of each evaluation split."""
    rates = reference_rates() if rates is None else rates
    chosen = _matching(rates, run.task, run.method)
    if not chosen or train_size is None or parameters is None:
        return None
    cfg = run.train
    pool = min(train_size, cfg.max_train_samples or train_size)
    selection = max(1, round(pool * cfg.val_fraction))
    steps_per_epoch = math.ceil((pool - selection) / cfg.batch_size)
    evaluations = cfg.epochs * (
        math.ceil(steps_per_epoch / cfg.eval_every) if cfg.eval_every else 1
    )
    cap = cfg.max_eval_samples
    evaluated = selection * (evaluations + 1) + sum(min(n, cap or n) for n in eval_sizes.values())
    train_s = statistics.median(r.train_s for r in chosen)
    eval_s = statistics.median(r.eval_s for r in chosen)
    scale = (parameters / statistics.median(r.parameters for r in chosen)) * (
        statistics.median(r.threads for r in chosen) / max(1, threads)
    )
    return scale * (train_s * (pool - selection) * cfg.epochs + eval_s * evaluated)
