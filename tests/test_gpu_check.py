"""gpu-check's logic on CPU: device table look-up, budget planning, MFU and the summary, the
random-initialised backbones, and the one-line exit without CUDA."""

from __future__ import annotations

import json

import pytest

from bench import gpu_check
from bench.errors import UserError
from bench.gpu_check import (
    Budget,
    GpuCheckConfig,
    backbone_config,
    peak_bf16_flops,
    plan_and_measure,
    render_markdown,
    summarize_check,
)

FAKE_TABLE = {"Fake GPU": 100e12, "Fake GPU Max": 400e12}


def test_the_device_table_picks_the_longest_matching_name() -> None:
    assert peak_bf16_flops("NVIDIA Fake GPU Max 80GB", FAKE_TABLE) == 400e12
    assert peak_bf16_flops("NVIDIA Fake GPU 40GB", FAKE_TABLE) == 100e12
    assert peak_bf16_flops("Other Accelerator", FAKE_TABLE) is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _fake_work(clock: FakeClock, eager_s: float, compile_s: float, calls: list):
    def measure(backbone: str, method: str, compiled: bool) -> dict:
        seconds = eager_s + (compile_s if compiled else 0.0)
        clock.now += seconds
        calls.append((backbone, method, "compile" if compiled else "eager"))
        return {"backbone": backbone, "method": method, "compiled": compiled, "seconds": seconds}

    def smoke() -> dict:
        clock.now += 100.0
        calls.append(("smoke",))
        return {"status": "ok", "seconds": 100.0}

    return measure, smoke


def test_eager_first_then_the_smoke_run_then_compiled_while_the_budget_lasts(tmp_path) -> None:
    clock = FakeClock()
    calls: list = []
    measure, smoke = _fake_work(clock, eager_s=10.0, compile_s=50.0, calls=calls)
    config = GpuCheckConfig(out=tmp_path, budget_s=300.0)
    results, outcome = plan_and_measure(
        config, ["a", "b"], measure, smoke, Budget(300.0, clock=clock)
    )
    # 4 eager (40 s) + smoke (100 s) = 140 s; the first compile is estimated at 10 + 60 s and
    # takes 60 s (200 s); the next needs 10 + 50 s: fits (260 s); then 40 s are left for 60.
    assert calls == [
        ("roberta-base", "a", "eager"),
        ("roberta-base", "b", "eager"),
        ("roberta-large", "a", "eager"),
        ("roberta-large", "b", "eager"),
        ("smoke",),
        ("roberta-base", "a", "compile"),
        ("roberta-base", "b", "compile"),
    ]
    assert outcome == {"status": "ok", "seconds": 100.0}
    skipped = [r for r in results if "skipped" in r]
    assert [(r["backbone"], r["method"], r["compiled"]) for r in skipped] == [
        ("roberta-large", "a", True),
        ("roberta-large", "b", True),
    ]
    assert skipped[0]["skipped"] == "time budget: needs about 60 s, 40 s left"


def test_eager_measurements_stop_where_only_the_smoke_run_still_fits(tmp_path) -> None:
    clock = FakeClock()
    calls: list = []
    measure, smoke = _fake_work(clock, eager_s=100.0, compile_s=0.0, calls=calls)
    config = GpuCheckConfig(out=tmp_path, budget_s=gpu_check.SMOKE_ESTIMATE_S + 150.0)
    results, _ = plan_and_measure(config, ["a", "b"], measure, smoke, Budget(300.0, clock=clock))
    assert calls[:3] == [
        ("roberta-base", "a", "eager"),
        ("roberta-base", "b", "eager"),
        ("smoke",),
    ]
    assert [r.get("skipped") for r in results if r["backbone"] == "roberta-large"] == [
        "time budget spent",
        "time budget spent",
        "no eager measurement",
        "no eager measurement",
    ]


def _measured(backbone: str, method: str, compiled: bool, step_s: float) -> dict:
    return {
        "backbone": backbone,
        "method": method,
        "compiled": compiled,
        "train_step": {"median_s": step_s},
        "train_tokens_per_s": 1000.0 / step_s,
        "peak_memory_bytes": 2**30,
        "backbone_params": 1_000_000,
        "precision": {"used": "bf16"},
        "seconds": 1.0,
    }


def test_the_summary_gives_mfu_against_the_table_and_compiled_over_eager() -> None:
    results = [
        _measured("roberta-base", "full_finetune", False, 0.5),
        _measured("roberta-base", "full_finetune", True, 0.25),
        _measured("roberta-base", "p_tuning_v2", False, 0.5),
        {"backbone": "roberta-base", "method": "p_tuning_v2", "compiled": True, "skipped": "x"},
    ]
    summary = summarize_check(results, None, "Fake GPU", FAKE_TABLE, {"roberta-base": "here"})
    rows = summary["measurements"]
    assert summary["bf16_peak_flops"] == 100e12
    # 6 FLOPs per parameter and token for full fine-tuning, 4 with a frozen backbone
    assert rows[0]["mfu"] == pytest.approx(6 * 1e6 * 2000 / 100e12)
    assert rows[1]["compiled_over_eager_step"] == pytest.approx(0.5)
    assert rows[2]["mfu"] == pytest.approx(4 * 1e6 * 2000 / 100e12)
    assert "mfu" not in rows[3]
    unknown = summarize_check(results, None, "Other", FAKE_TABLE, {})
    assert unknown["measurements"][0]["mfu"] is None
    page = render_markdown({**summary, "smoke": {"backbone": "b", "status": "ok", "seconds": 3}})
    assert "random-initialised from config values" in page
    row = next(line for line in page.splitlines() if "| compile " in line)
    assert [cell.strip() for cell in row.strip("|").split("|")] == [
        "roberta-base", "full_finetune", "compile", "250.0", "4000", "1.00", "0.0%", "0.50", "bf16"
    ]  # fmt: skip
    assert "status **ok**" in page
    assert "device not in the table" in render_markdown(unknown)


def test_backbone_configs_come_from_the_directory_or_the_built_in_values(tmp_path) -> None:
    values, source = backbone_config("roberta-large", None)
    assert values["hidden_size"] == 1024 and values["num_hidden_layers"] == 24
    assert "built-in" in source
    (tmp_path / "roberta-base").mkdir()
    (tmp_path / "roberta-base" / "config.json").write_text(json.dumps({"hidden_size": 64}))
    assert backbone_config("roberta-base", tmp_path) == (
        {"hidden_size": 64},
        str(tmp_path / "roberta-base" / "config.json"),
    )
    assert "built-in" in backbone_config("roberta-large", tmp_path)[1]


def test_a_random_backbone_from_config_values_is_measured_for_each_method(tmp_path) -> None:
    """The real measuring path (random model, method, synthetic batches) on a tiny RoBERTa
    config on CPU."""
    tiny = dict(gpu_check.ROBERTA_CONFIGS["roberta-base"])
    tiny.update(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    (tmp_path / "roberta-base").mkdir()
    (tmp_path / "roberta-base" / "config.json").write_text(json.dumps(tiny))
    config = GpuCheckConfig(
        out=tmp_path, backbone_dir=tmp_path, seq_len=16, batch_size=2, steps=2, warmup=1
    )
    for method in ("full_finetune", "p_tuning_v2", "prefix_tuning"):
        result = gpu_check.measure_one(config, "roberta-base", method, False, "cpu")
        assert "error" not in result, result.get("error")
        assert result["backbone"] == "roberta-base" and result["compiled"] is False
        assert result["train_step"]["median_s"] > 0 and result["train_tokens_per_s"] > 0
        assert result["backbone_params"] > 0
        trains_backbone = result["trainable"] > result["backbone_params"]
        assert trains_backbone == (method == "full_finetune")  # the encoder counts as pretrained
        assert "train_step_times_s" not in result
    broken = gpu_check.measure_one(config, "roberta-base", "no_such_method", False, "cpu")
    assert "no_such_method" in broken["error"]


def test_without_cuda_the_command_exits_2_with_one_line(tmp_path, capsys, monkeypatch) -> None:
    import torch

    from bench.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["gpu-check", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gpu-check needs a CUDA GPU" in err
    assert not (tmp_path / "out").exists()


def test_bad_arguments_are_refused(tmp_path) -> None:
    with pytest.raises(UserError, match="is not a directory"):
        GpuCheckConfig(out=tmp_path, data_dir=tmp_path / "missing")
    with pytest.raises(UserError, match="valid: \\['roberta-base', 'roberta-large'\\]"):
        GpuCheckConfig(out=tmp_path, backbones=("gpt2",))
