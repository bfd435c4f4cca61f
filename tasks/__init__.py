"""Benchmark tasks: one YAML file per task, the :class:`TaskSpec` schema, loaders and metrics.

Importing this package is cheap (no torch / transformers / datasets / sklearn); the heavy
libraries are imported inside the functions that need them.
"""

from .loaders import LoadedTask, load_task_data
from .metrics import compute_metrics
from .registry import get_task, suite_names, task_names
from .spec import HubSource, LocalSource, TaskKind, TaskSpec

__all__ = [
    "HubSource",
    "LoadedTask",
    "LocalSource",
    "TaskKind",
    "TaskSpec",
    "compute_metrics",
    "get_task",
    "load_task_data",
    "suite_names",
    "task_names",
]
