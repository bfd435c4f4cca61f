"""Method plug-ins: one module per method; every ``Method`` subclass with a ``name`` is registered.

Add a method by dropping a module into this folder (see ``full_finetune.py``).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from pathlib import Path
from typing import Any

from methods.base import AttachData, Method, MethodConfig, ParamCounts

__all__ = [
    "AttachData",
    "Method",
    "MethodConfig",
    "ParamCounts",
    "build_method",
    "get_method",
    "method_names",
    "method_source_files",
    "method_source_hash",
    "variant_label",
]


@functools.cache
def _registry() -> dict[str, type[Method]]:
    found: dict[str, type[Method]] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Method)
                and value.__module__ == module.__name__
                and getattr(value, "name", None)
            ):
                if value.name in found:
                    raise RuntimeError(f"method name '{value.name}' registered twice")
                found[value.name] = value
    return found


def method_names(include_comparison: bool = True) -> list[str]:
    """Registered method names, sorted; ``include_comparison=False`` gives the default sweep:
    it leaves out comparison rows (other libraries' implementations) and methods that opt out
    with ``default_in_sweeps = False``; both run only when named."""
    return sorted(
        n
        for n, cls in _registry().items()
        if include_comparison or (not cls.comparison and cls.default_in_sweeps)
    )


def get_method(name: str) -> type[Method]:
    """The ``Method`` class registered as ``name`` (UserError naming the valid ones otherwise)."""
    from bench.errors import unknown_name_error

    try:
        return _registry()[name]
    except KeyError:
        raise unknown_name_error("method", name, _registry()) from None


def build_method(name: str, overrides: dict[str, Any] | None = None) -> Method:
    """Instantiate method ``name`` with its config defaults updated by ``overrides``."""
    cls = get_method(name)
    return cls(cls.config_cls.from_dict(overrides or {}))


def variant_label(name: str, overrides: dict[str, Any] | None = None) -> str:
    """A method's label in tables: its name, then every option that differs from the default,
    sorted, e.g. ``p_tuning_v2 [injection=hidden]``, as the report's tables label rows."""
    cls = _registry().get(name)
    defaults = cls.config_cls().to_dict() if cls is not None else {}
    changed = {k: v for k, v in sorted((overrides or {}).items()) if defaults.get(k, v) != v}
    if cls is None:
        changed = dict(sorted((overrides or {}).items()))
    if not changed:
        return name
    return f"{name} [{', '.join(f'{k}={v}' for k, v in changed.items())}]"


def method_source_files(name: str) -> list[Path]:
    """The files whose source defines method ``name``: its class's and base classes' modules in
    this package, and the modules of this package they import (``from methods.X import``),
    recursively."""
    import inspect
    import re
    import sys

    files: set[Path] = set()
    for cls in get_method(name).__mro__:
        module = sys.modules.get(cls.__module__)
        if module is not None and cls.__module__.startswith(f"{__name__}."):
            files.add(Path(inspect.getfile(module)))
    todo = sorted(files)
    while todo:  # helpers that helpers import, too
        text = todo.pop().read_text("utf-8")
        for helper in re.findall(r"from methods\.(\w+) import", text):
            path = Path(__path__[0]) / f"{helper}.py"
            if path not in files and path.is_file():
                files.add(path)
                todo.append(path)
    return sorted(files)


@functools.cache
def method_source_hash(name: str) -> str:
    """A hash of :func:`method_source_files` of method ``name``. Records keep it; ``run
    --dry-run`` marks records made by other code ``stale``."""
    import hashlib

    digest = hashlib.sha256()
    for path in method_source_files(name):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]
