"""Prompt Tuning (Lester et al. 2021): m trainable soft tokens at the input, and the task head.

Lester et al. train the prompt alone (T5 writes the label as text). An encoder classifier needs
a head, so here the backbone's classification head trains too (in both profiles). Stored: m·d
(+ the task head). Project defaults:
- m = 20: Lester et al. use 1–150, and 20 is in their sweet spot.
- ``vocab_sample`` initialisation, which beat random init in their ablation.
- Prompt learning rate 3e-2, from peft's prompt-tuning examples with AdamW (Lester et al. use 0.3
  with Adafactor).
- Head learning rate 1e-2. Measured on MiniLM, SST-2, 4,000 sentences and 2 epochs: head 1e-3
  gave 0.695 dev accuracy, head 1e-2 gave 0.717, and a prompt learning rate of 0.1 gave 0.718.
- Position ``keep``: real tokens keep 0..n-1, the prompt slots take no position embedding.

``profile: official``: the prompt is prepended to the input embeddings as ordinary tokens, so on
absolute-position models the slots take positions 0..m-1 and real tokens m..m+n-1 (what peft
does, and what prepending does; T5's relative positions in the original have no such choice),
initialised from sampled vocabulary embeddings (google-research/prompt-tuning,
prompt_tuning/prompts.py, ``from_sampled_vocab`` initializer; our default already). Not
reproduced: Adafactor at lr 0.3 and a text-to-text head.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from methods._prompt_method import Official, PromptConfig, PromptMethod
from methods.base import MethodConfig


@dataclass(frozen=True)
class PromptTuningConfig(PromptConfig):
    """Prompt Tuning hyperparameters."""

    lr: float = field(default=3e-2, metadata={"help": "Learning rate of the soft prompt."})
    head_lr: float | None = field(
        default=1e-2, metadata={"help": "Learning rate of the task head."}
    )
    init: str = field(default="vocab_sample", metadata={"help": "Prompt initialisation."})

    OFFICIAL: ClassVar[dict[str, Official]] = {
        "init": Official(
            "vocab_sample", "prompt_tuning/prompts.py: prompts initialised from sampled vocab"
        ),
        "position": Official(
            "shift", "prompts are prepended input tokens (peft's PromptEmbedding does the same)"
        ),
    }


class PromptTuning(PromptMethod):
    """Direct soft tokens at the input layer; the backbone is frozen, the head trains."""

    name: ClassVar[str] = "prompt_tuning"
    description: ClassVar[str] = "Prompt Tuning: m trainable soft tokens at the input (m·d)."
    config_cls: ClassVar[type[MethodConfig]] = PromptTuningConfig
    placement: ClassVar[str] = "input"
