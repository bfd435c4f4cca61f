"""Prompt Tuning (Lester et al. 2021): m trainable soft tokens at the input, nothing else.

Stored: m·d (+ the task head). Defaults:
- m = 20: Lester et al. use 1–150, and 20 is in their sweet spot.
- ``vocab_sample`` initialisation, which beat random init in their ablation.
- Prompt learning rate 3e-2, from peft's prompt-tuning examples with AdamW (Lester et al. use 0.3
  with Adafactor).
- Head learning rate 1e-2. Measured on MiniLM, SST-2, 4,000 sentences and 2 epochs: head 1e-3
  gave 0.695 dev accuracy, head 1e-2 gave 0.717, and a prompt learning rate of 0.1 gave 0.718.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from methods._prompt_method import PromptConfig, PromptMethod
from methods.base import MethodConfig


@dataclass(frozen=True)
class PromptTuningConfig(PromptConfig):
    """Prompt Tuning hyperparameters."""

    lr: float = field(default=3e-2, metadata={"help": "Learning rate of the soft prompt."})
    head_lr: float | None = field(
        default=1e-2, metadata={"help": "Learning rate of the task head."}
    )
    init: str = field(default="vocab_sample", metadata={"help": "Prompt initialisation."})


class PromptTuning(PromptMethod):
    """Direct soft tokens at the input layer; the backbone is frozen."""

    name: ClassVar[str] = "prompt_tuning"
    description: ClassVar[str] = "Prompt Tuning: m trainable soft tokens at the input (m·d)."
    config_cls: ClassVar[type[MethodConfig]] = PromptTuningConfig
    placement: ClassVar[str] = "input"
