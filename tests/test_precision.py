"""Precision (fp32 / bf16 autocast / auto) and thread control: what auto picks, that both reach
the model and the records, the run key, and bf16 determinism on CPU."""

from __future__ import annotations

import json

import pytest
import torch

from bench import precision
from bench.config import TrainConfig
from bench.errors import UserError
from bench.precision import CpuBf16, cpu_flags, detect_cpu_bf16, resolve_precision

NATIVE = CpuBf16(native=True, flags=("avx512_bf16",))
EMULATED = CpuBf16(native=False)


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Set what the CPU detection reports (``"0"`` or ``"1"``) for this test."""

    def set_to(value: str) -> None:
        monkeypatch.setenv(precision.CPU_BF16_ENV, value)
        detect_cpu_bf16.cache_clear()

    yield set_to
    detect_cpu_bf16.cache_clear()


def test_auto_picks_fp32_on_a_cpu_without_native_bf16() -> None:
    assert resolve_precision("auto", "cpu", "p_tuning_v2", EMULATED) == "fp32"
    assert resolve_precision("auto", "cpu", "p_tuning_v2", NATIVE) == "bf16"
    assert resolve_precision("auto", "cuda:1", "p_tuning_v2", EMULATED) == "bf16"
    for explicit in ("fp32", "bf16"):
        assert resolve_precision(explicit, "cpu", "p_tuning_v2", EMULATED) == explicit
        assert resolve_precision(explicit, "cuda", "p_tuning_v2", NATIVE) == explicit
    with pytest.raises(UserError, match="'fp16' is not one of auto, fp32, bf16"):
        resolve_precision("fp16", "cpu", "p_tuning_v2", NATIVE)


def test_auto_keeps_fp32_for_the_methods_listed_on_cpu_only(monkeypatch) -> None:
    monkeypatch.setitem(precision.AUTO_FP32_ON_CPU, "prompt_tuning", "measured: worse in bf16")
    assert resolve_precision("auto", "cpu", "prompt_tuning", NATIVE) == "fp32"
    assert resolve_precision("auto", "cpu", "prefix_tuning", NATIVE) == "bf16"
    assert resolve_precision("auto", "cuda", "prompt_tuning", NATIVE) == "bf16"


def test_detection_reads_the_cpu_flags_and_obeys_the_override(tmp_path, cpu_bf16) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile\n\n")
    assert {"avx512_bf16", "amx_tile", "fpu"} <= cpu_flags(info)
    assert cpu_flags(tmp_path / "missing") == set()
    cpu_bf16("1")
    assert detect_cpu_bf16().native and detect_cpu_bf16().source == "PEFT_BENCH_CPU_BF16=1"
    cpu_bf16("0")
    assert not detect_cpu_bf16().native
    assert resolve_precision("auto", "cpu", "full_finetune") == "fp32"
    cpu_bf16("yes")
    with pytest.raises(UserError, match="expected 0 or 1"):
        detect_cpu_bf16()


def test_detection_without_the_override_follows_the_flags(monkeypatch) -> None:
    monkeypatch.delenv(precision.CPU_BF16_ENV, raising=False)
    detect_cpu_bf16.cache_clear()
    try:
        monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "avx512f"})
        assert detect_cpu_bf16() == CpuBf16(False, (), precision._onednn_bf16())
        detect_cpu_bf16.cache_clear()
        monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512_bf16", "avx2"})
        monkeypatch.setattr(precision, "_onednn_bf16", lambda: True)
        assert detect_cpu_bf16() == CpuBf16(True, ("avx512_bf16",), True)
        detect_cpu_bf16.cache_clear()
        monkeypatch.setattr(precision, "_onednn_bf16", lambda: False)  # flag, but no kernels
        assert not detect_cpu_bf16().native
    finally:
        detect_cpu_bf16.cache_clear()


def test_precision_in_the_run_key() -> None:
    base = TrainConfig(precision="fp32").key_dict()
    assert "precision" not in base  # records made before the field (CPU, fp32) keep their keys
    assert TrainConfig(precision="bf16").key_dict() == {**base, "precision": "bf16"}
    with pytest.raises(UserError, match="precision 'half'"):
        TrainConfig(precision="half")


def test_planning_resolves_auto_so_the_key_names_what_runs(
    tiny_bert_dir, tiny_data_dir, cpu_bf16
) -> None:
    from helpers import tiny_plan

    cpu_bf16("0")
    (emulated,) = tiny_plan(tiny_bert_dir, tiny_data_dir)
    (fp32,) = tiny_plan(tiny_bert_dir, tiny_data_dir, precision="fp32")
    assert emulated.train.precision == "fp32" and emulated.key == fp32.key
    cpu_bf16("1")
    (native,) = tiny_plan(tiny_bert_dir, tiny_data_dir)
    (bf16,) = tiny_plan(tiny_bert_dir, tiny_data_dir, precision="bf16")
    assert native.train.precision == "bf16" and native.key == bf16.key != fp32.key


def _linear_output_dtypes(run, threads_seen: set[int]) -> tuple[set[torch.dtype], dict]:
    """Train ``run`` through the worker (threads 1) and collect the dtypes of every Linear
    output during training, and the torch threads seen there; return them and the record."""
    import tempfile

    from bench.worker import WorkerOptions, run_one

    dtypes: set[torch.dtype] = set()

    def hook(module, args, output):
        if isinstance(module, torch.nn.Linear) and module.training:
            dtypes.add(output.dtype)
            threads_seen.add(torch.get_num_threads())

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    before = torch.get_num_threads()
    try:
        with tempfile.TemporaryDirectory() as out:
            record = run_one(run, WorkerOptions(output=out, device="cpu", threads=1))
    finally:
        handle.remove()
        torch.set_num_threads(before)
    return dtypes, record


def test_precision_and_threads_reach_the_model_and_the_record(tiny_bert_dir, tiny_data_dir) -> None:
    from helpers import tiny_plan

    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        (run,) = tiny_plan(tiny_bert_dir, tiny_data_dir, epochs=1, precision=name)
        threads: set[int] = set()
        dtypes, record = _linear_output_dtypes(run, threads)
        assert record["status"] == "ok", record.get("error")
        assert dtypes == {dtype}
        assert threads == {1}
        assert record["threads"] == 1
        assert record["precision"]["used"] == name
        assert set(record["precision"]["cpu_bf16"]) == {"native", "flags", "onednn_bf16", "source"}
        assert record["config"]["train"]["precision"] == name


def test_bf16_cpu_runs_with_the_same_seed_are_deterministic(tiny_bert_dir, tiny_data_dir):
    from bench.train import train_run

    from helpers import tiny_plan

    (run,) = tiny_plan(tiny_bert_dir, tiny_data_dir, precision="bf16")
    (fp32,) = tiny_plan(tiny_bert_dir, tiny_data_dir, precision="fp32")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a = train_run(run, device="cpu", progress=False)
        b = train_run(run, device="cpu", progress=False)
        c = train_run(fp32, device="cpu", progress=False)
    finally:
        torch.set_num_threads(before)
    assert a.curve == b.curve and a.metrics == b.metrics
    # bf16 really changed the arithmetic: the losses differ from fp32's beyond fp32 rounding.
    assert a.curve[0]["train_loss"] != pytest.approx(c.curve[0]["train_loss"], rel=1e-6)


def test_the_run_command_takes_precision_and_threads(
    tiny_bert_dir, tiny_data_dir, tmp_path, monkeypatch, capsys
) -> None:
    from bench.cli import main

    from helpers import tiny_cli

    before = torch.get_num_threads()
    seen = {}
    import bench.executors.base as base

    original = base.ExecutorConfig.__post_init__

    def spy(self):
        seen["cpus_per_run"] = self.cpus_per_run
        original(self)

    monkeypatch.setattr(base.ExecutorConfig, "__post_init__", spy)
    try:
        code = main(
            tiny_cli(
                tiny_bert_dir,
                tiny_data_dir,
                tmp_path,
                "--precision",
                "bf16",
                "--threads",
                "1",
                "--seeds",
                "13,",
                "--epochs",
                "1",
            )  # fmt: skip
        )
    finally:
        torch.set_num_threads(before)
    assert code == 0
    assert seen["cpus_per_run"] == 1
    summary = capsys.readouterr().out.splitlines()
    assert summary[0].split() == [
        "task",
        "method",
        "seed",
        "precision",
        "status",
        "primary",
        "metric",
    ]
    assert summary[2].split()[:5] == ["sst2", "full_finetune", "13", "bf16", "ok"]
    (path,) = (tmp_path / "runs").glob("*.json")
    record = json.loads(path.read_text())
    assert record["precision"]["used"] == "bf16" and record["threads"] == 1


def test_a_record_made_before_precision_existed_reruns_in_fp32_on_cpu(
    tiny_bert_dir, tiny_data_dir
) -> None:
    from bench.rerun import spec_from_record

    from helpers import tiny_plan

    (run,) = tiny_plan(tiny_bert_dir, tiny_data_dir, precision="fp32")
    config = run.to_dict()
    del config["train"]["precision"]
    record = {"key": run.key, "config": config, "device": "cpu (x86_64, 2 threads)"}
    assert spec_from_record(record).train.precision == "fp32"


def test_perf_measures_the_precision_it_is_given(tiny_bert_dir) -> None:
    from bench.perf import PerfConfig, measure_method

    config = PerfConfig(
        backbone=str(tiny_bert_dir),
        methods=("prompt_tuning",),
        seq_len=16,
        batch_size=2,
        eval_batch_size=2,
        steps=2,
        warmup=1,
        device="cpu",
        precision=("bf16",),
        threads=1,
    )
    before = torch.get_num_threads()
    try:
        result = measure_method(config, "prompt_tuning")
    finally:
        torch.set_num_threads(before)
    assert result["precision"]["used"] == "bf16" and result["threads"] == 1
    assert len(result["train_step_cpu_times_s"]) == 2 and result["train_step_cpu"]["median_s"] > 0
    with pytest.raises(UserError, match="distinct values among auto, fp32, bf16"):
        PerfConfig(backbone="x", methods=("a",), precision=("fp32", "fp32"))
    with pytest.raises(UserError, match="distinct values"):
        PerfConfig(backbone="x", methods=("a",), precision=("fp16",))


def test_perf_ratios_are_to_the_first_precision_of_the_same_method() -> None:
    from bench.perf import format_table, precision_ratios

    def result(step: float, evaluation: float, used: str) -> dict:
        return {
            "train_step": {"median_s": step, "iqr_s": 0.0},
            "eval_batch": {"median_s": evaluation},
            "train_tokens_per_s": 1.0,
            "eval_tokens_per_s": 1.0,
            "eval_over_train_throughput": 1.0,
            "peak_memory_bytes": 2**20,
            "trainable": 1,
            "stored": 1,
            "precision": {"used": used},
        }

    results = {
        "a fp32": result(2.0, 1.0, "fp32"),
        "a bf16": result(1.0, 0.25, "bf16"),
        "b fp32": result(3.0, 1.0, "fp32"),
        "b bf16": {"method": "b", "error": "boom"},
    }
    labels = {row: tuple(row.split()) for row in results}
    ratios = precision_ratios(results, labels)
    assert ratios == {
        "a bf16": {
            "method": "a",
            "precision": "bf16",
            "versus": "fp32",
            "step_time": 0.5,
            "eval_time": 0.25,
        }
    }
    report = {
        "config": {"backbone": "m", "task": "sst2", "seq_len": 8, "batch_size": 2,
                   "eval_batch_size": 2, "steps": 1, "warmup": 0, "threads": 1},
        "results": results,
        "ratios_vs_peft": {},
        "ratios_vs_precision": ratios,
    }  # fmt: skip
    table = format_table(report)
    assert "1 torch threads" in table
    assert "bf16 (0.50x fp32)" in table and "failed: boom" in table


def test_a_suite_can_set_the_precision(tiny_bert_dir, tiny_data_dir) -> None:
    from bench.runner import PlanRequest, build_plan
    from bench.suites import Setting, Suite

    suite = Suite(
        name="s",
        description="",
        tasks=("sst2",),
        settings=(Setting(source="test", methods=("prompt_tuning",), train={"precision": "bf16"}),),
    )
    plan = build_plan(
        PlanRequest(
            tasks=["sst2"],
            methods=["prompt_tuning", "full_finetune"],
            seeds=[1],
            backbones=[str(tiny_bert_dir)],
            data_dir=str(tiny_data_dir),
            suite=suite,
        )
    )
    assert {r.method: r.train.precision for r in plan} == {
        "prompt_tuning": "bf16",
        "full_finetune": "fp32",  # auto on a CPU without native bf16 (tests/conftest.py)
    }


def test_ray_workers_run_with_the_threads_asked_for(tiny_bert_dir, tiny_data_dir, tmp_path):
    import os

    ray = pytest.importorskip("ray")
    from bench.executors import ExecutorConfig
    from bench.sweep import run_sweep
    from bench.worker import WorkerOptions

    from helpers import tiny_plan

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    try:
        plan = tiny_plan(tiny_bert_dir, tiny_data_dir, seeds=(1,), epochs=1)
        options = WorkerOptions(output=str(tmp_path), device="cpu", threads=1)
        executor = ExecutorConfig(kind="ray", gpus_per_run=0, cpus_per_run=1)
        results = run_sweep(plan, tmp_path, executor, options, progress=False)
    finally:
        ray.shutdown()
    assert [(r["status"], r["threads"]) for r in results] == [("ok", 1)]
    assert results[0]["placement"]["executor"] == "ray"


def test_slurm_gives_each_run_the_cpus_of_its_threads(
    tiny_bert_dir, tiny_data_dir, tmp_path, monkeypatch, capsys
) -> None:
    import os

    pytest.importorskip("submitit")
    from bench.cli import main

    from helpers import tiny_cli

    bin_dir, spool = tmp_path / "bin", tmp_path / "spool"
    bin_dir.mkdir()
    spool.mkdir()
    for name, text in (
        ("sbatch", f'#!/bin/sh\ncp "$1" "{spool}/script.sh"\necho "Submitted batch job 7"\n'),
        ("srun", "#!/bin/sh\nexit 1\n"),
    ):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    args = tiny_cli(tiny_bert_dir, tiny_data_dir, tmp_path / "out", "--seeds", "1,")
    args[args.index("serial")] = "slurm"
    assert main([*args, "--threads", "3", "--no-wait"]) == 0
    script = (spool / "script.sh").read_text()
    assert "#SBATCH --cpus-per-task=3" in script


def test_step_cpu_time_leaves_out_waiting() -> None:
    """The CPU clock of perf's steps counts work, not time spent off the CPU (a shared
    machine's other load), unlike the wall clock."""
    import time

    from bench.perf import time_calls

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cpu: list[float] = []
        wall = time_calls(lambda: time.sleep(0.05), 2, lambda: None, cpu)
        busy: list[float] = []
        time_calls(lambda: sum(range(300_000)), 1, lambda: None, busy)
    finally:
        torch.set_num_threads(before)
    assert min(wall) >= 0.05 and max(cpu) < 0.01
    assert busy[0] > 0.001
