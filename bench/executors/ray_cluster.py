"""Ray: one task per run with ``num_gpus``, on the local GPUs or on a Ray cluster.

Runs spread over all GPUs Ray knows; ``gpus_per_run=0.5`` packs two runs per GPU. Joining a
cluster (``--address auto`` or ``RAY_ADDRESS``) uses the same code path. Only system failures (a
worker process or node dying) are retried, by Ray (``max_retries``); a run's own exception is
already a ``failed`` record. A run that still dies gets a ``failed`` record from the driver.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from bench.errors import UserError
from bench.executors.base import Executor, SweepEvents

if TYPE_CHECKING:
    from bench.config import RunSpec
    from bench.worker import WorkerOptions

POLL_SECONDS = 1.0


def _run_in_worker(run: RunSpec, options: WorkerOptions) -> dict[str, Any]:
    from bench.worker import run_one

    return run_one(run, options)


def check_resources(gpus_per_run: float, cpus_per_run: float) -> dict[str, float]:
    """Fail at once (not hang) when no node of the cluster can host one run."""
    import ray

    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    most_gpus = max((n.get("GPU", 0.0) for n in nodes), default=0.0)
    most_cpus = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
    total = ray.cluster_resources()
    if gpus_per_run > most_gpus:
        raise UserError(
            f"--gpus-per-run {gpus_per_run:g}: no node of the Ray cluster has that many GPUs "
            f"(largest node: {most_gpus:g} GPUs; cluster total: {total.get('GPU', 0):g}). "
            "Use --gpus-per-run 0 to run on CPUs."
        )
    if cpus_per_run > most_cpus:
        raise UserError(
            f"--cpus-per-run {cpus_per_run:g}: no node of the Ray cluster has that many CPUs "
            f"(largest node: {most_cpus:g})"
        )
    return {"GPU": float(total.get("GPU", 0)), "CPU": float(total.get("CPU", 0))}


class RayExecutor(Executor):
    name = "ray"

    def execute(self, runs: Sequence[RunSpec], options: WorkerOptions, events: SweepEvents) -> None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        try:
            import ray
        except ImportError:
            raise UserError("--executor ray needs Ray: pip install 'peft-bench[ray]'") from None
        from bench.worker import base_record, error_info

        started_here = not ray.is_initialized()
        if started_here:
            address = self.config.address or os.environ.get("RAY_ADDRESS")
            try:
                ray.init(
                    address=address,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
            except (ConnectionError, RuntimeError) as error:
                raise UserError(
                    f"cannot start or join Ray (address {address!r}): {error}"
                ) from None
        try:
            gpus = float(self.config.gpus_per_run or 0.0)
            check_resources(gpus, self.config.cpus_per_run)
            remote = ray.remote(_run_in_worker).options(
                num_gpus=gpus,
                num_cpus=self.config.cpus_per_run,
                max_retries=self.config.max_retries,
                retry_exceptions=False,
            )
            options = replace(options, executor=self.name)
            pending = {remote.remote(run, options): run for run in runs}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
                events.waiting(list(pending.values()))
                for ref in ready:
                    run = pending.pop(ref)
                    try:
                        record = ray.get(ref)
                    except UserError:
                        for other in pending:
                            ray.cancel(other, force=True)
                        raise
                    except ray.exceptions.RayError as error:  # the worker died, retries spent
                        record = base_record(run)
                        cause = getattr(error, "cause", None) or error
                        record.update(status="failed", error=error_info(cause))
                        _write(options, run, record)
                    events.finished(record)
        finally:
            if started_here:
                ray.shutdown()


def _write(options: WorkerOptions, run: RunSpec, record: dict[str, Any]) -> None:
    from pathlib import Path

    from bench import records

    record["finished_at"] = records.utc_now()
    records.atomic_write_json(records.record_path(Path(options.output), run.key), record)
