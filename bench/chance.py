"""Chance levels of an evaluated split: what a model that learned nothing would have scored.

Written into every run record (``record["chance"][split]``) so that the report can tell a run
that learned the task from one that sits at the level of a constant prediction, without the
data. For one split:

- ``examples``: how many examples (sentences for token tasks) were scored;
- ``majority_rate``: the share of the most frequent reference (the accuracy of always predicting
  that class, or that choice for a multiple-choice task); None for regression and token tasks;
- ``constant_predictions``: every prediction was the same class, the same value (regression) or
  the same tag everywhere (token classification, say all ``O``);
- ``distinct_predictions``: how many different predictions there were.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any


def split_levels(kind: str, predictions: Sequence[Any], references: Sequence[Any]) -> dict:
    """The chance levels of one split from its ``predictions`` and ``references`` as
    :func:`tasks.compute_metrics` takes them (class indices, floats, or per-sentence tag lists);
    ``kind`` is the task kind's value (``classification``, ``regression``,
    ``token_classification``; any other kind predicts one label per example)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    tokens = kind == "token_classification"
    flat = [tag for sentence in predictions for tag in sentence] if tokens else list(predictions)
    distinct = len(set(flat))
    majority = None
    if not tokens and kind != "regression" and references:
        majority = Counter(references).most_common(1)[0][1] / len(references)
    return {
        "examples": len(references),
        "majority_rate": majority,
        "constant_predictions": distinct <= 1,
        "distinct_predictions": distinct,
    }
