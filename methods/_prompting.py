"""Prompt placement, shared by every prompt method and every backbone (no per-class copies).

Three placements, chosen by :class:`Placement`:

``input``
    m soft tokens at the input. The tokenizer's ids get m placeholder ids in front. A forward
    hook on the word-embedding module swaps the placeholders' rows for the prompt vectors.
``hidden``
    The same m slots, but each layer's input rows are replaced by that layer's prompt (a
    forward pre-hook on every layer). This is the "prompts at every layer's input" reading of
    P-Tuning v2.
``kv``
    Per-layer key/value prefixes. They are joined to each self-attention's keys and values
    inside a registered ``transformers`` attention function, so the method does not depend on
    the model taking a cache argument. The attention mask gets the matching all-visible block.
    Real tokens keep positions 0..n-1 (counted over real tokens in decoders, see below), and the
    usable length is not reduced. DeBERTa's disentangled attention computes its scores itself,
    so there hooks do the same: prefix rows go in front of the key/value projections of the
    layer input, and the mask gets visible columns. The relative-position bias is computed for
    the real keys only, and is 0 for the position-free prefix keys. Other encoders whose
    attention computes scores itself from separable key/value projections (MPNet) take the
    same projection hooks (see ``_PROJECTION_HOOKS``): MPNet's relative-position bias, computed
    once for the real tokens, gets zero columns for the prefix keys, which therefore have no
    relative position to any query.

Positions of input slots (``input``/``hidden``):
- ``keep``: real tokens keep the positions they would have without prompts, and the slots add
  no absolute position embedding (the position-embedding output is zeroed at the slots).
- ``shift``: slots take positions 0..m-1 and real tokens m..m+n-1, the model's own default,
  as in peft.

Positions under ``kv``: ``keep`` leaves real tokens at 0..n-1; ``shift`` moves them to m..m+n-1,
which is what BERT and RoBERTa do on transformers 4.x when the prefix arrives as
``past_key_values`` of length m (BERT slices its position ids from the past length on; RoBERTa
adds it to the cumulative count of the mask), i.e. the official P-Tuning v2 behaviour.

Prompt dropout masks: one mask for the whole batch (``per_example_dropout=False``), or one mask
per example, as the original codes get by expanding the prompt to the batch before dropout.

Decoders (that take ``position_ids``) are often padded on the left (Llama's tokenizer does so by
default). Their positions count real tokens only (the cumulative sum of the mask, as
``generate`` does), so the padding a batch needs never moves a token's position relative to
the position-free prefix keys or to the slots. On the right-padded batches of encoders this is
what the models do anyway.

Activation checkpointing (transformers checkpoints each layer's ``forward``): the backward pass
runs a layer's attention again, so the kv prefixes and DeBERTa's hook state stay set after the
forward and are released by a hook on the prompts' gradient, which completes only after every
layer's backward. A second training forward before the first one's backward would replace them:
the training loop always runs backward first.

Heads: for encoders, and for token classification, a hook on the base model drops the slots from
``last_hidden_state`` (and recomputes BERT's pooler on the real first token). Heads therefore read
the real [CLS], and token logits have the input's length. Decoder sequence heads pool the last
non-pad token of the extended ids; the slots come first, so they need no trimming.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from torch import nn

from bench.errors import UserError


class Placement(str, Enum):
    INPUT = "input"
    HIDDEN = "hidden"
    KV = "kv"


class Position(str, Enum):
    KEEP = "keep"
    SHIFT = "shift"


_ROTARY_TYPES = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "olmo"}
_DECODER_TYPES = _ROTARY_TYPES | {"gpt2", "gpt_neo", "gptj", "opt", "bloom", "falcon"}
_NO_ATTENTION_INTERFACE = {"deberta", "deberta-v2", "mpnet"}
#: Models whose DisentangledSelfAttention computes scores itself: kv goes through hooks.
_DISENTANGLED_TYPES = {"deberta", "deberta-v2"}


@dataclass(frozen=True)
class Geometry:
    """Sizes that prompt shapes and closed-form counts depend on."""

    layers: int  #: L
    hidden: int  #: d
    kv_heads: int  #: key/value heads (fewer than attention heads under grouped-query attention)
    head_dim: int
    #: width of the input embeddings (ELECTRA/ALBERT factorize them below d); 0 means d
    embedding: int = 0

    @property
    def input_width(self) -> int:
        """Width of an input prompt: the word embeddings' width."""
        return self.embedding or self.hidden

    @property
    def kv_dim(self) -> int:
        """d_kv = kv_heads * head_dim (equals d without grouped-query attention)."""
        return self.kv_heads * self.head_dim


def geometry(config: Any) -> Geometry:
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    embedding = getattr(config, "embedding_size", None) or 0
    return Geometry(config.num_hidden_layers, config.hidden_size, kv_heads, head_dim, embedding)


def is_checkpointing(model: nn.Module) -> bool:
    """Whether ``model`` (a transformers model) has activation checkpointing on."""
    # The first name is transformers >= 5.2x's; the second the one before the rename.
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(model), name):
            value = getattr(model, name)
            return bool(value() if callable(value) else value)
    return False


def is_decoder(model: nn.Module) -> bool:
    return model.config.model_type in _DECODER_TYPES


def supported_placements(model: nn.Module) -> list[str]:
    """The placements that work on ``model``'s architecture."""
    out = [Placement.INPUT.value]
    try:
        _layers(model)
    except UserError:
        return out  # one layer shared across depth (ALBERT): no per-layer prompts
    out.append(Placement.HIDDEN.value)
    if (
        _uses_attention_interface(model)
        or _disentangled_attentions(model)
        or _projection_attentions(model)
    ):
        out.append(Placement.KV.value)
    return out


def _uses_attention_interface(model: nn.Module) -> bool:
    """Whether every layer's self-attention calls transformers' attention interface, where
    :func:`_prefix_attention` joins the prefix. Modules that never import the interface
    (DeBERTa, Falcon, Bloom, ...) compute attention themselves: a prefix would be ignored."""
    if model.config.model_type in _NO_ATTENTION_INTERFACE:
        return False
    attentions = _self_attentions(model)
    return len(attentions) == model.config.num_hidden_layers and all(
        hasattr(importlib.import_module(type(a).__module__), "ALL_ATTENTION_FUNCTIONS")
        for a in attentions
    )


def _layers(model: nn.Module) -> nn.ModuleList:
    """The list of transformer layers (the ModuleList with num_hidden_layers entries)."""
    count = model.config.num_hidden_layers
    for _, module in model.base_model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise UserError(
        f"cannot find the {count} transformer layers of {type(model).__name__} "
        f"({model.config.model_type}; ALBERT, for one, shares a single layer across depth), so "
        "per-layer prompts (placements hidden, kv) have no layer to act on; placements that "
        "work here: input"
    )


def _self_attentions(model: nn.Module) -> list[nn.Module]:
    """Self-attention modules with ``layer_idx`` 0..L-1 (cross-attention excluded). Models whose
    attentions carry no ``layer_idx`` (DistilBERT) get the first self-attention of each layer."""
    found: dict[int, nn.Module] = {}
    for _, module in model.base_model.named_modules():
        name = type(module).__name__
        layer_idx = getattr(module, "layer_idx", None)
        if "Attention" in name and "Cross" not in name and isinstance(layer_idx, int):
            found.setdefault(layer_idx, module)
    if found:
        return [found[i] for i in sorted(found)]
    try:
        layers = _layers(model)
    except UserError:
        return []
    out = []
    for layer in layers:
        own = [
            m
            for m in layer.modules()
            if "Attention" in type(m).__name__ and "Cross" not in type(m).__name__
        ]
        # the innermost attention module (BERT-style wrappers hold a SelfAttention inside)
        inner = [m for m in own if not any(o is not m for o in m.modules() if o in own)]
        if inner:
            out.append(inner[0])
    return out


def _position_embedding(model: nn.Module) -> nn.Embedding | None:
    """The absolute position-embedding module, or None (relative or rotary positions)."""
    base = model.base_model
    embeddings = getattr(base, "embeddings", None)
    module = getattr(embeddings, "position_embeddings", None) or getattr(base, "wpe", None)
    return module if isinstance(module, nn.Embedding) else None


def _counted_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, T] positions that count real tokens only: 0, 1, ... from the first unmasked one
    (pads before it take 0, pads after the last real token repeat its position)."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


# --- kv placement through the attention interface --------------------------------------------

_KV_IMPLEMENTATION = "peft_bench_prefix_{}"
#: Implementations the prefix can wrap: both take a 4-D (bool or additive) mask and honour
#: ``is_causal=False``. Flash kernels take a 2-D padding mask and flex a BlockMask.
_KV_BASES = ("eager", "sdpa")


def _prefix_attention(base_name: str):
    """An attention function that prepends the module's prefix to keys and values, then calls
    the model's original implementation (``sdpa``/``eager``) with the extended mask."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    def attention(module, query, key, value, attention_mask, **kwargs):
        original = module._peft_bench_eager if base_name == "eager" else sdpa_attention_forward
        prefix = getattr(module, "_peft_bench_prefix", None)
        if prefix is None:
            return original(module, query, key, value, attention_mask, **kwargs)
        prefix_key, prefix_value = prefix  # [B, kv_heads, m, head_dim] each
        m = prefix_key.shape[2]
        key = torch.cat([prefix_key.to(key.dtype), key], dim=2)
        value = torch.cat([prefix_value.to(value.dtype), value], dim=2)
        batch, q_len = query.shape[0], query.shape[2]
        if attention_mask is None and getattr(module, "is_causal", False) and q_len > 1:
            causal = torch.ones(q_len, q_len, dtype=torch.bool, device=query.device).tril()
            attention_mask = causal.view(1, 1, q_len, q_len)
        if attention_mask is not None:
            shape = (*attention_mask.shape[:-1], m)
            if attention_mask.dtype == torch.bool:
                block = torch.ones(shape, dtype=torch.bool, device=attention_mask.device)
            else:
                block = torch.zeros(shape, dtype=attention_mask.dtype, device=attention_mask.device)
            attention_mask = torch.cat([block, attention_mask], dim=-1)
            if attention_mask.shape[0] == 1 and batch > 1:
                attention_mask = attention_mask.expand(batch, *attention_mask.shape[1:])
        bias = kwargs.get("position_bias")
        if isinstance(bias, torch.Tensor):  # T5: a relative bias of the real keys only
            kwargs["position_bias"] = torch.cat([bias.new_zeros(*bias.shape[:-1], m), bias], -1)
        kwargs["is_causal"] = False
        return original(module, query, key, value, attention_mask, **kwargs)

    return attention


# --- kv placement for DeBERTa's disentangled attention (hooks) ----------------------------------


def _disentangled_attentions(model: nn.Module) -> list[nn.Module]:
    """DeBERTa(-v2/v3) self-attentions, one per layer, or [] for other architectures."""
    if model.config.model_type not in _DISENTANGLED_TYPES:
        return []
    found = [m for m in model.base_model.modules() if hasattr(m, "disentangled_attention_bias")]
    return found if len(found) == model.config.num_hidden_layers else []


def _disentangled_pre_hook(module, args, kwargs):
    """Remember the layer input (so only its key/value projections get the prefix) and give
    the [B, 1, N, N] mask m visible columns in front."""
    if module._peft_bench_prefix is None:
        return None
    module._peft_bench_input = args[0] if args else kwargs["hidden_states"]
    mask = args[1] if len(args) > 1 else kwargs["attention_mask"]
    m = module._peft_bench_prefix[0].shape[2]
    block = torch.ones((*mask.shape[:-1], m), dtype=mask.dtype, device=mask.device)
    mask = torch.cat([block, mask], dim=-1)
    if len(args) > 1:
        return (args[0], mask, *args[2:]), kwargs
    return args, {**kwargs, "attention_mask": mask}


def _join_prefix_rows(attention: nn.Module, which: int):
    """Forward hook on key_proj (0) / value_proj (1): prefix rows in front of the projection
    of the layer input (not of the relative embeddings, which share key_proj in DeBERTa-v3)."""

    def hook(module, args, output):
        prefix = attention._peft_bench_prefix
        if prefix is None or args[0] is not attention._peft_bench_input:
            return output
        rows = prefix[which]  # [B, heads, m, head_dim] -> [B, m, heads * head_dim]
        rows = rows.permute(0, 2, 1, 3).reshape(rows.shape[0], rows.shape[2], -1)
        return torch.cat([rows.to(output.dtype), output], dim=1)

    return hook


def _bias_for_real_keys(attention: nn.Module, original):
    """The relative-position bias of the real keys; prefix keys have no position (bias 0)."""

    def bias(query_layer, key_layer, relative_pos, rel_embeddings, scale_factor):
        prefix = attention._peft_bench_prefix
        if prefix is None:
            return original(query_layer, key_layer, relative_pos, rel_embeddings, scale_factor)
        m = prefix[0].shape[2]
        real = original(query_layer, key_layer[:, m:], relative_pos, rel_embeddings, scale_factor)
        if not isinstance(real, torch.Tensor):  # no c2p/p2c terms: the bias is the scalar 0
            return real
        return torch.cat([real.new_zeros(*real.shape[:-1], m), real], dim=-1)

    return bias


def _enable_kv_disentangled(attentions: list[nn.Module]) -> list[nn.Module]:
    for attention in attentions:
        if getattr(attention, "_peft_bench_hooked", False):
            continue
        attention._peft_bench_prefix = attention._peft_bench_input = None
        attention.register_forward_pre_hook(_disentangled_pre_hook, with_kwargs=True)
        attention.key_proj.register_forward_hook(_join_prefix_rows(attention, 0))
        attention.value_proj.register_forward_hook(_join_prefix_rows(attention, 1))
        attention.disentangled_attention_bias = _bias_for_real_keys(
            attention, attention.disentangled_attention_bias
        )
        attention._peft_bench_hooked = True
    return attentions


# --- kv placement through projection hooks (attention that computes scores itself) -----------


@dataclass(frozen=True)
class ProjectionHooks:
    """Where an attention family that computes its scores itself takes its inputs.

    Such modules reshape their projections with the input's own ``[B, n]`` shape, so prefix rows
    cannot simply be appended to a projection's output. The hooks therefore run the attention on
    m + n rows: m placeholder rows in front of the layer input, whose key/value projections are
    replaced by the prefix; the m extra query rows are dropped from the output. ``key``/``value``:
    attribute names of the key/value ``nn.Linear`` projections. ``mask``/``bias``: (position,
    keyword) of the additive ``[B, 1, 1|n, n]`` mask and of a relative-position bias
    ``[B, H, n, n]`` (or ``None``). Both get m zero columns in front (the prefix is visible to
    every query and carries no position bias) and, where they have n query rows, m zero rows.
    """

    attention: str  #: class name of the self-attention module, one per layer
    key: str
    value: str
    mask: tuple[int, str]
    bias: tuple[int, str] | None = None


#: model_type -> how its self-attention is hooked. A new family is one entry here.
_PROJECTION_HOOKS: dict[str, ProjectionHooks] = {
    "mpnet": ProjectionHooks(
        "MPNetSelfAttention", "k", "v", mask=(1, "attention_mask"), bias=(2, "position_bias")
    ),
}


def _projection_attentions(model: nn.Module) -> list[nn.Module]:
    """The self-attentions of a :data:`_PROJECTION_HOOKS` family, one per layer, or []."""
    spec = _PROJECTION_HOOKS.get(model.config.model_type)
    if spec is None:
        return []
    found = [m for m in model.base_model.modules() if type(m).__name__ == spec.attention]
    return found if len(found) == model.config.num_hidden_layers else []


def _pad_scores(tensor: torch.Tensor | None, m: int) -> torch.Tensor | None:
    """An additive ``[..., q, n]`` score term with m zero key columns in front, and m zero query
    rows when it has more than one query row (None stays None)."""
    if tensor is None:
        return None
    tensor = torch.cat([tensor.new_zeros(*tensor.shape[:-1], m), tensor], dim=-1)
    if tensor.shape[-2] > 1:
        rows = tensor.new_zeros(*tensor.shape[:-2], m, tensor.shape[-1])
        tensor = torch.cat([rows, tensor], dim=-2)
    return tensor


def _projection_pre_hook(spec: ProjectionHooks):
    """m placeholder rows in front of the layer input; mask and bias padded to match."""

    def hook(module, args, kwargs):
        if module._peft_bench_prefix is None:
            return None
        hidden = args[0] if args else kwargs["hidden_states"]
        m = module._peft_bench_prefix[0].shape[2]
        hidden = torch.cat([hidden.new_zeros(hidden.shape[0], m, hidden.shape[-1]), hidden], 1)
        module._peft_bench_input = hidden
        args = list(args)
        if args:
            args[0] = hidden
        else:
            kwargs = {**kwargs, "hidden_states": hidden}
        for where in (spec.mask, spec.bias):
            if where is None:
                continue
            position, name = where
            if position < len(args):
                args[position] = _pad_scores(args[position], m)
            elif kwargs.get(name) is not None:
                kwargs = {**kwargs, name: _pad_scores(kwargs[name], m)}
        return tuple(args), kwargs

    return hook


def _replace_prefix_rows(attention: nn.Module, which: int):
    """Forward hook on the key (0) / value (1) projection: its first m rows become the prefix."""

    def hook(module, args, output):
        prefix = attention._peft_bench_prefix
        if prefix is None or args[0] is not attention._peft_bench_input:
            return output
        rows = prefix[which]  # [B, heads, m, head_dim] -> [B, m, heads * head_dim]
        m = rows.shape[2]
        rows = rows.permute(0, 2, 1, 3).reshape(rows.shape[0], m, -1)
        return torch.cat([rows.to(output.dtype), output[:, m:]], dim=1)

    return hook


def _drop_prefix_queries(module, args, output):
    """Forward hook on the attention: drop the m placeholder query rows from its outputs
    (the attention output ``[B, m+n, d]`` and, when returned, probabilities ``[B, H, m+n, *]``)."""
    if module._peft_bench_prefix is None:
        return output
    m = module._peft_bench_prefix[0].shape[2]
    first = output[0][:, m:]
    rest = tuple(t[:, :, m:] if isinstance(t, torch.Tensor) else t for t in output[1:])
    return (first, *rest)


def _enable_kv_projections(model: nn.Module, attentions: list[nn.Module]) -> list[nn.Module]:
    spec = _PROJECTION_HOOKS[model.config.model_type]
    for attention in attentions:
        if getattr(attention, "_peft_bench_hooked", False):
            continue
        attention._peft_bench_prefix = attention._peft_bench_input = None
        attention.register_forward_pre_hook(_projection_pre_hook(spec), with_kwargs=True)
        attention.register_forward_hook(_drop_prefix_queries)
        getattr(attention, spec.key).register_forward_hook(_replace_prefix_rows(attention, 0))
        getattr(attention, spec.value).register_forward_hook(_replace_prefix_rows(attention, 1))
        attention._peft_bench_hooked = True
    return attentions


def _enable_kv(model: nn.Module) -> list[nn.Module]:
    """Route ``model``'s attention through the prefix function; return its self-attentions."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    _layers(model)  # one module per layer, or a UserError that says why not (ALBERT)
    disentangled = _disentangled_attentions(model)
    if disentangled:
        return _enable_kv_disentangled(disentangled)
    projected = _projection_attentions(model)
    if projected:
        return _enable_kv_projections(model, projected)
    model_type = model.config.model_type
    if not _uses_attention_interface(model):
        raise UserError(
            f"placement 'kv' does not support {type(model).__name__} ({model_type}): its attention "
            "does not go through transformers' attention interface, so there is no place to join "
            f"key/value prefixes. Placements that work here: "
            f"{', '.join(p for p in supported_placements(model) if p != 'kv') or 'none'}"
        )
    attentions = _self_attentions(model)
    base_name = model.config._attn_implementation or "eager"
    if base_name.startswith(_KV_IMPLEMENTATION.format("")):
        return attentions  # already routed (a reloaded model)
    if base_name not in _KV_BASES:
        raise UserError(
            f"placement 'kv' joins prefixes in front of the {' or '.join(_KV_BASES)} attention "
            f"implementations, and {type(model).__name__} uses '{base_name}'; load the backbone "
            "with attn_implementation='sdpa' (or 'eager'), or use placement input / hidden"
        )
    name = _KV_IMPLEMENTATION.format(base_name)
    if name not in ALL_ATTENTION_FUNCTIONS:
        ALL_ATTENTION_FUNCTIONS.register(name, _prefix_attention(base_name))
        ALL_MASK_ATTENTION_FUNCTIONS.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base_name])
    if base_name == "eager":
        for attention in attentions:
            module = importlib.import_module(type(attention).__module__)
            attention._peft_bench_eager = module.eager_attention_forward
    model.config._attn_implementation = name
    for sub in model.modules():  # sub-configs (if any) must agree
        config = getattr(sub, "config", None)
        if config is not None and config is not model.config:
            config._attn_implementation = name
    return attentions


# --- the wrapper -----------------------------------------------------------------------------


class PromptedModel(nn.Module):
    """A frozen HF model with prompts injected by ``placement``.

    ``prompts`` is a module whose ``forward()`` returns the prompt tensor:
    ``[m, d]`` (input), ``[L, m, d]`` (hidden) or ``[L, 2, kv_heads, m, head_dim]`` (kv).
    ``forward(input_ids [B, n], attention_mask [B, n], token_type_ids?)`` returns the HF output
    whose ``.logits`` is ``[B, C]`` or ``[B, n, C]``: the input length, prompts excluded.
    """

    def __init__(
        self,
        model: nn.Module,
        prompts: nn.Module,
        placement: Placement,
        length: int,
        position: Position = Position.KEEP,
        dropout: float = 0.0,
        token_level: bool = False,
        per_example_dropout: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.prompts = prompts
        self.placement = Placement(placement)
        self.position = Position(position)
        self.length = length
        self.dropout = nn.Dropout(dropout)
        #: prompts of the running forward carry a leading batch dimension (per-example masks)
        self.per_example_dropout = per_example_dropout
        self.geometry = geometry(model.config)
        self.slots = 0 if self.placement is Placement.KV else length
        pad = model.config.pad_token_id
        self.placeholder_id = 1 if pad == 0 else 0
        self._current: torch.Tensor | None = None  #: the prompts of the running forward
        #: what the layers' hooks read: the same prompts, kept until the backward pass has
        #: recomputed every layer under activation checkpointing
        self._layer_prompts: torch.Tensor | None = None
        self._input_ids: torch.Tensor | None = None  # the extended ids of the running forward
        self._swapped = False
        self._handles: list[Any] = []
        self._positions = _position_embedding(model)
        #: decoders get positions counted over real tokens (left-padding safe); encoders and
        #: models without a ``position_ids`` argument (ALiBi) keep their own default
        self._count_positions = is_decoder(model) and (
            "position_ids" in inspect.signature(model.forward).parameters
        )
        if (
            self.placement is Placement.KV
            and self.position is Position.SHIFT
            and self._positions is None
            and not self._count_positions
        ):
            raise UserError(
                f"position 'shift' under placement 'kv' moves the real tokens' positions by m, "
                f"and {type(model).__name__} takes no position ids (relative positions); "
                "use position 'keep'"
            )
        self._attentions: list[nn.Module] = []
        if self.placement is Placement.KV:
            self._attentions = _enable_kv(model)
        rotary = model.config.model_type in _ROTARY_TYPES
        if self.slots and self.position is Position.KEEP and self._positions is None and rotary:
            raise UserError(
                f"position 'keep' needs absolute position embeddings, and "
                f"{type(model).__name__} uses rotary positions (every token, prompt slots "
                "included, must take a position); use position 'shift', or placement 'kv'"
            )
        self.token_level = token_level
        self._install_hooks(trim=token_level or not is_decoder(model))

    # hooks ------------------------------------------------------------------------------

    def _install_hooks(self, trim: bool) -> None:
        model, m = self.model, self.slots
        if self.placement is Placement.INPUT:
            # every module that looks up the input embedding's weight (T5's encoder has its own
            # embed_tokens tied to ``shared``); _is_input_lookup places the prompts once
            weight = model.get_input_embeddings().weight
            for module in model.modules():
                if isinstance(module, nn.Embedding) and module.weight is weight:
                    self._handles.append(module.register_forward_hook(self._swap_input_rows))
        if self.placement is Placement.HIDDEN:
            for index, layer in enumerate(_layers(model)):
                self._handles.append(
                    layer.register_forward_pre_hook(self._layer_hook(index), with_kwargs=True)
                )
        if m and self.position is Position.KEEP and self._positions is not None:
            self._handles.append(self._positions.register_forward_hook(self._zero_slot_positions))
        if m and trim:
            self._handles.append(model.base_model.register_forward_hook(self._trim_slots))

    def _is_input_lookup(self, ids: torch.Tensor) -> bool:
        """Whether the embedding looks up the extended input ids (GPT-2 also embeds its
        token_type_ids with the word embedding). Same storage first: no device sync."""
        expected = self._input_ids
        if ids.shape != expected.shape:
            return False
        return ids.data_ptr() == expected.data_ptr() or torch.equal(ids, expected)

    def _swap_input_rows(self, module, args, output):
        if self._current is None or not self._is_input_lookup(args[0]):
            return output
        self._swapped = True
        prompt = self._per_batch(self._current, output.shape[0]).to(output.dtype)
        return torch.cat([prompt, output[:, self.slots :]], dim=1)

    def _layer_hook(self, index: int):
        def hook(module, args, kwargs):
            if self._layer_prompts is None:
                return None
            if args:
                hidden, rest = args[0], args[1:]
            else:
                hidden, rest = kwargs["hidden_states"], ()
            layers = self._layer_prompts
            prompt = (
                layers[:, index]
                if self.per_example_dropout
                else layers[index].unsqueeze(0).expand(hidden.shape[0], -1, -1)
            )
            hidden = torch.cat([prompt.to(hidden.dtype), hidden[:, self.slots :]], dim=1)
            if args:
                return (hidden, *rest), kwargs
            return args, {**kwargs, "hidden_states": hidden}

        return hook

    def _zero_slot_positions(self, module, args, output):
        if self._current is None:
            return output
        keep = torch.ones(output.shape[-2], 1, dtype=output.dtype, device=output.device)
        keep[: self.slots] = 0
        return output * keep

    def _trim_slots(self, module, args, output):
        if self._current is None:
            return output
        hidden = output.last_hidden_state[:, self.slots :]
        output.last_hidden_state = hidden
        pooler = getattr(module, "pooler", None)
        if pooler is not None and getattr(output, "pooler_output", None) is not None:
            if isinstance(pooler, nn.Linear):  # ALBERT: a Linear on the first token + activation
                activation = getattr(module, "pooler_activation", nn.Identity())
                output.pooler_output = activation(pooler(hidden[:, 0]))
            else:
                output.pooler_output = pooler(hidden)
        return output

    # forward ----------------------------------------------------------------------------

    def _positions_keep(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Real tokens' positions as without prompts (RoBERTa style when the position embedding
        has a padding index; counted over real tokens in decoders), with the slots at a valid
        index whose embedding is zeroed."""
        batch, n = input_ids.shape
        padding_idx = self._positions.padding_idx if self._positions is not None else None
        if padding_idx is not None:
            mask = input_ids.ne(self.model.config.pad_token_id).long()
            real = torch.cumsum(mask, dim=1) * mask + padding_idx
            first = padding_idx
        elif self._count_positions:
            real = _counted_positions(attention_mask)
            first = 0
        else:
            real = torch.arange(n, device=input_ids.device).expand(batch, n)
            first = 0
        slots = torch.full((batch, self.slots), first, dtype=torch.long, device=input_ids.device)
        return torch.cat([slots, real], dim=1)

    def _positions_kv_shift(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor | None:
        """Real tokens' positions moved by the prefix length m, as transformers 4.x computes them
        for a past of length m: RoBERTa-style (padding index) ``(cumsum(mask) + m) * mask +
        padding_idx`` over non-pad ids; decoders counting real tokens from m; otherwise
        ``m..m+n-1``. None only where ``__init__`` refused the combination already."""
        m = self.length
        padding_idx = self._positions.padding_idx if self._positions is not None else None
        if padding_idx is not None:
            mask = input_ids.ne(self.model.config.pad_token_id).long()
            return (torch.cumsum(mask, dim=1) + m) * mask + padding_idx
        if self._count_positions:  # decoders, rotary ones included
            return _counted_positions(attention_mask) + m
        if self._positions is None:
            return None
        batch, n = input_ids.shape
        return torch.arange(m, m + n, device=input_ids.device).expand(batch, n)

    def prompt_tensor(self, batch: int = 1) -> torch.Tensor:
        """The prompts as placed (after reparameterization and dropout); with per-example
        dropout masks a leading ``[batch]`` dimension is added before the dropout."""
        prompts = self.prompts()
        if self.per_example_dropout:
            prompts = prompts.unsqueeze(0).expand(batch, *prompts.shape)
        return self.dropout(prompts)

    def _per_batch(self, prompts: torch.Tensor, batch: int) -> torch.Tensor:
        """``[batch, ...]`` input prompts: as they are (per-example) or expanded (shared)."""
        if self.per_example_dropout:
            return prompts
        return prompts.unsqueeze(0).expand(batch, *prompts.shape)

    def _recomputes_in_backward(self) -> bool:
        """Whether the backward pass will run the layers' forward again (activation
        checkpointing): the attention functions and hooks inside a layer then need this
        forward's prompts after the forward has returned. (Hooks on a layer itself run outside
        the checkpoint: the recomputation starts from the inputs they produced.)"""
        return torch.is_grad_enabled() and self.training and is_checkpointing(self.model)

    @contextlib.contextmanager
    def _injected(self, prompts: torch.Tensor, input_ids: torch.Tensor):
        batch = input_ids.shape[0]
        self._current, self._input_ids, self._swapped = prompts, input_ids, False
        self._layer_prompts = prompts
        if self.placement is Placement.KV:
            for index, attention in enumerate(self._attentions):
                if self.per_example_dropout:  # [B, L, 2, kv_heads, m, head_dim]
                    key, value = prompts[:, index, 0], prompts[:, index, 1]
                else:
                    key = prompts[index, 0].unsqueeze(0).expand(batch, -1, -1, -1)
                    value = prompts[index, 1].unsqueeze(0).expand(batch, -1, -1, -1)
                attention._peft_bench_prefix = (key, value)
        try:
            yield
        finally:
            self._current = self._input_ids = None
            if self._recomputes_in_backward() and prompts.requires_grad:
                # Activation checkpointing: the backward pass runs each layer's forward again
                # (the attention function and DeBERTa's hooks included), which must see these
                # prompts. Their gradient is complete only after
                # every layer's backward, so that is when the layer-side state is released.
                prompts.register_hook(self._release_layer_state)
            else:
                self._release_layer_state()

    def _release_layer_state(self, grad: torch.Tensor | None = None) -> None:
        self._layer_prompts = None
        for attention in self._attentions:
            attention._peft_bench_prefix = None
            attention._peft_bench_input = None

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        batch, n = input_ids.shape
        device = input_ids.device
        if attention_mask is None:
            attention_mask = torch.ones(batch, n, dtype=torch.long, device=device)
        if self.slots:
            m = self.slots
            placeholders = torch.full((batch, m), self.placeholder_id, device=device)
            if self.position is Position.KEEP and self._positions is not None:
                kwargs["position_ids"] = self._positions_keep(input_ids, attention_mask)
            input_ids = torch.cat([placeholders.to(input_ids.dtype), input_ids], dim=1)
            ones = torch.ones(batch, m, dtype=attention_mask.dtype, device=device)
            attention_mask = torch.cat([ones, attention_mask], dim=1)
            if token_type_ids is not None:
                zeros = torch.zeros(batch, m, dtype=token_type_ids.dtype, device=device)
                token_type_ids = torch.cat([zeros, token_type_ids], dim=1)
        if self.placement is Placement.KV and self.position is Position.SHIFT:
            shifted = self._positions_kv_shift(input_ids, attention_mask)
            if shifted is not None:
                kwargs["position_ids"] = shifted
        if self._count_positions and "position_ids" not in kwargs:
            kwargs["position_ids"] = _counted_positions(attention_mask)  # shift, or kv
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        with self._injected(self.prompt_tensor(batch), input_ids):
            output = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            if self.placement is Placement.INPUT and not self._swapped:
                raise RuntimeError(
                    f"{type(self.model).__name__} never embedded the prompted input ids with its "
                    "input embeddings: the input prompts were not placed"
                )
        return output
