"""The executor interface and its configuration."""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from bench.errors import UserError

if TYPE_CHECKING:
    from bench.config import RunSpec
    from bench.worker import WorkerOptions

EXECUTOR_NAMES = ("serial", "ray", "slurm")


class SweepEvents(Protocol):
    """What executors tell the driver."""

    def started(self, run: RunSpec) -> None: ...

    def finished(self, record: dict[str, Any]) -> None: ...

    def waiting(self, in_flight: Sequence[RunSpec]) -> None:
        """Called while runs are in flight elsewhere (refreshes the progress bar)."""


@dataclass(frozen=True)
class ExecutorConfig:
    """How to place runs. ``kind="auto"`` becomes ``ray`` when GPUs and Ray exist, else serial."""

    kind: str = field(default="auto", metadata={"help": "serial, ray, slurm or auto."})
    gpus_per_run: float | None = field(
        default=None,
        metadata={
            "help": "GPUs per run (0.5 packs two runs per GPU); None: 1 if "
            "the machine has GPUs, else 0."
        },
    )
    cpus_per_run: float = field(default=1.0, metadata={"help": "CPU cores reserved per run."})
    address: str | None = field(
        default=None, metadata={"help": "Ray cluster to join ('auto', host:port); RAY_ADDRESS."}
    )
    max_retries: int = field(
        default=2, metadata={"help": "Retries after system failures (worker died, node lost)."}
    )
    max_parallel: int = field(default=16, metadata={"help": "Slurm: array elements at once."})
    time_min: int = field(default=240, metadata={"help": "Slurm: time limit per run, minutes."})
    partition: str | None = field(default=None, metadata={"help": "Slurm partition."})
    mem_gb: float | None = field(default=None, metadata={"help": "Slurm: memory per run, GB."})
    wait: bool = field(default=True, metadata={"help": "Slurm: wait for the jobs to finish."})

    def __post_init__(self) -> None:
        if self.kind not in ("auto", *EXECUTOR_NAMES):
            raise UserError(f"--executor {self.kind!r} unknown; valid: {['auto', *EXECUTOR_NAMES]}")
        gpus = self.gpus_per_run
        if gpus is not None and (
            not math.isfinite(gpus) or gpus < 0 or (gpus > 1 and gpus != int(gpus))
        ):
            raise UserError(
                f"--gpus-per-run {gpus}: give 0, a fraction up to 1 (0.5 packs two runs per "
                "GPU) or a whole number of GPUs"
            )
        if not (math.isfinite(self.cpus_per_run) and self.cpus_per_run > 0):
            raise UserError(f"--cpus-per-run must be a number > 0, got {self.cpus_per_run}")
        if self.max_retries < 0:
            raise UserError(f"--max-retries must be >= 0, got {self.max_retries}")
        for name in ("max_parallel", "time_min"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise UserError(f"{flag} must be >= 1, got {getattr(self, name)}")

    def resolved(self) -> ExecutorConfig:
        """``auto`` and ``gpus_per_run=None`` replaced by what this machine supports."""
        gpus = local_gpu_count()
        kind = self.kind
        if kind == "auto":
            wants_cluster = bool(self.address or os.environ.get("RAY_ADDRESS"))
            kind = "ray" if (gpus or wants_cluster) and ray_installed() else "serial"
        per_run = self.gpus_per_run
        if per_run is None and kind != "ray":  # Ray decides from the cluster after joining it
            per_run = 1.0 if (gpus or kind == "slurm") else 0.0
        return replace(self, kind=kind, gpus_per_run=per_run)


def local_gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def ray_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


class Executor(ABC):
    """Runs a list of runs through :func:`bench.worker.run_one`, reporting to the driver."""

    name: ClassVar[str]

    def __init__(self, config: ExecutorConfig) -> None:
        self.config = config

    @abstractmethod
    def execute(self, runs: Sequence[RunSpec], options: WorkerOptions, events: SweepEvents) -> None:
        """Run every run of ``runs``; call ``events.finished`` with each record."""
