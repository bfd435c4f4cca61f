"""Input formats: how a task's raw text fields become the sequence (or pair) the model reads.

(Not P-Tuning v1's ``template`` / ``verbalizer`` task fields, which place pseudo tokens.) A
task without an input format feeds its text fields to the tokenizer as they are (one sequence, or a
pair). The SuperGLUE tasks instead follow the official P-Tuning v2 code, THUDM/P-tuning-v2
``tasks/superglue/dataset.py``, ``SuperGlueDataset.preprocess_function`` (WiC, WSC, MultiRC,
COPA) and ``record_preprocess_function`` (ReCoRD); each format below names the branch it
follows. Multiple-choice formats return one pair per choice.

This module must stay light (no torch / transformers / datasets imports): the task schema
imports it to validate input format names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bench.errors import UserError, unknown_name_error

from .spec import TaskKind

if TYPE_CHECKING:
    from .spec import TaskSpec

Row = Mapping[str, str]
Texts = tuple[str, ...]
Choices = list[tuple[str, str]]


@dataclass(frozen=True)
class InputFormat:
    """One way to build the model input from a row's text fields.

    ``render(row)`` returns the tokenizer's text(s): a 1- or 2-tuple for classification, or, for
    a multiple-choice format (``choices``), a list of ``(first, second)`` pairs, one per
    choice in label order.
    """

    name: str
    fields: tuple[str, ...] = field(metadata={"help": "Text fields the format reads."})
    render: Callable[[Row], Texts | Choices] = field(metadata={"help": "Row -> text(s)."})
    source: str = field(metadata={"help": "Where the official code builds the same input."})
    choices: bool = field(default=False, metadata={"help": "One pair per choice (COPA)."})


def _wic_question(row: Row) -> Texts:
    question = f"Does {row['word']} have the same meaning in both sentences?"
    return (f"{row['sentence1']} {row['sentence2']} {question}",)


def _wic_pair(row: Row) -> Texts:
    return (f"{row['word']}: {row['sentence1']}", f"{row['word']}: {row['sentence2']}")


def _wsc_pair(row: Row) -> Texts:
    return (f"{row['span2_text']}: {row['text']}", row["span1_text"])


def _multirc_pair(row: Row) -> Texts:
    return (row["paragraph"], f"{row['question']} {row['answer']}")


def _copa_choices(row: Row) -> Choices:
    if row["question"] not in ("cause", "effect"):
        raise ValueError(f"COPA question must be 'cause' or 'effect', got {row['question']!r}")
    joiner = "because" if row["question"] == "cause" else "so"
    first = f"{row['premise']} {joiner}"
    return [(first, row["choice1"]), (first, row["choice2"])]


def _record_filled(row: Row) -> Texts:
    passage = row["passage"].replace("@highlight\n", "- ")
    return (passage, row["query"].replace("@placeholder", row["entity"]))


_OFFICIAL = "THUDM/P-tuning-v2 tasks/superglue/dataset.py"
INPUT_FORMATS: Mapping[str, InputFormat] = {
    t.name: t
    for t in (
        InputFormat(
            "wic_question",
            ("word", "sentence1", "sentence2"),
            _wic_question,
            f"{_OFFICIAL}, preprocess_function, WiC template_id 0 (one sequence with the question)",
        ),
        InputFormat(
            "wic_pair",
            ("word", "sentence1", "sentence2"),
            _wic_pair,
            f"{_OFFICIAL}, preprocess_function, WiC template_id 1 ('word: s1' / 'word: s2')",
        ),
        InputFormat(
            "wsc_pair",
            ("text", "span1_text", "span2_text"),
            _wsc_pair,
            f"{_OFFICIAL}, preprocess_function, WSC template_id 0 ('span2: text' / span1)",
        ),
        InputFormat(
            "multirc_pair",
            ("paragraph", "question", "answer"),
            _multirc_pair,
            f"{_OFFICIAL}, preprocess_function, MultiRC (paragraph / 'question answer')",
        ),
        InputFormat(
            "copa_choices",
            ("premise", "question", "choice1", "choice2"),
            _copa_choices,
            f"{_OFFICIAL}, preprocess_function, COPA (premise + because/so, each choice)",
            choices=True,
        ),
        InputFormat(
            "record_filled",
            ("passage", "query", "entity"),
            _record_filled,
            f"{_OFFICIAL}, record_preprocess_function (passage / query with the entity)",
        ),
    )
}
"""Input format name -> :class:`InputFormat`."""


def check_input_format(name: str, kind: TaskKind, text_fields: Sequence[str]) -> InputFormat:
    """The input format ``name``, checked against the task's kind and text fields."""
    if not isinstance(name, str) or name not in INPUT_FORMATS:
        raise unknown_name_error("input format", str(name), INPUT_FORMATS)
    fmt = INPUT_FORMATS[name]
    if fmt.choices != (kind is TaskKind.MULTIPLE_CHOICE):
        what = "builds choices" if fmt.choices else "builds one input"
        raise UserError(f"input format '{name}' {what}; it does not fit a {kind.value} task")
    missing = [f for f in fmt.fields if f not in text_fields]
    if missing:
        raise UserError(
            f"input format '{name}' reads the text field(s) {', '.join(missing)},"
            f" which text_fields ({', '.join(text_fields)}) lacks"
        )
    return fmt


def render_batch(
    format_name: str | None, text_fields: Sequence[str], batch: Mapping[str, list]
) -> list[list[str]] | list[Choices]:
    """A batch's model texts: ``[first_texts, second_texts?]`` (one list per sequence), or,
    for a multiple-choice format, one list of choice pairs per row."""
    if format_name is None:
        return [list(batch[name]) for name in text_fields]
    fmt = INPUT_FORMATS[format_name]
    rows = [
        {name: batch[name][i] for name in fmt.fields}
        for i in range(len(batch[fmt.fields[0]]))
    ]
    rendered = [fmt.render(row) for row in rows]
    if fmt.choices:
        return rendered  # type: ignore[return-value]
    return [list(texts) for texts in zip(*rendered, strict=True)]


def with_input_format(spec: TaskSpec, name: str | None) -> TaskSpec:
    """``spec`` with the input format ``name`` (one of ``spec.input_formats``); ``None`` keeps
    it."""
    if name is None or name == spec.input_format:
        return spec
    if name not in spec.input_formats:
        always = spec.input_format or "its text fields as they are"
        offered = ", ".join(spec.input_formats) or f"none (it always uses {always})"
        raise UserError(f"task '{spec.name}' has no input format '{name}'; it offers: {offered}")
    return dataclasses.replace(spec, input_format=name)
