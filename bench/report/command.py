"""CLI glue: ``python -m bench report`` and ``python -m bench plot prompts RUN``.

``add_commands(subparsers)`` adds both commands to the CLI's argparse sub-parsers and
``dispatch(args)`` runs the one that was chosen (exit code 0; bad input raises ``UserError``,
which the CLI turns into one message and exit code 2). pandas, matplotlib, seaborn and torch are
imported only when a command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

from bench.errors import UserError

DEFAULT_RESULTS = "runs"  # the run command's default --output, never the shipped results
REPORT_SUBDIR = "report"  # the report goes next to its records unless --out says otherwise
PUBLISHED_HERE = Path("results") / "published"
COMMANDS = ("plot", "report")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``report`` and ``plot`` to ``subparsers`` (from ``parser.add_subparsers(dest=
    "command")``)."""
    report = subparsers.add_parser(
        "report",
        help="tables, claim verdicts, published numbers and plots from run records",
        description="Turn the run records in --results into accuracy and parameter tables "
        "(Markdown, LaTeX, CSV), a verdict on each claim of --claims, published numbers side by "
        "side with ours, and figures (PNG, PDF), indexed in OUT/README.md. The same records "
        "give byte-identical files.",
    )
    report.add_argument(
        "--results",
        default=DEFAULT_RESULTS,
        help=f"folder with runs/<key>.json records (default: {DEFAULT_RESULTS}, where `run` "
        "writes; the shipped sweeps are results/reference/cpu-small and cpu-mini)",
    )
    report.add_argument(
        "--out",
        help=f"folder for the report (default: RESULTS/{REPORT_SUBDIR}, next to the records)",
    )
    report.add_argument(
        "--claims",
        help="claims YAML file (default: the packaged bench/report/claims.yaml)",
    )
    report.add_argument(
        "--published",
        help="folder of published-number CSVs (default: results/published, here or in the "
        "peft-bench checkout)",
    )
    report.add_argument(
        "--no-figures", action="store_true", help="tables and claims only, no figures"
    )

    plot = subparsers.add_parser("plot", help="figures of a single run")
    targets = plot.add_subparsers(dest="plot_target", required=True, metavar="TARGET")
    prompts = targets.add_parser(
        "prompts",
        help="cosine-similarity heatmap of a trained run's prompt vectors",
        description="Heatmap of the cosine similarity between the prompt vectors of one run, "
        "read from its delta file (the run must have used --save-delta). Deep prompts are "
        "compared layer by layer (key and value together for kv prefixes): the mean over "
        "layers, the first and the last layer. Written to OUT/figures/prompts/<key>.{png,pdf}.",
    )
    prompts.add_argument("run", help="the run's key, or a unique prefix of it")
    prompts.add_argument(
        "--results",
        default=DEFAULT_RESULTS,
        help=f"folder with runs/ and deltas/ (default: {DEFAULT_RESULTS})",
    )
    prompts.add_argument("--out", help=f"report folder (default: RESULTS/{REPORT_SUBDIR})")


def dispatch(args: argparse.Namespace) -> int:
    """Run the command ``args.command`` names; the exit code."""
    if args.command == "report":
        return _report(args)
    if args.command == "plot":
        return _plot(args)
    raise UserError(f"unknown command '{args.command}'; valid: {', '.join(COMMANDS)}")


def _published_dir(option: str | None) -> Path | None:
    if option is not None:
        path = Path(option)
        if not path.is_dir():
            raise UserError(f"--published {option} is not a directory")
        return path
    if PUBLISHED_HERE.is_dir():
        return PUBLISHED_HERE
    from bench.report.published import default_dir

    return default_dir()


def report_dir(results: str, out: str | None) -> Path:
    """Where the report goes: ``out`` when given, else ``results/report``."""
    return Path(out) if out else Path(results) / REPORT_SUBDIR


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Hide the libraries' warnings while a report is made: scipy's "precision loss" of a t-test
    on identical seeds (the claim's verdict already says when seeds agree) and matplotlib's or
    seaborn's layout notes. The report itself lists what it could not use."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"scipy\.")
        warnings.filterwarnings("ignore", module=r"(matplotlib|seaborn)(\.|$)")
        yield


def make_report(results: Path) -> Path:
    """The report of ``results`` with the default claims and published numbers, into
    ``results/report``; the path of its index (``run --report`` calls this)."""
    from bench.report.build import build_report

    with quiet_libraries():
        summary = build_report(
            results, report_dir(str(results), None), published_dir=_published_dir(None)
        )
    return Path(summary.index)


def _report(args: argparse.Namespace) -> int:
    from bench.report.build import build_report

    claims = Path(args.claims) if args.claims else None
    if claims is not None and not claims.is_file():
        raise UserError(f"--claims {args.claims} is not a file")
    with quiet_libraries():
        summary = build_report(
            Path(args.results),
            report_dir(args.results, args.out),
            claims_path=claims,
            published_dir=_published_dir(args.published),
            figures=not args.no_figures,
        )
    print(
        f"wrote {summary.index} and {len(summary.files) - 1} other file(s) "
        f"from {summary.records} record(s)"
    )
    if summary.unreadable:
        print(f"{summary.unreadable} record file(s) could not be read; see {summary.index}")
    for claim, backbone, verdict in summary.verdicts:
        print(f"claim {claim} on {backbone}: {verdict}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    if args.plot_target != "prompts":
        raise UserError(f"unknown plot '{args.plot_target}'; valid: prompts")
    from bench.report.plots import prompt_heatmap

    for path in prompt_heatmap(Path(args.results), args.run, report_dir(args.results, args.out)):
        print(f"wrote {path}", file=sys.stdout)
    return 0
