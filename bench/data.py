"""Data pipeline: tokenize once per (task data, tokenizer, max length), carve the selection split,
pad batches dynamically.

Tokenized splits carry model inputs plus ``labels`` and an ``index`` column (the example's row in
its split). Token-classification splits also keep each example's word-level gold tags
(``word_tags``) and the position of each word's first sub-token (``word_starts``, −1 when the word
was truncated away), so that metrics are computed on words, not sub-tokens.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import UserError

if TYPE_CHECKING:
    import torch
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

    from bench.config import TrainConfig
    from tasks import LoadedTask, TaskSpec

#: Bump when the tokenized layout changes, so stale disk caches are not reused.
PIPELINE_VERSION = 1
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_memo: dict[str, dict[str, Any]] = {}


def cache_dir() -> Path:
    """Where tokenized splits are cached (``PEFT_BENCH_CACHE``, default ``~/.cache/peft-bench``)."""
    return Path(os.environ.get("PEFT_BENCH_CACHE", Path.home() / ".cache" / "peft-bench"))


def data_identity(spec: TaskSpec, data_dir: str | None, missing_ok: bool = False) -> str:
    """A content identity of a task's data, computed without parsing (for run keys).

    Local data: sha256 of the raw files (a missing file is a UserError naming its path).
    Hub data: the dataset id, config and revision. A task without a Hub source and no
    ``data_dir`` is a UserError, unless ``missing_ok`` (a suite's own task, e.g. OntoNotes in
    paper-ptv2): then its key names the missing data, so that a dry run can plan the suite, and
    loading it (preflight, before any run) is the UserError.
    """
    from tasks.loaders import local_files

    if data_dir is None:
        hub = spec.hub
        if hub is None:
            if missing_ok:
                return f"missing:{spec.name} has no Hub source; pass --data-dir"
            raise UserError(
                f"task '{spec.name}' has no 'hub' source and no --data-dir was given: pass "
                f"--data-dir DIR holding its local files ({spec.local.subdir}/...)"
            )
        return f"hub:{hub.path}:{hub.name or ''}@{hub.revision or 'main'}"
    digest = hashlib.sha256()
    for split, path in sorted(local_files(spec, data_dir).items()):
        digest.update(f"{split}:{path.name}:".encode())
        digest.update(path.read_bytes())
    return f"local:{digest.hexdigest()[:16]}"


def load_task(spec: TaskSpec, data_dir: str | None) -> LoadedTask:
    """Load a task's data: from ``data_dir`` when given, else from the Hub — after checking that
    the Hub is reachable, so that offline users get an immediate error instead of retries."""
    from bench.hub import prepare_hub_access
    from tasks import load_task_data

    if data_dir is None:
        prepare_hub_access()
    return load_task_data(spec, data_dir)


def tokenize_task(
    loaded: LoadedTask, tokenizer: PreTrainedTokenizerBase, tokenizer_id: str, max_length: int
) -> dict[str, Dataset]:
    """Tokenized splits of ``loaded``, computed once and reused (in memory and on disk)."""
    from datasets import disable_progress_bars, load_from_disk

    disable_progress_bars()  # our own bars report progress; per-step library bars are noise
    key_source = [PIPELINE_VERSION, loaded.spec.name, loaded.fingerprint, tokenizer_id, max_length]
    if loaded.spec.input_format is not None:
        key_source.append(loaded.spec.input_format)
    key = hashlib.sha256(json.dumps(key_source).encode()).hexdigest()[:20]
    if key in _memo:
        return _memo[key]
    directory = cache_dir() / "tokenized" / f"{loaded.spec.name}-{key}"
    if (directory / "complete").is_file():
        splits = {name: load_from_disk(str(directory / name)) for name in loaded.splits}
    else:
        splits = {
            name: _tokenize_split(split, loaded.spec, tokenizer, max_length)
            for name, split in loaded.splits.items()
        }
        try:
            for name, split in splits.items():
                split.save_to_disk(str(directory / name))
            (directory / "complete").write_text(json.dumps(key_source))
        except OSError:
            pass  # a read-only or full cache directory only costs re-tokenizing next time
    _memo[key] = splits
    return splits


def _tokenize_split(
    split: Dataset, spec: TaskSpec, tokenizer: PreTrainedTokenizerBase, max_length: int
) -> Dataset:
    from tasks.metrics import context_fields

    split = split.add_column("index", list(range(len(split))))
    encoders = {"token_classification": _encode_words, "multiple_choice": _encode_choices}
    encode = encoders.get(spec.kind.value, _encode_texts)
    kept = ("index", *context_fields(spec))  # what grouped metrics read travels along
    return split.map(
        encode,
        batched=True,
        fn_kwargs={"spec": spec, "tokenizer": tokenizer, "max_length": max_length},
        remove_columns=[c for c in split.column_names if c not in kept],
        desc=f"tokenize {spec.name}",
    )


def _encode_texts(
    batch: dict[str, list], spec: TaskSpec, tokenizer: PreTrainedTokenizerBase, max_length: int
) -> dict[str, list]:
    from tasks.input_formats import render_batch

    texts = render_batch(spec.input_format, spec.text_fields, batch)
    encoded = tokenizer(*texts, truncation=True, max_length=max_length)
    out = {k: encoded[k] for k in _MODEL_INPUTS if k in encoded}
    out["labels"] = batch["label"]
    return out


def _encode_choices(
    batch: dict[str, list], spec: TaskSpec, tokenizer: PreTrainedTokenizerBase, max_length: int
) -> dict[str, list]:
    """Multiple choice: every model input holds one token list per choice ([C][T] per row)."""
    from tasks.input_formats import render_batch

    rows = render_batch(spec.input_format, spec.text_fields, batch)
    counts = [len(choices) for choices in rows]
    firsts = [first for choices in rows for first, _ in choices]
    seconds = [second for choices in rows for _, second in choices]
    encoded = tokenizer(firsts, seconds, truncation=True, max_length=max_length)
    out: dict[str, list] = {}
    for key in (k for k in _MODEL_INPUTS if k in encoded):
        values, start = [], 0
        for count in counts:
            values.append(encoded[key][start : start + count])
            start += count
        out[key] = values
    out["labels"] = batch["label"]
    return out


def _encode_words(
    batch: dict[str, list], spec: TaskSpec, tokenizer: PreTrainedTokenizerBase, max_length: int
) -> dict[str, list]:
    """Label the first sub-token of each word; other sub-tokens and specials get −100."""
    encoded = tokenizer(
        batch["tokens"], is_split_into_words=True, truncation=True, max_length=max_length
    )
    out = {k: encoded[k] for k in _MODEL_INPUTS if k in encoded}
    out["labels"], out["word_starts"], out["word_tags"] = [], [], []
    for i, tags in enumerate(batch["tags"]):
        labels = [-100] * len(encoded["input_ids"][i])
        starts = [-1] * len(tags)
        previous = None
        for position, word in enumerate(encoded.word_ids(i)):
            if word is not None and word != previous:
                labels[position] = tags[word]
                starts[word] = position
            previous = word
        out["labels"].append(labels)
        out["word_starts"].append(starts)
        out["word_tags"].append(list(tags))
    return out


@dataclass(frozen=True)
class SplitSizes:
    """How many examples each part of a run used."""

    train_pool: int
    train: int
    selection: int


def carve_selection_split(
    train: Dataset, config: TrainConfig, seed: int
) -> tuple[Dataset, Dataset, SplitSizes]:
    """Shuffle train with ``seed``, keep ``max_train_samples`` of it (the training pool), and carve
    ``val_fraction`` of the pool off as the model-selection split (disjoint from training)."""
    import numpy as np

    if len(train) == 0:
        raise UserError("the training split is empty")
    order = np.random.default_rng(seed).permutation(len(train))
    pool = order[: config.max_train_samples] if config.max_train_samples else order
    n_selection = max(1, round(len(pool) * config.val_fraction))
    if len(pool) - n_selection < 1:
        raise UserError(
            f"a training pool of {len(pool)} example(s) leaves nothing to train on after carving "
            f"{n_selection} for selection (val_fraction {config.val_fraction}); use more samples"
        )
    selection = sorted(pool[:n_selection].tolist())
    training = sorted(pool[n_selection:].tolist())
    sizes = SplitSizes(train_pool=len(pool), train=len(training), selection=len(selection))
    return train.select(training), train.select(selection), sizes


@dataclass
class Collator:
    """Pads a list of tokenized examples into tensors: model inputs by the tokenizer, labels with
    −100 on the tokenizer's padding side (token tasks), plus the examples' ``index``."""

    tokenizer: PreTrainedTokenizerBase
    regression: bool = False

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        import torch

        if features and _is_multiple_choice(features[0]):
            return self._choices(features)
        inputs = [{k: f[k] for k in _MODEL_INPUTS if k in f} for f in features]
        batch = dict(self.tokenizer.pad(inputs, return_tensors="pt"))
        labels = [f["labels"] for f in features]
        if isinstance(labels[0], list):
            width = batch["input_ids"].shape[1]
            left = self.tokenizer.padding_side == "left"
            padded = [
                [-100] * (width - len(x)) + x if left else x + [-100] * (width - len(x))
                for x in labels
            ]
            batch["labels"] = torch.tensor(padded, dtype=torch.long)
        else:
            dtype = torch.float32 if self.regression else torch.long
            batch["labels"] = torch.tensor(labels, dtype=dtype)
        batch["index"] = torch.tensor([f["index"] for f in features], dtype=torch.long)
        return batch

    def _choices(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Multiple choice: inputs ``[B, C, T]`` (every choice padded to the batch's longest),
        ``labels`` ``[B]`` (the right choice's index)."""
        import torch

        counts = {len(f["input_ids"]) for f in features}
        if len(counts) != 1:
            raise ValueError(f"every example of a batch needs as many choices, got {counts}")
        choices = counts.pop()
        flat = [
            {k: f[k][c] for k in _MODEL_INPUTS if k in f} for f in features for c in range(choices)
        ]
        padded = self.tokenizer.pad(flat, return_tensors="pt")
        batch = {k: v.view(len(features), choices, -1) for k, v in padded.items()}
        batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
        batch["index"] = torch.tensor([f["index"] for f in features], dtype=torch.long)
        return batch


def _is_multiple_choice(feature: dict[str, Any]) -> bool:
    """A multiple-choice example holds one token list per choice."""
    ids = feature["input_ids"]
    return bool(ids) and isinstance(ids[0], list)


class LengthGroupedBatches:
    """Batch indices of similar length: shuffle, cut into mega-batches of ``group`` batches,
    sort each by length, chunk into batches and shuffle the batch order (less padding; every
    example once per epoch). Random with its own generator, so resumable like the shuffle."""

    def __init__(
        self, lengths: list[int], batch_size: int, generator: torch.Generator, group: int = 50
    ) -> None:
        self.lengths, self.batch_size = lengths, batch_size
        self.generator, self.group = generator, group

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        import torch

        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        span = self.batch_size * self.group
        batches = []
        for start in range(0, len(order), span):
            chunk = sorted(order[start : start + span], key=lambda i: -self.lengths[i])
            batches += [
                chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)
            ]
        for index in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[index]


def make_loader(
    examples: list[dict[str, Any]],
    collator: Collator,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    group_by_length: bool = False,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """A DataLoader over in-memory examples; shuffling uses its own seeded generator (exposed
    as ``loader.generator`` for checkpoints), optionally grouping examples of similar length."""
    import torch

    generator = torch.Generator().manual_seed(seed) if shuffle else None
    if shuffle and group_by_length:
        lengths = [len(example["input_ids"]) for example in examples]
        loader = torch.utils.data.DataLoader(
            examples,
            batch_sampler=LengthGroupedBatches(lengths, batch_size, generator),
            generator=generator,
            collate_fn=collator,
            pin_memory=pin_memory,
        )
        return loader
    return torch.utils.data.DataLoader(
        examples,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        collate_fn=collator,
        pin_memory=pin_memory,
    )
