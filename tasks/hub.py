"""Loading a task from the Hugging Face Hub (``datasets.load_dataset``), imported lazily.

Hub columns are renamed to the task's fields, labels are mapped to the task's label indices by
NAME (never by position), and unlabelled rows (label -1, as in GLUE's test splits) are dropped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bench.errors import UserError

from .spec import HubSource, TaskKind, TaskSpec

if TYPE_CHECKING:
    import datasets

STRING_DTYPES = ("string", "large_string")


LAYOUTS = {
    "glue_tsv": "the original GLUE layout",
    "conll": "CoNLL files",
    "superglue_jsonl": "SuperGLUE's original JSON-lines files",
    "multirc_jsonl": "SuperGLUE's original JSON-lines files",
    "record_jsonl": "SuperGLUE's original JSON-lines files",
}
"""Local format -> how the offline hint names it (others: '<format> files')."""


def offline_hint(spec: TaskSpec) -> str:
    """The sentence telling an offline user how to use local files instead."""
    if spec.local is None:
        return ""
    layout = LAYOUTS.get(spec.local.format, f"{spec.local.format} files")
    files = ", ".join(f"DIR/{spec.local.subdir}/{name}" for name in spec.local.files.values())
    return f". If you are offline, pass --data-dir DIR with {layout} ({files})"


def _fetch(spec: TaskSpec, hub: HubSource) -> Any:
    try:
        import datasets

        return datasets.load_dataset(hub.path, hub.name, revision=hub.revision)
    except Exception as error:  # any failure (network, auth, format) becomes one clear message
        raise UserError(
            f"could not load task '{spec.name}' from the Hugging Face Hub ({hub.describe()}):"
            f" {error}{offline_hint(spec)}"
        ) from error


def _label_names(feature: Any) -> list[str] | None:
    """ClassLabel names of a column's feature (or of its elements, for a sequence column)."""
    inner = getattr(feature, "feature", feature)
    names = getattr(inner, "names", None)
    return list(names) if names is not None else None


def _index_map(spec: TaskSpec, hub_names: list[str], column: str) -> list[int] | None:
    """Hub class id -> our label index; None when the orders already agree."""
    if hub_names == list(spec.labels):
        return None
    if sorted(hub_names) != sorted(spec.labels):
        raise UserError(
            f"task '{spec.name}': the Hub column '{column}' has labels {hub_names},"
            f" but the task defines {list(spec.labels)}"
        )
    return [spec.labels.index(name) for name in hub_names]


def _convert_labels(spec: TaskSpec, ds: datasets.Dataset, column: str) -> datasets.Dataset:
    """Drop unlabelled rows (-1) and map the label column (ClassLabel ids or label strings)
    to our label indices."""
    field = spec.label_field
    if spec.kind is not TaskKind.TOKEN_CLASSIFICATION:
        ds = ds.filter(_keep_labelled, input_columns=field, batched=True)
    if spec.kind is TaskKind.REGRESSION:
        return ds
    feature = ds.features[field]
    names = _label_names(feature)
    if names is not None:
        mapping = _index_map(spec, names, column)
        if mapping is None:
            return ds
        lookup: dict[Any, int] = dict(enumerate(mapping))
    elif getattr(getattr(feature, "feature", feature), "dtype", None) in STRING_DTYPES:
        lookup = {name: index for index, name in enumerate(spec.labels)}
    else:
        raise UserError(
            f"task '{spec.name}': the Hub column '{column}' ({feature}) has no label names"
            " (it is neither a ClassLabel nor strings), so it cannot be matched to the task's"
            " labels by name"
        )

    where = f"task '{spec.name}': the Hub column '{column}'"
    return ds.map(
        _remap_batch,
        batched=True,
        fn_kwargs={"field": field, "lookup": lookup, "where": where},
        features=_drop_label_feature(ds.features, field),
    )


def _remap(value: Any, lookup: dict[Any, int], where: str) -> Any:
    if isinstance(value, list):
        return [_remap(item, lookup, where) for item in value]
    if value not in lookup:
        raise UserError(f"{where} holds {value!r}, which is not one of {list(lookup)}")
    return lookup[value]


def _remap_batch(
    batch: dict[str, list[Any]], field: str, lookup: dict[Any, int], where: str
) -> dict[str, list[Any]]:
    """``datasets.map`` function (module level, so that datasets can hash it)."""
    return {field: [_remap(value, lookup, where) for value in batch[field]]}


def _keep_labelled(values: list[Any]) -> list[bool]:
    """``datasets.filter`` function: False for GLUE's "no label" marker -1."""
    return [value != -1 for value in values]


def _drop_label_feature(features: Any, field: str) -> Any:
    """The features with the label column typed as plain integers (cast to ClassLabel later)."""
    import datasets

    out = features.copy()
    inner = datasets.Value("int64")
    out[field] = datasets.List(inner) if hasattr(features[field], "feature") else inner
    return out


def expand_record_entities(
    batch: dict[str, list[Any]], labels: list[str], task: str
) -> dict[str, list]:
    """``datasets.map`` function: one ReCoRD query row -> one row per distinct candidate entity
    (passage, query, entity, label = whether it is a gold answer, answers, group), as the
    official P-Tuning v2 code expands ReCoRD (THUDM/P-tuning-v2 ``tasks/superglue/dataset.py``,
    ``record_preprocess_function``). Queries without answers (the test split) are dropped.
    Label index 1 (``labels[1]``, "1") marks a gold answer."""
    del labels, task  # the row's label index is 1 for a gold answer, 0 otherwise
    out: dict[str, list[Any]] = {
        key: [] for key in ("passage", "query", "entity", "label", "answers", "group")
    }
    columns = ("passage", "query", "entities", "answers", "group")
    for passage, query, entities, answers, group in zip(
        *(batch[name] for name in columns), strict=True
    ):
        if not answers:
            continue
        for entity in sorted(set(entities)):
            out["passage"].append(passage)
            out["query"].append(query)
            out["entity"].append(entity)
            out["label"].append(1 if entity in answers else 0)
            out["answers"].append(sorted(set(answers)))
            out["group"].append(str(group))
    return out


def expand_spert_spans(
    batch: dict[str, list[Any]], labels: list[str], task: str
) -> dict[str, list[Any]]:
    """``datasets.map`` function: SpERT-style rows (``tokens``, ``entities`` with ``type``,
    ``start``, ``end`` exclusive) -> ``tokens`` and IOB2 ``tags`` (indices into ``labels``)."""
    from .ner_files import span_tags

    tags = [
        span_tags(labels, task, len(tokens), entities, f"the Hub row with tokens {tokens[:5]}")
        for tokens, entities in zip(batch["tokens"], batch["entities"], strict=True)
    ]
    return {"tokens": batch["tokens"], "tags": tags}


EXPANSIONS = {"record_entities": expand_record_entities, "spert_spans": expand_spert_spans}
"""``hub.expand`` name -> its batched ``datasets.map`` function."""


def load_from_hub(
    spec: TaskSpec, splits: Sequence[str], features: datasets.Features
) -> tuple[dict[str, datasets.Dataset], str]:
    """The requested splits with columns ``spec.fields`` cast to ``features``, and a
    fingerprint built from the Hub datasets' own ``_fingerprint``s (before our deterministic
    renaming / label mapping)."""
    hub = spec.hub
    if hub is None:
        raise UserError(f"task '{spec.name}' has no Hugging Face Hub source{offline_hint(spec)}")
    loaded = _fetch(spec, hub)
    out: dict[str, Any] = {}
    raw_fingerprints = []
    for split in splits:
        hub_split = hub.splits[split]
        if hub_split not in loaded:
            raise UserError(
                f"task '{spec.name}': the Hub dataset ({hub.describe()}) has no split"
                f" '{hub_split}' (needed for '{split}'); it has: {', '.join(loaded)}"
            )
        ds = loaded[hub_split]
        raw_fingerprints.append(f"{split}:{ds._fingerprint}")
        if any("." in column for column in hub.columns.values()):
            ds = ds.flatten()  # struct columns become "a.b" columns
        missing = [col for col in hub.columns.values() if col not in ds.column_names]
        if missing:
            raise UserError(
                f"task '{spec.name}': the Hub split '{hub_split}' ({hub.describe()}) has no"
                f" column(s) {', '.join(missing)}; it has: {', '.join(ds.column_names)}"
            )
        ds = ds.select_columns(list(hub.columns.values()))
        ds = ds.rename_columns({col: ours for ours, col in hub.columns.items() if col != ours})
        if hub.expand is not None:
            ds = ds.map(
                EXPANSIONS[hub.expand],
                batched=True,
                remove_columns=ds.column_names,
                fn_kwargs={"labels": list(spec.labels), "task": spec.name},
            )
        else:
            ds = _convert_labels(spec, ds, hub.columns[spec.label_field])
        out[split] = ds.select_columns(list(spec.fields)).cast(features)
    joined = "\n".join(raw_fingerprints)
    return out, hashlib.sha256(joined.encode()).hexdigest()
