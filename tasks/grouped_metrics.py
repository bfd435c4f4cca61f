"""Metrics over groups of binary rows: MultiRC (F1a, EM) and ReCoRD (F1, EM), as SuperGLUE
scores them.

- ``multirc``: ``f1a`` is binary F1 over every answer option (all rows together); ``em`` is the
  fraction of questions (groups) whose answer options are all predicted right.
- ``record``: per query (group) the entity with the highest positive-class score is the
  prediction; ``f1`` is the best token-level F1 and ``exact_match`` the best exact match
  against the query's gold answers, after SQuAD-style normalization (lower case, punctuation
  and the articles a/an/the removed, whitespace collapsed), averaged over queries.
"""

from __future__ import annotations

import re
import string
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Context = Mapping[str, Sequence[Any]]
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _groups(context: Context) -> dict[Any, list[int]]:
    rows: dict[Any, list[int]] = defaultdict(list)
    for position, group in enumerate(context["group"]):
        rows[group].append(position)
    return rows


def multirc_scores(preds: list[int], refs: list[int], context: Context) -> dict[str, float]:
    """F1a over all answer options and EM per question."""
    from sklearn.metrics import f1_score

    f1a = f1_score(refs, preds, labels=[0, 1], pos_label=1, average="binary", zero_division=0.0)
    groups = _groups(context)
    exact = sum(all(preds[i] == refs[i] for i in rows) for rows in groups.values())
    return {"f1a": float(f1a), "em": exact / len(groups)}


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation and articles, collapse whitespace."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION))
    return " ".join(text.split())


def token_f1(prediction: str, gold: str) -> float:
    """F1 of the normalized tokens of ``prediction`` against ``gold``."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def record_scores(preds: list[int], refs: list[int], context: Context) -> dict[str, float]:
    """Per query the best-scored entity, scored against the gold answers."""
    del preds, refs  # the ranking uses the scores, the scoring the gold answer strings
    groups = _groups(context)
    f1 = exact = 0.0
    for rows in groups.values():
        best = max(rows, key=lambda i: context["score"][i])
        entity, answers = context["entity"][best], context["answers"][best]
        f1 += max(token_f1(entity, gold) for gold in answers)
        exact += max(float(normalize_answer(entity) == normalize_answer(g)) for g in answers)
    return {"f1": f1 / len(groups), "exact_match": exact / len(groups)}


GROUPED_METRICS: dict[str, Callable[[list[int], list[int], Context], dict[str, float]]] = {
    "multirc": multirc_scores,
    "record": record_scores,
}
"""Metric name -> function(predictions, references, context)."""

GROUPED_NEEDS: dict[str, tuple[str, ...]] = {
    "multirc": ("group",),
    "record": ("group", "answers", "entity", "score"),
}
"""Metric name -> the context values it reads (one per row)."""
