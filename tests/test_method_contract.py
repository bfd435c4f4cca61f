"""The contract every registered method keeps, checked for each one automatically: a new file in
``methods/`` is picked up by the registry and gets these tests without writing any.

On a tiny random BERT and SST-2's task spec: attach; one training step in which only the
declared parameters get gradients and the backbone stays bit-identical; parameter counts that
add up (trainable, stored = the exported delta, head, backbone) and equal the closed form when
the method gives one; export → load on a fresh copy of the backbone gives identical logits; an
example's logits do not depend on the padding of its batch.

A comparison row (another library's implementation) that fails inside that library is skipped
with the library's error (peft 0.21's prefix tuning on transformers 5.24, see peft_rows.py).
"""

from __future__ import annotations

import copy

import pytest
import torch

from bench.config import TrainConfig
from bench.train import task_loss
from methods import get_method, method_names
from tasks import get_task
from tests.test_architectures import build, inputs, make_backbone


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", method_names())
def test_method_contract(name: str) -> None:
    task = get_task("sst2")
    fresh = make_backbone("BERT")
    pristine = copy.deepcopy(fresh)
    method = build(name, {})
    model = method.attach(fresh, task)
    ids, mask = inputs(0)
    trained = set(method.trained_names(model))
    assert trained, f"{name} trains nothing"
    backbone_before = {n: p.detach().clone() for n, p in pristine.named_parameters()}

    model.train()
    try:
        logits = model(input_ids=ids, attention_mask=mask).logits
    except Exception as error:
        if get_method(name).comparison:
            pytest.skip(f"{name} fails inside its library: {type(error).__name__}: {error}")
        raise
    assert tuple(logits.shape) == (2, 2)
    task_loss("classification", logits, torch.tensor([0, 1])).backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad and with_grad <= trained, sorted(with_grad - trained)[:5]
    groups = method.param_groups(model, TrainConfig())
    optimizer = torch.optim.AdamW(groups)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if n not in trained}
    optimizer.step()
    state = dict(model.named_parameters())
    changed = [n for n, t in frozen.items() if not torch.equal(state[n], t)]
    assert not changed, f"frozen tensors changed: {changed[:5]}"
    if name != "full_finetune":  # the pretrained weights themselves stay bit-identical
        pristine_names = dict(pristine.named_parameters())
        for n, before in backbone_before.items():
            if n.startswith(pristine.base_model_prefix + ".") and not n.endswith(".bias"):
                current = [p for k, p in state.items() if k.endswith(n) or k.endswith(
                    n.replace(".weight", ".base_layer.weight"))]  # fmt: skip
                assert all(torch.equal(c, before) for c in current), n
        assert pristine_names  # the copy itself was never attached

    counts = method.parameter_counts(model)
    delta = method.export(model)
    assert counts.stored == sum(t.numel() for t in delta.values())
    assert counts.trainable == sum(p.numel() for n, p in model.named_parameters() if n in trained)
    assert counts.head > 0 and counts.backbone > 0
    # the backbone is the pretrained transformer: added parameters (LoRA matrices, prompts)
    # never count in it, and only what the method trains may leave it
    base_total = sum(p.numel() for p in pristine.base_model.parameters())
    assert base_total - counts.trainable <= counts.backbone <= base_total
    assert counts.trainable + counts.backbone >= sum(p.numel() for p in pristine.parameters())
    if counts.formula_value is not None:
        assert counts.matches_formula, (counts.formula, counts.formula_value, counts.stored)

    model.eval()
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
        loaded = method.load(copy.deepcopy(pristine), task, delta).eval()
        again = loaded(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(again, expected, atol=0, rtol=0)
        alone = model(input_ids=ids[:1, :4], attention_mask=mask[:1, :4]).logits
    if get_method(name).comparison and not torch.allclose(alone, expected[:1], atol=1e-5):
        return  # peft prompt rows read position 0 / the last position: documented in peft_rows
    torch.testing.assert_close(alone, expected[:1], atol=1e-5, rtol=0)
