"""Slurm through submitit: one throttled job array per sweep, requeued on preemption.

Each array element trains one run with epoch checkpoints; on preemption or the time-limit
signal submitit requeues the element and the run resumes from its last finished epoch. The
driver waits (polling records and job states) unless ``wait`` is off; submitted job ids are kept
in ``OUTPUT/slurm/jobs.json`` so that a later invocation does not resubmit runs still queued or
running.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import records
from bench.errors import UserError
from bench.executors.base import Executor, SweepEvents

if TYPE_CHECKING:
    from bench.config import RunSpec
    from bench.worker import WorkerOptions

POLL_SECONDS = 15.0
#: Seconds before the time limit at which Slurm sends USR2, so that the element checkpoints and
#: requeues itself (submitit's handler) instead of being killed.
SIGNAL_DELAY_S = 120
#: Slurm states after which a job will not write its record any more.
FINAL_STATES = {
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "TIMEOUT",
    "PURGED",  # scontrol no longer knows it: it ended more than MinJobAge ago
}


def ledger_path(output: Path) -> Path:
    return output / "slurm" / "jobs.json"


def read_ledger(output: Path) -> dict[str, str]:
    """Run key → Slurm job id of every run submitted from this output directory."""
    try:
        return dict(json.loads(ledger_path(output).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


def job_state(output: Path, job_id: str) -> str:
    """Slurm's state of ``job_id``: from sacct (through submitit), or, on clusters without an
    accounting database, from ``scontrol`` (which knows a job until ``MinJobAge`` after it
    ended); ``UNKNOWN`` when neither can tell."""
    import submitit

    job = submitit.SlurmJob(folder=output / "slurm" / "%j", job_id=job_id)
    try:
        state = str(job.state).split()[0].upper()
    except Exception:  # sacct missing or failing: say so instead of crashing the driver
        state = "UNKNOWN"
    return scontrol_state(job_id) if state == "UNKNOWN" else state


def scontrol_state(job_id: str) -> str:
    """``JobState`` of ``job_id`` as ``scontrol show job`` reports it, or ``UNKNOWN``."""
    try:
        shown = subprocess.run(
            ["scontrol", "show", "job", "--oneliner", job_id],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except subprocess.CalledProcessError as error:
        return "PURGED" if "Invalid job id" in (error.stderr or "") else "UNKNOWN"
    except (OSError, subprocess.SubprocessError):
        return "UNKNOWN"
    found = re.search(r"\bJobState=(\S+)", shown)
    return found.group(1).upper() if found else "UNKNOWN"


def written_by(record: dict[str, Any] | None, job_id: str) -> bool:
    """Whether ``record`` was written by Slurm job ``job_id`` (``123_4`` for array elements),
    so that an older record of the same run (before --force or --rerun-failed) is not taken
    for the new job's result."""
    if record is None:
        return False
    where = record.get("placement") or {}
    element = f"{where.get('slurm_array_job_id')}_{where.get('slurm_array_task_id')}"
    return job_id in (element, where.get("slurm_job_id"))


def still_queued(output: Path, keys: Sequence[str]) -> dict[str, str]:
    """Of ``keys``, those submitted earlier whose job has not ended: key → job id."""
    ledger = read_ledger(output)
    live = {}
    for key in keys:
        job_id = ledger.get(key)
        if (
            job_id
            and not written_by(records.read_record(output, key), job_id)
            and job_state(output, job_id) not in FINAL_STATES
        ):
            live[key] = job_id
    return live


def ended_without_record(output: Path, runs: Sequence[RunSpec]) -> dict[str, tuple[str, str]]:
    """Of ``runs``, those that have no record at all although their submitted job has ended
    (cancelled, node lost, purged): key → (job id, Slurm state). A plain invocation records them
    as failed instead of silently submitting them again; ``--rerun-failed`` then reruns them."""
    ledger = read_ledger(output)
    ended = {}
    for run in runs:
        job_id = ledger.get(run.key)
        if job_id and records.read_record(output, run.key) is None:
            state = job_state(output, job_id)
            if state in FINAL_STATES:
                ended[run.key] = (job_id, state)
    return ended


def record_ended_job(run: RunSpec, job_id: str, state: str, output: Path) -> dict[str, Any]:
    """Write and return the record of a run whose Slurm job ended in ``state`` without one."""
    from bench.worker import base_record

    record = base_record(run)
    record.update(
        status="timeout" if state == "TIMEOUT" else "failed",
        error={
            "type": f"Slurm{state.title().replace('_', '')}",
            "message": f"Slurm job {job_id} ended {state} without a record; see {output}/slurm/",
            "traceback": "",
        },
        finished_at=records.utc_now(),
    )
    records.atomic_write_json(records.record_path(output, run.key), record)
    return record


class SlurmExecutor(Executor):
    name = "slurm"

    def execute(self, runs: Sequence[RunSpec], options: WorkerOptions, events: SweepEvents) -> None:
        try:
            import submitit
        except ImportError:
            raise UserError(
                "--executor slurm needs submitit: pip install 'peft-bench[slurm]'"
            ) from None
        from bench.executors.slurm_job import SlurmRun

        gpus = self.config.gpus_per_run or 0.0
        if gpus != int(gpus):
            raise UserError(
                f"--gpus-per-run {gpus:g}: Slurm allocates whole GPUs; use 1 (or ray to pack)"
            )
        output = Path(options.output)
        options = replace(options, executor=self.name, checkpoints=True)
        try:
            executor = submitit.AutoExecutor(folder=output / "slurm" / "%j", cluster="slurm")
        except RuntimeError as error:  # no srun/sbatch on this machine
            raise UserError(f"--executor slurm: {error}") from None
        parameters: dict[str, Any] = {
            "name": "peft-bench",
            "timeout_min": self.config.time_min,
            "slurm_array_parallelism": self.config.max_parallel,
            "cpus_per_task": max(1, int(round(self.config.cpus_per_run))),
            "tasks_per_node": 1,
            "nodes": 1,
            "slurm_signal_delay_s": SIGNAL_DELAY_S,
            "slurm_additional_parameters": {"requeue": True},
        }
        if gpus:
            parameters["gpus_per_node"] = int(gpus)
        if self.config.partition:
            parameters["slurm_partition"] = self.config.partition
        if self.config.mem_gb:
            parameters["mem_gb"] = self.config.mem_gb
        executor.update_parameters(**parameters)
        live = still_queued(output, [run.key for run in runs])
        ended = ended_without_record(output, [run for run in runs if run.key not in live])
        for run in runs:
            if run.key in ended:
                job_id, state = ended[run.key]
                events.finished(record_ended_job(run, job_id, state, output))
        if ended:
            print(
                f"{len(ended)} Slurm job(s) ended without a record (cancelled or lost); recorded "
                "as failed, not resubmitted: --rerun-failed runs them again"
            )
        to_submit = [run for run in runs if run.key not in live and run.key not in ended]
        try:
            jobs = executor.map_array(SlurmRun(options), to_submit) if to_submit else []
        except Exception as error:  # sbatch missing or refusing: a clear message, not a trace
            raise UserError(f"Slurm submission failed: {error}") from None
        submitted = {run.key: job.job_id for run, job in zip(to_submit, jobs, strict=True)}
        ledger = {**read_ledger(output), **submitted}
        records.atomic_write_json(ledger_path(output), ledger)
        if live:
            print(f"{len(live)} run(s) still queued or running on Slurm; not resubmitted")
        if jobs:
            print(f"submitted Slurm array {jobs[0].job_id.split('_')[0]} ({len(jobs)} runs)")
        if not self.config.wait:
            print("not waiting (--no-wait): run the same command again to index finished runs")
            return
        self._wait(runs, {run.key: ledger[run.key] for run in runs}, output, events)

    def _wait(
        self,
        runs: Sequence[RunSpec],
        job_ids: dict[str, str],
        output: Path,
        events: SweepEvents,
    ) -> None:
        pending = {run.key: run for run in runs}
        while pending:
            for key, run in list(pending.items()):
                record = records.read_record(output, key)
                if not written_by(record, job_ids[key]):
                    state = job_state(output, job_ids[key])
                    if state not in FINAL_STATES:
                        continue
                    record = record_ended_job(run, job_ids[key], state, output)
                del pending[key]
                events.finished(record)
            if pending:
                events.waiting(list(pending.values()))
                time.sleep(POLL_SECONDS)
