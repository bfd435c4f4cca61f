"""The training loop of one run, top to bottom, in four functions that :func:`train_run` calls:

1. :func:`setup_run`: load data → tokenize (cached) → carve the selection split → seed →
   backbone + method → AdamW with linear warm-up/decay;
2. :func:`train_loop` (after :func:`resume_state`): train, evaluating on the selection split
   every epoch (or every N steps);
3. :func:`select_on_evaluation`: keep the best trainable state on the selection split;
4. :func:`final_evaluation`: restore it → evaluate the task's dev/test splits.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from bench.config import RunSpec, TrainConfig
    from bench.data import Collator
    from methods.base import Method
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


def model_logits(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's logits for one batch, for every method alike.

    Multiple choice (inputs ``[B, C, T]``): the ``B*C`` choices run as one batch of sequences
    through the same model (one score each, ``num_labels`` 1) and come back as ``[B, C]``
    scores, so cross-entropy over the choices trains it and argmax picks the answer.
    """
    ids = inputs["input_ids"]
    if ids.dim() != 3:
        return model(**inputs).logits
    rows, choices = ids.shape[:2]
    flat = {key: value.flatten(0, 1) for key, value in inputs.items()}
    return model(**flat).logits.view(rows, choices)


def linear_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int):
    """Linear warm-up from 0 over ``warmup`` steps, then linear decay to 0 at ``total``."""
    import torch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class RunSetup:
    """Everything a run's loop and evaluations use, built once by :func:`setup_run`."""

    spec: TaskSpec
    cfg: TrainConfig
    device: str
    method: Method
    model: nn.Module
    collator: Collator
    eval_splits: dict[str, list[dict[str, Any]]]  # "selection" first, then the task's splits
    train_loader: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    trained_params: list[torch.nn.Parameter]
    total_steps: int
    eval_every: int  # evaluate on the selection split every this many optimizer steps
    micro: int  # micro-batch rows (== batch size unless retried after CUDA OOM)
    autocast: Any
    sizes: dict[str, int]
    params: dict[str, Any]
    max_length: int
    splits: Any = None  # the protocol's RunSplits (reported splits that alias an evaluated one)
    extra: dict[str, Any] = field(default_factory=dict)  # record fields: method_info, execution


@dataclass
class LoopState:
    """Where training stands; what an epoch checkpoint saves and a resumed run starts from."""

    step: int = 0
    first_epoch: int = 1
    curve: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"score": -math.inf})
    best_state: dict[str, torch.Tensor] | None = None
    eval_seconds: float = 0.0  # selection evaluations, every session
    trained_before: float = 0.0  # training seconds of sessions before a resume
    eval_before: float = 0.0  # selection-evaluation seconds of sessions before a resume
    resumed_from_epoch: int | None = None
    data_wait_s: float = 0.0  # seconds this session's loop waited for batches
    train_seconds: float = 0.0  # training seconds, every session (set when the loop ends)


def train_run(
    run: RunSpec,
    device: str | None = None,
    progress: bool = True,
    delta_path: Path | None = None,
    micro_batch_size: int | None = None,
    checkpoint_dir: Path | None = None,
    on_evaluation: Callable[[str], None] | None = None,
) -> RunResult:
    """Train and evaluate one run; raises DivergedError on a NaN/inf loss.

    Four steps: :func:`setup_run` (data, model, optimizer), :func:`resume_state` (from an epoch
    checkpoint, if any), :func:`train_loop` (epochs, with :func:`select_on_evaluation` keeping
    the best state) and :func:`final_evaluation` (the best state on every reported split).

    ``delta_path``: save the selected model's delta there (safetensors).
    ``micro_batch_size``: split each batch into micro-batches of this size and accumulate their
    gradients (same effective batch and sampling order; used to retry after CUDA OOM).
    ``checkpoint_dir``: write a checkpoint at the end of every epoch and resume from the one
    found there (a preempted or killed run continues from its last finished epoch).
    ``on_evaluation``: called with one line per selection evaluation (epoch, step, loss, the
    selection score and the best so far, and the run's ETA from its measured step times).
    """
    started = time.perf_counter()
    setup = setup_run(run, device, micro_batch_size)
    state = resume_state(setup, checkpoint_dir)
    log.info(
        "%s (key %s): %d train / %d selection examples, %d steps, micro-batch %d, device %s",
        run.label,
        run.key,
        setup.sizes["train"],
        setup.sizes["selection"],
        setup.total_steps,
        setup.micro,
        setup.device,
    )
    train_loop(run, setup, state, checkpoint_dir, progress, on_evaluation)
    metrics, chance, final_eval_seconds = final_evaluation(run, setup, state, delta_path, progress)
    return RunResult(
        metrics=metrics,
        best=state.best,
        curve=state.curve,
        params=setup.params,
        sizes=setup.sizes,
        timing={
            "train_s": state.train_seconds,
            "data_wait_s": state.data_wait_s,
            "selection_eval_s": state.eval_seconds,
            "final_eval_s": final_eval_seconds,
            # sessions before a resume trained and evaluated too: total_s >= train_s
            "total_s": time.perf_counter() - started + state.trained_before + state.eval_before,
            "steps": state.step,
        },
        peak_memory_bytes=peak_memory_bytes(setup.device),
        device=device_name(setup.device),
        max_length=setup.max_length,
        extra={
            **setup.extra,
            "micro_batch_size": setup.micro,
            "grad_accum_steps": math.ceil(setup.cfg.batch_size / setup.micro),
            "resumed_from_epoch": state.resumed_from_epoch,
            "chance": chance,
        },
    )


def setup_run(run: RunSpec, device: str | None, micro_batch_size: int | None) -> RunSetup:
    """Data (tokenized once per data, tokenizer and length; the selection split carved from
    train), the seeded backbone with the method attached, AdamW and its schedule."""
    import torch

    from bench.backbones import load_backbone, load_tokenizer, resolve_backbone
    from bench.data import Collator, load_task, make_loader, tokenize_task
    from bench.execution import apply_execution_options, configure_device
    from bench.precision import autocast as precision_autocast
    from bench.precision import describe as describe_precision
    from bench.precision import resolve_precision
    from bench.protocols import make_splits
    from methods import build_method
    from tasks import get_task
    from tasks.input_formats import with_input_format

    device = pick_device(device)
    configure_device(device)
    spec = with_input_format(get_task(run.task), run.train.input_format)
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
    cfg = method.train_config(cfg)  # a method's warm-up / weight-decay overrides
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
    cfg = dataclasses.replace(cfg, precision=resolve_precision(cfg.precision, device, run.method))
    autocast = precision_autocast(cfg.precision, device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(torch.device(device))
    return RunSetup(
        spec=spec,
        cfg=cfg,
        device=device,
        method=method,
        model=model,
        collator=collator,
        eval_splits=eval_splits,
        train_loader=train_loader,
        optimizer=optimizer,
        scheduler=scheduler,
        trained_params=[p for g in groups for p in g["params"]],
        total_steps=total_steps,
        eval_every=cfg.eval_every or len(train_loader),
        micro=min(micro_batch_size or cfg.batch_size, cfg.batch_size),
        autocast=autocast,
        sizes={**vars(sizes), **{f"eval_{k}": len(v) for k, v in eval_splits.items()}},
        params=params.to_dict(),
        max_length=max_length,
        splits=splits,
        extra={
            "method_info": method_info,
            "precision": describe_precision(cfg.precision, device),
            "threads": torch.get_num_threads(),
            **({"execution": execution} if execution else {}),
        },
    )


def resume_state(setup: RunSetup, checkpoint_dir: Path | None) -> LoopState:
    """A fresh :class:`LoopState`, or the one of the last epoch checkpoint in ``checkpoint_dir``
    with the model, optimizer, schedule and random generators put back where they were."""
    import torch

    resumed = _load_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    if resumed is None:
        return LoopState()
    setup.method.restore_state(setup.model, resumed.trained)
    setup.optimizer.load_state_dict(resumed.optimizer)
    setup.scheduler.load_state_dict(resumed.scheduler)
    setup.train_loader.generator.set_state(resumed.data_rng)
    torch.set_rng_state(resumed.torch_rng)
    if resumed.cuda_rng:
        torch.cuda.set_rng_state_all(resumed.cuda_rng)
    log.info("resumed from the checkpoint of epoch %d (step %d)", resumed.epoch, resumed.step)
    return LoopState(
        step=resumed.step,
        first_epoch=resumed.epoch + 1,
        curve=resumed.curve,
        best=resumed.best,
        best_state=resumed.best_state,
        eval_seconds=resumed.eval_seconds,
        trained_before=resumed.train_seconds,
        eval_before=resumed.eval_seconds,
        resumed_from_epoch=resumed.epoch,
    )


def train_loop(
    run: RunSpec,
    setup: RunSetup,
    state: LoopState,
    checkpoint_dir: Path | None,
    progress: bool,
    on_evaluation: Callable[[str], None] | None = None,
) -> None:
    """Train from ``state.first_epoch`` to the last epoch, evaluating on the selection split
    every ``setup.eval_every`` steps (:func:`select_on_evaluation`) and writing an epoch
    checkpoint after every epoch but the last when ``checkpoint_dir`` is set. Updates ``state``
    in place; raises :class:`DivergedError` on a NaN/inf loss. ``on_evaluation`` gets one
    line per evaluation (:func:`evaluation_line`)."""
    import torch
    from tqdm.auto import tqdm

    from bench import faults

    cfg, model, kind = setup.cfg, setup.model, setup.spec.kind.value
    bar = tqdm(
        total=setup.total_steps,
        initial=state.step,
        desc=f"train {run.label}",
        disable=not progress or None,
    )
    waited = [0.0]  # seconds the training loop spent waiting for batches
    train_started = time.perf_counter()
    first_step, trained = state.step, state.trained_before

    def session_train_seconds() -> float:
        """Training seconds so far: earlier sessions plus this one's, selection evals off."""
        evals_now = state.eval_seconds - state.eval_before
        return state.trained_before + time.perf_counter() - train_started - evals_now

    for epoch in range(state.first_epoch, cfg.epochs + 1):
        setup.method.on_epoch_start(model, epoch)
        model.train()
        running, count = 0.0, 0
        for batch in _timed(setup.train_loader, waited):
            full = setup.micro == cfg.batch_size
            poison = faults.at_step(run, state.step + 1, full_micro_batch=full)
            loss_value = _accumulate(
                model, batch, kind, setup.micro, setup.device, setup.autocast, poison
            )
            if not math.isfinite(loss_value):
                raise DivergedError(f"loss became {loss_value} at step {state.step + 1}")
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(setup.trained_params, cfg.max_grad_norm)
            setup.optimizer.step()
            setup.scheduler.step()
            setup.optimizer.zero_grad(set_to_none=True)
            state.step += 1
            running, count = running + loss_value, count + 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}")
            if state.step % setup.eval_every == 0 or state.step == setup.total_steps:
                point = select_on_evaluation(setup, state, epoch, running / max(1, count), progress)
                if on_evaluation is not None:
                    steps_now = state.step - first_step
                    on_evaluation(
                        evaluation_line(
                            run, setup, state, point, session_train_seconds() - trained, steps_now
                        )
                    )
                running, count = 0.0, 0
                model.train()
        if checkpoint_dir is not None and epoch < cfg.epochs:
            _save_checkpoint(setup, state, checkpoint_dir, epoch, session_train_seconds())
        faults.at_epoch_end(run, epoch)
    bar.close()
    state.train_seconds = session_train_seconds()
    state.data_wait_s = waited[0]


def select_on_evaluation(
    setup: RunSetup, state: LoopState, epoch: int, train_loss: float, progress: bool
) -> dict[str, Any]:
    """Evaluate on the selection split, add the point to the curve and keep the trainable
    state when the primary metric is the best so far (NaN never wins). Returns the point."""
    spec = setup.spec
    tick = time.perf_counter()
    scores = evaluate(
        setup.model,
        setup.eval_splits["selection"],
        spec,
        setup.collator,
        setup.cfg,
        setup.device,
        progress,
    )
    state.eval_seconds += time.perf_counter() - tick
    point = {
        "step": state.step,
        "epoch": epoch,
        "train_loss": train_loss,
        "lr": setup.scheduler.get_last_lr()[0],
        "selection": scores,
    }
    state.curve.append(point)
    log.info(
        "epoch %d step %d/%d train_loss %.4f selection %s",
        epoch,
        state.step,
        setup.total_steps,
        point["train_loss"],
        ", ".join(f"{k}={v:.4f}" for k, v in sorted(scores.items())),
    )
    score = scores[spec.primary_metric]
    if math.isnan(score):
        score = -math.inf  # e.g. Pearson of constant predictions: never preferred
    if score > state.best["score"] or state.best_state is None:
        state.best = {
            "score": score,
            "step": state.step,
            "epoch": epoch,
            "metric": spec.primary_metric,
        }
        state.best_state = setup.method.trainable_state(setup.model)
    return point


def evaluation_line(
    run: RunSpec,
    setup: RunSetup,
    state: LoopState,
    point: dict[str, Any],
    train_seconds: float,
    steps: int,
) -> str:
    """``sst2/p_tuning_v2/seed13 epoch 1/3 step 250/750 loss 0.5123 accuracy 0.8125 (best
    0.8125) ETA 2m10s``: the ETA is this session's measured seconds per step times the steps
    left, plus its mean evaluation time times the evaluations left (and the final evaluation,
    counted as one more of each split's size)."""
    metric = setup.spec.primary_metric
    score = point["selection"].get(metric, math.nan)
    left = setup.total_steps - state.step
    per_step = train_seconds / max(1, steps)
    evals_done = sum(1 for p in state.curve if p["step"] > state.step - steps)
    per_eval = (state.eval_seconds - state.eval_before) / max(1, evals_done)
    evals_left = math.ceil(left / setup.eval_every)
    selection_size = max(1, len(setup.eval_splits["selection"]))
    final = sum(len(s) for s in setup.eval_splits.values()) / selection_size
    eta = per_step * left + per_eval * (evals_left + final)
    minutes, seconds = divmod(round(eta), 60)
    return (
        f"{run.label} epoch {point['epoch']}/{setup.cfg.epochs} step {state.step}/"
        f"{setup.total_steps} loss {point['train_loss']:.4f} {metric} {score:.4f} "
        f"(best {state.best['score']:.4f}) ETA {minutes}m{seconds:02d}s"
    )


def _save_checkpoint(
    setup: RunSetup, state: LoopState, directory: Path, epoch: int, train_seconds: float
) -> None:
    import torch

    from bench import checkpoint

    checkpoint.save(
        directory,
        checkpoint.TrainState(
            epoch=epoch,
            step=state.step,
            curve=state.curve,
            best=state.best,
            eval_seconds=state.eval_seconds,
            train_seconds=train_seconds,
            trained=setup.method.trainable_state(setup.model),
            best_state=state.best_state,
            optimizer=setup.optimizer.state_dict(),
            scheduler=setup.scheduler.state_dict(),
            data_rng=setup.train_loader.generator.get_state(),
            torch_rng=torch.get_rng_state(),
            cuda_rng=torch.cuda.get_rng_state_all() if setup.device.startswith("cuda") else [],
        ),
    )


def final_evaluation(
    run: RunSpec,
    setup: RunSetup,
    state: LoopState,
    delta_path: Path | None,
    progress: bool,
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, Any]], float]:
    """Put the selected (best) state back, save its delta when asked, and evaluate it on the
    selection split and every evaluation split: (metrics per split, chance levels per split
    (:mod:`bench.chance`), seconds taken)."""
    from bench.chance import split_levels
    from tasks import compute_metrics

    setup.method.restore_state(setup.model, state.best_state)
    if delta_path is not None:
        from bench.weights import save_delta

        save_delta(delta_path, setup.method, setup.model, run)
    metrics: dict[str, dict[str, float]] = {}
    chance: dict[str, dict[str, Any]] = {}
    tick = time.perf_counter()
    for name, split in setup.eval_splits.items():
        predictions, references, context = predict(
            setup.model, split, setup.spec, setup.collator, setup.cfg, setup.device, progress
        )
        metrics[name] = compute_metrics(setup.spec, predictions, references, context)
        chance[name] = split_levels(setup.spec.kind.value, predictions, references)
    metrics = setup.splits.with_aliases(metrics)  # splits the protocol evaluates once
    chance = setup.splits.with_aliases(chance)
    return metrics, chance, time.perf_counter() - tick


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
            logits = model_logits(model, inputs)
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
    if rows and rows[0] and isinstance(rows[0][0], list):  # multiple choice: [C][T] per row
        rows = [choice for row in rows for choice in row]
    sample = [token for row in rows for token in row if token not in special]
    return AttachData(
        keyword_ids=list(keywords),
        sample_ids=sample,
        vocab_ids=ordinary_vocab_ids(tokenizer),
        tokenizer=tokenizer,
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
    from tasks import compute_metrics

    predictions, references, context = predict(
        model, examples, spec, collator, cfg, device, progress
    )
    return compute_metrics(spec, predictions, references, context)


def predict(
    model: nn.Module,
    examples: list[dict[str, Any]],
    spec: TaskSpec,
    collator: Collator,
    cfg: Any,
    device: str,
    progress: bool = True,
) -> tuple[list[Any], list[Any], dict[str, list[Any]] | None]:
    """(predictions, references, context) of ``model`` on tokenized ``examples``, as
    :func:`tasks.compute_metrics` takes them: class indices, floats, or one list of tag names
    per sentence (words, not sub-tokens); ``context`` holds the fields grouped metrics need
    (None for other tasks)."""
    import torch
    from tqdm.auto import tqdm

    from bench.data import make_loader
    from bench.precision import autocast as precision_autocast
    from bench.precision import resolve_precision
    from tasks.metrics import context_fields

    kind = spec.kind.value
    # Longest first: batches hold examples of similar length, so little compute goes to padding
    # (metrics are order-free; padding changes logits only at float rounding level).
    examples = sorted(examples, key=lambda example: -len(example["input_ids"]))
    loader = make_loader(examples, collator, cfg.eval_batch_size, shuffle=False)
    autocast = precision_autocast(resolve_precision(cfg.precision, device, ""), device)
    left_padded = collator.tokenizer.padding_side == "left"
    predictions: list[Any] = []
    references: list[Any] = []
    scores: list[float] = []  # the last class's probability (grouped metrics rank rows by it)
    offset = 0
    was_training = model.training
    model.eval()
    with torch.no_grad(), autocast:
        for batch in tqdm(loader, desc="evaluate", leave=False, disable=not progress or None):
            labels = batch.pop("labels")
            batch.pop("index")
            logits = model_logits(model, {k: v.to(device) for k, v in batch.items()})
            logits = logits.float().cpu()
            if kind == "regression":
                predictions.extend(logits.squeeze(-1).tolist())
                references.extend(labels.tolist())
            elif kind in ("classification", "multiple_choice"):
                predictions.extend(logits.argmax(-1).tolist())
                references.extend(labels.tolist())
                scores.extend(logits.softmax(-1)[:, -1].tolist())
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
    context = {name: [example[name] for example in examples] for name in context_fields(spec)}
    if context:
        context["score"] = scores
    return predictions, references, context or None


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
