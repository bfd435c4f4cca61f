"""``python -m bench gpu-check``: the first measurements on a CUDA GPU, in one command.

Within a time budget (default 8 minutes) on one GPU it

1. measures every method on roberta-base and roberta-large, eager and under ``torch.compile``:
   step time, training tokens/s, peak memory (CUDA max allocated) and the model FLOPs
   utilization against the device's dense bf16 peak (:data:`bench.perf.BF16_PEAK`), with
   :func:`bench.perf.measure_model` on synthetic batches. Speed does not depend on the weights'
   values, so the backbones are **random-initialised from their config values**: a
   ``config.json`` under ``--backbone-dir/<name>/`` when there is one, else the published
   configs in :data:`ROBERTA_CONFIGS` (nothing is downloaded);
2. runs P-Tuning v2 on RTE for 2 epochs in the ``paper-ptv2`` suite's setting as a smoke test of
   the real path (tokenizer, data, training, evaluation, record). It needs the pretrained
   roberta-large (``--backbone-dir/roberta-large`` with weights and tokenizer, or the Hub) and
   RTE (``--data-dir`` in the GLUE layout, or the Hub); what is missing is reported, not fatal;
3. writes ``gpu-check.json`` and ``gpu-check.md`` under ``--out``.

Eager measurements come first, then the smoke run, then the compiled measurements while the
budget allows (each one is skipped, and says so, when its estimate no longer fits). Without
CUDA the command exits 2 with one line.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UserError

#: The measured backbones: Hub id and config values (``FacebookAI/roberta-base`` and
#: ``FacebookAI/roberta-large`` config.json on the Hub), used when no local config is given.
ROBERTA_CONFIGS: dict[str, dict[str, Any]] = {
    name: {
        "model_type": "roberta",
        "vocab_size": 50265,
        "max_position_embeddings": 514,
        "type_vocab_size": 1,
        "layer_norm_eps": 1e-5,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        **sizes,
    }
    for name, sizes in {
        "roberta-base": {
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
        },
        "roberta-large": {
            "hidden_size": 1024,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "intermediate_size": 4096,
        },
    }.items()
}
#: Token ids the synthetic batches draw from (ordinary BPE tokens of RoBERTa's vocabulary).
SYNTHETIC_VOCAB = range(1000, 6000)
#: Seconds assumed for a compilation before one was measured.
FIRST_COMPILE_ESTIMATE_S = 60.0
#: Seconds kept back for the smoke run when planning (2 RTE epochs of roberta-large).
SMOKE_ESTIMATE_S = 150.0


@dataclass(frozen=True)
class GpuCheckConfig:
    """What ``gpu-check`` measures and where it writes."""

    out: Path = field(metadata={"help": "Directory of gpu-check.json / .md and the smoke run."})
    backbone_dir: Path | None = field(
        default=None, metadata={"help": "Holds roberta-base/ and roberta-large/ (config, ...)."}
    )
    data_dir: Path | None = field(default=None, metadata={"help": "GLUE layout with RTE/."})
    budget_s: float = field(default=480.0, metadata={"help": "Total seconds allowed."})
    backbones: tuple[str, ...] = field(default=tuple(ROBERTA_CONFIGS))
    methods: tuple[str, ...] = field(
        default=(), metadata={"help": "Methods measured (default: every non-comparison one)."}
    )
    seq_len: int = field(default=128, metadata={"help": "Tokens per synthetic example."})
    batch_size: int = field(default=32, metadata={"help": "Examples per training step."})
    steps: int = field(default=10, metadata={"help": "Measured steps per measurement."})
    warmup: int = field(default=3, metadata={"help": "Unmeasured steps first."})
    smoke: bool = field(default=True, metadata={"help": "Run the RTE P-Tuning v2 smoke run."})

    def __post_init__(self) -> None:
        unknown = sorted(set(self.backbones) - set(ROBERTA_CONFIGS))
        if unknown:
            raise UserError(f"backbones {unknown} unknown; valid: {sorted(ROBERTA_CONFIGS)}")
        if not (math.isfinite(self.budget_s) and self.budget_s > 0):
            raise UserError(f"--budget-min must be > 0, got {self.budget_s / 60:g}")
        for name in ("backbone_dir", "data_dir"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_dir():
                raise UserError(f"--{name.replace('_', '-')} {path} is not a directory")


def peak_bf16_flops(device_name: str, table: Mapping[str, float]) -> float | None:
    """The dense bf16 peak of ``device_name`` from ``table`` (name fragment → FLOP/s); the
    longest matching fragment wins (``H100 NVL`` before ``H100``); None when none matches."""
    matches = [fragment for fragment in table if fragment in device_name]
    return table[max(matches, key=len)] if matches else None


def backbone_config(name: str, backbone_dir: Path | None) -> tuple[dict[str, Any], str]:
    """The config values of backbone ``name`` and where they come from."""
    if backbone_dir is not None:
        path = Path(backbone_dir) / name / "config.json"
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8")), str(path)
    return dict(ROBERTA_CONFIGS[name]), f"built-in values of {name}'s Hub config.json"


def random_backbone(values: dict[str, Any], spec: Any) -> Any:
    """A randomly initialised sequence-classification model built from config ``values``."""
    import transformers
    from transformers import AutoConfig, AutoModelForSequenceClassification

    transformers.logging.set_verbosity_error()
    values = {k: v for k, v in values.items() if k not in ("architectures", "transformers_version")}
    config = AutoConfig.for_model(**values, num_labels=len(spec.labels))
    model = AutoModelForSequenceClassification.from_config(config)
    model.config.use_cache = False
    # As if the encoder came from a checkpoint: methods keep it frozen and train only what a
    # loaded checkpoint would lack (the classifier, outside the base model), so the speed is
    # that of the real setting.
    model.peft_bench_new_parameters = frozenset()
    return model


@dataclass
class Budget:
    """Seconds left of the check, against a clock (injectable for tests)."""

    total_s: float
    clock: Callable[[], float] = time.monotonic
    started: float = field(default=-1.0)

    def __post_init__(self) -> None:
        if self.started < 0:
            self.started = self.clock()

    def left(self) -> float:
        return self.total_s - (self.clock() - self.started)


def compile_estimate(eager_s: float, compile_s_seen: list[float]) -> float:
    """Seconds a compiled measurement is expected to take: the eager measurement's time plus
    the longest compilation seen so far (or :data:`FIRST_COMPILE_ESTIMATE_S`)."""
    return eager_s + (max(compile_s_seen) if compile_s_seen else FIRST_COMPILE_ESTIMATE_S)


def measure_one(
    config: GpuCheckConfig, backbone: str, method_name: str, compile: bool, device: str
) -> dict[str, Any]:
    """One measurement (a fresh random model) on ``device``; errors become an ``error`` field."""
    import torch

    from bench.perf import PerfConfig, build_perf_method, measure_model
    from methods import AttachData
    from tasks import get_task

    perf = PerfConfig(
        backbone=backbone,
        methods=(method_name,),
        task="rte",
        seq_len=config.seq_len,
        batch_size=config.batch_size,
        eval_batch_size=2 * config.batch_size,
        steps=config.steps,
        warmup=config.warmup,
        device=device,
        compile=compile,
        precision=("auto",),
    )
    started = time.monotonic()
    try:
        values, _ = backbone_config(backbone, config.backbone_dir)
        torch.manual_seed(0)
        method = build_perf_method(perf, method_name)
        spec = get_task("rte")
        vocab = list(SYNTHETIC_VOCAB)
        model = method.attach(random_backbone(values, spec), spec, AttachData(vocab_ids=vocab))
        result = measure_model(perf, method_name, method, model.to(device), vocab, device)
    except Exception as error:  # one failing measurement must not end the check
        result = {"method": method_name, "error": f"{type(error).__name__}: {error}"}
    finally:
        if compile:
            torch._dynamo.reset()
        torch.cuda.empty_cache()
    result["backbone_params"] = result.pop("backbone", None)  # measure_model's count
    result.update(backbone=backbone, compiled=compile, seconds=time.monotonic() - started)
    for key in ("train_step_times_s", "eval_batch_times_s", "train_step_cpu_times_s"):
        result.pop(key, None)  # the summaries stay; the raw lists only bloat the summary
    return result


def smoke_run(config: GpuCheckConfig, device: str) -> dict[str, Any]:
    """P-Tuning v2 on RTE, 2 epochs, paper-ptv2 settings, seed 11; the outcome in brief."""
    from bench.runner import PlanRequest, build_plan
    from bench.suites import get_suite
    from bench.worker import WorkerOptions, run_one

    local = config.backbone_dir and Path(config.backbone_dir) / "roberta-large"
    backbone = str(local) if local and (local / "config.json").is_file() else "roberta-large"
    started = time.monotonic()
    out: dict[str, Any] = {"backbone": backbone, "task": "rte", "method": "p_tuning_v2"}
    try:
        (run,) = build_plan(
            PlanRequest(
                tasks=["rte"],
                methods=["p_tuning_v2"],
                seeds=[11],
                backbones=[backbone],
                data_dir=str(config.data_dir) if config.data_dir else None,
                train={"epochs": 2},
                suite=get_suite("paper-ptv2"),
                device=device,
            )
        )
        record = run_one(run, WorkerOptions(output=str(Path(config.out) / "smoke"), device=device))
        out.update(
            status=record["status"],
            key=record["key"],
            primary=record.get("primary"),
            steps=(record.get("timing") or {}).get("steps"),
            train_s=(record.get("timing") or {}).get("train_s"),
            peak_memory_bytes=record.get("peak_memory_bytes"),
            error=(record.get("error") or {}).get("message"),
        )
    except Exception as error:  # missing weights or data offline: reported, not fatal
        out.update(status="not run", error=f"{type(error).__name__}: {error}")
    out["seconds"] = time.monotonic() - started
    return out


def plan_and_measure(
    config: GpuCheckConfig,
    methods: list[str],
    measure: Callable[[str, str, bool], dict[str, Any]],
    smoke: Callable[[], dict[str, Any]],
    budget: Budget,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Eager measurements, the smoke run, then compiled ones while the budget allows.
    ``measure(backbone, method, compiled)`` and ``smoke()`` do the work (fakes in tests)."""
    results: list[dict[str, Any]] = []
    eager_s: dict[tuple[str, str], float] = {}
    reserve = SMOKE_ESTIMATE_S if config.smoke else 0.0
    for backbone in config.backbones:
        for method in methods:
            if budget.left() < reserve:
                results.append(_skipped(backbone, method, False, "time budget spent"))
                continue
            result = measure(backbone, method, False)
            eager_s[backbone, method] = result["seconds"]
            results.append(result)
    outcome = smoke() if config.smoke else None
    compile_seen: list[float] = []
    for backbone in config.backbones:
        for method in methods:
            if (backbone, method) not in eager_s:
                results.append(_skipped(backbone, method, True, "no eager measurement"))
                continue
            needed = compile_estimate(eager_s[backbone, method], compile_seen)
            if needed > budget.left():
                reason = f"time budget: needs about {needed:.0f} s, {budget.left():.0f} s left"
                results.append(_skipped(backbone, method, True, reason))
                continue
            result = measure(backbone, method, True)
            compile_seen.append(max(0.0, result["seconds"] - eager_s[backbone, method]))
            results.append(result)
    return results, outcome


def _skipped(backbone: str, method: str, compiled: bool, reason: str) -> dict[str, Any]:
    return {"backbone": backbone, "method": method, "compiled": compiled, "skipped": reason}


def summarize_check(
    results: list[dict[str, Any]],
    smoke: dict[str, Any] | None,
    device_name: str,
    table: Mapping[str, float],
    sources: dict[str, str],
) -> dict[str, Any]:
    """The JSON summary: every measurement with its MFU against the device's bf16 peak, and the
    compiled/eager step-time ratio of each (backbone, method)."""
    peak = peak_bf16_flops(device_name, table)
    rows = []
    eager = {
        (r["backbone"], r["method"]): r["train_step"]["median_s"]
        for r in results
        if not r["compiled"] and "train_step" in r
    }
    for r in results:
        row = dict(r)
        if "train_step" in r:
            per_token = (6 if r["method"] == "full_finetune" else 4) * r["backbone_params"]
            row["mfu"] = per_token * r["train_tokens_per_s"] / peak if peak else None
            base = eager.get((r["backbone"], r["method"]))
            if r["compiled"] and base:
                row["compiled_over_eager_step"] = r["train_step"]["median_s"] / base
        rows.append(row)
    return {
        "device": device_name,
        "bf16_peak_flops": peak,
        "weights": "random-initialised from config values (speed only; no checkpoint loaded)",
        "config_sources": sources,
        "measurements": rows,
        "smoke": smoke,
    }


def render_markdown(summary: dict[str, Any]) -> str:
    """The summary as a Markdown page."""
    from tabulate import tabulate

    peak = summary["bf16_peak_flops"]
    lines = [
        f"# gpu-check on {summary['device']}",
        "",
        f"- Backbones: {summary['weights']}; configs: "
        + "; ".join(f"{k}: {v}" for k, v in summary["config_sources"].items()),
        "- bf16 peak for MFU: "
        + (f"{peak / 1e12:.0f} TFLOP/s" if peak else "device not in the table (MFU not given)"),
        "",
    ]
    rows = []
    for r in summary["measurements"]:
        mode = "compile" if r["compiled"] else "eager"
        if "train_step" not in r:
            reason = r.get("skipped") or r.get("error", "")
            rows.append((r["backbone"], r["method"], mode, "", "", "", "", "", reason[:80]))
            continue
        ratio = r.get("compiled_over_eager_step")
        rows.append(
            (
                r["backbone"],
                r["method"],
                mode,
                f"{r['train_step']['median_s'] * 1000:.1f}",
                f"{r['train_tokens_per_s']:.0f}",
                f"{r['peak_memory_bytes'] / 2**30:.2f}",
                "" if r.get("mfu") is None else f"{r['mfu']:.1%}",
                "" if ratio is None else f"{ratio:.2f}",
                r.get("precision", {}).get("used", ""),
            )
        )
    headers = ["backbone", "method", "mode", "step ms", "train tok/s", "peak GiB", "MFU",
               "compiled/eager step", "precision / note"]  # fmt: skip
    lines += [tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True), ""]
    smoke = summary["smoke"]
    if smoke is not None:
        lines += [
            "## Smoke run: P-Tuning v2 on RTE, paper-ptv2 setting, 2 epochs, seed 11",
            "",
            f"- backbone {smoke['backbone']}: status **{smoke['status']}** "
            f"in {smoke['seconds']:.0f} s"
            + (f", {smoke['steps']} steps" if smoke.get("steps") else "")
            + (f", dev accuracy {smoke['primary']}" if smoke.get("primary") else "")
            + (f"; {smoke['error']}" if smoke.get("error") else ""),
            "",
        ]
    return "\n".join(lines)


def run_gpu_check(config: GpuCheckConfig) -> int:
    """The command: exits 2 (UserError) without CUDA, else measures and writes the summary."""
    import torch

    if not torch.cuda.is_available():
        raise UserError(
            f"gpu-check needs a CUDA GPU; torch {torch.__version__} sees none on this machine"
        )
    from bench.perf import BF16_PEAK
    from methods import method_names

    budget = Budget(config.budget_s)
    device = "cuda"
    methods = list(config.methods or method_names(include_comparison=False))
    sources = {name: backbone_config(name, config.backbone_dir)[1] for name in config.backbones}
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    results, smoke = plan_and_measure(
        config,
        methods,
        lambda backbone, method, compiled: _progress(
            measure_one(config, backbone, method, compiled, device)
        ),
        lambda: smoke_run(config, device),
        budget,
    )
    summary = summarize_check(results, smoke, torch.cuda.get_device_name(), BF16_PEAK, sources)
    summary["check"] = {
        **{k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(config).items()},
        "seconds": config.budget_s - budget.left(),
        "torch": torch.__version__,
    }
    (out / "gpu-check.json").write_text(
        json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8"
    )
    markdown = render_markdown(summary)
    (out / "gpu-check.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    print(f"written to {out / 'gpu-check.json'} and {out / 'gpu-check.md'}")
    return 0


def _progress(result: dict[str, Any]) -> dict[str, Any]:
    mode = "compile" if result["compiled"] else "eager"
    state = (
        result.get("error") or f"{result.get('train_step', {}).get('median_s', 0) * 1000:.1f} ms"
    )
    print(f"{result['backbone']} {result['method']} {mode}: {state}", flush=True)
    return result
