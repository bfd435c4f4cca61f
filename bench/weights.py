"""Trained deltas on disk: safetensors only (never pickle), with what is needed to rebuild.

``save_delta`` writes ``method.export(model)``, the delta alone with any reparameterization
merged, plus metadata: method, method config, task and backbone. ``load_trained`` rebuilds the
trained model from a fresh backbone and the file, and reproduces the trained model's logits
exactly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import UserError

if TYPE_CHECKING:
    from torch import nn

    from bench.config import RunSpec
    from methods import Method


def save_delta(path: Path, method: Method, model: nn.Module, run: RunSpec) -> None:
    """Write the run's delta to ``path`` atomically."""
    from safetensors.torch import save_file

    from bench.records import new_file_mode

    delta = method.export(model)
    metadata = {
        "method": run.method,
        "method_config": json.dumps(run.method_config, sort_keys=True),
        "task": run.task,
        "backbone": run.backbone,
        "backbone_identity": run.backbone_identity,
        "run_key": run.key,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(delta, str(tmp), metadata=metadata)
    os.chmod(tmp, new_file_mode())  # safetensors writes 0600
    os.replace(tmp, path)


def read_delta(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The tensors and metadata of a delta file (safetensors; anything else is refused)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise UserError(f"delta file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        return load_file(str(path)), metadata
    except Exception as error:  # safetensors raises its own error types for foreign files
        raise UserError(f"{path} is not a safetensors delta file: {error}") from None


def load_trained(path: Path, backbone: str | None = None) -> nn.Module:
    """Rebuild a trained model: a fresh backbone (the one in the file's metadata unless
    ``backbone`` is given) plus the stored delta."""
    from bench.backbones import load_backbone, load_tokenizer, resolve_backbone
    from methods import build_method
    from tasks import get_task

    tensors, metadata = read_delta(path)
    missing = {"method", "method_config", "task", "backbone"} - set(metadata)
    if missing:
        raise UserError(f"delta file {path} lacks metadata {sorted(missing)}")
    spec = get_task(metadata["task"])
    ref = resolve_backbone(backbone or metadata["backbone"])
    expected = metadata.get("backbone_identity")
    if expected and ref.identity != expected:
        raise UserError(
            f"delta file {path} was trained on backbone {expected}, but '{ref.name}' is "
            f"{ref.identity}; pass the same backbone (backbone=...)"
        )
    tokenizer = load_tokenizer(ref, spec)
    method = build_method(metadata["method"], json.loads(metadata["method_config"]))
    model = method.load(load_backbone(ref, spec, tokenizer.pad_token_id), spec, tensors)
    return model.eval()
