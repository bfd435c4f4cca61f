"""The ``Method`` interface every fine-tuning method implements, and its shared value types.

A method turns a pretrained backbone *with a task head* into the model that is trained: it decides
what is frozen, what is added (prompts, encoders), which parameters get which learning rate, how
parameters are counted, and what is stored after training (the delta) and how it is loaded back.

Modules in ``methods/`` must not import torch at module level (``python -m bench list`` stays
fast); import it inside the methods that need it.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from torch import Tensor, nn

    from bench.config import TrainConfig
    from tasks import TaskSpec


def check_positive_int(value: Any, name: str) -> None:
    """ValueError unless ``value`` is an int >= 1 (booleans are not integers here)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _accepts(kind: str, value: Any) -> bool:
    """Whether ``value`` fits the annotation ``kind`` (``float``, ``int | None``, ``str``...)."""
    options = [part.strip() for part in kind.split("|")]
    if value is None:
        return "None" in options
    if isinstance(value, bool):
        return "bool" in options
    checks = {
        "int": lambda v: isinstance(v, int),
        "float": lambda v: isinstance(v, int | float) and math.isfinite(v),
        "str": lambda v: isinstance(v, str),
    }
    known = [checks[o] for o in options if o in checks]
    return not known or any(check(value) for check in known)


def check_field_types(config: Any) -> None:
    """ValueError naming the first field whose value does not fit its annotation (run before
    range checks, so that ``lr: ""`` reads "lr must be float", not a comparison error)."""
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        kind = item.type if isinstance(item.type, str) else getattr(item.type, "__name__", "")
        if not _accepts(kind, value):
            raise ValueError(f"{item.name} must be {kind}, got {value!r}")


@dataclass(frozen=True)
class MethodConfig:
    """Base class of every method's hyperparameters (a frozen dataclass, validated on creation).

    Subclasses add fields with ``metadata={"help": ...}``; ``from_dict`` rejects unknown keys.
    """

    lr: float = field(
        default=2e-5,
        metadata={"help": "Peak learning rate of the method's trainable parameters."},
    )

    def __post_init__(self) -> None:
        check_field_types(self)
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MethodConfig:
        """Build from a mapping, naming any unknown key and the allowed ones."""
        from bench.errors import UserError

        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise UserError(
                f"unknown {cls.__name__} key(s) {unknown}; allowed keys: {sorted(allowed)}"
            )
        try:
            return cls(**values)
        except (TypeError, ValueError) as error:
            raise UserError(f"invalid {cls.__name__}: {error}") from None

    #: Fields added after the first run records were written. Under the ``project`` profile
    #: they are left out of :meth:`to_dict` (hence of run keys) while at their default, so the
    #: keys of existing records stay valid; an ``official`` config keeps every field.
    KEYED_ONLY_WHEN_SET: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if getattr(self, "profile", "project") == "project":
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            for name in self.KEYED_ONLY_WHEN_SET:
                if name in out and out[name] == defaults[name]:
                    del out[name]
        return out


@dataclass(frozen=True)
class ParamCounts:
    """Parameter accounting of one attached model (all counts are numbers of scalars).

    ``trainable``: receive gradients at train time (reparameterization encoders included).
    ``stored``: what ``export`` writes after merging any reparameterization away.
    ``head``: the task head (classifier) alone. ``backbone``: the pretrained encoder/decoder.
    ``formula``: the closed-form expression of ``stored`` (e.g. ``"m*d"``) and ``formula_value``
    its value for this backbone; ``matches_formula`` says whether the counted number agrees.
    The closed form is optional: a method without one leaves both ``None`` (then
    ``matches_formula`` is ``None`` too). A mismatch is logged as a warning by the training loop
    and listed in the report's README.
    """

    trainable: int
    stored: int
    head: int
    backbone: int
    formula: str | None = None
    formula_value: int | None = None

    @property
    def matches_formula(self) -> bool | None:
        if self.formula_value is None:
            return None
        return self.stored == self.formula_value

    @property
    def trainable_pct_of_backbone(self) -> float:
        return 100.0 * self.trainable / self.backbone if self.backbone else float("nan")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["matches_formula"] = self.matches_formula
        out["trainable_pct_of_backbone"] = self.trainable_pct_of_backbone
        return out


@dataclass(frozen=True)
class AttachData:
    """What some methods need from the tokenizer and data when attaching: token ids of the
    task's keywords (prompt init ``text``), of a few training examples (``cluster``) and of the
    ordinary vocabulary (``vocab_sample``)."""

    keyword_ids: list[int] = field(default_factory=list)
    sample_ids: list[int] = field(default_factory=list)
    #: Ordinary vocabulary ids in id order (no special or ``[unused*]`` tokens), for
    #: ``vocab_sample``.
    vocab_ids: list[int] = field(default_factory=list)
    #: The backbone's tokenizer, for methods that tokenize text of their own (P-Tuning v1's
    #: template words and verbalizer); None where no tokenizer is at hand.
    tokenizer: Any = None


class Method(abc.ABC):
    """One fine-tuning method. Subclasses set ``name``, ``config_cls`` and ``description``.

    Contract of the model returned by :meth:`attach`: ``model(**batch)`` with the tokenizer's
    inputs (``input_ids`` ``[B, T]``, ``attention_mask`` ``[B, T]``, optional ``token_type_ids``)
    returns an object whose ``.logits`` is ``[B, num_labels]`` (sequence tasks; ``[B, 1]`` for
    regression) or ``[B, T, num_labels]`` (token classification, same ``T`` as the input).
    The training loop computes the loss; the model never sees labels.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    config_cls: ClassVar[type[MethodConfig]] = MethodConfig
    #: Comparison rows (another library's implementation) are run only when asked for by name.
    comparison: ClassVar[bool] = False
    #: False: the method joins only sweeps that name it (``--methods``, a suite's ``methods``),
    #: not the default "every method" of a run or suite that lists none.
    default_in_sweeps: ClassVar[bool] = True

    def __init__(self, config: MethodConfig | None = None) -> None:
        self.config = config if config is not None else self.config_cls()
        if not isinstance(self.config, self.config_cls):
            raise TypeError(
                f"{self.name} expects {self.config_cls.__name__}, got {type(self.config).__name__}"
            )

    @abc.abstractmethod
    def attach(
        self, backbone: nn.Module, task: TaskSpec, data: AttachData | None = None
    ) -> nn.Module:
        """Freeze what must be frozen, add what the method adds, return the trainable model."""

    @abc.abstractmethod
    def param_groups(self, model: nn.Module, train: TrainConfig) -> list[dict[str, Any]]:
        """Optimizer parameter groups (each with ``params``, ``lr``, ``weight_decay``)."""

    @abc.abstractmethod
    def parameter_counts(self, model: nn.Module) -> ParamCounts:
        """Count trainable / stored / head / backbone parameters and the closed form."""

    @abc.abstractmethod
    def export(self, model: nn.Module) -> dict[str, Tensor]:
        """The delta alone (what must be stored to rebuild the trained model), merged."""

    @abc.abstractmethod
    def load(self, backbone: nn.Module, task: TaskSpec, delta: dict[str, Tensor]) -> nn.Module:
        """Rebuild the trained model from a fresh backbone and an exported delta."""

    def train_config(self, train: TrainConfig) -> TrainConfig:
        """The training config the optimizer and schedule use: ``train`` with whatever this
        method's config overrides (e.g. an ``official`` profile's warm-up and weight decay).
        The training loop stays uniform; the default changes nothing."""
        return train

    def trained_names(self, model: nn.Module) -> list[str]:
        """Names of the parameters this method trains (its delta before merging)."""
        return [name for name, p in model.named_parameters() if p.requires_grad]

    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:  # noqa: B027 (optional hook)
        """Called before each epoch (1-based); e.g. two-stage training switches stages here."""

    def preflight(self, backbone: nn.Module) -> None:  # noqa: B027 (optional check)
        """Raise ``UserError`` when this method cannot run on ``backbone``'s architecture.
        ``backbone`` may live on the meta device (no weights): look at modules and config only."""

    def check_length(self, model: nn.Module, max_length: int) -> None:  # noqa: B027
        """Raise ``UserError`` when ``max_length`` tokens don't fit beside the additions."""

    def describe(self, model: nn.Module) -> dict[str, Any]:
        """Facts about the attached model that a run record should keep (placement, positions)."""
        return {}

    def trainable_state(self, model: nn.Module) -> dict[str, Tensor]:
        """Copies of the trained tensors, used to snapshot the best checkpoint in memory."""
        names = set(self.trained_names(model))
        return {n: p.detach().clone() for n, p in model.named_parameters() if n in names}

    def restore_state(self, model: nn.Module, state: dict[str, Tensor]) -> None:
        """Write a :meth:`trainable_state` snapshot back into ``model``."""
        import torch

        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value)


def head_parameter_names(model: nn.Module) -> set[str]:
    """The task head: parameters outside ``base_model``, plus any base parameter the checkpoint
    did not contain (e.g. a pooler that ``from_pretrained`` initialised at random)."""
    base_ids = {id(p) for p in model.base_model.parameters()}
    new = set(getattr(model, "peft_bench_new_parameters", ()))
    return {n for n, p in model.named_parameters() if id(p) not in base_ids or n in new}


def head_and_backbone_counts(model: nn.Module) -> tuple[int, int]:
    """(head, backbone) numbers of scalars, split by :func:`head_parameter_names`."""
    head_names = head_parameter_names(model)
    named = dict(model.named_parameters())
    head = sum(named[n].numel() for n in head_names)
    return head, sum(p.numel() for n, p in named.items() if n not in head_names)
