"""Template placement with a verbalizer: P-Tuning v1 as published (Liu et al. 2021).

The task's ``template`` (``tasks/*.yaml``) places m trainable pseudo tokens *around* the input
fields, with literal words and one ``[MASK]``; the backbone's masked-LM head scores each label's
word (the task's ``verbalizer``) at the mask, and those scores are the class logits. This is
how THUDM/P-tuning's few-shot SuperGLUE code works (PT-Fewshot/data_utils/task_pvps.py: a
pattern of text pieces with ``block_flag`` marking the pseudo-token positions, ``[MASK]`` and a
verbalizer per task; PT-Fewshot/pet/wrapper.py replaces the flagged positions' embeddings by
the prompt encoder's output and reads the MLM logits of the label words at the mask).

Layout. Batches arrive tokenized as usual (``[CLS] a [SEP] b [SEP]`` and its RoBERTa form), so
tokenization, caching and truncation stay shared with every other method. :class:`Template`
learns where the tokenizer puts its special tokens (from ``build_inputs_with_special_tokens``),
cuts each row back into its fields, and lays the row out again as
``[CLS] <template pieces> [SEP]``: a field's tokens, ``k`` pseudo-token slots per ``[P]``
(the m slots spread over the markers, the first markers taking one more when m does not
divide), the literal words' ids, and the mask. Token types are all 0 (one segment, as the
original encodes the whole pattern as text_a). Positions are the model's own (0..T-1): the
pseudo tokens are ordinary tokens of the sequence.

MLM head. The head comes from the backbone's checkpoint (``AutoModelForMaskedLM`` at the same
location), with its decoder tied to the backbone's word embeddings. A checkpoint without that
head (MiniLM: a sentence-embedding fine-tune) is refused with a clear error: a randomly
initialised head would make the verbalizer's words meaningless.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bench.errors import UserError

PIECE_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}|\[P\]|\[MASK\]")
#: codes of the non-literal pieces in :attr:`Template.layout` (literal token ids are >= 0)
SLOT, MASK = -1, -2


def field_code(index: int) -> int:
    """The layout code of text field ``index`` (-3, -4, ...)."""
    return -3 - index


def split_template(template: str) -> list[str]:
    """``"{a} ? [MASK] , [P] {b}"`` → ``["{a}", " ?", "[MASK]", " ,", "[P]", "{b}"]``
    (literal text kept with its spaces; empty pieces dropped)."""
    pieces, start = [], 0
    for match in PIECE_RE.finditer(template):
        if match.start() > start:
            pieces.append(template[start : match.start()])
        pieces.append(match.group(0))
        start = match.end()
    if start < len(template):
        pieces.append(template[start:])
    return [p for p in pieces if p.strip()]


@dataclass(frozen=True)
class Template:
    """A task template resolved against one tokenizer.

    ``layout``: codes in order (token id >= 0, :data:`SLOT`, :data:`MASK`, field codes);
    ``label_ids``: the verbalizer's token id per class; ``prefix``/``middle``/``suffix``: the
    special tokens the tokenizer puts before, between and after the fields of its inputs;
    ``single_suffix``: what ends a one-field input (ends the templated row).
    """

    layout: tuple[int, ...]
    label_ids: tuple[int, ...]
    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    single_suffix: tuple[int, ...]
    mask_id: int
    pad_id: int
    placeholder_id: int

    @property
    def slots(self) -> int:
        return sum(code == SLOT for code in self.layout)

    @property
    def added(self) -> int:
        """Tokens the template adds beside the fields' own (slots, literals, mask, specials)."""
        return sum(code >= 0 or code in (SLOT, MASK) for code in self.layout) + len(
            self.prefix
        ) + len(self.single_suffix)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """The template as int64 tensors (stored with the delta, so that load needs no
        tokenizer)."""
        scalars = [self.mask_id, self.pad_id, self.placeholder_id]
        return {
            "template.layout": torch.tensor(self.layout, dtype=torch.long),
            "template.label_ids": torch.tensor(self.label_ids, dtype=torch.long),
            "template.prefix": torch.tensor(self.prefix, dtype=torch.long),
            "template.middle": torch.tensor(self.middle, dtype=torch.long),
            "template.suffix": torch.tensor(self.suffix, dtype=torch.long),
            "template.single_suffix": torch.tensor(self.single_suffix, dtype=torch.long),
            "template.ids": torch.tensor(scalars, dtype=torch.long),
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> Template:
        def ids(name: str) -> tuple[int, ...]:
            return tuple(int(v) for v in tensors[f"template.{name}"].tolist())

        mask_id, pad_id, placeholder_id = ids("ids")
        return cls(
            ids("layout"),
            ids("label_ids"),
            ids("prefix"),
            ids("middle"),
            ids("suffix"),
            ids("single_suffix"),
            mask_id,
            pad_id,
            placeholder_id,
        )


def resolve_template(task: Any, tokenizer: Any, slots: int) -> Template:
    """Tokenize ``task.template``'s literal pieces and ``task.verbalizer``'s words with the
    backbone's tokenizer; spread ``slots`` pseudo tokens over the ``[P]`` markers."""
    if not task.template or not task.verbalizer:
        raise UserError(
            f"placement 'template' needs the task's template and verbalizer; task "
            f"'{task.name}' ({task.kind.value}) has none"
            + (
                " (template placement does not apply to regression or token tasks)"
                if task.kind.value != "classification"
                else "; add `template:` and `verbalizer:` to its YAML (docs/profiles.md)"
            )
        )
    if tokenizer.mask_token_id is None:
        raise UserError("placement 'template' needs a tokenizer with a mask token")
    pieces = split_template(task.template)
    markers = sum(p == "[P]" for p in pieces)
    if slots < markers:
        raise UserError(f"prompt_length {slots} is below the template's {markers} [P] markers")
    per_marker = [slots // markers + (i < slots % markers) for i in range(markers)]
    layout: list[int] = []
    for piece in pieces:
        if piece == "[P]":
            layout += [SLOT] * per_marker.pop(0)
        elif piece == "[MASK]":
            layout.append(MASK)
        elif piece.startswith("{"):
            layout.append(field_code(task.text_fields.index(piece[1:-1])))
        else:
            layout += tokenizer(piece.strip(), add_special_tokens=False)["input_ids"]
    label_ids = tuple(_word_id(tokenizer, task.verbalizer[label]) for label in task.labels)
    # Where the tokenizer puts its special tokens around fields: encode the mask token (one
    # id whatever the vocabulary) as the field, alone and as a pair.
    mask = tokenizer.mask_token_id
    pair = tokenizer(tokenizer.mask_token, tokenizer.mask_token)["input_ids"]
    single = tokenizer(tokenizer.mask_token)["input_ids"]
    first, second = (i for i, t in enumerate(pair) if t == mask)
    placeholder = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else 0
    return Template(
        tuple(layout),
        label_ids,
        tuple(pair[:first]),
        tuple(pair[first + 1 : second]),
        tuple(pair[second + 1 :]),
        tuple(single[single.index(mask) + 1 :]),
        tokenizer.mask_token_id,
        tokenizer.pad_token_id,
        placeholder,
    )


def _word_id(tokenizer: Any, word: str) -> int:
    """The single token id of a label word (after a space for BPE vocabularies)."""
    for text in (" " + word, word):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) == 1 and ids[0] != tokenizer.unk_token_id:
            return ids[0]
    raise UserError(
        f"verbalizer word {word!r} is not one known token of this tokenizer "
        f"({tokenizer(word, add_special_tokens=False)['input_ids']}); choose a one-token word"
    )


def load_mlm_head(backbone: nn.Module) -> nn.Module:
    """The masked-LM head of ``backbone``'s checkpoint, decoder tied to its word embeddings.

    UserError when the checkpoint has none (e.g. MiniLM) or the backbone was not loaded from one.
    """
    import transformers
    from transformers import AutoModelForMaskedLM

    location = getattr(backbone, "name_or_path", "") or ""
    if not location:
        raise UserError(
            "placement 'template' reads the backbone checkpoint's masked-LM head, and this "
            f"{type(backbone).__name__} was not loaded from a checkpoint"
        )
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        mlm, info = AutoModelForMaskedLM.from_pretrained(
            location, output_loading_info=True, use_safetensors=True
        )
    except (OSError, ValueError) as error:
        raise UserError(f"cannot load a masked-LM head for {location}: {error}") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
    names = [n for n, child in mlm.named_children() if child is not mlm.base_model]
    head = getattr(mlm, names[0])
    missing = sorted(
        k for k in info.get("missing_keys", ()) if k.startswith(f"{names[0]}.")
        and not k.endswith("decoder.weight")
    )
    if missing:
        raise UserError(
            f"backbone {location} has no masked-LM head in its checkpoint (missing "
            f"{', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); P-Tuning v1's "
            "template placement scores the verbalizer's words with that head, and a random "
            "head would score nothing. Use placement 'prefix', or a backbone with an MLM head "
            "(bert-*, roberta-*)"
        )
    decoder = mlm.get_output_embeddings()
    decoder.weight = backbone.get_input_embeddings().weight  # tied, as in the checkpoint
    return head.to(next(backbone.parameters()).dtype)


class TemplateModel(nn.Module):
    """A backbone, its MLM head and trainable pseudo tokens placed by a :class:`Template`.

    ``forward(input_ids [B, n], attention_mask [B, n], token_type_ids?)`` → output whose
    ``.logits`` is ``[B, C]``: the MLM logits of each class's label word at the mask.
    ``prompts()`` returns the ``[m, d]`` pseudo-token vectors (m = ``template.slots``).
    """

    def __init__(
        self,
        model: nn.Module,
        head: nn.Module,
        prompts: nn.Module,
        template: Template,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.mlm_head = head
        self.prompts = prompts
        self.template = template
        self.dropout = nn.Dropout(dropout)
        self.length = template.slots
        self._current: torch.Tensor | None = None
        self._slots: torch.Tensor | None = None
        self._ids: torch.Tensor | None = None
        self.model.get_input_embeddings().register_forward_hook(self._swap_slots)

    def _swap_slots(self, module, args, output):
        ids = args[0]
        if self._current is None or ids.shape != self._ids.shape or not torch.equal(ids, self._ids):
            return output
        rows = self._current.to(output.dtype).repeat(output.shape[0], 1)
        output = output.clone()
        output[self._slots] = rows
        return output

    def _fields(self, row: list[int]) -> list[list[int]]:
        """One tokenized row (pads removed) cut back into its text fields."""
        t = self.template
        body = row[len(t.prefix) :]
        middle = list(t.middle)
        for start in range(len(body) - len(middle) + 1):
            if middle and body[start : start + len(middle)] == middle:
                return [body[:start], body[start + len(middle) : len(body) - len(t.suffix)]]
        return [body[: len(body) - len(t.single_suffix)]]

    def _row(self, fields: list[list[int]]) -> tuple[list[int], list[int], int]:
        """(templated ids, slot positions, mask position) of one row's fields."""
        t = self.template
        out, slots, where = list(t.prefix), [], 0
        for code in t.layout:
            if code >= 0:
                out.append(code)
            elif code == SLOT:
                slots.append(len(out))
                out.append(t.placeholder_id)
            elif code == MASK:
                where = len(out)
                out.append(t.mask_id)
            else:
                index = -3 - code
                out += fields[index] if index < len(fields) else []
        return out + list(t.single_suffix), slots, where

    def relayout(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """(ids ``[B, T]``, mask ``[B, T]``, slot positions ``[B, T]`` bool, mask index
        ``[B]``) of the templated rows, right-padded."""
        rows = [
            self._row(self._fields([i for i, k in zip(ids, keep, strict=True) if k]))
            for ids, keep in zip(input_ids.tolist(), attention_mask.tolist(), strict=True)
        ]
        width = max(len(r[0]) for r in rows)
        ids = torch.full((len(rows), width), self.template.pad_id, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        slots = torch.zeros(len(rows), width, dtype=torch.bool)
        for r, (row, slot_positions, _) in enumerate(rows):
            ids[r, : len(row)] = torch.tensor(row)
            mask[r, : len(row)] = 1
            slots[r, slot_positions] = True
        where = torch.tensor([r[2] for r in rows])
        device = input_ids.device
        return ids.to(device), mask.to(device), slots.to(device), where.to(device)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        from transformers.modeling_outputs import SequenceClassifierOutput

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        ids, mask, slots, where = self.relayout(input_ids, attention_mask)
        self._current, self._slots, self._ids = self.dropout(self.prompts()), slots, ids
        try:
            hidden = self.model.base_model(input_ids=ids, attention_mask=mask)[0]
        finally:
            self._current = self._slots = self._ids = None
        at_mask = hidden[torch.arange(ids.shape[0], device=ids.device), where]  # [B, d]
        scores = self.mlm_head(at_mask.unsqueeze(1)).squeeze(1)  # [B, vocab]
        label_ids = torch.tensor(self.template.label_ids, device=ids.device)
        return SequenceClassifierOutput(logits=scores[:, label_ids])
