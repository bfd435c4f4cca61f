"""Training configuration and the fully resolved description of one run (and its key)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from bench.errors import UserError


@dataclass(frozen=True)
class TrainConfig:
    """How one run trains and evaluates. Method-specific values (learning rate) live in the
    method's config; everything here is shared by all methods."""

    epochs: int = field(default=3, metadata={"help": "Passes over the training examples."})
    batch_size: int = field(default=16, metadata={"help": "Examples per optimizer step."})
    eval_batch_size: int = field(default=64, metadata={"help": "Examples per evaluation batch."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW decoupled weight decay."})
    warmup_ratio: float = field(
        default=0.06, metadata={"help": "Fraction of steps with linear learning-rate warm-up."}
    )
    max_grad_norm: float = field(
        default=1.0, metadata={"help": "Gradient clipping norm (0 disables clipping)."}
    )
    max_length: int | None = field(
        default=None, metadata={"help": "Max tokens per example (None: the task's default)."}
    )
    eval_every: int = field(
        default=0,
        metadata={"help": "Evaluate on the validation split every N steps (0: per epoch)."},
    )
    val_fraction: float = field(
        default=0.1,
        metadata={"help": "Fraction of the (sub-sampled) training pool carved off for selection."},
    )
    max_train_samples: int | None = field(
        default=None,
        metadata={"help": "Size of the training pool drawn (seeded) from train, before carving."},
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Cap on each final evaluation split (None: all of it)."}
    )
    group_by_length: bool = field(
        default=False,
        metadata={
            "help": "Batch training examples of similar length (less padding, faster; changes "
            "batch composition, hence results, so it is part of the run key)."
        },
    )

    activation_checkpointing: bool = field(
        default=False,
        metadata={
            "help": "Recompute each backbone layer in the backward pass instead of keeping its "
            "activations: far less memory for more step time (on MiniLM and CPU: 0.35-0.55x the "
            "peak memory, 1.4-1.6x the step). The results are the same numbers, so it never "
            "enters the run key."
        },
    )
    compile: bool = field(
        default=False,
        metadata={
            "help": "Run the model through torch.compile (inductor). Fused kernels change float "
            "rounding, so it is part of the run key when set."
        },
    )
    input_format: str | None = field(
        default=None,
        metadata={
            "help": "How the text fields become the model input, for tasks that offer several "
            "(wic: wic_question, wic_pair); None: the task's default. Part of the run key when "
            "set."
        },
    )
    protocol: str | None = field(
        default=None,
        metadata={
            "help": "Model-selection protocol: carved, validation or official-dev (None: the "
            "task's standard one, resolved at planning; see bench/protocols.py). Part of the "
            "run key unless carved."
        },
    )

    precision: str = field(
        default="auto",
        metadata={
            "help": "fp32, bf16 (autocast), or auto: bf16 on CUDA and on CPUs with native bf16, "
            "fp32 elsewhere (bench/precision.py). Planning resolves auto, so the run key holds "
            "the precision that runs; fp32 is left out of the key (records made before this "
            "field trained in fp32 on CPU)."
        },
    )

    def __post_init__(self) -> None:
        from bench.precision import check_precision
        from bench.protocols import PROTOCOLS

        check_precision(self.precision)
        if self.protocol is not None and self.protocol not in PROTOCOLS:
            raise UserError(f"protocol must be one of {list(PROTOCOLS)}, got {self.protocol!r}")
        for name in ["val_fraction", "warmup_ratio", "weight_decay", "max_grad_norm"]:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise UserError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value):  # NaN slips through every comparison below
                raise UserError(f"{name} must be a finite number, got {value!r}")
        positive = ["epochs", "batch_size", "eval_batch_size"]
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"{name} must be a positive integer, got {value!r}")
        for name in ["max_train_samples", "max_eval_samples", "max_length"]:
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise UserError(f"{name} must be a positive integer or None, got {value!r}")
        if (
            not isinstance(self.eval_every, int)
            or isinstance(self.eval_every, bool)
            or (self.eval_every < 0)
        ):
            raise UserError(f"eval_every must be an integer >= 0, got {self.eval_every!r}")
        for name in ("group_by_length", "activation_checkpointing", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"{name} must be true or false, got {getattr(self, name)!r}")
        fmt = self.input_format
        if fmt is not None and (not isinstance(fmt, str) or not fmt):
            raise UserError(f"input_format must be an input format name or None, got {fmt!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise UserError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise UserError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise UserError("weight_decay and max_grad_norm must be >= 0")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise UserError(f"unknown training key(s) {unknown}; allowed keys: {sorted(allowed)}")
        try:
            return cls(**values)
        except TypeError as error:  # e.g. a string where a number belongs
            raise UserError(f"invalid training config {values}: {error}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def key_dict(self) -> dict[str, Any]:
        """What enters run keys: every field, except fields added later while at their
        default, so that keys of existing records stay valid."""
        out = self.to_dict()
        for name in KEYED_ONLY_WHEN_SET:
            if out[name] == TrainConfig.__dataclass_fields__[name].default:
                del out[name]
        for name in NEVER_KEYED:
            del out[name]
        for name, value in KEYED_UNLESS.items():
            if out[name] == value:
                del out[name]
        return out


#: TrainConfig fields added after the first records were written (see ``key_dict``).
KEYED_ONLY_WHEN_SET = ("group_by_length", "compile", "protocol", "input_format")
#: Fields that change how a run executes, not its numbers (tested bitwise): never in the key.
NEVER_KEYED = ("activation_checkpointing",)
#: Fields left out of run keys at this value (what every record made before the field used).
KEYED_UNLESS = {"precision": "fp32"}


def check_finite(values: dict[str, Any], where: str) -> None:
    """UserError naming the first NaN or infinite number of ``values`` (a method config: a NaN
    learning rate would only show as a diverged run)."""
    for name, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{where}: {name} must be a finite number, got {value!r}")


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one run's result. Its :attr:`key` names the run's record.

    ``backbone_identity`` and ``data_identity`` identify content, not paths, so the same run on
    two machines has the same key.
    """

    task: str
    method: str
    method_config: dict[str, Any]
    backbone: str
    backbone_identity: str
    data_dir: str | None
    data_identity: str
    seed: int
    train: TrainConfig
    suite: str | None = None  # the suite that planned the run; not part of the key
    budget: str | None = None  # that suite's budget marker (bench.suites.BUDGETS); not in the key

    def identity(self) -> dict[str, Any]:
        """The inputs hashed into the key (paths excluded: they differ between machines)."""
        return {
            "task": self.task,
            "method": self.method,
            "method_config": self.method_config,
            "backbone": self.backbone_identity,
            "data": self.data_identity,
            "seed": self.seed,
            "train": self.train.key_dict(),
        }

    @property
    def key(self) -> str:
        canonical = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        return f"{self.task}/{self.method}/seed{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["train"] = self.train.to_dict()
        out["key"] = self.key
        return out
