"""Engine: run keys, records, data pipeline, training end to end on tiny models, isolation."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from bench import records
from bench.backbones import load_backbone, load_tokenizer, resolve_backbone
from bench.cli import main
from bench.config import RunSpec, TrainConfig
from bench.data import Collator, carve_selection_split, load_task, tokenize_task
from bench.errors import UserError
from bench.runner import run_serial
from methods import build_method
from tasks import get_task

from helpers import tiny_plan as _plan

# --- configuration and keys -------------------------------------------------------------------


def test_train_config_validation_names_the_field() -> None:
    with pytest.raises(UserError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(UserError, match="val_fraction"):
        TrainConfig(val_fraction=1.0)
    with pytest.raises(UserError, match="allowed keys"):
        TrainConfig.from_dict({"epoch": 3})


def test_run_key_depends_on_content_not_paths(tiny_bert_dir, tiny_data_dir, tmp_path) -> None:
    (run,) = _plan(tiny_bert_dir, tiny_data_dir)
    (same,) = _plan(tiny_bert_dir, tiny_data_dir)
    (other_seed,) = _plan(tiny_bert_dir, tiny_data_dir, seeds=(21,))
    assert run.key == same.key != other_seed.key
    moved = RunSpec(**{**run.__dict__, "data_dir": str(tmp_path / "elsewhere")})
    assert moved.key == run.key  # the same data elsewhere is the same run
    changed = RunSpec(**{**run.__dict__, "data_identity": "local:different"})
    assert changed.key != run.key


# --- records ---------------------------------------------------------------------------------


def test_atomic_write_and_torn_index_line(tmp_path: Path) -> None:
    records.atomic_write_json(records.record_path(tmp_path, "k1"), {"key": "k1", "x": float("nan")})
    assert json.loads(records.record_path(tmp_path, "k1").read_text())["x"] is None
    records.append_index(tmp_path, {"key": "k1", "status": "ok"})
    with records.index_path(tmp_path).open("a") as handle:
        handle.write('{"key": "k2", "sta')  # a writer killed mid-line
    assert [e["key"] for e in records.read_index(tmp_path)] == ["k1"]
    assert not list(tmp_path.glob("runs/.*tmp"))


# --- data pipeline ---------------------------------------------------------------------------


def test_token_labels_follow_word_ids(tiny_bert_dir, tiny_data_dir) -> None:
    spec = get_task("conll2003")
    tokenizer = load_tokenizer(resolve_backbone(str(tiny_bert_dir)), spec)
    loaded = load_task(spec, str(tiny_data_dir))
    split = tokenize_task(loaded, tokenizer, "tiny", 32)["train"]
    for example, raw in zip(split.select(range(10)), loaded.splits["train"], strict=False):
        encoding = tokenizer(
            raw["tokens"], is_split_into_words=True, truncation=True, max_length=32
        )
        word_ids = encoding.word_ids()
        assert len(example["labels"]) == len(example["input_ids"])
        seen = set()
        for position, word in enumerate(word_ids):
            if word is None or word in seen:
                assert example["labels"][position] == -100
            else:
                assert example["labels"][position] == raw["tags"][word]
                assert example["word_starts"][word] == position
                seen.add(word)
        assert example["word_tags"] == raw["tags"]


def test_subword_continuations_are_ignored(tiny_bert_dir) -> None:
    spec = get_task("conll2003")
    tokenizer = load_tokenizer(resolve_backbone(str(tiny_bert_dir)), spec)
    from bench.data import _encode_words

    out = _encode_words({"tokens": [["films", "paris"]], "tags": [[0, 5]]}, spec, tokenizer, 16)
    pieces = tokenizer.convert_ids_to_tokens(out["input_ids"][0])
    assert pieces == ["[CLS]", "film", "##s", "paris", "[SEP]"]
    assert out["labels"][0] == [-100, 0, -100, 5, -100]
    assert out["word_starts"][0] == [1, 3]


def test_collator_pads_labels_with_ignore_index(tiny_bert_dir) -> None:
    spec = get_task("conll2003")
    tokenizer = load_tokenizer(resolve_backbone(str(tiny_bert_dir)), spec)
    batch = Collator(tokenizer)(
        [
            {
                "input_ids": [2, 5, 3],
                "attention_mask": [1, 1, 1],
                "labels": [-100, 1, -100],
                "index": 0,
            },
            {"input_ids": [2, 3], "attention_mask": [1, 1], "labels": [-100, -100], "index": 1},
        ]
    )
    assert batch["input_ids"].tolist() == [[2, 5, 3], [2, 3, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[-100, 1, -100], [-100, -100, -100]]


def test_selection_split_is_disjoint_seeded_and_sized(tiny_bert_dir, tiny_data_dir) -> None:
    spec = get_task("sst2")
    tokenizer = load_tokenizer(resolve_backbone(str(tiny_bert_dir)), spec)
    train = tokenize_task(load_task(spec, str(tiny_data_dir)), tokenizer, "t", 32)["train"]
    config = TrainConfig(max_train_samples=50, val_fraction=0.2)
    a_train, a_val, sizes = carve_selection_split(train, config, seed=1)
    b_train, b_val, _ = carve_selection_split(train, config, seed=1)
    c_train, _, _ = carve_selection_split(train, config, seed=2)
    assert (sizes.train_pool, sizes.train, sizes.selection) == (50, 40, 10)
    assert not set(a_train["index"]) & set(a_val["index"])
    assert a_train["index"] == b_train["index"] and a_val["index"] == b_val["index"]
    assert a_train["index"] != c_train["index"]
    with pytest.raises(UserError, match="nothing to train"):
        carve_selection_split(train, TrainConfig(max_train_samples=1), seed=1)


# --- full fine-tuning through the Method interface --------------------------------------------


def test_full_finetune_counts_export_and_load(tiny_bert_dir) -> None:
    from safetensors.torch import load_file, save_file

    spec = get_task("sst2")
    ref = resolve_backbone(str(tiny_bert_dir))
    method = build_method("full_finetune")
    torch.manual_seed(0)
    model = method.attach(load_backbone(ref, spec, 0), spec)
    counts = method.parameter_counts(model)
    total = sum(p.numel() for p in model.parameters())
    head = sum(p.numel() for p in model.classifier.parameters())
    assert counts.trainable == counts.stored == total
    assert counts.head == head and counts.backbone == total - head
    assert counts.matches_formula
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # "trained"
    ids = torch.tensor([[2, 5, 6, 3]])
    model.eval()
    expected = model(input_ids=ids).logits
    path = Path(tiny_bert_dir).parent / "delta.safetensors"
    save_file(method.export(model), str(path))
    torch.manual_seed(123)  # a different random head before loading
    fresh = method.load(load_backbone(ref, spec, 0), spec, load_file(str(path))).eval()
    assert torch.equal(fresh(input_ids=ids).logits, expected)


# --- end to end ------------------------------------------------------------------------------


def _run_cli(tiny_bert_dir, tiny_data_dir, out_dir, *extra: str) -> int:
    return main(
        [
            "run",
            "--methods",
            "full_finetune",
            "--backbone",
            str(tiny_bert_dir),
            "--data-dir",
            str(tiny_data_dir),
            "--output",
            str(out_dir),
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--lr",
            "1e-3",
            "--no-progress",
            *extra,
        ]
    )


def test_end_to_end_records_every_field(tiny_bert_dir, tiny_data_dir, tmp_path) -> None:
    out_dir = tmp_path / "results"
    assert (
        _run_cli(
            tiny_bert_dir,
            tiny_data_dir,
            out_dir,
            "--tasks",
            "sst2,stsb,conll2003",
            "--seeds",
            "13,",
        )
        == 0
    )
    index = records.read_index(out_dir)
    assert len(index) == 3 and {e["status"] for e in index} == {"ok"}
    for entry in index:
        record = records.read_record(out_dir, entry["key"])
        for field in [
            "config",
            "metrics",
            "curve",
            "params",
            "timing",
            "peak_memory_bytes",
            "environment",
            "device",
            "sizes",
            "best",
            "protocol",
            "primary",
            "chance",
        ]:
            assert field in record, field
        assert set(record["chance"]) == set(record["metrics"])
        assert record["config"]["suite"] == "glue" and record["config"]["budget"] is None
        spec = get_task(record["task"])
        assert set(record["primary"]) == set(spec.report_splits)
        assert "selection" in record["metrics"]
        assert record["environment"]["packages"]["torch"] == torch.__version__.split("+")[
            0
        ] or record["environment"]["packages"]["torch"].startswith(torch.__version__[:4])
        assert record["params"]["trainable"] > 0
        assert len(record["curve"]) == 2  # one selection evaluation per epoch
    stsb = next(records.read_record(out_dir, e["key"]) for e in index if e["task"] == "stsb")
    assert {"pearson", "spearmanr"} <= set(stsb["metrics"]["validation"])
    conll = next(records.read_record(out_dir, e["key"]) for e in index if e["task"] == "conll2003")
    assert {"validation", "test"} <= set(conll["metrics"])
    sst2 = next(records.read_record(out_dir, e["key"]) for e in index if e["task"] == "sst2")
    levels = sst2["chance"]["validation"]
    assert (
        0.5 <= levels["majority_rate"] <= 1
        and levels["examples"] == sst2["sizes"]["eval_validation"]
    )
    assert stsb["chance"]["validation"]["majority_rate"] is None
    assert conll["chance"]["test"]["distinct_predictions"] >= 1

    # A second invocation finds everything done and runs nothing.
    started = time.perf_counter()
    assert (
        _run_cli(
            tiny_bert_dir,
            tiny_data_dir,
            out_dir,
            "--tasks",
            "sst2,stsb,conll2003",
            "--seeds",
            "13,",
        )
        == 0
    )
    assert len(records.read_index(out_dir)) == 3
    assert time.perf_counter() - started < 30


def test_same_seed_same_metrics(tiny_bert_dir, tiny_data_dir, tmp_path) -> None:
    first, second = [], []
    for out_dir, sink in [(tmp_path / "a", first), (tmp_path / "b", second)]:
        assert (
            _run_cli(tiny_bert_dir, tiny_data_dir, out_dir, "--tasks", "sst2", "--seeds", "5,") == 0
        )
        (entry,) = records.read_index(out_dir)
        record = records.read_record(out_dir, entry["key"])
        sink.append((record["metrics"], [p["train_loss"] for p in record["curve"]]))
    assert first == second


def test_tiny_model_learns_the_synthetic_task(tiny_bert_dir, tiny_data_dir, tmp_path) -> None:
    out_dir = tmp_path / "results"
    assert (
        _run_cli(
            tiny_bert_dir,
            tiny_data_dir,
            out_dir,
            "--tasks",
            "sst2",
            "--seeds",
            "1,",
            "--epochs",
            "6",
        )
        == 0
    )
    (entry,) = records.read_index(out_dir)
    assert entry["primary"]["validation"] >= 0.8  # majority class: 0.5


def test_failing_run_is_isolated_and_keeps_existing_records(
    tiny_bert_dir, tiny_data_dir, tmp_path, monkeypatch
) -> None:
    out_dir = tmp_path / "results"
    ok_plan = _plan(tiny_bert_dir, tiny_data_dir, seeds=(1,))
    run_serial(ok_plan, out_dir, progress=False)
    before = records.record_path(out_dir, ok_plan[0].key).read_bytes()

    import bench.train

    def broken_loss(kind, logits, labels):
        raise RuntimeError("boom in the loss")

    monkeypatch.setattr(bench.train, "task_loss", broken_loss)
    plan = _plan(tiny_bert_dir, tiny_data_dir, seeds=(1, 2, 3))
    results = run_serial(plan, out_dir, progress=False)
    assert [r["status"] for r in results] == ["ok", "failed", "failed"]
    assert results[1]["error"]["type"] == "RuntimeError"
    assert "boom in the loss" in results[1]["error"]["message"]
    assert records.record_path(out_dir, ok_plan[0].key).read_bytes() == before

    monkeypatch.setattr(
        bench.train, "task_loss", lambda kind, logits, labels: logits.sum() * float("nan")
    )
    (diverged,) = run_serial(
        _plan(tiny_bert_dir, tiny_data_dir, seeds=(4,)), out_dir, progress=False
    )
    assert diverged["status"] == "diverged"


def test_label_outside_label_set_fails_before_any_run(
    tiny_bert_dir, tiny_data_dir, tmp_path, capsys
) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    train = data / "SST-2" / "train.tsv"
    train.write_text(train.read_text() + "an odd sentence\t7\n")
    code = _run_cli(tiny_bert_dir, data, tmp_path / "out", "--tasks", "sst2", "--seeds", "1,")
    err = capsys.readouterr().err
    assert code == 2
    assert "'7'" in err or " 7" in err
    assert not (tmp_path / "out" / "runs").exists()


# --- offline behaviour -----------------------------------------------------------------------


def test_offline_backbone_is_a_clear_error_not_a_hang() -> None:
    spec = get_task("sst2")
    started = time.perf_counter()
    with pytest.raises(UserError, match="--backbone"):
        load_tokenizer(resolve_backbone("peft-bench-tests/no-such-model"), spec)
    assert time.perf_counter() - started < 20


def test_offline_hub_dataset_points_at_data_dir() -> None:
    from bench.hub import hub_reachable, prepare_hub_access

    if hub_reachable():
        pytest.skip("the Hub is reachable here")
    prepare_hub_access()
    started = time.perf_counter()
    with pytest.raises(UserError, match="--data-dir"):
        load_task(get_task("rte"), None)
    assert time.perf_counter() - started < 20


@pytest.mark.parametrize("method", ["p_tuning_v2", "p_tuning", "full_finetune"])
def test_saved_delta_reproduces_the_recorded_metrics(
    tiny_bert_dir, tiny_data_dir, tmp_path, method
) -> None:
    from bench.train import evaluate
    from bench.weights import load_trained, read_delta

    out_dir = tmp_path / "results"
    method_args = "reparam=mlp" if method == "p_tuning_v2" else ""
    code = _run_cli(
        tiny_bert_dir,
        tiny_data_dir,
        out_dir,
        "--methods",
        method,
        "--tasks",
        "sst2",
        "--seeds",
        "3,",
        "--save-delta",
        "--method-args",
        method_args,
    )
    assert code == 0
    (entry,) = records.read_index(out_dir)
    record = records.read_record(out_dir, entry["key"])
    path = out_dir / record["delta_file"]
    tensors, metadata = read_delta(path)
    assert metadata["method"] == method and metadata["run_key"] == entry["key"]
    assert sum(t.numel() for t in tensors.values()) == record["params"]["stored"]

    spec = get_task("sst2")
    ref = resolve_backbone(str(tiny_bert_dir))
    tokenizer = load_tokenizer(ref, spec)
    dev = tokenize_task(
        load_task(spec, str(tiny_data_dir)), tokenizer, ref.identity, record["max_length"]
    )["validation"].to_list()
    model = load_trained(path)
    metrics = evaluate(model, dev, spec, Collator(tokenizer), TrainConfig(), "cpu", progress=False)
    assert metrics == record["metrics"]["validation"]


def test_non_safetensors_delta_is_refused(tmp_path) -> None:
    from bench.weights import read_delta

    bogus = tmp_path / "delta.safetensors"
    bogus.write_bytes(b"\x80\x04K\x01.")  # a pickle
    with pytest.raises(UserError, match="not a safetensors"):
        read_delta(bogus)


def test_mode_error_at_attach_stops_with_exit_2_and_no_record(
    tiny_bert_dir, tiny_data_dir, tmp_path, capsys
) -> None:
    out_dir = tmp_path / "results"
    code = _run_cli(
        tiny_bert_dir,
        tiny_data_dir,
        out_dir,
        "--tasks",
        "sst2",
        "--seeds",
        "1,",
        "--methods",
        "prompt_tuning",
        "--max-length",
        "32",
        "--method-args",
        "position=shift,prompt_length=40",
    )
    assert code == 2
    assert "exceeds" in capsys.readouterr().err  # 32 + 40 > the tiny model's 64 positions
    assert not list((out_dir / "runs").glob("*.json"))


def test_save_delta_fills_in_a_finished_run(tiny_bert_dir, tiny_data_dir, tmp_path) -> None:
    out_dir = tmp_path / "results"
    args = ("--tasks", "sst2", "--seeds", "2,", "--methods", "prompt_tuning")
    assert _run_cli(tiny_bert_dir, tiny_data_dir, out_dir, *args) == 0
    assert not (out_dir / "deltas").exists()
    assert _run_cli(tiny_bert_dir, tiny_data_dir, out_dir, *args, "--save-delta") == 0
    (entry,) = {e["key"]: e for e in records.read_index(out_dir)}.values()
    assert (out_dir / records.read_record(out_dir, entry["key"])["delta_file"]).is_file()
