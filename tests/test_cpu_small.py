"""The shipped tuned comparison (suite cpu-small, README "Results"): its plan, and that the
committed reports regenerate from the committed records."""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest

from bench.cli import main
from bench.suites import builtin_suites

REPO = Path(__file__).resolve().parents[1]
FINAL_SEEDS = 5


def test_cpu_small_gives_every_method_the_same_tuning_budget() -> None:
    suite = builtin_suites()["cpu-small"]
    assert suite.budget == "full" and suite.seeds[:FINAL_SEEDS] == (13, 21, 42, 87, 100)
    assert {"full_finetune", "p_tuning_v2", "peft_lora", "peft_prompt_tuning"} <= set(suite.methods)
    for task in suite.tasks:
        for method in suite.methods:
            search = suite.search_for(task, method)
            assert search is not None, (task, method)
            assert list(search.grid) == ["lr"] and len(search.grid["lr"]) == 3, (task, method)
            assert (search.search_seeds, search.final_seeds) == (1, FINAL_SEEDS)
    train, _ = suite.overrides("sst2", "p_tuning_v2")
    assert train["precision"] == "bf16" and train["group_by_length"] is True
    wic, _ = suite.overrides("wic", "full_finetune")  # the official BERT input (run_wic_bert.sh)
    assert wic["input_format"] == "wic_pair" and wic["max_train_samples"] == 4500
    assert all(len(setting.source) > 40 for setting in suite.settings)


@pytest.mark.parametrize(
    ("records", "report"),
    [
        ("results/reference/cpu-small", "reports"),
        ("results/reference/cpu-mini", None),
        ("results/reference/cpu-small-edge", None),
    ],
)
def test_committed_reports_regenerate_byte_for_byte(tmp_path, monkeypatch, records, report) -> None:
    """`bench report` on the committed records remakes the committed report: every table and
    page byte for byte, every figure by name. (Figure bytes depend on the matplotlib build; on
    the machine that made them they matched too, docs/results.md.)"""
    monkeypatch.chdir(REPO)  # the report names its --results folder as given
    committed = REPO / (report or f"{records}/report")
    out = tmp_path / "report"
    assert main(["report", "--results", records, "--out", str(out)]) == 0
    made = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert made == sorted(p.relative_to(committed) for p in committed.rglob("*") if p.is_file())
    pages = [p for p in made if p.suffix in {".md", ".csv", ".tex"}]
    assert pages and all(filecmp.cmp(out / p, committed / p, shallow=False) for p in pages)


def test_the_edge_check_repeats_cpu_small_with_wider_grids() -> None:
    """cpu-small-edge reuses cpu-small's runs: same tasks, seeds and settings in every cell it
    shares, and grids that contain cpu-small's, with P-Tuning v2's widened past its top."""
    small, edge = builtin_suites()["cpu-small"], builtin_suites()["cpu-small-edge"]
    assert edge.tasks == small.tasks and edge.seeds == small.seeds
    assert set(edge.methods) == {"full_finetune", "p_tuning_v2"}
    for task in edge.tasks:
        for method in edge.methods:
            assert edge.overrides(task, method) == small.overrides(task, method), (task, method)
            wide, narrow = edge.search_for(task, method), small.search_for(task, method)
            assert set(narrow.grid["lr"]) <= set(wide.grid["lr"]), (task, method)
            assert (wide.search_seeds, wide.final_seeds) == (1, FINAL_SEEDS)
        assert max(edge.search_for(task, "p_tuning_v2").grid["lr"]) > max(
            small.search_for(task, "p_tuning_v2").grid["lr"]
        )


@pytest.mark.parametrize("name", ["cpu-small", "cpu-small-edge"])
def test_committed_records_are_complete(shared_data, tmp_path, monkeypatch, capsys, name) -> None:
    """A fresh clone's dry run (records to an empty runs/) finds every search and final run of
    the suite in its shipped records, and so does a dry run into them."""
    monkeypatch.chdir(REPO)  # the suite names its shipped records from the repository root
    suite = builtin_suites()[name]
    args = ["run", "--suite", name, "--data-dir", str(shared_data), "--dry-run"]
    assert main([*args, "--output", str(tmp_path / "runs")]) == 0
    shipped = [line for line in capsys.readouterr().out.splitlines() if "shipped records" in line]
    assert len(shipped) == 1 and "unfinished" not in shipped[0], shipped
    planned = sum(  # the winner's search seed is one of its final seeds
        len(suite.search_for(task, method).grid["lr"]) + FINAL_SEEDS - 1
        for task in suite.tasks
        for method in suite.methods
    )
    assert f"{planned} runs planned, {planned} already done; 0 to run;" in shipped[0]
    assert main([*args, "--output", suite.reference]) == 0
    out = capsys.readouterr().out
    assert "waiting" not in out and "still to plan" not in out, out
    assert f"{planned} runs planned, {planned} already done; 0 to run" in out
