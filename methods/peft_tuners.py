"""huggingface/peft's weight tuners (LoRA, (IA)³, any other peft config) as rows of our tables.

A row here is a peft config class and its keyword arguments; ``attach`` calls
``peft.get_peft_model`` with them, for sequence or token classification (peft then adds the task
head to ``modules_to_save``). Unlike the prompt rows of ``peft_rows.py`` nothing is prepended to
the input, so the input length and positions are untouched.

``peft_lora``
    ``LoraConfig``: low-rank updates B·A (rank r) beside peft's default target projections of the
    architecture (query and value for BERT-like encoders). Closed form, when every target is a
    d×d projection: L·t·2·r·d for t targets per layer.
``peft_ia3``
    ``IA3Config``: learned scaling vectors of keys, values and the feed-forward input. Closed form
    with peft's default targets of BERT-like encoders: L·(3·d + d_ff), because peft's target
    suffix ``output.dense`` also matches the attention's output projection (input width d)
    beside the feed-forward output (input width d_ff); the contract test found this.
``peft``
    Any peft config class by name (``peft_config: LoraConfig``) with its arguments
    (``peft_kwargs: {r: 4, target_modules: [query, key, value]}``); no closed form.

Accounting: ``trainable`` and ``stored`` count the adapter's parameters and the head; the
``backbone`` is the frozen pretrained transformer alone (an adapter's matrices or vectors are
never counted in it). These rows join only sweeps that name them (``default_in_sweeps``).
Default learning rates: 5e-4 for LoRA and 3e-3 for (IA)³, adapter-scale steps (not tuned here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from bench.errors import UserError
from methods._peft import HEAD_COPY, load_peft, new_modules_to_save, set_peft_delta
from methods.base import AttachData, Method, MethodConfig, ParamCounts, check_positive_int

if TYPE_CHECKING:
    from torch import Tensor, nn

    from bench.config import TrainConfig
    from tasks import TaskSpec


@dataclass(frozen=True)
class PeftTunerConfig(MethodConfig):
    """Fields shared by the peft weight tuners (``lr``: the adapter's learning rate)."""

    lr: float = field(default=5e-4, metadata={"help": "Learning rate of the adapter."})
    head_lr: float | None = field(
        default=None, metadata={"help": "Learning rate of the task head (None: same as lr)."}
    )
    target_modules: tuple | None = field(
        default=None,
        metadata={
            "help": "Module names the adapter acts on (None: peft's default for the "
            "architecture; MPNet, DistilBERT and ALBERT have none, e.g. [q, v] for MPNet)."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.head_lr is not None and not self.head_lr > 0:
            raise ValueError(f"head_lr must be > 0 or None, got {self.head_lr!r}")
        targets = self.target_modules
        if targets is not None:
            if (
                not isinstance(targets, list | tuple)
                or not targets
                or not all(isinstance(t, str) for t in targets)
            ):
                raise ValueError(
                    f"target_modules must be a non-empty list of names, got {targets!r}"
                )
            object.__setattr__(self, "target_modules", tuple(targets))  # hashable


@dataclass(frozen=True)
class PeftLoraConfig(PeftTunerConfig):
    """peft ``LoraConfig`` hyperparameters."""

    r: int = field(default=8, metadata={"help": "r, the rank of each update B·A."})
    lora_alpha: int = field(default=16, metadata={"help": "Scaling numerator (alpha / r)."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA input."})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int(self.r, "r")
        check_positive_int(self.lora_alpha, "lora_alpha")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")


@dataclass(frozen=True)
class PeftIA3Config(PeftTunerConfig):
    """peft ``IA3Config`` hyperparameters (peft's default target modules)."""

    lr: float = field(default=3e-3, metadata={"help": "Learning rate of the scaling vectors."})


@dataclass(frozen=True)
class PeftAnyConfig(PeftTunerConfig):
    """Any peft config class, by name, with its keyword arguments."""

    peft_config: str = field(
        default="LoraConfig", metadata={"help": "Name of a peft config class, e.g. 'LoHaConfig'."}
    )
    peft_kwargs: dict = field(
        default_factory=dict,
        metadata={"help": "Keyword arguments of that config (task_type is set by the task)."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.peft_config, str) or not self.peft_config.endswith("Config"):
            raise ValueError(f"peft_config must name a peft config class, got {self.peft_config!r}")
        if not isinstance(self.peft_kwargs, dict):
            raise ValueError(f"peft_kwargs must be a mapping, got {self.peft_kwargs!r}")
        fixed = sorted({"task_type", "inference_mode", "modules_to_save"} & set(self.peft_kwargs))
        if fixed:
            raise ValueError(f"peft_kwargs may not set {fixed}: the runner sets them")

    def __hash__(self) -> int:  # a dict field: hash its canonical text
        import json

        return hash(json.dumps(self.to_dict(), sort_keys=True, default=str))


@dataclass(frozen=True)
class _KindOnly:
    """The one task attribute :meth:`PeftTuner._build` reads (its kind), for preflight."""

    kind: Any


class PeftTuner(Method):
    """Base of the peft weight-tuner rows: a subclass names the peft config class and its
    arguments, and may give a closed form. ``model(input_ids [B, n], attention_mask [B, n])``
    returns the HF output: ``.logits`` ``[B, C]`` or ``[B, n, C]``."""

    default_in_sweeps: ClassVar[bool] = False
    peft_config_name: ClassVar[str]

    def peft_config_class(self) -> str:
        return self.peft_config_name

    def peft_kwargs(self) -> dict[str, Any]:
        """The arguments of the peft config (task type, mode and head are added here)."""
        targets = self.config.target_modules
        return {} if targets is None else {"target_modules": list(targets)}

    def closed_form(self, model: nn.Module) -> tuple[str, int] | None:
        """(formula filled with numbers, value) of the adapter's stored size, or None."""
        return None

    # preflight / attach / load -----------------------------------------------------------

    def preflight(self, backbone: nn.Module) -> None:
        """Build the adapter on a copy of ``backbone`` (a meta-device model costs nothing):
        peft refuses an architecture without default target modules, or a target that does
        not exist, here instead of at the run."""
        import copy

        from tasks.spec import TaskKind

        kind = "token_classification" if "TokenClassification" in type(backbone).__name__ else ""
        task = _KindOnly(TaskKind(kind or "classification"))
        self._build(copy.deepcopy(backbone), task, inference_mode=False)  # type: ignore[arg-type]

    def attach(
        self, backbone: nn.Module, task: TaskSpec, data: AttachData | None = None
    ) -> nn.Module:
        return self._build(backbone, task, inference_mode=False)

    def _build(self, backbone: nn.Module, task: TaskSpec, inference_mode: bool) -> nn.Module:
        peft = load_peft()
        name = self.peft_config_class()
        config_cls = getattr(peft, name, None)
        if not isinstance(config_cls, type) or not issubclass(config_cls, peft.PeftConfig):
            valid = sorted(
                n
                for n, v in vars(peft).items()
                if isinstance(v, type) and issubclass(v, peft.PeftConfig) and n.endswith("Config")
            )
            raise UserError(f"peft has no config class {name!r}; valid: {', '.join(valid)}")
        token_level = task.kind.value == "token_classification"
        try:
            config = config_cls(
                task_type=peft.TaskType.TOKEN_CLS if token_level else peft.TaskType.SEQ_CLS,
                inference_mode=inference_mode,
                modules_to_save=new_modules_to_save(backbone) or None,
                **self.peft_kwargs(),
            )
            return peft.get_peft_model(backbone, config)
        except (TypeError, ValueError) as error:
            hint = ""
            if "target_modules" in str(error):
                hint = "; name the modules to adapt with the option target_modules (e.g. [q, v])"
            raise UserError(
                f"{self.name}: peft's {name} refuses this backbone: {error}{hint}"
            ) from None

    def load(self, backbone: nn.Module, task: TaskSpec, delta: dict[str, Tensor]) -> nn.Module:
        model = self._build(backbone, task, inference_mode=True)
        return set_peft_delta(model, delta, self.name)

    # training -----------------------------------------------------------------------------

    def param_groups(self, model: nn.Module, train: TrainConfig) -> list[dict[str, Any]]:
        from methods.full_finetune import decay_groups

        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        adapter = [p for n, p in trainable if HEAD_COPY not in n]
        head = [(n, p) for n, p in trainable if HEAD_COPY in n]
        head_lr = self.config.head_lr or self.config.lr
        groups = [{"params": adapter, "lr": self.config.lr, "weight_decay": 0.0}]
        groups += decay_groups(head, head_lr, train.weight_decay)
        return [g for g in groups if g["params"]]

    # accounting and export ----------------------------------------------------------------

    def parameter_counts(self, model: nn.Module) -> ParamCounts:
        """``head``: peft's trainable copies of ``modules_to_save``. ``backbone``: the frozen
        transformer (its pretrained weights), without adapters and without copied modules."""
        hf = model.get_base_model()
        head = sum(p.numel() for n, p in hf.named_parameters() if HEAD_COPY in n)
        backbone = sum(
            p.numel()
            for n, p in hf.base_model.named_parameters()
            if not p.requires_grad and ".original_module." not in f".{n}"
        )
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        stored = sum(t.numel() for t in self.export(model).values())
        closed = self.closed_form(model)
        if closed is None:
            return ParamCounts(trainable=trainable, stored=stored, head=head, backbone=backbone)
        formula, value = closed
        return ParamCounts(
            trainable=trainable,
            stored=stored,
            head=head,
            backbone=backbone,
            formula=f"{formula} + head",
            formula_value=value + head,
        )

    def export(self, model: nn.Module) -> dict[str, Tensor]:
        import torch

        peft = load_peft()
        with torch.no_grad():
            state = peft.get_peft_model_state_dict(model)
        return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def _adapted(model: nn.Module, marker: str) -> list[nn.Module]:
    """peft tuner layers of ``model`` (modules holding a parameter dict named ``marker``)."""
    return [m for m in model.modules() if hasattr(m, marker) and hasattr(m, "base_layer")]


class PeftLora(PeftTuner):
    """peft's LoRA: rank-r updates of the architecture's default target projections."""

    name: ClassVar[str] = "peft_lora"
    description: ClassVar[str] = "peft's LoRA (LoraConfig): rank-r updates of attention weights."
    config_cls: ClassVar[type[MethodConfig]] = PeftLoraConfig
    peft_config_name: ClassVar[str] = "LoraConfig"

    def peft_kwargs(self) -> dict[str, Any]:
        cfg = self.config
        own = {"r": cfg.r, "lora_alpha": cfg.lora_alpha, "lora_dropout": cfg.lora_dropout}
        return {**super().peft_kwargs(), **own}

    def closed_form(self, model: nn.Module) -> tuple[str, int] | None:
        config = model.get_base_model().config
        layers, d, r = config.num_hidden_layers, config.hidden_size, self.config.r
        targets = _adapted(model, "lora_A")
        square = all(
            (t.base_layer.in_features, t.base_layer.out_features) == (d, d) for t in targets
        )
        if not targets or not square or len(targets) % layers:
            return None
        per_layer = len(targets) // layers
        value = layers * per_layer * 2 * r * d
        return f"L*t*2*r*d = {layers}*{per_layer}*2*{r}*{d}", value


class PeftIA3(PeftTuner):
    """peft's (IA)³: learned scaling of keys, values and the feed-forward input."""

    name: ClassVar[str] = "peft_ia3"
    description: ClassVar[str] = "peft's (IA)³ (IA3Config): learned scaling vectors."
    config_cls: ClassVar[type[MethodConfig]] = PeftIA3Config
    peft_config_name: ClassVar[str] = "IA3Config"

    def closed_form(self, model: nn.Module) -> tuple[str, int] | None:
        config = model.get_base_model().config
        d_ff = getattr(config, "intermediate_size", None)
        if d_ff is None or self.config.target_modules is not None:
            return None
        layers, d = config.num_hidden_layers, config.hidden_size
        return f"L*(3*d + d_ff) = {layers}*(3*{d} + {d_ff})", layers * (3 * d + d_ff)


class PeftAny(PeftTuner):
    """Any peft config class by name with its arguments; no closed form."""

    name: ClassVar[str] = "peft"
    description: ClassVar[str] = "Any peft config class (peft_config) with its peft_kwargs."
    config_cls: ClassVar[type[MethodConfig]] = PeftAnyConfig

    def peft_config_class(self) -> str:
        return self.config.peft_config

    def peft_kwargs(self) -> dict[str, Any]:
        return {**super().peft_kwargs(), **self.config.peft_kwargs}
