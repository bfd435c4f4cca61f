"""Execution options (activation checkpointing, torch.compile) change how a run executes, not
what it computes: the same loss and gradients for every method, placement and architecture, and
a recomputation that really happens."""

from __future__ import annotations

import pytest
import torch
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

from bench.config import TrainConfig
from bench.errors import UserError
from bench.execution import enable_activation_checkpointing
from bench.train import task_loss, train_run
from methods import AttachData, build_method
from tasks import get_task

from test_prompt_methods import (
    ARCHS,
    TASKS,
    VARIANTS,
    layer_list,
    make_backbone,
    make_inputs,
    make_labels,
    make_method,
)

#: Whole-model methods, ours and peft's, on BERT (the prompt variants run on every arch).
OTHER_METHODS = ("full_finetune", "peft_prompt_tuning", "peft_p_tuning")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(method, arch: str, kind: str, checkpointing: bool):
    torch.manual_seed(0)
    backbone = make_backbone(arch, kind)
    backbone.config.use_cache = False  # as bench.backbones.load_backbone leaves it
    model = method.attach(backbone, get_task(TASKS[kind]), AttachData(vocab_ids=list(range(5, 90))))
    if checkpointing:
        enable_activation_checkpointing(model)
    return model.train()


def loss_and_grads(model, arch: str, kind: str):
    """One training forward and backward (dropout on, fixed RNG); also how many times the
    first layer's first linear map ran (the layer's forward is what a checkpoint recomputes)."""
    calls = []
    layer = layer_list(model_backbone(model))[0]
    linear = next(m for m in layer.modules() if isinstance(m, torch.nn.Linear | Conv1D))
    handle = linear.register_forward_hook(lambda *_: calls.append(1))
    ids, mask = make_inputs(arch)
    torch.manual_seed(5)
    logits = model(input_ids=ids, attention_mask=mask).logits
    loss = task_loss(kind, logits, make_labels(kind, mask))
    loss.backward()
    handle.remove()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads, len(calls)


def model_backbone(model):
    """The transformers model inside ours (PromptedModel.model) or peft's (.base_model.model)."""
    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            return module
    raise AssertionError(type(model))


def assert_same_step(method_factory, arch: str, kind: str) -> None:
    plain_loss, plain, plain_calls = loss_and_grads(
        build(method_factory(), arch, kind, False), arch, kind
    )
    ckpt_loss, ckpt, ckpt_calls = loss_and_grads(
        build(method_factory(), arch, kind, True), arch, kind
    )
    assert (plain_calls, ckpt_calls) == (1, 2)  # the backward pass really recomputed the layer
    assert ckpt_loss == plain_loss
    assert plain.keys() == ckpt.keys() and plain
    for name in plain:
        assert torch.equal(plain[name], ckpt[name]), name


@pytest.mark.parametrize("kind", ["classification", "token_classification"])
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_checkpointing_gives_bitwise_equal_gradients(variant, arch, kind) -> None:
    """Hidden and kv prompts are read again when each layer is recomputed in the backward pass;
    a prompt missing there changes the gradient (kv: the key length, so it fails outright)."""
    assert_same_step(lambda: make_method(variant, arch, prompt_dropout=0.1), arch, kind)


@pytest.mark.parametrize("name", OTHER_METHODS)
def test_checkpointing_gives_bitwise_equal_gradients_for_other_methods(name) -> None:
    pytest.importorskip("peft")
    assert_same_step(lambda: build_method(name, {}), "bert", "classification")


@pytest.mark.parametrize("variant", ["p_tuning_v2-kv", "p_tuning_v2-hidden", "prefix_tuning"])
def test_layer_prompts_are_released_after_the_backward_pass(variant) -> None:
    model = build(make_method(variant, "bert"), "bert", "classification", True)
    ids, mask = make_inputs("bert")
    logits = model(input_ids=ids, attention_mask=mask).logits
    attentions = model._attentions
    assert model._layer_prompts is not None  # held for the recomputation
    logits.sum().backward()
    assert model._layer_prompts is None
    assert all(a._peft_bench_prefix is None for a in attentions)
    # Evaluation (no gradient) never holds anything.
    with torch.no_grad():
        model.eval()(input_ids=ids, attention_mask=mask)
    assert model._layer_prompts is None and model._current is None


def test_checkpointing_needs_a_model_that_supports_it() -> None:
    with pytest.raises(UserError, match="Sequential contains no transformers model"):
        enable_activation_checkpointing(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_execution_options_in_the_run_key() -> None:
    assert "activation_checkpointing" not in TrainConfig(activation_checkpointing=True).key_dict()
    assert "compile" not in TrainConfig().key_dict()
    assert TrainConfig(compile=True).key_dict()["compile"] is True
    for name in ("activation_checkpointing", "compile"):
        with pytest.raises(UserError, match=name):
            TrainConfig(**{name: "yes"})


def test_a_checkpointed_run_reproduces_the_plain_run(tiny_bert_dir, tiny_data_dir) -> None:
    from helpers import tiny_plan

    (plain,) = tiny_plan(tiny_bert_dir, tiny_data_dir)
    (ckpt,) = tiny_plan(tiny_bert_dir, tiny_data_dir, activation_checkpointing=True)
    assert ckpt.key == plain.key
    a = train_run(plain, device="cpu", progress=False)
    b = train_run(ckpt, device="cpu", progress=False)
    assert b.metrics == a.metrics and b.curve == a.curve
    assert b.extra["execution"] == {"activation_checkpointing": ["BertForSequenceClassification"]}
    assert "execution" not in a.extra


def test_a_compiled_run_matches_the_eager_run_within_rounding(tiny_bert_dir, tiny_data_dir):
    """Inductor fuses kernels, so float rounding differs: training losses agree to 1e-4
    (relative) and the selection metrics of every evaluation to 1e-6."""
    from helpers import tiny_plan

    (eager,) = tiny_plan(tiny_bert_dir, tiny_data_dir, epochs=1)
    (compiled,) = tiny_plan(tiny_bert_dir, tiny_data_dir, epochs=1, compile=True)
    assert compiled.key != eager.key
    a = train_run(eager, device="cpu", progress=False)
    b = train_run(compiled, device="cpu", progress=False)
    assert b.extra["execution"] == {"compiled": True}
    assert len(a.curve) == len(b.curve)
    for x, y in zip(a.curve, b.curve, strict=True):
        assert y["train_loss"] == pytest.approx(x["train_loss"], rel=1e-4)
        assert y["selection"] == pytest.approx(x["selection"], abs=1e-6)
    for split in a.metrics:
        assert b.metrics[split] == pytest.approx(a.metrics[split], abs=1e-6)


def test_cli_flags_reach_the_record(tiny_bert_dir, tiny_data_dir, tmp_path, capsys) -> None:
    import json

    from bench.cli import main

    from helpers import tiny_cli

    argv = tiny_cli(tiny_bert_dir, tiny_data_dir, tmp_path, "--epochs", "1", "--seeds", "13,")
    assert main([*argv, "--activation-checkpointing"]) == 0
    (path,) = (tmp_path / "runs").glob("*.json")
    record = json.loads(path.read_text())
    assert record["status"] == "ok"
    assert record["config"]["train"]["activation_checkpointing"] is True
    assert record["execution"] == {"activation_checkpointing": ["BertForSequenceClassification"]}
    # The same key as the plain run's: that run is already done.
    assert main([*argv, "--dry-run"]) == 0
    assert "0 to run" in capsys.readouterr().out


def test_perf_measures_with_checkpointing_and_merges_interleaved_repeats(tiny_bert_dir) -> None:
    from bench.perf import PerfConfig, merge_repeats, run_perf

    config = PerfConfig(
        backbone=str(tiny_bert_dir), methods=("p_tuning_v2",), seq_len=16, batch_size=4,
        eval_batch_size=8, steps=3, warmup=1, device="cpu", activation_checkpointing=True,
        repeats=2,
    )  # fmt: skip
    report = run_perf(config, None)
    result = report["results"]["p_tuning_v2"]
    assert "error" not in result, result
    assert len(result["repeats"]) == 2 and len(result["train_step_times_s"]) == 6
    assert result["memory_kind"] == "cpu_peak_rss_live"
    assert result["peak_memory_bytes"] > 0 and result["peak_rss_default_heap_bytes"] > 0
    # Merging: statistics over every step of every process; the median peak memory.
    fake = [
        {**result, "train_step_times_s": [1.0, 2.0, 3.0], "peak_memory_bytes": 10},
        {**result, "train_step_times_s": [4.0, 5.0, 6.0], "peak_memory_bytes": 30},
        {**result, "train_step_times_s": [7.0, 8.0, 9.0], "peak_memory_bytes": 20},
    ]
    merged = merge_repeats(config, [merge_repeats(config, [f]) for f in fake])
    assert merged["train_step"]["median_s"] == 5.0 and merged["peak_memory_bytes"] == 20
    assert merge_repeats(config, [fake[0], {"method": "x", "error": "boom"}])["error"] == "boom"
