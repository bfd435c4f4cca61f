"""The driver of a sweep: choose what to run, hand it to an executor, index what comes back.

Only the driver appends to the index. It holds a lock on the output directory (a second driver
on the same directory gets a clear error; the lock dies with its process, even on SIGKILL),
repairs the index before starting (torn lines dropped, records that a killed driver never
indexed added), and shows one progress bar: done / failed / running and the ETA.

A sweep with hyperparameter searches runs in two stages (:func:`run_stages`): the search runs,
then the final runs of every cell whose search is complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import records
from bench.config import RunSpec
from bench.errors import StorageError, UserError
from bench.executors import ExecutorConfig, get_executor
from bench.worker import WorkerOptions

if TYPE_CHECKING:
    from bench.runner import SweepPlan

#: Statuses that ``--rerun-failed`` runs again. ``diverged`` is a result of the configuration
#: (it is reported as such); ``--force`` reruns it like everything else.
RERUN_STATUSES = ("failed", "timeout")


@dataclass(frozen=True)
class Selection:
    """What to do with each planned run."""

    to_run: list[RunSpec]
    counts: Counter[str]  # status → number of planned runs, before selection
    statuses: dict[str, str]  # run key → status before selection (``pending``: no record)


def select_runs(
    plan: Sequence[RunSpec],
    output: Path,
    rerun_failed: bool = False,
    force: bool = False,
    save_delta: bool = False,
    rerun_stale: bool = False,
) -> Selection:
    """Pending runs, plus failed ones with ``rerun_failed``, plus everything with ``force``.
    With ``save_delta``, finished runs that have no stored delta run again to produce it.
    An ok record whose ``method_source`` differs from the method's current source hash is
    ``stale`` (records without the hash are not judged); ``rerun_stale`` runs those again."""
    from methods import method_source_hash

    counts: Counter[str] = Counter()
    statuses: dict[str, str] = {}
    to_run = []
    for run in plan:
        record = records.read_record(output, run.key)
        status = record.get("status", "pending") if record else "pending"
        made_by = (record or {}).get("method_source")
        if status == records.STATUS_OK and made_by and made_by != method_source_hash(run.method):
            status = "stale"
            if rerun_stale:
                to_run.append(run)
        counts[status] += 1
        statuses[run.key] = status
        missing_delta = save_delta and status == records.STATUS_OK and "delta_file" not in record
        if status == "stale" and rerun_stale:
            continue  # already chosen above
        if (
            force
            or status == "pending"
            or (rerun_failed and status in RERUN_STATUSES)
            or missing_delta
        ):
            to_run.append(run)
    return Selection(to_run=to_run, counts=counts, statuses=statuses)


def describe_counts(selection: Selection, total: int) -> str:
    done = selection.counts.get(records.STATUS_OK, 0)
    others = ", ".join(
        f"{n} {status}"
        for status, n in sorted(selection.counts.items())
        if status not in (records.STATUS_OK, "pending")
    )
    text = f"{total} runs planned, {done} already done"
    if others:
        text += f", {others}"
    return text + f"; {len(selection.to_run)} to run"


@contextlib.contextmanager
def output_lock(output: Path) -> Iterator[None]:
    """Exclusive use of ``output`` by one driver (released when the process ends, however)."""
    output.mkdir(parents=True, exist_ok=True)
    path = output / ".lock"
    handle = path.open("a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise UserError(
                f"another sweep (pid {holder}) is using {output}; wait for it or choose "
                "another --output"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()


class Progress:
    """The driver's progress bar and the index writer (the executors' ``SweepEvents``)."""

    def __init__(self, output: Path, total: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.output = output
        self.counts: Counter[str] = Counter()
        self.running: set[str] = set()
        self.bar = tqdm(total=total, desc="sweep", unit="run", disable=not enabled or None)
        self.enabled = enabled

    def started(self, run: RunSpec) -> None:
        self.running = {run.key}
        self._refresh()

    def waiting(self, in_flight: Sequence[RunSpec]) -> None:
        self.running = {
            r.key for r in in_flight if records.running_path(self.output, r.key).exists()
        }
        self._refresh()

    def finished(self, record: dict[str, Any]) -> None:
        records.append_index(self.output, record)
        self.counts[record["status"]] += 1
        self.running.discard(record["key"])
        primary = record.get("primary") or {}
        outcome = ", ".join(f"{s}={v:.4f}" for s, v in primary.items() if v is not None)
        if record["status"] != records.STATUS_OK:
            outcome = (record.get("error") or {}).get("message", "")[:100]
        line = (
            f"{record['status']:>8} {record['task']}/{record['method']}/seed{record['seed']} "
            f"{outcome} [{records.log_path(self.output, record['key'])}]"
        )
        if self.enabled:
            self.bar.write(line, file=sys.stderr)
        self.bar.update(1)
        self._refresh()

    def _refresh(self) -> None:
        failed = sum(n for s, n in self.counts.items() if s != records.STATUS_OK)
        self.bar.set_postfix(
            done=self.counts[records.STATUS_OK], failed=failed, running=len(self.running)
        )

    def close(self) -> None:
        self.bar.close()


def run_sweep(
    plan: Sequence[RunSpec],
    output: Path,
    executor: ExecutorConfig,
    options: WorkerOptions,
    rerun_failed: bool = False,
    force: bool = False,
    progress: bool = True,
    impossible: dict[str, str] | None = None,
    rerun_stale: bool = False,
) -> list[dict[str, Any]]:
    """Run what the plan still needs; return the plan's records (finished ones included).
    ``impossible`` (run key → reason, from :func:`bench.pairs.pair_problems`): those runs are
    recorded ``failed`` with the reason instead of being run, and the sweep goes on."""
    with output_lock(output):
        fixed = records.repair_index(output)
        if fixed["torn_lines"] or fixed["added"]:
            print(
                f"index repaired: {fixed['torn_lines']} torn line(s) dropped, "
                f"{fixed['added']} record(s) indexed",
                file=sys.stderr,
            )
        selection = select_runs(
            plan, output, rerun_failed, force, options.save_delta, rerun_stale=rerun_stale
        )
        print(describe_counts(selection, len(plan)), file=sys.stderr)
        config = executor.resolved()
        options = replace(options, force=force or rerun_stale)
        if config.kind != "slurm":
            for run in selection.to_run:  # markers left by a killed worker
                records.running_path(output, run.key).unlink(missing_ok=True)
        refused = [r for r in selection.to_run if r.key in (impossible or {})]
        if refused:
            from bench.pairs import failed_record

            selection = replace(selection, to_run=[r for r in selection.to_run if r not in refused])
        events = Progress(output, len(selection.to_run) + len(refused), progress)
        for run in refused:
            record = failed_record(run, (impossible or {})[run.key])
            records.atomic_write_json(records.record_path(output, run.key), record)
            events.finished(record)
        try:
            if selection.to_run:
                get_executor(config).execute(selection.to_run, options, events)
        except ConnectionError:
            raise
        except OSError as error:  # a record, checkpoint or the index could not be written
            raise StorageError(
                f"cannot write under {output}: {error}. Finished runs are safe; run the same "
                "command again once the problem is fixed to finish the rest."
            ) from None
        finally:
            events.close()
    out = []
    for run in plan:
        record = records.read_record(output, run.key)
        if record is not None:
            out.append(record)
    return out


def run_stages(
    sweep: SweepPlan,
    output: Path,
    executor: ExecutorConfig,
    options: WorkerOptions,
    rerun_failed: bool = False,
    force: bool = False,
    progress: bool = True,
    impossible: dict[str, str] | None = None,
    rerun_stale: bool = False,
) -> tuple[list[dict[str, Any]], list[RunSpec]]:
    """Stage one (plain and search runs), then stage two (the winners' final runs of every
    complete search), each through :func:`run_sweep`; returns (records, the runs planned).
    The search records go to ``output/searches`` first, under the output lock. A search still
    incomplete after stage one (runs failed, or queued on Slurm with ``--no-wait``) gets its
    final runs from a later invocation of the same command. ``impossible`` and
    ``rerun_stale``: see :func:`run_sweep` (the final runs, planned only now, get their
    (method, backbone) pairs checked here)."""
    from bench.runner import preflight
    from bench.search import describe_searches, write_cells

    with output_lock(output):  # a sweep refused for another's lock writes nothing there
        write_cells(output, sweep.cells)
    stage_one = sweep.stage_one()
    stages = {"impossible": impossible, "rerun_stale": rerun_stale}
    results = run_sweep(
        stage_one, output, executor, options, rerun_failed, force, progress, **stages
    )
    if not sweep.cells:
        return results, stage_one
    done = {run.key for run in stage_one}
    finals = [run for run in sweep.finals(output) if run.key not in done]
    print(describe_searches(sweep.states(output)), file=sys.stderr)
    if finals:
        preflight(finals)
        if impossible is not None:
            from bench.pairs import pair_problems

            stages["impossible"] = {**impossible, **pair_problems(finals)}
        results += run_sweep(
            finals, output, executor, options, rerun_failed, force, progress, **stages
        )
    return results, stage_one + finals
