"""The worker side of a sweep: train one run and write its record. Same code in every executor.

The worker writes the run's record atomically (``runs/<key>.json``) and never touches the
index: only the driver appends to it. While a run trains, ``running/<key>.json`` says where
(host, pid, GPUs) and its log goes to ``logs/<key>.log``.

Outcomes: ``ok``; ``diverged`` (NaN/inf loss); ``failed`` with the original exception's type,
message and traceback. Bad input (``UserError``) propagates: it stops the sweep and writes
nothing. CUDA out-of-memory is retried once with half the micro-batch and twice the gradient
accumulation (same effective batch); the record's ``oom_retry`` says so.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import records
from bench.config import RunSpec
from bench.errors import UserError


@dataclass(frozen=True)
class WorkerOptions:
    """How workers run (picklable: sent to Ray and Slurm workers)."""

    output: str
    device: str | None = None
    save_delta: bool = False
    checkpoints: bool = False
    executor: str = "serial"
    progress: bool = False
    timeout_s: float | None = None
    force: bool = False
    threads: int | None = None  # torch threads per run (None: torch's default)
    eval_lines: bool = False  # one console line per selection evaluation (score, run ETA)


class RunTimeout(BaseException):
    """A run exceeded its time limit (``--timeout-min``); its record gets status ``timeout``.
    A BaseException, so that no ``except Exception`` in the code it interrupts swallows it."""


#: errno values meaning the output cannot take more data: the sweep stops (exit 74).
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`RunTimeout` in this thread after ``seconds`` (SIGALRM; main thread only,
    which is where the serial executor, Ray tasks and Slurm jobs run). Python code and sleeps
    are interrupted; a call stuck inside native code is interrupted when it returns."""
    if not seconds:
        yield
        return
    if threading.current_thread() is not threading.main_thread():
        logging.getLogger("bench.run").warning("time limit ignored outside the main thread")
        yield
        return
    if seconds <= 0:
        raise RunTimeout("no time left of the run's time limit")

    def expire(signum: int, frame: Any) -> None:
        raise RunTimeout(f"no result after the time limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def is_cuda_oom(error: BaseException) -> bool:
    import torch

    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "CUDA out of memory" in str(error)
    )


def error_info(error: BaseException) -> dict[str, str]:
    return {
        "type": type(error).__name__,
        "message": str(error),
        "traceback": "".join(traceback.format_exception(error)),
    }


def placement(executor: str) -> dict[str, Any]:
    """Where this worker runs: host, pid, the GPUs given to it and the scheduler's job id."""
    info: dict[str, Any] = {"executor": executor, "host": socket.gethostname(), "pid": os.getpid()}
    if executor == "ray":
        import ray

        info["gpu_ids"] = [str(g) for g in ray.get_gpu_ids()]
        info["ray_node_id"] = ray.get_runtime_context().get_node_id()
    else:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        info["gpu_ids"] = visible.split(",") if visible else []
    for variable in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        if variable in os.environ:
            info[variable.lower()] = os.environ[variable]
    return info


@contextlib.contextmanager
def run_log(path: Path) -> Iterator[None]:
    """Send the run's log lines (and transformers' warnings) to ``path`` while it runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8", delay=True)  # no file until a line
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger("bench.run"), logging.getLogger("transformers")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
    loggers[0].setLevel(logging.INFO)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)
        handler.close()


def base_record(run: RunSpec) -> dict[str, Any]:
    """The fields every record has, whatever the outcome."""
    from bench import protocols
    from methods import method_source_hash
    from tasks import get_task

    spec = get_task(run.task)
    return {
        "schema": records.SCHEMA_VERSION,
        "key": run.key,
        "task": run.task,
        "method": run.method,
        "seed": run.seed,
        "backbone": run.backbone,
        "config": run.to_dict(),
        "protocol": {
            "name": protocols.name_of(run.train),
            "selection_split": protocols.describe(run.train),
            "report_splits": list(spec.report_splits),
            "primary_metric": spec.primary_metric,
        },
        "started_at": records.utc_now(),
        "environment": records.environment(),
        "method_source": method_source_hash(run.method),
    }


def set_threads(threads: int | None) -> None:
    """Give torch ``threads`` intra-op threads in this process (None: leave torch's count)."""
    if threads is None:
        return
    import torch

    torch.set_num_threads(threads)


def is_finished(record: dict[str, Any] | None, options: WorkerOptions) -> bool:
    """Whether ``record`` already is what this worker would produce (so it must not rerun)."""
    if record is None or record.get("status") != records.STATUS_OK or options.force:
        return False
    return not (options.save_delta and "delta_file" not in record)


def run_one(run: RunSpec, options: WorkerOptions) -> dict[str, Any]:
    """Train ``run``, write its record atomically and return it (the driver indexes it).

    A run that already has an ``ok`` record is not trained again unless ``options.force``: a
    worker killed after writing its record and retried by Ray, or a requeued Slurm element,
    returns the finished record instead of repeating the run.
    """
    output = Path(options.output)
    existing = records.read_record(output, run.key)
    if is_finished(existing, options):
        return existing
    record = base_record(run)
    record["placement"] = {**placement(options.executor), "t_start": time.time()}
    marker = records.running_path(output, run.key)
    records.atomic_write_json(marker, {**record["placement"], "started_at": record["started_at"]})
    started = time.perf_counter()
    set_threads(options.threads)
    try:
        with run_log(records.log_path(output, run.key)):
            record.update(_train(run, options, output))
            logging.getLogger("bench.run").info("end %s: %s", run.label, record["status"])
        record["wall_time_s"] = time.perf_counter() - started
        record["placement"]["t_end"] = time.time()
        record["finished_at"] = records.utc_now()
        records.atomic_write_json(records.record_path(output, run.key), record)
        if options.checkpoints and record["status"] != "timeout":
            from bench import checkpoint

            checkpoint.remove(records.checkpoint_dir(output, run.key))  # only once recorded
    finally:
        marker.unlink(missing_ok=True)
    return record


def _train(run: RunSpec, options: WorkerOptions, output: Path) -> dict[str, Any]:
    """The outcome fields of the record: status, and metrics or the error."""
    from bench.train import DivergedError, train_run
    from tasks import get_task

    spec = get_task(run.task)
    delta = records.delta_path(output, run.key) if options.save_delta else None
    ckpt = records.checkpoint_dir(output, run.key) if options.checkpoints else None
    deadline = time.monotonic() + options.timeout_s if options.timeout_s else None
    micro: int | None = None
    out: dict[str, Any] = {}
    while True:
        retry = False
        try:
            remaining = deadline - time.monotonic() if deadline is not None else None
            with time_limit(remaining):
                result = train_run(
                    run,
                    device=options.device,
                    progress=options.progress,
                    delta_path=delta,
                    micro_batch_size=micro,
                    checkpoint_dir=ckpt,
                    on_evaluation=_console_line if options.eval_lines else None,
                )
            break
        except RunTimeout as error:
            return {**out, "status": "timeout", "error": error_info(error)}
        except DivergedError as error:
            return {**out, "status": "diverged", "error": error_info(error)}
        except (KeyboardInterrupt, SystemExit, UserError):
            raise
        except OSError as error:
            if error.errno in STORAGE_ERRNOS:
                raise  # a full disk fails every later run too: stop the sweep (exit 74)
            return {**out, "status": "failed", "error": error_info(error)}
        except Exception as error:  # isolation: one broken run must not stop the sweep
            half = math.ceil(run.train.batch_size / 2)
            if micro is None and is_cuda_oom(error) and run.train.batch_size > 1:
                out["oom_retry"] = {
                    "error": str(error),
                    "micro_batch_size": half,
                    "grad_accum_steps": math.ceil(run.train.batch_size / half),
                }
                micro = half
                retry = True
            else:
                return {**out, "status": "failed", "error": error_info(error)}
        if retry:  # outside the except block, so the failed attempt's frames can be freed
            _free_cuda_memory()
    out.update(
        status=records.STATUS_OK,
        metrics=result.metrics,
        primary={s: result.metrics[s][spec.primary_metric] for s in spec.report_splits},
        best=result.best,
        curve=result.curve,
        params=result.params,
        sizes=result.sizes,
        timing=result.timing,
        peak_memory_bytes=result.peak_memory_bytes,
        device=result.device,
        max_length=result.max_length,
        **result.extra,
    )
    if delta is not None:
        out["delta_file"] = str(delta.relative_to(output))
    return out


def _console_line(line: str) -> None:
    """One progress line on the console, above the sweep's bar (Ray forwards a worker's
    stderr to the driver's console)."""
    import sys

    from tqdm.auto import tqdm

    tqdm.write(line, file=sys.stderr)


def _free_cuda_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
