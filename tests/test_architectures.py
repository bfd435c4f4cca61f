"""Every registered method on every architecture family the project names, on tiny random models.

``test_compatibility_matrix`` tries each (method variant, architecture) pair: attach, a training
step (only the declared parameters get gradients, the backbone stays bit-identical) and padding
invariance. It writes the outcome as the table of ``docs/compatibility.md`` and fails when the
page's table is out of date (``PEFT_BENCH_WRITE_DOCS=1`` rewrites it). A pair may be refused,
but only with a ``UserError`` that names what works instead; any other exception fails the test
(for our own methods; another library's failure is recorded as a finding).

MPNet's and T5's kv prefixes are also checked against their self-attention written out by hand
(both carry a relative-position bias, which must be 0 for the prefix keys).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
import transformers as tf

from bench.errors import UserError
from bench.train import task_loss
from methods import build_method, get_method, method_names
from tasks import get_task

DOC = Path(__file__).resolve().parents[1] / "docs" / "compatibility.md"
D, LAYERS, HEADS, M, VOCAB = 32, 2, 4, 4, 100
BERT_LIKE = {
    "hidden_size": D,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": HEADS,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
    "vocab_size": VOCAB,
}


def _t5():
    return tf.T5Config(
        d_model=D, num_layers=LAYERS, num_heads=HEADS, d_kv=D // HEADS, d_ff=64, vocab_size=VOCAB
    )


#: label -> (config factory, model class, pad id, task). T5 is encoder-only for token tasks.
ARCHITECTURES = {
    "BERT": (lambda: tf.BertConfig(**BERT_LIKE), tf.BertForSequenceClassification, 0, "sst2"),
    "RoBERTa": (
        lambda: tf.RobertaConfig(**BERT_LIKE, bos_token_id=0, eos_token_id=2),
        tf.RobertaForSequenceClassification,
        1,
        "sst2",
    ),
    "DeBERTa-v2": (
        lambda: tf.DebertaV2Config(
            **BERT_LIKE,
            relative_attention=True,
            position_biased_input=False,
            pos_att_type=["p2c", "c2p"],
        ),
        tf.DebertaV2ForSequenceClassification,
        0,
        "sst2",
    ),
    "MPNet": (lambda: tf.MPNetConfig(**BERT_LIKE), tf.MPNetForSequenceClassification, 1, "sst2"),
    "ELECTRA": (
        lambda: tf.ElectraConfig(**BERT_LIKE, embedding_size=16),
        tf.ElectraForSequenceClassification,
        0,
        "sst2",
    ),
    "DistilBERT": (
        lambda: tf.DistilBertConfig(
            dim=D,
            n_layers=LAYERS,
            n_heads=HEADS,
            hidden_dim=64,
            max_position_embeddings=64,
            vocab_size=VOCAB,
        ),  # fmt: skip
        tf.DistilBertForSequenceClassification,
        0,
        "sst2",
    ),
    "ALBERT": (
        lambda: tf.AlbertConfig(**BERT_LIKE, embedding_size=16),
        tf.AlbertForSequenceClassification,
        0,
        "sst2",
    ),
    "XLM-R": (
        lambda: tf.XLMRobertaConfig(**BERT_LIKE, bos_token_id=0, eos_token_id=2),
        tf.XLMRobertaForSequenceClassification,
        1,
        "sst2",
    ),
    "GPT-2": (
        lambda: tf.GPT2Config(
            n_embd=D,
            n_layer=LAYERS,
            n_head=HEADS,
            n_positions=64,
            vocab_size=VOCAB,
            bos_token_id=2,
            eos_token_id=2,
        ),  # fmt: skip
        tf.GPT2ForSequenceClassification,
        0,
        "sst2",
    ),
    "Llama": (
        lambda: tf.LlamaConfig(**BERT_LIKE, num_key_value_heads=2, bos_token_id=2, eos_token_id=2),
        tf.LlamaForSequenceClassification,
        0,
        "sst2",
    ),
    "T5-encoder": (_t5, tf.T5ForTokenClassification, 0, "conll2003"),
}

#: Configuration variants beyond each method's defaults (a placement chosen by an option).
EXTRA_VARIANTS = {"p_tuning_v2": [{"injection": "hidden"}]}
#: Small sizes so that the matrix stays fast (applied where the method has the field).
SMALL = {
    "prompt_length": M,
    "num_virtual_tokens": M,
    "prefix_hidden": 16,
    "reparam_hidden": 16,
    "encoder_hidden_size": 16,
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_backbone(arch: str):
    factory, cls, pad, task = ARCHITECTURES[arch]
    config = factory()
    config.pad_token_id = pad
    config.num_labels = 9 if task == "conll2003" else 2
    torch.manual_seed(0)
    model = cls(config)
    model.peft_bench_new_parameters = frozenset()
    return model


def variants() -> list[tuple[str, dict]]:
    out = []
    for name in method_names():
        out.append((name, {}))
        out.extend((name, extra) for extra in EXTRA_VARIANTS.get(name, []))
    return out


def build(name: str, overrides: dict):
    fields = set(get_method(name).config_cls.__dataclass_fields__)
    values = {k: v for k, v in SMALL.items() if k in fields}
    method = build_method(name, {**values, **overrides})
    placement = getattr(method, "placement_of", lambda: "kv")()
    if "position" in fields and placement != "kv" and "position" not in overrides:
        # input slots take positions under 'shift', which rotary models (Llama) need
        method = build_method(name, {**values, "position": "shift", **overrides})
    return method


def inputs(pad: int, lengths=(4, 7)):
    generator = torch.Generator().manual_seed(1)
    ids = torch.full((len(lengths), max(lengths)), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, :length] = torch.randint(5, VOCAB, (length,), generator=generator)
        mask[row, :length] = 1
    return ids, mask


def try_pair(name: str, overrides: dict, arch: str) -> str:
    """'yes' when the pair trains correctly, else 'no: <the UserError>' (other errors raise)."""
    backbone = make_backbone(arch)
    task = get_task(ARCHITECTURES[arch][3])
    method = build(name, overrides)
    try:
        model = method.attach(backbone, task)
    except UserError as error:
        return f"no: {error}"
    pad = ARCHITECTURES[arch][2]
    ids, mask = inputs(pad)
    trained = set(method.trained_names(model))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if n not in trained}
    model.train()
    logits = model(input_ids=ids, attention_mask=mask).logits
    token_level = task.kind.value == "token_classification"
    labels = torch.arange(ids.numel()).view(ids.shape) % 2 if token_level else torch.arange(2)
    if token_level:
        labels = labels.masked_fill(mask == 0, -100)
    loss = task_loss(task.kind.value, logits, labels)
    loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad <= trained and with_grad, f"{name} on {arch}: gradients on {with_grad}"
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.grad is not None:
                parameter -= 0.1 * parameter.grad
    state = dict(model.named_parameters())
    assert all(torch.equal(state[n], t) for n, t in frozen.items()), f"{name} on {arch}"
    model.eval()
    with torch.no_grad():
        alone = model(input_ids=ids[:1, :4], attention_mask=mask[:1, :4]).logits
        batched = model(input_ids=ids, attention_mask=mask).logits
    if token_level:
        batched = batched[:, :4]
    if not torch.allclose(batched[:1], alone, atol=1e-5, rtol=0):
        raise AssertionError("an example's logits change when it is padded in a batch")
    return "yes"


def variant_label(name: str, overrides: dict) -> str:
    from methods import variant_label as label

    return label(name, overrides)


def placement_label(name: str, overrides: dict) -> str:
    method = build(name, overrides)
    placement = getattr(method, "placement_of", None)
    return placement() if placement else "—"


def render(rows: list[tuple[str, str, dict[str, str]]]) -> str:
    archs = list(ARCHITECTURES)
    lines = [
        "| method | placement | " + " | ".join(archs) + " |",
        "|---|---|" + "---|" * len(archs),
    ]
    notes: dict[str, int] = {}
    for label, placement, cells in rows:
        shown = []
        for arch in archs:
            cell = cells[arch]
            if cell == "yes":
                shown.append("yes")
            else:
                index = notes.setdefault(cell[len("no: ") :], len(notes) + 1)
                shown.append(f"no [{index}]")
        lines.append(f"| {label} | {placement} | " + " | ".join(shown) + " |")
    lines.append("")
    lines.extend(f"[{index}] {reason}" for reason, index in notes.items())
    return "\n".join(lines)


DOC_HEAD = """# Compatibility matrix

Which method (and placement) runs on which architecture. Generated by
`tests/test_architectures.py::test_compatibility_matrix` on tiny random models: "yes" means
attach, a training step in which only the method's declared parameters get gradients and the
backbone stays bit-identical, and identical logits for an example alone and in a padded batch.
"no" means the method refuses the pair with the error below (at attach, so preflight in
`run --dry-run` sees it). Regenerate with
`PEFT_BENCH_WRITE_DOCS=1 python -m pytest tests/test_architectures.py -k matrix`.

T5-encoder is checked as `T5ForTokenClassification` (the encoder alone) on a token task, every
other architecture as its `*ForSequenceClassification` on a sentence task. Methods run with
their defaults, except small sizes and, for input and hidden slots, position `shift` (rotary
models need it).

How kv prefixes reach each architecture: through transformers' attention interface (BERT,
RoBERTa, ELECTRA, DistilBERT, XLM-R, GPT-2, Llama, T5; T5's relative-position bias is 0 for
the prefix keys); through hooks on the key/value projections where the attention computes its
scores itself (DeBERTa-v2, MPNet). MPNet's relative-position bias is computed for the real
tokens only and is 0 for the prefix keys, which have no position: every query sees them alike.

"""


def test_compatibility_matrix() -> None:
    rows = []
    for name, overrides in variants():
        cells = {}
        for arch in ARCHITECTURES:
            try:
                cells[arch] = try_pair(name, overrides, arch)
            except Exception as error:
                if not get_method(name).comparison:
                    raise AssertionError(f"{name} {overrides} on {arch}: {error!r}") from error
                # another library's implementation: its own failure is a finding, not ours
                first = str(error).splitlines()[0][:160]
                kind = "" if isinstance(error, AssertionError) else f"{type(error).__name__}: "
                cells[arch] = f"no: {kind}{first} (inside peft)"
        rows.append((variant_label(name, overrides), placement_label(name, overrides), cells))
        if not name.startswith("peft"):  # our own methods run on MPNet, every placement
            assert cells["MPNet"] == "yes", (name, overrides, cells["MPNet"])
    page = DOC_HEAD + render(rows) + "\n"
    if os.environ.get("PEFT_BENCH_WRITE_DOCS"):
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(page, encoding="utf-8")
    # The grid must match; the footnotes quote error messages, whose rewording alone does
    # not make the page wrong (rewriting the page refreshes them too).
    assert DOC.is_file() and grid(DOC.read_text(encoding="utf-8")) == grid(page), (
        "docs/compatibility.md is out of date: run "
        "PEFT_BENCH_WRITE_DOCS=1 python -m pytest tests/test_architectures.py -k matrix"
    )


def grid(page: str) -> list[str]:
    """The table rows of a compatibility page."""
    return [line for line in page.splitlines() if line.startswith("|")]


def mpnet_attention_reference(attention, hidden, mask, bias, prefix):
    """MPNet's self-attention written out, with prefix keys/values in front. ``hidden`` [B, n, d],
    ``mask`` [B, n] (1 = real), ``bias`` [B, H, n, n] (the real tokens' relative bias), ``prefix``
    ([B, H, m, hd], [B, H, m, hd]). Prefix keys: visible to every query, no position bias."""
    batch, n, _ = hidden.shape
    heads, head_dim = attention.num_attention_heads, attention.attention_head_size

    def split(x):
        return x.view(batch, -1, heads, head_dim).transpose(1, 2)

    m = prefix[0].shape[2]
    query = split(attention.q(hidden))
    key = torch.cat([prefix[0], split(attention.k(hidden))], dim=2)
    value = torch.cat([prefix[1], split(attention.v(hidden))], dim=2)
    scores = query @ key.transpose(-1, -2) / math.sqrt(head_dim)
    scores = scores + torch.cat([bias.new_zeros(batch, heads, n, m), bias], dim=-1)
    visible = torch.cat([torch.ones(batch, m), mask.float()], dim=1).bool()
    scores = scores.masked_fill(~visible[:, None, None, :], float("-inf"))
    context = (scores.softmax(-1) @ value).transpose(1, 2).reshape(batch, n, -1)
    return attention.o(context)


@pytest.mark.parametrize("variant", [{"name": "p_tuning_v2"}, {"name": "prefix_tuning"}])
def test_mpnet_kv_prefix_matches_hand_attention(variant) -> None:
    backbone = make_backbone("MPNet").eval()
    layers = backbone.mpnet.encoder.layer
    method = build(variant["name"], {})
    model = method.attach(backbone, get_task("sst2")).eval()
    ids, mask = inputs(1, lengths=(6, 4))
    seen: dict[int, dict] = {}
    for index, layer in enumerate(layers):

        def pre(module, args, kwargs, index=index):  # MPNetAttention: before the method's hooks
            bias = args[2] if len(args) > 2 else kwargs["position_bias"]
            seen[index] = {"hidden": args[0].detach(), "bias": bias.detach()}

        def post(module, args, output, index=index):  # MPNetSelfAttention: after them
            seen[index]["out"] = output[0].detach()

        layer.attention.register_forward_pre_hook(pre, with_kwargs=True)
        layer.attention.attn.register_forward_hook(post)
    with torch.no_grad():
        prompts = model.prompts()
        model(input_ids=ids, attention_mask=mask)
        for index, layer in enumerate(layers):
            prefix = tuple(prompts[index, j].unsqueeze(0).expand(2, -1, -1, -1) for j in (0, 1))
            got = seen[index]
            expected = mpnet_attention_reference(
                layer.attention.attn, got["hidden"], mask, got["bias"], prefix
            )
            real = mask.bool()
            assert got["out"].shape == expected.shape
            torch.testing.assert_close(got["out"][real], expected[real], atol=1e-5, rtol=0)
            empty = tuple(p[:, :, :0] for p in prefix)
            plain = mpnet_attention_reference(
                layer.attention.attn, got["hidden"], mask, got["bias"], empty
            )
            assert (got["out"] - plain)[real].abs().max() > 1e-3


def t5_attention_reference(attention, hidden, mask, bias, prefix):
    """T5's self-attention written out (no 1/sqrt(d) scaling), with prefix keys/values in front:
    visible to every query, relative-position bias 0. ``bias`` [1, H, n, n] of the real keys."""
    batch, n, _ = hidden.shape
    heads, head_dim = attention.n_heads, attention.key_value_proj_dim

    def split(x):
        return x.view(batch, -1, heads, head_dim).transpose(1, 2)

    m = prefix[0].shape[2]
    query = split(attention.q(hidden))
    key = torch.cat([prefix[0], split(attention.k(hidden))], dim=2)
    value = torch.cat([prefix[1], split(attention.v(hidden))], dim=2)
    scores = query @ key.transpose(-1, -2)
    scores = scores + torch.cat([bias.new_zeros(1, heads, n, m), bias], dim=-1)
    visible = torch.cat([torch.ones(batch, m), mask.float()], dim=1).bool()
    scores = scores.masked_fill(~visible[:, None, None, :], float("-inf"))
    context = (scores.softmax(-1) @ value).transpose(1, 2).reshape(batch, n, -1)
    return attention.o(context)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_t5_kv_prefix_matches_hand_attention(attn) -> None:
    """T5 goes through the attention interface with its own relative-position bias, passed as
    ``position_bias``: the prefix keys must get 0 there, and the real keys their own bias."""
    backbone = make_backbone("T5-encoder").eval()
    backbone.config._attn_implementation = attn
    blocks = backbone.transformer.encoder.block
    model = build("p_tuning_v2", {}).attach(backbone, get_task("conll2003")).eval()
    ids, mask = inputs(0, lengths=(6, 4))
    seen: dict[int, dict] = {}
    for index, block in enumerate(blocks):

        def post(module, args, kwargs, output, index=index):
            hidden = args[0] if args else kwargs["hidden_states"]
            seen[index] = {"hidden": hidden.detach(), "out": output[0], "bias": output[1]}

        block.layer[0].SelfAttention.register_forward_hook(post, with_kwargs=True)
    with torch.no_grad():
        prompts = model.prompts()
        model(input_ids=ids, attention_mask=mask)
        for index, block in enumerate(blocks):
            prefix = tuple(prompts[index, j].unsqueeze(0).expand(2, -1, -1, -1) for j in (0, 1))
            got = seen[index]
            attention = block.layer[0].SelfAttention
            expected = t5_attention_reference(attention, got["hidden"], mask, got["bias"], prefix)
            real = mask.bool()
            torch.testing.assert_close(got["out"][real], expected[real], atol=1e-5, rtol=0)
            empty = tuple(p[:, :, :0] for p in prefix)
            plain = t5_attention_reference(attention, got["hidden"], mask, got["bias"], empty)
            assert (got["out"] - plain)[real].abs().max() > 1e-3
