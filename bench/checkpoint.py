"""Epoch checkpoints of a training run, so that a preempted or killed run resumes where it was.

Tensors (trained parameters, the best state so far, optimizer moments, RNG states) go into one
safetensors file; everything else (epoch, step, curve, best score, optimizer hyperparameters,
scheduler counters) into a JSON file that names the tensor file. Both are written to temporary
names and renamed; the JSON is renamed last, so a reader sees the previous complete checkpoint or
the new one. Nothing is unpickled on load.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.records import atomic_write_json, new_file_mode

if TYPE_CHECKING:
    import torch

STATE_FILE = "state.json"


@dataclass
class TrainState:
    """Where a run stands at the end of an epoch."""

    epoch: int
    step: int
    curve: list[dict[str, Any]]
    best: dict[str, Any]
    eval_seconds: float
    train_seconds: float
    trained: dict[str, torch.Tensor]
    best_state: dict[str, torch.Tensor] | None
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    data_rng: torch.Tensor
    torch_rng: torch.Tensor
    cuda_rng: list[torch.Tensor]


def save(directory: Path, state: TrainState) -> None:
    """Write ``state`` as the run's latest checkpoint (atomically) and drop older tensor files."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    tensors.update({f"trained/{k}": v for k, v in state.trained.items()})
    if state.best_state is not None:
        tensors.update({f"best/{k}": v for k, v in state.best_state.items()})
    opt_state, opt_meta = _split_optimizer(state.optimizer)
    tensors.update(opt_state)
    tensors["rng/data"] = state.data_rng
    tensors["rng/torch"] = state.torch_rng
    tensors.update({f"rng/cuda/{i}": t for i, t in enumerate(state.cuda_rng)})
    name = f"epoch{state.epoch}.safetensors"
    tmp = directory / f".{name}.tmp"
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    os.chmod(tmp, new_file_mode())  # safetensors writes 0600
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, directory / name)
    meta = {
        "tensors": name,
        "epoch": state.epoch,
        "step": state.step,
        "curve": state.curve,
        "best": state.best,
        "has_best_state": state.best_state is not None,
        "eval_seconds": state.eval_seconds,
        "train_seconds": state.train_seconds,
        "optimizer": opt_meta,
        "scheduler": state.scheduler,
        "cuda_rng_count": len(state.cuda_rng),
    }
    atomic_write_json(directory / STATE_FILE, meta)
    for old in directory.glob("epoch*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def load(directory: Path) -> TrainState | None:
    """The latest complete checkpoint in ``directory``, or None when there is none."""
    from safetensors.torch import load_file

    meta_path = directory / STATE_FILE
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if isinstance(meta["best"].get("score"), type(None)):
        meta["best"]["score"] = float("-inf")  # JSON stores -inf as null
    tensors = load_file(str(directory / meta["tensors"]))
    return TrainState(
        epoch=meta["epoch"],
        step=meta["step"],
        curve=meta["curve"],
        best=meta["best"],
        eval_seconds=meta["eval_seconds"],
        train_seconds=meta["train_seconds"],
        trained=_prefixed(tensors, "trained/"),
        best_state=_prefixed(tensors, "best/") if meta["has_best_state"] else None,
        optimizer=_join_optimizer(_prefixed(tensors, "opt/"), meta["optimizer"]),
        scheduler=meta["scheduler"],
        data_rng=tensors["rng/data"],
        torch_rng=tensors["rng/torch"],
        cuda_rng=[tensors[f"rng/cuda/{i}"] for i in range(meta["cuda_rng_count"])],
    )


def remove(directory: Path) -> None:
    """Delete a finished run's checkpoint files."""
    if directory.is_dir():
        for path in directory.iterdir():
            path.unlink(missing_ok=True)
        directory.rmdir()


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _split_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state → (tensors named ``opt/<param index>/<name>``, JSON-safe rest)."""
    import torch

    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state_dict["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt/{index}/{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split("/", 1)
        state.setdefault(int(index), {})[name] = value
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}
