"""Full fine-tuning: every backbone and head parameter is trained and stored.

The baseline every prompt method is compared with. Default learning rate 5e-5: the top of the
BERT paper's GLUE grid (2e-5 – 5e-5) and the Hugging Face Trainer's default. Measured on MiniLM,
SST-2, 500 training sentences and 3 epochs: 2e-5 stayed at the majority class (0.509 dev
accuracy), 5e-5 reached 0.747 and 1e-4 0.771. Small budgets need the larger step; for full GLUE
training sets on RoBERTa pass ``--lr 2e-5`` (RoBERTa's grid is 1e-5 – 3e-5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from methods.base import AttachData, Method, MethodConfig, ParamCounts, head_and_backbone_counts

if TYPE_CHECKING:
    from torch import Tensor, nn

    from bench.config import TrainConfig
    from tasks import TaskSpec

#: Parameter-name fragments that get no weight decay (biases and normalisation weights).
NO_DECAY = (
    "bias",
    "LayerNorm.weight",
    "layer_norm.weight",
    "layernorm.weight",
    "ln_",
    "norm.weight",
)


@dataclass(frozen=True)
class FullFinetuneConfig(MethodConfig):
    """Hyperparameters of full fine-tuning."""

    lr: float = field(default=5e-5, metadata={"help": "Peak learning rate of all parameters."})


def decay_groups(
    named: list[tuple[str, Any]], lr: float, weight_decay: float
) -> list[dict[str, Any]]:
    """Split ``named`` parameters into a weight-decay group and a no-decay group (bias, norms)."""
    decay = [p for n, p in named if not any(k in n for k in NO_DECAY)]
    no_decay = [p for n, p in named if any(k in n for k in NO_DECAY)]
    groups = [
        {"params": decay, "lr": lr, "weight_decay": weight_decay},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


class FullFinetune(Method):
    """Train the whole model: backbone and task head. Stored parameters: all of them."""

    name: ClassVar[str] = "full_finetune"
    description: ClassVar[str] = "Full fine-tuning: backbone and head are trained and stored."
    config_cls: ClassVar[type[MethodConfig]] = FullFinetuneConfig

    def attach(
        self, backbone: nn.Module, task: TaskSpec, data: AttachData | None = None
    ) -> nn.Module:
        for parameter in backbone.parameters():
            parameter.requires_grad_(True)
        return backbone

    def param_groups(self, model: nn.Module, train: TrainConfig) -> list[dict[str, Any]]:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        return decay_groups(named, self.config.lr, train.weight_decay)

    def parameter_counts(self, model: nn.Module) -> ParamCounts:
        head, backbone = head_and_backbone_counts(model)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        stored = sum(t.numel() for t in self.export(model).values())
        return ParamCounts(
            trainable=trainable,
            stored=stored,
            head=head,
            backbone=backbone,
            formula="backbone + head",
            formula_value=backbone + head,
        )

    def export(self, model: nn.Module) -> dict[str, Tensor]:
        # named_parameters() lists tied weights once; safetensors wants contiguous copies.
        return {n: p.detach().contiguous().clone() for n, p in model.named_parameters()}

    def load(self, backbone: nn.Module, task: TaskSpec, delta: dict[str, Tensor]) -> nn.Module:
        model = self.attach(backbone, task)
        expected = {name for name, _ in model.named_parameters()}
        if set(delta) != expected:
            raise ValueError(
                f"delta does not match the model: missing {sorted(expected - set(delta))[:5]}, "
                f"unexpected {sorted(set(delta) - expected)[:5]}"
            )
        model.load_state_dict(delta, strict=False)
        return model
