"""``python -m bench perf``: step time, throughput and memory of each method, measured.

For one backbone, sequence length and batch size, each method (and with ``--compare peft`` the
peft implementation of the same method) is measured in its own fresh process, so that peak
memory belongs to that method alone:

- **step time**: forward + loss + backward + clipping + optimizer step, the training loop's own
  step (:func:`bench.train._accumulate`), timed one step at a time after warm-up (CUDA
  synchronized); median, interquartile range, min and max;
- **tokens/s** in training and in evaluation (forward only, no gradients, the evaluation batch);
- **peak memory**: CUDA max allocated over the measured steps; on CPU the peak resident set size
  sampled every millisecond during the steps, minus the resident size once the libraries, the
  model's code and the tokenizer are loaded and before any model tensor exists (so that code,
  which is the same for every method, is not counted). On CPU this is measured in a second
  process whose heap returns freed blocks to the OS (:data:`LIVE_MEMORY_ENV`), so that it
  follows live memory as CUDA's figure does; the timed process's peak (default heap, which
  keeps its high-water mark) is reported as well;
- **trainable and stored parameters**, and on CUDA the model FLOPs utilization against the
  device's dense bf16 peak;
- **precision** (``--precision fp32,bf16``): each method at each precision, interleaved, with
  the step-time ratio of every precision to the first; and the torch **threads** used.

Inputs are synthetic: random ordinary-vocabulary tokens at exactly ``seq_len`` (no padding) and
random labels, the same for every method. Results go to ``results/perf/`` as JSON.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UserError

#: Our method → peft's implementation of the same method (``--compare peft``).
PEFT_COUNTERPART = {
    "prompt_tuning": "peft_prompt_tuning",
    "p_tuning": "peft_p_tuning",
    "prefix_tuning": "peft_prefix_tuning",
}
#: Dense bf16 peak FLOP/s by device name fragment (vendor data sheets), for MFU.
BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}


@dataclass(frozen=True)
class PerfConfig:
    """What ``bench perf`` measures."""

    backbone: str = field(metadata={"help": "Short name, Hub id or local directory."})
    methods: tuple[str, ...] = field(metadata={"help": "Methods to measure."})
    task: str = field(default="sst2", metadata={"help": "Task whose head is attached."})
    seq_len: int = field(default=128, metadata={"help": "Tokens per example."})
    batch_size: int = field(default=16, metadata={"help": "Training examples per step."})
    eval_batch_size: int = field(default=64, metadata={"help": "Evaluation examples per batch."})
    steps: int = field(default=20, metadata={"help": "Measured steps per method."})
    warmup: int = field(default=3, metadata={"help": "Unmeasured steps first."})
    repeats: int = field(
        default=1, metadata={"help": "Fresh processes per method, interleaved across methods."}
    )
    device: str | None = field(default=None, metadata={"help": "cpu or cuda (default: cuda)."})
    compare_peft: bool = field(default=False, metadata={"help": "Also measure peft's rows."})
    activation_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute layers in backward (every method)."}
    )
    compile: bool = field(default=False, metadata={"help": "torch.compile every model."})
    method_args: dict[str, Any] = field(default_factory=dict)
    precision: tuple[str, ...] = field(
        default=("auto",),
        metadata={"help": "Precisions measured (auto, fp32, bf16); ratios are to the first."},
    )
    threads: int | None = field(
        default=None, metadata={"help": "torch threads in each measuring process (None: torch's)."}
    )

    def __post_init__(self) -> None:
        for name in ("seq_len", "batch_size", "eval_batch_size", "steps", "repeats"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be a positive integer")
        if self.warmup < 0:
            raise UserError("--warmup must be >= 0")
        if not self.methods:
            raise UserError("--methods: name at least one method")
        from bench.precision import PRECISIONS

        bad = [p for p in self.precision if p not in PRECISIONS]
        if bad or not self.precision or len(set(self.precision)) < len(self.precision):
            raise UserError(
                f"--precision {','.join(self.precision)}: give distinct values among "
                f"{', '.join(PRECISIONS)}"
            )
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise UserError(f"--threads must be a positive integer, got {self.threads!r}")


@contextmanager
def peak_rss_sampler(interval_s: float = 0.001) -> Iterator[Callable[[], int]]:
    """Sample this process's resident set size in a thread; yields a function returning the
    peak seen so far (bytes)."""
    peak = [current_rss()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], current_rss())
            stop.wait(interval_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield lambda: max(peak[0], current_rss())
    finally:
        stop.set()
        thread.join()


def current_rss() -> int:
    """Resident set size now, in bytes (Linux ``/proc``; elsewhere the peak so far)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            pages = int(handle.read().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def time_calls(
    call: Callable[[], None],
    repeats: int,
    sync: Callable[[], None],
    cpu_times: list[float] | None = None,
) -> list[float]:
    """Wall time of each of ``repeats`` calls (``sync`` before and after each, for CUDA).
    ``cpu_times``: also append the CPU time of each call (:func:`cpu_clock`) there."""
    out = []
    clock = cpu_clock()
    for _ in range(repeats):
        sync()
        start, cpu_start = time.perf_counter(), clock()
        call()
        sync()
        out.append(time.perf_counter() - start)
        if cpu_times is not None:
            cpu_times.append(clock() - cpu_start)
    return out


def cpu_clock() -> Callable[[], float]:
    """The CPU-time clock of a step: with one torch thread, the calling thread's own CPU time
    (what a step costs, whatever else the machine runs: on a shared machine wall time swings
    with the other load, CPU time much less); with several, the whole process's."""
    import torch

    return time.thread_time if torch.get_num_threads() == 1 else time.process_time


def summarize(times: list[float]) -> dict[str, float]:
    quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {
        "median_s": statistics.median(times),
        "iqr_s": quartiles[2] - quartiles[0],
        "min_s": min(times),
        "max_s": max(times),
    }


#: glibc keeps freed blocks below a threshold that grows up to 32 MiB, so a CPU process's RSS
#: stays at its heap's high-water mark, whatever is live. With this fixed threshold every
#: allocation of 64 KiB or more is its own mapping, returned to the OS when freed: peak RSS then
#: follows live memory, as CUDA's max allocated does (but each allocation costs page faults, so
#: steps are timed in a process without it).
LIVE_MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}
#: Steps after warm-up in the memory-only process.
MEMORY_STEPS = 3


def measure_method(
    config: PerfConfig, method_name: str, memory_only: bool = False
) -> dict[str, Any]:
    """Build, warm up and measure one method in this process (see the module docstring), at
    the first of ``config.precision``.
    ``memory_only``: just the peak memory over a few steps (for the live-memory process)."""
    import torch

    from bench.backbones import load_backbone, load_tokenizer, resolve_backbone
    from bench.execution import configure_device
    from bench.train import ordinary_vocab_ids, pick_device
    from methods import AttachData
    from tasks import get_task

    device = pick_device(config.device)
    configure_device(device)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    spec = get_task(config.task)
    ref = resolve_backbone(config.backbone)
    tokenizer = load_tokenizer(ref, spec)
    _import_model_code(ref, spec, config.compile)
    baseline_rss = current_rss()  # libraries and tokenizer loaded; no tensor of the model yet
    torch.manual_seed(0)
    method = build_perf_method(config, method_name)
    backbone = load_backbone(ref, spec, tokenizer.pad_token_id)
    vocab = ordinary_vocab_ids(tokenizer)
    model = method.attach(backbone, spec, AttachData(vocab_ids=vocab)).to(device)
    return measure_model(
        config, method_name, method, model, vocab, device, baseline_rss, memory_only
    )


def build_perf_method(config: PerfConfig, method_name: str) -> Any:
    """``method_name`` built with the ``config.method_args`` that belong to its config."""
    from methods import build_method, get_method

    allowed = {f for f in get_method(method_name).config_cls.__dataclass_fields__}
    overrides = {k: v for k, v in config.method_args.items() if k in allowed}
    return build_method(method_name, overrides)


def measure_model(
    config: PerfConfig,
    method_name: str,
    method: Any,
    model: Any,
    vocab: list[int],
    device: str,
    baseline_rss: int = 0,
    memory_only: bool = False,
) -> dict[str, Any]:
    """Measure ``model`` (``method`` attached, on ``device``) on synthetic batches of random
    ``vocab`` ids: the execution options, precision and sizes of ``config`` (first precision);
    ``baseline_rss``: the CPU resident size before the model existed."""
    import torch

    from bench.config import TrainConfig
    from bench.execution import apply_execution_options
    from bench.precision import autocast as precision_autocast
    from bench.precision import describe, resolve_precision
    from bench.train import _accumulate, model_logits, task_loss
    from tasks import get_task

    cuda = device.startswith("cuda")
    precision = resolve_precision(config.precision[0], device, method_name)
    spec = get_task(config.task)
    kind = spec.kind.value
    counts = method.parameter_counts(model)
    apply_execution_options(model, config.activation_checkpointing, config.compile)
    groups = method.param_groups(model, TrainConfig())
    optimizer = torch.optim.AdamW(groups, fused=cuda)
    params = [p for g in groups for p in g["params"]]
    autocast = precision_autocast(precision, device)
    generator = torch.Generator().manual_seed(0)

    def batch(size: int) -> dict[str, torch.Tensor]:
        pool = torch.tensor(vocab)
        # multiple choice: [B, C, T], one sequence per choice (bench.train.model_logits)
        shape = (size, len(spec.labels)) if kind == "multiple_choice" else (size,)
        ids = pool[torch.randint(len(pool), (*shape, config.seq_len), generator=generator)]
        out = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if kind == "token_classification":
            out["labels"] = torch.randint(
                len(spec.labels), (size, config.seq_len), generator=generator
            )
        elif kind == "regression":
            out["labels"] = torch.rand(size, generator=generator) * 5
        else:
            out["labels"] = torch.randint(len(spec.labels), (size,), generator=generator)
        return out

    train_batch = batch(config.batch_size)

    def step() -> None:
        _accumulate(model, dict(train_batch), kind, config.batch_size, device, autocast)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    model.train()
    with peak_rss_sampler() as rss_peak:
        time_calls(step, config.warmup, sync)
        if cuda:
            torch.cuda.reset_peak_memory_stats(torch.device(device))
        train_cpu: list[float] = []
        steps = MEMORY_STEPS if memory_only else config.steps
        train_times = time_calls(step, steps, sync, train_cpu)
        peak_cpu = rss_peak()
    peak = (
        int(torch.cuda.max_memory_allocated(torch.device(device)))
        if cuda
        else peak_cpu - baseline_rss
    )
    if memory_only:
        return {"method": method_name, "device": device, "peak_memory_bytes": peak}

    eval_batch = {k: v.to(device) for k, v in batch(config.eval_batch_size).items()}
    labels = eval_batch.pop("labels")
    model.eval()

    def forward() -> None:
        with torch.no_grad(), autocast:
            task_loss(kind, model_logits(model, eval_batch), labels)

    time_calls(forward, max(1, config.warmup), sync)
    eval_times = time_calls(forward, config.steps, sync)

    result: dict[str, Any] = {
        "method": method_name,
        "device": device,
        "train_step_times_s": train_times,
        "train_step_cpu_times_s": train_cpu,
        "eval_batch_times_s": eval_times,
        "peak_memory_bytes": peak,
        "memory_kind": "cuda_max_allocated" if cuda else "peak_rss_minus_baseline",
        "trainable": counts.trainable,
        "stored": counts.stored,
        "backbone": counts.backbone,
        "precision": describe(precision, device),
        "threads": torch.get_num_threads(),
    }
    if cuda:
        result["device_name"] = torch.cuda.get_device_name(torch.device(device))
    return with_statistics(config, result)


def with_statistics(config: PerfConfig, result: dict[str, Any]) -> dict[str, Any]:
    """``result`` plus the summaries, throughputs and MFU of its raw step times."""
    train = summarize(result["train_step_times_s"])
    evaluation = summarize(result["eval_batch_times_s"])
    train_tokens = config.batch_size * config.seq_len / train["median_s"]
    eval_tokens = config.eval_batch_size * config.seq_len / evaluation["median_s"]
    out = {
        **result,
        "train_step": train,
        **(
            {"train_step_cpu": summarize(result["train_step_cpu_times_s"])}
            if result.get("train_step_cpu_times_s")
            else {}
        ),
        "train_tokens_per_s": train_tokens,
        "eval_batch": evaluation,
        "eval_tokens_per_s": eval_tokens,
        "eval_over_train_throughput": eval_tokens / train_tokens,
    }
    if "device_name" in result:
        peak_flops = next((v for k, v in BF16_PEAK.items() if k in result["device_name"]), None)
        per_token = (6 if result["method"] == "full_finetune" else 4) * result["backbone"]
        out["mfu"] = per_token * train_tokens / peak_flops if peak_flops else None
    return out


def precision_ratios(
    results: dict[str, dict[str, Any]], labels: dict[str, tuple[str, str]]
) -> dict[str, dict[str, float]]:
    """Per measured row (``labels``: row → (method, precision)), its train-step and eval-batch
    median times over those of the same method at the first precision measured."""
    first: dict[str, str] = {}
    for row, (method, _) in labels.items():
        first.setdefault(method, row)
    out = {}
    for row, (method, precision) in labels.items():
        base, this = results.get(first[method], {}), results.get(row, {})
        if row == first[method] or "error" in base or "error" in this:
            continue
        out[row] = {
            "method": method,
            "precision": precision,
            "versus": labels[first[method]][1],
            "step_time": this["train_step"]["median_s"] / base["train_step"]["median_s"],
            "eval_time": this["eval_batch"]["median_s"] / base["eval_batch"]["median_s"],
        }
        if "train_step_cpu" in base and "train_step_cpu" in this:
            out[row]["step_cpu_time"] = (
                this["train_step_cpu"]["median_s"] / base["train_step_cpu"]["median_s"]
            )
    return out


def merge_repeats(config: PerfConfig, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from several measuring processes of the same method: step statistics over
    all their steps, the median of their peak memories, and each process's own median."""
    failed = [r for r in runs if "error" in r]
    if failed:
        return failed[0]
    merged = dict(runs[0])
    for key in ("train_step_times_s", "eval_batch_times_s", "train_step_cpu_times_s"):
        merged[key] = [t for r in runs for t in r.get(key, [])]
    for key in ("peak_memory_bytes", "peak_rss_default_heap_bytes"):
        if key in merged:
            merged[key] = int(statistics.median(r[key] for r in runs))
    merged["repeats"] = [
        {"train_median_s": r["train_step"]["median_s"], "peak_memory_bytes": r["peak_memory_bytes"]}
        for r in runs
    ]
    return with_statistics(config, merged)


def _import_model_code(ref: Any, spec: Any, compile: bool) -> None:
    """Import every module a model build will import (the architecture's modeling code, peft,
    inductor), so that the CPU baseline holds the code and peak RSS measures tensors only:
    importing BERT's modeling module alone adds about 140 MiB of resident memory."""
    import importlib

    from transformers import AutoConfig
    from transformers.models.auto import modeling_auto

    from bench.backbones import trust_remote_code

    config = AutoConfig.from_pretrained(ref.location, trust_remote_code=trust_remote_code())
    token = spec.kind.value == "token_classification"
    mapping = (
        modeling_auto.MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING
        if token
        else modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING
    )
    with contextlib.suppress(KeyError):  # remote-code models: imported when they are built
        mapping[type(config)]
    importlib.import_module("peft")
    if compile:
        importlib.import_module("torch._inductor.compile_fx")


def _child(config: PerfConfig, method: str, memory_only: bool, queue: Any) -> None:
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        queue.put(measure_method(config, method, memory_only))
    except Exception as error:  # report, don't crash the comparison (peft may refuse a model)
        queue.put({"method": method, "error": f"{type(error).__name__}: {error}"})


def measure_in_fresh_process(
    config: PerfConfig,
    method: str,
    memory_only: bool = False,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """:func:`measure_method` in a spawned process (its own memory high-water mark), started
    with ``env`` added to the environment."""
    import os
    from unittest import mock

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(config, method, memory_only, queue))
    with mock.patch.dict(os.environ, env or {}):  # the child inherits it at start
        process.start()
    try:
        while True:
            try:
                return queue.get(timeout=1.0)
            except Exception:  # queue.Empty: still measuring, unless the child died
                if not process.is_alive():
                    return {
                        "method": method,
                        "error": f"measuring process died ({process.exitcode})",
                    }
    finally:
        process.join()


def measure_with_live_memory(config: PerfConfig, method: str) -> dict[str, Any]:
    """Time ``method`` in one fresh process; on CPU, take its peak memory from a second one
    with :data:`LIVE_MEMORY_ENV` (the default heap's peak RSS is kept as well)."""
    result = measure_in_fresh_process(config, method)
    if "error" in result or result["device"] != "cpu":
        return result
    live = measure_in_fresh_process(config, method, memory_only=True, env=LIVE_MEMORY_ENV)
    if "error" in live:
        return live
    return {
        **result,
        "peak_memory_bytes": live["peak_memory_bytes"],
        "memory_kind": "cpu_peak_rss_live",
        "peak_rss_default_heap_bytes": result["peak_memory_bytes"],
    }


def run_perf(config: PerfConfig, out_dir: Path | None, tablefmt: str = "simple") -> dict[str, Any]:
    """Measure every method (and its peft counterpart), print the table, write the JSON."""
    from bench.records import environment
    from methods import get_method

    names = list(dict.fromkeys(config.methods))
    for name in names:
        get_method(name)  # unknown names fail before anything is measured
    if config.compare_peft:
        names += [PEFT_COUNTERPART[n] for n in names if n in PEFT_COUNTERPART]
    # One row per method and precision; a single precision keeps the method's name as the row.
    several = len(config.precision) > 1
    labels = {
        (f"{name} {precision}" if several else name): (name, precision)
        for name in names
        for precision in config.precision
    }
    # Repeats interleave the rows (A B C A B C ...), so that a slow drift of the machine
    # (thermal, other load) does not fall on one method or precision only.
    measured: dict[str, list[dict[str, Any]]] = {row: [] for row in labels}
    for _ in range(config.repeats):
        for row, (name, precision) in labels.items():
            single = dataclasses.replace(config, precision=(precision,))
            measured[row].append(measure_with_live_memory(single, name))
    results = {row: merge_repeats(config, runs) for row, runs in measured.items()}
    report = {
        "config": asdict(config),
        "results": results,
        "ratios_vs_peft": _ratios(results),
        "environment": environment(),
    }
    if several:
        report["ratios_vs_precision"] = precision_ratios(results, labels)
    print(format_table(report, tablefmt))
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        device = next((r["device"] for r in results.values() if "device" in r), "cpu")
        name = Path(config.backbone).name
        stem = f"{name}-{device.split(':')[0]}-L{config.seq_len}-B{config.batch_size}"
        stem += "-ckpt" if config.activation_checkpointing else ""
        stem += "-compile" if config.compile else ""
        stem += "".join(f"-{p}" for p in config.precision if config.precision != ("auto",))
        stem += f"-T{config.threads}" if config.threads else ""
        path = out_dir / f"{stem}.json"
        path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        print(f"\nwritten to {path}")
    return report


def _ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    out = {}
    for ours, theirs in PEFT_COUNTERPART.items():
        a, b = results.get(ours), results.get(theirs)
        if a and b and "error" not in a and "error" not in b:
            out[ours] = {
                "step_time": a["train_step"]["median_s"] / b["train_step"]["median_s"],
                "peak_memory": a["peak_memory_bytes"] / max(1, b["peak_memory_bytes"]),
            }
    return out


def format_table(report: dict[str, Any], tablefmt: str = "simple") -> str:
    """The report as a table (``tablefmt``: any of tabulate's formats; ``github`` for
    Markdown)."""
    from tabulate import tabulate

    results = report["results"]
    full = results.get("full_finetune", {}).get("peak_memory_bytes")
    rows = []
    for name, r in results.items():
        if "error" in r:
            rows.append((name, "", "failed: " + r["error"][:70], *[""] * 8))
            continue
        step = r["train_step"]
        ratio = report["ratios_vs_peft"].get(name, {}).get("step_time")
        versus = report.get("ratios_vs_precision", {}).get(name)
        used = r.get("precision", {}).get("used", "")
        rows.append(
            (
                name,
                used + _versus(versus),
                f"{step['median_s'] * 1000:.1f} ± {step['iqr_s'] * 1000:.1f}",
                f"{r['train_step_cpu']['median_s'] * 1000:.1f}" if "train_step_cpu" in r else "",
                f"{r['train_tokens_per_s']:.0f}",
                f"{r['eval_tokens_per_s']:.0f} ({r['eval_over_train_throughput']:.1f}x)",
                f"{r['peak_memory_bytes'] / 2**20:.0f}"
                + (f" ({r['peak_memory_bytes'] / full:.2f}x FT)" if full else ""),
                f"{r['peak_rss_default_heap_bytes'] / 2**20:.0f}"
                if "peak_rss_default_heap_bytes" in r
                else "",
                f"{r['trainable']:,}",
                f"{r['stored']:,}",
                "" if ratio is None else f"{ratio:.2f}",
            )
        )
    headers = ["method", "precision (step vs)", "step ms (median ± IQR)", "step CPU ms",
               "train tok/s",
               "eval tok/s (x train)", "peak MiB", "default-heap RSS MiB", "trainable", "stored",
               "ours/peft step"]  # fmt: skip
    config = report["config"]
    repeats = config.get("repeats", 1)
    title = (
        f"{config['backbone']} · {config['task']} head · seq {config['seq_len']} · batch "
        f"{config['batch_size']} (eval {config['eval_batch_size']}) · {config['steps']} steps "
        f"after {config['warmup']} warm-up"
        + (f" · {repeats} interleaved processes each" if repeats > 1 else "")
        + (f" · {config['threads']} torch threads" if config.get("threads") else "")
        + "".join(
            f" · {label}"
            for key, label in (
                ("activation_checkpointing", "activation checkpointing"),
                ("compile", "torch.compile"),
            )
            if config.get(key)
        )
    )
    return title + "\n" + tabulate(rows, headers=headers, tablefmt=tablefmt)


def _versus(ratios: dict[str, Any] | None) -> str:
    """`` (0.50x fp32, CPU 0.45x)``: a row's step-time ratios to its first precision."""
    if not ratios:
        return ""
    cpu = ratios.get("step_cpu_time")
    return f" ({ratios['step_time']:.2f}x {ratios['versus']}" + (
        f", CPU {cpu:.2f}x)" if cpu is not None else ")"
    )


def show_report(path: Path, tablefmt: str) -> str:
    """The table of a JSON report written earlier."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        return format_table(report, tablefmt)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"--show {path}: not a readable perf report ({error})") from None
