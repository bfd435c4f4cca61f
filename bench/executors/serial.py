"""In-process execution, one run after the other (the default without GPUs)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from bench.executors.base import Executor, SweepEvents

if TYPE_CHECKING:
    from bench.config import RunSpec
    from bench.worker import WorkerOptions


class SerialExecutor(Executor):
    name = "serial"

    def execute(self, runs: Sequence[RunSpec], options: WorkerOptions, events: SweepEvents) -> None:
        from bench.worker import run_one

        options = replace(options, executor=self.name)
        for run in runs:
            events.started(run)
            events.finished(run_one(run, options))
