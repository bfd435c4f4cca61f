"""Prompt sources: where the prompt vectors come from, and how they are initialised.

Each source is an ``nn.Module`` whose ``forward()`` takes no input and returns ``[m, width]``.
``width`` is d for input prompts, L·d for per-layer hidden prompts and L·2·d_kv for key/value
prefixes. :func:`shape_for` reshapes the result for :class:`~methods._prompting.PromptedModel`.

- :class:`DirectPrompt`: the prompt is the parameter (Prompt Tuning; P-Tuning v2 ``reparam: none``).
- :class:`MLPPrompt`: Embedding(m, d) → Linear(d, h) → tanh → Linear(h, width) (Prefix Tuning,
  Li & Liang 2021; P-Tuning v2 ``reparam: mlp``).
- :class:`LSTMPrompt`: Embedding(m, d) → bi-LSTM(2 layers, h per direction) → Linear(2h, 2h) → ReLU
  → Linear(2h, width) (P-Tuning v1; P-Tuning v2 ``reparam: lstm``). Same shapes as peft's encoder.
- :class:`MLP3Prompt`: Embedding → Linear(d, h) → ReLU → Linear(h, h) → ReLU → Linear(h, width)
  (peft's ``encoder_reparameterization_type="MLP"`` for P-Tuning; not in the original P-Tuning
  code, whose only encoder is the LSTM + 2-layer MLP of :class:`LSTMPrompt`).

Reparameterized sources are merged away on export: :meth:`materialize` gives the tensor.
"""

from __future__ import annotations

from enum import Enum

import torch
from torch import nn

from bench.errors import UserError
from methods._prompting import Geometry, Placement


class Init(str, Enum):
    RANDOM_UNIFORM = "random_uniform"
    NORMAL = "normal"
    VOCAB_SAMPLE = "vocab_sample"
    TEXT = "text"
    CLUSTER = "cluster"


class DirectPrompt(nn.Module):
    """The prompt is a trainable ``[m, width]`` parameter."""

    def __init__(self, initial: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(initial.detach().clone())

    def forward(self) -> torch.Tensor:
        return self.weight


class MLPPrompt(nn.Module):
    """Embedding(m, d) → Linear(d, h) → tanh → Linear(h, width)."""

    def __init__(self, initial: torch.Tensor, hidden: int, width: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(initial.shape[0], initial.shape[1])
        self.embedding.weight.data.copy_(initial)
        self.mlp = nn.Sequential(
            nn.Linear(initial.shape[1], hidden), nn.Tanh(), nn.Linear(hidden, width)
        )

    def forward(self) -> torch.Tensor:
        return self.mlp(self.embedding.weight)


class MLP3Prompt(nn.Module):
    """Embedding → Linear(d, h) → ReLU → Linear(h, h) → ReLU → Linear(h, width)."""

    def __init__(self, initial: torch.Tensor, hidden: int, width: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(initial.shape[0], initial.shape[1])
        self.embedding.weight.data.copy_(initial)
        self.mlp = nn.Sequential(
            nn.Linear(initial.shape[1], hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, width),
        )

    def forward(self) -> torch.Tensor:
        return self.mlp(self.embedding.weight)


class LSTMPrompt(nn.Module):
    """Embedding(m, d) → bi-LSTM(2 layers, h per direction) → Linear(2h, 2h) → ReLU →
    Linear(2h, width). The LSTM runs over the m pseudo tokens as one sequence."""

    def __init__(self, initial: torch.Tensor, hidden: int, width: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(initial.shape[0], initial.shape[1])
        self.embedding.weight.data.copy_(initial)
        self.lstm = nn.LSTM(
            initial.shape[1], hidden, num_layers=2, bidirectional=True, batch_first=True
        )
        self.mlp = nn.Sequential(
            nn.Linear(2 * hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, width)
        )

    def forward(self) -> torch.Tensor:
        output, _ = self.lstm(self.embedding.weight.unsqueeze(0))
        return self.mlp(output.squeeze(0))


ENCODERS: dict[str, type[nn.Module]] = {"mlp": MLPPrompt, "mlp3": MLP3Prompt, "lstm": LSTMPrompt}


def build_source(initial: torch.Tensor, reparam: str, hidden: int, width: int) -> nn.Module:
    """A source producing ``[m, width]``. With ``reparam == "none"`` ``initial`` must already
    be ``[m, width]``; otherwise ``initial`` ``[m, d]`` seeds the encoder's input embeddings."""
    if reparam == "none":
        return DirectPrompt(initial)
    if reparam not in ENCODERS:
        raise UserError(f"unknown reparam '{reparam}'; valid: none, {', '.join(ENCODERS)}")
    return ENCODERS[reparam](initial, hidden, width)


def width_for(placement: Placement, geo: Geometry) -> int:
    return {
        Placement.INPUT: geo.input_width,
        Placement.HIDDEN: geo.layers * geo.hidden,
        Placement.KV: geo.layers * 2 * geo.kv_dim,
    }[placement]


def shape_for(flat: torch.Tensor, placement: Placement, geo: Geometry) -> torch.Tensor:
    """``[m, width]`` → ``[m, d]`` / ``[L, m, d]`` / ``[L, 2, kv_heads, m, head_dim]``."""
    m = flat.shape[0]
    if placement is Placement.INPUT:
        return flat
    if placement is Placement.HIDDEN:
        return flat.view(m, geo.layers, geo.hidden).permute(1, 0, 2)
    return flat.view(m, geo.layers, 2, geo.kv_heads, geo.head_dim).permute(1, 2, 3, 0, 4)


class ShapedSource(nn.Module):
    """Wraps a source so that ``forward()`` returns the placement's shape."""

    def __init__(self, source: nn.Module, placement: Placement, geo: Geometry) -> None:
        super().__init__()
        self.source = source
        self.placement = placement
        self.geo = geo

    def forward(self) -> torch.Tensor:
        return shape_for(self.source(), self.placement, self.geo)

    @torch.no_grad()
    def materialize(self) -> torch.Tensor:
        """The merged ``[m, width]`` prompt (reparameterization evaluated, no dropout)."""
        was_training = self.training
        self.eval()
        try:
            return self.source().detach().clone().contiguous()
        finally:
            self.train(was_training)


# --- initialisation --------------------------------------------------------------------------


def initial_prompts(
    init: Init,
    length: int,
    embeddings: torch.Tensor,
    generator: torch.Generator,
    text_ids: list[int] | None = None,
    sample_ids: list[int] | None = None,
    vocab_ids: list[int] | None = None,
    std: float = 0.02,
) -> torch.Tensor:
    """``[m, d]`` starting vectors on the scale of the token embeddings.

    - ``random_uniform``: U(-0.5, 0.5), Lester et al.'s random-uniform option
      (google-research/prompt-tuning, prompt_tuning/prompts.py ``uniform`` initializer,
      scale 0.5). The official P-Tuning v2 code does not use it (see ``normal``).
    - ``normal``: N(0, ``std``). std 0.02 is what ``from_pretrained``'s ``_init_weights``
      gives the official P-Tuning v2 prefix embedding (a key the checkpoint lacks); std 1.0 is
      PyTorch's ``nn.Embedding`` default, which Li & Liang's prefix embedding keeps.
    - ``vocab_sample``: embeddings of m tokens drawn uniformly from the first 5,000 ordinary
      tokens (``vocab_ids``: specials and BERT's ``[unused*]`` rows removed by the caller, who
      has the tokenizer), a proxy for Lester et al.'s 5,000 most frequent tokens. Without
      ``vocab_ids`` the 5,000 lowest ids are used.
    - ``text``: embeddings of the task's keywords, cycled to length m.
    - ``cluster``: k-means (k = m) centroids of the token embeddings of a few training examples.
    """
    d = embeddings.shape[1]
    if init is Init.RANDOM_UNIFORM:
        return torch.rand(length, d, generator=generator) - 0.5
    if init is Init.NORMAL:
        return torch.randn(length, d, generator=generator) * std
    if init is Init.VOCAB_SAMPLE:
        pool = (
            torch.tensor(vocab_ids[:5000])
            if vocab_ids
            else torch.arange(min(5000, embeddings.shape[0]))
        )
        ids = pool[torch.randint(len(pool), (length,), generator=generator)]
        return embeddings[ids].clone()
    if init is Init.TEXT:
        if not text_ids:
            raise UserError("prompt init 'text' needs task keywords (the task YAML's keywords)")
        ids = [text_ids[i % len(text_ids)] for i in range(length)]
        return embeddings[torch.tensor(ids)].clone()
    if init is Init.CLUSTER:
        if not sample_ids or len(set(sample_ids)) < length:
            raise UserError(
                f"prompt init 'cluster' needs at least {length} distinct tokens from training "
                f"examples, got {len(set(sample_ids or []))}"
            )
        from sklearn.cluster import KMeans

        points = embeddings[torch.tensor(sorted(set(sample_ids)))].float().numpy()
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        centroids = KMeans(n_clusters=length, n_init=4, random_state=seed).fit(points)
        return torch.tensor(centroids.cluster_centers_, dtype=embeddings.dtype)
    raise UserError(f"unknown prompt init {init!r}; valid: {', '.join(i.value for i in Init)}")


def direct_initial(
    initial: torch.Tensor, width: int, init: Init, generator: torch.Generator, std: float = 0.02
) -> torch.Tensor:
    """``[m, width]`` start for a direct (non-reparameterized) deep prompt.

    ``random_uniform`` and ``normal`` are drawn fresh over the full width. Embedding-based
    inits (vocab, text, cluster) are tiled along the flat width, which needs width = k·d: once
    per layer (hidden), once per layer and key/value (kv with d_kv = d; under grouped-query
    attention, d_kv < d, one embedding spans several consecutive key/value prefixes).
    """
    if width == initial.shape[1]:
        return initial
    if init is Init.RANDOM_UNIFORM:
        return torch.rand(initial.shape[0], width, generator=generator) - 0.5
    if init is Init.NORMAL:
        return torch.randn(initial.shape[0], width, generator=generator) * std
    if width % initial.shape[1]:
        raise UserError(
            f"prompt init '{init.value}' tiles token embeddings (d={initial.shape[1]}) across a "
            f"deep prompt of width {width}, which is not a multiple of d (grouped-query "
            "attention); use init random_uniform or a reparameterization"
        )
    return initial.repeat(1, width // initial.shape[1])
