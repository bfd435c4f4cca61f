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

from bench.errors import StorageError, UserError
from bench.executors.base import Executor, SweepEvents
from bench.worker import STORAGE_ERRNOS

if TYPE_CHECKING:
    from bench.config import RunSpec
    from bench.worker import WorkerOptions

POLL_SECONDS = 1.0


def _run_in_worker(run: RunSpec, options: WorkerOptions) -> dict[str, Any]:
    from bench.worker import run_one

    return run_one(run, options)


def _forwarded_env() -> dict[str, Any] | None:
    """The driver's fault-injection setting, for workers on nodes started before it was set."""
    from bench.faults import ENV

    value = os.environ.get(ENV)
    return {"env_vars": {ENV: value}} if value else None


def check_resources(gpus_per_run: float, cpus_per_run: float) -> dict[str, float]:
    """Fail at once (not hang) when no node of the cluster can host one run: one node must
    have both the GPUs and the CPUs a run asks for."""
    import ray

    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    total = ray.cluster_resources()
    fits = any(
        n.get("GPU", 0.0) >= gpus_per_run and n.get("CPU", 0.0) >= cpus_per_run for n in nodes
    )
    if not fits:
        shapes = sorted({(n.get("GPU", 0.0), n.get("CPU", 0.0)) for n in nodes}, reverse=True)
        described = ", ".join(f"{g:g} GPUs + {c:g} CPUs" for g, c in shapes) or "no live nodes"
        raise UserError(
            f"--gpus-per-run {gpus_per_run:g} --cpus-per-run {cpus_per_run:g}: no node of the "
            f"Ray cluster has that many GPUs and CPUs (nodes: {described}; cluster total "
            f"{total.get('GPU', 0):g} GPUs). Lower the request, or --gpus-per-run 0 for CPUs."
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
            gpus = self.config.gpus_per_run
            if gpus is None:  # decided by the cluster, not by the driver's machine
                gpus = 1.0 if ray.cluster_resources().get("GPU", 0) else 0.0
            check_resources(gpus, self.config.cpus_per_run)
            remote = ray.remote(_run_in_worker).options(
                num_gpus=gpus,
                num_cpus=self.config.cpus_per_run,
                max_retries=self.config.max_retries,
                retry_exceptions=False,
                runtime_env=_forwarded_env(),
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
                    except ray.exceptions.RayError as error:
                        cause = getattr(error, "cause", None) or error
                        if isinstance(cause, OSError) and cause.errno in STORAGE_ERRNOS:
                            for other in pending:
                                ray.cancel(other, force=True)
                            raise StorageError(
                                f"cannot write under {options.output}: {cause}"
                            ) from None
                        record = _record_after_crash(options, run, cause)
                    events.finished(record)
        finally:
            if started_here:
                ray.shutdown()


def _record_after_crash(
    options: WorkerOptions, run: RunSpec, cause: BaseException
) -> dict[str, Any]:
    """The record of a run whose worker raised or died after Ray's retries: the record the
    worker wrote, if it got that far, else a ``failed`` one (bad input found only now, such as
    a length the model cannot hold, fails that run alone rather than the sweep)."""
    from pathlib import Path

    from bench import records
    from bench.worker import base_record, error_info, is_finished

    output = Path(options.output)
    existing = records.read_record(output, run.key)
    if is_finished(existing, options):
        return existing
    record = base_record(run)
    record.update(status="failed", error=error_info(cause), finished_at=records.utc_now())
    records.atomic_write_json(records.record_path(output, run.key), record)
    return record
