"""Parsers for NER data whose entities are spans, converted to IOB2 word tags.

- ``spert_json``: the JSON layout of SpERT (CoNLL04): one JSON array of sentences, each with
  ``tokens`` and ``entities`` (``type``, ``start``, ``end`` token offsets, ``end`` exclusive).
- ``conll2012``: OntoNotes 5.0 in the CoNLL-2012 ``*_conll`` column format: ``#begin document``
  / ``#end document`` lines, one token per line (the word in column 4, the named-entity column
  11 in bracket notation: ``(PERSON*``, ``*``, ``*)``, ``(GPE)``), blank line between sentences.

Tag names are ``B-<type>`` / ``I-<type>`` / ``O`` and must be in the task's label set. Every
problem is a ``UserError`` naming ``file:line``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.errors import UserError

from .spec import TaskSpec

Columns = dict[str, list[Any]]
_NE_OPEN = re.compile(r"^\(([A-Za-z_]+)\*?\)?$|^\*\)?$")
WORD_COLUMN, NE_COLUMN = 3, 10


def _tag_index(labels: Sequence[str], task: str, tag: str, where: str) -> int:
    if tag not in labels:
        raise UserError(
            f"{where}: tag {tag!r} is not one of the allowed tags {', '.join(labels)}"
            f" (task '{task}')"
        )
    return list(labels).index(tag)


def span_tags(
    labels: Sequence[str], task: str, length: int, entities: list[Any], where: str
) -> list[int]:
    """IOB2 tag indices of a sentence of ``length`` tokens with SpERT entity spans
    (``type``, ``start``, ``end`` exclusive); spans outside the sentence or overlapping are
    a ``UserError`` naming ``where``."""
    tags = ["O"] * length
    for entity in entities:
        kind = entity.get("type") if isinstance(entity, dict) else None
        start = entity.get("start") if isinstance(entity, dict) else None
        end = entity.get("end") if isinstance(entity, dict) else None
        if not isinstance(kind, str) or not all(
            isinstance(x, int) and not isinstance(x, bool) for x in (start, end)
        ):
            raise UserError(f"{where}: entity {entity!r} needs a type and integer start/end")
        if not 0 <= start < end <= length:
            raise UserError(
                f"{where}: entity span [{start}, {end}) of type {kind!r} is outside the"
                f" sentence of {length} tokens"
            )
        if any(tag != "O" for tag in tags[start:end]):
            raise UserError(f"{where}: entity span [{start}, {end}) overlaps another entity")
        tags[start:end] = [f"B-{kind}"] + [f"I-{kind}"] * (end - start - 1)
    return [_tag_index(labels, task, tag, where) for tag in tags]


def _array_items(path: Path, text: str) -> list[tuple[str, Any]]:
    """``(file:line, element)`` for each element of the file's top-level JSON array."""
    decoder = json.JSONDecoder()
    position = len(text) - len(text.lstrip())
    if text[position : position + 1] != "[":
        raise UserError(f"{path}:1: expected a JSON array of sentences")
    position += 1
    items: list[tuple[str, Any]] = []
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if position >= len(text):
            raise UserError(f"{path}:{text.count(chr(10)) + 1}: the JSON array is not closed")
        if text[position] == "]":
            return items
        where = f"{path}:{text.count(chr(10), 0, position) + 1}"
        try:
            item, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}:{error.lineno}: invalid JSON: {error.msg}") from None
        items.append((where, item))


def parse_spert_json(spec: TaskSpec, path: Path, text: str) -> Columns:
    """SpERT sentences with their entity spans as IOB2-tagged token lists."""
    columns: Columns = {"tokens": [], "tags": []}
    for where, sentence in _array_items(path, text):
        if not isinstance(sentence, dict):
            raise UserError(f"{where}: expected a sentence object, got {type(sentence).__name__}")
        tokens, entities = sentence.get("tokens"), sentence.get("entities")
        if (
            not isinstance(tokens, list)
            or not tokens
            or not all(isinstance(token, str) and token for token in tokens)
        ):
            raise UserError(f"{where}: 'tokens' must be a non-empty list of non-empty strings")
        if not isinstance(entities, list):
            raise UserError(f"{where}: 'entities' must be a list of {{type, start, end}} spans")
        columns["tokens"].append(list(tokens))
        columns["tags"].append(span_tags(spec.labels, spec.name, len(tokens), entities, where))
    if not columns["tokens"]:
        raise UserError(f"{path} has no sentences (task '{spec.name}')")
    return columns


def parse_conll2012(spec: TaskSpec, path: Path, text: str) -> Columns:
    """CoNLL-2012 sentences with bracketed named entities as IOB2-tagged token lists."""
    columns: Columns = {"tokens": [], "tags": []}
    tokens: list[str] = []
    tags: list[int] = []
    open_type: str | None = None
    last = 0

    def close(number: int) -> None:
        nonlocal tokens, tags
        if open_type is not None:
            raise UserError(
                f"{path}:{number}: entity ({open_type} is not closed by the sentence end"
            )
        if tokens:
            columns["tokens"].append(tokens)
            columns["tags"].append(tags)
        tokens, tags = [], []

    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        last = number
        if not line or line.startswith("#begin document") or line.startswith("#end document"):
            close(number)
            continue
        parts = line.split()
        where = f"{path}:{number}"
        if len(parts) <= NE_COLUMN:
            raise UserError(
                f"{where}: expected at least {NE_COLUMN + 1} columns (word in column"
                f" {WORD_COLUMN + 1}, named entity in column {NE_COLUMN + 1}), found {len(parts)}"
            )
        cell = parts[NE_COLUMN]
        match = _NE_OPEN.match(cell)
        if match is None:
            raise UserError(
                f"{where}: named-entity cell {cell!r} is not '(TYPE*', '*', '*)' or '(TYPE)'"
            )
        if match.group(1):
            if open_type is not None:
                raise UserError(f"{where}: entity ({match.group(1)} opens inside ({open_type}")
            tag, open_type = f"B-{match.group(1)}", match.group(1)
        elif open_type is not None:
            tag = f"I-{open_type}"
        elif cell.endswith(")"):
            raise UserError(f"{where}: '*)' closes an entity that was never opened")
        else:
            tag = "O"
        if cell.endswith(")"):
            open_type = None
        tokens.append(parts[WORD_COLUMN])
        tags.append(_tag_index(spec.labels, spec.name, tag, where))
    close(last)
    if not columns["tokens"]:
        raise UserError(f"{path} has no sentences (task '{spec.name}')")
    return columns
