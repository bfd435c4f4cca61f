"""Parsers for task data in its original distribution formats: GLUE TSV and CoNLL (SuperGLUE's
JSON lines, SpERT JSON and CoNLL-2012 live in ``superglue_files`` and ``ner_files``).

Each parser turns one file's text into plain Python columns (``dict[field, list]``) with labels
already mapped to class indices; every problem is a ``UserError`` naming ``file:line``.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Any

from bench.errors import UserError

from .ner_files import parse_conll2012, parse_spert_json
from .spec import TaskKind, TaskSpec
from .superglue_files import parse_multirc_jsonl, parse_record_jsonl, parse_superglue_jsonl

Columns = dict[str, list[Any]]
_CONLL_SEP = re.compile(r"[ \t]+")
_BLANK = " \t\r"


def read_text(path: Path, spec: TaskSpec, split: str) -> tuple[bytes, str]:
    """The raw bytes of ``path`` and their UTF-8 text (a leading BOM dropped)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise UserError(
            f"{path}:{line}: not valid UTF-8 (byte {data[error.start]:#04x} at offset"
            f" {error.start}); task '{spec.name}' split '{split}' needs a UTF-8 file"
        ) from None
    if not text.strip():
        raise UserError(f"{path} is empty (task '{spec.name}', split '{split}')")
    return data, text


def _numbered_lines(text: str) -> list[tuple[int, str]]:
    """Non-blank lines with their 1-based line numbers (only '\\n' ends a line)."""
    return [
        (number, line.rstrip("\r"))
        for number, line in enumerate(text.split("\n"), start=1)
        if line.strip(_BLANK)
    ]


def _label_lookup(spec: TaskSpec) -> dict[str, int]:
    return {value: index for index, value in enumerate(spec.raw_label_values())}


def _column_indices(spec: TaskSpec, path: Path, header: list[str] | None) -> dict[str, int]:
    """Field -> 0-based column index, resolving header names when the file has a header."""
    assert spec.local is not None
    indices: dict[str, int] = {}
    for field_name, column in spec.local.columns.items():
        if isinstance(column, int):
            indices[field_name] = column
            continue
        assert header is not None
        if column not in header:
            raise UserError(
                f"{path}:1: header has no column {column!r} (needed for field '{field_name}'"
                f" of task '{spec.name}'); columns present: {', '.join(header)}"
            )
        indices[field_name] = header.index(column)
    return indices


def _parse_label(spec: TaskSpec, raw: str, where: str, lookup: dict[str, int]) -> int | float:
    value = raw.strip(_BLANK)
    if spec.kind is TaskKind.REGRESSION:
        assert spec.label_range is not None
        low, high = spec.label_range
        try:
            score = float(value)
        except ValueError:
            raise UserError(f"{where}: score {value!r} is not a number") from None
        if not (math.isfinite(score) and low <= score <= high):
            raise UserError(f"{where}: score {value!r} is outside the range [{low}, {high}]")
        return score
    if value not in lookup:
        raise UserError(
            f"{where}: label {value!r} is not one of the allowed values"
            f" {', '.join(repr(v) for v in lookup)} (task '{spec.name}')"
        )
    return lookup[value]


def parse_glue_tsv(spec: TaskSpec, path: Path, text: str) -> Columns:
    """Rows of a GLUE ``.tsv`` file (tab-separated, no quoting) as columns ``spec.fields``."""
    assert spec.local is not None
    lines = _numbered_lines(text)
    header: list[str] | None = None
    if spec.local.header:
        header = [name.strip() for name in lines[0][1].split("\t")]
        lines = lines[1:]
    indices = _column_indices(spec, path, header)
    needed = max(indices.values()) + 1
    lookup = _label_lookup(spec)
    label_index = indices[spec.label_field]
    columns: Columns = {name: [] for name in spec.fields}
    reader = csv.reader((line for _, line in lines), delimiter="\t", quoting=csv.QUOTE_NONE)
    try:
        for (number, _), row in zip(lines, reader, strict=True):
            where = f"{path}:{number}"
            if len(row) < needed:
                raise UserError(
                    f"{where}: expected at least {needed} tab-separated fields, found {len(row)}"
                )
            for name in spec.text_fields:
                columns[name].append(row[indices[name]])
            columns["label"].append(_parse_label(spec, row[label_index], where, lookup))
    except csv.Error as error:
        number = lines[max(reader.line_num - 1, 0)][0]
        raise UserError(f"{path}:{number}: malformed row: {error}") from None
    if not columns["label"]:
        raise UserError(f"{path} has no examples (task '{spec.name}')")
    return columns


def parse_conll(spec: TaskSpec, path: Path, text: str) -> Columns:
    """Sentences of a CoNLL file (token first, tag last, blank line between sentences).

    ``-DOCSTART-`` lines are skipped; tags must be in the task's label set.
    """
    lookup = _label_lookup(spec)
    columns: Columns = {"tokens": [], "tags": []}
    tokens: list[str] = []
    tags: list[int] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip(_BLANK)
        parts = _CONLL_SEP.split(line) if line else []
        if not parts or parts[0] == "-DOCSTART-":
            if tokens:
                columns["tokens"].append(tokens)
                columns["tags"].append(tags)
                tokens, tags = [], []
            continue
        if len(parts) < 2:
            raise UserError(
                f"{path}:{number}: expected a token and a tag separated by whitespace,"
                f" found {line!r}"
            )
        if parts[-1] not in lookup:
            raise UserError(
                f"{path}:{number}: tag {parts[-1]!r} is not one of the allowed tags"
                f" {', '.join(lookup)} (task '{spec.name}')"
            )
        tokens.append(parts[0])
        tags.append(lookup[parts[-1]])
    if tokens:
        columns["tokens"].append(tokens)
        columns["tags"].append(tags)
    if not columns["tokens"]:
        raise UserError(f"{path} has no sentences (task '{spec.name}')")
    return columns


PARSERS = {
    "glue_tsv": parse_glue_tsv,
    "conll": parse_conll,
    "superglue_jsonl": parse_superglue_jsonl,
    "multirc_jsonl": parse_multirc_jsonl,
    "record_jsonl": parse_record_jsonl,
    "spert_json": parse_spert_json,
    "conll2012": parse_conll2012,
}
"""Local format name -> parser."""
