"""What every row that runs huggingface/peft needs: the package itself (a clear error when it is
missing), the head modules peft copies, and the modules a backbone initialised at random."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.errors import UserError

if TYPE_CHECKING:
    from torch import nn

#: Module names peft's SEQ_CLS / TOKEN_CLS models add to ``modules_to_save`` themselves.
PEFT_HEAD_NAMES = ("classifier", "score")
#: Marks peft's trainable copy of a module listed in ``modules_to_save``.
HEAD_COPY = ".modules_to_save."


def load_peft() -> Any:
    """The ``peft`` package. A UserError with the install command if it is missing."""
    try:
        import peft
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] != "peft":
            raise  # peft is installed but something it imports is missing: peft's own error
        raise UserError(
            "the peft_* methods run huggingface/peft, which is not installed: "
            "pip install peft  (or the project's dev extra: pip install -e '.[dev]')"
        ) from None
    return peft


def new_modules_to_save(backbone: nn.Module) -> list[str]:
    """Modules holding parameters the checkpoint lacked (``peft_bench_new_parameters``, e.g.
    DeBERTa's ``pooler.dense``), apart from those under peft's own head names. peft trains and
    stores them like the head, so that no random module stays frozen."""
    modules = set()
    for name in getattr(backbone, "peft_bench_new_parameters", ()):
        module = name.rpartition(".")[0]
        parts = module.split(".")
        prefixes = [".".join(parts[: i + 1]) for i in range(len(parts))]
        if module and not any(p.endswith(PEFT_HEAD_NAMES) for p in prefixes):
            modules.add(module)
    return sorted(modules)


def set_peft_delta(model: Any, delta: dict[str, Any], name: str) -> Any:
    """peft's own load path for an exported delta: its keys must be exactly the ones
    ``get_peft_model_state_dict`` gives for ``model`` (a ValueError names the differences)."""
    peft = load_peft()
    expected = set(peft.get_peft_model_state_dict(model))
    if set(delta) != expected:
        raise ValueError(
            f"delta does not match {name}: missing {sorted(expected - set(delta))[:5]}, "
            f"unexpected {sorted(set(delta) - expected)[:5]}"
        )
    peft.set_peft_model_state_dict(model, delta)
    return model
