"""How a built model executes: device math settings, activation checkpointing, ``torch.compile``.

The two model options are opt-in (``TrainConfig.activation_checkpointing`` and
``TrainConfig.compile``, and the same flags on ``bench run`` and ``bench perf``). They act on the
model a method returns, so every method, ours or peft's, gets the same treatment:

- **activation checkpointing** keeps only each transformer layer's input during the forward pass
  and recomputes the layer in the backward pass (transformers' own mechanism, non-reentrant, so
  frozen inputs need no ``requires_grad`` trick and dropout masks are replayed). It trades step
  time for the activation memory that dominates frozen-backbone methods (measured on MiniLM on
  CPU: 0.35-0.55x the peak memory for 1.4-1.6x the step time; docs/performance.md).
  Results are the same numbers (bitwise on CPU; tested), so it is not part of the run key.
- **compile** runs the model's forward through ``torch.compile`` (inductor, in place: the module
  keeps its parameters and names). Fused kernels change float rounding, so it is part of the run
  key when set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.errors import UserError

if TYPE_CHECKING:
    from torch import nn


def configure_device(device: str) -> None:
    """Process-wide math settings for ``device``: on CUDA, TF32 for the float32 matrix
    products left outside bf16 autocast (CPU: nothing changes)."""
    import torch

    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def enable_activation_checkpointing(model: nn.Module) -> list[str]:
    """Turn on non-reentrant activation checkpointing in every transformers model inside
    ``model``; return their class names. Raises UserError when none supports it."""
    from transformers import PreTrainedModel

    found: list[PreTrainedModel] = []
    inside: set[int] = set()  # modules of a model already found (its base model, ...)
    for module in model.modules():  # outermost first
        if isinstance(module, PreTrainedModel) and id(module) not in inside:
            found.append(module)
            inside.update(id(sub) for sub in module.modules())
    unsupported = [type(m).__name__ for m in found if not m.supports_gradient_checkpointing]
    usable = [m for m in found if m.supports_gradient_checkpointing]
    if not usable:
        raise UserError(
            f"activation checkpointing needs a transformers model that supports it; "
            f"{type(model).__name__} contains "
            f"{', '.join(unsupported) or 'no transformers model'}"
        )
    for module in usable:
        enable = getattr(module, "activation_checkpointing_enable", None)  # transformers >= 5.2x
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            module.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
    return [type(m).__name__ for m in usable]


def compile_model(model: nn.Module) -> nn.Module:
    """Compile ``model``'s forward in place (shapes vary with dynamic padding, so dynamic
    shapes are allowed once a second shape is seen); returns the same module."""
    model.compile()
    return model


def apply_execution_options(
    model: nn.Module, activation_checkpointing: bool, compile: bool
) -> dict[str, object]:
    """Apply the options; return what was done (for the run record)."""
    info: dict[str, object] = {}
    if activation_checkpointing:
        info["activation_checkpointing"] = enable_activation_checkpointing(model)
    if compile:
        compile_model(model)
        info["compiled"] = True
    return info
