"""Integration: MiniLM trains on the real CB, COPA and WiC files (../shared/data/superglue).

A small budget (about 1 CPU-minute): CB gets 3 epochs over 250 examples and must leave the
majority class (28 of 56 dev examples are 'contradiction': 0.5) behind; COPA (multiple choice)
and WiC (its default input format, wic_question) train one epoch on 100 examples to show that the
whole path runs on real data and records its metrics.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bench import records
from bench.cli import main

pytestmark = pytest.mark.integration

SMALL = {"max_train_samples": 100, "epochs": 1, "max_eval_samples": 100}


def test_minilm_on_cb_copa_wic(shared_data: Path, minilm_dir: Path, tmp_path: Path) -> None:
    if not (shared_data / "superglue" / "CB").is_dir():
        pytest.skip(f"no SuperGLUE files under {shared_data}")
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        yaml.safe_dump(
            {
                "name": "superglue-smoke",
                "tasks": ["cb", "copa", "wic"],
                "methods": ["full_finetune"],
                "seeds": [13],
                "train": {"max_length": 64, "max_train_samples": 250, "epochs": 3},
                "settings": [
                    {"source": "test budget", "tasks": ["copa", "wic"], "train": SMALL},
                    {"source": "test budget", "method": {"lr": 5.0e-5}},
                ],
            }
        ),
        encoding="utf-8",
    )
    out = tmp_path / "out"
    code = main(
        ["run", "--suite", str(suite), "--backbone", str(minilm_dir), "--data-dir",
         str(shared_data), "--output", str(out), "--no-progress", "--executor", "serial"]
    )  # fmt: skip
    assert code == 0
    found = {}
    for entry in records.read_index(out):
        record = records.read_record(out, entry["key"])
        assert record["status"] == "ok", record
        found[record["task"]] = record
    assert set(found) == {"cb", "copa", "wic"}
    cb = found["cb"]
    assert set(cb["metrics"]["validation"]) == {"accuracy", "macro_f1"}
    assert cb["sizes"]["eval_validation"] == 56
    assert cb["primary"]["validation"] >= 0.6  # majority class: 0.5 (measured: 0.661)
    assert found["copa"]["sizes"]["eval_validation"] == 100
    assert found["wic"]["sizes"]["eval_validation"] == 100
    for task in ("copa", "wic"):
        assert 0.0 <= found[task]["primary"]["validation"] <= 1.0
