"""Which runs learned nothing: a score at the level of a constant prediction.

A run is *at chance* on its headline (split, metric) when, by metric:

- ``accuracy``: at or below the majority rate of that split (the accuracy of always predicting
  the most frequent class), or the predictions were constant;
- ``matthews_correlation``: 0 or undefined (scikit-learn returns 0 for constant predictions);
- ``pearson`` / ``spearmanr``: undefined (NaN: constant predictions) or, with the record's
  chance levels, constant predictions;
- ``f1`` (binary, or seqeval's entity F1): 0 (no positive / no entity found correctly).

The majority rate and the constant-prediction flag come from the record's ``chance`` entry
(:mod:`bench.chance`, written at evaluation time; older records may carry the majority rate
alone, added afterwards from the data files). Records without any are judged from their
metrics alone: MCC 0, a NaN correlation or an F1 of 0 still count; an accuracy counts
when the same split's binary F1 equals 2·acc/(1 + acc), the F1 of predicting the positive class
everywhere (then accuracy is the positive rate), or is 0 while accuracy is not 0; any other
accuracy of such a record cannot be judged and counts as learned (:func:`at_chance` says None).

A (task, method) cell is *not learned* when every ok run of it is at chance: it is marked in the
tables and counts neither for nor against a claim.
"""

from __future__ import annotations

import math
from typing import Any

ZERO_AT = {"matthews_correlation", "f1"}
"""Metrics whose value is 0 at a constant prediction."""
UNDEFINED_AT = {"matthews_correlation", "pearson", "spearmanr"}
"""Metrics that are undefined (NaN) at a constant prediction."""
TOLERANCE = 1e-9


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def at_chance(record: dict[str, Any], split: str, metric: str) -> bool | None:
    """Whether the ok run ``record`` scores at chance on (``split``, ``metric``): True, False,
    or None when its record lacks what it would take to tell (an accuracy without chance
    levels and without a binary F1 beside it)."""
    metrics = (record.get("metrics") or {}).get(split) or {}
    value = _number(metrics.get(metric))
    levels = (record.get("chance") or {}).get(split)
    if metric not in metrics:
        return None
    if math.isnan(value):
        return True if metric in UNDEFINED_AT else None
    if metric in ZERO_AT and abs(value) <= TOLERANCE:
        return True
    if isinstance(levels, dict):
        if levels.get("constant_predictions"):
            return True
        majority = _number(levels.get("majority_rate"))
        return metric == "accuracy" and not math.isnan(majority) and value <= majority + TOLERANCE
    if metric != "accuracy":
        return False
    f1 = _number(metrics.get("f1"))
    if math.isnan(f1):
        return None
    all_positive = abs(f1 - 2 * value / (1 + value)) <= 1e-6
    return all_positive or (f1 <= TOLERANCE < value)


RECORDED, MAJORITY_ONLY, NONE = "recorded", "majority rate only", "none"


def levels_kind(record: dict[str, Any], split: str) -> str:
    """What the record says about chance on ``split``: ``recorded`` (majority rate and the
    constant-prediction flag, written at evaluation time), ``majority rate only`` (added to an
    older record from the data files afterwards; its predictions were not kept) or ``none``."""
    levels = (record.get("chance") or {}).get(split)
    if not isinstance(levels, dict):
        return NONE
    return RECORDED if "constant_predictions" in levels else MAJORITY_ONLY
