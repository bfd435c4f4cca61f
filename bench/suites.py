"""Suites: named sets of tasks (and optionally methods and training overrides) in YAML.

Shipped suites live in ``bench/suites/*.yaml``; a user suite file can be given by path.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.errors import UserError, unknown_name_error

SUITES_DIR = Path(__file__).parent / "suites"


@dataclass(frozen=True)
class Suite:
    """A named set of tasks. ``methods`` empty means every registered method; ``train`` holds
    TrainConfig overrides applied to every run of the suite."""

    name: str
    description: str
    tasks: tuple[str, ...]
    methods: tuple[str, ...] = ()
    train: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.tasks:
            raise UserError(f"suite '{self.name}' lists no tasks")


def _parse(data: Any, source: str) -> Suite:
    if not isinstance(data, dict):
        raise UserError(f"suite file {source} must be a mapping, got {type(data).__name__}")
    allowed = {"name", "description", "tasks", "methods", "train"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise UserError(
            f"suite file {source}: unknown key(s) {unknown}; allowed: {sorted(allowed)}"
        )
    for key in ("tasks", "methods"):
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UserError(f"suite file {source}: '{key}' must be a list of names, got {value!r}")
    if not isinstance(data.get("train", {}), dict):
        raise UserError(f"suite file {source}: 'train' must be a mapping")
    return Suite(
        name=str(data.get("name") or Path(source).stem),
        description=str(data.get("description", "")),
        tasks=tuple(data["tasks"]) if "tasks" in data else (),
        methods=tuple(data.get("methods", [])),
        train=dict(data.get("train", {})),
    )


def _read(path: Path) -> Suite:
    try:
        return _parse(yaml.safe_load(path.read_text(encoding="utf-8")), str(path))
    except yaml.YAMLError as error:
        raise UserError(f"suite file {path} is not valid YAML: {error}") from None


@functools.cache
def builtin_suites() -> dict[str, Suite]:
    return {path.stem: _read(path) for path in sorted(SUITES_DIR.glob("*.yaml"))}


def get_suite(name_or_path: str) -> Suite:
    """A shipped suite by name, or a suite YAML file by path."""
    if name_or_path in builtin_suites():
        return builtin_suites()[name_or_path]
    path = Path(name_or_path).expanduser()
    if name_or_path.endswith((".yaml", ".yml")):
        if not path.is_file():
            raise UserError(f"suite file {path} does not exist")
        return _read(path)
    raise unknown_name_error("suite", name_or_path, builtin_suites())
