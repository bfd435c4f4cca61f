"""Executors: how a sweep's runs get onto hardware. One module per executor, one registry.

``serial`` trains in this process; ``ray`` sends one Ray task per run (local GPUs or a Ray
cluster); ``slurm`` submits a throttled job array through submitit. All of them call
:func:`bench.worker.run_one` for each run and report finished records to the driver, which alone
writes the index.
"""

from __future__ import annotations

from bench.executors.base import EXECUTOR_NAMES, Executor, ExecutorConfig, SweepEvents


def get_executor(config: ExecutorConfig) -> Executor:
    """The executor ``config.kind`` names (``auto`` already resolved by the config)."""
    from bench.executors.ray_cluster import RayExecutor
    from bench.executors.serial import SerialExecutor
    from bench.executors.slurm import SlurmExecutor

    registry: dict[str, type[Executor]] = {
        cls.name: cls for cls in (SerialExecutor, RayExecutor, SlurmExecutor)
    }
    return registry[config.kind](config)


__all__ = ["EXECUTOR_NAMES", "Executor", "ExecutorConfig", "SweepEvents", "get_executor"]
