"""Parsers for SuperGLUE's original distribution files: one JSON object per line.

- ``superglue_jsonl``: flat rows (BoolQ, CB, COPA, RTE, WiC, WSC); ``local.columns`` maps each
  field to a JSON key, ``a.b`` for a nested one (WSC's ``target.span1_text``).
- ``multirc_jsonl``: one paragraph per line with its questions and answer options; one row per
  answer option (``paragraph``, ``question``, ``answer``, ``label``; ``group`` = the question's
  ``idx``, as the Hub's ``idx.question``).
- ``record_jsonl``: one passage per line with its entity spans and queries; one row per (query,
  distinct entity) (``passage``, ``query``, ``entity``, ``label`` = whether the entity is a gold
  answer, ``answers``, ``group`` = the query's ``idx``), as the official P-Tuning v2 code
  expands ReCoRD (THUDM/P-tuning-v2 ``tasks/superglue/dataset.py``,
  ``record_preprocess_function``).

JSON booleans read as ``true`` / ``false`` and numbers as their decimal text, so label values
are written as they appear in the files. Every problem is a ``UserError`` naming ``file:line``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.errors import UserError

from .spec import TaskSpec

Columns = dict[str, list[Any]]


def json_lines(path: Path, text: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, object)`` for every non-blank line; ``where`` is ``file:line``."""
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{where}: not a JSON object: {error.msg}") from None
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected a JSON object, got {type(row).__name__}")
        yield where, row


def lookup(row: dict[str, Any], key: str, where: str, task: str) -> Any:
    """``row[key]``, following ``a.b`` into nested objects; a missing key names file:line."""
    value: Any = row
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            present = ", ".join(sorted(value)) if isinstance(value, dict) else type(value).__name__
            raise UserError(
                f"{where}: missing field '{key}' (task '{task}'); the row has: {present}"
            )
        value = value[part]
    return value


def as_text(value: Any, key: str, where: str) -> str:
    """A JSON scalar as text: strings as they are, booleans as true/false, numbers as written."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    raise UserError(f"{where}: field '{key}' must be a string, number or boolean, got {value!r}")


def _text(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: field '{key}' must be a non-empty string, got {value!r}")
    return value


def _label(spec: TaskSpec, value: Any, key: str, where: str) -> int:
    raw = as_text(value, key, where)
    allowed = spec.raw_label_values()
    if raw not in allowed:
        raise UserError(
            f"{where}: label {raw!r} is not one of the allowed values"
            f" {', '.join(repr(v) for v in allowed)} (task '{spec.name}')"
        )
    return allowed.index(raw)


def _finish(columns: Columns, path: Path, spec: TaskSpec) -> Columns:
    if not columns["label"]:
        raise UserError(f"{path} has no examples (task '{spec.name}')")
    return columns


def _check_input_format(spec: TaskSpec, texts: dict[str, str], where: str) -> None:
    """Render the row once, so that a value the input format cannot use (a COPA question other
    than cause/effect) is reported here, as file:line, not while tokenizing."""
    if spec.input_format is None:
        return
    from .input_formats import INPUT_FORMATS

    try:
        INPUT_FORMATS[spec.input_format].render(texts)
    except ValueError as error:
        raise UserError(f"{where}: {error} (task '{spec.name}')") from None


def parse_superglue_jsonl(spec: TaskSpec, path: Path, text: str) -> Columns:
    """Flat SuperGLUE rows as columns ``spec.fields`` (text fields must be non-empty strings)."""
    assert spec.local is not None
    keys = spec.local.columns
    columns: Columns = {name: [] for name in spec.fields}
    for where, row in json_lines(path, text):
        texts = {}
        for name in spec.text_fields:
            key = str(keys[name])
            texts[name] = _text(lookup(row, key, where, spec.name), key, where)
            columns[name].append(texts[name])
        _check_input_format(spec, texts, where)
        key = str(keys["label"])
        columns["label"].append(_label(spec, lookup(row, key, where, spec.name), key, where))
    return _finish(columns, path, spec)


def parse_multirc_jsonl(spec: TaskSpec, path: Path, text: str) -> Columns:
    """MultiRC paragraphs as one row per answer option."""
    columns: Columns = {name: [] for name in spec.fields}
    for where, row in json_lines(path, text):
        paragraph = _text(lookup(row, "passage.text", where, spec.name), "passage.text", where)
        questions = lookup(row, "passage.questions", where, spec.name)
        if not isinstance(questions, list) or not questions:
            raise UserError(f"{where}: 'passage.questions' must be a non-empty list")
        for question in questions:
            if not isinstance(question, dict):
                raise UserError(f"{where}: each question must be a JSON object, got {question!r}")
            asked = _text(lookup(question, "question", where, spec.name), "question", where)
            group = as_text(lookup(question, "idx", where, spec.name), "idx", where)
            answers = lookup(question, "answers", where, spec.name)
            if not isinstance(answers, list) or not answers:
                raise UserError(f"{where}: question {group}: 'answers' must be a non-empty list")
            for answer in answers:
                if not isinstance(answer, dict):
                    raise UserError(f"{where}: each answer must be a JSON object, got {answer!r}")
                columns["paragraph"].append(paragraph)
                columns["question"].append(asked)
                text = lookup(answer, "text", where, spec.name)
                if not isinstance(text, str):  # empty answers occur in the real files
                    raise UserError(f"{where}: answer text must be a string, got {text!r}")
                columns["answer"].append(text)
                label = lookup(answer, "label", where, spec.name)
                columns["label"].append(_label(spec, label, "label", where))
                columns["group"].append(group)
    return _finish(columns, path, spec)


def _entities(passage: str, spans: Any, where: str) -> list[str]:
    """The distinct entity strings of a ReCoRD passage (spans are inclusive character ranges),
    sorted, as the Hub's ``super_glue/record`` lists them."""
    if not isinstance(spans, list) or not spans:
        raise UserError(f"{where}: 'passage.entities' must be a non-empty list of spans")
    names = set()
    for span in spans:
        start = span.get("start") if isinstance(span, dict) else None
        end = span.get("end") if isinstance(span, dict) else None
        valid = isinstance(start, int) and isinstance(end, int) and 0 <= start <= end
        if not valid or end >= len(passage):
            raise UserError(
                f"{where}: entity span {span!r} is not a character range inside the passage"
                f" (0..{len(passage) - 1})"
            )
        names.add(passage[start : end + 1])
    return sorted(names)


def _answer_text(answer: Any, where: str, task: str) -> str:
    """A ReCoRD gold answer: ``{"start", "end", "text"}`` in the original files."""
    if not isinstance(answer, dict):
        raise UserError(f"{where}: each answer must be a JSON object with a text, got {answer!r}")
    return _text(lookup(answer, "text", where, task), "answers.text", where)


def parse_record_jsonl(spec: TaskSpec, path: Path, text: str) -> Columns:
    """ReCoRD passages as one binary row per (query, distinct entity)."""
    columns: Columns = {name: [] for name in spec.fields}
    positive, negative = spec.raw_label_values()[1], spec.raw_label_values()[0]
    for where, row in json_lines(path, text):
        passage = _text(lookup(row, "passage.text", where, spec.name), "passage.text", where)
        entities = _entities(passage, lookup(row, "passage.entities", where, spec.name), where)
        queries = lookup(row, "qas", where, spec.name)
        if not isinstance(queries, list) or not queries:
            raise UserError(f"{where}: 'qas' must be a non-empty list of queries")
        for item in queries:
            if not isinstance(item, dict):
                raise UserError(f"{where}: each query must be a JSON object, got {item!r}")
            query = _text(lookup(item, "query", where, spec.name), "query", where)
            if "@placeholder" not in query:
                raise UserError(f"{where}: query {query!r} has no @placeholder")
            group = as_text(lookup(item, "idx", where, spec.name), "idx", where)
            answers = lookup(item, "answers", where, spec.name)
            if not isinstance(answers, list) or not answers:
                raise UserError(f"{where}: query {group}: 'answers' must be a non-empty list")
            gold = sorted({_answer_text(answer, where, spec.name) for answer in answers})
            for entity in entities:
                columns["passage"].append(passage)
                columns["query"].append(query)
                columns["entity"].append(entity)
                label = positive if entity in gold else negative
                columns["label"].append(spec.raw_label_values().index(label))
                columns["answers"].append(gold)
                columns["group"].append(group)
    return _finish(columns, path, spec)
