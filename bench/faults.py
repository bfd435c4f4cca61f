"""Fault injection for the reliability tests: crashes, OOM, NaN, hangs and kills on demand.

Inactive unless the environment variable ``PEFT_BENCH_FAULTS`` holds a JSON list of faults,
so the same faults reach in-process, Ray and Slurm workers. Each fault is a mapping::

    {"fault": "raise" | "oom" | "nan" | "hang" | "sigkill",
     "task": "sst2", "method": "full_finetune", "seed": 13,   # optional filters
     "step": 2}                                               # or "epoch": 1 (after it ends)

``oom`` raises CUDA's out-of-memory error only while the run uses its full micro-batch, so the
runner's retry with half the micro-batch goes through. ``nan`` makes that step's loss NaN.
``"once": "/path/marker"`` fires the fault only if the marker file does not exist yet (and
creates it), e.g. to kill a Ray worker on the first attempt only.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import time
from typing import TYPE_CHECKING, Any

from bench.errors import UserError

if TYPE_CHECKING:
    from bench.config import RunSpec

ENV = "PEFT_BENCH_FAULTS"
KINDS = ("raise", "oom", "nan", "hang", "sigkill")


class InjectedFault(RuntimeError):
    """The error raised by a ``raise`` fault."""


@functools.cache
def _parse(text: str) -> tuple[dict[str, Any], ...]:
    try:
        faults = json.loads(text)
    except ValueError as error:
        raise UserError(f"{ENV} is not valid JSON: {error}") from None
    if not isinstance(faults, list) or not all(isinstance(f, dict) for f in faults):
        raise UserError(f"{ENV} must be a JSON list of mappings")
    for fault in faults:
        if fault.get("fault") not in KINDS:
            raise UserError(f"{ENV}: fault {fault.get('fault')!r} unknown; valid: {list(KINDS)}")
    return tuple(faults)


def _matching(run: RunSpec, **where: int) -> list[dict[str, Any]]:
    text = os.environ.get(ENV)
    if not text:
        return []
    out = []
    for fault in _parse(text):
        if any(k in fault and fault[k] != getattr(run, k) for k in ("task", "method", "seed")):
            continue
        if not all(fault.get(k) == v for k, v in where.items()):
            continue
        if "once" in fault:
            try:
                with open(fault["once"], "x", encoding="utf-8"):
                    pass
            except FileExistsError:
                continue
        out.append(fault)
    return out


def at_step(run: RunSpec, step: int, full_micro_batch: bool) -> bool:
    """Called before training step ``step`` (1-based). Returns True when the loss must be NaN."""
    poison = False
    for fault in _matching(run, step=step):
        kind = fault["fault"]
        if kind == "oom" and full_micro_batch:
            import torch

            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected fault)")
        poison = poison or kind == "nan"
        _act(kind)
    return poison


def at_epoch_end(run: RunSpec, epoch: int) -> None:
    """Called after epoch ``epoch`` ended and its checkpoint (if any) was written."""
    for fault in _matching(run, epoch=epoch):
        _act(fault["fault"])


def _act(kind: str) -> None:
    if kind == "raise":
        raise InjectedFault("injected failure")
    if kind == "hang":
        while True:
            time.sleep(3600)
    if kind == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
