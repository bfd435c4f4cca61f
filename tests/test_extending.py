"""docs/extending.md, followed verbatim: its example method file and task YAML are taken from the
page's code blocks (the first line of each names the file), checked here, and - in the
integration test - written into a copy of the repository where the page's commands and a
subset of the unit suite run with them present.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench.cli import main
from bench.errors import UserError
from tasks.spec import spec_from_mapping
from tests.conftest import REPO, write_tiny_glue

PAGE = REPO / "docs" / "extending.md"
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)


def page_blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(PAGE.read_text("utf-8")) if lang == language]


def page_files() -> dict[str, str]:
    """Repository path → content of every python/yaml block whose first line is ``# PATH``."""
    out = {}
    for language in ("python", "yaml"):
        for body in page_blocks(language):
            first, _, rest = body.partition("\n")
            if first.startswith("# ") and "/" in first:
                out[first[2:].strip()] = body if language == "python" else rest
    return out


def heldout_data(root: Path) -> Path:
    """Tiny SST-2 in the GLUE layout, plus a held-out test file in a folder of its own."""
    write_tiny_glue(root, n_train=64, n_dev=16)
    (root / "SST-2-heldout").mkdir()
    rows = (root / "SST-2" / "dev.tsv").read_text("utf-8").splitlines()[:9]
    (root / "SST-2-heldout" / "test.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


@pytest.fixture
def heldout_task(monkeypatch: pytest.MonkeyPatch):
    """The page's example task, registered for this test."""
    import tasks.registry as registry

    spec = spec_from_mapping(yaml.safe_load(page_files()["tasks/heldout/sst2_heldout.yaml"]))
    registered = {**registry._registry(), spec.name: spec}
    monkeypatch.setattr(registry, "_registry", lambda: registered)
    return spec


def test_page_names_one_method_file_and_one_task_file() -> None:
    assert sorted(page_files()) == ["methods/linear_probe.py", "tasks/heldout/sst2_heldout.yaml"]


def test_example_task_reads_its_own_folders_and_stays_out_of_claims(heldout_task, tmp_path):
    from bench.report.claims import load_claims
    from tasks import load_task_data, task_names

    spec = heldout_task
    assert spec.hub is None and spec.suite == "heldout" and not spec.claims
    assert task_names("heldout") == ["sst2_heldout"]
    loaded = load_task_data(spec, heldout_data(tmp_path))
    assert {name: len(split) for name, split in loaded.splits.items()} == {
        "train": 64,
        "validation": 16,
        "test": 8,
    }
    _, claims = load_claims()
    assert claims and all(claim.covers("sst2", "glue") for claim in claims if not claim.tasks)
    for claim in claims:
        assert not claim.covers("sst2_heldout", "heldout")
        assert not claim.covers("sst2_heldout", "glue")


def test_a_file_outside_the_data_dir_is_refused(tmp_path) -> None:
    text = page_files()["tasks/heldout/sst2_heldout.yaml"].replace(
        "../SST-2-heldout/test.tsv", "../../elsewhere/test.tsv"
    )
    spec = spec_from_mapping(yaml.safe_load(text))
    from tasks import load_task_data

    with pytest.raises(UserError, match="outside the data directory"):
        load_task_data(spec, heldout_data(tmp_path))


def test_task_without_hub_needs_data_dir_in_one_line(heldout_task, tmp_path, capsys) -> None:
    argv = ["run", "--dry-run", "--tasks", "sst2_heldout", "--methods", "full_finetune",
            "--seeds", "1", "--output", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 2
    from bench.cli import OFFLINE_ROUTE

    first, *rest = capsys.readouterr().err.strip().splitlines()
    assert "no 'hub' source" in first and "--data-dir" in first
    assert rest in ([], [OFFLINE_ROUTE])  # the offline route is added when the Hub is unreachable
    assert main([*argv, "--data-dir", str(heldout_data(tmp_path / "data"))]) == 0
    out = capsys.readouterr().out
    assert "sst2_heldout" in out and "GPU-min" in out
    assert " ? " not in out.split("GPU-min")[1]  # sized from its own files


def test_report_lists_closed_form_mismatches_and_labels_variants(tmp_path) -> None:
    from bench.report.command import add_commands, dispatch
    from tests.test_report import record, write_records

    wrong = record("rte", "prefix_tuning", 13, 0.6)
    wrong["params"] = {**wrong["params"], "formula_value": 1, "matches_formula": False}
    hidden = record("rte", "p_tuning_v2", 13, 0.7, method_config={"injection": "hidden"})
    results = write_records(tmp_path / "results", [wrong, hidden])
    import argparse

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    out = tmp_path / "report"
    args = parser.parse_args(["report", "--results", str(results), "--out", str(out)])
    assert dispatch(args) == 0
    readme = (out / "README.md").read_text("utf-8")
    section = readme.split("### Counts that differ from their closed form")[1]
    assert "prefix_tuning" in section.split("##")[0] and "rte" in section.split("##")[0]
    assert "p_tuning_v2" not in section.split("##")[0]
    assert "p_tuning_v2 [injection=hidden]" in readme  # alone, and still labelled


COPIED = ("bench", "methods", "tasks", "tests", "docs", "pyproject.toml")
#: The unit tests run in the copy: those that enumerate the registries (every method, every
#: task, the CLI's listings and default sweep). The compatibility matrix, which enumerates the
#: methods too, already ran through the page's own command.
SUBSET = ["tests/test_method_contract.py", "tests/test_cli.py", "tests/test_tasks.py"]


@pytest.mark.integration
def test_following_the_page_in_a_copy_keeps_the_suite_green(tmp_path: Path, tiny_bert_dir) -> None:
    """Write the page's two files into a copy of the repository, run the page's commands there,
    then the unit tests that enumerate the registries, then the new task with the new method."""
    copy = tmp_path / "repo"
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, copy / name)
    for path, text in page_files().items():
        (copy / path).parent.mkdir(parents=True, exist_ok=True)
        (copy / path).write_text(text, encoding="utf-8")
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(copy)}

    def run(command: str) -> str:
        done = subprocess.run(
            command, shell=True, cwd=copy, capture_output=True, text=True, timeout=900,
            env={**os.environ, **env},
        )  # fmt: skip
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    data = heldout_data(tmp_path / "data")
    for block in page_blocks("sh"):
        for line in block.strip().splitlines():
            line = line.replace("python ", f"{sys.executable} ").replace("DATA", str(data))
            run(line)
    run(f"{sys.executable} -m pytest -q -x -p no:cacheprovider -m 'not integration' "
        + " ".join(SUBSET))  # fmt: skip
    out = tmp_path / "out"
    run(f"{sys.executable} -m bench run --tasks sst2_heldout --methods linear_probe "
        f"--data-dir {data} --output {out} --seeds 1 --epochs 1 --batch-size 16 "
        "--max-length 32 --no-progress --executor serial "
        f"--backbone {tiny_bert_dir}")  # fmt: skip
    (record,) = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    assert record["status"] == "ok" and record["method"] == "linear_probe"
    assert set(record["metrics"]) >= {"validation", "test"}
    assert record["params"]["matches_formula"] is True
