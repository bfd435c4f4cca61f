"""The training loop of one run, top to bottom.

load data → tokenize (cached) → carve the selection split → seed → backbone + method → AdamW with
linear warm-up/decay → train, evaluating on the selection split every epoch (or every N steps)
and keeping the best trainable state → restore it → evaluate the task's dev/test splits.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from bench.config import RunSpec
    from bench.data import Collator
    from tasks import TaskSpec


log = logging.getLogger("bench.run")


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class RunResult:
    """What a finished run measured (serialised into its record)."""

    metrics: dict[str, dict[str, float]]
    best: dict[str, Any]
    curve: list[dict[str, Any]]
    params: dict[str, Any]
    sizes: dict[str, int]
    timing: dict[str, float]
    peak_memory_bytes: int
    device: str
    max_length: int
    extra: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) generators."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(requested: str | None = None) -> str:
    import torch

    if requested:
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"device '{requested}' requested but CUDA is not available")
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def task_loss(kind: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for classification (token level ignores −100), MSE for regression."""
    import torch.nn.functional as F

    if kind == "regression":
        return F.mse_loss(logits.squeeze(-1).float(), labels.float())
    return F.cross_entropy(logits.flatten(0, -2).float(), labels.flatten(), ignore_index=-100)


def linear_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int):
    """Linear warm-up from 0 over ``warmup`` steps, then linear decay to 0 at ``total``."""
    import torch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_run(
    run: RunSpec,
    device: str | None = None,
    progress: bool = True,
    delta_path: Path | None = None,
    micro_batch_size: int | None = None,
    checkpoint_dir: Path | None = None,
) -> RunResult:
    """Train and evaluate one run; raises DivergedError on a NaN/inf loss.

    ``delta_path``: save the selected model's delta there (safetensors).
    ``micro_batch_size``: split each batch into micro-batches of this size and accumulate their
    gradients (same effective batch and sampling order; used to retry after CUDA OOM).
    ``checkpoint_dir``: write a checkpoint at the end of every epoch and resume from the one
    found there (a preempted or killed run continues from its last finished epoch).
    """
    import torch
    from tqdm.auto import tqdm

    from bench import checkpoint, faults
    from bench.backbones import load_backbone, load_tokenizer, resolve_backbone
    from bench.data import Collator, load_task, make_loader, tokenize_task
    from bench.execution import apply_execution_options, configure_device
    from bench.protocols import make_splits
    from methods import build_method
    from tasks import get_task

    started = time.perf_counter()
    device = pick_device(device)
    configure_device(device)
    spec = get_task(run.task)
    cfg = run.train
    kind = spec.kind.value

    # Data: tokenized once per (data, tokenizer, length) and shared by every method and seed.
    loaded = load_task(spec, run.data_dir)
    ref = resolve_backbone(run.backbone)
    tokenizer = load_tokenizer(ref, spec)
    max_length = cfg.max_length or spec.max_length
    tokenized = tokenize_task(loaded, tokenizer, ref.identity, max_length)
    splits = make_splits(tokenized, spec, cfg, run.seed)  # the run's selection protocol
    train_split, sizes = splits.train, splits.sizes
    collator = Collator(tokenizer, regression=kind == "regression")
    eval_splits = {name: split.to_list() for name, split in splits.evaluated.items()}

    # Model: the same seeded backbone for every method; the method decides what trains.
    seed_everything(run.seed)
    method = build_method(run.method, run.method_config)
    backbone = load_backbone(ref, spec, tokenizer.pad_token_id)
    model = method.attach(backbone, spec, attach_data(tokenizer, spec, train_split)).to(device)
    method.check_length(model, max_length)
    params = method.parameter_counts(model)
    if params.matches_formula is False:
        log.warning(
            "%s: %d stored parameters, but its closed form %s gives %d",
            run.method, params.stored, params.formula, params.formula_value,
        )  # fmt: skip
    method_info = method.describe(model)
    execution = apply_execution_options(model, cfg.activation_checkpointing, cfg.compile)
    groups = method.param_groups(model, cfg)
    optimizer = torch.optim.AdamW(groups, fused=device.startswith("cuda"))
    train_loader = make_loader(
        train_split.to_list(),
        collator,
        cfg.batch_size,
        shuffle=True,
        seed=run.seed,
        group_by_length=cfg.group_by_length,
        pin_memory=device.startswith("cuda"),
    )
    total_steps = cfg.epochs * len(train_loader)
    scheduler = linear_schedule(optimizer, math.ceil(cfg.warmup_ratio * total_steps), total_steps)
    eval_every = cfg.eval_every or len(train_loader)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda"))
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(torch.device(device))

    curve: list[dict[str, Any]] = []
    best: dict[str, Any] = {"score": -math.inf}
    best_state = None
    eval_seconds = 0.0
    trained_before = 0.0  # training seconds of epochs done before a resume
    step = 0
    first_epoch = 1
    resumed = _load_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    if resumed is not None:
        method.restore_state(model, resumed.trained)
        optimizer.load_state_dict(resumed.optimizer)
        scheduler.load_state_dict(resumed.scheduler)
        train_loader.generator.set_state(resumed.data_rng)
        torch.set_rng_state(resumed.torch_rng)
        if resumed.cuda_rng:
            torch.cuda.set_rng_state_all(resumed.cuda_rng)
        curve, best, best_state = resumed.curve, resumed.best, resumed.best_state
        eval_seconds, trained_before = resumed.eval_seconds, resumed.train_seconds
        step, first_epoch = resumed.step, resumed.epoch + 1
        log.info("resumed from the checkpoint of epoch %d (step %d)", resumed.epoch, step)
    micro = min(micro_batch_size or cfg.batch_size, cfg.batch_size)
    trained_params = [p for g in groups for p in g["params"]]
    log.info(
        "%s (key %s): %d train / %d selection examples, %d steps, micro-batch %d, device %s",
        run.label,
        run.key,
        sizes.train,
        sizes.selection,
        total_steps,
        micro,
        device,
    )
    bar = tqdm(
        total=total_steps, initial=step, desc=f"train {run.label}", disable=not progress or None
    )
    waited = [0.0]  # seconds the training loop spent waiting for batches
    train_started = time.perf_counter()
    for epoch in range(first_epoch, cfg.epochs + 1):
        method.on_epoch_start(model, epoch)
        model.train()
        running, count = 0.0, 0
        for batch in _timed(train_loader, waited):
            poison = faults.at_step(run, step + 1, full_micro_batch=micro == cfg.batch_size)
            loss_value = _accumulate(model, batch, kind, micro, device, autocast, poison)
            if not math.isfinite(loss_value):
                raise DivergedError(f"loss became {loss_value} at step {step + 1}")
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(trained_params, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            running, count = running + loss_value, count + 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}")
            if step % eval_every == 0 or step == total_steps:
                tick = time.perf_counter()
                scores = evaluate(
                    model, eval_splits["selection"], spec, collator, cfg, device, progress
                )
                eval_seconds += time.perf_counter() - tick
                point = {
                    "step": step,
                    "epoch": epoch,
                    "train_loss": running / max(1, count),
                    "lr": scheduler.get_last_lr()[0],
                    "selection": scores,
                }
                curve.append(point)
                log.info(
                    "epoch %d step %d/%d train_loss %.4f selection %s",
                    epoch,
                    step,
                    total_steps,
                    point["train_loss"],
                    ", ".join(f"{k}={v:.4f}" for k, v in sorted(scores.items())),
                )
                running, count = 0.0, 0
                score = scores[spec.primary_metric]
                if math.isnan(score):
                    score = -math.inf  # e.g. Pearson of constant predictions: never preferred
                if score > best["score"] or best_state is None:
                    best = {
                        "score": score,
                        "step": step,
                        "epoch": epoch,
                        "metric": spec.primary_metric,
                    }
                    best_state = method.trainable_state(model)
                model.train()
        if checkpoint_dir is not None and epoch < cfg.epochs:
            checkpoint.save(
                checkpoint_dir,
                checkpoint.TrainState(
                    epoch=epoch,
                    step=step,
                    curve=curve,
                    best=best,
                    eval_seconds=eval_seconds,
                    train_seconds=trained_before
                    + time.perf_counter()
                    - train_started
                    - (eval_seconds - (resumed.eval_seconds if resumed else 0.0)),
                    trained=method.trainable_state(model),
                    best_state=best_state,
                    optimizer=optimizer.state_dict(),
                    scheduler=scheduler.state_dict(),
                    data_rng=train_loader.generator.get_state(),
                    torch_rng=torch.get_rng_state(),
                    cuda_rng=torch.cuda.get_rng_state_all() if device.startswith("cuda") else [],
                ),
            )
        faults.at_epoch_end(run, epoch)
    bar.close()
    eval_this_session = eval_seconds - (resumed.eval_seconds if resumed else 0.0)
    train_seconds = trained_before + time.perf_counter() - train_started - eval_this_session

    method.restore_state(model, best_state)
    if delta_path is not None:
        from bench.weights import save_delta

        save_delta(delta_path, method, model, run)
    metrics: dict[str, dict[str, float]] = {}
    tick = time.perf_counter()
    for name, split in eval_splits.items():
        metrics[name] = evaluate(model, split, spec, collator, cfg, device, progress)
    metrics = splits.with_aliases(metrics)
    final_eval_seconds = time.perf_counter() - tick

    return RunResult(
        metrics=metrics,
        best=best,
        curve=curve,
        params=params.to_dict(),
        sizes={**vars(sizes), **{f"eval_{k}": len(v) for k, v in eval_splits.items()}},
        timing={
            "train_s": train_seconds,
            "data_wait_s": waited[0],
            "selection_eval_s": eval_seconds,
            "final_eval_s": final_eval_seconds,
            "total_s": time.perf_counter() - started,
            "steps": step,
        },
        peak_memory_bytes=peak_memory_bytes(device),
        device=device_name(device),
        max_length=max_length,
        extra={
            "method_info": method_info,
            "micro_batch_size": micro,
            "grad_accum_steps": math.ceil(cfg.batch_size / micro),
            "resumed_from_epoch": resumed.epoch if resumed else None,
            **({"execution": execution} if execution else {}),
        },
    )


def _timed(loader: Any, waited: list[float]) -> Any:
    """The loader's batches, adding the time spent waiting for each to ``waited[0]`` (the
    record's ``data_wait_s``: how much of training the device sat idle on data)."""
    iterator = iter(loader)
    while True:
        tick = time.perf_counter()
        batch = next(iterator, None)
        waited[0] += time.perf_counter() - tick
        if batch is None:
            return
        yield batch


def _load_checkpoint(directory: Path) -> Any:
    """The run's last epoch checkpoint; an unreadable one is moved aside (the run restarts)."""
    from bench import checkpoint

    try:
        return checkpoint.load(directory)
    except Exception as error:  # torn or foreign files: never fail every retry because of them
        aside = directory.with_name(f"{directory.name}.unreadable-{int(time.time())}")
        directory.rename(aside)
        log.warning(
            "checkpoint %s unreadable (%s); moved to %s, starting over", directory, error, aside
        )
        return None


def _accumulate(
    model: nn.Module,
    batch: dict[str, Any],
    kind: str,
    micro: int,
    device: str,
    autocast: Any,
    poison: bool = False,
) -> float:
    """Forward and backward one batch in micro-batches of ``micro`` rows; return its loss.

    Each micro-batch's mean loss is weighted by its share of the batch's labelled items
    (examples, or non-ignored tokens for token tasks), so the summed gradient equals the whole
    batch's. With one micro-batch this is exactly the plain step.
    """
    import torch

    labels = batch.pop("labels")
    batch.pop("index", None)
    rows = labels.shape[0]
    counted = (
        (labels != -100).sum(dim=tuple(range(1, labels.dim())))
        if kind == "token_classification"
        else None
    )
    total = float(counted.sum()) if counted is not None else float(rows)
    loss_value = 0.0
    for start in range(0, rows, micro):
        part = slice(start, start + micro)
        share = float(counted[part].sum()) if counted is not None else float(len(labels[part]))
        if share == 0:
            continue  # a micro-batch of only ignored tokens adds nothing (and its mean is 0/0)
        # Pinned batches (CUDA) copy asynchronously, overlapping the previous kernels.
        inputs = {k: v[part].to(device, non_blocking=True) for k, v in batch.items()}
        with autocast:
            logits = model(**inputs).logits
        loss = task_loss(kind, logits, labels[part].to(device, non_blocking=True))
        if poison:
            loss = loss * float("nan")
        if micro < rows:
            loss = loss * (share / total)
        if not torch.isfinite(loss):
            return float(loss.item())
        loss.backward()
        loss_value += float(loss.item())
    return loss_value


def attach_data(tokenizer: Any, spec: TaskSpec, train_split: Any, examples: int = 64) -> Any:
    """Token ids of the task's keywords and of the first training examples (prompt inits)."""
    from methods import AttachData

    special = set(tokenizer.all_special_ids)
    keywords = tokenizer(" ".join(spec.keywords), add_special_tokens=False)["input_ids"]
    rows = train_split.select(range(min(examples, len(train_split))))["input_ids"]
    sample = [token for row in rows for token in row if token not in special]
    return AttachData(
        keyword_ids=list(keywords), sample_ids=sample, vocab_ids=ordinary_vocab_ids(tokenizer)
    )


def ordinary_vocab_ids(tokenizer: Any, limit: int = 5000) -> list[int]:
    """The first ``limit`` vocabulary ids that are not special, reserved (``[unused12]``,
    ``<extra_id_0>``) or byte-fallback tokens."""
    special = set(tokenizer.all_special_ids)
    out: list[int] = []
    for start in range(0, len(tokenizer), 4096):
        ids = range(start, min(start + 4096, len(tokenizer)))
        for token_id, token in zip(ids, tokenizer.convert_ids_to_tokens(list(ids)), strict=True):
            bracketed = token is not None and token[:1] in "[<" and token[-1:] in "]>"
            reserved = token is None or bracketed
            if token_id not in special and not reserved:
                out.append(token_id)
                if len(out) == limit:
                    return out
    return out


def evaluate(
    model: nn.Module,
    examples: list[dict[str, Any]],
    spec: TaskSpec,
    collator: Collator,
    cfg: Any,
    device: str,
    progress: bool = True,
) -> dict[str, float]:
    """The task's metrics of ``model`` on tokenized ``examples`` (token tasks: on words)."""
    import torch
    from tqdm.auto import tqdm

    from bench.data import make_loader
    from tasks import compute_metrics

    kind = spec.kind.value
    # Longest first: batches hold examples of similar length, so little compute goes to padding
    # (metrics are order-free; padding changes logits only at float rounding level).
    examples = sorted(examples, key=lambda example: -len(example["input_ids"]))
    loader = make_loader(examples, collator, cfg.eval_batch_size, shuffle=False)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda"))
    left_padded = collator.tokenizer.padding_side == "left"
    predictions: list[Any] = []
    references: list[Any] = []
    offset = 0
    was_training = model.training
    model.eval()
    with torch.no_grad(), autocast:
        for batch in tqdm(loader, desc="evaluate", leave=False, disable=not progress or None):
            labels = batch.pop("labels")
            batch.pop("index")
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu()
            if kind == "regression":
                predictions.extend(logits.squeeze(-1).tolist())
                references.extend(labels.tolist())
            elif kind == "classification":
                predictions.extend(logits.argmax(-1).tolist())
                references.extend(labels.tolist())
            else:
                best = logits.argmax(-1)
                for row, example in enumerate(examples[offset : offset + len(best)]):
                    shift = best.shape[1] - len(example["input_ids"]) if left_padded else 0
                    predictions.append(
                        [
                            spec.labels[best[row, start + shift]] if start >= 0 else "O"
                            for start in example["word_starts"]
                        ]
                    )
                    references.append([spec.labels[tag] for tag in example["word_tags"]])
            offset += len(labels)
    model.train(was_training)
    return compute_metrics(spec, predictions, references)


def peak_memory_bytes(device: str) -> int:
    """CUDA: max allocated since the run's reset. CPU: the process's peak resident set size."""
    import resource
    import sys

    import torch

    if device.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated(torch.device(device)))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def device_name(device: str) -> str:
    import platform

    import torch

    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
