"""Preflight of (method, backbone) pairs, from the backbone's config alone.

Before any run (and in ``run --dry-run``) every distinct (method and its options, backbone, task
kind) of a plan is checked on a *meta-device* model built from the backbone's config: no weights
are read and no memory is allocated. A pair that cannot run (``Method.preflight`` raises a
``UserError``: kv prefixes on ALBERT's shared layer, position 'keep' on rotary positions, ...)
is recorded as ``failed`` with that reason while the rest of the sweep runs. A backbone whose
config is not on this machine (a Hub id never downloaded) is not checked here; its runs check
themselves at attach.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bench.errors import UserError

if TYPE_CHECKING:
    from torch import nn

    from bench.config import RunSpec

#: ``error.type`` of the records of pairs refused here.
PREFLIGHT_ERROR = "PreflightError"


def meta_model(backbone: str, kind: str) -> nn.Module | None:
    """The backbone's architecture with a task head, on the meta device (no weights), or None
    when its config is not available offline (then neither torch nor transformers is imported:
    a dry run of Hub backbones stays fast)."""
    from bench.backbones import resolve_backbone

    try:
        ref = resolve_backbone(backbone)
    except UserError:
        return None
    if not ref.is_local:
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(ref.location, "config.json"), str):
            return None
    import torch
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(ref.location, local_files_only=True)
    except (OSError, ValueError):
        return None
    config.num_labels = 1 if kind == "regression" else 2
    auto = (
        transformers.AutoModelForTokenClassification
        if kind == "token_classification"
        else transformers.AutoModelForSequenceClassification
    )
    try:
        with torch.device("meta"):
            model = auto.from_config(config)
    except ValueError:  # no head of this kind: load_backbone reports it with its own message
        return None
    model.peft_bench_new_parameters = frozenset()
    return model


def pair_problems(plan: Sequence[RunSpec]) -> dict[str, str]:
    """Run key → why its (method, backbone) pair cannot run, for the runs that cannot."""
    from methods import build_method
    from tasks import get_task

    verdicts: dict[tuple[Any, ...], str | None] = {}
    models: dict[tuple[str, str], nn.Module | None] = {}
    out = {}
    for run in plan:
        kind = get_task(run.task).kind.value
        pair = (run.method, json.dumps(run.method_config, sort_keys=True), run.backbone, kind)
        if pair not in verdicts:
            if (run.backbone, kind) not in models:
                models[run.backbone, kind] = meta_model(run.backbone, kind)
            model = models[run.backbone, kind]
            verdicts[pair] = None
            if model is not None:
                method = build_method(run.method, run.method_config)  # bad options: exit 2
                try:
                    method.preflight(model)
                except UserError as error:
                    verdicts[pair] = str(error)
                except Exception:  # noqa: BLE001 - a check that cannot run on meta tensors
                    verdicts[pair] = None  # leaves the verdict to the run, which records it
        if verdicts[pair] is not None:
            out[run.key] = verdicts[pair]
    return out


def failed_record(run: RunSpec, reason: str) -> dict[str, Any]:
    """The ``failed`` record of a run whose pair preflight refused."""
    from bench import records
    from bench.worker import base_record

    record = base_record(run)
    record.update(
        status="failed",
        error={"type": PREFLIGHT_ERROR, "message": reason, "traceback": ""},
        finished_at=records.utc_now(),
        wall_time_s=0.0,
    )
    return record
