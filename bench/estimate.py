"""A rough GPU-time estimate of a plan, shown by ``run --dry-run`` (a budget, not a measurement).

time ≈ optimizer steps × batch × max_length × FLOPs per token ÷ (peak bf16 FLOP/s × utilization)

FLOPs per token: 6N for full fine-tuning (forward 2N, backward 4N); 4N when the backbone is
frozen (the backward pass still goes through its activations but computes no weight gradients).
N is the backbone's parameter count. Tokens are counted at ``max_length`` (padding included), so
the estimate is an upper bound on compute and a lower bound on overheads; evaluation is added as
forward passes (2N per token) over the selection split every epoch and each reported split once.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.config import RunSpec

#: Assumed device: an NVIDIA A100's dense bf16 peak (312 TFLOP/s) at 30% utilization.
PEAK_FLOPS = 312e12
UTILIZATION = 0.30
ASSUMPTION = "A100-class GPU: 312 TFLOP/s bf16 peak at 30% utilization, tokens at max_length"

#: Training and evaluated sizes of the full datasets (evaluated: every split a run reports or
#: evaluates), used only for tasks read from the Hub: runs with ``--data-dir`` count the rows of
#: their own files (:func:`dataset_sizes`, cached). Checked against the original files in
#: ../shared/data for CoLA, SST-2, MRPC, STS-B, RTE, QNLI (dev) and CoNLL-2003, and against
#: the nyu-mll/glue dataset card's rounded counts for the others; QQP, MNLI and WNLI are the
#: commonly cited GLUE sizes, not re-checked.
DATASET_SIZES: dict[str, tuple[int, int]] = {
    "cola": (8551, 1043),
    "sst2": (67349, 872),
    "mrpc": (3668, 408),
    "stsb": (5749, 1500),
    "qqp": (363846, 40430),
    "mnli": (392702, 19647),
    "qnli": (104743, 5463),
    "rte": (2490, 277),
    "wnli": (635, 71),
    "conll2003": (14041, 6703),
    # Counted by the local parsers on ../shared/data (rows as trained: MultiRC one per answer
    # option; COPA per example, each running 2 sequences); BoolQ's train size is the TFDS
    # super_glue/boolq catalog's 9,427 (its train file is Hub-only). ReCoRD (rows per candidate
    # entity) and OntoNotes (user-supplied) are not counted here, so their estimate is unknown.
    "boolq": (9427, 3270),
    "cb": (250, 56),
    "copa": (400, 100),
    "superglue_rte": (2490, 277),
    "wic": (5428, 638),
    "wsc": (554, 104),
    "multirc": (27243, 4848),
    "conll04": (922, 519),
}

#: Sequences the model reads per example: a multiple-choice example is one sequence per choice.
SEQUENCES_PER_EXAMPLE: dict[str, int] = {"copa": 2}

#: Approximate parameter counts of the short-named Hub backbones (commonly cited, rounded; not
#: re-counted here), used only when the weights are not on this machine. Local weights are
#: counted exactly from their safetensors headers.
KNOWN_PARAMETERS: dict[str, float] = {
    "bert-base-uncased": 110e6,
    "bert-base-cased": 108e6,
    "bert-large-cased": 333e6,
    "bert-large-uncased": 335e6,
    "roberta-base": 125e6,
    "roberta-large": 355e6,
    "deberta-v3-base": 184e6,
    "deberta-v3-large": 435e6,
    "gpt2": 124e6,
    "minilm": 22.7e6,
}


#: CPU throughput measured in this repository (docs/performance.md, "CPU figures": ``python -m
#: bench perf --backbone minilm --seq-len 128 --batch-size 16 --steps 20 --warmup 3 --compare
#: peft --device cpu --repeats 2`` on 2 cores): MiniLM-L6 (22.7M parameters) trains 1939 tokens/s
#: with full fine-tuning and 2235-2778 (mean 2503) with a frozen backbone, and evaluates
#: 7124-8465 (mean of the five methods 7906). Other backbones are scaled by parameter count
#: (compute per token ∝ N).
CPU_REFERENCE_PARAMETERS = 22.7e6
CPU_TRAIN_TOKENS_PER_S = {"full_finetune": 1939.0, "frozen": 2503.0}
CPU_EVAL_TOKENS_PER_S = 7906.0
CPU_ASSUMPTION = (
    "MiniLM rates measured on 2 CPU cores (docs/performance.md), scaled by parameters; tokens "
    "at max_length; per-run loading and tokenizing not included"
)


@dataclass(frozen=True)
class Estimate:
    gpu_seconds: float | None  # None: the backbone's size or the data's size is unknown
    cpu_seconds: float | None = None


def backbone_parameters(name: str, location: str | None = None) -> float | None:
    """Parameter count from local safetensors headers, else the table above, else None."""
    if location and Path(location).is_dir():
        total = 0
        for file in Path(location).glob("*.safetensors"):
            with file.open("rb") as handle:
                (size,) = struct.unpack("<Q", handle.read(8))
                header = json.loads(handle.read(size))
            for key, info in header.items():
                if key != "__metadata__":
                    total += math.prod(info["shape"])
        if total:
            return float(total)
    return KNOWN_PARAMETERS.get(name)


@functools.cache
def dataset_sizes(task: str, data_dir: str | None) -> tuple[int, int] | None:
    """(training rows, evaluated rows) of ``task``'s local files under ``data_dir``, counted
    once and cached on disk by the files' content hash; the table above for Hub data (None
    when the task is not in it, or its files cannot be read)."""
    from bench.data import cache_dir, data_identity, load_task
    from bench.errors import UserError
    from tasks import get_task

    if data_dir is None:
        return DATASET_SIZES.get(task)
    spec = get_task(task)
    try:
        identity = data_identity(spec, data_dir)
    except (UserError, OSError):
        return None
    path = cache_dir() / "sizes" / f"{task}-{identity.replace(':', '-')}.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        cached = json.loads(path.read_text(encoding="utf-8"))
        return int(cached["train"]), int(cached["evaluated"])
    try:
        loaded = load_task(spec, data_dir)
    except UserError:
        return None
    train = len(loaded.splits["train"]) if "train" in loaded.splits else 0
    evaluated = sum(len(loaded.splits[s]) for s in spec.eval_splits if s in loaded.splits)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"train": train, "evaluated": evaluated}), encoding="utf-8")
    return train, evaluated


def estimate_run(run: RunSpec, parameters: float | None) -> Estimate:
    from tasks import get_task

    sizes = dataset_sizes(run.task, run.data_dir)
    if parameters is None or sizes is None:
        return Estimate(None)
    cfg = run.train
    spec = get_task(run.task)
    pool = min(sizes[0], cfg.max_train_samples or sizes[0])
    selection = max(1, round(pool * cfg.val_fraction))
    trained = pool - selection
    if cfg.protocol in ("validation", "official-dev"):  # all of the pool trains; selection on dev
        selection, trained = min(sizes[1], cfg.max_eval_samples or sizes[1]), pool
    steps = cfg.epochs * math.ceil(trained / cfg.batch_size)
    length = cfg.max_length or spec.max_length
    per_token = 6 * parameters if run.method == "full_finetune" else 4 * parameters
    sequences = SEQUENCES_PER_EXAMPLE.get(run.task, 1)
    train_flops = steps * cfg.batch_size * sequences * length * per_token
    evaluated = selection * cfg.epochs + min(sizes[1], cfg.max_eval_samples or sizes[1])
    eval_flops = evaluated * sequences * length * 2 * parameters
    scale = parameters / CPU_REFERENCE_PARAMETERS
    rate = CPU_TRAIN_TOKENS_PER_S["full_finetune" if run.method == "full_finetune" else "frozen"]
    train_tokens = steps * cfg.batch_size * sequences * length
    eval_tokens = evaluated * sequences * length
    cpu = scale * (train_tokens / rate + eval_tokens / CPU_EVAL_TOKENS_PER_S)
    return Estimate((train_flops + eval_flops) / (PEAK_FLOPS * UTILIZATION), cpu)


def estimate_plan(plan: list[RunSpec]) -> list[Estimate]:
    from bench.backbones import resolve_backbone

    counts: dict[str, float | None] = {}
    out = []
    for run in plan:
        if run.backbone not in counts:
            ref = resolve_backbone(run.backbone)
            counts[run.backbone] = backbone_parameters(
                run.backbone, ref.location if ref.is_local else None
            )
        out.append(estimate_run(run, counts[run.backbone]))
    return out
