"""The P-Tuning v2 paper's table layout, regenerated from run records and published numbers.

Tasks are columns, grouped SuperGLUE / NER as in the paper (arXiv:2110.07602); rows are the
paper's methods (FT, PT, PT-2) per backbone (BERT-large, RoBERTa-large; other backbones get their
own block under their own name). Each cell holds our value beside the published one and the
difference: ``ours / published (ours − published)``, in points.

Ours is the mean over seeds of the task's headline score (primary metric on the headline split,
as every accuracy table). A published number is placed in a cell when its backbone belongs to
the block, its task and method are the cell's, and it is compared when its metric and split are
also those of our headline; a marker (†, ‡, …) names its source file below the table. Where
several files give a number for one cell, the first file in name order wins and the others stay
in ``tables/published.md``.

A published number stands beside every row of its method in the block: ``PT-2`` and
``PT-2 (official)`` (the official profile) are both compared with it.

``bench.report.build`` writes ``tables/paper.{md,tex,csv}`` when some record is on a task of
the layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.report import collect, render
from bench.report.published import Reference, canonical_backbone
from bench.report.stats import summarize

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class PaperColumn:
    """One task column of the paper's tables."""

    task: str  # peft-bench task name
    label: str  # the paper's column name
    group: str  # the column group (SuperGLUE, NER)


#: The paper's task columns, in its order: the SuperGLUE table, then the NER columns of its
#: sequence-labelling table.
COLUMNS: tuple[PaperColumn, ...] = (
    PaperColumn("boolq", "BoolQ", "SuperGLUE"),
    PaperColumn("cb", "CB", "SuperGLUE"),
    PaperColumn("copa", "COPA", "SuperGLUE"),
    PaperColumn("multirc", "MultiRC", "SuperGLUE"),
    PaperColumn("record", "ReCoRD", "SuperGLUE"),
    PaperColumn("superglue_rte", "RTE", "SuperGLUE"),
    PaperColumn("wic", "WiC", "SuperGLUE"),
    PaperColumn("wsc", "WSC", "SuperGLUE"),
    PaperColumn("conll2003", "CoNLL03", "NER"),
    PaperColumn("ontonotes", "OntoNotes 5.0", "NER"),
    PaperColumn("conll04", "CoNLL04", "NER"),
)
#: The paper's rows: peft-bench method → the paper's label.
METHODS: dict[str, str] = {"full_finetune": "FT", "prompt_tuning": "PT", "p_tuning_v2": "PT-2"}
#: Checkpoints → the paper's backbone label (the official scripts use the cased BERT for
#: SuperGLUE and the uncased one for NER; the paper names both BERT-large).
BACKBONES: dict[str, str] = {
    "bert-large": "BERT-large",  # a published row that does not name the checkpoint
    "bert-large-cased": "BERT-large",
    "bert-large-uncased": "BERT-large",
    "roberta-large": "RoBERTa-large",
}
BLOCK_ORDER = ("BERT-large", "RoBERTa-large")
TITLE = "The P-Tuning v2 paper's tables, ours beside theirs"
MARKERS = ("†", "‡", "§", "¶", "#", "*")
_LATEX_MARKERS = {
    "†": r"$^{\dagger}$",
    "‡": r"$^{\ddagger}$",
    "§": r"$^{\S}$",
    "¶": r"$^{\P}$",
    "#": r"$^{\#}$",
    "*": r"$^{*}$",
}


def block_of(backbone: str) -> str:
    """The paper's backbone label of a checkpoint (short name or Hub id); else its own name."""
    wanted = canonical_backbone(backbone)
    for name, label in BACKBONES.items():
        if canonical_backbone(name) == wanted:
            return label
    return backbone


@dataclass(frozen=True)
class PaperCell:
    """Our mean (with its spread and run count) and the published number of one cell."""

    ours: float = math.nan
    std: float = math.nan
    n: int = 0
    split: str = ""
    metric: str = ""
    published: Reference | None = None
    marker: str = ""

    @property
    def comparable(self) -> bool:
        ref = self.published
        return (
            self.n > 0 and ref is not None and (ref.split, ref.metric) == (self.split, self.metric)
        )

    @property
    def delta(self) -> float:
        return self.ours - self.published.points if self.comparable else math.nan  # type: ignore[union-attr]


@dataclass(frozen=True)
class PaperTable:
    """Blocks (backbone label → rows), shown columns, cells and the source files' markers."""

    blocks: tuple[tuple[str, tuple[str, ...]], ...]  # (block label, row labels)
    columns: tuple[PaperColumn, ...]
    cells: dict[tuple[str, str, str], PaperCell]  # (block, row, task) → cell
    sources: tuple[tuple[str, str, tuple[str, ...]], ...]  # (marker, file, citations)
    backbones: dict[str, tuple[str, ...]]  # block → our checkpoints in it

    def cell(self, block: str, row: str, task: str) -> PaperCell:
        return self.cells.get((block, row, task), PaperCell())


def has_paper_tasks(frame: pd.DataFrame) -> bool:
    """Whether any record is on a task of the paper's layout."""
    tasks = {c.task for c in COLUMNS}
    return bool(set(frame["task"]) & tasks)


def row_label(row: str, method: str) -> str:
    """``p_tuning_v2 [reparam=mlp]`` → ``PT-2 [reparam=mlp]``."""
    return METHODS[method] + row[len(method) :]


def build_paper_table(frame: pd.DataFrame, references: list[Reference]) -> PaperTable:
    """The paper-style table of the ok runs in ``frame`` and the matching ``references``."""
    tasks = {c.task for c in COLUMNS}
    ok = frame[
        (frame["status"] == collect.STATUS_OK)
        & frame["task"].isin(tasks)
        & frame["method"].isin(list(METHODS))
    ]
    scores: dict[tuple[str, str, str], list[float]] = {}
    headline: dict[tuple[str, str, str], tuple[str, str]] = {}
    rows: dict[str, dict[str, str]] = {}  # block → {row label: method}
    backbones: dict[str, set[str]] = {}
    for (backbone, task, method, row), runs in ok.groupby(
        ["backbone", "task", "method", "row"], sort=True
    ):
        block = block_of(str(backbone))
        label = row_label(str(row), str(method))
        rows.setdefault(block, {})[label] = str(method)
        backbones.setdefault(block, set()).add(str(backbone))
        key = (block, label, str(task))  # two checkpoints of one block on one task pool
        scores.setdefault(key, []).extend(s for s in runs["score"] if math.isfinite(s))
        headline.setdefault(key, (str(runs["split"].iloc[0]), str(runs["metric"].iloc[0])))
    cells: dict[tuple[str, str, str], PaperCell] = {}
    for key, values in scores.items():
        s = summarize(values) if values else None
        cells[key] = PaperCell(
            ours=s.mean if s else math.nan,
            std=s.std if s and s.n > 1 else math.nan,
            n=s.n if s else 0,
            split=headline[key][0],
            metric=headline[key][1],
        )

    chosen: dict[tuple[str, str, str], Reference] = {}
    for ref in references:
        if ref.task not in tasks or ref.method not in METHODS:
            continue
        key = (block_of(ref.backbone), ref.method, ref.task)
        chosen.setdefault(key, ref)
    files = list(dict.fromkeys(ref.file for ref in chosen.values()))
    markers = {name: MARKERS[i % len(MARKERS)] * (1 + i // len(MARKERS)) for i, name in
               enumerate(files)}  # fmt: skip
    for (block, method, task), ref in chosen.items():
        # beside every row of that method (its profiles and variants), else on a row of its own
        labels = [lab for lab, m in rows.get(block, {}).items() if m == method]
        if not labels:
            labels = [METHODS[method]]
            rows.setdefault(block, {})[labels[0]] = method
        for label in labels:
            base = cells.get((block, label, task), PaperCell())
            cells[(block, label, task)] = PaperCell(
                base.ours, base.std, base.n, base.split, base.metric, ref, markers[ref.file]
            )

    order = {m: i for i, m in enumerate(METHODS)}
    blocks = tuple(
        (block, tuple(sorted(labels, key=lambda lab: (order[labels[lab]], lab))))
        for block, labels in sorted(
            rows.items(),
            key=lambda kv: (
                BLOCK_ORDER.index(kv[0]) if kv[0] in BLOCK_ORDER else len(BLOCK_ORDER),
                kv[0],
            ),
        )
    )
    shown = tuple(c for c in COLUMNS if any(key[2] == c.task for key in cells))
    citations: dict[str, dict[str, None]] = {}
    for ref in chosen.values():
        citations.setdefault(ref.file, {})[ref.citation] = None
    return PaperTable(
        blocks=blocks,
        columns=shown,
        cells=cells,
        sources=tuple((markers[f], f, tuple(citations[f])) for f in files),
        backbones={b: tuple(sorted(v)) for b, v in backbones.items()},
    )


def cell_text(cell: PaperCell) -> str:
    """``ours / published† (±Δ)``; a dash for a missing side, no difference when either is
    missing or the published metric/split is not our headline's."""
    ours = render.points(cell.ours) if cell.n else render.DASH
    if cell.published is None:
        return ours if cell.n else render.DASH
    text = f"{ours} / {render.points(cell.published.points)}{cell.marker}"
    return f"{text} ({render.signed(cell.delta)})" if cell.comparable else text


def _groups(columns: tuple[PaperColumn, ...]) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for column in columns:
        if out and out[-1][0] == column.group:
            out[-1] = (column.group, out[-1][1] + 1)
        else:
            out.append((column.group, 1))
    return out


def _body(table: PaperTable) -> list[list[str]]:
    body = []
    for block, labels in table.blocks:
        for i, label in enumerate(labels):
            cells = [cell_text(table.cell(block, label, c.task)) for c in table.columns]
            body.append([block if i == 0 else "", label, *cells])
    return body


def _notes(table: PaperTable) -> list[str]:
    notes = [
        "Each cell: ours / published (ours − published), in points. Ours: mean over seeds of "
        "the task's primary metric on its headline split (SuperGLUE: dev; NER: test), selection "
        "on a split carved from train. A difference is shown only where the published metric "
        "and split are ours; published protocols differ (see each source).",
    ]
    for block, names in table.backbones.items():
        if names != (block,):
            notes.append(f"Our {block} runs: {', '.join(names)}.")
    return notes


def _source_notes(table: PaperTable, quote: str) -> list[str]:
    return [
        f"{marker} {quote}{name}{quote}: {'; '.join(citations)}"
        for marker, name, citations in table.sources
    ]


def to_markdown(table: PaperTable) -> str:
    """The table with a group row (SuperGLUE / NER) above the task names, and its notes."""
    headers = ["Backbone", "Method", *(c.label for c in table.columns)]
    group_row = ["", ""]
    for group, span in _groups(table.columns):
        group_row += [f"*{group}*"] + [""] * (span - 1)
    text = render.markdown_table(headers, [group_row, *_body(table)])
    notes = _notes(table) + _source_notes(table, "`")
    return text + "\n\n" + "\n".join(f"- {note}" for note in notes) + "\n"


def _latex_cell(text: str) -> str:
    out = render.latex_escape(text)
    for marker, macro in _LATEX_MARKERS.items():
        out = out.replace(render.latex_escape(marker), macro)
    return out


def to_latex(table: PaperTable) -> str:
    """A booktabs table with ``\\multicolumn`` group headers and ``\\cmidrule`` under them."""
    n = len(table.columns)
    groups, rules, start = [], [], 3
    for group, span in _groups(table.columns):
        groups.append(rf"\multicolumn{{{span}}}{{c}}{{{group}}}")
        rules.append(rf"\cmidrule(lr){{{start}-{start + span - 1}}}")
        start += span
    headers = [
        "Backbone",
        "Method",
        *(render.latex_escape(c.label) for c in table.columns),
    ]
    body = [[_latex_cell(cell) for cell in row] for row in _body(table)]
    lines = [
        "% Generated by `python -m bench report`; do not edit. Needs \\usepackage{booktabs}.",
        r"\begin{table*}[t]",
        r"\centering",
        r"\small",
        rf"\begin{{tabular}}{{ll{'c' * n}}}",
        r"\toprule",
        " & ".join(["", "", *groups]) + r" \\",
        " ".join(rules),
        " & ".join(headers) + r" \\",
        r"\midrule",
    ]
    for i, row in enumerate(body):
        if i and row[0]:
            lines.append(r"\midrule")
        lines.append(" & ".join(row) + r" \\")
    caption = render.latex_escape(
        " ".join(
            ["Ours / published (ours − published), points.", *_notes(table)[1:]]
            + _source_notes(table, "")
        )
    )
    for marker, macro in _LATEX_MARKERS.items():
        caption = caption.replace(render.latex_escape(marker), macro)
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{caption}}}", r"\end{table*}"]
    return "\n".join(lines) + "\n"


def to_frame(table: PaperTable) -> pd.DataFrame:
    """One row per shown cell: ours (mean, std, n), published (value, file), the difference."""
    import pandas as pd

    records = []
    for block, labels in table.blocks:
        for label in labels:
            for column in table.columns:
                cell = table.cell(block, label, column.task)
                ref = cell.published
                records.append(
                    {
                        "backbone": block,
                        "method": label,
                        "group": column.group,
                        "task": column.task,
                        "split": cell.split or (ref.split if ref else ""),
                        "metric": cell.metric or (ref.metric if ref else ""),
                        "ours": cell.ours,
                        "ours_std": cell.std,
                        "ours_n": cell.n,
                        "published": ref.points if ref else math.nan,
                        "published_file": ref.file if ref else "",
                        "ours_minus_published": cell.delta,
                    }
                )
    return pd.DataFrame.from_records(records)
