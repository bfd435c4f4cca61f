"""Suites: named sets of tasks, methods, seeds and backbones, with sourced hyperparameters.

Shipped suites live in ``bench/suites/*.yaml``; a user suite file can be given by path. A suite
file is a mapping with these keys (only ``tasks`` is required)::

    name: cpu-mini
    description: what the suite is for
    tasks: [sst2, rte]            # task names (python -m bench list tasks)
    methods: [full_finetune]      # default: every registered method except comparison rows
    seeds: [13, 21, 42]           # default: --seeds (3 default seeds)
    backbones: [minilm]           # default: --backbone
    budget: smoke                 # optional: smoke or full (BUDGETS; claim verdicts need
                                  # a non-smoke suite); not the search block's point budget
    reference: results/reference/cpu-mini   # optional: the folder of the suite's shipped
                                  # records (from the working directory); a dry run into
                                  # another --output also counts the plan's runs done there
    train: {epochs: 3}            # training overrides for every run
    settings:                     # applied in order, later entries win; CLI flags win over all
      - source: "where these values come from (paper, script, measurement)"
        tasks: [rte]              # optional: restrict to these tasks
        methods: [p_tuning_v2]    # optional: restrict to these methods
        backbones: [roberta-large]  # optional: restrict to these backbones (Hub ids match too)
        train: {epochs: 5}        # TrainConfig overrides
        method: {lr: 1.0e-2}      # method config overrides
    exclude:                      # task × method × backbone cells not to plan, with the reason
      - reason: "no official script for this backbone"
        tasks: [conll2003]        # each key optional; an entry matches where all its keys do
        backbones: [bert-large-cased]
    search:                       # hyperparameter search per (task, method); docs/search.md
      - source: "where the grid comes from"
        tasks: [rte]              # optional: restrict to these tasks (same matching as settings)
        methods: [p_tuning_v2]    # optional: restrict to these methods
        grid: {lr: [5.0e-3, 1.0e-2], prompt_length: [8, 20]}   # any train or method config key
        search_seeds: 1           # seeds per grid point (default 1)
        final_seeds: 5            # seeds of the winner (default 5)
        budget: 4                 # optional: at most 4 points, a seeded random subset
        budget_seed: 0            # seed of that subset (default 0)

Every mapping rejects unknown keys, naming them and the allowed ones.

Precedence of a run's values: method defaults < ``settings`` (in order) < the grid point <
command-line flags. A grid key also given as a flag (``--lr``, ``--method-args``) is dropped from
the grid. Matching ``search`` entries merge in order like ``settings``: later grid keys and
counts win. Seeds of a searched cell: the pool is ``--seeds`` if given, else the suite's
``seeds``, else the default seeds; search runs take its first ``search_seeds``, final runs its
first ``final_seeds`` (all of ``--seeds`` when it is given).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.errors import UserError, unknown_name_error
from bench.search import Search, SearchBlock, merge_blocks, parse_block

SUITES_DIR = Path(__file__).parent / "suites"
SUITE_KEYS = (
    "name",
    "description",
    "tasks",
    "methods",
    "seeds",
    "backbones",
    "train",
    "settings",
    "exclude",
    "search",
    "budget",
    "reference",
)
BUDGETS = {
    "smoke": "checks that every run works end to end; too small to judge claims: the report "
    "shows its numbers but issues no claim verdict from it",
    "full": "the budget the suite's protocol calls for: claim verdicts are issued",
}
"""A suite's optional budget marker and what it means (a suite without one: not marked)."""
SETTING_KEYS = ("source", "tasks", "methods", "backbones", "train", "method")
EXCLUDE_KEYS = ("reason", "tasks", "methods", "backbones")


def same_backbone(a: str, b: str) -> bool:
    """Short names and Hub ids of one checkpoint compare equal (``roberta-large`` is
    ``FacebookAI/roberta-large``), and a local directory is the checkpoint it is named after
    (``/models/roberta-large`` is ``roberta-large``)."""
    from bench.backbones import HUB_ALIASES

    def names(backbone: str) -> set[str]:
        out = {HUB_ALIASES.get(backbone, backbone)}
        if Path(backbone).expanduser().is_dir():
            base = Path(backbone).expanduser().resolve().name
            out.add(HUB_ALIASES.get(base, base))
        return out

    return bool(names(a) & names(b))


def _scope_matches(
    scope: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]],
    task: str,
    method: str,
    backbone: str | None,
) -> bool:
    """Whether (task, method, backbone) lies in a (tasks, methods, backbones) scope; an empty
    tuple means all, and ``backbone=None`` ignores the backbone filter."""
    tasks, methods, backbones = scope
    return (
        (not tasks or task in tasks)
        and (not methods or method in methods)
        and (
            backbone is None or not backbones or any(same_backbone(backbone, b) for b in backbones)
        )
    )


@dataclass(frozen=True)
class Setting:
    """Hyperparameter overrides for the runs of some tasks × methods, with their source."""

    source: str = field(metadata={"help": "Where the values come from: paper, script, measured."})
    tasks: tuple[str, ...] = field(default=(), metadata={"help": "Tasks it applies to (all)."})
    methods: tuple[str, ...] = field(default=(), metadata={"help": "Methods it applies to (all)."})
    train: dict[str, Any] = field(default_factory=dict, metadata={"help": "TrainConfig keys."})
    method: dict[str, Any] = field(default_factory=dict, metadata={"help": "Method config keys."})
    backbones: tuple[str, ...] = field(
        default=(), metadata={"help": "Backbones it applies to (all); Hub ids match short names."}
    )

    def applies(self, task: str, method: str, backbone: str | None = None) -> bool:
        return _scope_matches((self.tasks, self.methods, self.backbones), task, method, backbone)


@dataclass(frozen=True)
class Exclusion:
    """Task × method × backbone cells a suite does not plan, and why (e.g. no official
    script exists for that backbone)."""

    reason: str = field(metadata={"help": "Why these cells are left out."})
    tasks: tuple[str, ...] = field(default=(), metadata={"help": "Tasks it covers (all)."})
    methods: tuple[str, ...] = field(default=(), metadata={"help": "Methods it covers (all)."})
    backbones: tuple[str, ...] = field(default=(), metadata={"help": "Backbones it covers (all)."})

    def covers(self, task: str, method: str, backbone: str) -> bool:
        return _scope_matches((self.tasks, self.methods, self.backbones), task, method, backbone)


@dataclass(frozen=True)
class Suite:
    """A named plan template. Empty ``methods``/``seeds``/``backbones`` defer to the CLI."""

    name: str
    description: str
    tasks: tuple[str, ...]
    methods: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()
    backbones: tuple[str, ...] = ()
    settings: tuple[Setting, ...] = ()
    exclude: tuple[Exclusion, ...] = ()
    search: tuple[SearchBlock, ...] = ()
    budget: str | None = field(
        default=None, metadata={"help": "Budget marker, one of BUDGETS; None: not marked."}
    )
    reference: str | None = field(
        default=None,
        metadata={"help": "Folder of the suite's shipped records, from the working directory."},
    )

    def __post_init__(self) -> None:
        if not self.tasks:
            raise UserError(f"suite '{self.name}' lists no tasks")
        if self.budget is not None and self.budget not in BUDGETS:
            raise UserError(
                f"suite '{self.name}': unknown budget {self.budget!r}; valid: {', '.join(BUDGETS)}"
            )

    def overrides(
        self, task: str, method: str, backbone: str | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The (train, method) overrides of one run: every matching setting, in file order."""
        train: dict[str, Any] = {}
        method_values: dict[str, Any] = {}
        for setting in self.settings:
            if setting.applies(task, method, backbone):
                train.update(setting.train)
                method_values.update(setting.method)
        return train, method_values

    def excluded(self, task: str, method: str, backbone: str) -> str | None:
        """The reason this cell is left out of the plan, or None when it is planned."""
        for exclusion in self.exclude:
            if exclusion.covers(task, method, backbone):
                return exclusion.reason
        return None

    def search_for(self, task: str, method: str) -> Search | None:
        """The hyperparameter search of (task, method), or None when it has none."""
        return merge_blocks(self.search, task, method)


def _check_keys(data: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _suite_task_names(
    tasks: tuple[str, ...], where: str, suite_tasks: tuple[str, ...]
) -> tuple[str, ...]:
    """``tasks``, checked to be among the suite's own tasks."""
    stray = [t for t in tasks if t not in suite_tasks]
    if stray:
        raise UserError(
            f"{where}: task(s) {stray} are not in the suite's tasks {list(suite_tasks)}"
        )
    return tasks


def _required_text(data: dict[str, Any], key: str, where: str, why: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: '{key}' is required ({why})")
    return value


def _names(data: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise UserError(f"{where}: '{key}' must be a list of names, got {value!r}")
    return tuple(dict.fromkeys(value))


def _numbers_from_strings(values: dict[str, Any]) -> dict[str, Any]:
    """YAML 1.1 reads ``1e-2`` as a string; a numeric-looking string means the number."""
    out = dict(values)
    for key, value in values.items():
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                out[key] = float(value)
    return out


def _mapping(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise UserError(f"{where}: '{key}' must be a mapping of names to values, got {value!r}")
    return _numbers_from_strings(value)


def _check_train_keys(values: dict[str, Any], where: str) -> None:
    import dataclasses

    from bench.config import TrainConfig

    allowed = tuple(f.name for f in dataclasses.fields(TrainConfig))
    _check_keys(values, allowed, f"{where} train")


def _check_methods(methods: tuple[str, ...], where: str) -> None:
    """A misspelt method would silently disable a setting: name it and the valid ones."""
    from methods import method_names

    valid = method_names(include_comparison=True)
    for name in methods:
        if name not in valid:
            raise UserError(f"{where}: unknown method {name!r}; valid: {valid}")


def _check_method_keys(values: dict[str, Any], methods: tuple[str, ...], where: str) -> None:
    """Each key of a setting's ``method`` must belong to a method it targets (those it names,
    else any registered one): a typo would otherwise pass silently whenever the plan holds no
    run it applies to. A key goes only to the methods whose config has it."""
    import dataclasses

    from methods import get_method, method_names

    targets = methods or tuple(method_names(include_comparison=True))
    known = {f.name for name in targets for f in dataclasses.fields(get_method(name).config_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(
            f"{where} method: unknown key(s) {unknown} for methods {list(targets)}; "
            f"allowed keys: {sorted(known)}"
        )


def _parse_setting(data: Any, where: str, suite_tasks: tuple[str, ...]) -> Setting:
    if not isinstance(data, dict):
        raise UserError(f"{where} must be a mapping, got {data!r}")
    _check_keys(data, SETTING_KEYS, where)
    source = _required_text(data, "source", where, "where the values come from")
    tasks = _suite_task_names(_names(data, "tasks", where), where, suite_tasks)
    train = _mapping(data, "train", where)
    _check_train_keys(train, where)
    methods = _names(data, "methods", where)
    _check_methods(methods, where)
    method_values = _mapping(data, "method", where)
    _check_method_keys(method_values, methods, where)
    return Setting(
        source=source.strip(),
        tasks=tasks,
        methods=methods,
        backbones=_names(data, "backbones", where),
        train=train,
        method=method_values,
    )


def _grid_keys(methods: tuple[str, ...]) -> Any:
    """A checker of grid keys: None for a TrainConfig key or a key of one of ``methods``'
    configs (every registered method when empty), else the sorted allowed keys."""
    import dataclasses

    from bench.config import TrainConfig
    from methods import get_method, method_names

    allowed = {f.name for f in dataclasses.fields(TrainConfig)} - set(UNSEARCHABLE)
    for name in methods or method_names(include_comparison=True):
        allowed |= {f.name for f in dataclasses.fields(get_method(name).config_cls)}
    return lambda key: None if key in allowed else sorted(allowed)


#: TrainConfig keys a grid may not vary: a protocol per cell (never mixed within one), and a
#: setting that does not change results (its points would be the same runs).
UNSEARCHABLE = ("protocol", "activation_checkpointing")


def _parse_search(data: Any, where: str, suite_tasks: tuple[str, ...]) -> SearchBlock:
    methods = _names(data, "methods", where) if isinstance(data, dict) else ()
    _check_methods(methods, where)
    block = parse_block(data, where, _names, _grid_keys(methods))
    _suite_task_names(block.tasks, where, suite_tasks)
    return block


def _parse_exclusion(data: Any, where: str, suite_tasks: tuple[str, ...]) -> Exclusion:
    if not isinstance(data, dict):
        raise UserError(f"{where} must be a mapping, got {data!r}")
    _check_keys(data, EXCLUDE_KEYS, where)
    reason = _required_text(data, "reason", where, "why these runs are left out")
    tasks = _suite_task_names(_names(data, "tasks", where), where, suite_tasks)
    methods = _names(data, "methods", where)
    _check_methods(methods, where)
    return Exclusion(
        reason=reason.strip(),
        tasks=tasks,
        methods=methods,
        backbones=_names(data, "backbones", where),
    )


def _seeds(data: dict[str, Any], where: str) -> tuple[int, ...]:
    value = data.get("seeds", [])
    if not isinstance(value, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value
    ):
        raise UserError(f"{where}: 'seeds' must be a list of integers >= 0, got {value!r}")
    duplicates = sorted({s for s in value if value.count(s) > 1})
    if duplicates:
        raise UserError(f"{where}: duplicate seed(s) {duplicates}")
    return tuple(value)


def parse_suite(data: Any, source: str) -> Suite:
    """A Suite from parsed YAML (UserError naming the bad key or value)."""
    where = f"suite file {source}"
    if not isinstance(data, dict):
        raise UserError(f"{where} must be a mapping, got {type(data).__name__}")
    _check_keys(data, SUITE_KEYS, where)
    tasks = _names(data, "tasks", where)
    train = _mapping(data, "train", where)
    _check_train_keys(train, where)
    settings = [Setting(source=f"{source} (suite-wide train)", train=train)] if train else []
    raw_settings = data.get("settings", [])
    if not isinstance(raw_settings, list):
        raise UserError(f"{where}: 'settings' must be a list of mappings")
    settings += [
        _parse_setting(item, f"{where} settings[{i}]", tasks) for i, item in enumerate(raw_settings)
    ]
    raw_exclude = data.get("exclude", [])
    if not isinstance(raw_exclude, list):
        raise UserError(f"{where}: 'exclude' must be a list of mappings")
    exclude = [
        _parse_exclusion(item, f"{where} exclude[{i}]", tasks) for i, item in enumerate(raw_exclude)
    ]
    raw_search = data.get("search", [])
    if not isinstance(raw_search, list):
        raise UserError(f"{where}: 'search' must be a list of mappings")
    search = tuple(
        _parse_search(item, f"{where} search[{i}]", tasks) for i, item in enumerate(raw_search)
    )
    return Suite(
        name=str(data.get("name") or Path(source).stem),
        description=str(data.get("description", "")),
        tasks=tasks,
        methods=_names(data, "methods", where),
        seeds=_seeds(data, where),
        backbones=_names(data, "backbones", where),
        settings=tuple(settings),
        exclude=tuple(exclude),
        search=search,
        budget=None if data.get("budget") is None else str(data["budget"]),
        reference=None if data.get("reference") is None else str(data["reference"]),
    )


def _read(path: Path) -> Suite:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"suite file {path} cannot be read: {error}") from None
    try:
        return parse_suite(yaml.safe_load(text), str(path))
    except yaml.YAMLError as error:
        raise UserError(f"suite file {path} is not valid YAML: {error}") from None


@functools.cache
def builtin_suites() -> dict[str, Suite]:
    return {path.stem: _read(path) for path in sorted(SUITES_DIR.glob("*.yaml"))}


def get_suite(name_or_path: str) -> Suite:
    """A shipped suite by name, or a suite YAML file by path."""
    if name_or_path in builtin_suites():
        return builtin_suites()[name_or_path]
    path = Path(name_or_path).expanduser()
    if name_or_path.endswith((".yaml", ".yml")):
        if not path.is_file():
            raise UserError(f"suite file {path} does not exist")
        return _read(path)
    raise unknown_name_error("suite", name_or_path, builtin_suites())
