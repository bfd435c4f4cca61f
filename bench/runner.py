"""Planning: methods × tasks × seeds × backbones → one resolved RunSpec per run.

Each run's configuration is layered: method defaults, then the suite's settings that match its
(task, method) in file order, then command-line flags. Execution lives in :mod:`bench.sweep`
(driver), :mod:`bench.executors` and :mod:`bench.worker`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import records
from bench.config import RunSpec, TrainConfig, check_finite
from bench.errors import UserError
from bench.suites import Suite

DEFAULT_SEEDS = (13, 21, 42, 87, 100)


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"3"`` → the first 3 default seeds; ``"13,21,42"`` (or ``"42,"``) → exactly those."""
    text = text.strip()
    try:
        if "," not in text:
            count = int(text)
            if count < 1:
                raise UserError(f"--seeds {text}: the number of seeds must be at least 1")
            extra = tuple(1000 + i for i in range(max(0, count - len(DEFAULT_SEEDS))))
            return (DEFAULT_SEEDS + extra)[:count]
        seeds = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UserError(
            f"--seeds {text!r}: give a count (3) or a comma-separated list (13,21,42)"
        ) from None
    if not seeds:
        raise UserError("--seeds: the list of seeds is empty")
    if any(seed < 0 for seed in seeds):
        raise UserError(f"--seeds {text}: seeds must be >= 0")
    duplicates = sorted({s for s in seeds if seeds.count(s) > 1})
    if duplicates:
        raise UserError(f"--seeds {text}: duplicate seed(s) {duplicates}")
    return seeds


@dataclass(frozen=True)
class PlanRequest:
    """What the user asked for, before resolution."""

    tasks: Sequence[str]
    methods: Sequence[str]
    seeds: Sequence[int]
    backbones: Sequence[str]
    data_dir: str | None
    train: dict[str, Any] = field(default_factory=dict)
    method_overrides: dict[str, Any] = field(default_factory=dict)
    suite: Suite | None = None


def build_plan(request: PlanRequest) -> list[RunSpec]:
    """Resolve names, identities and configs into one RunSpec per run (UserError on bad input)."""
    from bench.backbones import resolve_backbone
    from bench.data import data_identity
    from methods import get_method
    from tasks import get_task

    specs = [get_task(name) for name in _unique(request.tasks)]
    method_classes = [get_method(name) for name in _unique(request.methods)]
    fields = {cls.name: config_fields(cls) for cls in method_classes}
    check_method_args(request.method_overrides, fields)
    refs = [resolve_backbone(name) for name in _unique(request.backbones)]
    identities = {spec.name: data_identity(spec, request.data_dir) for spec in specs}
    plan = []
    for ref in refs:
        for spec in specs:
            for cls in method_classes:
                suite_train, suite_method = (
                    request.suite.overrides(spec.name, cls.name) if request.suite else ({}, {})
                )
                known = fields[cls.name]
                # each key goes to the methods whose config has it; a command-line key that no
                # selected method has reaches the config, which names it
                mine = {k: v for k, v in suite_method.items() if k in known}
                mine.update(
                    (k, v)
                    for k, v in request.method_overrides.items()
                    if k in known or not any(k in f for f in fields.values())
                )
                try:
                    train = TrainConfig.from_dict({**suite_train, **request.train})
                    check_finite(mine, "method config")
                    config = cls.config_cls.from_dict(mine).to_dict()
                except UserError as error:
                    raise UserError(f"{spec.name} × {cls.name}: {error}") from None
                for seed in request.seeds:
                    plan.append(
                        RunSpec(
                            task=spec.name,
                            method=cls.name,
                            method_config=config,
                            backbone=ref.name,
                            backbone_identity=ref.identity,
                            data_dir=str(Path(request.data_dir).expanduser().resolve())
                            if request.data_dir
                            else None,
                            data_identity=identities[spec.name],
                            seed=seed,
                            train=train,
                        )
                    )
    return plan


def config_fields(method_cls: Any) -> set[str]:
    """The config keys a method class accepts."""
    import dataclasses

    return {f.name for f in dataclasses.fields(method_cls.config_cls)}


def check_method_args(values: dict[str, Any], fields: dict[str, set[str]]) -> None:
    """``--method-args`` apply to the selected methods that have each key; a key that none of
    them has is an error naming it, the methods and the keys they accept."""
    if len(fields) < 2:
        return  # one method: its config names an unknown key itself
    known = set().union(*fields.values())
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(
            f"--method-args {unknown} belong to none of the selected methods {sorted(fields)}; "
            f"allowed keys: {sorted(known)}"
        )


def _unique(names: Sequence[str]) -> list[str]:
    """``names`` without repeats, in order (``--tasks rte,rte`` plans rte once)."""
    return list(dict.fromkeys(names))


def preflight(plan: Sequence[RunSpec]) -> None:
    """Load every task's data and check every backbone before the first run starts, so that bad
    input fails at once with a clear message instead of once per run."""
    from bench.backbones import load_tokenizer, resolve_backbone
    from tasks import get_task

    check_data(plan)
    check_weight_files(plan)
    for backbone, task in sorted({(r.backbone, r.task) for r in plan}):
        load_tokenizer(resolve_backbone(backbone), get_task(task))
    check_positions(plan)


@dataclass(frozen=True)
class DataCheck:
    """What :func:`check_data` found for one task: split sizes and where they came from."""

    task: str
    sizes: dict[str, int]  # split name -> examples; empty when not checked (Hub data)
    source: str

    @property
    def line(self) -> str:
        found = ", ".join(f"{n:,} {name}" for name, n in self.sizes.items())
        return f"{self.task}: {found} ({self.source})" if found else f"{self.task}: {self.source}"


def check_data(plan: Sequence[RunSpec], hub: bool = True) -> dict[str, DataCheck]:
    """Load every task's data (files, rows, labels; UserError on the first problem) and say what
    was found, per task. ``hub=False`` skips data that comes from the Hub (a download)."""
    from bench.data import load_task
    from tasks import get_task

    found = {}
    for task, data_dir in sorted({(r.task, r.data_dir) for r in plan}, key=str):
        if data_dir is None and not hub:
            found[task] = DataCheck(task, {}, "Hugging Face Hub, checked when the runs start")
            continue
        loaded = load_task(get_task(task), data_dir)
        sizes = {name: len(split) for name, split in loaded.splits.items()}
        found[task] = DataCheck(task, sizes, loaded.source)
    return found


def check_weight_files(plan: Sequence[RunSpec]) -> None:
    """A local backbone must hold safetensors weights: a pickled-only one (``*.bin``) is refused
    here, before anything is tokenized or loaded."""
    from bench.backbones import resolve_backbone

    for name in sorted({r.backbone for r in plan}):
        ref = resolve_backbone(name)
        if ref.is_local and not any(Path(ref.location).glob("*.safetensors")):
            found = sorted(p.name for p in Path(ref.location).iterdir() if p.is_file())
            raise UserError(
                f"backbone '{name}' ({ref.location}) has no *.safetensors weights (found: "
                f"{', '.join(found) or 'nothing'}); peft-bench loads weights only from "
                "safetensors files, never pickled .bin files"
            )


def check_positions(plan: Sequence[RunSpec]) -> None:
    """Runs whose input prompts take positions (``position: shift``) must fit ``max_length``
    plus the prompt into the backbone's position table: the method's own check, on the real
    backbone, before any data is tokenized (once per backbone, task, method config and length).
    """
    from bench.backbones import load_backbone, load_tokenizer, resolve_backbone
    from bench.train import ordinary_vocab_ids
    from methods import AttachData, build_method
    from tasks import get_task

    seen = set()
    for run in plan:
        if run.method_config.get("position") != "shift":
            continue
        spec = get_task(run.task)
        max_length = run.train.max_length or spec.max_length
        config = tuple(sorted((k, str(v)) for k, v in run.method_config.items()))
        ident = (run.backbone, run.task, run.method, config, max_length)
        if ident in seen:
            continue
        seen.add(ident)
        ref = resolve_backbone(run.backbone)
        tokenizer = load_tokenizer(ref, spec)
        method = build_method(run.method, run.method_config)
        keywords = tokenizer(" ".join(spec.keywords), add_special_tokens=False)["input_ids"]
        vocab = ordinary_vocab_ids(tokenizer)  # stands in for training tokens (cluster init)
        data = AttachData(keyword_ids=keywords, sample_ids=vocab, vocab_ids=vocab)
        model = method.attach(load_backbone(ref, spec, tokenizer.pad_token_id), spec, data)
        try:
            method.check_length(model, max_length)
        except UserError as error:
            raise UserError(f"{run.task} × {run.method}: {error}") from None


def run_serial(
    plan: Sequence[RunSpec],
    output: Path,
    device: str | None = None,
    progress: bool = False,
    save_delta: bool = False,
) -> list[dict[str, Any]]:
    """Run every pending run of ``plan`` in this process (finished runs are skipped) and
    return the plan's records; the programmatic form of ``run --executor serial``."""
    from bench.executors import ExecutorConfig
    from bench.sweep import run_sweep
    from bench.worker import WorkerOptions

    records.ensure_writable(output)
    options = WorkerOptions(output=str(output), device=device, save_delta=save_delta)
    return run_sweep(plan, output, ExecutorConfig(kind="serial"), options, progress=progress)
