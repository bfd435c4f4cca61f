"""huggingface/peft's own prompt-learning implementations, run through our ``Method`` interface.

Three comparison rows. Each calls ``peft.get_peft_model`` on the backbone. peft then owns the
prompt, its placement and its reparameterization. peft adds the task head (``classifier`` /
``score``) to its ``modules_to_save``.

``peft_prompt_tuning``
    ``PromptTuningConfig``: m soft tokens ``[m, d]`` prepended to the word embeddings.
``peft_p_tuning``
    ``PromptEncoderConfig``: an LSTM+MLP or MLP encoder over m pseudo-token embeddings, prepended
    like prompt tuning.
``peft_prefix_tuning``
    ``PrefixTuningConfig(prefix_projection=True)``: Embedding(m, d) → Linear(d, h) → tanh →
    Linear(h, 2·L·d) key/value prefixes, passed to the model as ``past_key_values``.

How peft places input prompts (rows differ from ours here, by design): prompts take positions
0..m-1 and real tokens m..m+n-1, like our ``position: shift``. peft's heads read position 0, which
is a prompt slot, and not the real [CLS]. Decoder heads (GPT-2, Llama) get ``inputs_embeds``, so
they pool the last position even in right-padded rows. For token classification peft returns
``[B, m+n, C]`` logits. A forward hook drops the first m positions. This gives the same loss as
the labels padded with m times −100, which is how peft is meant to be used.

Errors are not caught. peft 0.21.2 with transformers 5.24 cannot run prefix tuning for sequence
or token classification: its forward looks for a ``past_key_values`` argument, and transformers
5.24 names it ``cache``. The first forward raises peft's ``ValueError`` ("Model does not support
past key values which are required for prefix tuning."), and the runner records the run as
``failed`` with that error. Only a missing peft becomes a ``UserError``.

Export is ``peft.get_peft_model_state_dict``: ``prompt_embeddings`` plus the head under
``base_model.<head>.*``. For p-tuning, ``prompt_embeddings`` is the encoder's output ``[m, d]``
(merged). For prefix tuning it is the MLP's output ``[m, 2·L·d]`` (merged). ``load`` rebuilds
the model the way ``PeftModel.from_pretrained`` does, with ``inference_mode=True``: no encoder,
and ``embedding.weight`` is the stored prompt. It then calls ``peft.set_peft_model_state_dict``.

Default learning rates equal those of our matching method (``prompt_tuning``, ``p_tuning``,
``prefix_tuning``), so the rows can be compared.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from bench.errors import UserError
from methods._peft import HEAD_COPY, set_peft_delta
from methods._peft import load_peft as _peft
from methods._peft import new_modules_to_save as _new_modules_to_save
from methods.base import AttachData, Method, MethodConfig, ParamCounts
from methods.p_tuning import PTuningConfig as _OursPTuning
from methods.prefix_tuning import PrefixTuningConfig as _OursPrefix
from methods.prompt_tuning import PromptTuningConfig as _OursPromptTuning

if TYPE_CHECKING:
    from torch import Tensor, nn

    from bench.config import TrainConfig
    from tasks import TaskSpec

PROMPT_INITS = ("random", "text", "sample_vocab")
P_TUNING_ENCODERS = ("lstm", "mlp")
# --- configs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeftRowConfig(MethodConfig):
    """Fields shared by the peft rows. ``lr`` is the learning rate of the prompt encoder."""

    num_virtual_tokens: int = field(
        default=20, metadata={"help": "m, the number of virtual tokens (peft's name)."}
    )
    head_lr: float | None = field(
        default=None, metadata={"help": "Learning rate of the task head (None: same as lr)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        m = self.num_virtual_tokens
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ValueError(f"num_virtual_tokens must be a positive integer, got {m!r}")
        if self.head_lr is not None and not self.head_lr > 0:
            raise ValueError(f"head_lr must be > 0 or None, got {self.head_lr!r}")


@dataclass(frozen=True)
class PeftPromptTuningConfig(PeftRowConfig):
    """peft ``PromptTuningConfig``. Default learning rates are those of our ``prompt_tuning``."""

    lr: float = field(
        default=_OursPromptTuning.lr,
        metadata={"help": "Learning rate of the soft prompt (default: prompt_tuning's)."},
    )
    head_lr: float | None = field(
        default=_OursPromptTuning.head_lr,
        metadata={"help": "Learning rate of the task head (default: prompt_tuning's)."},
    )
    init: str = field(
        default="random",
        metadata={
            "help": "peft's prompt_tuning_init: 'random' (nn.Embedding's N(0, 1)), 'text' "
            "(embeddings of init_text from the backbone's tokenizer, cycled to m), or "
            "'sample_vocab' (m random vocabulary rows)."
        },
    )
    init_text: str | None = field(
        default=None,
        metadata={"help": "Text for init 'text' (None: the task's keywords, space-separated)."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init not in PROMPT_INITS:
            raise ValueError(f"init must be one of {', '.join(PROMPT_INITS)}, got {self.init!r}")
        if self.init_text is not None and (
            not isinstance(self.init_text, str) or not self.init_text.strip()
        ):
            raise ValueError("init_text must be non-empty text or None")


@dataclass(frozen=True)
class PeftPTuningConfig(PeftRowConfig):
    """peft ``PromptEncoderConfig``. Default learning rate and encoder are our ``p_tuning``'s."""

    lr: float = field(
        default=_OursPTuning.lr,
        metadata={"help": "Learning rate of the prompt encoder (default: p_tuning's)."},
    )
    head_lr: float | None = field(
        default=_OursPTuning.head_lr,
        metadata={"help": "Learning rate of the task head (default: p_tuning's)."},
    )
    encoder: str = field(
        default="lstm",
        metadata={
            "help": "peft's encoder_reparameterization_type: 'lstm' (bi-LSTM(2) + MLP) or "
            "'mlp' (3 Linear layers)."
        },
    )
    encoder_hidden_size: int | None = field(
        default=None,
        metadata={"help": "Encoder hidden size (LSTM: per direction). None: d/2 (lstm), d (mlp)."},
    )
    encoder_dropout: float = field(
        default=0.0, metadata={"help": "Dropout between the LSTM layers (peft's encoder_dropout)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.encoder not in P_TUNING_ENCODERS:
            raise ValueError(
                f"encoder must be one of {', '.join(P_TUNING_ENCODERS)}, got {self.encoder!r}"
            )
        if self.encoder_hidden_size is not None and self.encoder_hidden_size < 1:
            raise ValueError(
                f"encoder_hidden_size must be positive or None, got {self.encoder_hidden_size!r}"
            )
        if not 0.0 <= self.encoder_dropout < 1.0:
            raise ValueError(f"encoder_dropout must be in [0, 1), got {self.encoder_dropout!r}")


@dataclass(frozen=True)
class PeftPrefixTuningConfig(PeftRowConfig):
    """peft PrefixTuningConfig, prefix_projection=True. Defaults: our prefix_tuning's."""

    lr: float = field(
        default=_OursPrefix.lr,
        metadata={"help": "Learning rate of the prefix MLP (default: prefix_tuning's)."},
    )
    head_lr: float | None = field(
        default=_OursPrefix.head_lr,
        metadata={"help": "Learning rate of the task head (default: prefix_tuning's)."},
    )
    encoder_hidden_size: int = field(
        default=_OursPrefix.prefix_hidden,
        metadata={"help": "h, the prefix MLP's hidden size (default: prefix_tuning's)."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.encoder_hidden_size < 1:
            raise ValueError(
                f"encoder_hidden_size must be positive, got {self.encoder_hidden_size!r}"
            )


# --- the shared method -----------------------------------------------------------------------


class PeftRow(Method):
    """Base of the peft rows. A subclass builds the peft config and names the stored shape.

    ``attach`` returns peft's ``PeftModel``. ``model(input_ids [B, n], attention_mask [B, n],
    token_type_ids?)`` returns the HF output, and ``.logits`` is ``[B, C]`` or ``[B, n, C]``.
    """

    #: The peft config class this row builds, e.g. ``"PromptTuningConfig"``.
    comparison: ClassVar[bool] = True
    peft_config_name: ClassVar[str]
    #: Closed form of the stored prompt, e.g. ``"m*d"``. Its value comes from :meth:`stored_prompt`.
    formula: ClassVar[str]

    @abc.abstractmethod
    def peft_kwargs(self, backbone: nn.Module, task: TaskSpec, inference_mode: bool) -> dict:
        """The method's own arguments of its peft config (task type etc. are added by the base)."""

    @abc.abstractmethod
    def stored_prompt(self, layers: int, m: int, d: int) -> int:
        """Number of stored prompt scalars (the closed form of :attr:`formula`)."""

    # attach / load ----------------------------------------------------------------------

    def attach(
        self, backbone: nn.Module, task: TaskSpec, data: AttachData | None = None
    ) -> nn.Module:
        return self._build(backbone, task, inference_mode=False)

    def _build(self, backbone: nn.Module, task: TaskSpec, inference_mode: bool) -> nn.Module:
        peft = _peft()
        token_level = task.kind.value == "token_classification"
        config = getattr(peft, self.peft_config_name)(
            task_type=peft.TaskType.TOKEN_CLS if token_level else peft.TaskType.SEQ_CLS,
            inference_mode=inference_mode,
            modules_to_save=_new_modules_to_save(backbone) or None,
            num_virtual_tokens=self.config.num_virtual_tokens,
            **self.peft_kwargs(backbone, task, inference_mode),
        )
        model = peft.get_peft_model(backbone, config)
        if token_level:
            model.register_forward_hook(_drop_virtual_positions(self.config.num_virtual_tokens))
        return model

    def load(self, backbone: nn.Module, task: TaskSpec, delta: dict[str, Tensor]) -> nn.Module:
        """peft's own load path: ``inference_mode=True`` (stored prompt used as is), then
        ``set_peft_model_state_dict``. The delta's keys must match what export writes."""
        model = self._build(backbone, task, inference_mode=True)
        return set_peft_delta(model, delta, self.name)

    # training ---------------------------------------------------------------------------

    def param_groups(self, model: nn.Module, train: TrainConfig) -> list[dict[str, Any]]:
        from methods.full_finetune import decay_groups

        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        prompt = [p for n, p in trainable if n.startswith("prompt_encoder.")]
        head = [(n, p) for n, p in trainable if not n.startswith("prompt_encoder.")]
        head_lr = self.config.head_lr or self.config.lr
        groups = [{"params": prompt, "lr": self.config.lr, "weight_decay": 0.0}]
        return [*groups, *decay_groups(head, head_lr, train.weight_decay)]

    def check_length(self, model: nn.Module, max_length: int) -> None:
        """peft's virtual tokens take absolute positions 0..m-1 (prefixes shift them too)."""
        from torch import nn

        base = model.get_base_model().base_model
        embeddings = getattr(base, "embeddings", None)
        positions = getattr(embeddings, "position_embeddings", None) or getattr(base, "wpe", None)
        if not isinstance(positions, nn.Embedding):
            return  # relative or rotary positions: no table to run out of
        available = positions.num_embeddings
        if positions.padding_idx is not None:
            available -= positions.padding_idx + 1
        m = self.config.num_virtual_tokens
        if max_length + m > available:
            raise UserError(
                f"max_length {max_length} + num_virtual_tokens {m} exceeds the {available} "
                f"positions of {type(model.get_base_model()).__name__} ({self.name} places the "
                f"virtual tokens at positions 0..{m - 1}); lower max_length to {available - m}"
            )

    # accounting and export ----------------------------------------------------------------

    def parameter_counts(self, model: nn.Module) -> ParamCounts:
        """``head``: peft's trainable copies of the ``modules_to_save``. ``backbone``: the
        transformer (HF ``base_model``) without the modules that were copied."""
        hf = model.get_base_model()
        wrapped = ("original_module", "modules_to_save")
        head = sum(p.numel() for n, p in hf.named_parameters() if HEAD_COPY in n)
        backbone = sum(
            p.numel()
            for n, p in hf.base_model.named_parameters()
            if not any(f".{w}." in f".{n}" for w in wrapped)
        )
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        stored = sum(t.numel() for t in self.export(model).values())
        layers, d = hf.config.num_hidden_layers, hf.config.hidden_size
        m = self.config.num_virtual_tokens
        prompt = self.stored_prompt(layers, m, d)
        numbers = {"L": layers, "m": m, "d": d}
        filled = "*".join(str(numbers.get(s, s)) for s in self.formula.split("*"))
        return ParamCounts(
            trainable=trainable,
            stored=stored,
            head=head,
            backbone=backbone,
            formula=f"{self.formula} + head = {filled} + {head}",
            formula_value=prompt + head,
        )

    def export(self, model: nn.Module) -> dict[str, Tensor]:
        """``peft.get_peft_model_state_dict``, evaluated in eval mode (no encoder dropout)."""
        import torch

        peft = _peft()
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                state = peft.get_peft_model_state_dict(model)
        finally:
            model.train(was_training)
        return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def _drop_virtual_positions(m: int):
    """Forward hook: token logits ``[B, m+n, C]`` → ``[B, n, C]`` (the input's length)."""

    def hook(module, args, output):
        logits = getattr(output, "logits", None)
        if logits is not None:
            output.logits = logits[:, m:]
        return output

    return hook


# --- the three rows --------------------------------------------------------------------------


class PeftPromptTuning(PeftRow):
    """peft's prompt tuning: a ``PromptEmbedding`` of m soft tokens at the input. Stored: m·d."""

    name: ClassVar[str] = "peft_prompt_tuning"
    description: ClassVar[str] = "peft's Prompt Tuning (PromptTuningConfig), for comparison."
    config_cls: ClassVar[type[MethodConfig]] = PeftPromptTuningConfig
    peft_config_name: ClassVar[str] = "PromptTuningConfig"
    formula: ClassVar[str] = "m*d"

    def peft_kwargs(self, backbone: nn.Module, task: TaskSpec, inference_mode: bool) -> dict:
        cfg = self.config
        kwargs: dict[str, Any] = {}
        # On load the stored prompt replaces the init, so the tokenizer is not needed then.
        init = "random" if inference_mode else cfg.init
        if init == "text":
            text = cfg.init_text or " ".join(task.keywords)
            path = getattr(backbone, "name_or_path", "")
            if not text:
                raise UserError(
                    f"init 'text' needs init_text or task keywords; task '{task.name}' has none"
                )
            if not path:
                raise UserError(
                    "init 'text' loads the backbone's tokenizer, but the backbone has no "
                    "name_or_path (a model built from a config?); use init 'random'"
                )
            kwargs = {"prompt_tuning_init_text": text, "tokenizer_name_or_path": path}
        return {"prompt_tuning_init": init.upper(), **kwargs}

    def stored_prompt(self, layers: int, m: int, d: int) -> int:
        return m * d


class PeftPTuning(PeftRow):
    """peft's p-tuning: a ``PromptEncoder`` (bi-LSTM(2)+MLP or MLP) over m pseudo-token
    embeddings at the input. It is trained and counted at train time. Stored: its output, m·d."""

    name: ClassVar[str] = "peft_p_tuning"
    description: ClassVar[str] = "peft's P-Tuning (PromptEncoderConfig), for comparison."
    config_cls: ClassVar[type[MethodConfig]] = PeftPTuningConfig
    peft_config_name: ClassVar[str] = "PromptEncoderConfig"
    formula: ClassVar[str] = "m*d"

    def peft_kwargs(self, backbone: nn.Module, task: TaskSpec, inference_mode: bool) -> dict:
        cfg = self.config
        d = backbone.config.hidden_size
        hidden = cfg.encoder_hidden_size or (d // 2 if cfg.encoder == "lstm" else d)
        return {
            "encoder_reparameterization_type": cfg.encoder.upper(),
            "encoder_hidden_size": hidden,
            "encoder_dropout": cfg.encoder_dropout,
        }

    def stored_prompt(self, layers: int, m: int, d: int) -> int:
        return m * d


class PeftPrefixTuning(PeftRow):
    """peft's prefix tuning: a ``PrefixEncoder`` with ``prefix_projection=True``.
    Embedding(m, d) → Linear(d, h) → tanh → Linear(h, 2·L·d), passed as ``past_key_values``.
    Stored: its output, 2·L·m·d."""

    name: ClassVar[str] = "peft_prefix_tuning"
    description: ClassVar[str] = "peft's Prefix Tuning (PrefixTuningConfig), for comparison."
    config_cls: ClassVar[type[MethodConfig]] = PeftPrefixTuningConfig
    peft_config_name: ClassVar[str] = "PrefixTuningConfig"
    formula: ClassVar[str] = "2*L*m*d"

    def peft_kwargs(self, backbone: nn.Module, task: TaskSpec, inference_mode: bool) -> dict:
        return {"prefix_projection": True, "encoder_hidden_size": self.config.encoder_hidden_size}

    def stored_prompt(self, layers: int, m: int, d: int) -> int:
        return 2 * layers * m * d
