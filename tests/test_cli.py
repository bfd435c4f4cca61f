"""CLI behaviour: fast listing, clear errors with exit code 2, seeds parsing, dry runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.cli import main
from bench.errors import UserError
from bench.runner import DEFAULT_SEEDS, parse_seeds
from tests.conftest import REPO


def test_help_and_list_do_not_import_torch() -> None:
    code = (
        "import sys, io, contextlib\n"
        "from bench.cli import main\n"
        "for what in ['methods', 'tasks', 'suites', 'backbones']:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        assert main(['list', what]) == 0\n"
        "heavy = [m for m in ('torch', 'transformers', 'datasets') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


def test_list_methods_and_tasks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "methods"]) == 0
    assert "full_finetune" in capsys.readouterr().out
    assert main(["list", "tasks"]) == 0
    out = capsys.readouterr().out
    for task in ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli", "conll2003"]:
        assert task in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--tasks", "sst"], "did you mean 'sst2'"),
        (["--methods", "full_fintune"], "did you mean 'full_finetune'"),
        (["--suite", "gleu"], "did you mean 'glue'"),
        (["--backbone", "roberta-bas"], "Did you mean 'roberta-base'"),
        (["--backbone", "./no/such/model"], "does not exist"),
        (["--seeds", "0"], "at least 1"),
        (["--seeds", "13,13"], "duplicate seed"),
        (["--data-dir", "/no/such/dir"], "is not a directory"),
    ],
)
def test_bad_input_is_one_clear_error(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", "--dry-run", "--methods", "full_finetune", "--tasks", "sst2", *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err
    assert "Traceback" not in err


def test_negative_sample_count_is_rejected_by_the_parser(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--max-train-samples", "-5", "--dry-run"])
    assert exit_info.value.code == 2
    assert "positive integer" in capsys.readouterr().err


def test_missing_data_file_names_the_expected_path(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "SST-2").mkdir()
    code = main(
        [
            "run",
            "--dry-run",
            "--tasks",
            "sst2",
            "--methods",
            "full_finetune",
            "--data-dir",
            str(tmp_path),
            "--backbone",
            "minilm",
        ]
    )
    err = capsys.readouterr().err
    if "not installed" in err:
        pytest.skip("MiniLM package absent")
    assert code == 2
    assert str(tmp_path / "SST-2" / "train.tsv") in err or "train.tsv" in err


def test_parse_seeds() -> None:
    assert parse_seeds("3") == DEFAULT_SEEDS[:3]
    assert parse_seeds("13,21,42") == (13, 21, 42)
    assert parse_seeds("42,") == (42,)
    assert len(parse_seeds("7")) == 7
    for bad in ["0", "-2", "a,b", "1,1", ","]:
        with pytest.raises(UserError):
            parse_seeds(bad)


def test_dry_run_prints_the_plan_and_writes_nothing(
    tiny_bert_dir, tiny_data_dir, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "results"
    code = main(
        [
            "run",
            "--dry-run",
            "--tasks",
            "sst2,conll2003",
            "--methods",
            "full_finetune",
            "--seeds",
            "2",
            "--backbone",
            str(tiny_bert_dir),
            "--data-dir",
            str(tiny_data_dir),
            "--output",
            str(out_dir),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "4 runs planned, 0 already done" in out
    assert not out_dir.exists()


def test_default_sweep_leaves_out_comparison_rows(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--dry-run", "--tasks", "rte", "--seeds", "1"]) == 0
    out = capsys.readouterr().out
    from methods import method_names

    default = method_names(include_comparison=False)  # a superset: new method files join it
    assert set(default) >= {"full_finetune", "prompt_tuning", "p_tuning", "p_tuning_v2"}
    for method in default:
        assert f" {method} " in out
    assert "peft_" not in out and " bitfit " not in out  # comparison rows and opt-outs
    assert f"{len(default)} runs planned" in out


def test_repeated_names_are_planned_once(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "run",
        "--dry-run",
        "--tasks",
        "rte,rte",
        "--methods",
        "full_finetune,full_finetune",
        "--seeds",
        "1",
    ]
    assert main(argv) == 0
    assert "1 runs planned" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--method-args", "init=[a"], "cannot read the value"),
        (["--method-args", "prompt_length"], "expected KEY=VALUE"),
        (["--methods", "p_tuning_v2", "--method-args", "injection=deep"], "injection must be"),
        (["--methods", "prompt_tuning", "--method-args", "prompt_length=true"], "prompt_length"),
        (["--methods", "p_tuning", "--method-args", "lr=fast"], "lr"),
    ],
)
def test_bad_method_args(argv, expected, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main(["run", "--dry-run", "--tasks", "rte", "--seeds", "1", *argv])
    except SystemExit as exit_info:  # argparse rejects malformed KEY=VALUE itself
        code = exit_info.code
    assert code == 2
    assert expected in capsys.readouterr().err


def test_device_and_output_are_checked_before_training(
    tiny_bert_dir, tiny_data_dir, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    base = [
        "run",
        "--tasks",
        "sst2",
        "--methods",
        "full_finetune",
        "--seeds",
        "1,",
        "--backbone",
        str(tiny_bert_dir),
        "--data-dir",
        str(tiny_data_dir),
    ]
    if not torch.cuda.is_available():
        assert main([*base, "--device", "cuda", "--output", str(tmp_path / "a")]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
        assert not (tmp_path / "a" / "runs").exists()
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main([*base, "--output", str(blocker)]) == 2
    assert "cannot hold run records" in capsys.readouterr().err


def test_suite_file_with_bad_types(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = tmp_path / "mine.yaml"
    suite.write_text("tasks: [rte]\ntrain: {val_fraction: abc}\n")
    assert main(["run", "--dry-run", "--suite", str(suite), "--seeds", "1"]) == 2
    assert "val_fraction" in capsys.readouterr().err
    suite.write_text("tasks: [rte]\ntrain: {max_train_samples: true}\n")
    assert main(["run", "--dry-run", "--suite", str(suite), "--seeds", "1"]) == 2
    suite.write_text("tasks: [rte]\nepochs: 3\n")
    assert main(["run", "--dry-run", "--suite", str(suite), "--seeds", "1"]) == 2
    assert "allowed" in capsys.readouterr().err
