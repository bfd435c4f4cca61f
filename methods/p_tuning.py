"""P-Tuning v1 (Liu et al. 2021, "GPT Understands, Too"): trainable pseudo-token embeddings
passed through a prompt encoder (bi-LSTM(2) + 2-layer MLP, or an MLP), used at the input layer
only. Two placements:

``template`` (P-Tuning v1 as published; the ``official`` profile)
    The pseudo tokens sit *inside the task's template* around the input fields, and the class
    logits are the backbone's masked-LM scores of the verbalizer's label words at ``[MASK]``
    (:mod:`methods._template`; the task YAML's ``template``/``verbalizer``). No new head.
    ``train_backbone: true`` tunes the backbone and its MLM head too, the original's SuperGLUE
    setting (THUDM/P-tuning PT-Fewshot fine-tunes the whole model with the prompt encoder).
    Classification tasks only: regression and NER have no label words (a clear error says so).
``prefix`` (the project default)
    The m pseudo tokens form one contiguous block in front of the input and a new [CLS] head
    classifies, on a frozen backbone: this is reparameterised prompt tuning, as peft's
    ``PromptEncoder`` does it, not the published P-Tuning v1.

At train time the encoder's parameters are trained (and counted). On export the encoder is run
once and its output, m·d numbers, is stored. Defaults:
- m = 20.
- LSTM hidden size d/2 per direction, then Linear(d, d) → ReLU → Linear(d, d): the original's
  encoder (THUDM/P-tuning LAMA/p_tuning/prompt_encoder.py, ``PromptEncoder``). The ``mlp``
  encoder (3 linear layers) is peft's alternative, not the original's.
- Learning rate 3e-3 for encoder and head. peft's P-Tuning examples use 1e-3. Measured on MiniLM,
  SST-2, 4,000 sentences and 2 epochs: 1e-3 gave 0.729 dev accuracy, 3e-3 gave 0.733, and 1e-2
  overfit the training phrases (0.702).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from bench.errors import UserError
from methods._prompt_method import PROMPT_PREFIX, Official, PromptConfig, PromptMethod
from methods.base import (
    AttachData,
    MethodConfig,
    ParamCounts,
    check_positive_int,
    head_parameter_names,
)

if TYPE_CHECKING:
    from torch import Tensor, nn

    from bench.config import TrainConfig
    from tasks import TaskSpec

ENCODERS = ("lstm", "mlp")
PLACEMENTS = ("prefix", "template")
BACKBONE_PREFIXES = ("model.", "mlm_head.")


@dataclass(frozen=True)
class PTuningConfig(PromptConfig):
    """P-Tuning v1 hyperparameters."""

    lr: float = field(default=3e-3, metadata={"help": "Learning rate of the prompt encoder."})
    encoder: str = field(
        default="lstm",
        metadata={"help": "Prompt encoder: 'lstm' (bi-LSTM(2) + MLP) or 'mlp' (3-layer MLP)."},
    )
    encoder_hidden: int | None = field(
        default=None,
        metadata={"help": "Encoder hidden size (LSTM: per direction). None: d/2 (lstm), d (mlp)."},
    )
    placement: str = field(
        default="prefix",
        metadata={
            "help": "'prefix' (a contiguous block before the input + a [CLS] head: "
            "reparameterised prompt tuning) or 'template' (pseudo tokens inside the task's "
            "template, label words scored by the MLM head at [MASK]: P-Tuning v1 as published)."
        },
    )
    train_backbone: bool = field(
        default=False,
        metadata={"help": "Template placement: also tune the backbone and its MLM head."},
    )
    backbone_lr: float = field(
        default=1e-5,
        metadata={"help": "Learning rate of the backbone when train_backbone is true."},
    )

    KEYED_ONLY_WHEN_SET: ClassVar[tuple[str, ...]] = (
        *PromptConfig.KEYED_ONLY_WHEN_SET,
        "placement",
        "train_backbone",
        "backbone_lr",
    )
    OFFICIAL: ClassVar[dict[str, Official]] = {
        "placement": Official(
            "template",
            "PT-Fewshot/data_utils/task_pvps.py (patterns with block_flag pseudo tokens and a "
            "verbalizer per task), PT-Fewshot/pet/wrapper.py (MLM logits at the mask)",
        ),
        "encoder": Official("lstm", "LAMA/p_tuning/prompt_encoder.py: LSTM + 2-layer MLP head"),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {', '.join(ENCODERS)}, got {self.encoder!r}")
        if self.encoder_hidden is not None:
            check_positive_int(self.encoder_hidden, "encoder_hidden")
        if self.placement not in PLACEMENTS:
            raise ValueError(
                f"placement must be one of {', '.join(PLACEMENTS)}, got {self.placement!r}"
            )
        if self.train_backbone and self.placement != "template":
            raise ValueError("train_backbone applies to placement 'template' only")
        if self.placement == "template":
            # no new head and no prompt slots in front: these fields have nothing to act on
            unused = {
                "position": (self.position, "keep"),
                "head": (self.head, "task"),
                "head_only_epochs": (self.head_only_epochs, 0),
            }
            for name, (value, default) in unused.items():
                if value != default:
                    raise ValueError(
                        f"{name} {value!r} does not apply to placement 'template' (the pseudo "
                        "tokens take their places in the text, the MLM head is the head); "
                        f"leave it at {default!r}"
                    )
        if not self.backbone_lr > 0:
            raise ValueError(f"backbone_lr must be > 0, got {self.backbone_lr!r}")


class PTuning(PromptMethod):
    """Input-layer prompts produced by a trainable encoder over pseudo-token embeddings."""

    name: ClassVar[str] = "p_tuning"
    description: ClassVar[str] = (
        "P-Tuning v1: LSTM/MLP-encoded pseudo tokens, in the task's template with a verbalizer "
        "(template) or as an input prefix with a [CLS] head (prefix); m·d after merge."
    )
    config_cls: ClassVar[type[MethodConfig]] = PTuningConfig
    placement: ClassVar[str] = "input"

    @property
    def templated(self) -> bool:
        return self.config.placement == "template"

    def reparam_of(self) -> str:
        return "lstm" if self.config.encoder == "lstm" else "mlp3"

    def encoder_hidden(self, hidden_size: int) -> int:
        if self.config.encoder_hidden:
            return self.config.encoder_hidden
        return hidden_size // 2 if self.config.encoder == "lstm" else hidden_size

    # template placement ----------------------------------------------------------------------

    def attach(
        self, backbone: nn.Module, task: TaskSpec, data: AttachData | None = None
    ) -> nn.Module:
        if not self.templated:
            return super().attach(backbone, task, data)
        from methods._template import resolve_template

        if data is None or data.tokenizer is None:
            raise UserError("placement 'template' needs the backbone's tokenizer to attach")
        self._template = resolve_template(task, data.tokenizer, self.config.prompt_length)
        return super().attach(backbone, task, data)

    def _wrap(self, backbone: nn.Module, task: TaskSpec, source: nn.Module) -> nn.Module:
        if not self.templated:
            return super()._wrap(backbone, task, source)
        from methods._prompting import Placement, geometry
        from methods._sources import ShapedSource
        from methods._template import TemplateModel, load_mlm_head

        head = load_mlm_head(backbone)
        for parameter in [*backbone.parameters(), *head.parameters()]:
            parameter.requires_grad_(self.config.train_backbone)
        for name in head_parameter_names(backbone):  # the unused [CLS] head never trains
            backbone.get_parameter(name).requires_grad_(False)
        shaped = ShapedSource(source, Placement.INPUT, geometry(backbone.config))
        return TemplateModel(backbone, head, shaped, self._template, self.config.prompt_dropout)

    def _tuned_backbone(self, model: nn.Module) -> list[str]:
        """Backbone and MLM-head parameter names trained under ``train_backbone``."""
        if not (self.templated and self.config.train_backbone):
            return []
        unused = {f"model.{n}" for n in head_parameter_names(model.model)}
        return [
            n
            for n, _ in model.named_parameters()
            if n.startswith(BACKBONE_PREFIXES) and n not in unused
        ]

    def trained_names(self, model: nn.Module) -> list[str]:
        if not self.templated:
            return super().trained_names(model)
        prompts = [n for n, _ in model.named_parameters() if n.startswith(PROMPT_PREFIX)]
        return prompts + self._tuned_backbone(model)

    def param_groups(self, model: nn.Module, train: TrainConfig) -> list[dict[str, Any]]:
        if not self.templated:
            return super().param_groups(model, train)
        from methods.full_finetune import decay_groups

        named = dict(model.named_parameters())
        prompts = [p for n, p in named.items() if n.startswith(PROMPT_PREFIX)]
        tuned = [(n, named[n]) for n in self._tuned_backbone(model)]
        return [
            {"params": prompts, "lr": self.config.lr, "weight_decay": 0.0},
            *decay_groups(tuned, self.config.backbone_lr, train.weight_decay),
        ]

    def check_length(self, model: nn.Module, max_length: int) -> None:
        if not self.templated:
            return super().check_length(model, max_length)
        from methods._prompting import _position_embedding

        positions = _position_embedding(model.model)
        if positions is None:
            return None
        available = positions.num_embeddings
        if positions.padding_idx is not None:
            available -= positions.padding_idx + 1
        extra = model.template.added
        if max_length + extra > available:
            raise UserError(
                f"max_length {max_length} + the template's {extra} tokens (pseudo tokens, words, "
                f"[MASK]) exceed the {available} positions of {type(model.model).__name__}; "
                f"lower max_length to {available - extra} or prompt_length"
            )
        return None

    def describe(self, model: nn.Module) -> dict[str, Any]:
        if not self.templated:
            return {**super().describe(model), "placement": "prefix"}
        return {
            "profile": self.config.profile,
            "placement": "template",
            "reparam": self.reparam_of(),
            "prompt_length": self.config.prompt_length,
            "template_tokens": len(model.template.layout),
            "label_ids": list(model.template.label_ids),
            "train_backbone": self.config.train_backbone,
            "head_reads": "the MLM head's label-word logits at [MASK]",
        }

    def parameter_counts(self, model: nn.Module) -> ParamCounts:
        if not self.templated:
            return super().parameter_counts(model)
        d, m = model.model.config.hidden_size, self.config.prompt_length
        trained = set(self.trained_names(model))
        named = dict(model.named_parameters())
        tuned = sum(named[n].numel() for n in self._tuned_backbone(model))
        backbone = sum(p.numel() for n, p in named.items() if n.startswith(BACKBONE_PREFIXES))
        return ParamCounts(
            trainable=sum(named[n].numel() for n in trained),
            stored=sum(t.numel() for k, t in self.export(model).items() if "template." not in k),
            head=0,
            backbone=backbone,
            formula=f"m*d (+ tuned backbone) = {m}*{d} + {tuned}",
            formula_value=m * d + tuned,
        )

    def export(self, model: nn.Module) -> dict[str, Tensor]:
        if not self.templated:
            return super().export(model)
        named = dict(model.named_parameters())
        delta = {"prompt": model.prompts.materialize(), **model.template.to_tensors()}
        for name in self._tuned_backbone(model):
            delta[f"tuned.{name}"] = named[name].detach().contiguous().clone()
        return delta

    def load(self, backbone: nn.Module, task: TaskSpec, delta: dict[str, Tensor]) -> nn.Module:
        if not self.templated:
            return super().load(backbone, task, delta)
        import torch

        from methods._sources import DirectPrompt
        from methods._template import Template

        self._template = Template.from_tensors(delta)
        model = self._wrap(backbone, task, DirectPrompt(delta["prompt"]))
        named = dict(model.named_parameters())
        with torch.no_grad():
            for key, value in delta.items():
                if key.startswith("tuned."):
                    named[key[len("tuned.") :]].copy_(value)
        return model
