"""``build_report``: run records in, the whole report folder out.

Layout of ``OUT``::

    README.md                          index: claim verdicts, tables, figures, failures
    claims.md                          every claim: rule, pairs, per-task comparisons
    tables/accuracy_<backbone>.{md,tex,csv}
    tables/params.{md,tex,csv}
    tables/published.{md,csv}          published numbers next to ours
    tables/paper.{md,tex,csv}          P-Tuning v2 paper layout (if a record is on its tasks)
    tables/claims.csv
    search.md, tables/search.csv       hyperparameter searches (when the results hold any)
    figures/search/<cell>.{png,pdf}    heatmap of each two-key grid
    figures/<backbone>/{score_vs_params,bars,seeds,curves}.{png,pdf}
    figures/prompts/<key>.{png,pdf}    written by `plot prompts`, linked when present

The same records (and claims and published files) give byte-identical files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from bench.report import (
    claims,
    collect,
    index,
    paper,
    params,
    plots,
    published,
    render,
    searches,
    tables,
    verdicts,
)


@dataclass(frozen=True)
class ReportSummary:
    """What a report wrote and found, for the command's closing lines."""

    index: Path
    files: tuple[Path, ...]
    records: int
    unreadable: int
    verdicts: tuple[tuple[str, str, str], ...]


def slug(name: str) -> str:
    """A file-name-safe form of a backbone name (``/models/bert`` → ``models-bert``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "backbone"


def _with(stem: Path, kind: str) -> Path:
    """``stem`` plus an extension (``with_suffix`` would eat a dot in a backbone name)."""
    return stem.with_name(f"{stem.name}.{kind}")


def build_report(
    results: Path,
    out: Path,
    claims_path: Path | None = None,
    published_dir: Path | None = None,
    figures: bool = True,
) -> ReportSummary:
    """Write the report of the records in ``results`` to ``out`` (see the module docstring).
    Inputs are checked before anything is written: bad claims or published files raise
    UserError and leave ``out`` untouched."""
    results, out = Path(results), Path(out)
    collection = collect.load_records(results)
    settings, specs = claims.load_claims(claims_path)
    references = published.load_published(published_dir) if published_dir is not None else []
    frame = collect.run_frame(collection.records)
    backbones = sorted(set(frame["backbone"]))

    written: list[Path] = []
    accuracy_links: dict[str, tuple[str, str]] = {}
    for backbone in backbones:
        table = tables.build_accuracy(frame, backbone)
        body = tables.to_markdown(table)
        stem = out / "tables" / f"accuracy_{slug(backbone)}"
        written += [
            render.write_text(_with(stem, "md"), f"# Accuracy on `{backbone}`\n\n{body}"),
            render.write_text(_with(stem, "tex"), tables.to_latex(table)),
            render.write_csv(_with(stem, "csv"), tables.to_frame(table)),
        ]
        accuracy_links[backbone] = (slug(backbone), body)

    search = searches.summarize(results)
    budgets = None if search.empty else lambda b, m: searches.budget_label(search, b, m)
    counts = params.build_params(frame, budgets)
    if not counts.empty:
        stem = out / "tables" / "params"
        written += [
            render.write_text(
                _with(stem, "md"), f"# Parameter counts\n\n{params.to_markdown(counts)}"
            ),
            render.write_text(_with(stem, "tex"), params.to_latex(counts)),
            render.write_csv(_with(stem, "csv"), params.to_frame(counts)),
        ]

    if not search.empty:
        written += [
            render.write_text(out / "search.md", searches.to_markdown(search)),
            render.write_csv(out / "tables" / "search.csv", searches.to_frame(search)),
        ]
        if figures:
            written += searches.heatmaps(search, out / "figures" / "search")

    outcomes = verdicts.evaluate(frame, specs, settings)
    written += [
        render.write_text(out / "claims.md", verdicts.to_markdown(outcomes, settings)),
        render.write_csv(out / "tables" / "claims.csv", verdicts.to_frame(outcomes)),
    ]

    if references:
        lines = published.compare(frame, references)
        written += [
            render.write_text(
                out / "tables" / "published.md",
                f"# Published numbers next to ours\n\n{published.to_markdown(lines)}",
            ),
            render.write_csv(out / "tables" / "published.csv", published.to_frame(lines)),
        ]

    paper_table = paper.has_paper_tasks(frame)
    if paper_table:
        table = paper.build_paper_table(frame, references)
        stem = out / "tables" / "paper"
        written += [
            render.write_text(
                _with(stem, "md"),
                f"# {paper.TITLE}\n\n{paper.to_markdown(table)}",
            ),
            render.write_text(_with(stem, "tex"), paper.to_latex(table)),
            render.write_csv(_with(stem, "csv"), paper.to_frame(table)),
        ]

    figure_links: dict[str, list[tuple[str, str]]] = {}
    for backbone in backbones if figures else []:
        folder = out / "figures" / slug(backbone)
        made = plots.backbone_figures(frame, collection.records, backbone, folder)
        written += made
        names = {p.stem for p in made}
        if names:
            figure_links[backbone] = [
                (f"figures/{slug(backbone)}/{name}", title)
                for name, title in plots.FIGURES
                if name in names
            ]

    prompt_pngs = sorted((out / "figures" / "prompts").glob("*.png"))
    links = index.Links(
        accuracy=accuracy_links,
        params=not counts.empty,
        published_files=tuple(dict.fromkeys(r.file for r in references)),
        paper_table=paper_table,
        figures=figure_links,
        prompt_figures=tuple(f"figures/prompts/{p.stem}" for p in prompt_pngs),
        search=not search.empty,
    )
    text = index.build_index(str(results), collection, frame, outcomes, links)
    readme = render.write_text(out / "README.md", text)
    written.append(readme)
    index.replace_stale(out, written)
    return ReportSummary(
        index=readme,
        files=tuple(written),
        records=len(collection.records),
        unreadable=len(collection.unreadable),
        verdicts=tuple((v.claim.id, v.backbone, v.verdict) for v in outcomes),
    )
