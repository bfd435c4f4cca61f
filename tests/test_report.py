"""Reporter: exact table text from constructed records, every claim verdict on constructed
cases, published numbers side by side, figures, the index over failures and missing seeds,
byte-identical reruns, bad claims files, and a report plus prompt heatmap over real runs."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.errors import UserError
from bench.report import claims, collect, index, plots, published, stats, tables, verdicts
from bench.report.build import build_report, slug
from bench.report.command import add_commands, dispatch

REPO = Path(__file__).resolve().parents[1]
BACKBONE_PARAMS = 22_713_216
METHOD_PARAMS = {"full_finetune": BACKBONE_PARAMS + 770, "p_tuning_v2": 92_930}
SELECTION = "carved from train (val_fraction 0.1, seeded by the run seed)"
SPLITS = {"conll2003": ("test", "f1"), "cola": ("validation", "matthews_correlation")}


def record(
    task: str,
    method: str,
    seed: int,
    score: float | None = None,
    status: str = "ok",
    backbone: str = "minilm",
    trainable: int | None = None,
    method_config: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A run record shaped like ``bench.runner.execute_run``'s, with ``score`` (a fraction) as
    the primary metric on every reported split."""
    split, metric = SPLITS.get(task, ("validation", "accuracy"))
    report_splits = ["test"] if split == "test" else ["validation"]
    method_config = {"lr": 5e-5 if method == "full_finetune" else 1e-2, **(method_config or {})}
    train = {
        "epochs": 3,
        "batch_size": 16,
        "max_train_samples": 1000,
        "max_eval_samples": None,
        "val_fraction": 0.1,
        **(train or {}),
    }
    key = f"{backbone}-{task}-{method}-{seed}-" + "-".join(
        f"{k}{v}" for k, v in sorted(method_config.items())
    )
    out: dict[str, Any] = {
        "schema": 1,
        "key": key,
        "task": task,
        "method": method,
        "seed": seed,
        "backbone": backbone,
        "status": status,
        "config": {
            "task": task,
            "method": method,
            "method_config": method_config,
            "backbone": backbone,
            "backbone_identity": f"hub:{backbone}",
            "data_dir": None,
            "data_identity": f"local:{task}",
            "seed": seed,
            "train": train,
        },
        "protocol": {
            "selection_split": SELECTION,
            "report_splits": report_splits,
            "primary_metric": metric,
        },
        "started_at": "2026-01-01T00:00:00+00:00",
        "finished_at": "2026-01-01T00:01:00+00:00",
        "wall_time_s": 60.0,
    }
    if status != "ok":
        out["error"] = {"type": "RuntimeError", "message": f"{status} here", "traceback": "..."}
        return out
    trainable = trainable or METHOD_PARAMS.get(method, 8_450)
    levels = {"examples": 100, "majority_rate": None if task == "conll2003" else 0.5}
    levels |= {"constant_predictions": False, "distinct_predictions": 2}
    out.update(
        metrics={"selection": {metric: score}, **{s: {metric: score} for s in report_splits}},
        chance={s: levels for s in ("selection", *report_splits)},
        primary={s: score for s in report_splits},
        best={"epoch": 3, "step": 30, "metric": metric, "score": score},
        curve=[
            {
                "step": 10 * e,
                "epoch": e,
                "train_loss": 1 / e,
                "lr": 0.0,
                "selection": {metric: score - 0.01 * (3 - e)},
            }
            for e in (1, 2, 3)
        ],
        params={
            "trainable": trainable,
            "stored": trainable,
            "head": 770,
            "backbone": BACKBONE_PARAMS,
            "formula": "2*L*m*d_kv + head",
            "formula_value": trainable,
            "matches_formula": True,
            "trainable_pct_of_backbone": 100 * trainable / BACKBONE_PARAMS,
        },
        sizes={"train": 900, "selection": 100},
        timing={"train_s": 1.0},
        peak_memory_bytes=1,
        device="cpu",
    )
    return out


def write_records(results: Path, records: list[dict[str, Any]]) -> Path:
    runs = results / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    for r in records:
        (runs / f"{r['key']}.json").write_text(json.dumps(r, indent=1), encoding="utf-8")
    return results


def table_records() -> list[dict[str, Any]]:
    """Three methods × three tasks with failures, a divergence, a timeout, missing seeds and a
    task one method never ran."""
    out = []
    for seed, ft_sst2, ft_rte, pt_sst2, pt_rte in [
        (13, 0.90, 0.70, 0.85, 0.60),
        (21, 0.91, 0.72, 0.86, 0.61),
        (42, 0.92, 0.74, 0.87, 0.62),
    ]:
        out += [
            record("sst2", "full_finetune", seed, ft_sst2),
            record("rte", "full_finetune", seed, ft_rte),
            record("sst2", "prompt_tuning", seed, pt_sst2),
            record("rte", "prompt_tuning", seed, pt_rte),
            record("rte", "p_tuning_v2", seed, status="diverged"),
        ]
    out += [
        record("conll2003", "full_finetune", 13, 0.80),
        record("conll2003", "full_finetune", 21, 0.82),
        record("conll2003", "full_finetune", 42, status="failed"),
        record("sst2", "p_tuning_v2", 13, 0.92),
        record("sst2", "p_tuning_v2", 21, 0.93),
        record("conll2003", "p_tuning_v2", 13, 0.85, trainable=95_241),
        record("conll2003", "p_tuning_v2", 21, status="timeout"),
    ]
    return out


EXPECTED_TABLE = """\
| method                     | rte (acc)             | sst2 (acc)                      | conll2003 (f1)                       | Average   |
|----------------------------|-----------------------|---------------------------------|--------------------------------------|-----------|
| full_finetune (100%)       | **72.0 ± 2.0 (3)**    | <u>91.0 ± 1.0 (3)</u>           | <u>81.0 ± 1.4 (2/3, 1 failed)</u>    | **81.3**  |
| prompt_tuning (0.0372%)    | <u>61.0 ± 1.0 (3)</u> | 86.0 ± 1.0 (3)                  | —                                    | —         |
| p_tuning_v2 (0.409–0.419%) | diverged (3/3)        | **92.5 ± 0.7 (2/3, 1 missing)** | **85.0 (1/3, 1 timeout, 1 missing)** | —         |

- Cells: mean ± sample std (ddof=1) over seeds of the task's primary metric on its reported split, ×100, and the number of ok runs. (n/N, …): of the N seeds run for the task on this backbone (by any method), n are ok; the rest failed, diverged, timed out or never ran (missing). — : never run. Best per column in bold, second underlined, ranked on the printed mean. not learned: every ok run at the level of a constant prediction (accuracy at or below the majority-class rate of the split, MCC 0 or undefined, Pearson/Spearman undefined, F1 0); left out of the ranking and of claims.
- Average: unweighted mean of the task means, shown only when every task has an ok run. Method labels give trainable parameters as a share of the backbone's.
- Selection: carved from train (val_fraction 0.1, seeded by the run seed).
- Reported: rte validation (accuracy); sst2 validation (accuracy); conll2003 test (f1).
- Budget marker: not marked.
- Budget: training pool 1000; epochs 3; batch size 16; eval cap none; learning rate: full_finetune 5e-05, prompt_tuning 0.01, p_tuning_v2 0.01.
"""  # noqa: E501


# --- tables -------------------------------------------------------------------------------------


def test_accuracy_table_markdown_is_exact() -> None:
    frame = collect.run_frame(table_records())
    assert tables.to_markdown(tables.build_accuracy(frame, "minilm")) == EXPECTED_TABLE


def test_cell_texts() -> None:
    summary = stats.summarize
    assert tables.Cell(summary([78.0, 78.2]), 3, (("failed", 1),)).text == (
        "78.1 ± 0.1 (2/3, 1 failed)"
    )
    assert tables.Cell(summary([]), 3, (("failed", 3),)).text == "failed (3/3)"
    assert tables.Cell(summary([]), 3, (("failed", 2),), missing=1).text == (
        "no ok run (0/3, 2 failed, 1 missing)"
    )
    assert tables.Cell(summary([]), 3).text == "—"
    assert tables.Cell(summary([50.0]), 1).text == "50.0 (1)"


def test_latex_and_csv() -> None:
    table = tables.build_accuracy(collect.run_frame(table_records()), "minilm")
    latex = tables.to_latex(table)
    assert r"\textbf{92.5 $\pm$ 0.7 (2/3, 1 missing)}" in latex
    assert r"\underline{91.0 $\pm$ 1.0 (3)}" in latex
    assert r"p\_tuning\_v2 (0.409--0.419\%)" in latex
    assert r"\toprule" in latex and r"\caption{Accuracy on backbone minilm." in latex
    csv = tables.to_frame(table)
    row = csv[(csv["row"] == "full_finetune") & (csv["task"] == "conll2003")].iloc[0]
    assert (row["n_ok"], row["n_planned"], row["n_failed"], row["mark"]) == (2, 3, 1, "second")
    assert str(csv["n_ok"].dtype) == "Int64"


def test_variants_split_rows_only_within_a_task() -> None:
    records = [
        record("sst2", "p_tuning_v2", s, 0.9, method_config={"injection": mode})
        for s in (13, 21)
        for mode in ("kv", "hidden")
    ]
    records += [record("rte", "prompt_tuning", s, 0.6, method_config={"lr": 0.03}) for s in (1, 2)]
    records += [record("sst2", "prompt_tuning", s, 0.8) for s in (1, 2)]
    frame = collect.run_frame(records)
    assert collect.ordered_rows(frame) == [
        "prompt_tuning",
        "p_tuning_v2 [injection=hidden]",
        "p_tuning_v2 [injection=kv]",
    ]
    footnote = tables.footnote(frame, "minilm")
    assert "learning rate: prompt_tuning (rte 0.03, sst2 0.01), p_tuning_v2 [inj" in footnote[-1]


def test_duplicates_keep_the_ok_run_and_say_so() -> None:
    failed = record("sst2", "full_finetune", 13, status="failed")
    ok = record("sst2", "full_finetune", 13, 0.9, train={"max_eval_samples": None})
    failed["key"] = "aaa-failed"
    failed["config"]["data_identity"] = "hub:nyu-mll/glue"
    frame = collect.run_frame([failed, ok])
    assert list(frame["status"]) == ["ok"]
    assert frame.attrs["superseded"] == [("minilm", "aaa-failed")]
    assert any("aaa-failed" in line for line in tables.footnote(frame, "minilm"))


def test_params_table_groups_tasks_with_equal_counts() -> None:
    from bench.report import params

    counts = params.build_params(collect.run_frame(table_records()))
    ptv2 = counts[counts["method"] == "p_tuning_v2"]
    assert list(ptv2["tasks"]) == ["sst2", "conll2003"]
    text = params.to_markdown(counts)
    assert "| minilm     | p_tuning_v2   | sst2" in text and "92,930" in text and "95,241" in text


# --- claims (the verdicts themselves: tests/test_claims.py) -------------------------------------


def test_packaged_claims_load_and_each_is_evaluated() -> None:
    settings, specs = claims.load_claims()
    assert [s.id for s in specs] == [
        "ptv2_gains_over_traditional",
        "ptv2_comparable_to_finetuning",
        "ptv2_beats_prompt_tuning",
        "deep_prompts_beat_input_prompts",
    ]
    assert [s.wording for s in specs] == ["brief", "source", "source", "source"]
    assert all(s.quote for s in specs)
    assert settings == claims.Settings()
    results = verdicts.evaluate(collect.run_frame(table_records()), specs, settings)
    assert {r.claim.id for r in results} == {s.id for s in specs}
    text = verdicts.to_markdown(results, settings)
    assert "Decision rule: Δ = mean(treatment) − mean(baseline)" in text
    assert "Holm–Bonferroni" in text and "Wording: the project brief's wording" in text


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("claim: []\n", "unknown key(s) ['claim']; allowed keys: settings, claims"),
        (
            "claims: [{id: a, statement: s, source: s, treatment: p_tuning_v2, baselines: "
            "full_finetune, lower: 1, margin: 2}]\n",
            "unknown key(s) ['margin']; allowed keys: id",
        ),
        (
            "claims: [{id: a, statement: s, source: s, treatment: p_tuning_v3, baselines: "
            "full_finetune, lower: 1}]\n",
            "unknown method 'p_tuning_v3'; did you mean 'p_tuning_v2'",
        ),
        (
            "claims: [{id: a, statement: s, source: s, treatment: p_tuning_v2, baselines: "
            "full_finetune, lower: 1, upper: 0}]\n",
            "'upper' must be a number above lower=1",
        ),
        (
            "claims: [{id: a, statement: s, source: s, treatment: p_tuning_v2, baselines: "
            "full_finetune, lower: 1, min_tasks: several}]\n",
            "one of all, majority; got 'several'",
        ),
        ("settings: {alpha: 0.7}\nclaims: []\n", "settings.alpha must be in (0, 0.5)"),
        (
            "settings: {bootstrap_resamples: 100}\nclaims: []\n",
            "unknown key(s) ['bootstrap_resamples']; allowed keys: confidence, alpha, power",
        ),
        (
            "claims: [{id: a, statement: s, source: s, treatment: p_tuning_v2, baselines: "
            "full_finetune, lower: 1, wording: paper}]\n",
            "unknown wording 'paper'; valid: brief, source",
        ),
        (
            "claims: [{id: a, statement: s, source: s, treatment: p_tuning_v2, baselines: "
            "full_finetune, lower: two}]\n",
            "'lower' must be a number (points), got 'two'",
        ),
        ("claims: [\n", "is not valid YAML"),
    ],
)
def test_bad_claims_file_is_a_user_error(tmp_path: Path, yaml_text: str, message: str) -> None:
    path = tmp_path / "claims.yaml"
    path.write_text(yaml_text, encoding="utf-8")
    with pytest.raises(UserError) as error:
        claims.load_claims(path)
    assert message in str(error.value)


# --- published numbers --------------------------------------------------------------------------


def test_published_files_load_and_compare_when_everything_matches(tmp_path: Path) -> None:
    references = published.load_published(REPO / "results" / "published")
    assert len(references) >= 40
    assert {r.file for r in references} >= {
        "lora_readme_roberta_base_glue.csv",
        "ptuning_v2_repo_reproduced.csv",
        "peft_examples_mrpc_roberta_large.csv",
    }
    mrpc = [r for r in references if r.method == "peft_prefix_tuning" and r.metric == "accuracy"]
    assert mrpc[0].points == pytest.approx(87.74509803921569)
    frame = collect.run_frame(
        [
            record("sst2", "full_finetune", s, v, backbone="roberta-base")
            for s, v in ((1, 0.940), (2, 0.944))
        ]
        + [record("sst2", "full_finetune", 1, 0.9)]
    )
    lines = published.compare(frame, references)
    sst2 = next(
        x for x in lines if x.reference.task == "sst2" and x.reference.method == "full_finetune"
    )
    assert sst2.ours == "94.2 ± 0.3 (2)" and sst2.delta == pytest.approx(94.2 - 94.8)
    cola = next(
        x for x in lines if x.reference.task == "cola" and x.reference.method == "full_finetune"
    )
    assert cola.note == "not run by us"
    squad = next(x for x in lines if x.reference.task == "squad1.1")
    assert squad.note == "task not in peft-bench"
    boolq = next(x for x in lines if x.reference.task == "boolq")  # a task since issue 16
    assert boolq.note == "not run by us"
    text = published.to_markdown(lines)
    assert "| roberta-base | sst2   | accuracy" in text and "| −0.6 " in text
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.csv").write_text("source,value\na,1\n", encoding="utf-8")
    with pytest.raises(UserError, match="do not match the expected ones: source, citation"):
        published.load_published(bad)


# --- the whole report ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def constructed_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The records of :func:`table_records` plus an unreadable file, reported twice."""
    root = tmp_path_factory.mktemp("report")
    results = write_records(root / "results", table_records())
    (results / "runs" / "torn.json").write_text("{", encoding="utf-8")
    first, second = root / "out-a", root / "out-b"
    for out in (first, second):
        args = _parser().parse_args(["report", "--results", str(results), "--out", str(out)])
        assert dispatch(args) == 0
    return results, first, second


def test_report_lists_everything_with_verdicts_on_top(constructed_report) -> None:
    _, out, _ = constructed_report
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert readme.index("## Claim verdicts") < readme.index("## Accuracy")
    assert "Records: 22 (17 ok, 1 failed, 3 diverged, 1 timeout); 1 file(s) could not be read" in (
        readme
    )
    assert EXPECTED_TABLE.splitlines()[2] in readme
    for key in ("minilm-conll2003-full_finetune-42-lr5e-05", "minilm-rte-p_tuning_v2-13-lr0.01"):
        assert f"`{key}`" in readme
    assert "`runs/torn.json`: not readable JSON" in readme
    links = [part.split(")")[0] for part in readme.split("](")[1:]]
    assert links and all((out / link).is_file() for link in links), links
    for kind in ("md", "tex", "csv"):
        assert f"tables/accuracy_minilm.{kind}" in links and f"tables/params.{kind}" in links
    assert "figures/minilm/curves.pdf" in links and "tables/published.md" in links


def test_figures_are_written_and_not_empty(constructed_report) -> None:
    _, out, _ = constructed_report
    for name, _ in plots.FIGURES:
        for kind, magic in (("png", b"\x89PNG"), ("pdf", b"%PDF")):
            data = (out / "figures" / "minilm" / f"{name}.{kind}").read_bytes()
            assert data.startswith(magic) and len(data) > 5_000


def test_second_report_is_byte_identical(constructed_report) -> None:
    _, first, second = constructed_report
    a, b = _files(first), _files(second)
    assert sorted(a) == sorted(b)
    assert [name for name in a if a[name] != b[name]] == []


def test_a_new_report_removes_only_its_own_stale_files(tmp_path: Path) -> None:
    both = [record("sst2", "full_finetune", 1, 0.9, backbone=b) for b in ("minilm", "gpt2")]
    results = write_records(tmp_path / "results", both)
    out = tmp_path / "out"
    build_report(results, out, figures=False)
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    assert (out / "tables" / "accuracy_gpt2.md").is_file()
    (results / "runs" / f"{both[1]['key']}.json").unlink()
    build_report(results, out, figures=False)
    assert not (out / "tables" / "accuracy_gpt2.md").exists()
    assert (out / "tables" / "accuracy_minilm.md").is_file() and (out / "notes.txt").is_file()
    assert index.MANIFEST in {p.name for p in out.iterdir()}


def test_report_user_errors(tmp_path: Path) -> None:
    parser = _parser()
    with pytest.raises(UserError, match="no runs/ folder"):
        dispatch(parser.parse_args(["report", "--results", str(tmp_path / "none")]))
    results = write_records(tmp_path / "results", [record("sst2", "full_finetune", 1, 0.9)])
    bad = tmp_path / "claims.yaml"
    bad.write_text("claims: [{id: a, oops: 1}]\n", encoding="utf-8")
    args = ["report", "--results", str(results), "--out", str(tmp_path / "out")]
    with pytest.raises(UserError, match="unknown key"):
        dispatch(parser.parse_args([*args, "--claims", str(bad)]))
    assert not (tmp_path / "out").exists()  # inputs are checked before anything is written
    with pytest.raises(UserError, match="is not a directory"):
        dispatch(parser.parse_args([*args, "--published", str(tmp_path / "nope")]))


def test_help_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys, bench.report.command as c, argparse\n"
        "p = argparse.ArgumentParser(); c.add_commands(p.add_subparsers(dest='command'))\n"
        "print(sorted(m for m in ('pandas', 'matplotlib', 'torch', 'seaborn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stderr


# --- prompts ------------------------------------------------------------------------------------


def test_cosine_matrices_per_layer() -> None:
    import numpy as np

    prompt = np.arange(1, 4 * 2 * 6 + 1, dtype=float).reshape(4, 12)  # m=4, 2 layers of width 6
    views = plots.cosine_matrices(prompt, layers=2)
    assert [title for title, _ in views] == ["mean over 2 layers", "layer 1", "layer 2"]
    for _, matrix in views:
        assert matrix.shape == (4, 4) and np.allclose(np.diag(matrix), 1.0)
    (only,) = plots.cosine_matrices(prompt, layers=1)
    assert only[0] == "all dimensions"


def test_report_and_prompt_heatmap_from_real_runs(tiny_bert_dir, tiny_data_dir, tmp_path) -> None:
    from bench.cli import main

    results = tmp_path / "results"
    run = "run --tasks sst2 --methods full_finetune,p_tuning_v2 --seeds 13, --epochs 1 "
    run += "--batch-size 8 --lr 1e-3 --save-delta --no-progress"
    paths = ["--backbone", str(tiny_bert_dir), "--data-dir", str(tiny_data_dir)]
    code = main([*run.split(), *paths, "--output", str(results)])
    assert code == 0
    keys = {json.loads(p.read_text())["method"]: p.stem for p in (results / "runs").glob("*.json")}
    out = tmp_path / "reports"
    parser = _parser()
    plot = ["plot", "prompts", "--results", str(results), "--out", str(out)]
    assert dispatch(parser.parse_args([*plot[:2], keys["p_tuning_v2"][:8], *plot[2:]])) == 0
    heatmap = out / "figures" / "prompts" / f"{keys['p_tuning_v2']}.png"
    assert heatmap.read_bytes().startswith(b"\x89PNG") and heatmap.stat().st_size > 5_000
    with pytest.raises(UserError, match="stored no prompt"):
        dispatch(parser.parse_args([*plot[:2], keys["full_finetune"], *plot[2:]]))
    with pytest.raises(UserError, match="unknown run 'zzz'"):
        dispatch(parser.parse_args([*plot[:2], "zzz", *plot[2:]]))
    with pytest.raises(UserError, match="matches 2 runs"):
        dispatch(parser.parse_args([*plot[:2], "", *plot[2:]]))
    assert (
        dispatch(parser.parse_args(["report", "--results", str(results), "--out", str(out)])) == 0
    )
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert f"figures/prompts/{keys['p_tuning_v2']}.png" in readme
    assert (out / "figures" / slug(str(tiny_bert_dir)) / "curves.png").stat().st_size > 5_000
    assert "| p_tuning_v2 (" in readme and "| full_finetune (" in readme
