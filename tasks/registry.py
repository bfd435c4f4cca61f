"""The task registry: every ``tasks/**/*.yaml`` file is one task, keyed by its ``name``.

Adding a task means dropping one YAML file into ``tasks/<suite>/``; the file's stem must equal
the task's ``name``. Files are parsed once, on first use.
"""

from __future__ import annotations

import functools
from pathlib import Path

from bench.errors import UserError, unknown_name_error

from .spec import SUITES, TaskSpec, load_spec_file

TASKS_DIR = Path(__file__).resolve().parent
"""The folder searched (recursively) for task YAML files."""


def discover(root: Path = TASKS_DIR) -> dict[str, TaskSpec]:
    """Parse every ``*.yaml`` under ``root`` into a name -> :class:`TaskSpec` mapping.

    Raises ``UserError`` for a bad file, a file whose stem differs from its task name, or two
    files defining the same task.
    """
    specs: dict[str, TaskSpec] = {}
    origins: dict[str, Path] = {}
    for path in sorted(root.rglob("*.yaml")):
        spec = load_spec_file(path)
        if path.stem != spec.name:
            raise UserError(
                f"{path}: the file name must match the task name: rename it to"
                f" {spec.name}.yaml or set name: {path.stem}"
            )
        if spec.name in specs:
            raise UserError(f"task '{spec.name}' is defined twice: {origins[spec.name]} and {path}")
        specs[spec.name] = spec
        origins[spec.name] = path
    return specs


@functools.cache
def _registry() -> dict[str, TaskSpec]:
    return discover()


def task_names(suite: str | None = None) -> list[str]:
    """Sorted names of all registered tasks, or of those in ``suite`` (e.g. ``"glue"``)."""
    specs = _registry()
    if suite is None:
        return sorted(specs)
    if suite not in SUITES and suite not in suite_names():
        raise unknown_name_error("suite", suite, sorted({*SUITES, *suite_names()}))
    return sorted(name for name, spec in specs.items() if spec.suite == suite)


def suite_names() -> list[str]:
    """Names of the suites that have at least one registered task."""
    return sorted({spec.suite for spec in _registry().values()})


def get_task(name: str) -> TaskSpec:
    """The :class:`TaskSpec` registered as ``name``; ``UserError`` suggesting the closest name
    otherwise."""
    specs = _registry()
    if name not in specs:
        raise unknown_name_error("task", name, specs)
    return specs[name]
