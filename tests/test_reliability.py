"""Reliability and safety: faults, bad input (property-based), untrusted files, determinism.

Fault scenarios end with the same check: no finished result lost or duplicated, the index
consistent with the records, the next invocation finishes the rest, and the report equals the
report of an uninterrupted sweep.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import records
from bench.cli import main
from bench.config import TrainConfig
from bench.errors import StorageError, UserError
from bench.runner import parse_seeds, run_serial
from bench.suites import parse_suite

from helpers import tiny_cli, tiny_plan

REPO = Path(__file__).resolve().parents[1]
SEEDS = (1, 2, 3)
HYPOTHESIS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _plan(tiny_bert_dir: Path, tiny_data_dir: Path, seeds=SEEDS):
    return tiny_plan(tiny_bert_dir, tiny_data_dir, seeds=seeds)


def _report_tables(results: Path, out: Path) -> dict[str, bytes]:
    """The report's tables (figures skipped: they would only slow the tests down)."""
    assert main(["report", "--results", str(results), "--out", str(out), "--no-figures"]) == 0
    return {p.name: p.read_bytes() for p in sorted((out / "tables").glob("accuracy_*"))}


@pytest.fixture(scope="module")
def clean_sweep(tiny_bert_dir, tiny_data_dir, tmp_path_factory):
    """An uninterrupted sweep and its report tables: what every faulted sweep must end as."""
    out = tmp_path_factory.mktemp("clean")
    run_serial(_plan(tiny_bert_dir, tiny_data_dir), out)
    return out, _report_tables(out, tmp_path_factory.mktemp("clean-report"))


def _assert_consistent(out: Path, plan, clean_sweep, tmp_path: Path) -> None:
    """One ok record per planned run, the index's latest line per key agreeing with the record,
    and the same report as the uninterrupted sweep."""
    latest = {e["key"]: e for e in records.read_index(out)}
    assert sorted(latest) == sorted(r.key for r in plan)
    for run in plan:
        record = records.read_record(out, run.key)
        assert record["status"] == "ok"
        assert latest[run.key] == records.index_entry(record)
    assert records.repair_index(out) == {"torn_lines": 0, "added": 0, "stale_tmp": 0}
    assert _report_tables(out, tmp_path / "report") == clean_sweep[1]


# --- faults ------------------------------------------------------------------------------------


def test_disk_full_while_writing_a_record(
    tiny_bert_dir, tiny_data_dir, tmp_path, monkeypatch, clean_sweep
) -> None:
    out = tmp_path / "out"
    plan = _plan(tiny_bert_dir, tiny_data_dir)
    real_replace = os.replace
    writes = {"records": 0}

    def full_disk(source, target, *args, **kwargs):
        if Path(target).parent.name == "runs":
            writes["records"] += 1
            if writes["records"] == 2:  # the temporary file is written; the rename fails
                raise OSError(errno.ENOSPC, "No space left on device", str(target))
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(records.os, "replace", full_disk)
    with pytest.raises(StorageError, match="No space left on device.*Finished runs are safe"):
        run_serial(plan, out)
    assert [e["seed"] for e in records.read_index(out)] == [1]
    assert len(list(records.runs_dir(out).iterdir())) == 1  # no partial file left behind
    monkeypatch.setattr(records.os, "replace", real_replace)
    run_serial(plan, out)
    _assert_consistent(out, plan, clean_sweep, tmp_path)


def test_disk_full_is_one_message_and_its_own_exit_code(
    tiny_bert_dir, tiny_data_dir, tmp_path, monkeypatch, capsys
) -> None:
    def no_space(path: Path, text: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(records, "_atomic_write_text", no_space)
    args = ["run", "--tasks", "sst2", "--methods", "full_finetune", "--seeds", "1,",
            "--backbone", str(tiny_bert_dir), "--data-dir", str(tiny_data_dir),
            "--output", str(tmp_path / "out"), "--epochs", "1", "--no-progress",
            "--executor", "serial"]  # fmt: skip
    assert main(args) == StorageError.exit_code
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err


def test_truncated_record_and_garbage_index_lines(
    tiny_bert_dir, tiny_data_dir, tmp_path, clean_sweep
) -> None:
    out = tmp_path / "out"
    plan = _plan(tiny_bert_dir, tiny_data_dir)
    run_serial(plan, out)
    victim = records.record_path(out, plan[1].key)
    victim.write_text(victim.read_text()[:100])  # truncated by a crash of some other tool
    with records.index_path(out).open("a") as handle:
        handle.write('\x00\x00garbage\n{"not": "an entry"}\n{"key": "trunc')
    run_serial(plan, out)  # the unreadable record counts as not done: rerun, rewritten whole
    _assert_consistent(out, plan, clean_sweep, tmp_path)


def test_hanging_run_times_out_and_the_sweep_goes_on(
    tiny_bert_dir, tiny_data_dir, tmp_path, monkeypatch, clean_sweep
) -> None:
    out = tmp_path / "out"
    plan = _plan(tiny_bert_dir, tiny_data_dir)
    monkeypatch.setenv("PEFT_BENCH_FAULTS", json.dumps([{"fault": "hang", "seed": 2, "step": 3}]))
    args = tiny_cli(tiny_bert_dir, tiny_data_dir, out, "--seeds", "1,2,3")
    assert main([*args, "--timeout-min", "0.5"]) == 1
    statuses = {e["seed"]: e["status"] for e in records.read_index(out)}
    assert statuses == {1: "ok", 2: "timeout", 3: "ok"}
    error = records.read_record(out, plan[1].key)["error"]
    assert error["type"] == "RunTimeout" and "30 s" in error["message"]
    monkeypatch.delenv("PEFT_BENCH_FAULTS")
    assert main(args) == 1  # a timeout is not rerun unless asked
    assert main([*args, "--rerun-failed"]) == 0
    _assert_consistent(out, plan, clean_sweep, tmp_path)


def test_nan_loss_and_simulated_oom_then_clean_report(
    tiny_bert_dir, tiny_data_dir, tmp_path, monkeypatch, clean_sweep
) -> None:
    out = tmp_path / "out"
    plan = _plan(tiny_bert_dir, tiny_data_dir)
    monkeypatch.setenv(
        "PEFT_BENCH_FAULTS",
        json.dumps(
            [{"fault": "nan", "seed": 1, "step": 2}, {"fault": "oom", "seed": 3, "step": 1}]
        ),
    )
    results = {r["seed"]: r for r in run_serial(plan, out)}
    assert results[1]["status"] == "diverged" and results[3]["oom_retry"]["micro_batch_size"] == 4
    monkeypatch.delenv("PEFT_BENCH_FAULTS")
    from bench.executors import ExecutorConfig
    from bench.sweep import run_sweep
    from bench.worker import WorkerOptions

    # Diverged is a result, so only --force redoes it; the micro-batched run is redone too
    # because accumulation changes float summation order (metrics agree to ~1e-6, not bitwise).
    redo = [plan[0], plan[2]]
    run_sweep(redo, out, ExecutorConfig(kind="serial"), WorkerOptions(str(out)), force=True,
              progress=False)  # fmt: skip
    _assert_consistent(out, plan, clean_sweep, tmp_path)


def test_sigkill_of_a_ray_worker_gives_a_failed_record_and_the_sweep_completes(
    tiny_bert_dir, tiny_data_dir, tmp_path, monkeypatch
) -> None:
    ray = pytest.importorskip("ray")
    from bench.executors import ExecutorConfig
    from bench.sweep import run_sweep
    from bench.worker import WorkerOptions

    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv(
        "PEFT_BENCH_FAULTS", json.dumps([{"fault": "sigkill", "seed": 2, "step": 1}])
    )
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "out"
        plan = _plan(tiny_bert_dir, tiny_data_dir)
        config = ExecutorConfig(kind="ray", gpus_per_run=0, max_retries=1)
        options = WorkerOptions(output=str(out), device="cpu")
        results = {r["seed"]: r for r in run_sweep(plan, out, config, options, progress=False)}
    finally:
        ray.shutdown()
    assert results[1]["status"] == results[3]["status"] == "ok"
    assert results[2]["status"] == "failed"
    assert "Worker" in results[2]["error"]["type"] or "died" in results[2]["error"]["message"]
    assert sorted(e["seed"] for e in records.read_index(out)) == [1, 2, 3]


def test_a_ray_worker_killed_once_is_retried_and_the_run_finishes(
    tiny_bert_dir, tiny_data_dir, tmp_path, monkeypatch, clean_sweep
) -> None:
    ray = pytest.importorskip("ray")
    from bench.executors import ExecutorConfig
    from bench.sweep import run_sweep
    from bench.worker import WorkerOptions

    marker = tmp_path / "killed-once"
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv(
        "PEFT_BENCH_FAULTS",
        json.dumps([{"fault": "sigkill", "seed": 2, "step": 2, "once": str(marker)}]),
    )
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "out"
        plan = _plan(tiny_bert_dir, tiny_data_dir)
        config = ExecutorConfig(kind="ray", gpus_per_run=0, max_retries=1)
        run_sweep(plan, out, config, WorkerOptions(output=str(out), device="cpu"), progress=False)
    finally:
        ray.shutdown()
    assert marker.exists()  # the worker was killed once, then Ray's retry finished the run
    _assert_consistent(out, plan, clean_sweep, tmp_path)


def test_driver_killed_mid_sweep_ends_with_the_uninterrupted_report(
    tiny_bert_dir, tiny_data_dir, tmp_path, clean_sweep
) -> None:
    out = tmp_path / "out"
    args = [
        sys.executable,
        "-m",
        "bench",
        *tiny_cli(tiny_bert_dir, tiny_data_dir, out, "--seeds", "1,2,3"),
    ]
    env = {
        **os.environ,
        "PEFT_BENCH_FAULTS": json.dumps([{"fault": "sigkill", "seed": 2, "step": 4}]),
    }
    assert subprocess.run(args, env=env, cwd=REPO, capture_output=True, timeout=600).returncode < 0
    env.pop("PEFT_BENCH_FAULTS")
    subprocess.run(args, env=env, cwd=REPO, capture_output=True, timeout=600, check=True)
    _assert_consistent(out, _plan(tiny_bert_dir, tiny_data_dir), clean_sweep, tmp_path)


# --- determinism -------------------------------------------------------------------------------


def test_same_seed_in_two_fresh_processes_and_rerun_by_id(
    tiny_bert_dir, tiny_data_dir, tmp_path
) -> None:
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        command = [sys.executable, "-m", "bench", "run", "--tasks", "stsb",
                   "--methods", "p_tuning_v2", "--seeds", "5,", "--backbone", str(tiny_bert_dir),
                   "--data-dir", str(tiny_data_dir), "--output", str(out), "--epochs", "2",
                   "--max-length", "32", "--no-progress", "--executor", "serial"]  # fmt: skip
        subprocess.run(command, check=True, cwd=REPO, capture_output=True, timeout=600)
    (a,), (b,) = (records.read_index(out) for out in outs)
    assert a["key"] == b["key"]
    first, second = (records.read_record(out, a["key"]) for out in outs)
    assert first["metrics"] == second["metrics"] and first["curve"] == second["curve"]
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "rerun",
            a["key"][:8],
            "--results",
            str(outs[0]),
            "--output",
            str(tmp_path / "again"),
        ],  # fmt: skip
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "reproduced: identical" in again.stdout


def test_rerun_refuses_other_data_and_bad_ids(tiny_bert_dir, tiny_data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    (record,) = run_serial(_plan(tiny_bert_dir, tiny_data_dir, seeds=(1,)), out)
    other = tmp_path / "other-data"
    shutil.copytree(tiny_data_dir, other)
    (other / "SST-2" / "dev.tsv").write_text("sentence\tlabel\ngood film \t1\n")
    assert main(["rerun", record["key"], "--results", str(out), "--data-dir", str(other)]) == 2
    assert "not the same data" in capsys.readouterr().err
    for bad in ["../../etc", "zz", ""]:
        assert main(["rerun", bad, "--results", str(out)]) == 2
    assert main(["rerun", record["key"], "--results", str(out), "--output", str(out)]) == 2


# --- bad input (property-based) ----------------------------------------------------------------

VALUES = st.one_of(
    st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=4),
    st.lists(st.integers(), max_size=2),
)
TRAIN_KEYS = [*TrainConfig.__dataclass_fields__, "epoch", "lr", "seed", "Epochs"]


@HYPOTHESIS
@given(st.dictionaries(st.sampled_from(TRAIN_KEYS), VALUES, max_size=4))
def test_train_config_accepts_or_names_the_field(values) -> None:
    try:
        TrainConfig.from_dict(values)
    except UserError as error:
        assert any(key in str(error) for key in values), str(error)


METHOD_KEYS = ["lr", "prompt_length", "init", "injection", "reparam", "hidden", "position",
               "prompt_dropout", "head_lr", "head_only_epochs", "prompt_len", "bogus"]  # fmt: skip


@HYPOTHESIS
@given(
    st.sampled_from(["full_finetune", "prompt_tuning", "p_tuning", "p_tuning_v2", "prefix_tuning"]),
    st.dictionaries(st.sampled_from(METHOD_KEYS), VALUES, max_size=3),
)
def test_method_configs_accept_or_name_the_field(name, values) -> None:
    from methods import get_method

    config_cls = get_method(name).config_cls
    try:
        config_cls.from_dict(values)
    except UserError as error:
        message = str(error)
        unknown = sorted(set(values) - set(config_cls.__dataclass_fields__))
        if unknown:
            assert f"key(s) {unknown}; allowed keys:" in message, message
        else:  # a bad value: the message starts with the field's name
            assert any(f"{key} must" in message for key in values), message


SUITE_DATA = st.recursive(
    st.one_of(st.integers(-2, 2), st.text(max_size=5), st.none(), st.booleans()),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(
            st.sampled_from(
                [
                    "tasks",
                    "methods",
                    "seeds",
                    "settings",
                    "train",
                    "source",
                    "x",
                    "method",
                    "backbones",
                    "name",
                    "epochs",
                ]
            ),  # fmt: skip
            children,
            max_size=4,
        ),
    ),
    max_leaves=8,
)


@HYPOTHESIS
@given(SUITE_DATA)
def test_suite_files_parse_or_fail_with_one_message(data) -> None:
    try:
        parse_suite(data, "fuzz.yaml")
    except UserError as error:
        assert "fuzz.yaml" in str(error) or "suite" in str(error)


@HYPOTHESIS
@given(st.lists(st.integers(0, 20), min_size=1, max_size=6))
def test_seed_lists_with_duplicates_are_refused(seeds) -> None:
    text = ",".join(map(str, seeds)) + ","
    if len(set(seeds)) < len(seeds):
        with pytest.raises(UserError, match="duplicate seed"):
            parse_seeds(text)
    else:
        assert parse_seeds(text) == tuple(seeds)


@HYPOTHESIS
@given(st.binary(max_size=200))
def test_arbitrary_bytes_as_a_data_file_load_or_fail_clearly(tmp_path, content) -> None:
    from bench.data import load_task
    from tasks import get_task

    data = tmp_path / "SST-2"
    data.mkdir(exist_ok=True)
    (data / "train.tsv").write_bytes(content)
    (data / "dev.tsv").write_text("sentence\tlabel\na fine film\t1\n")
    try:
        load_task(get_task("sst2"), str(tmp_path))
    except UserError as error:
        assert "train.tsv" in str(error), str(error)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--epochs", "0"], "--epochs: expected a positive integer, got 0"),
        (["--batch-size", "-4"], "--batch-size: expected a positive integer"),
        (["--max-train-samples", "abc"], "--max-train-samples: expected a positive integer"),
        (["--lr", "-1"], "--lr: expected a positive number"),
        (["--seeds", "1,1"], "duplicate seed(s) [1]"),
        (["--seeds", "4,-3"], "seeds must be >= 0"),
        (["--method-args", "prompt_length=-2", "--methods", "prompt_tuning"], "prompt_length"),
        (["--method-args", "colour=red"], "unknown FullFinetuneConfig key(s) ['colour']"),
        (["--tasks", "sst3"], "did you mean 'sst2'"),
        (["--gpus-per-run", "1.5"], "--gpus-per-run 1.5"),
        (
            [
                "--max-length",
                "9999",
                "--methods",
                "prompt_tuning",
                "--method-args",
                "position=shift",
            ],
            "exceeds",
        ),  # fmt: skip
    ],
)
def test_bad_command_lines_exit_2_with_one_message_and_write_nothing(
    tiny_bert_dir, tiny_data_dir, tmp_path, capsys, extra, needle
) -> None:
    out = tmp_path / "out"
    base = ["run", "--tasks", "sst2", "--methods", "full_finetune", "--seeds", "1,",
            "--backbone", str(tiny_bert_dir), "--data-dir", str(tiny_data_dir),
            "--output", str(out), "--epochs", "1", "--no-progress",
            "--executor", "serial"]  # fmt: skip
    args = list(base)
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert needle in err, err
    assert "Traceback" not in err
    written = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert [p.name for p in written] in ([], [".lock"]), written  # the driver's lock at most


def test_empty_and_non_utf8_data_files(tiny_data_dir, tmp_path, capsys) -> None:
    for content, needle in [(b"", "is empty"), (b"sentence\tlabel\n\xff\xfe bad\t1\n", "UTF-8")]:
        data = tmp_path / f"data{len(content)}"
        shutil.copytree(tiny_data_dir, data)
        (data / "SST-2" / "train.tsv").write_bytes(content)
        assert main(["run", "--tasks", "sst2", "--data-dir", str(data), "--dry-run"]) in (0, 2)
        from bench.data import load_task
        from tasks import get_task

        with pytest.raises(UserError, match=needle):
            load_task(get_task("sst2"), str(data))


# --- untrusted files ---------------------------------------------------------------------------


def _python_sources() -> list[Path]:
    return [p for d in ("bench", "methods", "tasks") for p in (REPO / d).rglob("*.py")]


def test_no_unsafe_loaders_in_the_code() -> None:
    import re

    banned = [r"yaml\.load\(", r"yaml\.unsafe_load", r"yaml\.full_load", r"pickle\.loads?\(",
              r"torch\.load\(", r"trust_remote_code=True", r"(?<![\w.])eval\(",
              r"(?<![\w.])exec\("]  # fmt: skip
    for path in _python_sources():
        text = path.read_text(encoding="utf-8")
        for pattern in banned:
            assert not re.search(pattern, text), f"{path}: {pattern}"


def test_pickled_backbone_weights_are_refused(tiny_bert_dir, tmp_path, capsys) -> None:
    import torch
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_bert_dir, pickled)
    for weights in pickled.glob("*.safetensors"):  # the same weights, as a pickle
        torch.save(load_file(weights), pickled / "pytorch_model.bin")
        weights.unlink()
    from bench.backbones import load_backbone, resolve_backbone
    from tasks import get_task

    with pytest.raises(UserError, match="only from safetensors"):
        load_backbone(resolve_backbone(str(pickled)), get_task("sst2"), 0)


def test_remote_code_is_never_run_without_the_flag(tiny_bert_dir, tmp_path, monkeypatch) -> None:
    from bench.backbones import TRUST_REMOTE_CODE_ENV, load_tokenizer, resolve_backbone
    from tasks import get_task

    monkeypatch.delenv(TRUST_REMOTE_CODE_ENV, raising=False)
    model_dir = tmp_path / "remote"
    shutil.copytree(tiny_bert_dir, model_dir)
    marker = tmp_path / "code-ran"
    (model_dir / "custom.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import BertConfig\n"
        "class MyConfig(BertConfig):\n    model_type = 'bert'\n"
    )
    config = json.loads((model_dir / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "custom.MyConfig"}
    (model_dir / "config.json").write_text(json.dumps(config))
    with contextlib.suppress(UserError):  # refusing is fine; running the code is not
        load_tokenizer(resolve_backbone(str(model_dir)), get_task("sst2"))
    assert not marker.exists()


def test_delta_and_checkpoint_files_must_be_safetensors(tmp_path) -> None:
    import pickle

    from bench import checkpoint
    from bench.weights import read_delta

    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"prompt": [1, 2, 3]}))
    with pytest.raises(UserError, match="not a safetensors delta file"):
        read_delta(evil)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "epoch1.safetensors").write_bytes(pickle.dumps([1]))
    state = {"tensors": "epoch1.safetensors", "epoch": 1, "step": 2, "curve": [],
             "best": {"score": 0.5}, "has_best_state": False, "eval_seconds": 0.0,
             "train_seconds": 0.0, "optimizer": {"param_groups": [], "scalars": {}},
             "scheduler": {}, "cuda_rng_count": 0}  # fmt: skip
    (ckpt / "state.json").write_text(json.dumps(state))
    from safetensors import SafetensorError

    with pytest.raises(SafetensorError):  # read as safetensors, refused; never unpickled
        checkpoint.load(ckpt)
    from bench.train import _load_checkpoint

    assert _load_checkpoint(ckpt) is None  # the run starts over instead of failing every retry
    assert not ckpt.exists() and len(list(tmp_path.glob("ckpt.unreadable-*"))) == 1


def test_names_from_configs_never_become_paths(tmp_path, capsys) -> None:
    suite = tmp_path / "evil.yaml"
    suite.write_text("name: ../../escape\ntasks: ['../../../tmp/x']\n")
    assert main(["run", "--suite", str(suite), "--dry-run", "--output", str(tmp_path / "o")]) == 2
    assert "unknown task" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.yaml"]
    assert all(c in "0123456789abcdef" for c in records.record_path(tmp_path, "ab12").stem)
