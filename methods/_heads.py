"""Task heads that a method's ``official`` profile puts in place of the backbone's own head.

``pooler_linear`` is the head of the official P-Tuning v2 code on every encoder
(THUDM/P-tuning-v2 at 2873f47, model/sequence_classification.py): the base model's pooler
(dense + tanh over the first token) frozen with the rest of the backbone, then dropout and one
trained ``Linear(d, num_labels)`` (``BertPrefixForSequenceClassification``: lines 106-111 build
and freeze ``BertModel`` with its pooler, 178-181 read ``outputs[1]``;
``RobertaPrefixForSequenceClassification``: lines 326-332 build ``RobertaModel`` with its
pooler and freeze it, 399-402 read ``outputs[1]``). Where the checkpoint has no pooler (RoBERTa)
the original's ``from_pretrained`` draws it from ``_init_weights``: weight N(0,
initializer_range), bias 0. The same draw is made here, and the pooler stays frozen.

BERT-style sequence classifiers already are pooler + dropout + Linear, and DeBERTa's
ContextPooler + dropout + Linear is the original's DeBERTa head (trained there: only the encoder
is frozen), so only heads that read
the hidden states themselves (RoBERTa's ``RobertaClassificationHead``: an extra trained d×d
dense layer) are replaced. Token classification heads (dropout + Linear per token) are the
originals' already.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bench.errors import UserError

#: Attribute on the backbone naming head parameters that are stored (exported) but frozen.
FROZEN_HEAD_ATTR = "peft_bench_frozen_head"


class PoolerLinearHead(nn.Module):
    """``features [B, T, d]`` → tanh(dense(features[:, 0])) → dropout → Linear → ``[B, C]``.

    ``pooler`` (the dense layer) is frozen; ``classifier`` trains.
    """

    def __init__(self, hidden: int, num_labels: int, dropout: float, std: float) -> None:
        super().__init__()
        self.pooler = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_labels)
        for layer in (self.pooler, self.classifier):
            nn.init.normal_(layer.weight, mean=0.0, std=std)
            nn.init.zeros_(layer.bias)
        self.pooler.requires_grad_(False)

    def forward(self, features: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        pooled = torch.tanh(self.pooler(features[:, 0]))
        return self.classifier(self.dropout(pooled))


def install_pooler_linear(backbone: nn.Module) -> set[str]:
    """Give a sequence classifier the official pooler + dropout + Linear head; return the names
    of the head parameters that stay frozen (the pooler). BERT-style models (a base-model
    pooler feeding a Linear ``classifier``) keep theirs, with the pooler frozen."""
    config = backbone.config
    base = backbone.base_model
    pooler = getattr(base, "pooler", None)
    classifier = getattr(backbone, "classifier", None)
    if pooler is not None and isinstance(classifier, nn.Linear):
        return {n for n, _ in backbone.named_parameters() if ".pooler." in f".{n}"}
    if getattr(backbone, "pooler", None) is not None and isinstance(classifier, nn.Linear):
        # DeBERTa: ContextPooler + dropout + Linear outside the encoder, all trained, as the
        # original's DebertaPrefixForSequenceClassification (it freezes only self.deberta)
        return set()
    if classifier is None or isinstance(classifier, nn.Linear):
        raise UserError(
            f"head 'pooler_linear' does not know where {type(backbone).__name__} keeps its "
            "sequence head (expected a `classifier` module reading the hidden states); "
            "use head 'task'"
        )
    dropout = getattr(config, "classifier_dropout", None)
    if dropout is None:
        dropout = config.hidden_dropout_prob
    std = getattr(config, "initializer_range", 0.02)
    head = PoolerLinearHead(config.hidden_size, config.num_labels, dropout, std)
    backbone.classifier = head.to(next(backbone.parameters()).dtype)
    return {f"classifier.pooler.{n}" for n, _ in head.pooler.named_parameters()}
