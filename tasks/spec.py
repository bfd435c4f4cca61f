"""The task schema: :class:`TaskSpec` and its data sources, built from a task's YAML file.

A task file (``tasks/<suite>/<name>.yaml``) is a mapping with exactly the fields of
:class:`TaskSpec`; ``hub`` and ``local`` are mappings with the fields of :class:`HubSource` and
:class:`LocalSource`. Every field is validated when the dataclass is built, so a bad file fails
at registry load time with a message naming the file, the field and the allowed values.

This module must stay light: no torch / transformers / datasets / sklearn imports.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UserError

from .checks import (
    FrozenMap,
    check_choice,
    check_exact_keys,
    check_keys,
    check_one_line,
    check_str,
    check_str_map,
    check_str_tuple,
    check_subset,
    type_name,
)
from .grouped_metrics import GROUPED_NEEDS


class TaskKind(str, enum.Enum):
    """What the model predicts: one class, one number, one tag per word, or one of several
    choices (one score per choice; the highest wins)."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"
    TOKEN_CLASSIFICATION = "token_classification"
    MULTIPLE_CHOICE = "multiple_choice"


SUITES: tuple[str, ...] = ("glue", "ner", "superglue")
"""The built-in task suites, in display order. A task may name any other suite (a lower-case
name): ``tasks.suite_names()`` lists the suites of the registered tasks."""

LOCAL_FORMATS: tuple[str, ...] = (
    "glue_tsv",
    "conll",
    "superglue_jsonl",
    "multirc_jsonl",
    "record_jsonl",
    "spert_json",
    "conll2012",
)
"""Local file formats: GLUE's original TSV files, CoNLL-style one-token-per-line files,
SuperGLUE's JSON lines (flat rows; MultiRC's and ReCoRD's nested ones), SpERT's JSON (CoNLL04)
and the CoNLL-2012 column format (OntoNotes 5.0)."""

FORMAT_KINDS: Mapping[str, tuple[TaskKind, ...]] = FrozenMap(
    {
        "glue_tsv": (TaskKind.CLASSIFICATION, TaskKind.REGRESSION),
        "conll": (TaskKind.TOKEN_CLASSIFICATION,),
        "superglue_jsonl": (TaskKind.CLASSIFICATION, TaskKind.MULTIPLE_CHOICE),
        "multirc_jsonl": (TaskKind.CLASSIFICATION,),
        "record_jsonl": (TaskKind.CLASSIFICATION,),
        "spert_json": (TaskKind.TOKEN_CLASSIFICATION,),
        "conll2012": (TaskKind.TOKEN_CLASSIFICATION,),
    }
)
"""Local format -> the task kinds it can hold."""

COLUMN_FORMATS: tuple[str, ...] = ("glue_tsv", "superglue_jsonl")
"""Local formats whose ``columns`` map each field to a column (or JSON key); the others have a
fixed layout and take no ``columns``."""

HUB_EXPANSIONS: Mapping[str, tuple[str, ...]] = FrozenMap(
    {
        "record_entities": ("passage", "query", "entities", "answers", "group"),
        "spert_spans": ("tokens", "entities"),
    }
)
"""Row expansions applied to a Hub split (``hub.expand``) -> the columns they read. For
``record_entities``, one ReCoRD query row becomes one binary row per candidate entity; for
``spert_spans``, a sentence's SpERT entity spans become IOB2 tags."""

META_FIELDS: tuple[str, ...] = ("group", "answers")
"""Columns that are neither model input nor label but feed grouped metrics: ``group`` (the
question an answer row belongs to: MultiRC, ReCoRD), ``answers`` (ReCoRD's gold entities)."""

METRIC_OUTPUTS: Mapping[str, tuple[str, ...]] = FrozenMap(
    {
        "accuracy": ("accuracy",),
        "f1": ("f1",),
        "matthews_correlation": ("matthews_correlation",),
        "pearson": ("pearson",),
        "spearmanr": ("spearmanr",),
        "seqeval": ("f1", "precision", "recall", "accuracy"),
        "macro_f1": ("macro_f1",),
        "multirc": ("f1a", "em"),
        "record": ("f1", "exact_match"),
    }
)
"""Metric name -> the keys it adds to :func:`tasks.compute_metrics`'s result."""

METRICS_FOR_KIND: Mapping[TaskKind, tuple[str, ...]] = FrozenMap(
    {
        TaskKind.CLASSIFICATION: (
            "accuracy",
            "f1",
            "matthews_correlation",
            "macro_f1",
            "multirc",
            "record",
        ),
        TaskKind.REGRESSION: ("pearson", "spearmanr"),
        TaskKind.TOKEN_CLASSIFICATION: ("seqeval",),
        TaskKind.MULTIPLE_CHOICE: ("accuracy",),
    }
)
"""The metrics that make sense for each task kind."""

TRAIN_SPLIT = "train"
NER_FIELDS: tuple[str, str] = ("tokens", "tags")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_IOB2_RE = re.compile(r"^(O|[BI]-\S+)$")


@dataclass(frozen=True)
class HubSource:
    """Where a task lives on the Hugging Face Hub.

    ``splits`` maps our split name to the Hub's (e.g. ``validation_matched``); ``columns`` maps
    each of our fields (the text fields plus ``label``, or ``tokens``/``tags``) to a Hub column
    (``a.b`` for a field of a struct column, e.g. ``idx.question``). ``expand`` names a row
    expansion (:data:`HUB_EXPANSIONS`); ``columns`` then maps the columns it reads.
    """

    path: str
    splits: Mapping[str, str]
    columns: Mapping[str, str]
    name: str | None = None
    revision: str | None = None
    expand: str | None = None

    def __post_init__(self) -> None:
        check_str(self.path, "hub.path")
        if self.name is not None:
            check_str(self.name, "hub.name")
        if self.revision is not None:
            check_str(self.revision, "hub.revision")
        object.__setattr__(self, "splits", check_str_map(self.splits, "hub.splits"))
        object.__setattr__(self, "columns", check_str_map(self.columns, "hub.columns"))
        if not self.splits:
            raise UserError("hub.splits must name at least one split")
        if self.expand is not None:
            check_choice(self.expand, "hub.expand", "row expansion", HUB_EXPANSIONS)

    def describe(self) -> str:
        """``path, config name`` as shown in messages, e.g. ``nyu-mll/glue, config sst2``."""
        parts = [self.path] + ([f"config {self.name}"] if self.name else [])
        parts += [f"revision {self.revision}"] if self.revision else []
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-serialisable copy (for run records)."""
        return {
            "path": self.path,
            "name": self.name,
            "revision": self.revision,
            "splits": dict(self.splits),
            "columns": dict(self.columns),
            **({"expand": self.expand} if self.expand else {}),
        }


@dataclass(frozen=True)
class LocalSource:
    """Where a task lives in a local data directory, in its original distribution format.

    Files are looked up as ``DATA_DIR/<subdir>/<file>`` (or ``DATA_DIR/<suite>/<subdir>/<file>``).
    For ``glue_tsv``, ``columns`` maps each field (text fields plus ``label``) to a header column
    name, or to a 0-based index (required when ``header`` is false). ``conll`` files always
    read the token from the first column and the tag from the last, so ``columns`` stays empty.
    ``label_values`` are the raw label strings in the files, in ``labels`` order, when they
    differ from the label names (e.g. ``["0", "1"]``).
    """

    format: str
    subdir: str
    files: Mapping[str, str]
    header: bool = True
    columns: Mapping[str, str | int] = field(default_factory=FrozenMap)
    label_values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_choice(self.format, "local.format", "local format", LOCAL_FORMATS)
        check_str(self.subdir, "local.subdir")
        if Path(self.subdir).is_absolute() or ".." in Path(self.subdir).parts:
            raise UserError(f"local.subdir must be a relative folder name, got {self.subdir!r}")
        object.__setattr__(self, "files", check_str_map(self.files, "local.files"))
        if not self.files:
            raise UserError("local.files must name at least one split")
        if not isinstance(self.header, bool):
            raise UserError(f"local.header must be true or false, got {self.header!r}")
        object.__setattr__(self, "columns", self._checked_columns())
        object.__setattr__(
            self,
            "label_values",
            check_str_tuple(self.label_values, "local.label_values", allow_empty=True),
        )

    def _checked_columns(self) -> FrozenMap[str, str | int]:
        if not isinstance(self.columns, Mapping):
            raise UserError(f"local.columns must be a mapping, got {self.columns!r}")
        if self.format == "conll":
            if self.columns:
                raise UserError(
                    "local.columns must be omitted for format 'conll' (the token is the first"
                    f" column and the tag the last), got {dict(self.columns)!r}"
                )
            return FrozenMap()
        if self.format not in COLUMN_FORMATS:
            if self.columns:
                raise UserError(
                    f"local.columns must be omitted for format '{self.format}' (its layout is"
                    f" fixed), got {dict(self.columns)!r}"
                )
            return FrozenMap()
        for key, column in self.columns.items():
            check_str(key, "local.columns key")
            what = f"local.columns[{key!r}]"
            if isinstance(column, bool) or not isinstance(column, str | int):
                raise UserError(f"{what} must be a column name or a 0-based index, got {column!r}")
            if isinstance(column, int) and self.format == "superglue_jsonl":
                raise UserError(f"{what} must be a JSON key (a.b for nested keys), got {column}")
            if isinstance(column, int) and column < 0:
                raise UserError(f"{what} must be a 0-based index (>= 0), got {column}")
            if isinstance(column, str) and not self.header:
                raise UserError(
                    f"{what} is the column name {column!r}, but local.header is false;"
                    " headerless files need 0-based indices"
                )
        return FrozenMap(self.columns)

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-serialisable copy (for run records)."""
        return {
            "format": self.format,
            "subdir": self.subdir,
            "files": dict(self.files),
            "header": self.header,
            "columns": dict(self.columns),
            "label_values": list(self.label_values),
        }


@dataclass(frozen=True)
class TaskSpec:
    """One benchmark task: what the model reads, what it predicts, how it is scored, and where
    the data comes from (the Hub, a local directory, or both).

    ``labels`` are in the Hub's ClassLabel order; class index ``i`` means ``labels[i]``
    (empty for regression; for multiple choice, the choices' names). ``eval_splits`` are all
    labelled non-train splits, evaluated at the end of a run; ``report_splits`` (a subset) are
    the ones a paper reports.

    ``input_format`` names how the text fields become the model's input (a
    :data:`tasks.input_formats.INPUT_FORMATS` entry; ``None``: the text fields as one sequence or
    a pair), ``input_formats`` the alternatives a run may pick instead
    (``TrainConfig.input_format``).
    ``meta_fields`` are columns kept beside the inputs for grouped metrics (see
    :data:`META_FIELDS`).
    """

    name: str
    suite: str
    kind: TaskKind
    description: str
    text_fields: tuple[str, ...]
    labels: tuple[str, ...]
    metrics: tuple[str, ...]
    primary_metric: str
    eval_splits: tuple[str, ...]
    report_splits: tuple[str, ...]
    hub: HubSource | None = None
    local: LocalSource | None = None
    label_range: tuple[float, float] | None = None
    max_length: int = 128
    keywords: tuple[str, ...] = ()
    #: false: the task is run and tabled, but no claim verdict counts it (e.g. a held-out
    #: variant of a task that is already counted)
    claims: bool = True
    #: P-Tuning v1's pattern (classification only): ``{field}`` pieces, ``[P]`` markers where
    #: the pseudo tokens go, one ``[MASK]``, and literal words; see docs/profiles.md.
    template: str | None = None
    #: label -> the one-token word the MLM head scores at ``[MASK]`` (with ``template``).
    verbalizer: Mapping[str, str] | None = None
    input_format: str | None = None
    input_formats: tuple[str, ...] = ()
    meta_fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise UserError(
                f"task name must be lower-case letters, digits and '_' (starting with a letter),"
                f" got {self.name!r}"
            )
        try:
            self._validate()
        except UserError as error:
            raise UserError(f"task '{self.name}': {error}") from None

    @property
    def label_field(self) -> str:
        """The column holding the target: ``label``, or ``tags`` for token classification."""
        return "tags" if self.kind is TaskKind.TOKEN_CLASSIFICATION else "label"

    @property
    def num_labels(self) -> int:
        """Size of the model's output layer: the number of classes/tags, or 1 for regression and
        for multiple choice (one score per choice)."""
        if self.kind in (TaskKind.REGRESSION, TaskKind.MULTIPLE_CHOICE):
            return 1
        return len(self.labels)

    @property
    def fields(self) -> tuple[str, ...]:
        """Every column of a loaded split: the text fields, the label field, the meta fields."""
        return (*self.text_fields, self.label_field, *self.meta_fields)

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-serialisable copy (for run records)."""
        out: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, HubSource | LocalSource):
                value = value.to_dict()
            elif isinstance(value, TaskKind):
                value = value.value
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):  # the verbalizer
                value = dict(value)
            out[item.name] = value
        return out

    def _validate(self) -> None:
        if not isinstance(self.suite, str) or not _NAME_RE.match(self.suite):
            raise UserError(
                f"suite must be lower-case letters, digits and '_' (e.g. one of "
                f"{', '.join(SUITES)}), got {self.suite!r}"
            )
        if not isinstance(self.claims, bool):
            raise UserError(f"claims must be true or false, got {self.claims!r}")
        try:
            object.__setattr__(self, "kind", TaskKind(self.kind))
        except ValueError:
            check_choice(self.kind, "kind", "task kind", [k.value for k in TaskKind])
        check_one_line(self.description, "description")
        self._validate_fields()
        self._validate_labels()
        self._validate_metrics()
        self._validate_splits()
        self._validate_sources()
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int):
            raise UserError(f"max_length must be an integer, got {self.max_length!r}")
        if self.max_length <= 0:
            raise UserError(f"max_length must be positive, got {self.max_length}")
        keywords = check_str_tuple(self.keywords, "keywords", allow_empty=True)
        object.__setattr__(self, "keywords", keywords)
        self._validate_template()
        self._validate_input_format()

    def _validate_template(self) -> None:
        """``template`` and ``verbalizer`` come together, on classification tasks only; the
        template uses every text field, one ``[MASK]`` and at least one ``[P]``; the verbalizer
        names exactly the labels."""
        if self.template is None and self.verbalizer is None:
            return
        if self.kind is not TaskKind.CLASSIFICATION:
            raise UserError(
                f"template/verbalizer apply to classification tasks only (a verbalizer scores "
                f"one word per class), not {self.kind.value}"
            )
        if self.template is None or self.verbalizer is None:
            raise UserError("template and verbalizer must be given together")
        check_one_line(self.template, "template")
        fields = re.findall(r"\{([^}]*)\}", self.template)
        unknown = sorted(set(fields) - set(self.text_fields))
        if unknown or sorted(fields) != sorted(self.text_fields):
            raise UserError(
                f"template must use each text field once ({', '.join(self.text_fields)}), "
                f"got {{{'}, {'.join(fields)}}}"
            )
        if self.template.count("[MASK]") != 1 or "[P]" not in self.template:
            raise UserError(
                f"template needs exactly one [MASK] and at least one [P], got {self.template!r}"
            )
        verbalizer = check_str_map(self.verbalizer, "verbalizer")
        check_exact_keys(verbalizer, "verbalizer", self.labels, "one word per label")
        object.__setattr__(self, "verbalizer", verbalizer)

    def _validate_input_format(self) -> None:
        from .input_formats import check_input_format

        formats = check_str_tuple(self.input_formats, "input_formats", allow_empty=True)
        object.__setattr__(self, "input_formats", formats)
        if self.input_format is None and formats:
            raise UserError(f"input_formats {list(formats)} are given but no input_format")
        for name in ([self.input_format] if self.input_format is not None else []) + list(formats):
            check_input_format(name, self.kind, self.text_fields)
        if self.input_format is not None and formats and self.input_format not in formats:
            raise UserError(
                f"input_format {self.input_format!r} must be one of input_formats:"
                f" {', '.join(formats)}"
            )
        if self.kind is TaskKind.MULTIPLE_CHOICE and self.input_format is None:
            raise UserError("a multiple_choice task needs an input_format that builds its choices")

    def _validate_fields(self) -> None:
        fields = check_str_tuple(self.text_fields, "text_fields")
        object.__setattr__(self, "text_fields", fields)
        meta = check_str_tuple(self.meta_fields, "meta_fields", allow_empty=True)
        object.__setattr__(self, "meta_fields", meta)
        check_subset(meta, "meta_fields", META_FIELDS, "the meta field list")
        if set(meta) & set(fields):
            raise UserError(f"meta_fields {list(meta)} overlap text_fields {list(fields)}")
        if self.kind is TaskKind.TOKEN_CLASSIFICATION:
            if fields != ("tokens",):
                raise UserError(
                    f"text_fields of a token_classification task must be [tokens], got {fields}"
                )
            return
        for name in fields:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name) or name == "label":
                raise UserError(f"text field {name!r} must be an identifier other than 'label'")

    def _validate_labels(self) -> None:
        labels = check_str_tuple(self.labels, "labels", allow_empty=True)
        object.__setattr__(self, "labels", labels)
        if self.kind is TaskKind.REGRESSION:
            if labels:
                raise UserError(f"labels must be empty for a regression task, got {labels}")
            self._validate_label_range()
            return
        if self.label_range is not None:
            raise UserError(f"label_range is only for regression tasks, not {self.kind.value}")
        if len(labels) < 2:
            raise UserError(f"labels must name at least two classes, got {labels}")
        if self.kind is TaskKind.TOKEN_CLASSIFICATION:
            bad = [tag for tag in labels if not _IOB2_RE.match(tag)]
            if bad or "O" not in labels:
                raise UserError(
                    f"labels of a token_classification task must be IOB2 tags (O, B-X, I-X)"
                    f" including 'O'; got {', '.join(labels)}"
                )

    def _validate_label_range(self) -> None:
        bounds = self.label_range
        if not isinstance(bounds, list | tuple) or len(bounds) != 2:
            raise UserError(f"label_range must be [low, high] for regression, got {bounds!r}")
        if any(isinstance(b, bool) or not isinstance(b, int | float) for b in bounds):
            raise UserError(f"label_range must hold two numbers, got {bounds!r}")
        low, high = float(bounds[0]), float(bounds[1])
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise UserError(f"label_range must be finite with low < high, got {bounds!r}")
        object.__setattr__(self, "label_range", (low, high))

    def _validate_metrics(self) -> None:
        metrics = check_str_tuple(self.metrics, "metrics")
        object.__setattr__(self, "metrics", metrics)
        allowed = METRICS_FOR_KIND[self.kind]
        for metric in metrics:
            check_choice(metric, "metrics", "metric", METRIC_OUTPUTS)
            if metric not in allowed:
                raise UserError(
                    f"metric {metric!r} does not apply to a {self.kind.value} task;"
                    f" allowed: {', '.join(allowed)}"
                )
        for binary in ("f1", "multirc", "record"):
            if binary in metrics and len(self.labels) != 2:
                raise UserError(
                    f"metric '{binary}' scores binary rows and needs exactly 2 labels,"
                    f" got {len(self.labels)}"
                )
        present = (*self.text_fields, *self.meta_fields)
        for metric in metrics:
            reads = [name for name in GROUPED_NEEDS.get(metric, ()) if name != "score"]
            missing = [name for name in reads if name not in present]
            if missing:
                raise UserError(
                    f"metric '{metric}' reads the column(s) {', '.join(missing)} of every row;"
                    f" add them to meta_fields (from {', '.join(META_FIELDS)}) or text_fields"
                )
        keys = [key for metric in metrics for key in METRIC_OUTPUTS[metric]]
        check_choice(self.primary_metric, "primary_metric", "metric result", keys)

    def _validate_splits(self) -> None:
        evals = check_str_tuple(self.eval_splits, "eval_splits")
        reports = check_str_tuple(self.report_splits, "report_splits")
        object.__setattr__(self, "eval_splits", evals)
        object.__setattr__(self, "report_splits", reports)
        if TRAIN_SPLIT in evals:
            raise UserError(f"eval_splits must not include '{TRAIN_SPLIT}', got {evals}")
        check_subset(reports, "report_splits", evals, "eval_splits")

    def _validate_sources(self) -> None:
        if self.hub is None and self.local is None:
            raise UserError("a task needs a 'hub' source, a 'local' source, or both")
        if self.hub is not None and not isinstance(self.hub, HubSource):
            raise UserError(f"hub must be a HubSource, got {type_name(self.hub)}")
        if self.local is not None and not isinstance(self.local, LocalSource):
            raise UserError(f"local must be a LocalSource, got {type_name(self.local)}")
        for label, source in (("hub", self.hub), ("local", self.local)):
            if source is None:
                continue
            splits = source.splits if isinstance(source, HubSource) else source.files
            what = f"{label}.{'splits' if label == 'hub' else 'files'}"
            if TRAIN_SPLIT not in splits:
                raise UserError(f"{what} must name a '{TRAIN_SPLIT}' split, got {list(splits)}")
            check_subset(self.eval_splits, "eval_splits", splits, what)
        purpose = f"the fields of a {self.kind.value} task"
        if self.hub is not None and self.hub.expand is not None:
            reads = HUB_EXPANSIONS[self.hub.expand]
            check_exact_keys(
                self.hub.columns, "hub.columns", reads, f"the columns {self.hub.expand} reads"
            )
        elif self.hub is not None:
            check_exact_keys(self.hub.columns, "hub.columns", self.fields, purpose)
        if self.local is not None:
            self._validate_local(self.local, purpose)

    def _validate_local(self, local: LocalSource, purpose: str) -> None:
        if self.kind not in FORMAT_KINDS[local.format]:
            allowed = [name for name, kinds in FORMAT_KINDS.items() if self.kind in kinds]
            raise UserError(
                f"local.format must be one of {', '.join(allowed)} for a {self.kind.value} task,"
                f" got '{local.format}'"
            )
        if local.format in COLUMN_FORMATS:
            check_exact_keys(local.columns, "local.columns", self.fields, purpose)
        if local.label_values:
            if self.kind is TaskKind.REGRESSION:
                raise UserError("local.label_values must be empty for a regression task")
            if len(local.label_values) != len(self.labels):
                raise UserError(
                    f"local.label_values must give one raw value per label"
                    f" ({len(self.labels)}: {', '.join(self.labels)}),"
                    f" got {len(local.label_values)}: {', '.join(local.label_values)}"
                )

    def raw_label_values(self) -> tuple[str, ...]:
        """The raw label strings of the local files, in ``labels`` order."""
        if self.local is not None and self.local.label_values:
            return self.local.label_values
        return self.labels


SPEC_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TaskSpec))
HUB_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(HubSource))
LOCAL_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(LocalSource))


def _required(cls: type) -> list[str]:
    return [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]


def _build(cls: type, data: Any, what: str, allowed: tuple[str, ...]) -> Any:
    if not isinstance(data, Mapping):
        raise UserError(f"{what} must be a mapping with keys {', '.join(allowed)}, got {data!r}")
    check_keys(data, what, allowed)
    missing = [key for key in _required(cls) if key not in data]
    if missing:
        raise UserError(
            f"{what}: missing required key(s) {', '.join(missing)}"
            f" (required: {', '.join(_required(cls))})"
        )
    return cls(**data)


def spec_from_mapping(data: Any, origin: str = "<mapping>") -> TaskSpec:
    """Build a :class:`TaskSpec` from a parsed YAML mapping; errors are prefixed by ``origin``.

    Unknown keys (at the top level or inside ``hub`` / ``local``) are rejected with the list of
    allowed keys.
    """
    try:
        if not isinstance(data, Mapping):
            raise UserError(f"a task file must be a mapping, got {type_name(data)}")
        values = dict(data)
        check_keys(values, "task", SPEC_KEYS)
        if values.get("hub") is not None:
            values["hub"] = _build(HubSource, values["hub"], "hub", HUB_KEYS)
        if values.get("local") is not None:
            values["local"] = _build(LocalSource, values["local"], "local", LOCAL_KEYS)
        return _build(TaskSpec, values, "task", SPEC_KEYS)
    except TypeError as error:  # a wrongly typed value that slipped past the checks
        raise UserError(f"{origin}: {error}") from None
    except UserError as error:
        raise UserError(f"{origin}: {error}") from None


def load_spec_file(path: str | Path) -> TaskSpec:
    """Read one task YAML file (``yaml.safe_load``) and build its :class:`TaskSpec`."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read task file {path}: {error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UserError(f"{path}: invalid YAML: {error}") from None
    return spec_from_mapping(data, str(path))
