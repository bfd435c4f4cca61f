"""Our injection on transformers 5.x against the classic code path on transformers 4.x.

A session fixture installs transformers 4.23.1 and peft 0.3.0 (with their tokenizers,
huggingface-hub and accelerate) into ``~/.cache/peft-bench/classic-...`` with
``pip install --target`` (wheels only, no dependencies pulled: torch, numpy and safetensors come
from this environment), once; later sessions reuse it. 4.23.1 is the oldest 4.x whose
tokenizers requirement (< 0.14) admits a release with Python 3.11 wheels (0.13.3); the
official P-Tuning v2 pin, 4.11, needs tokenizers 0.10, which only builds from source. Its
BERT and RoBERTa still take ``past_key_values`` tuples and shift real tokens' positions by the
past length, as 4.11 does.

Tiny random BERT and RoBERTa are built here, their weights and prompts written to safetensors,
and ``tests/classic_reference.py`` runs the classic route in a subprocess with the 4.x install
first on ``sys.path``. Checked (max abs difference ≤ 1e-5):

- P-Tuning v2 ``official`` on BERT = peft 0.3 prefix tuning (past_key_values; shifted
  positions; BERT's pooler + Linear head);
- P-Tuning v2 ``official`` on RoBERTa = the official RobertaPrefixForSequenceClassification
  forward (RobertaModel with its pooler, past_key_values, pooled → Linear);
- kv with the backbone's own head and ``position: shift`` on RoBERTa = RobertaForSequence-
  Classification called with the prefix as ``past_key_values`` (peft 0.3's prefix tuning
  cannot run RoBERTa's sequence head: it hands the head a tuple);
- Prompt Tuning ``official`` = peft 0.3 (4.x) and the installed peft (5.x) prompt tuning, on
  the real tokens' last hidden states (peft's head reads position 0, a prompt slot; ours reads
  the real first token, by design, so logits are not compared there).

Skipped, with the reason, only when the install fails (no PyPI).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers as tf
from safetensors.torch import load_file, save_file

from methods import build_method
from tasks import get_task

PINS = (
    "transformers==4.23.1",
    "tokenizers==0.13.3",
    "huggingface-hub==0.16.4",
    "peft==0.3.0",
    "accelerate==0.25.0",
)
#: Not $PEFT_BENCH_CACHE: tests point that at a per-session temp dir, and the install must last.
CACHE = Path.home() / ".cache" / "peft-bench"
REFERENCE = Path(__file__).with_name("classic_reference.py")
M = 3
CONFIG = {
    "vocab_size": 100,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
    "num_labels": 2,
}
ARCH_CONFIG = {
    "bert": {"pad_token_id": 0},
    "roberta": {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2},
}
CLASSES = {"bert": tf.BertForSequenceClassification, "roberta": tf.RobertaForSequenceClassification}

pytestmark = pytest.mark.classic


@pytest.fixture(scope="session")
def classic_site() -> Path:
    """The transformers 4.x + peft 0.3 install (``pip install --target``), made once."""
    target = CACHE / ("classic-" + "-".join(p.replace("==", "-") for p in PINS))
    if (target / ".complete").is_file():
        return target
    staging = target.with_name(target.name + f".tmp{os.getpid()}")
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--target", str(staging), *PINS,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.skip(f"could not pip-install {', '.join(PINS)} (PyPI unreachable?): "
                    f"{result.stderr.strip().splitlines()[-1:]}")  # fmt: skip
    (staging / ".complete").write_text("\n".join(PINS) + "\n")
    with contextlib.suppress(OSError):  # another session finished first: use its copy
        staging.rename(target)
    return target


def make_inputs(arch: str) -> dict[str, torch.Tensor]:
    """Two right-padded rows (lengths 7 and 4); BERT gets two segments."""
    generator = torch.Generator().manual_seed(3)
    pad = ARCH_CONFIG[arch]["pad_token_id"]
    ids = torch.full((2, 7), pad, dtype=torch.long)
    mask = torch.zeros(2, 7, dtype=torch.long)
    for row, length in enumerate((7, 4)):
        ids[row, :length] = torch.randint(5, CONFIG["vocab_size"], (length,), generator=generator)
        mask[row, :length] = 1
    inputs = {"input_ids": ids, "attention_mask": mask}
    if arch == "bert":
        types = torch.zeros_like(ids)
        types[0, 4:] = 1
        inputs["token_type_ids"] = types
    return inputs


def backbone(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = CLASSES[arch](getattr(tf, f"{arch.capitalize()}Config")(**CONFIG, **ARCH_CONFIG[arch]))
    model.peft_bench_new_parameters = frozenset()
    return model.eval()


def classic_state(model: torch.nn.Module, route: str) -> dict[str, torch.Tensor]:
    """The backbone's weights under the 4.x names of ``route``'s model."""
    state = {}
    for name, value in model.model.state_dict().items():
        if route == "official_roberta" and name.startswith("classifier."):
            name = name.replace("classifier.pooler.", "roberta.pooler.dense.")
            name = name.replace("classifier.classifier.", "classifier.")
        state[f"state.{name}"] = value.detach().contiguous()
    return state


def ours(arch: str, method: str, overrides: dict) -> torch.nn.Module:
    built = build_method(method, {"prompt_length": M, **overrides})
    model = built.attach(backbone(arch), get_task("sst2")).eval()
    with torch.no_grad():  # a prompt far from its init, so that a misplaced one shows
        for parameter in model.prompts.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.5)
    return model


CASES = {
    # name: (arch, our method, our overrides, classic route)
    "ptv2_official_bert": ("bert", "p_tuning_v2", {"profile": "official"}, "peft_prefix"),
    "ptv2_official_roberta": (
        "roberta", "p_tuning_v2", {"profile": "official"}, "official_roberta",
    ),
    "kv_shift_task_head_roberta": (
        "roberta", "p_tuning_v2", {"position": "shift", "prompt_dropout": 0.0}, "past_key_values",
    ),
    "prompt_tuning_official_bert": (
        "bert", "prompt_tuning", {"profile": "official"}, "peft_prompt",
    ),
    "prompt_tuning_official_roberta": (
        "roberta", "prompt_tuning", {"profile": "official"}, "peft_prompt",
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def classic_results(classic_site: Path, tmp_path_factory) -> dict:
    """Run every case through the classic route in one 4.x subprocess."""
    workdir = tmp_path_factory.mktemp("classic")
    cases, results = [], {}
    for name, (arch, method, overrides, route) in CASES.items():
        model = ours(arch, method, overrides)
        inputs = make_inputs(arch)
        with torch.no_grad():
            output = model(**inputs, output_hidden_states=True)
        results[name] = (model, inputs, output)
        tensors = {
            **classic_state(model, route),
            **inputs,
            "prompt": model.prompts.materialize(),
        }
        save_file(tensors, str(workdir / f"{name}.in.safetensors"))
        config = {**CONFIG, **ARCH_CONFIG[arch]}
        cases.append(
            {"name": name, "arch": arch, "config": config, "route": route, "prompt_length": M}
        )
    (workdir / "cases.json").write_text(json.dumps(cases))
    env = {**os.environ, "PYTHONPATH": str(classic_site), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(REFERENCE), str(workdir)],
        capture_output=True, text=True, env=env, timeout=600, cwd=workdir,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "transformers 4.23.1" in done.stdout, done.stdout
    return {
        name: (*results[name], load_file(str(workdir / f"{name}.out.safetensors")))
        for name in CASES
    }


@pytest.mark.parametrize("name", [n for n in CASES if CASES[n][3] != "peft_prompt"])
def test_kv_logits_equal_the_classic_past_key_values_route(classic_results, name) -> None:
    model, inputs, output, classic = classic_results[name]
    difference = (output.logits - classic["logits"]).abs().max().item()
    assert difference <= 1e-5, f"{name}: max |Δ logits| = {difference:.2e}"
    # the check can fail: without the shift the same prefix gives other logits
    if model.position.value == "shift":
        model.position = type(model.position)("keep")
        with torch.no_grad():
            unshifted = model(**inputs).logits
        model.position = type(model.position)("shift")
        assert (unshifted - classic["logits"]).abs().max().item() > 1e-4


def real_hidden(output, inputs) -> torch.Tensor:
    """Last hidden states of the real (non-pad) tokens, ``[tokens, d]`` (slots dropped)."""
    hidden = output.hidden_states[-1][:, M:]
    return hidden[inputs["attention_mask"].bool()]


@pytest.mark.parametrize("name", [n for n in CASES if CASES[n][3] == "peft_prompt"])
def test_prompt_tuning_equals_peft_on_transformers_4(classic_results, name) -> None:
    model, inputs, output, classic = classic_results[name]
    expected = classic["hidden"][inputs["attention_mask"].bool()]
    difference = (real_hidden(output, inputs) - expected).abs().max().item()
    assert difference <= 1e-5, f"{name}: max |Δ hidden| = {difference:.2e}"


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_prompt_tuning_equals_peft_on_transformers_5(arch) -> None:
    """The same comparison against the installed peft on this transformers (no subprocess)."""
    import peft

    model = ours(arch, "prompt_tuning", {"profile": "official"})
    inputs = make_inputs(arch)
    reference = peft.get_peft_model(
        backbone(arch), peft.PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=M)
    ).eval()
    with torch.no_grad():
        reference.prompt_encoder["default"].embedding.weight.copy_(model.prompts.materialize())
        expected = reference(**inputs, output_hidden_states=True)
        actual = model(**inputs, output_hidden_states=True)
    expected_hidden = expected.hidden_states[-1][:, M:][inputs["attention_mask"].bool()]
    difference = (real_hidden(actual, inputs) - expected_hidden).abs().max().item()
    assert difference <= 1e-5, f"max |Δ hidden| = {difference:.2e}"
