"""Helpers shared by test modules (pytest puts this folder on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path

from bench.config import RunSpec
from bench.runner import PlanRequest, build_plan

REPO = Path(__file__).resolve().parents[1]


def checkout_pythonpath() -> str:
    """``PYTHONPATH`` for a fresh process that must import this checkout's code, whatever an
    editable install points at."""
    return os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))


def tiny_plan(
    model_dir: Path, data_dir: Path, task: str = "sst2", seeds=(13,), **train
) -> list[RunSpec]:
    """Full fine-tuning of the tiny BERT on the tiny data: 2 epochs, batch 8, 32 tokens, lr 1e-3
    (``train`` overrides any of these training values)."""
    return build_plan(
        PlanRequest(
            tasks=[task],
            methods=["full_finetune"],
            seeds=seeds,
            backbones=[str(model_dir)],
            data_dir=str(data_dir),
            train={"epochs": 2, "batch_size": 8, "max_length": 32, **train},
            method_overrides={"lr": 1e-3},
        )
    )


def tiny_cli(model_dir: Path, data_dir: Path, out: Path, *extra: str) -> list[str]:
    """The ``run`` command line of :func:`tiny_plan` (serial, no progress bar) plus ``extra``."""
    return [
        "run", "--tasks", "sst2", "--methods", "full_finetune", "--backbone", str(model_dir),
        "--data-dir", str(data_dir), "--output", str(out), "--epochs", "2", "--batch-size", "8",
        "--max-length", "32", "--lr", "1e-3", "--no-progress", "--executor", "serial", *extra,
    ]  # fmt: skip
