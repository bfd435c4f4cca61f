"""P-Tuning v2 (Liu et al., ACL 2022): prompts at every layer.

- ``injection: kv`` puts per-layer key/value prefixes in every self-attention. This is what the
  official THUDM/P-tuning-v2 code does. Stored: 2·L·m·d_kv.
- ``injection: hidden`` puts per-layer prompt vectors in m slots of each layer's input hidden
  states. Stored: L·m·d.
- ``reparam``: ``none`` (the official default), ``mlp`` (Embedding → Linear → tanh → Linear, the
  code's ``--prefix_projection``) or ``lstm`` (a bi-LSTM + MLP generator of all layers' prompts).
  Any reparameterization is merged away on export.

Project defaults (``profile: project``): m = 20; learning rate 1e-2, in the 5e-3 – 3e-2 range of
the official run scripts (RoBERTa-large RTE 5e-3 in run_script/run_rte_roberta.sh, CoNLL-2003
3e-2 in run_script/run_conll03_roberta.sh); prompt dropout 0.1 (the scripts'
``--hidden_dropout_prob 0.1``) with one mask per batch; U(-0.5, 0.5) init (ours, not the
original's); the backbone's own head; real tokens keep positions 0..n-1; the training config's
warm-up (6%) and weight decay (0.01).

``profile: official`` reproduces the original code (:attr:`PTuningV2Config.OFFICIAL` lists each
value with its source in THUDM/P-tuning-v2 at 2873f47).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from methods._prompt_method import Official, PromptConfig, PromptMethod
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

    OFFICIAL: ClassVar[dict[str, Official]] = {
        "injection": Official("kv", "model/sequence_classification.py:175 (past_key_values)"),
        "reparam": Official(
            "none", "model/prefix_encoder.py:24 (Embedding(m, 2·L·d) without projection)"
        ),
        "init": Official(
            "normal",
            "model/prefix_encoder.py:24: the embedding is a key the checkpoint lacks, so "
            "from_pretrained draws it with _init_weights: N(0, initializer_range)",
        ),
        "init_std": Official(0.02, "initializer_range of BERT/RoBERTa configs"),
        "head": Official(
            "pooler_linear",
            "model/sequence_classification.py:106-111, 178-181 (BERT), 326-332, 399-402 "
            "(RoBERTa): frozen pooler, dropout, one trained Linear",
        ),
        "position": Official(
            "shift",
            "transformers 4.11 (the repo's pin): a past of length m moves real tokens to "
            "m..m+n-1 (BertEmbeddings past_key_values_length; RoBERTa "
            "create_position_ids_from_input_ids(..., past_key_values_length))",
        ),
        "prompt_dropout": Official(
            0.1, "model/sequence_classification.py:141, 362 with --hidden_dropout_prob 0.1"
        ),
        "prompt_dropout_mask": Official(
            "per_example",
            "model/sequence_classification.py:131-141: the prefix is expanded to the batch "
            "before the dropout",
        ),
        "warmup_ratio_override": Official(
            0.0, "run_script/*.sh pass no --warmup_*: Trainer default warmup_ratio 0"
        ),
        "weight_decay_override": Official(
            0.0, "run_script/*.sh pass no --weight_decay: Trainer default 0.0"
        ),
    }

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
