"""The runner: suites, plans, resumable sweeps, faults, index repair, Ray and Slurm executors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import records
from bench.cli import main
from bench.errors import UserError
from bench.executors import ExecutorConfig
from bench.runner import PlanRequest, build_plan, run_serial
from bench.suites import builtin_suites, get_suite, parse_suite
from bench.sweep import output_lock, run_sweep, select_runs
from bench.worker import WorkerOptions

from helpers import tiny_cli
from helpers import tiny_plan as _plan

REPO = Path(__file__).resolve().parents[1]


def _cli(tiny_bert_dir: Path, tiny_data_dir: Path, out: Path, *extra: str) -> list[str]:
    return tiny_cli(tiny_bert_dir, tiny_data_dir, out, *extra)


def _faults(monkeypatch: pytest.MonkeyPatch, *faults: dict) -> None:
    monkeypatch.setenv("PEFT_BENCH_FAULTS", json.dumps(list(faults)))


# --- suites ------------------------------------------------------------------------------------


def test_shipped_suites_parse_and_every_setting_has_a_source() -> None:
    suites = builtin_suites()
    assert {"glue", "ner", "all", "cpu-mini"} <= set(suites)
    assert suites["glue"].tasks == ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte")
    for suite in suites.values():
        for setting in suite.settings:
            assert len(setting.source) > 10, (suite.name, setting)


def test_suite_settings_layer_per_task_and_method_and_cli_wins(
    tiny_bert_dir, tiny_data_dir, tmp_path
) -> None:
    suite = parse_suite(
        {
            "tasks": ["sst2", "stsb"],
            "train": {"epochs": 1},
            "settings": [
                {"source": "a test", "train": {"batch_size": 4}, "method": {"lr": "2e-3"}},
                {"source": "b test", "tasks": ["stsb"], "train": {"batch_size": 2}},
                {
                    "source": "c test",
                    "methods": ["full_finetune"],
                    "tasks": ["sst2"],
                    "method": {"lr": 5e-4},
                },
            ],
        },
        "inline",
    )
    plan = build_plan(
        PlanRequest(
            tasks=["sst2", "stsb"],
            methods=["full_finetune"],
            seeds=[1],
            backbones=[str(tiny_bert_dir)],
            data_dir=str(tiny_data_dir),
            train={"max_length": 16},
            suite=suite,
        )
    )
    by_task = {run.task: run for run in plan}
    assert by_task["sst2"].train.batch_size == 4
    assert by_task["stsb"].train.batch_size == 2
    assert by_task["sst2"].method_config["lr"] == 5e-4
    assert by_task["stsb"].method_config["lr"] == 2e-3  # "2e-3" read as the number
    assert by_task["sst2"].train.epochs == 1 and by_task["sst2"].train.max_length == 16
    cli = build_plan(
        PlanRequest(
            tasks=["sst2"],
            methods=["full_finetune"],
            seeds=[1],
            backbones=[str(tiny_bert_dir)],
            data_dir=str(tiny_data_dir),
            train={"batch_size": 32},
            method_overrides={"lr": 0.1},
            suite=suite,
        )
    )
    assert cli[0].train.batch_size == 32 and cli[0].method_config["lr"] == 0.1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"tasks": ["rte"], "setting": []}, "unknown key(s) ['setting']; allowed:"),
        ({"tasks": ["rte"], "settings": [{"train": {"epochs": 2}}]}, "'source' is required"),
        (
            {"tasks": ["rte"], "settings": [{"source": "x", "tasks": ["sst2"]}]},
            "['sst2'] are not in the suite's tasks",
        ),
        (
            {"tasks": ["rte"], "settings": [{"source": "x", "train": {"epoch": 2}}]},
            "unknown key(s) ['epoch']",
        ),
        (
            {"tasks": ["rte"], "settings": [{"source": "x", "lr": 2}]},
            "allowed: ['backbones', 'method', 'methods', 'source', 'tasks', 'train']",
        ),
        ({"tasks": ["rte"], "seeds": [1, 1]}, "duplicate seed(s) [1]"),
        ({"tasks": ["rte"], "seeds": ["a"]}, "'seeds' must be a list of integers"),
        ({"tasks": "rte"}, "'tasks' must be a list of names"),
    ],
)
def test_bad_suite_files_name_the_problem(data, message) -> None:
    with pytest.raises(UserError) as error:
        parse_suite(data, "mine.yaml")
    assert message in str(error.value)


def test_user_suite_file_by_path_and_unknown_method_key(tmp_path, capsys) -> None:
    path = tmp_path / "mine.yaml"
    suite = "tasks: [rte]\nmethods: [prompt_tuning]\nseeds: [5]\nbackbones: [minilm]\n"
    path.write_text(suite)
    assert get_suite(str(path)).seeds == (5,)
    path.write_text(suite + "settings:\n  - source: testing\n    method: {prompt_lenght: 3}\n")
    assert main(["run", "--dry-run", "--suite", str(path)]) == 2
    err = capsys.readouterr().err
    assert "prompt_lenght" in err and "allowed keys" in err and "prompt_length" in err


def test_dry_run_of_cpu_mini_plans_every_method_task_and_seed(
    shared_data, tmp_path, capsys
) -> None:
    args = ["run", "--suite", "cpu-mini", "--data-dir", str(shared_data), "--dry-run"]
    assert main([*args, "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    suite = builtin_suites()["cpu-mini"]
    total = len(suite.tasks) * len(suite.methods) * len(suite.seeds)
    assert f"{total} runs planned, 0 already done; {total} to run" in out
    assert "peft_prefix_tuning" in out and "conll2003" in out


def test_dry_run_of_glue_needs_no_network(capsys) -> None:
    assert (
        main(["run", "--suite", "glue", "--dry-run", "--seeds", "2", "--output", "/nonexistent"])
        == 0
    )
    out = capsys.readouterr().out
    from methods import method_names

    total = 8 * len(method_names(include_comparison=False)) * 2  # 8 tasks x methods x 2 seeds
    assert f"{total} runs planned, 0 already done; {total} to run" in out


def test_dry_run_counts_the_suites_shipped_records(
    tiny_bert_dir, tiny_data_dir, tmp_path, capsys
) -> None:
    """A suite's `reference` folder: a dry run into another --output says how much of the plan
    is already there (how a fresh clone sees the committed cpu-small records)."""
    shipped, fresh, suite = tmp_path / "shipped", tmp_path / "fresh", tmp_path / "mine.yaml"
    suite.write_text(f"tasks: [sst2]\nseeds: [13, 21]\nreference: {shipped}\n")

    def run(out: Path, *extra: str) -> str:
        assert main([*_cli(tiny_bert_dir, tiny_data_dir, out, *extra), "--suite", str(suite)]) == 0
        return capsys.readouterr().out

    run(shipped, "--seeds", "13,")  # one of the suite's two runs is shipped
    text = run(fresh, "--dry-run")
    assert "2 runs planned, 0 already done; 2 to run; records go to" in text
    assert f"shipped records ({shipped}): 2 runs planned, 1 already done; 1 to run;" in text
    assert f"these are the suite's shipped records ({shipped})" in run(shipped, "--dry-run")
    suite.write_text(f"tasks: [sst2]\nreference: {tmp_path / 'gone'}\n")
    assert "are not here; run from the repo root" in run(fresh, "--dry-run")


# --- resumable sweeps ------------------------------------------------------------------------


def test_dry_run_counts_done_and_failed_and_rerun_flags(
    tiny_bert_dir, tiny_data_dir, tmp_path, monkeypatch, capsys
) -> None:
    out = tmp_path / "out"
    _faults(monkeypatch, {"fault": "raise", "seed": 21, "step": 1})
    assert main(_cli(tiny_bert_dir, tiny_data_dir, out, "--seeds", "13,21")) == 1
    monkeypatch.delenv("PEFT_BENCH_FAULTS")
    capsys.readouterr()
    assert main(_cli(tiny_bert_dir, tiny_data_dir, out, "--seeds", "13,21", "--dry-run")) == 0
    text = capsys.readouterr().out
    assert "2 runs planned, 1 already done, 1 failed; 0 to run" in text
    assert main(_cli(tiny_bert_dir, tiny_data_dir, out, "--seeds", "13,21", "--rerun-failed")) == 0
    entries = records.read_index(out)
    assert [(e["seed"], e["status"]) for e in entries] == [(13, "ok"), (21, "failed"), (21, "ok")]
    ok13 = [e for e in entries if e["seed"] == 13][0]
    before = records.read_record(out, ok13["key"])["placement"]["t_start"]
    assert main(_cli(tiny_bert_dir, tiny_data_dir, out, "--seeds", "13,21")) == 0
    assert len(records.read_index(out)) == 3  # nothing ran again
    assert main(_cli(tiny_bert_dir, tiny_data_dir, out, "--seeds", "13,", "--force")) == 0
    assert len(records.read_index(out)) == 4
    assert records.read_record(out, ok13["key"])["placement"]["t_start"] > before  # ran again


def test_raise_diverge_and_oom_each_tell_what_happened(
    tiny_bert_dir, tiny_data_dir, tmp_path, monkeypatch
) -> None:
    out = tmp_path / "out"
    plan = _plan(tiny_bert_dir, tiny_data_dir, seeds=(1, 2, 3, 4))
    _faults(
        monkeypatch,
        {"fault": "raise", "seed": 1, "step": 2},
        {"fault": "nan", "seed": 2, "step": 3},
        {"fault": "oom", "seed": 3, "step": 1},
    )
    results = {r["seed"]: r for r in run_serial(plan, out)}
    assert results[1]["status"] == "failed"
    assert results[1]["error"]["type"] == "InjectedFault"  # the original exception, unwrapped
    assert "injected failure" in results[1]["error"]["message"]
    assert results[2]["status"] == "diverged" and "step 3" in results[2]["error"]["message"]
    assert results[3]["status"] == "ok"
    assert results[3]["oom_retry"]["micro_batch_size"] == 4
    assert results[3]["oom_retry"]["grad_accum_steps"] == 2
    assert results[3]["micro_batch_size"] == 4
    assert results[4]["status"] == "ok" and "oom_retry" not in results[4]
    assert [e["status"] for e in records.read_index(out)] == ["failed", "diverged", "ok", "ok"]


@pytest.mark.parametrize("task", ["sst2", "conll2003"])
def test_micro_batches_give_the_full_batch_gradient(tiny_bert_dir, tiny_data_dir, task) -> None:
    from bench.backbones import load_backbone, load_tokenizer, resolve_backbone
    from bench.data import Collator, load_task, tokenize_task
    from bench.train import _accumulate
    from methods import build_method
    from tasks import get_task

    spec = get_task(task)
    ref = resolve_backbone(str(tiny_bert_dir))
    tokenizer = load_tokenizer(ref, spec)
    data = tokenize_task(load_task(spec, str(tiny_data_dir)), tokenizer, ref.identity, 32)
    batch_rows = data["train"].select(range(7)).to_list()
    collator = Collator(tokenizer)
    torch.manual_seed(0)
    model = build_method("full_finetune", {}).attach(
        load_backbone(ref, spec, tokenizer.pad_token_id), spec, None
    )
    model.eval()  # no dropout: the two passes must see the same function
    grads = []
    for micro in (7, 3):
        model.zero_grad()
        loss = _accumulate(
            model,
            collator(batch_rows),
            spec.kind.value,
            micro,
            "cpu",
            torch.autocast("cpu", enabled=False),
        )
        grads.append((loss, [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (full_loss, full), (micro_loss, parts) = grads
    assert micro_loss == pytest.approx(full_loss, rel=1e-5)
    for a, b in zip(full, parts, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_index_repair_drops_torn_lines_and_indexes_orphan_records(
    tiny_bert_dir, tiny_data_dir, tmp_path
) -> None:
    out = tmp_path / "out"
    plan = _plan(tiny_bert_dir, tiny_data_dir, seeds=(1, 2))
    run_serial(plan, out)
    index = records.index_path(out)
    lines = index.read_text().splitlines()
    index.write_text(lines[0] + "\n" + lines[1][:17])  # second line torn, never completed
    (records.runs_dir(out) / ".x.json.tmp").write_text("{")  # an interrupted atomic write
    assert len(records.read_index(out)) == 1
    fixed = records.repair_index(out)
    assert fixed == {"torn_lines": 1, "added": 1, "stale_tmp": 1}
    assert [e["key"] for e in records.read_index(out)] == [r.key for r in plan]
    assert records.repair_index(out) == {"torn_lines": 0, "added": 0, "stale_tmp": 0}
    other = tmp_path / "other-machine"
    run_serial(_plan(tiny_bert_dir, tiny_data_dir, seeds=(3,)), other)
    merged = tmp_path / "merged"  # runs/ copied together, index files concatenated
    shutil.copytree(records.runs_dir(out), records.runs_dir(merged))
    shutil.copytree(records.runs_dir(other), records.runs_dir(merged), dirs_exist_ok=True)
    records.index_path(merged).write_text(index.read_text() + records.index_path(other).read_text())
    assert records.repair_index(merged) == {"torn_lines": 0, "added": 0, "stale_tmp": 0}
    assert sorted(e["seed"] for e in records.read_index(merged)) == [1, 2, 3]


def test_second_driver_on_the_same_output_is_refused(tmp_path) -> None:
    with (
        output_lock(tmp_path),
        pytest.raises(UserError, match="another sweep"),
        output_lock(tmp_path),
    ):
        pass
    with output_lock(tmp_path):  # released
        pass


def _sweep_process(tiny_bert_dir, tiny_data_dir, out, seeds, env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench", *_cli(tiny_bert_dir, tiny_data_dir, out, "--seeds", seeds)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )


def test_sigkill_mid_sweep_then_resume_loses_and_repeats_nothing(
    tiny_bert_dir, tiny_data_dir, tmp_path
) -> None:
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PEFT_BENCH_FAULTS": json.dumps([{"fault": "sigkill", "seed": 3, "step": 2}]),
    }
    killed = _sweep_process(tiny_bert_dir, tiny_data_dir, out, "1,2,3,4", env)
    assert killed.returncode == -signal.SIGKILL
    before = {
        e["key"]: records.read_record(out, e["key"])["started_at"] for e in records.read_index(out)
    }
    assert len(before) == 2
    with records.index_path(out).open("a") as handle:
        handle.write('{"key": "torn')  # as if killed while appending
    env.pop("PEFT_BENCH_FAULTS")
    resumed = _sweep_process(tiny_bert_dir, tiny_data_dir, out, "1,2,3,4", env)
    assert resumed.returncode == 0, resumed.stderr
    assert "2 already done" in resumed.stderr and "1 torn line(s) dropped" in resumed.stderr
    entries = records.read_index(out)
    assert len(entries) == 4 and len({e["key"] for e in entries}) == 4
    assert all(e["status"] == "ok" for e in entries)
    assert len(list(records.runs_dir(out).glob("*.json"))) == 4
    assert not list(records.runs_dir(out).glob(".*"))
    for key, started in before.items():
        assert records.read_record(out, key)["started_at"] == started  # not re-executed


def test_killed_run_resumes_from_its_epoch_checkpoint_with_identical_results(
    tiny_bert_dir, tiny_data_dir, tmp_path
) -> None:
    reference = tmp_path / "reference"
    assert (
        main(_cli(tiny_bert_dir, tiny_data_dir, reference, "--seeds", "7,", "--epochs", "3")) == 0
    )
    out = tmp_path / "out"
    env = {**os.environ, "PEFT_BENCH_FAULTS": json.dumps([{"fault": "sigkill", "epoch": 2}])}
    args = [
        *_cli(tiny_bert_dir, tiny_data_dir, out, "--seeds", "7,", "--epochs", "3"),
        "--checkpoints",
    ]
    killed = subprocess.run([sys.executable, "-m", "bench", *args], env=env, cwd=REPO, timeout=600)
    assert killed.returncode == -signal.SIGKILL
    assert (out / "checkpoints").is_dir()
    env.pop("PEFT_BENCH_FAULTS")
    done = subprocess.run([sys.executable, "-m", "bench", *args], env=env, cwd=REPO, timeout=600)
    assert done.returncode == 0
    (entry,) = records.read_index(out)
    record = records.read_record(out, entry["key"])
    expected = records.read_record(reference, entry["key"])
    assert record["resumed_from_epoch"] == 2
    assert record["metrics"] == expected["metrics"]
    assert record["curve"] == expected["curve"]
    assert not (out / "checkpoints" / entry["key"]).exists()


# --- Ray ---------------------------------------------------------------------------------------


@pytest.fixture
def ray_cluster(request):
    ray = pytest.importorskip("ray")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    cpus, gpus = request.param
    ray.init(num_cpus=cpus, num_gpus=gpus, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _intervals(results):
    return [(r["placement"]["t_start"], r["placement"]["t_end"]) for r in results]


@pytest.mark.parametrize("ray_cluster", [(2, 2)], indirect=True)
def test_ray_spreads_runs_over_both_fake_gpus(
    ray_cluster, tiny_bert_dir, tiny_data_dir, tmp_path
) -> None:
    out = tmp_path / "out"
    plan = _plan(tiny_bert_dir, tiny_data_dir, seeds=(1, 2, 3, 4), epochs=3)
    options = WorkerOptions(output=str(out), device="cpu")
    results = run_sweep(
        plan, out, ExecutorConfig(kind="ray", gpus_per_run=1), options, progress=False
    )
    assert [r["status"] for r in results] == ["ok"] * 4
    assert {tuple(r["placement"]["gpu_ids"]) for r in results} == {("0",), ("1",)}
    assert all(r["placement"]["executor"] == "ray" for r in results)
    assert len(records.read_index(out)) == 4
    with pytest.raises(UserError, match="no node of the Ray cluster has that many GPUs"):
        run_sweep(
            _plan(tiny_bert_dir, tiny_data_dir, seeds=(5,)),
            out,
            ExecutorConfig(kind="ray", gpus_per_run=3),
            options,
            progress=False,
        )


@pytest.mark.parametrize("ray_cluster", [(2, 1)], indirect=True)
def test_ray_packs_two_half_gpu_runs_on_one_gpu(
    ray_cluster, tiny_bert_dir, tiny_data_dir, tmp_path
) -> None:
    out = tmp_path / "out"
    plan = _plan(tiny_bert_dir, tiny_data_dir, seeds=(1, 2), epochs=4)
    options = WorkerOptions(output=str(out), device="cpu")
    results = run_sweep(
        plan, out, ExecutorConfig(kind="ray", gpus_per_run=0.5), options, progress=False
    )
    assert [tuple(r["placement"]["gpu_ids"]) for r in results] == [("0",), ("0",)]
    (a_start, a_end), (b_start, b_end) = _intervals(results)
    assert a_start < b_end and b_start < a_end  # they ran at the same time


# --- Slurm -------------------------------------------------------------------------------------

FAKE_SBATCH = """#!/bin/sh
cp "$1" "{spool}/script.sh"
echo "Submitted batch job 4242"
"""


def test_slurm_array_script_and_worker_entry_point(
    tiny_bert_dir, tiny_data_dir, tmp_path, monkeypatch, capsys
) -> None:
    pytest.importorskip("submitit")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    spool = tmp_path / "spool"
    spool.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(FAKE_SBATCH.format(spool=spool))
    sbatch.chmod(0o755)
    srun = bin_dir / "srun"  # submitit looks for it; the element's command runs without it here
    srun.write_text("#!/bin/sh\nexit 1\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out"
    args = _cli(tiny_bert_dir, tiny_data_dir, out, "--seeds", "1,2,3")
    args[args.index("serial")] = "slurm"
    code = main(
        [
            *args,
            "--max-parallel",
            "2",
            "--time-min",
            "30",
            "--gpus-per-run",
            "1",
            "--partition",
            "gpu",
            "--no-wait",
        ]
    )
    assert code == 0  # submitted; no records yet
    assert "submitted Slurm array 4242 (3 runs)" in capsys.readouterr().out
    script = (spool / "script.sh").read_text()
    for line in [
        "#SBATCH --array=0-2%2",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --time=30",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --requeue",
        "#SBATCH --partition=gpu",
        "-m submitit.core._submit",
    ]:
        assert line in script, line
    ledger = json.loads((out / "slurm" / "jobs.json").read_text())
    assert sorted(ledger.values()) == ["4242_0", "4242_1", "4242_2"]

    # The worker entry point, as one array element would run it on a node.
    command = script.split("\n")[-2].split("python", 1)[1]
    env = {
        **os.environ,
        "SUBMITIT_EXECUTOR": "slurm",  # exported by the script
        "SLURM_JOB_ID": "4243",
        "SLURM_ARRAY_JOB_ID": "4242",
        "SLURM_ARRAY_TASK_ID": "1",
        "SLURM_NTASKS": "1",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_JOB_NODELIST": "localhost",
    }
    subprocess.run(f"{sys.executable} {command}", shell=True, env=env, check=True, timeout=600)
    key = next(k for k, j in ledger.items() if j == "4242_1")
    record = records.read_record(out, key)
    assert record["status"] == "ok" and record["seed"] == 2
    assert record["placement"]["executor"] == "slurm"
    assert record["placement"]["slurm_array_task_id"] == "1"

    # The serial driver indexes it, and runs only what no job has done.
    args[args.index("slurm")] = "serial"
    assert main(args) == 0
    assert sorted(e["seed"] for e in records.read_index(out)) == [1, 2, 3]
    assert records.read_record(out, key)["placement"]["executor"] == "slurm"  # not redone


def test_slurm_refuses_fractional_gpus(tiny_bert_dir, tiny_data_dir, tmp_path, capsys) -> None:
    pytest.importorskip("submitit")
    args = _cli(tiny_bert_dir, tiny_data_dir, tmp_path / "out", "--seeds", "1,")
    args[args.index("serial")] = "slurm"
    assert main([*args, "--gpus-per-run", "0.5"]) == 2
    assert "Slurm allocates whole GPUs" in capsys.readouterr().err


def test_select_runs_reruns_missing_deltas(tiny_bert_dir, tiny_data_dir, tmp_path) -> None:
    out = tmp_path / "out"
    plan = _plan(tiny_bert_dir, tiny_data_dir)
    run_serial(plan, out)
    assert select_runs(plan, out).to_run == []
    assert select_runs(plan, out, save_delta=True).to_run == plan
    assert select_runs(plan, out, force=True).to_run == plan


def test_faults_env_is_validated(monkeypatch) -> None:
    from bench import faults

    monkeypatch.setenv("PEFT_BENCH_FAULTS", json.dumps([{"fault": "explode", "step": 1}]))
    with pytest.raises(UserError, match="valid: \\['raise', 'oom', 'nan', 'hang', 'sigkill'\\]"):
        faults.at_step(_FakeRun(), 1, True)


class _FakeRun:
    task, method, seed = "sst2", "full_finetune", 1


def test_paper_suite_dry_run_shows_plan_sources_and_gpu_hours(capsys) -> None:
    suite = builtin_suites()["paper-ptv2"]
    assert all("run_script" in s.source or "fairseq" in s.source or "Not a paper" in s.source
               for s in suite.settings)  # fmt: skip
    assert main(["run", "--suite", "paper-ptv2", "--dry-run", "--output", "/nonexistent"]) == 0
    out = capsys.readouterr().out
    # 15 official task × backbone cells (see test_paper_tables) × 3 methods × 3 seeds.
    assert "135 runs planned" in out and "bert-large-uncased" in out
    assert "GPU-hours" in out and "A100-class" in out
    assert "source: run_script/run_conll04_bert.sh (commit 2873f477): bs=32 (line 5)" in out
    assert "Not planned (suite exclusions):" in out


def test_gpu_time_estimate_follows_its_formula(tiny_bert_dir, tiny_data_dir) -> None:
    from bench.estimate import PEAK_FLOPS, UTILIZATION, backbone_parameters, estimate_run

    (run,) = _plan(tiny_bert_dir, tiny_data_dir, epochs=2, batch_size=8, max_train_samples=100)
    n = backbone_parameters("x", str(tiny_bert_dir))
    import transformers

    model = transformers.AutoModel.from_pretrained(tiny_bert_dir)
    assert n == sum(p.numel() for p in model.parameters())
    # 100 drawn, 10 carved for selection: 90 / 8 -> 12 steps per epoch; rte eval 277 examples.
    steps, length = 2 * 12, 32
    flops = steps * 8 * length * 6 * n + (10 * 2 + 277) * length * 2 * n
    run = type(run)(**{**run.__dict__, "task": "rte", "data_dir": None})  # Hub: the table
    assert estimate_run(run, n).gpu_seconds == pytest.approx(flops / (PEAK_FLOPS * UTILIZATION))
    assert estimate_run(run, None).gpu_seconds is None


def test_estimate_counts_local_rows_once(tiny_bert_dir, tiny_data_dir, monkeypatch) -> None:
    """A task read from --data-dir is sized from its own files (tiny SST-2: 120 train, 40 dev
    rows), and the count is cached on disk: a second process does not parse the files."""
    from bench import estimate

    (run,) = _plan(tiny_bert_dir, tiny_data_dir, epochs=1, batch_size=8)
    estimate.dataset_sizes.cache_clear()
    assert estimate.dataset_sizes("sst2", str(tiny_data_dir)) == (120, 40)
    estimate.dataset_sizes.cache_clear()

    def no_parsing(*args, **kwargs):
        raise AssertionError("parsed again instead of reading the cached sizes")

    monkeypatch.setattr("bench.data.load_task", no_parsing)
    assert estimate.dataset_sizes("sst2", str(tiny_data_dir)) == (120, 40)
    assert estimate.estimate_run(run, 1e6).gpu_seconds is not None
