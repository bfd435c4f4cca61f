"""Tiny SuperGLUE / CoNLL04 / OntoNotes files in their original layouts, built from the tiny
BERT's vocabulary (tests/conftest.py), so that every task can train on the tiny model."""

from __future__ import annotations

import json
import random
from pathlib import Path

from conftest import FILLER, NAMES, NEGATIVE, POSITIVE


def _words(rng: random.Random, n: int = 4) -> str:
    return " ".join(rng.sample(FILLER, n))


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def _split_rows(make, sizes: tuple[int, int] = (40, 12)) -> dict[str, list[dict]]:
    rng = random.Random(0)
    return {
        name: [make(rng, i) for i in range(n)]
        for name, n in zip(("train.jsonl", "val.jsonl"), sizes, strict=True)
    }


def _cb(rng: random.Random, i: int) -> dict:
    label = ["entailment", "contradiction", "neutral"][i % 3]
    return {"premise": _words(rng), "hypothesis": _words(rng, 3), "label": label, "idx": i}


def _copa(rng: random.Random, i: int) -> dict:
    good, bad = rng.choice(POSITIVE), rng.choice(NEGATIVE)
    first, second = (bad, good) if i % 2 else (good, bad)
    question = "cause" if i % 3 else "effect"
    return {"premise": _words(rng), "choice1": f"a {first}", "choice2": f"a {second}",
            "question": question, "label": i % 2, "idx": i}  # fmt: skip


def _wic(rng: random.Random, i: int) -> dict:
    word = rng.choice(NAMES)
    first, second = f"{word} {_words(rng)}", f"{_words(rng)} {word}"
    return {"word": word, "sentence1": first, "sentence2": second, "label": bool(i % 2), "idx": i}


def _wsc(rng: random.Random, i: int) -> dict:
    return {"text": _words(rng, 6), "target": {"span1_text": rng.choice(NAMES), "span1_index": 0,
            "span2_text": "the", "span2_index": 2}, "label": bool(i % 2), "idx": i}  # fmt: skip


def _multirc(rng: random.Random, i: int) -> dict:
    questions = []
    for q in range(2):
        answers = [{"text": rng.choice(POSITIVE + NEGATIVE), "label": a % 2, "idx": a}
                   for a in range(3)]  # fmt: skip
        questions.append({"question": _words(rng, 3), "answers": answers, "idx": 2 * i + q})
    return {"idx": i, "passage": {"text": _words(rng, 8), "questions": questions}}


def _record(rng: random.Random, i: int) -> dict:
    names = rng.sample(NAMES, 3)
    text = f"{names[0]} {_words(rng)} {names[1]} . {names[2]}"
    spans = [{"start": text.index(n), "end": text.index(n) + len(n) - 1} for n in names]
    query = {"query": f"@placeholder {_words(rng, 2)}", "idx": i,
             "answers": [{"start": spans[0]["start"], "end": spans[0]["end"], "text": names[0]}]}
    return {"idx": i, "passage": {"text": text, "entities": spans}, "qas": [query]}  # fmt: skip


SUPERGLUE = {"CB": _cb, "COPA": _copa, "WiC": _wic, "WSC": _wsc, "MultiRC": _multirc,
             "ReCoRD": _record}  # fmt: skip
"""Local folder -> row maker."""


def write_tiny_superglue(root: Path) -> Path:
    """``root/superglue/<Task>/{train,val}.jsonl`` for every SuperGLUE task but BoolQ/RTE."""
    for folder, make in SUPERGLUE.items():
        for name, rows in _split_rows(make).items():
            _jsonl(root / "superglue" / folder / name, rows)
    return root


def write_tiny_conll04(root: Path) -> Path:
    """``root/conll04/conll04_{train,dev,test}.json`` in SpERT's layout."""
    rng = random.Random(2)
    kinds = {"paris": "Loc", "london": "Loc", "john": "Peop", "mary": "Peop", "acme": "Org",
             "reuters": "Org"}  # fmt: skip
    folder = root / "conll04"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", 40), ("dev", 10), ("test", 10)):
        sentences = []
        for _ in range(n):
            name_word = rng.choice(NAMES)
            tokens = _words(rng, 3).split() + [name_word] + _words(rng, 2).split()
            entities = [{"type": kinds[name_word], "start": 3, "end": 4}]
            sentences.append({"tokens": tokens, "entities": entities, "relations": []})
        (folder / f"conll04_{name}.json").write_text(json.dumps(sentences), encoding="utf-8")
    return root


ONTONOTES_SAMPLE = """\
#begin document (nw/wsj/00/wsj_0001); part 000
nw/wsj/00/wsj_0001 0 0 John NNP (TOP(S(NP* - - - - (PERSON* (ARG0* (0
nw/wsj/00/wsj_0001 0 1 Smith NNP *) - - - - *) *) 0)
nw/wsj/00/wsj_0001 0 2 visited VBD (VP* visit 01 1 - * (V*) -
nw/wsj/00/wsj_0001 0 3 Paris NNP (NP*) - - - - (GPE) (ARG1*) -
nw/wsj/00/wsj_0001 0 4 . . *)) - - - - * * -

nw/wsj/00/wsj_0001 0 0 He PRP (TOP(S(NP*) - - - - * * -
nw/wsj/00/wsj_0001 0 1 left VBD (VP*)) leave 01 1 - * * -
#end document
"""
"""Two sentences in the CoNLL-2012 ``*_conll`` layout (named entities in column 11)."""
