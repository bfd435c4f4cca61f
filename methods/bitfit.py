"""BitFit (Ben Zaken et al., ACL 2022): train only the backbone's bias terms and the task head.

Every ``bias`` parameter of the backbone (attention, feed-forward and LayerNorm biases) trains
with the head; every weight stays frozen. Stored: the biases and the head. There is no closed
form (which modules carry a bias differs between architectures), so the counts have none; the
biases are counted as trainable and stored, never as backbone. It runs when named
(``--methods bitfit``), not in sweeps that list no methods.

Default learning rate 1e-3: a bias-only update needs a far larger step than full fine-tuning
(not tuned here; set ``lr`` per task).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from methods.base import (
    AttachData,
    Method,
    MethodConfig,
    ParamCounts,
    head_and_backbone_counts,
    head_parameter_names,
)

if TYPE_CHECKING:
    from torch import Tensor, nn

    from bench.config import TrainConfig
    from tasks import TaskSpec


@dataclass(frozen=True)
class BitFitConfig(MethodConfig):
    """BitFit hyperparameters."""

    lr: float = field(default=1e-3, metadata={"help": "Learning rate of the biases and head."})


def bias_names(model: nn.Module) -> list[str]:
    """Backbone parameters named ``*.bias`` (the head excluded), in model order."""
    head = head_parameter_names(model)
    return [n for n, _ in model.named_parameters() if n.endswith(".bias") and n not in head]


class BitFit(Method):
    """Bias-only fine-tuning: backbone biases and the task head train, all weights are frozen."""

    name: ClassVar[str] = "bitfit"
    description: ClassVar[str] = "BitFit: the backbone's bias terms and the head are trained."
    config_cls: ClassVar[type[MethodConfig]] = BitFitConfig
    default_in_sweeps: ClassVar[bool] = False  # a baseline beside the prompt methods: opt in

    def attach(
        self, backbone: nn.Module, task: TaskSpec, data: AttachData | None = None
    ) -> nn.Module:
        trained = set(bias_names(backbone)) | head_parameter_names(backbone)
        for name, parameter in backbone.named_parameters():
            parameter.requires_grad_(name in trained)
        return backbone

    def param_groups(self, model: nn.Module, train: TrainConfig) -> list[dict[str, Any]]:
        params = [p for p in model.parameters() if p.requires_grad]
        return [{"params": params, "lr": self.config.lr, "weight_decay": 0.0}]

    def trained_names(self, model: nn.Module) -> list[str]:
        trained = set(bias_names(model)) | head_parameter_names(model)
        return [n for n, _ in model.named_parameters() if n in trained]

    def parameter_counts(self, model: nn.Module) -> ParamCounts:
        head, with_biases = head_and_backbone_counts(model)
        named = dict(model.named_parameters())
        biases = sum(named[n].numel() for n in bias_names(model))
        trainable = sum(named[n].numel() for n in self.trained_names(model))
        stored = sum(t.numel() for t in self.export(model).values())
        return ParamCounts(
            trainable=trainable,
            stored=stored,
            head=head,
            backbone=with_biases - biases,
        )

    def export(self, model: nn.Module) -> dict[str, Tensor]:
        named = dict(model.named_parameters())
        return {n: named[n].detach().contiguous().clone() for n in self.trained_names(model)}

    def load(self, backbone: nn.Module, task: TaskSpec, delta: dict[str, Tensor]) -> nn.Module:
        import torch

        model = self.attach(backbone, task)
        expected = set(self.trained_names(model))
        if set(delta) != expected:
            raise ValueError(
                f"delta does not match bitfit: missing {sorted(expected - set(delta))[:5]}, "
                f"unexpected {sorted(set(delta) - expected)[:5]}"
            )
        named = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in delta.items():
                named[name].copy_(value)
        return model
