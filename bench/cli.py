"""Command line: ``python -m bench run|list``.

Only argparse and YAML are imported up front; torch, transformers and datasets load when a run
needs them, so ``--help`` and ``list`` answer at once. A ``UserError`` anywhere becomes one clear
message on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.errors import UserError

DEFAULT_BACKBONE = "roberta-base"
DEFAULT_OUTPUT = "results"


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
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
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
        default="3",
        help="a count (3: the first 3 default seeds) or a list (13,21,42; one seed: 42,)",
    )
    run.add_argument(
        "--backbone",
        type=_csv,
        default=[DEFAULT_BACKBONE],
        help="short name, Hub id or local model directory; comma-separated for "
        f"several (default: {DEFAULT_BACKBONE})",
    )
    run.add_argument(
        "--data-dir",
        help="local data: original GLUE layout (SST-2/train.tsv, ...) "
        "and conll2003/{train,valid,test}.txt (default: the Hub)",
    )
    run.add_argument(
        "--output",
        default=DEFAULT_OUTPUT,
        help=f"directory for run records (default: {DEFAULT_OUTPUT})",
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
        "--eval-every",
        type=_positive_int,
        help="evaluate on the selection split every N steps (default: per epoch)",
    )
    run.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    run.add_argument(
        "--save-delta",
        action="store_true",
        help="store each run's trained delta (safetensors, reparameterization "
        "merged) under OUTPUT/deltas/",
    )
    run.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")

    listing = commands.add_parser("list", help="list methods, tasks or suites")
    listing.add_argument("what", choices=["methods", "tasks", "suites", "backbones"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            return command_list(args.what)
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
                "comparison row (run when named)" if get_method(name).comparison else "default",
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


def command_run(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from bench import records
    from bench.runner import PlanRequest, build_plan, parse_seeds, preflight, run_serial, status_of
    from bench.suites import get_suite
    from methods import method_names

    suite = get_suite(args.suite)
    train = dict(suite.train)
    for option, key in [
        ("epochs", "epochs"),
        ("batch_size", "batch_size"),
        ("max_train_samples", "max_train_samples"),
        ("max_eval_samples", "max_eval_samples"),
        ("max_length", "max_length"),
        ("eval_every", "eval_every"),
    ]:
        if getattr(args, option) is not None:
            train[key] = getattr(args, option)
    if args.data_dir and not Path(args.data_dir).expanduser().is_dir():
        raise UserError(f"--data-dir {args.data_dir} is not a directory")
    if args.device and not args.dry_run:
        from bench.train import pick_device

        pick_device(args.device)
    request = PlanRequest(
        tasks=args.tasks or list(suite.tasks),
        methods=args.methods or list(suite.methods) or method_names(include_comparison=False),
        seeds=parse_seeds(args.seeds),
        backbones=args.backbone,
        data_dir=args.data_dir,
        train=train,
        method_overrides={**args.method_args, **({"lr": args.lr} if args.lr is not None else {})},
    )
    plan = build_plan(request)
    output = Path(args.output)
    statuses = [status_of(output, run) for run in plan]
    done = statuses.count(records.STATUS_OK)
    if args.dry_run:
        rows = [
            (i + 1, r.key, r.task, r.method, r.seed, r.backbone, s)
            for i, (r, s) in enumerate(zip(plan, statuses, strict=True))
        ]
        print(tabulate(rows, headers=["#", "key", "task", "method", "seed", "backbone", "status"]))
        print(
            f"\n{len(plan)} runs planned, {done} already done, {len(plan) - done} to run; "
            f"records go to {output}/runs/"
        )
        return 0

    print(
        f"{len(plan)} runs planned, {done} already done; records in {output}/runs/", file=sys.stderr
    )
    preflight([r for r, s in zip(plan, statuses, strict=True) if s != records.STATUS_OK])
    records.ensure_writable(output)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    results = run_serial(
        plan, output, device=args.device, progress=not args.no_progress, save_delta=args.save_delta
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
                record["status"],
                score or (record.get("error") or {}).get("message", "")[:80],
            )
        )
    print(tabulate(rows, headers=["task", "method", "seed", "status", "primary metric"]))
    failed = [r for r in results if r["status"] != records.STATUS_OK]
    return 1 if failed else 0
