"""The callable each Slurm array element runs (imported only when submitit is installed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import submitit

if TYPE_CHECKING:
    from bench.config import RunSpec
    from bench.worker import WorkerOptions


class SlurmRun(submitit.helpers.Checkpointable):
    """Trains one run. On preemption or the time-limit signal, submitit calls ``checkpoint``
    (inherited): the element is requeued with the same run, which resumes from its last epoch
    checkpoint."""

    def __init__(self, options: WorkerOptions) -> None:
        self.options = options

    def __call__(self, run: RunSpec) -> str:
        from bench.worker import run_one

        return run_one(run, self.options)["status"]
