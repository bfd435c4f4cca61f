"""Prompt methods (prompt_tuning, p_tuning, p_tuning_v2, prefix_tuning) against references
written here, on tiny random BERT / RoBERTa / DeBERTa-v2 / GPT-2 / Llama models (CPU).

The references recompute attention, embeddings and heads by hand from the backbone's weights,
so a wrong placement, mask, position, pooling or accounting shows up as a number mismatch.
"""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers as tf

from bench.config import TrainConfig
from bench.errors import UserError
from bench.train import task_loss
from methods import AttachData, build_method
from methods._prompting import supported_placements
from tasks import get_task

from helpers import checkout_pythonpath

D, LAYERS, HEADS, KV_HEADS, M, VOCAB = 32, 2, 4, 2, 4, 100
TASKS = {"classification": "sst2", "regression": "stsb", "token_classification": "conll2003"}
NUM_LABELS = {"classification": 2, "regression": 1, "token_classification": 9}
ARCHS = ("bert", "roberta", "deberta", "gpt2", "llama")
PAD = {"bert": 0, "roberta": 1, "deberta": 0, "gpt2": 0, "llama": 0}
MODEL_CLASSES = {
    ("bert", False): tf.BertForSequenceClassification,
    ("bert", True): tf.BertForTokenClassification,
    ("roberta", False): tf.RobertaForSequenceClassification,
    ("roberta", True): tf.RobertaForTokenClassification,
    ("deberta", False): tf.DebertaV2ForSequenceClassification,
    ("deberta", True): tf.DebertaV2ForTokenClassification,
    ("gpt2", False): tf.GPT2ForSequenceClassification,
    ("gpt2", True): tf.GPT2ForTokenClassification,
    ("llama", False): tf.LlamaForSequenceClassification,
    ("llama", True): tf.LlamaForTokenClassification,
}
#: name -> (method, overrides). Small encoders keep the tests fast.
VARIANTS = {
    "prompt_tuning": ("prompt_tuning", {}),
    "p_tuning-lstm": ("p_tuning", {}),
    "p_tuning-mlp": ("p_tuning", {"encoder": "mlp"}),
    "p_tuning_v2-kv": ("p_tuning_v2", {}),
    "p_tuning_v2-kv-mlp": ("p_tuning_v2", {"reparam": "mlp", "reparam_hidden": 16}),
    "p_tuning_v2-hidden": ("p_tuning_v2", {"injection": "hidden"}),
    "p_tuning_v2-hidden-lstm": (
        "p_tuning_v2",
        {"injection": "hidden", "reparam": "lstm", "reparam_hidden": 16},
    ),
    "prefix_tuning": ("prefix_tuning", {"prefix_hidden": 16}),
}
KV_VARIANTS = {"p_tuning_v2-kv", "p_tuning_v2-kv-mlp", "prefix_tuning"}
HIDDEN_VARIANTS = {"p_tuning_v2-hidden", "p_tuning_v2-hidden-lstm"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matrices: one thread is much faster than several, and makes results reproducible
    across processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- builders --------------------------------------------------------------------------------


def make_config(arch: str, kind: str = "classification", layers: int = LAYERS, attn=None):
    common = {"vocab_size": VOCAB, "num_labels": NUM_LABELS[kind], "pad_token_id": PAD[arch]}
    bert_like = {
        "hidden_size": D,
        "num_hidden_layers": layers,
        "num_attention_heads": HEADS,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
    }
    if arch == "bert":
        config = tf.BertConfig(**bert_like, **common)
    elif arch == "roberta":
        config = tf.RobertaConfig(**bert_like, **common, bos_token_id=0, eos_token_id=2)
    elif arch == "deberta":
        config = tf.DebertaV2Config(
            **bert_like,
            **common,
            relative_attention=True,
            position_biased_input=False,
            pos_att_type=["p2c", "c2p"],
        )
    elif arch == "gpt2":
        config = tf.GPT2Config(
            n_embd=D,
            n_layer=layers,
            n_head=HEADS,
            n_positions=64,
            bos_token_id=2,
            eos_token_id=2,
            **common,
        )
    else:
        config = tf.LlamaConfig(
            **bert_like, **common, num_key_value_heads=KV_HEADS, bos_token_id=2, eos_token_id=2
        )
    if attn is not None:
        config._attn_implementation = attn
    return config


def make_backbone(arch: str, kind: str = "classification", layers: int = LAYERS, attn=None):
    """A random backbone with a task head, as ``bench.backbones.load_backbone`` returns it."""
    config = make_config(arch, kind, layers, attn)
    model = MODEL_CLASSES[arch, kind == "token_classification"](config)
    model.peft_bench_new_parameters = frozenset()
    return model


def make_method(variant: str, arch: str = "bert", **overrides):
    name, base = VARIANTS[variant]
    values = {"prompt_length": M, "init": "random_uniform", **base}
    if arch == "llama" and variant not in KV_VARIANTS:
        values["position"] = "shift"  # rotary positions: every slot takes a position
    values.update(overrides)
    return build_method(name, values)


def make_inputs(arch: str, lengths=(6, 4), seed: int = 1):
    """Right-padded ``input_ids`` / ``attention_mask`` (ids >= 5: never pad nor placeholder)."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.full((len(lengths), width), PAD[arch], dtype=torch.long)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        ids[row, :length] = torch.randint(5, VOCAB, (length,), generator=generator)
        mask[row, :length] = 1
    return ids, mask


def make_labels(kind: str, mask: torch.Tensor) -> torch.Tensor:
    generator = torch.Generator().manual_seed(2)
    batch = mask.shape[0]
    if kind == "classification":
        return torch.arange(batch) % 2
    if kind == "regression":
        return torch.rand(batch, generator=generator) * 5
    tags = torch.randint(0, 9, mask.shape, generator=generator)
    return tags.masked_fill(mask == 0, -100)


def supported(variant: str, arch: str) -> bool:
    return True  # every placement works on every architecture here (DeBERTa kv through hooks)


def combos(kinds=("classification",)):
    return [
        pytest.param(variant, arch, kind, id=f"{variant}-{arch}-{kind}")
        for variant in VARIANTS
        for arch in ARCHS
        for kind in kinds
        if supported(variant, arch)
    ]


def head_names(backbone) -> set[str]:
    """Parameters of the task head: outside the base model (``bert.``, ``transformer.``...)."""
    base = backbone.base_model_prefix + "."
    names = {n for n, _ in backbone.named_parameters() if not n.startswith(base)}
    assert names
    return names


# --- 1 / 9: training touches only the declared parameters --------------------------------------


@pytest.mark.parametrize(("variant", "arch", "kind"), combos(tuple(TASKS)))
def test_training_changes_only_declared_parameters(variant, arch, kind) -> None:
    torch.manual_seed(0)
    backbone = make_backbone(arch, kind)
    method = make_method(variant, arch)
    model = method.attach(backbone, get_task(TASKS[kind]))
    ids, mask = make_inputs(arch)
    labels = make_labels(kind, mask)
    trained = set(method.trained_names(model))
    head = {f"model.{n}" for n in head_names(backbone)}
    prompts = {n for n, _ in model.named_parameters() if n.startswith("prompts.")}
    assert trained == head | prompts and prompts
    frozen = {
        n: t.detach().clone()
        for n, t in [*model.named_parameters(), *model.named_buffers()]
        if n not in trained
    }
    before = {n: p.detach().clone() for n, p in model.named_parameters() if n in trained}
    groups = method.param_groups(model, TrainConfig())
    grouped = [id(p) for group in groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for n, p in model.named_parameters() if n in trained)
    optimizer = torch.optim.AdamW(groups)
    model.train()
    for step in range(2):
        logits = model(input_ids=ids, attention_mask=mask).logits
        expected = (2, 6, 9) if kind == "token_classification" else (2, NUM_LABELS[kind])
        assert tuple(logits.shape) == expected
        loss = task_loss(kind, logits, labels)
        assert torch.isfinite(loss)
        loss.backward()
        if step == 0:
            with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
            assert with_grad == trained
            assert all(model.get_parameter(n).grad.abs().sum() > 0 for n in trained)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    state = dict([*model.named_parameters(), *model.named_buffers()])
    changed = [n for n, t in frozen.items() if not torch.equal(state[n], t)]
    assert not changed, f"backbone tensors changed: {changed[:5]}"
    unchanged = [n for n, t in before.items() if torch.equal(state[n], t)]
    assert not unchanged, f"trained tensors did not change: {unchanged}"


# --- references --------------------------------------------------------------------------------


def visible_keys(mask: torch.Tensor, prefix: int) -> torch.Tensor:
    """[B, prefix + T] bool: prefix positions and real tokens are visible as keys."""
    ones = torch.ones(mask.shape[0], prefix, dtype=torch.bool)
    return torch.cat([ones, mask.bool()], dim=1)


def bert_layer_reference(layer, hidden, mask, prefix=None):
    """One BERT/RoBERTa layer by hand. ``hidden`` [B, T, d], ``mask`` [B, T] (1 = real token),
    ``prefix`` [2, H, m, head_dim] keys/values joined in front of the layer's own (or None)."""
    attention = layer.attention.self
    batch, length, _ = hidden.shape
    heads, head_dim = attention.num_attention_heads, attention.attention_head_size

    def split(x):
        return x.view(batch, length, heads, head_dim).transpose(1, 2)

    query = split(attention.query(hidden))
    key, value = split(attention.key(hidden)), split(attention.value(hidden))
    m = 0
    if prefix is not None:
        m = prefix.shape[2]
        key = torch.cat([prefix[0].expand(batch, -1, -1, -1), key], dim=2)
        value = torch.cat([prefix[1].expand(batch, -1, -1, -1), value], dim=2)
    scores = query @ key.transpose(-1, -2) / math.sqrt(head_dim)
    scores = scores.masked_fill(~visible_keys(mask, m)[:, None, None, :], float("-inf"))
    context = (scores.softmax(-1) @ value).transpose(1, 2).reshape(batch, length, -1)
    out = layer.attention.output
    attended = out.LayerNorm(out.dense(context) + hidden)
    ffn = layer.output
    return ffn.LayerNorm(ffn.dense(layer.intermediate(attended)) + attended)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def llama_layer_reference(layer, rotary, hidden, mask, positions, prefix=None):
    """One Llama decoder layer by hand (grouped-query, causal). ``prefix`` [2, kv_heads, m, hd]:
    position-free keys/values visible to every query."""
    attention = layer.self_attn
    batch, length, _ = hidden.shape
    head_dim = attention.head_dim
    normed = layer.input_layernorm(hidden)

    def split(x):
        return x.view(batch, length, -1, head_dim).transpose(1, 2)

    query = split(attention.q_proj(normed))
    key, value = split(attention.k_proj(normed)), split(attention.v_proj(normed))
    cos, sin = rotary(normed, positions)
    cos, sin = cos[:, None], sin[:, None]
    query = query * cos + rotate_half(query) * sin
    key = key * cos + rotate_half(key) * sin
    m = 0
    if prefix is not None:
        m = prefix.shape[2]
        key = torch.cat([prefix[0].expand(batch, -1, -1, -1), key], dim=2)
        value = torch.cat([prefix[1].expand(batch, -1, -1, -1), value], dim=2)
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    scores = query @ key.transpose(-1, -2) / math.sqrt(head_dim)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    allowed = torch.cat([torch.ones(length, m, dtype=torch.bool), causal], dim=1)
    allowed = allowed[None] & visible_keys(mask, m)[:, None, :]
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    context = (scores.softmax(-1) @ value).transpose(1, 2).reshape(batch, length, -1)
    hidden = hidden + attention.o_proj(context)
    return hidden + layer.mlp(layer.post_attention_layernorm(hidden))


def capture_layers(layers):
    """Record each layer's input (after any prompt hook) and output in the returned dict."""
    store = {"in": {}, "out": {}}
    for index, layer in enumerate(layers):

        def pre(module, args, kwargs, index=index):
            store["in"][index] = (args[0] if args else kwargs["hidden_states"]).detach()

        def post(module, args, kwargs, output, index=index):
            store["out"][index] = (output[0] if isinstance(output, tuple) else output).detach()

        layer.register_forward_pre_hook(pre, with_kwargs=True)
        layer.register_forward_hook(post, with_kwargs=True)
    return store


def assert_close_at(actual, expected, mask, atol=1e-5):
    """Compare [B, T, ...] tensors at the real tokens (mask == 1) only."""
    real = mask.bool()
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual[real], expected[real], atol=atol, rtol=0)


# --- 2: key/value prefixes vs hand-written attention ------------------------------------------


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_kv_prefix_matches_hand_attention_encoder(arch, attn) -> None:
    torch.manual_seed(0)
    backbone = make_backbone(arch, attn=attn).eval()
    model = make_method("p_tuning_v2-kv").attach(backbone, get_task("sst2")).eval()
    ids, mask = make_inputs(arch)
    layers = backbone.base_model.encoder.layer
    store = capture_layers(layers)
    with torch.no_grad():
        prompts = model.prompts()
        assert tuple(prompts.shape) == (LAYERS, 2, HEADS, M, D // HEADS)
        model(input_ids=ids, attention_mask=mask)
        embedded = backbone.base_model.embeddings(input_ids=ids)
        # kv leaves the input alone: layer 0 sees the plain embeddings, at real positions
        assert_close_at(store["in"][0], embedded, mask, atol=0)
        for index, layer in enumerate(layers):
            expected = bert_layer_reference(layer, store["in"][index], mask, prompts[index])
            assert_close_at(store["out"][index], expected, mask)
            plain = bert_layer_reference(layer, store["in"][index], mask)
            assert (store["out"][index] - plain)[mask.bool()].abs().max() > 1e-3
            # layer i uses prompt i, not another layer's
            other = bert_layer_reference(layer, store["in"][index], mask, prompts[1 - index])
            assert (store["out"][index] - other)[mask.bool()].abs().max() > 1e-3


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_kv_prefix_matches_hand_attention_llama_gqa(attn) -> None:
    torch.manual_seed(0)
    backbone = make_backbone("llama", attn=attn).eval()
    model = make_method("prefix_tuning", "llama").attach(backbone, get_task("sst2")).eval()
    ids, mask = make_inputs("llama")
    layers = backbone.model.layers
    store = capture_layers(layers)
    positions = torch.arange(ids.shape[1]).expand_as(ids)
    with torch.no_grad():
        prompts = model.prompts()
        assert tuple(prompts.shape) == (LAYERS, 2, KV_HEADS, M, D // HEADS)
        model(input_ids=ids, attention_mask=mask)
        assert_close_at(store["in"][0], backbone.model.embed_tokens(ids), mask, atol=0)
        for index, layer in enumerate(layers):
            hidden = store["in"][index]
            expected = llama_layer_reference(
                layer, backbone.model.rotary_emb, hidden, mask, positions, prompts[index]
            )
            assert_close_at(store["out"][index], expected, mask)
            plain = llama_layer_reference(layer, backbone.model.rotary_emb, hidden, mask, positions)
            assert (store["out"][index] - plain)[mask.bool()].abs().max() > 1e-3


def test_kv_prefix_of_zeros_only_rescales_attention() -> None:
    """Zero keys score 0 and zero values add nothing: with m such slots the attention output is
    the plain output times S / (S + m), S = sum of exp(score) over real keys. Checked against
    the model with all-zero prefixes on a one-layer BERT, by reading the attention's output."""
    torch.manual_seed(0)
    backbone = make_backbone("bert", layers=1).eval()
    model = make_method("p_tuning_v2-kv").attach(backbone, get_task("sst2")).eval()
    with torch.no_grad():
        model.prompts.source.weight.zero_()
    ids, mask = make_inputs("bert")
    attention = backbone.bert.encoder.layer[0].attention.self
    seen = {}
    attention.register_forward_hook(lambda mod, args, out: seen.update(out=out[0].detach()))
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
        hidden = backbone.bert.embeddings(input_ids=ids)
        batch, length, _ = hidden.shape
        q = attention.query(hidden).view(batch, length, HEADS, -1).transpose(1, 2)
        k = attention.key(hidden).view(batch, length, HEADS, -1).transpose(1, 2)
        v = attention.value(hidden).view(batch, length, HEADS, -1).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2) / math.sqrt(D // HEADS)).exp()
        scores = scores * mask[:, None, None, :]
        total = scores.sum(-1, keepdim=True)
        plain = (scores / total) @ v
        expected = plain * total / (total + M)
        expected = expected.transpose(1, 2).reshape(batch, length, D)
    assert_close_at(seen["out"], expected, mask)


# --- 3: hidden placement ----------------------------------------------------------------------


def layer_list(backbone):
    base = backbone.base_model
    return (
        base.encoder.layer if hasattr(base, "encoder") else getattr(base, "h", None) or base.layers
    )


@pytest.mark.parametrize(
    ("arch", "position"),
    [(a, p) for a in ARCHS for p in ("keep", "shift") if (a, p) != ("llama", "keep")],
)
def test_hidden_slots_hold_each_layers_prompt(arch, position) -> None:
    torch.manual_seed(0)
    backbone = make_backbone(arch, "token_classification").eval()
    method = make_method("p_tuning_v2-hidden-lstm", arch, position=position)
    model = method.attach(backbone, get_task("conll2003")).eval()
    ids, mask = make_inputs(arch)
    store = capture_layers(layer_list(backbone))
    with torch.no_grad():
        prompts = model.prompts()
        assert tuple(prompts.shape) == (LAYERS, M, D)
        logits = model(input_ids=ids, attention_mask=mask).logits
    assert tuple(logits.shape) == (2, ids.shape[1], 9)
    for index in range(LAYERS):
        layer_input = store["in"][index]
        assert layer_input.shape[1] == M + ids.shape[1]
        for row in range(ids.shape[0]):
            assert torch.equal(layer_input[row, :M], prompts[index])
        if index:  # real rows are the previous layer's output, untouched
            assert torch.equal(layer_input[:, M:], store["out"][index - 1][:, M:])


@pytest.mark.parametrize("position", ["keep", "shift"])
@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_hidden_real_tokens_match_manual_layers(arch, position) -> None:
    """Reference: the raw model's embedding module on the real ids (keep: positions as without
    prompts; shift: positions after the m slots), then every layer by hand on
    cat(prompt_i, real rows), slots visible; the token head reads the real rows."""
    torch.manual_seed(0)
    backbone = make_backbone(arch, "token_classification").eval()
    raw = copy.deepcopy(backbone)
    method = make_method("p_tuning_v2-hidden", arch, position=position)
    model = method.attach(backbone, get_task("conll2003")).eval()
    ids, mask = make_inputs(arch)
    n = ids.shape[1]
    if arch == "roberta":
        pad = raw.config.pad_token_id
        real = torch.cumsum(mask, 1) * mask + pad
        shifted = torch.where(mask.bool(), real + M, pad)
    else:
        real = torch.arange(n).expand_as(ids)
        shifted = real + M
    positions = real if position == "keep" else shifted
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
        prompts = model.prompts()
        hidden = raw.base_model.embeddings(input_ids=ids, position_ids=positions)
        full_mask = torch.cat([torch.ones(2, M, dtype=torch.long), mask], dim=1)
        for index, layer in enumerate(raw.base_model.encoder.layer):
            joined = torch.cat([prompts[index].expand(2, -1, -1), hidden], dim=1)
            hidden = bert_layer_reference(layer, joined, full_mask)[:, M:]
        expected = raw.classifier(hidden)
    assert_close_at(logits, expected, mask)


@pytest.mark.parametrize("lengths", [(6, 4), (4, 6)], ids=["right-padded", "left-padded"])
def test_hidden_real_tokens_match_manual_layers_llama(lengths) -> None:
    """Rotary decoder, shift: slots at positions 0..m-1, real tokens m.. (counted over real
    tokens, so a left-padded row has the same positions); each layer by hand on
    cat(prompt_i, real rows) with causal attention; final norm, then the token head."""
    torch.manual_seed(0)
    backbone = make_backbone("llama", "token_classification").eval()
    raw = copy.deepcopy(backbone)
    model = make_method("p_tuning_v2-hidden", "llama").attach(backbone, get_task("conll2003"))
    model.eval()
    ids, mask = make_inputs("llama", lengths)
    if lengths[0] < lengths[1]:  # move row 0's two pads to the left
        ids[0], mask[0] = ids[0].roll(2), mask[0].roll(2)
    full_mask = torch.cat([torch.ones(2, M, dtype=torch.long), mask], dim=1)
    positions = (full_mask.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
        prompts = model.prompts()
        hidden = raw.model.embed_tokens(ids)
        for index, layer in enumerate(raw.model.layers):
            joined = torch.cat([prompts[index].expand(2, -1, -1), hidden], dim=1)
            out = llama_layer_reference(layer, raw.model.rotary_emb, joined, full_mask, positions)
            hidden = out[:, M:]
        expected = raw.score(raw.model.norm(hidden))
    assert_close_at(logits, expected, mask)


# --- 4: input placement -------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["prompt_tuning", "p_tuning-lstm"])
@pytest.mark.parametrize("arch", ["bert", "roberta", "deberta", "gpt2", "llama"])
def test_input_shift_equals_raw_model_with_prompt_embeddings(arch, variant) -> None:
    """shift == the raw HF model fed inputs_embeds = cat(prompt, word_embeddings(ids)) with the
    mask extended and its default positions; token logits read at the real tokens."""
    torch.manual_seed(0)
    backbone = make_backbone(arch, "token_classification").eval()
    raw = copy.deepcopy(backbone)
    method = make_method(variant, arch, position="shift")
    model = method.attach(backbone, get_task("conll2003")).eval()
    ids, mask = make_inputs(arch)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
        prompt = model.prompts().expand(2, -1, -1)
        embeds = torch.cat([prompt, raw.get_input_embeddings()(ids)], dim=1)
        full_mask = torch.cat([torch.ones(2, M, dtype=torch.long), mask], dim=1)
        expected = raw(inputs_embeds=embeds, attention_mask=full_mask).logits[:, M:]
        unprompted = raw(input_ids=ids, attention_mask=mask).logits
    assert_close_at(logits, expected, mask)
    assert (logits - unprompted)[mask.bool()].abs().max() > 1e-3


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_input_keep_positions_and_slots(arch) -> None:
    """keep: real tokens take the position ids they have without prompts (BERT 0..n-1, RoBERTa
    padding_idx+1.. and padding_idx at pads); slots add a zero position embedding. Reference:
    LayerNorm(word/prompt + token type 0 + position (zero at slots)) through the raw encoder."""
    torch.manual_seed(0)
    backbone = make_backbone(arch, "token_classification").eval()
    with torch.no_grad():  # no zero rows (RoBERTa's padding_idx row): zeroing must be done
        backbone.base_model.embeddings.position_embeddings.weight.normal_()
    raw = copy.deepcopy(backbone)
    model = make_method("prompt_tuning").attach(backbone, get_task("conll2003")).eval()
    ids, mask = make_inputs(arch)
    n = ids.shape[1]
    seen = {}
    positions = backbone.base_model.embeddings.position_embeddings

    def spy(module, args, kwargs, output):
        seen["ids"] = args[0] if args else kwargs["input"]
        seen["out"] = output

    positions.register_forward_hook(spy, with_kwargs=True)  # runs after the zeroing hook
    if arch == "roberta":
        pad = raw.config.pad_token_id
        expected_ids = torch.cumsum(mask, 1) * mask + pad
        assert expected_ids[0].tolist() == list(range(pad + 1, pad + 1 + n))
    else:
        expected_ids = torch.arange(n).expand_as(ids)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
        assert torch.equal(seen["ids"][:, M:], expected_ids)
        assert torch.equal(seen["out"][:, :M], torch.zeros_like(seen["out"][:, :M]))
        embeddings = raw.base_model.embeddings
        words = torch.cat([model.prompts().expand(2, -1, -1), embeddings.word_embeddings(ids)], 1)
        position = torch.cat(
            [torch.zeros(2, M, D), embeddings.position_embeddings(expected_ids)], 1
        )
        types = embeddings.token_type_embeddings(torch.zeros(2, M + n, dtype=torch.long))
        hidden = embeddings.LayerNorm(words + position + types)
        full_mask = torch.cat([torch.ones(2, M, dtype=torch.long), mask], dim=1)
        for layer in raw.base_model.encoder.layer:
            hidden = bert_layer_reference(layer, hidden, full_mask)
        expected = raw.classifier(hidden[:, M:])
    assert_close_at(logits, expected, mask)


def test_input_prompt_is_placed_once_when_token_types_share_the_word_embedding() -> None:
    """GPT-2 embeds token_type_ids with its word embedding: the prompt must replace the slots of
    the input ids' lookup only, not be added a second time through the token-type lookup."""
    torch.manual_seed(0)
    backbone = make_backbone("gpt2", "token_classification").eval()
    raw = copy.deepcopy(backbone)
    method = make_method("prompt_tuning", "gpt2", position="shift")
    model = method.attach(backbone, get_task("conll2003")).eval()
    ids, mask = make_inputs("gpt2")
    types = torch.zeros_like(ids)
    types[:, 3:] = 1
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        embeds = torch.cat([model.prompts().expand(2, -1, -1), raw.transformer.wte(ids)], dim=1)
        full_mask = torch.cat([torch.ones(2, M, dtype=torch.long), mask], dim=1)
        full_types = torch.cat([torch.zeros(2, M, dtype=torch.long), types], dim=1)
        expected = raw(inputs_embeds=embeds, attention_mask=full_mask, token_type_ids=full_types)
    assert_close_at(logits, expected.logits[:, M:], mask)


# --- 5: heads read the real tokens ------------------------------------------------------------


@pytest.mark.parametrize("variant", ["prompt_tuning", "p_tuning_v2-hidden"])
@pytest.mark.parametrize("arch", ["bert", "roberta", "deberta"])
def test_sequence_head_pools_the_real_first_token(arch, variant) -> None:
    torch.manual_seed(0)
    backbone = make_backbone(arch).eval()
    model = make_method(variant, arch).attach(backbone, get_task("sst2")).eval()
    ids, mask = make_inputs(arch)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        last = out.hidden_states[-1]
        assert last.shape[1] == M + ids.shape[1]  # the slots are in the hidden states
        if arch == "bert":
            expected = backbone.classifier(backbone.bert.pooler(last[:, M:]))
            wrong = backbone.classifier(backbone.bert.pooler(last))
        elif arch == "roberta":
            expected, wrong = backbone.classifier(last[:, M:]), backbone.classifier(last)
        else:
            expected = backbone.classifier(backbone.pooler(last[:, M:]))
            wrong = backbone.classifier(backbone.pooler(last))
    torch.testing.assert_close(out.logits, expected, atol=1e-6, rtol=0)
    assert (out.logits - wrong).abs().max() > 1e-3  # a slot would give other logits


@pytest.mark.parametrize("variant", ["prompt_tuning", "p_tuning_v2-hidden", "p_tuning_v2-kv"])
@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
def test_token_head_reads_real_tokens_only(arch, variant) -> None:
    torch.manual_seed(0)
    backbone = make_backbone(arch, "token_classification").eval()
    model = make_method(variant, arch).attach(backbone, get_task("conll2003")).eval()
    ids, mask = make_inputs(arch)
    slots = 0 if variant == "p_tuning_v2-kv" else M
    head = backbone.classifier if arch != "llama" else backbone.score
    final = {  # the module whose output the head reads, before any slot trimming
        "bert": lambda: backbone.bert.encoder.layer[-1],
        "gpt2": lambda: backbone.transformer.ln_f,
        "llama": lambda: backbone.model.norm,
    }[arch]()
    seen = {}
    final.register_forward_hook(lambda module, args, output: seen.update(last=output))
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask)
    last = seen["last"]
    assert tuple(out.logits.shape) == (2, ids.shape[1], 9)
    assert last.shape[1] == slots + ids.shape[1]
    torch.testing.assert_close(out.logits, head(last[:, slots:]), atol=1e-6, rtol=0)


# --- 6: padding invariance --------------------------------------------------------------------

PADDING_CASES = [
    *[
        (arch, variant, position)
        for arch in ("bert", "roberta", "gpt2")
        for variant, position in [
            ("prompt_tuning", "keep"),
            ("prompt_tuning", "shift"),
            ("p_tuning_v2-hidden", "keep"),
            ("p_tuning_v2-hidden", "shift"),
            ("p_tuning_v2-kv", "keep"),
            ("prefix_tuning", "keep"),
        ]
    ],
    ("deberta", "prompt_tuning", "keep"),
    ("deberta", "p_tuning_v2-hidden", "keep"),
    ("deberta", "p_tuning_v2-kv", "keep"),
    ("deberta", "prefix_tuning", "keep"),
    ("llama", "p_tuning_v2-kv", "keep"),
    ("llama", "prompt_tuning", "shift"),
    ("llama", "p_tuning_v2-hidden", "shift"),
]


@pytest.mark.parametrize("token_level", [False, True], ids=["sequence", "token"])
@pytest.mark.parametrize(("arch", "variant", "position"), PADDING_CASES)
def test_padding_does_not_change_an_examples_logits(arch, variant, position, token_level):
    torch.manual_seed(0)
    kind = "token_classification" if token_level else "classification"
    backbone = make_backbone(arch, kind).eval()
    method = make_method(variant, arch, position=position)
    model = method.attach(backbone, get_task(TASKS[kind])).eval()
    ids, mask = make_inputs(arch, lengths=(4, 7))
    with torch.no_grad():
        alone = model(input_ids=ids[:1, :4], attention_mask=mask[:1, :4]).logits
        batched = model(input_ids=ids, attention_mask=mask).logits
    if token_level:
        batched = batched[:, :4]
    torch.testing.assert_close(batched[:1], alone, atol=1e-5, rtol=0)
    # and the longer example is not a copy of the shorter one
    assert (batched[1] - batched[0]).abs().max() > 1e-4


LEFT_PADDING_CASES = [
    ("llama", "p_tuning_v2-kv", "keep"),
    ("llama", "prefix_tuning", "keep"),
    ("llama", "prompt_tuning", "shift"),
    ("llama", "p_tuning_v2-hidden", "shift"),
    ("gpt2", "p_tuning_v2-kv", "keep"),
    ("gpt2", "prompt_tuning", "keep"),
    ("gpt2", "prompt_tuning", "shift"),
    ("gpt2", "p_tuning_v2-hidden", "keep"),
]


@pytest.mark.parametrize("token_level", [False, True], ids=["sequence", "token"])
@pytest.mark.parametrize(("arch", "variant", "position"), LEFT_PADDING_CASES)
def test_left_padding_does_not_move_a_decoders_positions(arch, variant, position, token_level):
    """Decoder tokenizers pad on the left (Llama's by default). The pads must not shift the real
    tokens' positions: unrotated prefix keys and prompt slots would otherwise see a query whose
    rotary/absolute position depends on how much padding the batch needed."""
    torch.manual_seed(0)
    kind = "token_classification" if token_level else "classification"
    backbone = make_backbone(arch, kind).eval()
    model = make_method(variant, arch, position=position).attach(backbone, get_task(TASKS[kind]))
    model.eval()
    ids, mask = make_inputs(arch, lengths=(4, 7))
    left_ids, left_mask = ids.clone(), mask.clone()
    left_ids[0] = torch.cat([ids[0, 4:], ids[0, :4]])
    left_mask[0] = torch.cat([mask[0, 4:], mask[0, :4]])
    with torch.no_grad():
        alone = model(input_ids=ids[:1, :4], attention_mask=mask[:1, :4]).logits
        batched = model(input_ids=left_ids, attention_mask=left_mask).logits
    if token_level:
        batched = batched[:, 3:]
    torch.testing.assert_close(batched[:1], alone, atol=1e-5, rtol=0)


# --- 7: parameter accounting ------------------------------------------------------------------


@pytest.mark.parametrize(("variant", "arch", "kind"), combos())
def test_counts_match_the_closed_form(variant, arch, kind) -> None:
    torch.manual_seed(0)
    backbone = make_backbone(arch, kind)
    config = backbone.config
    d, layers = config.hidden_size, config.num_hidden_layers
    kv_dim = (config.hidden_size // config.num_attention_heads) * getattr(
        config, "num_key_value_heads", config.num_attention_heads
    )
    assert kv_dim == (D // 2 if arch == "llama" else D)  # grouped-query: half the heads
    head_names_ = head_names(backbone)
    head = sum(p.numel() for n, p in backbone.named_parameters() if n in head_names_)
    base = sum(p.numel() for p in backbone.base_model.parameters())
    method = make_method(variant, arch)
    model = method.attach(backbone, get_task(TASKS[kind]))
    if variant in KV_VARIANTS:
        prompt = 2 * layers * M * kv_dim
    elif variant in HIDDEN_VARIANTS:
        prompt = layers * M * d
    else:
        prompt = M * d
    counts = method.parameter_counts(model)
    assert counts.head == head
    assert counts.backbone == base
    assert counts.stored == prompt + head == counts.formula_value
    assert counts.matches_formula
    assert sum(t.numel() for t in method.export(model).values()) == counts.stored
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counts.trainable == trainable
    encoder = sum(p.numel() for p in model.prompts.parameters())
    assert counts.trainable == encoder + head
    if variant in ("prompt_tuning", "p_tuning_v2-kv", "p_tuning_v2-hidden"):
        assert counts.trainable == counts.stored  # direct prompts: what trains is what is stored
    else:
        assert counts.trainable > counts.stored  # the reparameterization is trained, not stored
    if variant == "prefix_tuning":  # Embedding(m, d) -> Linear(d, h) -> tanh -> Linear(h, 2Ld_kv)
        h, width = 16, 2 * layers * kv_dim
        assert encoder == M * d + (d * h + h) + (h * width + width)


# --- 8: export -> load in a fresh process -----------------------------------------------------

EXPORT_CASES = {
    "prefix_tuning": ("bert", "sst2"),
    "p_tuning-lstm": ("roberta", "conll2003"),
    "p_tuning_v2-hidden": ("bert", "stsb"),
    "p_tuning_v2-kv-mlp": ("llama", "sst2"),
    "prompt_tuning": ("gpt2", "sst2"),
}

RELOAD_SCRIPT = """
import json, sys
import torch
import transformers
from safetensors.torch import load_file
from methods import build_method
from tasks import get_task

torch.set_num_threads(1)
failures = []
for case in json.loads(open(sys.argv[1]).read()):
    backbone = getattr(transformers, case["cls"]).from_pretrained(case["dir"])
    backbone.peft_bench_new_parameters = frozenset()
    method = build_method(case["method"], case["overrides"])
    model = method.load(backbone, get_task(case["task"]), load_file(case["delta"])).eval()
    data = load_file(case["data"])
    with torch.no_grad():
        logits = model(input_ids=data["ids"], attention_mask=data["mask"]).logits
    if not torch.equal(logits, data["logits"]):
        failures.append((case["method"], (logits - data["logits"]).abs().max().item()))
print(json.dumps(failures))
sys.exit(1 if failures else 0)
"""


def test_export_then_load_in_a_fresh_process_reproduces_logits(tmp_path: Path) -> None:
    import json

    from safetensors.torch import save_file

    cases = []
    for variant, (arch, task_name) in EXPORT_CASES.items():
        task = get_task(task_name)
        kind = task.kind.value
        torch.manual_seed(0)
        random_model = make_backbone(arch, kind)
        directory = tmp_path / variant
        random_model.save_pretrained(directory)  # the backbone before any method touches it
        cls = type(random_model).__name__
        backbone = getattr(tf, cls).from_pretrained(directory)
        backbone.peft_bench_new_parameters = frozenset()
        name, overrides = VARIANTS[variant]
        overrides = {"prompt_length": M, "init": "random_uniform", **overrides}
        if arch == "llama" and variant not in KV_VARIANTS:
            overrides["position"] = "shift"
        method = build_method(name, overrides)
        model = method.attach(backbone, task)
        ids, mask = make_inputs(arch)
        groups = method.param_groups(model, TrainConfig())
        optimizer = torch.optim.AdamW(groups)
        model.train()
        for _ in range(2):  # move prompts and head away from their initial values
            task_loss(
                kind, model(input_ids=ids, attention_mask=mask).logits, make_labels(kind, mask)
            ).backward()
            optimizer.step()
            optimizer.zero_grad()
        model.eval()
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits
        delta = method.export(model)
        assert set(delta) == {"prompt", *(f"head.{n}" for n in head_names(backbone))}
        save_file(delta, tmp_path / f"{variant}.delta.safetensors")
        save_file(
            {"ids": ids, "mask": mask, "logits": logits.contiguous()},
            tmp_path / f"{variant}.data.safetensors",
        )
        cases.append(
            {
                "cls": cls,
                "dir": str(directory),
                "method": name,
                "overrides": overrides,
                "task": task_name,
                "delta": str(tmp_path / f"{variant}.delta.safetensors"),
                "data": str(tmp_path / f"{variant}.data.safetensors"),
            }
        )
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    script = tmp_path / "reload.py"
    script.write_text(RELOAD_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "cases.json")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "PYTHONPATH": checkout_pythonpath()},
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


# --- 9: unsupported combinations --------------------------------------------------------------


def deberta_attention_reference(attention, original_bias, hidden, mask, rel, prefix):
    """DeBERTa's disentangled attention written out, with prefix keys/values in front: the
    content scores see the prefix, the relative-position bias (DeBERTa's own function, on the
    real keys) is 0 for the position-free prefix keys, and the mask shows the prefix to all."""
    batch, n, _ = hidden.shape
    heads = attention.num_attention_heads
    head_dim = attention.attention_head_size

    def split(x):  # [B, T, H*dh] -> [B*H, T, dh], as DeBERTa's transpose_for_scores
        return (
            x.view(batch, -1, heads, head_dim).permute(0, 2, 1, 3).reshape(-1, x.shape[1], head_dim)
        )

    pk, pv = (p.permute(0, 2, 1, 3).reshape(batch, p.shape[2], heads * head_dim) for p in prefix)
    query = split(attention.query_proj(hidden))
    key = split(torch.cat([pk, attention.key_proj(hidden)], dim=1))
    value = split(torch.cat([pv, attention.value_proj(hidden)], dim=1))
    m = pk.shape[1]
    scale_factor = 1 + len(attention.pos_att_type)
    scores = query @ key.transpose(-1, -2) / math.sqrt(head_dim * scale_factor)
    real_bias = original_bias(
        query, key[:, m:], rel["relative_pos"], rel["rel_embeddings"], scale_factor
    )
    scores = scores + torch.cat([torch.zeros_like(scores[..., :m]), real_bias], dim=-1)
    visible = torch.cat([torch.ones(batch, m), mask.float()], dim=1).bool()
    scores = scores.view(batch, heads, n, -1).masked_fill(
        ~visible[:, None, None, :], torch.finfo(scores.dtype).min
    )
    probs = scores.softmax(-1).view(batch * heads, n, -1)
    out = (probs @ value).view(batch, heads, n, head_dim).permute(0, 2, 1, 3)
    return out.reshape(batch, n, heads * head_dim)


@pytest.mark.parametrize("kind", ["classification", "token_classification"])
@pytest.mark.parametrize("variant", ["p_tuning_v2-kv", "prefix_tuning"])
def test_deberta_kv_prefix_matches_hand_attention(variant, kind) -> None:
    torch.manual_seed(0)
    backbone = make_backbone("deberta", kind).eval()
    attentions = [layer.attention.self for layer in backbone.base_model.encoder.layer]
    originals = [a.disentangled_attention_bias for a in attentions]
    model = make_method(variant, "deberta").attach(backbone, get_task(TASKS[kind])).eval()
    assert "kv" in supported_placements(backbone)
    ids, mask = make_inputs("deberta")
    seen = {}
    for index, attention in enumerate(attentions):

        def pre(module, args, kwargs, index=index):
            seen[index] = {
                "hidden": args[0].detach(),
                **{k: kwargs.get(k) for k in ("relative_pos", "rel_embeddings")},
            }

        def post(module, args, kwargs, output, index=index):
            seen[index]["out"] = output[0].detach()

        # registered after the method's own pre-hook, so it sees the layer input unchanged
        attention.register_forward_pre_hook(pre, with_kwargs=True)
        attention.register_forward_hook(post, with_kwargs=True)
    with torch.no_grad():
        prompts = model.prompts()
        logits = model(input_ids=ids, attention_mask=mask).logits
        for index, attention in enumerate(attentions):
            prefix = tuple(
                prompts[index, j].unsqueeze(0).expand(len(ids), -1, -1, -1) for j in (0, 1)
            )
            expected = deberta_attention_reference(
                attention, originals[index], seen[index]["hidden"], mask, seen[index], prefix
            )
            assert_close_at(seen[index]["out"], expected, mask)
            empty = tuple(p[:, :, :0] for p in prefix)
            plain = deberta_attention_reference(
                attention, originals[index], seen[index]["hidden"], mask, seen[index], empty
            )
            assert (seen[index]["out"] - plain)[mask.bool()].abs().max() > 1e-3
    if kind == "token_classification":
        assert logits.shape[:2] == ids.shape
    else:
        assert logits.shape[0] == len(ids)


@pytest.mark.parametrize("variant", ["prompt_tuning", "p_tuning-lstm", "p_tuning_v2-hidden"])
def test_llama_refuses_position_keep_and_names_what_works(variant) -> None:
    backbone = make_backbone("llama")
    with pytest.raises(UserError) as error:
        make_method(variant, "llama", position="keep").attach(backbone, get_task("sst2"))
    message = str(error.value)
    assert "Llama" in message and "rotary" in message
    assert "'shift'" in message and "'kv'" in message


def tiny_decoder(name: str):
    """Decoders whose attention does not call transformers' attention interface."""
    config = {
        "falcon": lambda: tf.FalconConfig(
            hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=HEADS, vocab_size=VOCAB
        ),
        "bloom": lambda: tf.BloomConfig(
            hidden_size=D, n_layer=LAYERS, n_head=HEADS, vocab_size=VOCAB
        ),
    }[name]()
    config.pad_token_id, config.num_labels = 0, 2
    cls = {"falcon": tf.FalconForSequenceClassification, "bloom": tf.BloomForSequenceClassification}
    model = cls[name](config)
    model.peft_bench_new_parameters = frozenset()
    return model


@pytest.mark.parametrize("arch", ["falcon", "bloom"])
def test_kv_refuses_attention_outside_the_interface(arch) -> None:
    """Falcon and Bloom compute attention themselves: a prefix registered as an attention
    function would never run (a silent no-op), so kv must be refused, naming what works."""
    with pytest.raises(UserError) as error:
        make_method("prefix_tuning").attach(tiny_decoder(arch), get_task("sst2"))
    message = str(error.value)
    assert "'kv'" in message and arch in message and "input, hidden" in message
    model = make_method("prompt_tuning", position="shift").attach(
        tiny_decoder(arch), get_task("sst2")
    )
    assert model(input_ids=torch.tensor([[5, 6, 7]])).logits.shape == (1, 2)


def test_kv_refuses_attention_implementations_it_cannot_wrap() -> None:
    """The prefix is joined in front of 'eager'/'sdpa'; other kernels (flex, flash) take other
    mask formats or their own causal flag: refuse them instead of crashing or going non-causal."""
    backbone = make_backbone("llama", attn="flex_attention")
    with pytest.raises(UserError, match="flex_attention.*sdpa"):
        make_method("p_tuning_v2-kv", "llama").attach(backbone, get_task("sst2"))


def test_position_shift_checks_the_length_budget() -> None:
    for arch, available in [("bert", 64), ("roberta", 62)]:
        method = make_method("prompt_tuning", arch, position="shift")
        model = method.attach(make_backbone(arch), get_task("sst2"))
        method.check_length(model, available - M)
        with pytest.raises(UserError, match=f"{available - M}"):
            method.check_length(model, available - M + 1)
        keep = make_method("prompt_tuning", arch)
        keep.check_length(keep.attach(make_backbone(arch), get_task("sst2")), available)


# --- 10: initialisation -----------------------------------------------------------------------


def attached_initial(arch: str, variant: str = "prompt_tuning", data=None, **overrides):
    """(the backbone's embedding matrix, the attached model's direct prompt)."""
    backbone = make_backbone(arch)
    embeddings = backbone.get_input_embeddings().weight.detach().clone()
    model = make_method(variant, arch, **overrides).attach(backbone, get_task("sst2"), data)
    return embeddings, model.prompts()


def test_random_uniform_init_is_within_half() -> None:
    torch.manual_seed(0)
    _, prompt = attached_initial("bert")
    assert prompt.shape == (M, D)
    assert prompt.abs().max() <= 0.5 and prompt.abs().max() > 0.4
    assert prompt.std() > 0.2  # not a degenerate draw
    _, deep = attached_initial("llama", "p_tuning_v2-kv")  # drawn over the full deep width
    assert deep.abs().max() <= 0.5 and deep.std() > 0.2


def test_vocab_sample_init_copies_embedding_rows() -> None:
    torch.manual_seed(0)
    embeddings, prompt = attached_initial("roberta", init="vocab_sample")
    for row in prompt:
        assert (embeddings == row).all(dim=1).any(), "a prompt row is not a token embedding"


def test_text_init_uses_the_keyword_ids_in_order() -> None:
    torch.manual_seed(0)
    keywords = [17, 42, 8]
    data = AttachData(keyword_ids=keywords, sample_ids=[])
    embeddings, prompt = attached_initial("bert", data=data, init="text")
    cycled = [keywords[i % len(keywords)] for i in range(M)]
    assert torch.equal(prompt, embeddings[cycled])
    # deep direct prompts tile the same vectors in every layer
    embeddings, deep = attached_initial("bert", "p_tuning_v2-hidden", data=data, init="text")
    for layer in range(LAYERS):
        assert torch.equal(deep[layer], embeddings[cycled])
    with pytest.raises(UserError, match="keywords"):
        attached_initial("bert", init="text", data=AttachData())


def test_cluster_init_gives_m_distinct_centroids_of_the_sample_tokens() -> None:
    torch.manual_seed(0)
    sample = [5, 6, 7, 8, 9, 10, 11, 12, 30, 31, 32, 33, 5, 6]  # 12 distinct tokens, repeats
    embeddings, prompt = attached_initial(
        "bert", data=AttachData(keyword_ids=[], sample_ids=sample), init="cluster"
    )
    assert prompt.shape == (M, D)
    assert len({tuple(row.tolist()) for row in prompt}) == M
    points = embeddings[sorted(set(sample))]
    nearest = torch.cdist(points, prompt).argmin(dim=1)
    assert set(nearest.tolist()) == set(range(M))  # every centroid owns a point
    for index in range(M):  # each centroid is the mean of the points it owns (k-means fixpoint)
        torch.testing.assert_close(
            prompt[index], points[nearest == index].mean(0), atol=1e-5, rtol=0
        )
    with pytest.raises(UserError, match=f"at least {M} distinct"):
        attached_initial("bert", data=AttachData(sample_ids=[5, 6, 5]), init="cluster")


# --- 11: two-stage training -------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["prompt_tuning", "prefix_tuning", "p_tuning_v2-hidden"])
def test_head_only_epochs_freeze_the_prompts_first(variant) -> None:
    torch.manual_seed(0)
    method = make_method(variant, head_only_epochs=1)
    model = method.attach(make_backbone("bert"), get_task("sst2"))
    ids, mask = make_inputs("bert")
    optimizer = torch.optim.AdamW(method.param_groups(model, TrainConfig()))
    prompts = {n: p for n, p in model.named_parameters() if n.startswith("prompts.")}
    head = {n: p for n, p in model.named_parameters() if n.startswith("model.classifier")}
    for epoch, joint in [(1, False), (2, True), (3, True)]:
        method.on_epoch_start(model, epoch)
        before = {n: p.detach().clone() for n, p in prompts.items()}
        task_loss(
            "classification", model(input_ids=ids, attention_mask=mask).logits, torch.tensor([0, 1])
        ).backward()
        assert all(p.grad is not None for p in head.values())
        assert all((p.grad is not None) == joint for p in prompts.values())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        moved = [not torch.equal(before[n], p) for n, p in prompts.items()]
        assert all(moved) if joint else not any(moved)


# --- more contracts ---------------------------------------------------------------------------


def test_parameters_missing_from_the_checkpoint_are_trained() -> None:
    """A random pooler (RoBERTa's, not in the checkpoint) must be trained, never frozen."""
    torch.manual_seed(0)
    backbone = make_backbone("bert")
    pooler = {"bert.pooler.dense.weight", "bert.pooler.dense.bias"}
    backbone.peft_bench_new_parameters = frozenset(pooler)
    method = make_method("prompt_tuning")
    model = method.attach(backbone, get_task("sst2"))
    trained = set(method.trained_names(model))
    assert {f"model.{n}" for n in pooler} <= trained
    assert all(model.get_parameter(f"model.{n}").requires_grad for n in pooler)
    assert {f"head.{n}" for n in pooler} <= set(method.export(model))
    assert method.parameter_counts(model).head == sum(
        p.numel() for n, p in backbone.named_parameters() if n in pooler | head_names(backbone)
    )


def test_prompt_dropout_acts_in_training_only() -> None:
    torch.manual_seed(0)
    method = make_method("p_tuning_v2-kv", prompt_dropout=0.5)
    model = method.attach(make_backbone("bert"), get_task("sst2"))
    ids, mask = make_inputs("bert")
    model.train()
    with torch.no_grad():
        assert not torch.equal(model.prompt_tensor(), model.prompts())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.prompt_tensor(), model.prompts())
        first = model(input_ids=ids, attention_mask=mask).logits
        assert torch.equal(first, model(input_ids=ids, attention_mask=mask).logits)
