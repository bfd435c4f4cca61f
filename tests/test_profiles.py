"""The ``official`` profiles: each difference from the project's defaults, on tiny models."""

from __future__ import annotations

import math

import pytest
import torch

from bench.config import TrainConfig
from bench.errors import UserError
from bench.train import linear_schedule
from methods import build_method, get_method
from tasks import get_task

from test_prompt_methods import make_backbone, make_inputs

M = 4


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def official(arch: str, method: str = "p_tuning_v2", **overrides):
    built = build_method(method, {"profile": "official", "prompt_length": M, **overrides})
    return built, built.attach(make_backbone(arch), get_task("sst2"))


def test_official_fills_unset_fields_and_explicit_values_win() -> None:
    config = build_method("p_tuning_v2", {"profile": "official"}).config
    for name, value in get_method("p_tuning_v2").config_cls.OFFICIAL.items():
        assert getattr(config, name) == value.value, name
        assert value.source  # every official value names its source
    explicit = build_method("p_tuning_v2", {"profile": "official", "init": "random_uniform"})
    assert explicit.config.init == "random_uniform"
    assert build_method("p_tuning_v2", {}).config.init == "random_uniform"  # project default
    with pytest.raises(UserError, match="profile must be one of project, official"):
        build_method("p_tuning_v2", {"profile": "paper"})


@pytest.mark.parametrize(
    ("method", "std"), [("p_tuning_v2", 0.02), ("prefix_tuning", 1.0)]
)
def test_official_init_statistics(method, std) -> None:
    torch.manual_seed(0)
    extra = {"prefix_hidden": 16} if method == "prefix_tuning" else {}
    _, model = official("bert", method, **extra)
    source = model.prompts.source
    weight = source.weight if method == "p_tuning_v2" else source.embedding.weight
    values = weight.detach().flatten()
    assert values.numel() >= 128
    assert abs(values.mean().item()) < 3 * std / math.sqrt(values.numel())
    assert abs(values.std().item() / std - 1) < 0.15
    project = build_method(method, {"prompt_length": M, **extra})
    project_model = project.attach(make_backbone("bert"), get_task("sst2"))
    project_source = project_model.prompts.source
    project_weight = project_source.weight if method == "p_tuning_v2" else (
        project_source.embedding.weight
    )
    assert project_weight.abs().max() <= 0.5  # U(-0.5, 0.5)


def test_official_roberta_head_is_a_frozen_pooler_and_one_linear() -> None:
    torch.manual_seed(0)
    method, model = official("roberta")
    d, labels = 32, 2
    trained = set(method.trained_names(model))
    assert trained == {
        "prompts.source.weight",
        "model.classifier.classifier.weight",
        "model.classifier.classifier.bias",
    }
    pooler = model.model.classifier.pooler
    assert not pooler.weight.requires_grad and not pooler.bias.requires_grad
    assert abs(pooler.weight.std().item() / 0.02 - 1) < 0.1 and not pooler.bias.any()
    counts = method.parameter_counts(model)
    prefix = 2 * 2 * M * d
    assert counts.trainable == prefix + d * labels + labels
    assert counts.stored == prefix + d * labels + labels + d * d + d  # the random pooler too
    # the project head trains RoBERTa's dense d x d layer
    project = build_method("p_tuning_v2", {"prompt_length": M})
    project_model = project.attach(make_backbone("roberta"), get_task("sst2"))
    assert project.parameter_counts(project_model).trainable == prefix + d * d + d + d * 2 + 2
    # export/load reproduces the logits, frozen random pooler included
    ids, mask = make_inputs("roberta")
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
        torch.manual_seed(0)
        fresh = make_backbone("roberta")  # the same backbone weights
        torch.manual_seed(1)  # a different random pooler unless the delta restores it
        loaded = method.load(fresh, get_task("sst2"), method.export(model))
        torch.testing.assert_close(loaded.eval()(input_ids=ids, attention_mask=mask).logits,
                                   expected, atol=0, rtol=0)  # fmt: skip


def test_official_bert_head_keeps_the_pooler_frozen() -> None:
    torch.manual_seed(0)
    backbone = make_backbone("bert")
    pooler = {"bert.pooler.dense.weight", "bert.pooler.dense.bias"}
    backbone.peft_bench_new_parameters = frozenset(pooler)  # a checkpoint without a pooler
    method = build_method("p_tuning_v2", {"profile": "official", "prompt_length": M})
    model = method.attach(backbone, get_task("sst2"))
    assert not {f"model.{n}" for n in pooler} & set(method.trained_names(model))
    assert {f"head.{n}" for n in pooler} <= set(method.export(model))
    # the project profile trains a pooler the checkpoint lacked
    project = build_method("p_tuning_v2", {"prompt_length": M})
    other = make_backbone("bert")
    other.peft_bench_new_parameters = frozenset(pooler)
    assert {f"model.{n}" for n in pooler} <= set(
        project.trained_names(project.attach(other, get_task("sst2")))
    )


def captured_positions(model, ids, mask) -> torch.Tensor:
    seen = []
    handle = model.model.base_model.embeddings.position_embeddings.register_forward_hook(
        lambda module, args, output: seen.append(args[0])
    )
    with torch.no_grad():
        model.eval()(input_ids=ids, attention_mask=mask)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_official_kv_shifts_real_token_positions_by_m(arch) -> None:
    torch.manual_seed(0)
    _, model = official(arch)
    ids, mask = make_inputs(arch, lengths=(6, 4))
    positions = captured_positions(model, ids, mask)
    n = ids.shape[1]
    if arch == "bert":
        expected = torch.arange(M, M + n).expand(2, n)
    else:  # padding_idx 1: real tokens at 2 + m + i, pads at the padding index
        expected = torch.where(mask.bool(), torch.arange(n) + 2 + M, torch.tensor(1))
    assert torch.equal(positions, expected)
    _, keep = official(arch, position="keep")
    kept = captured_positions(keep, ids, mask)
    assert kept[0, 0].item() == (0 if arch == "bert" else 2)


def test_official_shift_checks_the_length_budget() -> None:
    method, model = official("bert")
    method.check_length(model, 64 - M)
    with pytest.raises(UserError, match=f"lower max_length to {64 - M}"):
        method.check_length(model, 64 - M + 1)


VARIANTS = {
    "kv": ("p_tuning_v2", {}),
    "hidden": ("p_tuning_v2", {"injection": "hidden", "position": "keep"}),
    "input": ("prompt_tuning", {"init": "random_uniform"}),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_per_example_dropout_masks_differ_between_examples(variant) -> None:
    method, extra = VARIANTS[variant]
    torch.manual_seed(0)
    extra = {**extra, "prompt_dropout": 0.5, "prompt_dropout_mask": "per_example"}
    _, model = official("bert", method, **extra)
    ids, mask = make_inputs("bert", lengths=(5, 5))
    ids[1] = ids[0]  # two identical examples
    model.train()
    model.model.eval()  # only the prompt dropout acts
    with torch.no_grad():
        prompts = model.prompt_tensor(3)
        assert prompts.shape[0] == 3 and not torch.equal(prompts[0], prompts[1])
        logits = model(input_ids=ids, attention_mask=mask).logits
    assert not torch.allclose(logits[0], logits[1])
    torch.manual_seed(0)
    _, shared = official("bert", method, **{**extra, "prompt_dropout_mask": "shared"})
    shared.train()
    shared.model.eval()
    with torch.no_grad():
        assert shared.prompt_tensor(3).shape == shared.prompts().shape  # no batch dimension
        logits = shared(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(logits[0], logits[1])


def test_official_warmup_and_weight_decay_reach_the_optimizer() -> None:
    torch.manual_seed(0)
    method, model = official("bert")
    train = method.train_config(TrainConfig(warmup_ratio=0.06, weight_decay=0.01))
    assert (train.warmup_ratio, train.weight_decay) == (0.0, 0.0)
    groups = method.param_groups(model, train)
    assert all(group["weight_decay"] == 0.0 for group in groups)
    optimizer = torch.optim.AdamW(groups)
    scheduler = linear_schedule(optimizer, math.ceil(train.warmup_ratio * 100), 100)
    assert scheduler.get_last_lr()[0] == pytest.approx(method.config.lr)  # no warm-up
    project = build_method("p_tuning_v2", {"prompt_length": M})
    kept = project.train_config(TrainConfig())
    assert (kept.warmup_ratio, kept.weight_decay) == (0.06, 0.01)
    project_model = project.attach(make_backbone("bert"), get_task("sst2"))
    assert any(g["weight_decay"] == 0.01 for g in project.param_groups(project_model, kept))


#: roberta-large's config.json values (FacebookAI/roberta-large), written here: no download.
ROBERTA_LARGE = {
    "vocab_size": 50265,
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "layer_norm_eps": 1e-5,
}


def test_roberta_large_rte_official_counts_against_the_papers_share(capsys) -> None:
    """P-Tuning v2 official on roberta-large RTE (m = 128, the official run_rte_roberta.sh),
    counted on a meta-device model. Paper (arXiv:2110.07602, abstract): "0.1%-3% tuned
    parameters"."""
    import transformers as tf

    config = tf.RobertaConfig(**ROBERTA_LARGE, num_labels=2)
    with torch.device("meta"):
        backbone = tf.RobertaForSequenceClassification(config)
    backbone.peft_bench_new_parameters = frozenset()
    method = build_method("p_tuning_v2", {"profile": "official", "prompt_length": 128})
    counts = method.parameter_counts(method.attach(backbone, get_task("rte")))
    prefix = 2 * 24 * 128 * 1024
    assert counts.trainable == prefix + 1024 * 2 + 2  # prefix + one Linear(d, 2)
    assert counts.stored == counts.trainable + 1024 * 1024 + 1024  # + the frozen random pooler
    share = counts.trainable_pct_of_backbone
    with torch.device("meta"):
        other = tf.RobertaForSequenceClassification(config)
    other.peft_bench_new_parameters = frozenset()
    project = build_method("p_tuning_v2", {"prompt_length": 128})
    own = project.parameter_counts(project.attach(other, get_task("rte")))
    assert own.trainable == prefix + 1024 * 1024 + 1024 + 1024 * 2 + 2  # the d x d dense trains
    with capsys.disabled():
        print(
            f"\nP-Tuning v2 official, roberta-large RTE, m=128: trainable {counts.trainable:,} "
            f"(prefix {prefix:,} + head {counts.trainable - prefix:,}), stored "
            f"{counts.stored:,}, backbone {counts.backbone:,}: {share:.2f}% tuned "
            f"(paper: 0.1%-3%); project profile: trainable {own.trainable:,}, "
            f"{own.trainable_pct_of_backbone:.2f}%"
        )
    assert 0.1 <= share <= 3.0


def test_tables_label_official_runs() -> None:
    import json

    import pandas as pd

    from bench.report.collect import row_labels

    def run(method: str, config: dict) -> dict:
        return {"backbone": "b", "task": "rte", "method": method, "config": json.dumps(config)}

    frame = pd.DataFrame(
        [
            run("p_tuning_v2", {"profile": "official", "lr": 0.005}),
            run("p_tuning_v2", {"lr": 0.005}),
            run("prefix_tuning", {"profile": "official"}),
            run("full_finetune", {"lr": 2e-5}),
        ]
    )
    assert row_labels(frame) == [
        "p_tuning_v2 (official)",
        "p_tuning_v2",
        "prefix_tuning (official)",
        "full_finetune",
    ]


@pytest.mark.parametrize("profile", ["official", "project"])
def test_train_run_schedules_by_the_profile(tiny_bert_dir, tiny_data_dir, profile) -> None:
    """Through the real training loop: the first evaluation's learning rate shows whether the
    6% warm-up was used (the official profile has none), and the run key holds the profile."""
    from bench.runner import PlanRequest, build_plan
    from bench.train import train_run

    (run,) = build_plan(
        PlanRequest(
            tasks=["sst2"], methods=["p_tuning_v2"], seeds=[13], backbones=[str(tiny_bert_dir)],
            data_dir=str(tiny_data_dir),
            train={"epochs": 2, "batch_size": 8, "max_length": 32, "max_train_samples": 80},
            method_overrides={"profile": profile, "lr": 1e-2, "prompt_length": M},
        )
    )  # fmt: skip
    result = train_run(run, device="cpu", progress=False)
    total = result.timing["steps"]
    first = result.curve[0]
    warmup = 0 if profile == "official" else math.ceil(0.06 * total)
    expected = 1e-2 * (total - first["step"]) / (total - warmup)
    assert first["lr"] == pytest.approx(expected, rel=1e-9)
    assert result.extra["method_info"]["profile"] == profile
    assert ("profile" in run.identity()["method_config"]) == (profile == "official")


#: PTuningV2Config's fields before profiles existed: a project config keys as it did then.
PTV2_FIELDS = {"lr", "prompt_length", "init", "position", "prompt_dropout", "head_lr",
               "head_only_epochs", "injection", "reparam", "reparam_hidden"}  # fmt: skip


def test_project_configs_keep_the_keys_of_existing_records() -> None:
    assert set(build_method("p_tuning_v2", {}).config.to_dict()) == PTV2_FIELDS
    assert "placement" not in build_method("p_tuning", {}).config.to_dict()
    # an official config keeps every field, an explicit project value included
    values = build_method("p_tuning_v2", {"profile": "official", "head": "task"}).config
    assert values.to_dict()["head"] == "task"
    again = build_method("p_tuning_v2", values.to_dict()).config
    assert again == values
    changed = build_method("p_tuning_v2", {"head": "pooler_linear"}).config.to_dict()
    assert changed["head"] == "pooler_linear" and "profile" not in changed


def test_kv_shift_on_decoders_counts_from_m_and_refuses_relative_positions() -> None:
    torch.manual_seed(0)
    _, model = official("gpt2", prompt_dropout=0.0, head="task")  # no official GPT-2 head
    ids, mask = make_inputs("gpt2", lengths=(6, 4))
    seen = []
    handle = model.model.transformer.wpe.register_forward_hook(
        lambda module, args, output: seen.append(args[0])
    )
    with torch.no_grad():
        model.eval()(input_ids=ids, attention_mask=mask)
    handle.remove()
    assert seen[0][0].tolist() == list(range(M, M + 6))
    assert seen[0][1, :4].tolist() == list(range(M, M + 4))
    with pytest.raises(UserError, match="takes no position ids.*use position 'keep'"):
        official("deberta")
