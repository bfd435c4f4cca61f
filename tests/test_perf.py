"""The performance harness measures what it claims, and speed work leaves results unchanged.

No timing assertions about our code: only that a known sleep and a known allocation are measured
as such, and that optimizations keep metrics (bitwise, or within float rounding where stated).
"""

from __future__ import annotations

import json
import time

import pytest
import torch

from bench.perf import PerfConfig, measure_method, run_perf, summarize, time_calls


def test_a_known_sleep_is_measured_as_such() -> None:
    times = time_calls(lambda: time.sleep(0.05), 5, lambda: None)
    assert len(times) == 5
    assert all(0.05 <= t < 0.25 for t in times), times
    stats = summarize(times)
    assert 0.05 <= stats["median_s"] < 0.25 and stats["min_s"] <= stats["median_s"]


def test_a_known_allocation_is_measured_as_such() -> None:
    """In a fresh process, as ``bench perf`` measures: here, garbage of earlier tests freed by a
    collection during the measurement would offset the allocation."""
    import subprocess
    import sys

    code = (
        "import time, torch; from bench.perf import peak_rss_sampler\n"
        "with peak_rss_sampler() as peak:\n"
        "    start = peak(); block = torch.ones(2**26)\n"  # 256 MiB, written, so resident
        "    time.sleep(0.05); print(peak() - start)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    size = 256 * 2**20
    grown = int(out.stdout.split()[-1])
    assert 0.9 * size <= grown <= 1.3 * size, out.stdout + out.stderr


def test_the_live_memory_heap_gives_freed_memory_back() -> None:
    """In a process started with LIVE_MEMORY_ENV, RSS falls again when tensors are freed, so
    its peak measures live memory rather than the heap's high-water mark."""
    import os
    import subprocess
    import sys

    from bench.perf import LIVE_MEMORY_ENV

    # 64 blocks of 1 MiB, then all but the last freed: the default heap cannot shrink below the
    # block still held, so its RSS keeps all 64 MiB (from this round or, reused, from the
    # warm-up rounds); the live-memory heap gives back 63.
    code = (
        "import torch; from bench.perf import current_rss\n"
        "start = current_rss()\n"
        "for _ in range(3):\n"
        "    x = [torch.ones(2**18) for _ in range(64)]; del x\n"
        "a = current_rss(); x = [torch.ones(2**18) for _ in range(64)]; keep = x[-1]\n"
        "b = current_rss(); del x; c = current_rss()\n"
        "print((b - a) / 2**20, (b - c) / 2**20, (c - start) / 2**20)"
    )

    def measure(env: dict[str, str]) -> tuple[float, float, float]:
        """MiB grown by the allocation, released by the free, and held at the end."""
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        grown, released, held = map(float, out.stdout.split())
        return grown, released, held

    default = {k: v for k, v in os.environ.items() if k not in LIVE_MEMORY_ENV}
    grown, released, held = measure({**default, **LIVE_MEMORY_ENV})
    assert grown >= 60 and released >= 60
    grown, released, held = measure(default)  # the control: the default heap keeps it
    assert held >= 60 and released < 8


def test_measure_method_reports_every_field(tiny_bert_dir) -> None:
    config = PerfConfig(
        backbone=str(tiny_bert_dir), methods=("prompt_tuning",), seq_len=16, batch_size=4,
        eval_batch_size=8, steps=3, warmup=1, device="cpu",
    )  # fmt: skip
    result = measure_method(config, "prompt_tuning")
    assert result["train_step"]["median_s"] > 0 and result["eval_batch"]["median_s"] > 0
    assert result["train_tokens_per_s"] == pytest.approx(4 * 16 / result["train_step"]["median_s"])
    assert result["trainable"] == result["stored"] > 0
    assert result["memory_kind"] == "peak_rss_minus_baseline"
    assert result["peak_memory_bytes"] > 0


@pytest.mark.parametrize("method", ["full_finetune", "p_tuning_v2"])
def test_measure_method_runs_multiple_choice_batches(tiny_bert_dir, method) -> None:
    """COPA's [B, C, T] batches: one score per choice through bench.train.model_logits."""
    config = PerfConfig(
        backbone=str(tiny_bert_dir), methods=(method,), task="copa", seq_len=16, batch_size=4,
        eval_batch_size=8, steps=2, warmup=1, device="cpu",
    )  # fmt: skip
    result = measure_method(config, method)
    assert result["train_step"]["median_s"] > 0 and result["eval_batch"]["median_s"] > 0
    assert result["trainable"] > 0


def test_perf_command_compares_with_peft_and_writes_json(tiny_bert_dir, tmp_path, capsys) -> None:
    pytest.importorskip("peft")
    config = PerfConfig(
        backbone=str(tiny_bert_dir), methods=("prompt_tuning",), seq_len=16, batch_size=4,
        eval_batch_size=8, steps=2, warmup=1, device="cpu", compare_peft=True,
    )  # fmt: skip
    report = run_perf(config, tmp_path)
    assert set(report["results"]) == {"prompt_tuning", "peft_prompt_tuning"}
    assert set(report["ratios_vs_peft"]["prompt_tuning"]) == {"step_time", "peak_memory"}
    (written,) = tmp_path.glob("*.json")
    assert json.loads(written.read_text())["config"]["seq_len"] == 16
    assert "ours/peft step" in capsys.readouterr().out
    # A saved report prints again as a Markdown table, measuring nothing.
    from bench.cli import main

    assert main(["perf", "--show", str(written), "--table-format", "github"]) == 0
    shown = capsys.readouterr().out
    assert "| prompt_tuning " in shown and "| peft_prompt_tuning " in shown
    assert main(["perf", "--show", str(tmp_path / "missing.json")]) == 2
    assert main(["perf", "--show", str(written), "--table-format", "nope"]) == 2


@pytest.mark.parametrize("task", ["sst2", "stsb", "conll2003"])
def test_length_sorted_batched_evaluation_equals_one_example_at_a_time(
    tiny_bert_dir, tiny_data_dir, task
) -> None:
    from bench.backbones import load_backbone, load_tokenizer, resolve_backbone
    from bench.config import TrainConfig
    from bench.data import Collator, load_task, tokenize_task
    from bench.train import evaluate
    from methods import build_method
    from tasks import get_task

    spec = get_task(task)
    ref = resolve_backbone(str(tiny_bert_dir))
    tokenizer = load_tokenizer(ref, spec)
    data = tokenize_task(load_task(spec, str(tiny_data_dir)), tokenizer, ref.identity, 32)
    examples = data["validation"].to_list()
    torch.manual_seed(0)
    model = build_method("p_tuning_v2", {}).attach(
        load_backbone(ref, spec, tokenizer.pad_token_id), spec, None
    )
    collator = Collator(tokenizer, regression=spec.kind.value == "regression")
    batched = evaluate(model, examples, spec, collator, TrainConfig(eval_batch_size=64), "cpu")
    single = evaluate(model, examples, spec, collator, TrainConfig(eval_batch_size=1), "cpu")
    assert batched.keys() == single.keys()
    # Within float rounding: padding changes logits by ~1e-6, which correlations over a random
    # model's near-constant predictions magnify to ~1e-5.
    for name in batched:
        assert batched[name] == pytest.approx(single[name], abs=1e-4), name


def test_length_grouped_batches_cover_each_example_once_with_less_padding() -> None:
    from bench.data import LengthGroupedBatches

    lengths = [
        int(x) for x in torch.randint(5, 120, (1000,), generator=torch.Generator().manual_seed(1))
    ]
    grouped = list(LengthGroupedBatches(lengths, 16, torch.Generator().manual_seed(0), group=8))
    assert sorted(i for batch in grouped for i in batch) == list(range(1000))
    assert len(grouped) == len(LengthGroupedBatches(lengths, 16, torch.Generator()))
    order = torch.randperm(1000, generator=torch.Generator().manual_seed(0)).tolist()
    random_batches = [order[i : i + 16] for i in range(0, 1000, 16)]

    def padded(batches):
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    assert padded(grouped) < 0.75 * padded(random_batches)
    again = list(LengthGroupedBatches(lengths, 16, torch.Generator().manual_seed(0), group=8))
    assert again == grouped  # seeded: reproducible


def test_group_by_length_is_keyed_only_when_set(tiny_bert_dir, tiny_data_dir) -> None:
    from bench.config import TrainConfig
    from bench.errors import UserError

    assert "group_by_length" not in TrainConfig().key_dict()
    assert TrainConfig(group_by_length=True).key_dict()["group_by_length"] is True
    with pytest.raises(UserError, match="group_by_length"):
        TrainConfig(group_by_length="yes")
