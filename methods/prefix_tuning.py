"""Prefix Tuning (Li & Liang 2021): key/value prefixes at every layer, trained through an MLP.

The reparameterization is Embedding(m, d) → Linear(d, h) → tanh → Linear(h, 2·L·d). It is
trained and counted at train time. On export it is merged away: the stored delta is the 2·L·m·d
prefix. Defaults: m = 20; h = 512, the paper's MLP width; learning rate 1e-3. That is between
Li & Liang's 5e-5 (GPT-2 generation over 5–10 epochs, far above a CPU budget) and the 5e-3 of the
P-Tuning v2 scripts. Measured on MiniLM, SST-2, 4,000 sentences and 2 epochs: 5e-3 pushed the
MLP's prefixes to dominate attention and the model stayed at the majority class (0.509 dev
accuracy); 1e-3 reached 0.80. The prefix embedding starts U(-0.5, 0.5) (ours).

``profile: official`` follows Li & Liang's code (XiangLi1999/PrefixTuning,
gpt2/train_control.py, ``PrefixTuning.__init__``, the "Full prefix-tuning" branch): the prefix
embedding is a plain ``nn.Embedding(preseqlen, n_embd)`` and keeps PyTorch's N(0, 1) init, the
MLP is Linear(d, mid_dim=512) → tanh → Linear(512, 2·L·d) (our default already), and the prefix
reaches GPT-2 as ``past_key_values``, so real tokens take positions m..m+n-1. Li & Liang train
no classification head (table-to-text generation): both profiles train the backbone's head, as
peft does. Their optimiser settings are not reproduced (lr 5e-5 for generation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from methods._prompt_method import Official, PromptConfig, PromptMethod
from methods.base import MethodConfig, check_positive_int


@dataclass(frozen=True)
class PrefixTuningConfig(PromptConfig):
    """Prefix Tuning hyperparameters."""

    lr: float = field(default=1e-3, metadata={"help": "Learning rate of the prefix MLP."})
    prefix_hidden: int = field(default=512, metadata={"help": "h, the MLP's hidden size."})

    OFFICIAL: ClassVar[dict[str, Official]] = {
        "init": Official(
            "normal",
            "gpt2/train_control.py PrefixTuning.__init__: self.wte = nn.Embedding(preseqlen, "
            "n_embd), never re-initialised",
        ),
        "init_std": Official(1.0, "nn.Embedding's default init N(0, 1)"),
        "prefix_hidden": Official(512, "gpt2/train_control.py: mid_dim default 512"),
        "position": Official(
            "shift", "the prefix is GPT-2's past_key_values: real tokens start at position m"
        ),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int(self.prefix_hidden, "prefix_hidden")


class PrefixTuning(PromptMethod):
    """Per-layer key/value prefixes produced by an MLP over m prefix embeddings."""

    name: ClassVar[str] = "prefix_tuning"
    description: ClassVar[str] = "Prefix Tuning: MLP-reparameterized kv prefixes (2·L·m·d stored)."
    config_cls: ClassVar[type[MethodConfig]] = PrefixTuningConfig
    placement: ClassVar[str] = "kv"

    def reparam_of(self) -> str:
        return "mlp"

    def encoder_hidden(self, hidden_size: int) -> int:
        return self.config.prefix_hidden
