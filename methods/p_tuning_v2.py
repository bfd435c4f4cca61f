"""P-Tuning v2 (Liu et al., ACL 2022): prompts at every layer.

- ``injection: kv`` puts per-layer key/value prefixes in every self-attention. This is what the
  official THUDM/P-tuning-v2 code does. Stored: 2·L·m·d_kv.
- ``injection: hidden`` puts per-layer prompt vectors in m slots of each layer's input hidden
  states. Stored: L·m·d.
- ``reparam``: ``none`` (the official default), ``mlp`` (Embedding → Linear → tanh → Linear, the
  code's ``--prefix_projection``) or ``lstm`` (a bi-LSTM + MLP generator of all layers' prompts).
  Any reparameterization is merged away on export.

Defaults: m = 20; learning rate 1e-2, in the 5e-3 – 1e-2 range of the official run scripts
(RoBERTa-large: RTE 5e-3, BoolQ 7e-3, CB 1e-2); prompt dropout 0.1 (the scripts'
``--hidden_dropout_prob 0.1``); random_uniform init, because N(0, 1) trains badly (DESIGN §5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from methods._prompt_method import PromptConfig, PromptMethod
from methods.base import MethodConfig, check_positive_int

INJECTIONS = ("kv", "hidden")
REPARAMS = ("none", "mlp", "lstm")


@dataclass(frozen=True)
class PTuningV2Config(PromptConfig):
    """P-Tuning v2 hyperparameters."""

    lr: float = field(default=1e-2, metadata={"help": "Learning rate of the deep prompts."})
    prompt_dropout: float = field(default=0.1, metadata={"help": "Dropout on the prompts."})
    injection: str = field(
        default="kv", metadata={"help": "'kv' (key/value prefixes) or 'hidden' (layer slots)."}
    )
    reparam: str = field(
        default="none", metadata={"help": "Prompt generator: 'none', 'mlp' or 'lstm'."}
    )
    reparam_hidden: int = field(
        default=512, metadata={"help": "Hidden size of the mlp/lstm generator."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.injection not in INJECTIONS:
            raise ValueError(
                f"injection must be one of {', '.join(INJECTIONS)}, got {self.injection!r}"
            )
        if self.reparam not in REPARAMS:
            raise ValueError(f"reparam must be one of {', '.join(REPARAMS)}, got {self.reparam!r}")
        check_positive_int(self.reparam_hidden, "reparam_hidden")


class PTuningV2(PromptMethod):
    """Deep prompts at every layer, as key/value prefixes or as hidden-state slots."""

    name: ClassVar[str] = "p_tuning_v2"
    description: ClassVar[str] = (
        "P-Tuning v2: deep prompts at every layer, kv prefixes (2·L·m·d) or hidden slots (L·m·d)."
    )
    config_cls: ClassVar[type[MethodConfig]] = PTuningV2Config

    def placement_of(self) -> str:
        return self.config.injection

    @classmethod
    def placement_options(cls) -> dict[str, dict[str, str]]:
        return {injection: {"injection": injection} for injection in INJECTIONS}

    def reparam_of(self) -> str:
        return self.config.reparam

    def encoder_hidden(self, hidden_size: int) -> int:
        return self.config.reparam_hidden
