"""Where a plan's hyperparameters come from, for ``run --dry-run``.

For every setting of the suite: its scope (tasks × methods × backbones), the values it sets,
its source, and the planned runs it applies to with their estimated GPU time; then every
exclusion with its reason. Settings apply in file order (later ones win; command-line flags win
over all), so a run's values are those of the settings listed for it, read top to bottom.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.config import RunSpec
    from bench.estimate import Estimate
    from bench.suites import Exclusion, Setting, Suite

WIDTH = 100


def applied(suite: Suite, run: RunSpec) -> tuple[int, ...]:
    """1-based numbers of the suite's settings that apply to ``run``, in file order."""
    return tuple(
        i
        for i, setting in enumerate(suite.settings, start=1)
        if setting.applies(run.task, run.method, run.backbone)
    )


def _scope(tasks: tuple[str, ...], methods: tuple[str, ...], backbones: tuple[str, ...]) -> str:
    parts = [
        ", ".join(tasks) if tasks else "all tasks",
        ", ".join(methods) if methods else "all methods",
        ", ".join(backbones) if backbones else "all backbones",
    ]
    return " × ".join(parts)


def _values(setting: Setting) -> str:
    def show(values: dict[str, Any]) -> str:
        return ", ".join(
            f"{key}={value:g}"
            if isinstance(value, float) and not isinstance(value, bool)
            else f"{key}={value}"
            for key, value in values.items()
        )

    parts = []
    if setting.train:
        parts.append(f"train: {show(setting.train)}")
    if setting.method:
        parts.append(f"method: {show(setting.method)}")
    return "; ".join(parts) or "(no values)"


def _hours(seconds: Sequence[float | None]) -> str:
    known = [s for s in seconds if s is not None]
    if not known:
        return "GPU time unknown (data or backbone size unknown)"
    total = sum(known)
    text = f"{total / 3600:.1f} GPU-hours" if total >= 360 else f"{total / 60:.1f} GPU-min"
    unknown = len(seconds) - len(known)
    return text + (f" (+{unknown} of unknown size)" if unknown else "")


def _wrap(label: str, text: str) -> list[str]:
    return textwrap.wrap(
        text, WIDTH, initial_indent=f"    {label}", subsequent_indent=" " * (4 + len(label))
    )


def describe(suite: Suite, plan: Sequence[RunSpec], estimates: Sequence[Estimate]) -> str:
    """The settings and exclusions of ``suite`` against ``plan`` (one estimate per run)."""
    lines = [
        f"Settings of suite '{suite.name}' (applied in this order, later ones win; "
        "command-line flags win over all):"
    ]
    per_run = [applied(suite, run) for run in plan]
    for number, setting in enumerate(suite.settings, start=1):
        hit = [e.gpu_seconds for ids, e in zip(per_run, estimates, strict=True) if number in ids]
        scope = _scope(setting.tasks, setting.methods, setting.backbones)
        count = f"{len(hit)} planned run(s), {_hours(hit)}" if hit else "no planned run"
        lines.append(f"[{number}] {scope} — {count}")
        lines += _wrap("values: ", _values(setting))
        lines += _wrap("source: ", setting.source)
    if suite.exclude:
        lines += ["", "Not planned (suite exclusions):"]
        lines += [_exclusion(item) for item in suite.exclude]
    return "\n".join(lines)


def _exclusion(item: Exclusion) -> str:
    scope = _scope(item.tasks, item.methods, item.backbones)
    return "\n".join(textwrap.wrap(f"- {scope}: {item.reason}", WIDTH, subsequent_indent="  "))
