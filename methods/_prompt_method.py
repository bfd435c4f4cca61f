"""What the four prompt methods share: config fields, freezing, parameter groups, accounting,
export/load of the merged delta, and two-stage training.

A concrete method states only its placement, its reparameterization and its defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from bench.errors import UserError
from methods.base import (
    AttachData,
    Method,
    MethodConfig,
    ParamCounts,
    check_positive_int,
    head_and_backbone_counts,
    head_parameter_names,
)

if TYPE_CHECKING:
    from torch import Tensor, nn

    from bench.config import TrainConfig
    from tasks import TaskSpec

INITS = ("random_uniform", "normal", "vocab_sample", "text", "cluster")
POSITIONS = ("keep", "shift")
PROFILES = ("project", "official")
HEADS = ("task", "pooler_linear")
DROPOUT_MASKS = ("shared", "per_example")
PROMPT_PREFIX = "prompts."


@dataclass(frozen=True)
class Official:
    """One value of a method's ``official`` profile and where the original code sets it."""

    value: Any
    source: str


@dataclass(frozen=True)
class PromptConfig(MethodConfig):
    """Fields shared by every prompt method (``lr`` is the prompt parameters' learning rate)."""

    prompt_length: int = field(default=20, metadata={"help": "m, the number of prompt vectors."})
    init: str = field(
        default="random_uniform",
        metadata={"help": f"Prompt initialisation: {', '.join(INITS)}."},
    )
    position: str = field(
        default="keep",
        metadata={
            "help": "Input slots: 'keep' (real tokens keep 0..n-1, prompts get no position "
            "embedding) or 'shift' (prompts take 0..m-1)."
        },
    )
    prompt_dropout: float = field(
        default=0.0, metadata={"help": "Dropout on the prompt vectors at train time."}
    )
    head_lr: float | None = field(
        default=None, metadata={"help": "Learning rate of the task head (None: same as lr)."}
    )
    head_only_epochs: int = field(
        default=0,
        metadata={"help": "Two-stage training: epochs that train the head alone before joint."},
    )
    profile: str = field(
        default="project",
        metadata={
            "help": "'project' (peft-bench's defaults) or 'official' (the original code's "
            "behaviour: the method's OFFICIAL values fill every field not set explicitly)."
        },
    )
    init_std: float = field(
        default=0.02, metadata={"help": "Standard deviation of init 'normal' (N(0, init_std))."}
    )
    head: str = field(
        default="task",
        metadata={
            "help": "Sequence head: 'task' (the backbone's own classification head, trained) or "
            "'pooler_linear' (frozen pooler + dropout + one trained Linear, as the P-Tuning v2 "
            "code; a pooler the checkpoint lacks is initialised N(0, initializer_range))."
        },
    )
    prompt_dropout_mask: str = field(
        default="shared",
        metadata={
            "help": "'shared' (one dropout mask on the prompts for the whole batch) or "
            "'per_example' (each example gets its own mask, as the original codes)."
        },
    )
    warmup_ratio_override: float | None = field(
        default=None,
        metadata={
            "help": "Replaces the training config's warmup_ratio for this method (None: keep "
            "it); the official profiles set the original trainers' value."
        },
    )
    weight_decay_override: float | None = field(
        default=None,
        metadata={
            "help": "Replaces the training config's weight_decay for this method (None: keep "
            "it); the official profiles set the original trainers' value."
        },
    )

    #: The ``official`` profile: field -> value and the original's file:line (per method).
    OFFICIAL: ClassVar[dict[str, Official]] = {}
    KEYED_ONLY_WHEN_SET: ClassVar[tuple[str, ...]] = (
        "profile",
        "init_std",
        "head",
        "prompt_dropout_mask",
        "warmup_ratio_override",
        "weight_decay_override",
    )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MethodConfig:
        """Build from a mapping; ``profile: official`` first fills the fields not given with
        the method's :attr:`OFFICIAL` values (explicit values win)."""
        if values.get("profile") == "official":
            values = {**{k: o.value for k, o in cls.OFFICIAL.items()}, **values}
        return super().from_dict(values)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int(self.prompt_length, "prompt_length")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        for name, valid in (
            ("profile", PROFILES),
            ("head", HEADS),
            ("prompt_dropout_mask", DROPOUT_MASKS),
        ):
            if getattr(self, name) not in valid:
                raise ValueError(
                    f"{name} must be one of {', '.join(valid)}, got {getattr(self, name)!r}"
                )
        if not self.init_std > 0:
            raise ValueError(f"init_std must be > 0, got {self.init_std!r}")
        warmup, decay = self.warmup_ratio_override, self.weight_decay_override
        if warmup is not None and not 0.0 <= warmup < 1.0:
            raise ValueError(f"warmup_ratio_override must be in [0, 1) or None, got {warmup!r}")
        if decay is not None and decay < 0:
            raise ValueError(f"weight_decay_override must be >= 0 or None, got {decay!r}")
        if self.position not in POSITIONS:
            raise ValueError(
                f"position must be one of {', '.join(POSITIONS)}, got {self.position!r}"
            )
        if not 0.0 <= self.prompt_dropout < 1.0:
            raise ValueError(f"prompt_dropout must be in [0, 1), got {self.prompt_dropout!r}")
        if self.head_lr is not None and not self.head_lr > 0:
            raise ValueError(f"head_lr must be > 0 or None, got {self.head_lr!r}")
        if (
            not isinstance(self.head_only_epochs, int)
            or isinstance(self.head_only_epochs, bool)
            or self.head_only_epochs < 0
        ):
            raise ValueError(
                f"head_only_epochs must be an integer >= 0, got {self.head_only_epochs!r}"
            )


class PromptMethod(Method):
    """Base of the prompt methods: a frozen backbone, trainable prompts and a trainable head."""

    #: Where the prompts act (``input``, ``hidden`` or ``kv``); may depend on the config.
    placement: ClassVar[str] = "input"

    # what subclasses decide ------------------------------------------------------------

    def placement_of(self) -> str:
        return self.placement

    def reparam_of(self) -> str:
        """``none`` (direct), ``mlp``, ``mlp3`` or ``lstm``."""
        return "none"

    def encoder_hidden(self, hidden_size: int) -> int:
        return hidden_size

    @classmethod
    def placement_options(cls) -> dict[str, dict[str, Any]]:
        """Placement → the options that select it (a method with one placement: ``{p: {}}``)."""
        return {cls.placement: {}}

    # preflight --------------------------------------------------------------------------

    def preflight(self, backbone: nn.Module) -> None:
        """Refuse a placement the architecture cannot take, naming what works instead: this
        method's own options first, then other methods' variants with a working placement."""
        from methods import get_method, method_names, variant_label
        from methods._prompting import supported_placements

        placement = self._placement().value
        works = supported_placements(backbone)
        if placement in works:
            return
        mine = [
            ", ".join(f"{k}: {v}" for k, v in options.items())
            for p, options in self.placement_options().items()
            if p in works and options
        ]
        others = [
            variant_label(name, options)
            for name in method_names(include_comparison=False)
            if name != self.name and issubclass(get_method(name), PromptMethod)
            for p, options in get_method(name).placement_options().items()
            if p in works
        ]
        hint = f"{self.name} works here with {' or '.join(mine)}" if mine else ""
        if others:
            hint += ("; " if hint else "") + f"methods that work here: {', '.join(others)}"
        model_type = backbone.config.model_type
        raise UserError(
            f"{self.name} places prompts as '{placement}', which {type(backbone).__name__} "
            f"({model_type}) does not support (placements that work: {', '.join(works)}); "
            f"{hint or 'no prompt method works here'}"
        )

    # attach -----------------------------------------------------------------------------

    def attach(
        self, backbone: nn.Module, task: TaskSpec, data: AttachData | None = None
    ) -> nn.Module:
        import torch

        from methods._prompting import geometry
        from methods._sources import Init, build_source, direct_initial, initial_prompts, width_for

        self.preflight(backbone)
        cfg = self.config
        geo = geometry(backbone.config)
        placement = self._placement()
        width = width_for(placement, geo)
        weight = backbone.get_input_embeddings().weight.detach()
        # a meta-device backbone (parameter counts from a config alone) keeps only shapes
        embeddings = weight.float() if weight.is_meta else weight.float().cpu()
        generator = torch.Generator().manual_seed(int(torch.randint(2**31 - 1, (1,))))
        data = data or AttachData()
        initial = initial_prompts(
            Init(cfg.init),
            cfg.prompt_length,
            embeddings,
            generator,
            text_ids=data.keyword_ids,
            sample_ids=data.sample_ids,
            vocab_ids=data.vocab_ids,
            std=cfg.init_std,
        )
        reparam = self.reparam_of()
        if reparam == "none":
            initial = direct_initial(initial, width, Init(cfg.init), generator, cfg.init_std)
        source = build_source(initial, reparam, self.encoder_hidden(geo.hidden), width)
        return self._wrap(backbone, task, source)

    def _placement(self):
        from methods._prompting import Placement

        return Placement(self.placement_of())

    def _wrap(self, backbone: nn.Module, task: TaskSpec, source: nn.Module) -> nn.Module:
        from methods._heads import FROZEN_HEAD_ATTR, install_pooler_linear
        from methods._prompting import Position, PromptedModel, geometry
        from methods._sources import ShapedSource

        frozen: set[str] = set()
        if self.config.head == "pooler_linear" and task.kind.value != "token_classification":
            frozen = install_pooler_linear(backbone)
        setattr(backbone, FROZEN_HEAD_ATTR, frozenset(frozen))
        head_names = head_parameter_names(backbone)
        for name, parameter in backbone.named_parameters():
            parameter.requires_grad_(name in head_names and name not in frozen)
        placement = self._placement()
        shaped = ShapedSource(source, placement, geometry(backbone.config))
        return PromptedModel(
            backbone,
            shaped,
            placement,
            self.config.prompt_length,
            position=Position(self.config.position),
            dropout=self.config.prompt_dropout,
            token_level=task.kind.value == "token_classification",
            per_example_dropout=self.config.prompt_dropout_mask == "per_example",
        )

    # training ---------------------------------------------------------------------------

    def param_groups(self, model: nn.Module, train: TrainConfig) -> list[dict[str, Any]]:
        from methods.full_finetune import decay_groups

        prompts = [p for n, p in model.named_parameters() if n.startswith(PROMPT_PREFIX)]
        head = [
            (n, p)
            for n, p in model.named_parameters()
            if p.requires_grad and not n.startswith(PROMPT_PREFIX)
        ]
        head_lr = self.config.head_lr or self.config.lr
        return [
            {"params": prompts, "lr": self.config.lr, "weight_decay": 0.0},
            *decay_groups(head, head_lr, train.weight_decay),
        ]

    def train_config(self, train: TrainConfig) -> TrainConfig:
        """The training config with this method's ``warmup_ratio_override`` and
        ``weight_decay_override`` applied (``official`` profiles: the original trainers')."""
        import dataclasses

        changes = {
            name: getattr(self.config, f"{name}_override")
            for name in ("warmup_ratio", "weight_decay")
            if getattr(self.config, f"{name}_override") is not None
        }
        return dataclasses.replace(train, **changes) if changes else train

    def trained_names(self, model: nn.Module) -> list[str]:
        from methods._heads import FROZEN_HEAD_ATTR

        frozen = getattr(model.model, FROZEN_HEAD_ATTR, frozenset())
        head = {f"model.{n}" for n in head_parameter_names(model.model) if n not in frozen}
        return [n for n, _ in model.named_parameters() if n.startswith(PROMPT_PREFIX) or n in head]

    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        """Two-stage training: the prompts are frozen during the head-only epochs."""
        joint = epoch > self.config.head_only_epochs
        for name, parameter in model.named_parameters():
            if name.startswith(PROMPT_PREFIX):
                parameter.requires_grad_(joint)

    def check_length(self, model: nn.Module, max_length: int) -> None:
        from methods._prompting import Placement, Position

        # input slots, or the key/value prefix under 'shift' (real tokens start at m)
        taken = model.slots or (model.length if model.placement is Placement.KV else 0)
        if taken and model.position is Position.SHIFT and model._positions is not None:
            available = model._positions.num_embeddings
            padding_idx = model._positions.padding_idx
            if padding_idx is not None:
                available -= padding_idx + 1
            if max_length + taken > available:
                raise UserError(
                    f"max_length {max_length} + prompt_length {taken} exceeds the "
                    f"{available} positions of {type(model.model).__name__} under position "
                    f"'shift'; lower max_length to {available - taken} or use 'keep'"
                )

    def describe(self, model: nn.Module) -> dict[str, Any]:
        from methods._prompting import Placement, Position, is_decoder

        placement = self._placement()
        if placement is Placement.KV and model.position is Position.SHIFT:
            positions = "shift: real tokens take m..m+n-1, as after a past of length m"
        elif placement is Placement.KV:
            positions = "real tokens keep positions 0..n-1; the prefix takes no position"
        elif model.position is Position.KEEP:
            positions = "keep: real tokens keep 0..n-1; prompt slots add no position embedding"
        else:
            positions = "shift: prompt slots take 0..m-1, real tokens m..m+n-1"
        return {
            "profile": self.config.profile,
            "head": self.config.head,
            "prompt_dropout_mask": self.config.prompt_dropout_mask,
            "placement": placement.value,
            "reparam": self.reparam_of(),
            "prompt_length": self.config.prompt_length,
            "positions": positions,
            "input_slots": model.slots,
            "head_reads": "every real token"
            if model.token_level
            else ("the last real token" if is_decoder(model.model) else "the real first token"),
        }

    # accounting and export ---------------------------------------------------------------

    def parameter_counts(self, model: nn.Module) -> ParamCounts:
        from methods._prompting import Placement

        geo = model.geometry
        m = self.config.prompt_length
        head, backbone = head_and_backbone_counts(model.model)
        trained = set(self.trained_names(model))
        trainable = sum(p.numel() for n, p in model.named_parameters() if n in trained)
        placement = self._placement()
        if placement is Placement.INPUT:
            width = geo.input_width  # d, or the factorized embedding width (ALBERT, ELECTRA)
            formula, value = f"m*d + head = {m}*{width} + {head}", m * width
        elif placement is Placement.HIDDEN:
            formula = f"L*m*d + head = {geo.layers}*{m}*{geo.hidden} + {head}"
            value = geo.layers * m * geo.hidden
        else:
            formula = f"2*L*m*d_kv + head = 2*{geo.layers}*{m}*{geo.kv_dim} + {head}"
            value = 2 * geo.layers * m * geo.kv_dim
        stored = sum(t.numel() for t in self.export(model).values())
        return ParamCounts(
            trainable=trainable,
            stored=stored,
            head=head,
            backbone=backbone,
            formula=formula,
            formula_value=value + head,
        )

    def export(self, model: nn.Module) -> dict[str, Tensor]:
        delta = {"prompt": model.prompts.materialize()}
        named = dict(model.model.named_parameters())
        for name in sorted(head_parameter_names(model.model)):
            delta[f"head.{name}"] = named[name].detach().contiguous().clone()
        return delta

    def load(self, backbone: nn.Module, task: TaskSpec, delta: dict[str, Tensor]) -> nn.Module:
        import torch

        from methods._sources import DirectPrompt

        model = self._wrap(backbone, task, DirectPrompt(delta["prompt"]))
        named = dict(model.model.named_parameters())
        expected = {f"head.{n}" for n in head_parameter_names(model.model)} | {"prompt"}
        if set(delta) != expected:
            raise ValueError(f"delta keys {sorted(set(delta) ^ expected)} do not match the model")
        with torch.no_grad():
            for key, value in delta.items():
                if key.startswith("head."):
                    named[key[len("head.") :]].copy_(value)
        return model
