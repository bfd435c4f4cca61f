"""P-Tuning v1's template placement and verbalizer on tiny BERT and RoBERTa checkpoints (saved
with their masked-LM heads and real fast tokenizers, built here)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import transformers as tf
from conftest import VOCAB

from bench.config import TrainConfig
from bench.errors import UserError
from methods import AttachData, build_method
from tasks import get_task

M = 4
WORDS = ["the movie was good", "a bad plot", "the story is fine", "really dull acting"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _save(root: Path, config, tokenizer, with_head: bool = True) -> Path:
    torch.manual_seed(0)
    model = (tf.AutoModelForMaskedLM if with_head else tf.AutoModel).from_config(config)
    model.save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Directories of a tiny BERT (WordPiece) and RoBERTa (byte-level BPE), both with an MLM
    head, and a BERT without one (as MiniLM)."""
    from tokenizers import ByteLevelBPETokenizer

    sizes = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 64, "max_position_embeddings": 64}  # fmt: skip
    root = tmp_path_factory.mktemp("template")
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    bert_tokenizer = tf.BertTokenizerFast(vocab=str(root / "vocab.txt"), do_lower_case=True)
    bert_config = tf.BertConfig(vocab_size=len(VOCAB), **sizes)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        WORDS * 20, vocab_size=420, min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )  # fmt: skip
    (root / "bpe").mkdir()
    bpe.save_model(str(root / "bpe"))
    roberta_tokenizer = tf.RobertaTokenizerFast(
        vocab=str(root / "bpe" / "vocab.json"), merges=str(root / "bpe" / "merges.txt")
    )
    roberta_config = tf.RobertaConfig(
        vocab_size=len(roberta_tokenizer), pad_token_id=1, bos_token_id=0, eos_token_id=2,
        **{**sizes, "max_position_embeddings": 66},
    )  # fmt: skip
    return {
        "bert": _save(root / "bert", bert_config, bert_tokenizer),
        "roberta": _save(root / "roberta", roberta_config, roberta_tokenizer),
        "bert-no-head": _save(root / "plain", bert_config, bert_tokenizer, with_head=False),
    }


def task(name: str = "rte"):
    """RTE / SST-2 with label words every tiny vocabulary has as one token."""
    words = {"rte": {"entailment": "good", "not_entailment": "bad"},
             "sst2": {"negative": "bad", "positive": "good"}}[name]  # fmt: skip
    return dataclasses.replace(get_task(name), verbalizer=words)


def attached(arch: str, checkpoints, spec=None, **overrides):
    spec = spec or task()
    directory = checkpoints[arch]
    tokenizer = tf.AutoTokenizer.from_pretrained(directory)
    backbone = tf.AutoModelForSequenceClassification.from_pretrained(
        directory, num_labels=len(spec.labels)
    )
    backbone.peft_bench_new_parameters = frozenset()
    values = {"profile": "official", "prompt_length": M, **overrides}
    method = build_method("p_tuning", values)
    torch.manual_seed(0)
    model = method.attach(backbone, spec, AttachData(tokenizer=tokenizer))
    return method, model.eval(), tokenizer


def encode(tokenizer, pairs) -> dict[str, torch.Tensor]:
    first, second = zip(*pairs, strict=True)
    return tokenizer(list(first), list(second), padding=True, return_tensors="pt")


PAIRS = [("the movie was good", "a bad plot"), ("dull", "the story is fine really")]


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_template_lays_out_fields_slots_and_mask(arch, checkpoints) -> None:
    """RTE: ``{sentence1} Question: {sentence2} ? [P] Answer: [MASK] .`` between the model's
    start and end tokens, the fields' own tokens, M slots, one mask; pads after."""
    method, model, tokenizer = attached(arch, checkpoints)
    batch = encode(tokenizer, PAIRS)
    ids, mask, slots, where = model.relayout(batch["input_ids"], batch["attention_mask"])

    def words(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    for row, (first, second) in enumerate(PAIRS):
        expected = [
            tokenizer.cls_token_id, *words(first), *words("Question:"), *words(second),
            *words("?"), *[model.template.placeholder_id] * M, *words("Answer:"),
            tokenizer.mask_token_id, *words("."), tokenizer.sep_token_id,
        ]  # fmt: skip
        length = int(mask[row].sum())
        assert ids[row, :length].tolist() == expected
        assert (ids[row, length:] == tokenizer.pad_token_id).all()
        assert where[row].item() == expected.index(tokenizer.mask_token_id)
        slot_at = [i for i, s in enumerate(slots[row].tolist()) if s]
        start = 1 + len(words(first) + words("Question:") + words(second) + words("?"))
        assert slot_at == list(range(start, start + M))
    assert not (batch["attention_mask"].sum(1) == mask.sum(1)).any()  # the template adds tokens


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_verbalizer_reads_the_mlm_head_at_the_mask(arch, checkpoints) -> None:
    method, model, tokenizer = attached(arch, checkpoints)
    batch = encode(tokenizer, PAIRS)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, 2)  # one entry per label
    # reference: the full masked-LM model on the templated ids, pseudo tokens swapped in
    mlm = tf.AutoModelForMaskedLM.from_pretrained(checkpoints[arch]).eval()
    ids, mask, slots, where = model.relayout(batch["input_ids"], batch["attention_mask"])
    with torch.no_grad():
        embeds = mlm.get_input_embeddings()(ids)
        embeds[slots] = model.prompts().repeat(2, 1)
        vocab_logits = mlm(inputs_embeds=embeds, attention_mask=mask).logits
    words = [tokenizer(" good", add_special_tokens=False)["input_ids"][-1],
             tokenizer(" bad", add_special_tokens=False)["input_ids"][-1]]  # fmt: skip
    assert list(model.template.label_ids) == words
    expected = vocab_logits[torch.arange(2), where][:, words]
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
    # the mask position matters: another position gives other scores
    other = vocab_logits[torch.arange(2), where - 1][:, words]
    assert not torch.allclose(logits, other, atol=1e-4)


def test_only_the_prompt_encoder_trains_unless_the_backbone_is_tuned(checkpoints) -> None:
    method, model, tokenizer = attached("bert", checkpoints)
    trained = method.trained_names(model)
    assert trained and all(n.startswith("prompts.") for n in trained)
    counts = method.parameter_counts(model)
    assert counts.stored == M * 32 and counts.head == 0
    model.train()
    batch = encode(tokenizer, PAIRS)
    model(**batch).logits.sum().backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n not in trained)
    assert all(p.grad is not None for n, p in model.named_parameters() if n in trained)
    tuned, tuned_model, _ = attached("bert", checkpoints, train_backbone=True)
    names = set(tuned.trained_names(tuned_model))
    assert "model.bert.encoder.layer.0.attention.self.query.weight" in names
    assert "mlm_head.predictions.transform.dense.weight" in names
    assert not any(n.startswith("model.classifier") for n in names)  # the unused [CLS] head
    lrs = {g["lr"] for g in tuned.param_groups(tuned_model, TrainConfig())}
    assert lrs == {tuned.config.lr, tuned.config.backbone_lr}


@pytest.mark.parametrize("train_backbone", [False, True])
def test_export_then_load_reproduces_the_logits(checkpoints, train_backbone) -> None:
    method, model, tokenizer = attached("roberta", checkpoints, train_backbone=train_backbone)
    with torch.no_grad():
        for name in method.trained_names(model):
            parameter = model.get_parameter(name)
            parameter.add_(torch.randn_like(parameter) * 0.1)
        batch = encode(tokenizer, PAIRS)
        expected = model(**batch).logits
        fresh = tf.AutoModelForSequenceClassification.from_pretrained(checkpoints["roberta"],
                                                                     num_labels=2)  # fmt: skip
        fresh.peft_bench_new_parameters = frozenset()
        loaded = build_method("p_tuning", method.config.to_dict()).load(
            fresh, task(), method.export(model)
        )
        torch.testing.assert_close(loaded.eval()(**batch).logits, expected, atol=0, rtol=0)


def test_single_field_task(checkpoints) -> None:
    method, model, tokenizer = attached("bert", checkpoints, spec=task("sst2"))
    batch = tokenizer(["the movie was good", "bad"], padding=True, return_tensors="pt")
    ids, mask, slots, where = model.relayout(batch["input_ids"], batch["attention_mask"])
    first = ids[1, : int(mask[1].sum())].tolist()
    assert first[:2] == [tokenizer.cls_token_id, tokenizer.convert_tokens_to_ids("bad")]
    assert first[where[1]] == tokenizer.mask_token_id and int(slots[1].sum()) == M
    assert model(**batch).logits.shape == (2, 2)


def test_clear_errors(checkpoints) -> None:
    with pytest.raises(UserError, match="no masked-LM head.*placement 'prefix'"):
        attached("bert-no-head", checkpoints)
    with pytest.raises(UserError, match="does not apply to regression"):
        attached("bert", checkpoints, spec=get_task("stsb"))
    with pytest.raises(UserError, match="not one known token"):
        attached("bert", checkpoints, spec=dataclasses.replace(
            get_task("rte"), verbalizer={"entailment": "good", "not_entailment": "zzzqqq"}))
    with pytest.raises(UserError, match="train_backbone applies to placement 'template' only"):
        build_method("p_tuning", {"train_backbone": True})
    with pytest.raises(UserError, match="head_only_epochs 1 does not apply to placement"):
        build_method("p_tuning", {"profile": "official", "head_only_epochs": 1})


def test_prompt_dropout_acts_on_the_pseudo_tokens_in_training(checkpoints) -> None:
    method, model, tokenizer = attached("bert", checkpoints, prompt_dropout=0.5)
    batch = encode(tokenizer, PAIRS)
    model.train()
    model.model.eval()  # only the pseudo-token dropout acts
    torch.manual_seed(1)
    with torch.no_grad():
        first, second = model(**batch).logits, model(**batch).logits
    assert not torch.allclose(first, second)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, model(**batch).logits)


def test_task_yaml_template_validation() -> None:
    from tasks.spec import spec_from_mapping

    base = get_task("rte").to_dict()
    base.pop("hub"), base.pop("local")
    base["local"] = get_task("rte").local.to_dict()
    for template, message in [
        ("{sentence1} [P] [MASK]", "each text field once"),
        ("{sentence1} {sentence2} [P]", "exactly one \\[MASK\\]"),
        ("{sentence1} {sentence2} [MASK]", "at least one \\[P\\]"),
    ]:
        with pytest.raises(UserError, match=message):
            spec_from_mapping({**base, "template": template})
    with pytest.raises(UserError, match="verbalizer is missing 'not_entailment'"):
        spec_from_mapping({**base, "verbalizer": {"entailment": "Yes"}})
    stsb = get_task("stsb").to_dict()
    stsb["local"] = get_task("stsb").local.to_dict()
    stsb.pop("hub")
    with pytest.raises(UserError, match="classification tasks only"):
        spec_from_mapping({**stsb, "template": "{sentence1} [P] [MASK] {sentence2}",
                           "verbalizer": {}})  # fmt: skip


def test_minilm_has_no_mlm_head_and_says_so(minilm_dir) -> None:
    """The real MiniLM package: a sentence-embedding checkpoint without the MLM head."""
    from methods._template import load_mlm_head

    backbone = tf.AutoModelForSequenceClassification.from_pretrained(minilm_dir, num_labels=2)
    with pytest.raises(UserError, match="no masked-LM head in its checkpoint.*cls.predictions"):
        load_mlm_head(backbone)


def test_template_trains_through_the_training_loop(tmp_path, tiny_data_dir) -> None:
    """SST-2's own template and verbalizer (great/terrible) on a tiny BERT whose vocabulary
    has those words: train_run attaches with the tokenizer, trains the encoder, evaluates, and
    the saved delta reloads to the same scores."""
    from bench.runner import PlanRequest, build_plan
    from bench.train import train_run
    from bench.weights import load_trained

    vocab = [*VOCAB, "terrible", "it", "was"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = tf.BertTokenizerFast(vocab=str(tmp_path / "vocab.txt"), do_lower_case=True)
    config = tf.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=64,
                           max_position_embeddings=64)  # fmt: skip
    directory = _save(tmp_path / "bert", config, tokenizer)
    (run,) = build_plan(
        PlanRequest(
            tasks=["sst2"], methods=["p_tuning"], seeds=[13], backbones=[str(directory)],
            data_dir=str(tiny_data_dir),
            train={"epochs": 1, "batch_size": 8, "max_length": 24, "max_train_samples": 48},
            method_overrides={"profile": "official", "prompt_length": M},
        )
    )  # fmt: skip
    delta = tmp_path / "delta.safetensors"
    result = train_run(run, device="cpu", progress=False, delta_path=delta)
    info = result.extra["method_info"]
    assert info["placement"] == "template" and info["profile"] == "official"
    great, terrible = tokenizer.convert_tokens_to_ids(["great", "terrible"])
    assert info["label_ids"] == [terrible, great]  # negative, positive
    assert result.params["trainable"] > result.params["stored"] == M * 32  # LSTM encoder
    assert 0.0 <= result.metrics["validation"]["accuracy"] <= 1.0
    model = load_trained(delta)
    assert model.template.label_ids == (terrible, great)
    batch = tokenizer(["the movie was great", "boring"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert model(**batch).logits.shape == (2, 2)
