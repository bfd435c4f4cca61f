"""Preflight of (method, backbone) pairs: an impossible pair is seen by ``--dry-run``, recorded as
``failed`` with the reason, and the rest of the sweep runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli import main
from bench.errors import UserError
from methods import build_method
from tests.conftest import VOCAB


@pytest.fixture(scope="module")
def tiny_albert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random ALBERT (one layer shared across depth) with a WordPiece tokenizer."""
    import torch
    from transformers import AlbertConfig, AlbertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("tiny-albert")
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab=str(root / "vocab.txt"), do_lower_case=True).save_pretrained(root)
    config = AlbertConfig(
        vocab_size=len(VOCAB), embedding_size=16, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    AlbertModel(config).save_pretrained(root)
    return root


def argv(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "run", "--tasks", "sst2", "--methods", "prefix_tuning,prompt_tuning,bitfit,peft_lora",
        "--backbone",
        str(model), "--data-dir", str(data), "--output", str(out), "--epochs", "1",
        "--batch-size", "16", "--max-length", "16", "--seeds", "1", "--no-progress",
        "--executor", "serial", *extra,
    ]  # fmt: skip


def test_impossible_pair_is_seen_by_dry_run_and_recorded_failed(
    tiny_albert_dir: Path, tiny_data_dir: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    """prefix_tuning (kv on ALBERT's shared layer) and peft_lora (peft has no default targets
    for ALBERT) cannot run; prompt_tuning and bitfit run. bitfit's closed form is made wrong
    here, so its run must log the mismatch as a warning."""
    from methods.base import ParamCounts
    from methods.bitfit import BitFit

    honest = BitFit.parameter_counts

    def wrong_closed_form(self, model):
        counts = honest(self, model)
        return ParamCounts(**{**counts.__dict__, "formula": "B + 1", "formula_value": 1})

    monkeypatch.setattr(BitFit, "parameter_counts", wrong_closed_form)
    out = tmp_path / "results"
    assert main(argv(tiny_albert_dir, tiny_data_dir, out, "--dry-run")) == 0
    text = capsys.readouterr().out
    assert "cannot run" in text and "prefix_tuning" in text and "'kv'" in text
    assert " fail " in text and " run " in text
    assert not (out / "runs").exists()  # a dry run writes nothing

    assert main(argv(tiny_albert_dir, tiny_data_dir, out)) == 1  # failed runs among them
    found = {}
    for path in (out / "runs").glob("*.json"):
        record = json.loads(path.read_text())
        found[record["method"]] = record
    assert found["prompt_tuning"]["status"] == found["bitfit"]["status"] == "ok"
    failed = found["prefix_tuning"]
    assert failed["status"] == "failed" and failed["error"]["type"] == "PreflightError"
    assert "methods that work here: p_tuning, prompt_tuning" in failed["error"]["message"]
    assert found["peft_lora"]["status"] == "failed"
    assert "target_modules" in found["peft_lora"]["error"]["message"]
    index = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert sorted(r["status"] for r in index) == ["failed", "failed", "ok", "ok"]
    bitfit = found["bitfit"]
    assert bitfit["params"]["matches_formula"] is False
    log = (out / "logs" / f"{bitfit['key']}.log").read_text(encoding="utf-8")
    assert "WARNING" in log and "closed form B + 1 gives 1" in log
    # biases train and are stored, and are not counted in the backbone
    params = bitfit["params"]
    assert params["stored"] == params["trainable"] > params["head"]


def test_hint_names_options_the_method_accepts() -> None:
    """On ALBERT nothing per-layer works; on Falcon (no attention interface) p_tuning_v2's own
    option injection: hidden does, and the hint says so."""
    import transformers as tf

    config = tf.FalconConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             vocab_size=100, pad_token_id=0)  # fmt: skip
    backbone = tf.FalconForSequenceClassification(config)
    with pytest.raises(UserError) as error:
        build_method("p_tuning_v2").preflight(backbone)
    message = str(error.value)
    assert "p_tuning_v2 works here with injection: hidden" in message
    assert "prefix_tuning" not in message.split("methods that work here:")[1]


def test_records_of_other_method_code_are_stale(tiny_bert_dir: Path, tiny_data_dir: Path, tmp_path):
    from bench import records
    from bench.sweep import select_runs
    from bench.worker import base_record
    from methods import method_source_hash

    from helpers import tiny_plan

    plan = tiny_plan(tiny_bert_dir, tiny_data_dir, seeds=(1, 2, 3))
    now, old, unknown = plan
    current = method_source_hash(now.method)
    for done, source in [(now, current), (old, "0" * 16), (unknown, None)]:
        record = {**base_record(done), "status": "ok", "method_source": source}
        records.atomic_write_json(records.record_path(tmp_path, done.key), record)
    selection = select_runs(plan, tmp_path)
    assert selection.statuses == {now.key: "ok", old.key: "stale", unknown.key: "ok"}
    assert selection.to_run == []
    assert select_runs(plan, tmp_path, rerun_stale=True).to_run == [old]


def test_peft_tuner_without_targets_is_refused_before_the_run() -> None:
    """peft has no default LoRA targets for MPNet: preflight says so on a meta-device model
    and names the option that fixes it; with target_modules the pair passes."""
    import torch
    import transformers as tf

    config = tf.MPNetConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, vocab_size=100)  # fmt: skip
    with torch.device("meta"):
        backbone = tf.MPNetForSequenceClassification(config)
    backbone.peft_bench_new_parameters = frozenset()
    with pytest.raises(UserError, match="target_modules"):
        build_method("peft_lora").preflight(backbone)
    build_method("peft_lora", {"target_modules": ["q", "v"]}).preflight(backbone)
    assert not any(n for n, _ in backbone.named_parameters() if "lora" in n)  # a copy was used


def test_source_hash_covers_the_helpers_a_method_runs() -> None:
    from methods import method_source_files

    def names(method: str) -> set[str]:
        return {path.name for path in method_source_files(method)}

    assert {"prefix_tuning.py", "_prompt_method.py", "_prompting.py", "_sources.py", "base.py"} <= (
        names("prefix_tuning")
    )
    assert names("full_finetune") == {"full_finetune.py", "base.py"}
    assert names("peft_lora") == {"peft_tuners.py", "_peft.py", "base.py", "full_finetune.py"}
