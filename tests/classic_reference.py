"""The classic route, run under transformers 4.x (a separate process, that install first on
sys.path): prefixes reach BERT/RoBERTa as ``past_key_values`` tuples, prompts as
``inputs_embeds``, exactly as peft 0.3 and the official P-Tuning v2 code pass them.

Usage: ``python classic_reference.py WORKDIR``. Reads ``WORKDIR/cases.json`` (one entry per case:
architecture, config, route, prompt length) and, per case, ``WORKDIR/<case>.in.safetensors``
(backbone state dict in the 4.x names, the prompt, the inputs); writes
``WORKDIR/<case>.out.safetensors`` with ``logits`` (and ``hidden`` for prompt routes: the last
hidden states of the real tokens). Imports nothing from peft-bench (which needs transformers 5).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import transformers
from peft import PrefixTuningConfig, PromptTuningConfig, get_peft_model
from safetensors.torch import load_file, save_file

CLASSES = {
    "bert": transformers.BertForSequenceClassification,
    "roberta": transformers.RobertaForSequenceClassification,
}
CONFIGS = {"bert": transformers.BertConfig, "roberta": transformers.RobertaConfig}


def past_key_values(prefix: torch.Tensor, config, batch: int) -> tuple:
    """``[m, L*2*d]`` → L (key, value) pairs of ``[B, heads, m, head_dim]`` (the official
    get_prompt layout, which peft's prefix encoder shares)."""
    m, heads = prefix.shape[0], config.num_attention_heads
    head_dim = config.hidden_size // heads
    past = prefix.unsqueeze(0).expand(batch, -1, -1)
    past = past.reshape(batch, m, config.num_hidden_layers * 2, heads, head_dim)
    return past.permute([2, 0, 3, 1, 4]).split(2)


def with_prefix_mask(attention_mask: torch.Tensor, m: int) -> torch.Tensor:
    ones = torch.ones(attention_mask.shape[0], m, dtype=attention_mask.dtype)
    return torch.cat([ones, attention_mask], dim=1)


class OfficialRobertaPrefix(torch.nn.Module):
    """The forward of THUDM/P-tuning-v2's RobertaPrefixForSequenceClassification (eval mode):
    RobertaModel with its pooler, the prefix as past_key_values, pooled output → Linear."""

    def __init__(self, config, prefix: torch.Tensor) -> None:
        super().__init__()
        self.roberta = transformers.RobertaModel(config)  # add_pooling_layer=True
        self.classifier = torch.nn.Linear(config.hidden_size, config.num_labels)
        self.prefix = prefix  # [m, L * 2 * d]
        self.config = config

    def forward(self, input_ids, attention_mask):
        past = past_key_values(self.prefix, self.config, input_ids.shape[0])
        mask = with_prefix_mask(attention_mask, self.prefix.shape[0])
        outputs = self.roberta(input_ids, attention_mask=mask, past_key_values=past)
        return self.classifier(outputs[1])


def run_case(case: dict, workdir: Path) -> dict[str, torch.Tensor]:
    tensors = load_file(str(workdir / f"{case['name']}.in.safetensors"))
    config = CONFIGS[case["arch"]](**case["config"])
    inputs = {"input_ids": tensors["input_ids"], "attention_mask": tensors["attention_mask"]}
    if "token_type_ids" in tensors:
        inputs["token_type_ids"] = tensors["token_type_ids"]
    state = {k[len("state.") :]: v for k, v in tensors.items() if k.startswith("state.")}
    m = case["prompt_length"]
    if case["route"] == "official_roberta":
        model = OfficialRobertaPrefix(config, tensors["prompt"])
        missing, unexpected = model.load_state_dict(state, strict=False)
        assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
        with torch.no_grad():
            return {"logits": model.eval()(inputs["input_ids"], inputs["attention_mask"])}
    model = CLASSES[case["arch"]](config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
    if case["route"] == "past_key_values":  # the model's own head, the prefix passed as past
        past = past_key_values(tensors["prompt"], config, inputs["input_ids"].shape[0])
        inputs["attention_mask"] = with_prefix_mask(inputs["attention_mask"], m)
        model.eval()
        with torch.no_grad():  # the sequence classes' forward takes no past: call the parts
            hidden = model.base_model(**inputs, past_key_values=past)[0]
            return {"logits": model.classifier(hidden)}
    if case["route"] == "peft_prefix":
        peft_config = PrefixTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=m)
    else:
        peft_config = PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=m)
    model = get_peft_model(model, peft_config).eval()
    with torch.no_grad():
        model.prompt_encoder["default"].embedding.weight.copy_(tensors["prompt"])
        output = model(**inputs, output_hidden_states=True)
    out = {"logits": output.logits}
    if case["route"] == "peft_prompt":
        out["hidden"] = output.hidden_states[-1][:, m:].contiguous()
    return out


def main() -> None:
    workdir = Path(sys.argv[1])
    torch.set_num_threads(1)
    for case in json.loads((workdir / "cases.json").read_text()):
        out = run_case(case, workdir)
        out = {k: v.contiguous() for k, v in out.items()}
        save_file(out, str(workdir / f"{case['name']}.out.safetensors"))
    print(f"transformers {transformers.__version__}")


if __name__ == "__main__":
    main()
