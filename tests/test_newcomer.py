"""A newcomer's first hour (issue 19): rows keyed on what changes results, bad input refused
before anything is written, readable records, progress and the closing summary."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from bench.cli import main
from bench.errors import UserError
from tests.test_report import record

from helpers import tiny_cli


def test_result_neutral_and_absent_train_keys_do_not_split_rows() -> None:
    """An old record lacks the keys added later; a new one has them at their defaults or sets a
    result-neutral one (activation checkpointing): all are the same row."""
    from bench.report import collect

    old = record("sst2", "p_tuning_v2", 13, 0.90)
    new = record(
        "sst2",
        "p_tuning_v2",
        21,
        0.91,
        train={"activation_checkpointing": True, "compile": False, "group_by_length": False},
    )
    del old["config"]["method_config"]["lr"]  # a method field the old record never had
    frame = collect.run_frame([old, new])
    assert collect.ordered_rows(frame) == ["p_tuning_v2"]
    grouped = record("sst2", "p_tuning_v2", 42, 0.92, train={"group_by_length": True})
    rows = collect.ordered_rows(collect.run_frame([old, new, grouped]))
    assert rows == [
        "p_tuning_v2 [train.group_by_length=False]",
        "p_tuning_v2 [train.group_by_length=True]",
    ]


# --- bad input: exit 2, one message naming the field, nothing written ---------------------------


def _suite(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "my-suite.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _refused(args: list[str], out: Path, capsys, *needles: str) -> None:
    """``args`` exit 2 with one message naming every needle, and nothing is written."""
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and err.count("error: ") == 1, err
    for needle in needles:
        assert needle in err, err
    assert not out.exists(), sorted(out.rglob("*"))


@pytest.mark.parametrize(("key", "value"), [("max_grad_norm", ".nan"), ("weight_decay", ".inf")])
def test_nan_or_inf_in_a_suite_train_value_is_refused(
    tiny_bert_dir, tiny_data_dir, tmp_path, capsys, key, value
) -> None:
    suite = _suite(tmp_path, f"tasks: [sst2]\ntrain: {{{key}: {value}}}\n")
    out = tmp_path / "out"
    args = tiny_cli(tiny_bert_dir, tiny_data_dir, out, "--suite", str(suite), "--seeds", "1,")
    _refused(args, out, capsys, key, "finite")


def test_inf_on_the_command_line_is_refused(tiny_bert_dir, tiny_data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main([*tiny_cli(tiny_bert_dir, tiny_data_dir, out), "--lr", "inf"])
    assert exit_info.value.code == 2
    assert "finite" in capsys.readouterr().err and not out.exists()


def test_nan_method_value_in_a_suite_is_refused(tiny_bert_dir, tiny_data_dir, tmp_path, capsys):
    suite = _suite(
        tmp_path,
        """\
        tasks: [sst2]
        settings:
          - source: a test
            methods: [full_finetune]
            method: {lr: .inf}
        """,
    )
    out = tmp_path / "out"
    args = tiny_cli(tiny_bert_dir, tiny_data_dir, out, "--suite", str(suite), "--seeds", "1,")
    del args[args.index("--lr") : args.index("--lr") + 2]  # the command line would win
    _refused(args, out, capsys, "lr", "finite")


def test_typo_in_a_setting_no_planned_run_uses_is_refused(
    tiny_bert_dir, tiny_data_dir, tmp_path, capsys
) -> None:
    """The setting targets p_tuning_v2, the plan only full fine-tuning: the typo still stops."""
    suite = _suite(
        tmp_path,
        """\
        tasks: [sst2]
        settings:
          - source: a test
            methods: [p_tuning_v2]
            method: {promt_length: 5}
        """,
    )
    out = tmp_path / "out"
    args = tiny_cli(tiny_bert_dir, tiny_data_dir, out, "--suite", str(suite), "--seeds", "1,")
    _refused(args, out, capsys, "promt_length", "prompt_length")


def test_dry_run_checks_the_data_files(tiny_bert_dir, tiny_data_dir, tmp_path, capsys) -> None:
    broken = tmp_path / "data"
    shutil.copytree(tiny_data_dir, broken)
    (broken / "SST-2" / "dev.tsv").unlink()
    out = tmp_path / "out"
    args = [*tiny_cli(tiny_bert_dir, broken, out), "--seeds", "1,", "--dry-run"]
    _refused(args, out, capsys, "dev.tsv")
    good = [*tiny_cli(tiny_bert_dir, tiny_data_dir, out), "--seeds", "1,", "--dry-run"]
    assert main(good) == 0
    printed = capsys.readouterr().out
    assert "data checked:" in printed and "120 train" in printed
    assert "CPU-min" in printed and "estimated CPU time" in printed
    assert not out.exists()


def test_pickled_only_backbone_is_refused_before_tokenization(
    tiny_bert_dir, tiny_data_dir, tmp_path, capsys, monkeypatch
) -> None:
    import bench.data

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_bert_dir, pickled)
    for weights in pickled.glob("*.safetensors"):
        (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
        weights.unlink()
    monkeypatch.setattr(bench.data, "tokenize_task", _never_called)
    out = tmp_path / "out"
    args = [*tiny_cli(pickled, tiny_data_dir, out), "--seeds", "1,"]
    _refused(args, out, capsys, "safetensors", "pytorch_model.bin")
    _refused([*args, "--dry-run"], out, capsys, "safetensors")


def test_position_overflow_is_refused_before_tokenization(
    tiny_bert_dir, tiny_data_dir, tmp_path, capsys, monkeypatch
) -> None:
    import bench.data

    monkeypatch.setattr(bench.data, "tokenize_task", _never_called)
    out = tmp_path / "out"
    args = tiny_cli(tiny_bert_dir, tiny_data_dir, out, "--seeds", "1,")
    args[args.index("full_finetune")] = "prompt_tuning"
    _refused([*args, "--method-args", "position=shift,prompt_length=40"], out, capsys, "exceeds")


def _never_called(*args: object, **kwargs: object) -> None:
    raise AssertionError("bad input must be refused before tokenization")


def test_method_args_go_to_the_methods_that_have_each_key(tiny_bert_dir, tiny_data_dir) -> None:
    from bench.runner import PlanRequest, build_plan

    def plan(args: dict) -> dict:
        request = PlanRequest(
            tasks=["sst2"],
            methods=["full_finetune", "p_tuning_v2", "prompt_tuning"],
            seeds=[1],
            backbones=[str(tiny_bert_dir)],
            data_dir=str(tiny_data_dir),
            method_overrides=args,
        )
        return {r.method: r.method_config for r in build_plan(request)}

    configs = plan({"injection": "hidden", "prompt_length": 4, "lr": 0.5})
    assert configs["p_tuning_v2"]["injection"] == "hidden"
    assert configs["p_tuning_v2"]["prompt_length"] == configs["prompt_tuning"]["prompt_length"] == 4
    assert "prompt_length" not in configs["full_finetune"]
    assert {c["lr"] for c in configs.values()} == {0.5}
    with pytest.raises(UserError, match=r"\['injektion'\] belong to none"):
        plan({"injektion": "hidden"})


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_records_get_the_mode_of_the_users_umask(tmp_path, umask, mode) -> None:
    from bench import checkpoint, records

    previous = os.umask(umask)
    try:
        records.atomic_write_json(records.record_path(tmp_path, "abc"), {"key": "abc"})
        records.append_index(tmp_path, {"key": "abc"})
        records.repair_index(tmp_path)  # rewrites the index atomically when it is stale
        directory = tmp_path / "checkpoints" / "abc"
        checkpoint.save(directory, _tiny_state())
    finally:
        os.umask(previous)
    files = [records.record_path(tmp_path, "abc"), *directory.iterdir()]
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {mode}


def _tiny_state():
    import torch

    from bench import checkpoint

    return checkpoint.TrainState(
        epoch=1,
        step=2,
        curve=[],
        best={"score": 0.5},
        eval_seconds=0.0,
        train_seconds=0.0,
        trained={"w": torch.zeros(2)},
        best_state=None,
        optimizer={"state": {}, "param_groups": []},
        scheduler={},
        data_rng=torch.zeros(4, dtype=torch.uint8),
        torch_rng=torch.get_rng_state(),
        cuda_rng=[],
    )


def test_a_resumed_run_counts_earlier_sessions_in_its_total(
    tiny_bert_dir, tiny_data_dir, tmp_path, monkeypatch
) -> None:
    from bench import faults
    from bench.train import train_run

    from helpers import tiny_plan

    (run,) = tiny_plan(tiny_bert_dir, tiny_data_dir, seeds=(1,))
    directory = tmp_path / "checkpoint"
    monkeypatch.setenv(faults.ENV, json.dumps([{"fault": "raise", "epoch": 1}]))
    with pytest.raises(faults.InjectedFault):  # after the checkpoint of epoch 1
        train_run(run, device="cpu", progress=False, checkpoint_dir=directory)
    monkeypatch.delenv(faults.ENV)
    state = directory / "state.json"  # the first session trained for 1000 s, say
    state.write_text(
        json.dumps({**json.loads(state.read_text()), "train_seconds": 1000.0}), encoding="utf-8"
    )
    result = train_run(run, device="cpu", progress=False, checkpoint_dir=directory)
    assert result.extra["resumed_from_epoch"] == 1
    timing = result.timing
    assert timing["train_s"] > 1000
    assert timing["total_s"] >= timing["train_s"] + timing["selection_eval_s"]


def test_report_shows_no_library_warnings(tmp_path) -> None:
    """A method at the majority class on every seed (MRPC's 68.5 in cpu-mini) makes scipy's
    t-test warn about precision loss: not the user's problem."""
    from bench.report.command import make_report
    from tests.test_report import write_records

    majority = 0.6850490196078431
    scores = {"full_finetune": [0.69, 0.70, 0.685], "p_tuning_v2": [majority] * 3}
    runs = [
        record(task, method, seed, score)
        for task in ("sst2", "rte")
        for method, values in scores.items()
        for seed, score in zip((13, 21, 42), values, strict=True)
    ]
    results = write_records(tmp_path / "results", runs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index = make_report(results)
    assert index == results / "report" / "README.md" and index.is_file()
    shown = [f"{w.category.__name__}: {w.message}" for w in caught]
    assert not [w for w in shown if "Precision loss" in w or "matplotlib" in w.lower()], shown


# --- progress, the closing summary, estimates, the offline route --------------------------------


def test_progress_lines_summary_and_report_path(
    tiny_bert_dir, tiny_data_dir, tmp_path, capsys
) -> None:
    out = tmp_path / "out"
    args = [a for a in tiny_cli(tiny_bert_dir, tiny_data_dir, out) if a != "--no-progress"]
    assert main([*args, "--seeds", "1,", "--report"]) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if "sst2/full_finetune/seed1 epoch" in line]
    assert len(lines) == 2, captured.err  # one per epoch
    assert re.search(r"epoch 1/2 step 14/28 loss \d\.\d{4} accuracy \d\.\d{4} \(best", lines[0])
    assert all(re.search(r"\(best \d\.\d{4}\) ETA \d+m\d\ds$", line) for line in lines)
    summary = captured.out.splitlines()[-3:]
    assert re.match(r"done in \d+m\d\ds: 1 run\(s\) planned: 1 ok$", summary[0])
    assert str(out / "runs") in summary[1]
    assert summary[2] == f"report: {out / 'report' / 'README.md'}"
    assert (out / "report" / "README.md").is_file()


def test_summary_without_report_names_the_command(tmp_path) -> None:
    from bench.cli import closing_summary

    runs = [{"status": "ok"}, {"status": "failed"}, {"status": "ok"}]
    text = closing_summary(runs, 4, Path("runs"), None, 75.0)
    assert text.splitlines()[0] == (
        "done in 1m15s: 4 run(s) planned: 1 failed, 2 ok, 1 without a record"
    )
    assert "report: python -m bench report   (writes runs/report/README.md" in text
    assert "--results elsewhere" in closing_summary(runs, 3, Path("elsewhere"), None, 1.0)


def test_unreachable_hub_names_the_offline_route(tmp_path, capsys, monkeypatch) -> None:
    import bench.hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(bench.hub, "hub_reachable", lambda: False)
    out = tmp_path / "out"
    args = ["run", "--suite", "glue", "--tasks", "rte", "--methods", "full_finetune"]
    _refused([*args, "--output", str(out)], out, capsys, "rte", "offline route", "quickstart")


# --- the README's quick start, in a fresh clone -------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
#: A tiny budget instead of the suite's (command-line flags win over a suite's settings).
TINY_BUDGET = ["--max-train-samples", "40", "--epochs", "1", "--max-eval-samples", "40"]


def quick_start_command() -> list[str]:
    """The ``python -m bench run ...`` part of the README's quick-start block (the first
    ``bash`` block under "## Quick start"), split into arguments after ``python -m bench``."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Quick start") :]
    block = section[section.index("```bash") : section.index("```", section.index("```bash") + 3)]
    (line,) = [ln for ln in block.splitlines() if "python -m bench run" in ln]
    return line[line.index("python -m bench run") :].split()[3:]


def test_the_readme_quick_start_runs_on_what_ships() -> None:
    args = quick_start_command()
    assert args[:2] == ["run", "--suite"] and "--report" in args and "--data-dir" in args
    from bench.suites import get_suite

    suite = get_suite(args[args.index("--suite") + 1])
    assert suite.backbones == ("minilm",) and suite.tasks == ("sst2",)


@pytest.mark.integration
def test_quick_start_in_a_fresh_clone(shared_data, minilm_dir, tmp_path) -> None:
    """The README's quick start with a tiny budget, in a clone of this repository: nothing
    tracked is written, the report holds only these runs, the summary names its path."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=300)
    args = quick_start_command()
    args[args.index("--data-dir") + 1] = str(shared_data)
    env = {**os.environ, "PYTHONPATH": str(clone), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "bench", *args, *TINY_BUDGET, "--no-progress"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, check=True
    )
    assert status.stdout == "", status.stdout  # nothing tracked changed, nothing unignored new
    report = clone / "runs" / "report" / "README.md"
    assert done.stdout.splitlines()[-1] == f"report: {Path('runs') / 'report' / 'README.md'}"
    assert "Records: 4 (4 ok)." in report.read_text(encoding="utf-8")
    assert len(list((clone / "runs" / "runs").glob("*.json"))) == 4
