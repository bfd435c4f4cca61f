"""Published reference numbers (``results/published/*.csv``) and a side-by-side table with ours.

Each CSV row is one number as printed in its source, with the citation, backbone, task, metric,
split, method, the value, its scale (``percent`` or ``fraction``) and a protocol note saying how
it was obtained and what had to be assumed. Our number is shown next to it, with "ours −
published", only when backbone, task, metric, split and method all match; otherwise the row says
why there is nothing to compare (other backbone, task or method not in peft-bench, not run).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.errors import UserError
from bench.report import collect, render
from bench.report.stats import summarize

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = (
    "source",
    "citation",
    "backbone",
    "task",
    "metric",
    "split",
    "method",
    "value",
    "scale",
    "protocol",
)
SCALES = {"percent": 1.0, "fraction": 100.0}
HEADERS = (
    "backbone",
    "task",
    "metric",
    "split",
    "method",
    "published",
    "ours",
    "ours − published",
    "note",
)


@dataclass(frozen=True)
class Reference:
    """One published number, in points."""

    file: str
    source: str
    citation: str
    backbone: str
    task: str
    metric: str
    split: str
    method: str
    points: float
    protocol: str


def default_dir() -> Path | None:
    """The repository's ``results/published`` (present in a source checkout), else None."""
    folder = Path(__file__).resolve().parents[2] / "results" / "published"
    return folder if folder.is_dir() else None


def load_published(folder: Path) -> list[Reference]:
    """Every row of ``folder/*.csv`` (files in name order, rows in file order)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--published {folder} is not a directory of CSV files")
    references = []
    for path in sorted(folder.glob("*.csv")):
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            header = tuple(reader.fieldnames or ())
            if set(header) != set(COLUMNS):
                raise UserError(
                    f"{path}: columns {list(header)} do not match the expected ones: "
                    f"{', '.join(COLUMNS)}"
                )
            for line, row in enumerate(reader, start=2):
                references.append(_reference(path, line, row))
    return references


def _reference(path: Path, line: int, row: dict[str, str]) -> Reference:
    scale = row["scale"].strip()
    if scale not in SCALES:
        raise UserError(f"{path}:{line}: scale {scale!r} unknown; valid: {', '.join(SCALES)}")
    try:
        value = float(row["value"])
    except ValueError:
        raise UserError(f"{path}:{line}: value {row['value']!r} is not a number") from None
    return Reference(
        file=path.name,
        source=row["source"].strip(),
        citation=row["citation"].strip(),
        backbone=row["backbone"].strip(),
        task=row["task"].strip(),
        metric=row["metric"].strip(),
        split=row["split"].strip(),
        method=row["method"].strip(),
        points=value * SCALES[scale],
        protocol=row["protocol"].strip(),
    )


def canonical_backbone(name: str) -> str:
    """Short names and Hub ids of one checkpoint compare equal (``roberta-base`` is
    ``FacebookAI/roberta-base``)."""
    from bench.backbones import HUB_ALIASES

    return HUB_ALIASES.get(name, name)


@dataclass(frozen=True)
class SideBySide:
    reference: Reference
    ours: str
    delta: float
    note: str


def compare(frame: pd.DataFrame, references: list[Reference]) -> list[SideBySide]:
    """One line per published number (and per matching method row of ours)."""
    from methods import method_names
    from tasks import task_names

    ok = frame[frame["status"] == collect.STATUS_OK]
    lines = []
    for ref in references:
        same = ok[(ok["task"] == ref.task) & (ok["method"] == ref.method)]
        wanted = canonical_backbone(ref.backbone)
        here = same[same["backbone"].map(canonical_backbone) == wanted]
        if ref.task not in task_names():
            lines.append(SideBySide(ref, render.DASH, math.nan, "task not in peft-bench"))
        elif ref.method not in method_names():
            lines.append(SideBySide(ref, render.DASH, math.nan, "method not in peft-bench"))
        elif here.empty:
            others = sorted(set(same["backbone"]))
            note = (
                f"different backbone: ours ran {', '.join(others)}" if others else "not run by us"
            )
            lines.append(SideBySide(ref, render.DASH, math.nan, note))
        else:
            lines += [_ours(ref, rows) for _, rows in here.groupby("row", sort=True)]
    return lines


def _ours(ref: Reference, runs: pd.DataFrame) -> SideBySide:
    scores = []
    for metrics in runs["metrics"]:
        value = (json.loads(metrics).get(ref.split) or {}).get(ref.metric)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            scores.append(100.0 * value)
    row = str(runs["row"].iloc[0])
    label = "" if row == ref.method else f"{row}: "
    if not scores:
        return SideBySide(
            ref, render.DASH, math.nan, f"{label}our records have no {ref.metric} on {ref.split}"
        )
    s = summarize(scores)
    text = render.points(s.mean) + (f" ± {render.points(s.std)}" if s.n > 1 else "") + f" ({s.n})"
    return SideBySide(ref, label + text, s.mean - ref.points, "same backbone, task and method")


def to_markdown(lines: list[SideBySide]) -> str:
    """One section per source file: its citations, then its numbers next to ours."""
    out = [
        "Published numbers come with their own protocols (often one run, the best epoch picked "
        "on the reported split); see each row's note. A difference is a fact to explain, not a "
        "failed reproduction by itself. All values in points (×100).",
        "",
    ]
    files: dict[str, list[SideBySide]] = {}
    for line in lines:
        files.setdefault(line.reference.file, []).append(line)
    for name, group in files.items():
        citations = list(dict.fromkeys(line.reference.citation for line in group))
        out += [f"### `{name}`", ""]
        out += [f"- {c}" for c in citations] + [""]
        rows = [_cells(line) for line in group]
        out += [render.markdown_table(HEADERS, rows), ""]
    return "\n".join(out)


def _cells(line: SideBySide) -> list[str]:
    ref = line.reference
    delta = render.DASH if math.isnan(line.delta) else render.signed(line.delta, 1)
    note = line.note[:1].upper() + line.note[1:]
    note = f"{note}. {ref.protocol}" if ref.protocol else note
    return [
        ref.backbone,
        ref.task,
        ref.metric,
        ref.split,
        ref.method,
        render.points(ref.points, 2),
        line.ours,
        delta,
        note,
    ]


def to_frame(lines: list[SideBySide]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame.from_records(
        [
            {
                "file": line.reference.file,
                "source": line.reference.source,
                "citation": line.reference.citation,
                "backbone": line.reference.backbone,
                "task": line.reference.task,
                "metric": line.reference.metric,
                "split": line.reference.split,
                "method": line.reference.method,
                "published": line.reference.points,
                "ours": line.ours,
                "ours_minus_published": line.delta,
                "note": line.note,
                "protocol": line.reference.protocol,
            }
            for line in lines
        ]
    )
