"""The peft comparison rows (methods/peft_rows.py): huggingface/peft run through our interface.

What was measured with peft 0.21.2 and transformers 5.24 on tiny random models:

- peft_prompt_tuning and peft_p_tuning (lstm, mlp) work on BERT, RoBERTa, DeBERTa-v2, GPT-2 and
  Llama, for classification, regression and token classification. Token classification: peft
  returns ``[B, m+n, C]`` logits, and the row drops the m virtual positions.
- peft_prefix_tuning attaches on every one of them. Its first forward raises peft's
  ``ValueError: Model does not support past key values which are required for prefix tuning.``
  for every architecture and task kind: transformers 5.24 calls the argument ``cache``, and peft
  looks for ``past_key_values``. Export and load of the merged prefix still work, since they
  never run the backbone.
- With the same parameters, our prompt_tuning / p_tuning (position "shift") and peft's give
  the same hidden states and logits. The measured difference is exactly 0.0 on CPU float32. The
  asserted tolerance is 1e-5.
"""

from __future__ import annotations

import copy
import sys

import pytest

peft = pytest.importorskip(
    "peft", reason="peft is not installed (pip install peft, or the dev extra): peft rows untested"
)
import torch  # noqa: E402
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    DebertaV2Config,
    DebertaV2ForSequenceClassification,
    DebertaV2ForTokenClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2ForTokenClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
    LlamaForTokenClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
)

from bench.config import TrainConfig  # noqa: E402
from bench.errors import UserError  # noqa: E402
from bench.train import task_loss  # noqa: E402
from methods import build_method, get_method, method_names  # noqa: E402
from tasks import get_task  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"  # transformers, via peft
)
TOL = 1e-5
M = 4  # virtual tokens in the tiny tests
SMALL = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "vocab_size": 100,
    "max_position_embeddings": 64,
}
ARCHS = {
    "bert": (BertForSequenceClassification, BertForTokenClassification),
    "roberta": (RobertaForSequenceClassification, RobertaForTokenClassification),
    "deberta": (DebertaV2ForSequenceClassification, DebertaV2ForTokenClassification),
    "gpt2": (GPT2ForSequenceClassification, GPT2ForTokenClassification),
    "llama": (LlamaForSequenceClassification, LlamaForTokenClassification),
}
TASKS = {"seq": "sst2", "reg": "stsb", "tok": "conll2003"}
PREFIX_ERROR = "Model does not support past key values which are required for prefix tuning."


def _config(arch: str):
    if arch == "bert":
        return BertConfig(**SMALL, pad_token_id=0)
    if arch == "roberta":
        return RobertaConfig(**SMALL, pad_token_id=1)
    if arch == "deberta":
        return DebertaV2Config(
            **SMALL,
            pad_token_id=0,
            relative_attention=True,
            position_biased_input=False,
            pos_att_type=["p2c", "c2p"],
        )
    if arch == "gpt2":
        return GPT2Config(
            n_embd=32, n_layer=2, n_head=4, vocab_size=100, n_positions=64, pad_token_id=0,
            bos_token_id=2, eos_token_id=3,
        )  # fmt: skip
    return LlamaConfig(**SMALL, num_key_value_heads=2, pad_token_id=0)


def _backbone(arch: str, kind: str, seed: int = 0):
    """A tiny random HF model with a head sized for ``kind``, as load_backbone would return."""
    config = _config(arch)
    spec = get_task(TASKS[kind])
    config.num_labels = 1 if kind == "reg" else len(spec.labels)
    torch.manual_seed(seed)
    model = ARCHS[arch][kind == "tok"](config)
    model.peft_bench_new_parameters = frozenset()
    return model, spec


def _batch(arch: str) -> dict[str, torch.Tensor]:
    pad = 1 if arch == "roberta" else 0
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 9, 3, pad]])
    batch = {"input_ids": ids, "attention_mask": (ids != pad).long()}
    if arch == "bert":
        batch["token_type_ids"] = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 1, 1, 0]])
    return batch


def _labels(kind: str, spec, batch) -> torch.Tensor:
    if kind == "reg":
        return torch.tensor([0.5, 2.0])
    if kind == "tok":
        labels = torch.randint(len(spec.labels), batch["input_ids"].shape)
        return labels.masked_fill(batch["attention_mask"] == 0, -100)
    return torch.tensor([0, 1])


# --- registry and configs ------------------------------------------------------------------


def test_registered_with_defaults_of_our_methods() -> None:
    names = set(method_names())
    assert {"peft_prompt_tuning", "peft_p_tuning", "peft_prefix_tuning"} <= names
    for row, ours in [
        ("peft_prompt_tuning", "prompt_tuning"),
        ("peft_p_tuning", "p_tuning"),
        ("peft_prefix_tuning", "prefix_tuning"),
    ]:
        row_cfg, our_cfg = build_method(row).config, build_method(ours).config
        assert row_cfg.lr == our_cfg.lr and row_cfg.head_lr == our_cfg.head_lr
        assert row_cfg.num_virtual_tokens == 20
    assert build_method("peft_prompt_tuning").config.init == "random"
    assert build_method("peft_p_tuning").config.encoder == build_method("p_tuning").config.encoder
    assert (
        build_method("peft_prefix_tuning").config.encoder_hidden_size
        == build_method("prefix_tuning").config.prefix_hidden
    )


@pytest.mark.parametrize(
    ("name", "overrides", "fragment"),
    [
        ("peft_prompt_tuning", {"init": "vocab"}, "init must be one of random, text"),
        ("peft_p_tuning", {"encoder": "gru"}, "encoder must be one of lstm, mlp"),
        ("peft_prefix_tuning", {"num_virtual_tokens": 0}, "num_virtual_tokens"),
        ("peft_prefix_tuning", {"encoder_hidden_size": 0}, "encoder_hidden_size"),
        ("peft_p_tuning", {"prompt_length": 5}, "allowed keys"),
    ],
)
def test_config_validation(name, overrides, fragment) -> None:
    with pytest.raises(UserError, match=fragment):
        build_method(name, overrides)


def test_missing_peft_is_a_user_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft now fails as if not installed
    backbone, spec = _backbone("bert", "seq")
    with pytest.raises(UserError, match="pip install peft"):
        build_method("peft_prompt_tuning").attach(backbone, spec)


# --- same parameters, same outputs as our methods -------------------------------------------


def _compare_with_ours(ours, row, theirs) -> dict[str, float]:
    """Run ours and peft's BERT sequence classifier on one batch; return the max differences."""
    ours.eval()
    theirs.eval()
    batch = _batch("bert")
    captured = {}

    def capture(module, args, output):  # after our trim hook: the real tokens only
        captured["last"] = output.last_hidden_state

    handle = ours.model.base_model.register_forward_hook(capture)
    with torch.no_grad():
        out = ours(**batch, output_hidden_states=True)
        ref = theirs(**batch, output_hidden_states=True)
    handle.remove()
    hf = theirs.get_base_model()
    real = ref.hidden_states[-1][:, M:]
    with torch.no_grad():
        peft_real_cls = hf.classifier(hf.bert.pooler(real))
        peft_slot_0 = hf.classifier(hf.bert.pooler(ref.hidden_states[-1]))
    assert len(out.hidden_states) == len(ref.hidden_states) == 3
    assert captured["last"].shape == real.shape == (2, 5, 32)
    return {
        # every layer, prompt slots included: embeddings, layer 1, layer 2
        "hidden": max(
            (a - b).abs().max().item()
            for a, b in zip(out.hidden_states, ref.hidden_states, strict=True)
        ),
        # our trimmed last_hidden_state = peft's hidden states at positions m..m+n-1
        "real_tokens": (captured["last"] - real).abs().max().item(),
        # our head reads the real [CLS]: classifier(pooler(peft_hidden[:, m:]))
        "logits_vs_real_cls": (out.logits - peft_real_cls).abs().max().item(),
        # peft's own head reads position 0, a prompt slot
        "peft_reads_slot_0": (ref.logits - peft_slot_0).abs().max().item(),
    }


def _copy_head(ours, theirs) -> None:
    source = theirs.get_base_model().classifier.modules_to_save["default"]
    ours.model.classifier.load_state_dict(source.state_dict())


def test_prompt_tuning_matches_ours_with_position_shift() -> None:
    backbone, spec = _backbone("bert", "seq")
    ours = build_method(
        "prompt_tuning", {"position": "shift", "prompt_length": M, "init": "random_uniform"}
    ).attach(copy.deepcopy(backbone), spec)
    row = build_method("peft_prompt_tuning", {"num_virtual_tokens": M})
    theirs = row.attach(copy.deepcopy(backbone), spec)
    prompt = theirs.prompt_encoder["default"].embedding.weight
    assert ours.prompts.source.weight.shape == prompt.shape == (M, 32)
    with torch.no_grad():
        ours.prompts.source.weight.copy_(prompt)
    _copy_head(ours, theirs)
    diffs = _compare_with_ours(ours, row, theirs)
    assert all(value <= TOL for value in diffs.values()), diffs
    assert torch.equal(ours.prompts.materialize(), row.export(theirs)["prompt_embeddings"])


@pytest.mark.parametrize(("encoder", "hidden"), [("lstm", 12), ("mlp", 24)])
def test_p_tuning_matches_ours_with_position_shift(encoder, hidden) -> None:
    backbone, spec = _backbone("bert", "seq")
    ours = build_method(
        "p_tuning",
        {
            "position": "shift",
            "prompt_length": M,
            "init": "random_uniform",
            "encoder": encoder,
            "encoder_hidden": hidden,
        },
    ).attach(copy.deepcopy(backbone), spec)
    row = build_method(
        "peft_p_tuning",
        {"num_virtual_tokens": M, "encoder": encoder, "encoder_hidden_size": hidden},
    )
    theirs = row.attach(copy.deepcopy(backbone), spec)
    # peft's PromptEncoder: embedding, lstm_head (LSTM only), mlp_head. Ours: embedding, lstm, mlp.
    # strict loading after renaming proves that names, shapes and layer order agree.
    state = theirs.prompt_encoder["default"].state_dict()
    renamed = {
        k.replace("lstm_head.", "lstm.").replace("mlp_head.", "mlp."): v for k, v in state.items()
    }
    ours.prompts.source.load_state_dict(renamed, strict=True)
    _copy_head(ours, theirs)
    diffs = _compare_with_ours(ours, row, theirs)
    assert all(value <= TOL for value in diffs.values()), diffs
    merged = row.export(theirs)["prompt_embeddings"]
    assert (ours.prompts.materialize() - merged).abs().max().item() <= TOL


# --- every row through the Method interface -------------------------------------------------

WORKING = [
    ("peft_prompt_tuning", {}, "bert", "seq"),
    ("peft_prompt_tuning", {}, "roberta", "reg"),
    ("peft_prompt_tuning", {}, "deberta", "tok"),
    ("peft_prompt_tuning", {"init": "sample_vocab"}, "gpt2", "seq"),
    ("peft_prompt_tuning", {}, "llama", "tok"),
    ("peft_p_tuning", {"encoder": "lstm"}, "bert", "tok"),
    ("peft_p_tuning", {"encoder": "lstm", "encoder_dropout": 0.1}, "roberta", "seq"),
    ("peft_p_tuning", {"encoder": "mlp"}, "deberta", "reg"),
    ("peft_p_tuning", {"encoder": "mlp"}, "gpt2", "tok"),
    ("peft_p_tuning", {"encoder": "lstm"}, "llama", "seq"),
]


@pytest.mark.parametrize(("name", "overrides", "arch", "kind"), WORKING)
def test_row_trains_exports_and_loads_exactly(name, overrides, arch, kind, tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    backbone, spec = _backbone(arch, kind)
    pristine = copy.deepcopy(backbone)
    frozen = {n: p.detach().clone() for n, p in backbone.base_model.named_parameters()}
    method = build_method(name, {"num_virtual_tokens": M, **overrides})
    model = method.attach(backbone, spec)
    batch = _batch(arch)
    n = batch["input_ids"].shape[1]

    trained = method.trained_names(model)
    assert trained == [p for p, q in model.named_parameters() if q.requires_grad]
    assert any(t.startswith("prompt_encoder.") for t in trained)
    assert all(t.startswith("prompt_encoder.") or ".modules_to_save." in t for t in trained)

    groups = method.param_groups(model, TrainConfig())
    assert groups[0]["lr"] == method.config.lr and groups[0]["weight_decay"] == 0.0
    grouped = sum(p.numel() for g in groups for p in g["params"])
    counts = method.parameter_counts(model)
    assert grouped == counts.trainable
    assert counts.matches_formula
    assert counts.stored == M * 32 + counts.head
    assert counts.backbone == sum(frozen_p.numel() for frozen_p in frozen.values())

    initial = method.export(model)
    optimizer = torch.optim.AdamW(groups)
    model.train()
    for _ in range(2):
        logits = model(**batch).logits
        labels = 1 if kind == "reg" else len(spec.labels)
        assert logits.shape == ((2, n, labels) if kind == "tok" else (2, labels))
        task_loss(spec.kind.value, logits, _labels(kind, spec, batch)).backward()
        optimizer.step()
        optimizer.zero_grad()
    for key, value in model.get_base_model().base_model.named_parameters():
        if key in frozen:
            assert torch.equal(value, frozen[key]), f"backbone weight {key} changed"

    model.eval()
    with torch.no_grad():
        expected = model(**batch).logits
    delta = method.export(model)
    heads = {t.replace(".modules_to_save.default", "") for t in trained if ".modules_to_save." in t}
    assert set(delta) == {"prompt_embeddings"} | heads  # e.g. base_model.classifier.weight
    assert delta["prompt_embeddings"].shape == (M, 32)  # p-tuning: the encoder's output, merged
    assert not torch.equal(delta["prompt_embeddings"], initial["prompt_embeddings"])
    save_file(delta, str(tmp_path / "delta.safetensors"))
    loaded = method.load(pristine, spec, load_file(str(tmp_path / "delta.safetensors"))).eval()
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, expected)


def test_token_logits_are_peft_logits_without_the_virtual_positions() -> None:
    backbone, spec = _backbone("bert", "tok")
    method = build_method("peft_prompt_tuning", {"num_virtual_tokens": M})
    model = method.attach(backbone, spec).eval()
    batch = _batch("bert")
    with torch.no_grad():
        ours = model(**batch).logits
        hf = model.get_base_model()
        embeds = torch.cat(
            [
                model.prompt_encoder["default"].embedding.weight.expand(2, -1, -1),
                hf.get_input_embeddings()(batch["input_ids"]),
            ],
            dim=1,
        )
        full = hf(
            inputs_embeds=embeds,
            attention_mask=torch.cat([torch.ones(2, M).long(), batch["attention_mask"]], dim=1),
            token_type_ids=torch.cat([torch.zeros(2, M).long(), batch["token_type_ids"]], dim=1),
        ).logits
    assert full.shape[1] == M + 5 and ours.shape[1] == 5
    assert torch.equal(ours, full[:, M:])


# --- prefix tuning: peft's error propagates ---------------------------------------------------


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("kind", ["seq", "tok"])
def test_prefix_tuning_forward_raises_peft_error(arch, kind) -> None:
    backbone, spec = _backbone(arch, kind)
    method = build_method("peft_prefix_tuning", {"num_virtual_tokens": M, "encoder_hidden_size": 8})
    model = method.attach(backbone, spec)  # attaching works
    with pytest.raises(ValueError, match=PREFIX_ERROR) as caught:
        model(**_batch(arch))
    assert type(caught.value) is ValueError  # peft's own exception, not a UserError


def test_prefix_tuning_counts_export_and_load() -> None:
    backbone, spec = _backbone("bert", "seq")
    pristine = copy.deepcopy(backbone)
    h = 8
    method = build_method("peft_prefix_tuning", {"num_virtual_tokens": M, "encoder_hidden_size": h})
    model = method.attach(backbone, spec)
    counts = method.parameter_counts(model)
    layers, d, head = 2, 32, 32 * 2 + 2
    assert counts.head == head
    assert counts.stored == counts.formula_value == 2 * layers * M * d + head
    assert counts.formula == f"2*L*m*d + head = 2*{layers}*{M}*{d} + {head}"
    encoder = M * d + (d * h + h) + (h * 2 * layers * d + 2 * layers * d)
    assert counts.trainable == encoder + head
    with torch.no_grad():
        for p in model.prompt_encoder.parameters():
            p.add_(0.1 * torch.randn_like(p))  # "trained"
    delta = method.export(model)
    assert delta["prompt_embeddings"].shape == (M, 2 * layers * d)
    loaded = method.load(pristine, spec, delta)
    again = method.export(loaded)
    assert set(again) == set(delta)
    assert all(torch.equal(again[k], delta[k]) for k in delta)
    # The key/value prefixes peft would hand to the model are the same after loading.
    trained, reloaded = model.get_prompt(batch_size=2), loaded.get_prompt(batch_size=2)
    for layer in range(layers):
        for part in ("keys", "values"):
            a = getattr(trained.layers[layer], part)
            b = getattr(reloaded.layers[layer], part)
            assert a.shape == (2, 4, M, d // 4)
            assert (a - b).abs().max().item() <= TOL


def test_load_rejects_a_foreign_delta() -> None:
    backbone, spec = _backbone("bert", "seq")
    method = build_method("peft_prompt_tuning", {"num_virtual_tokens": M})
    delta = method.export(method.attach(copy.deepcopy(backbone), spec))
    delta["extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match="unexpected \\['extra'\\]"):
        method.load(backbone, spec, delta)


# --- heads, lengths, init ---------------------------------------------------------------------


def test_random_new_modules_outside_the_head_are_trained_and_stored() -> None:
    # DeBERTa's ContextPooler is not in its checkpoints; load_backbone lists it as new.
    backbone, spec = _backbone("deberta", "seq")
    pristine = copy.deepcopy(backbone)
    new = frozenset(
        {"pooler.dense.weight", "pooler.dense.bias", "classifier.weight", "classifier.bias"}
    )
    backbone.peft_bench_new_parameters = pristine.peft_bench_new_parameters = new
    method = build_method("peft_p_tuning", {"num_virtual_tokens": M, "encoder": "mlp"})
    model = method.attach(backbone, spec)
    trained = method.trained_names(model)
    assert any("pooler.dense.modules_to_save" in t for t in trained)
    counts = method.parameter_counts(model)
    assert counts.head == (32 * 32 + 32) + (32 * 2 + 2)
    delta = method.export(model)
    assert "base_model.pooler.dense.weight" in delta
    with torch.no_grad():
        model.get_base_model().pooler.dense.modules_to_save["default"].weight.add_(1.0)
    model.eval()
    batch = _batch("deberta")
    with torch.no_grad():
        expected = model(**batch).logits
        loaded = method.load(pristine, spec, method.export(model)).eval()
        assert torch.equal(loaded(**batch).logits, expected)


def test_check_length_counts_the_virtual_tokens() -> None:
    backbone, spec = _backbone("roberta", "seq")
    method = build_method("peft_prompt_tuning", {"num_virtual_tokens": M})
    model = method.attach(backbone, spec)
    available = 64 - 2  # RoBERTa: positions start after padding_idx 1
    method.check_length(model, available - M)
    with pytest.raises(UserError, match=f"lower max_length to {available - M}"):
        method.check_length(model, available - M + 1)
    deberta, spec = _backbone("deberta", "seq")  # relative positions: no limit from the table
    method.check_length(method.attach(deberta, spec), 10_000)


def test_text_init_embeds_the_task_keywords(tiny_bert_dir) -> None:
    from transformers import AutoTokenizer

    from bench.backbones import load_backbone, resolve_backbone

    spec = get_task("sst2")
    backbone = load_backbone(resolve_backbone(str(tiny_bert_dir)), spec, 0)
    words = backbone.get_input_embeddings().weight.detach().clone()
    method = build_method("peft_prompt_tuning", {"num_virtual_tokens": M, "init": "text"})
    model = method.attach(backbone, spec)
    ids = AutoTokenizer.from_pretrained(str(tiny_bert_dir))(" ".join(spec.keywords))["input_ids"]
    ids = (ids * M)[:M]  # peft cycles the text's ids (specials included) to m
    assert torch.equal(model.prompt_encoder["default"].embedding.weight, words[ids])
    with pytest.raises(UserError, match="no name_or_path"):
        built, _ = _backbone("bert", "seq")
        method.attach(built, spec)


# --- end to end: a run that works and a run that peft refuses --------------------------------


def test_runner_records_ok_and_peft_failure(tiny_bert_dir, tiny_data_dir, tmp_path) -> None:
    from bench.runner import PlanRequest, build_plan, run_serial

    plan = build_plan(
        PlanRequest(
            tasks=["sst2"],
            methods=["peft_p_tuning", "peft_prefix_tuning"],
            seeds=[1],
            backbones=[str(tiny_bert_dir)],
            data_dir=str(tiny_data_dir),
            train={"epochs": 1, "batch_size": 16, "max_length": 32, "max_train_samples": 48},
            method_overrides={"num_virtual_tokens": M},
        )
    )
    records = {r["method"]: r for r in run_serial(plan, tmp_path, progress=False)}
    assert records["peft_p_tuning"]["status"] == "ok"
    assert records["peft_p_tuning"]["params"]["matches_formula"]
    failed = records["peft_prefix_tuning"]
    assert failed["status"] == "failed"
    assert failed["error"]["type"] == "ValueError"
    assert failed["error"]["message"] == PREFIX_ERROR
    assert get_method("peft_prefix_tuning").config_cls().encoder_hidden_size == 512
