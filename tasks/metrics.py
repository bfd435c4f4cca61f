"""``compute_metrics``: a task's metrics from predictions and references, offline.

Built on scikit-learn, scipy and seqeval (the libraries ``evaluate`` wraps; ``evaluate.load``
fetches scripts from the Hub and fails offline), all imported lazily.

Degenerate inputs do not crash: Matthews correlation of constant predictions is 0.0 (scikit-
learn's convention); Pearson / Spearman of a constant sequence, or of a single pair, is NaN;
binary F1 and the seqeval scores are 0.0 when there is no positive class / no entity to score.
"""

from __future__ import annotations

import math
import operator
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .grouped_metrics import GROUPED_METRICS, GROUPED_NEEDS
from .spec import TaskKind, TaskSpec


def _accuracy(preds: list[Any], refs: list[Any]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score

    return {"accuracy": float(accuracy_score(refs, preds))}


def _f1(preds: list[Any], refs: list[Any]) -> dict[str, float]:
    from sklearn.metrics import f1_score

    score = f1_score(refs, preds, labels=[0, 1], pos_label=1, average="binary", zero_division=0.0)
    return {"f1": float(score)}


def _matthews(preds: list[Any], refs: list[Any]) -> dict[str, float]:
    from sklearn.metrics import matthews_corrcoef

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"matthews_correlation": float(matthews_corrcoef(refs, preds))}


def _correlation(name: str) -> Callable[[list[Any], list[Any]], dict[str, float]]:
    def compute(preds: list[Any], refs: list[Any]) -> dict[str, float]:
        from scipy import stats

        if len(preds) < 2:
            return {name: math.nan}
        function = stats.pearsonr if name == "pearson" else stats.spearmanr
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # constant input: scipy warns and returns NaN
            return {name: float(function(preds, refs)[0])}

    return compute


def _seqeval(preds: list[Any], refs: list[Any]) -> dict[str, float]:
    from seqeval import metrics

    scores = {
        "f1": metrics.f1_score(refs, preds, zero_division=0),
        "precision": metrics.precision_score(refs, preds, zero_division=0),
        "recall": metrics.recall_score(refs, preds, zero_division=0),
        "accuracy": metrics.accuracy_score(refs, preds),
    }
    return {key: float(value) for key, value in scores.items()}


def _macro_f1(preds: list[Any], refs: list[Any]) -> dict[str, float]:
    from sklearn.metrics import f1_score

    labels = sorted(set(refs) | set(preds))
    score = f1_score(refs, preds, labels=labels, average="macro", zero_division=0.0)
    return {"macro_f1": float(score)}


METRIC_FUNCTIONS: dict[str, Callable[[list[Any], list[Any]], dict[str, float]]] = {
    "accuracy": _accuracy,
    "f1": _f1,
    "matthews_correlation": _matthews,
    "pearson": _correlation("pearson"),
    "spearmanr": _correlation("spearmanr"),
    "seqeval": _seqeval,
    "macro_f1": _macro_f1,
}
"""Metric name -> function(predictions, references) returning its result keys."""


def _class_indices(values: Sequence[Any], what: str, num_labels: int) -> list[int]:
    out = []
    for position, value in enumerate(values):
        try:
            index = operator.index(value)
        except TypeError:
            raise ValueError(f"{what}[{position}] must be a class index, got {value!r}") from None
        if not 0 <= index < num_labels:
            raise ValueError(
                f"{what}[{position}] = {index} is not a class index in [0, {num_labels})"
            )
        out.append(index)
    return out


def _tag_lists(
    preds: Sequence[Any], refs: Sequence[Any], labels: Sequence[str]
) -> tuple[list[list[str]], list[list[str]]]:
    allowed = set(labels)
    out_preds, out_refs = [], []
    for position, (pred, ref) in enumerate(zip(preds, refs, strict=True)):
        pred, ref = list(pred), list(ref)
        if len(pred) != len(ref):
            raise ValueError(
                f"sentence {position}: {len(pred)} predicted tags for {len(ref)} reference tags"
            )
        unknown = sorted({str(tag) for tag in pred + ref if tag not in allowed})
        if unknown:
            raise ValueError(
                f"sentence {position}: unknown tag(s) {', '.join(unknown)};"
                f" tags must be names from {', '.join(labels)}"
            )
        out_preds.append(pred)
        out_refs.append(ref)
    return out_preds, out_refs


def compute_metrics(
    spec: TaskSpec,
    predictions: Sequence[Any],
    references: Sequence[Any],
    context: Mapping[str, Sequence[Any]] | None = None,
) -> dict[str, float]:
    """Every metric in ``spec.metrics``, as ``{result key: float}`` (keys in metric order).

    Inputs: class indices (ints) for classification and multiple choice, floats for
    regression, and for token classification one list of tag NAMES per sentence (words, not
    sub-tokens). Grouped metrics (``multirc``, ``record``) also read ``context``: one value per
    row for each of the task's meta fields (``group``, ``answers``) and ``score`` (the row's
    positive-class probability). Raises ``ValueError`` (a caller bug, not a user error) for
    empty or mismatched inputs.
    """
    preds, refs = list(predictions), list(references)
    if len(preds) != len(refs):
        raise ValueError(f"task '{spec.name}': {len(preds)} predictions for {len(refs)} references")
    if not preds:
        raise ValueError(f"task '{spec.name}': no predictions to score")
    if spec.kind in (TaskKind.CLASSIFICATION, TaskKind.MULTIPLE_CHOICE):
        preds = _class_indices(preds, "predictions", len(spec.labels))
        refs = _class_indices(refs, "references", len(spec.labels))
    elif spec.kind is TaskKind.REGRESSION:
        preds, refs = [float(p) for p in preds], [float(r) for r in refs]
    else:
        preds, refs = _tag_lists(preds, refs, spec.labels)
    results: dict[str, float] = {}
    for metric in spec.metrics:
        if metric in GROUPED_METRICS:
            rows = _context(spec, metric, context, len(preds))
            results.update(GROUPED_METRICS[metric](preds, refs, rows))
        else:
            results.update(METRIC_FUNCTIONS[metric](preds, refs))
    return results


def _context(
    spec: TaskSpec, metric: str, context: Mapping[str, Sequence[Any]] | None, size: int
) -> Mapping[str, Sequence[Any]]:
    needed = GROUPED_NEEDS[metric]
    missing = [key for key in needed if context is None or key not in context]
    if missing:
        raise ValueError(f"task '{spec.name}': metric '{metric}' needs context {missing}")
    assert context is not None
    for key in needed:
        if len(context[key]) != size:
            raise ValueError(
                f"task '{spec.name}': context '{key}' has {len(context[key])} values for"
                f" {size} predictions"
            )
    return context


def context_fields(spec: TaskSpec) -> tuple[str, ...]:
    """The dataset columns the task's grouped metrics read per row (kept beside the model
    inputs when tokenizing; empty for ungrouped tasks)."""
    needed = [key for metric in spec.metrics for key in GROUPED_NEEDS.get(metric, ())]
    return tuple(key for key in dict.fromkeys(needed) if key != "score")
