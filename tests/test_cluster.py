"""The runner on real schedulers: a live single-machine Slurm and a multi-node Ray cluster.

Marked ``cluster`` and run in CI's own step (``.ci/run``), after ``scripts/slurm-local.sh install``.
The Slurm tests start munged, slurmctld and slurmd on localhost (``scripts/slurm-local.sh``) and
skip, naming what is missing, when Slurm is not installed or the user is not root. The Ray tests
start a head node and two worker nodes on loopback ports (``ray.cluster_utils.Cluster``).

Every test counts records: a fault may neither lose a run (each planned run ends with exactly one
record, ``ok`` unless the test says otherwise) nor duplicate one (one index line per attempt the
driver saw, and one ``ok`` record per key). docs/runner.md's fault table is measured here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from bench import records
from bench.cli import main

from helpers import checkout_pythonpath, tiny_cli, tiny_plan

REPO = Path(__file__).resolve().parents[1]
SLURM_SCRIPT = REPO / "scripts" / "slurm-local.sh"
pytestmark = pytest.mark.cluster


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 240.0) -> Any:
    """Poll ``condition`` every half second until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def ok_records(out: Path) -> dict[str, dict[str, Any]]:
    """Key → record of every ``ok`` record under ``out``."""
    found = {}
    for path in sorted((out / "runs").glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if record["status"] == records.STATUS_OK:
            found[record["key"]] = record
    return found


def assert_each_once(out: Path, keys: set[str]) -> None:
    """No run lost, none duplicated: one ``ok`` record per planned key, nothing else, and the
    index's current line of each key says ``ok``."""
    assert set(ok_records(out)) == keys
    assert len(list((out / "runs").glob("*.json"))) == len(keys)
    current = {entry["key"]: entry["status"] for entry in records.read_index(out)}
    assert current == dict.fromkeys(keys, records.STATUS_OK)


def uninterrupted_record(model: Path, data: Path, tmp_path: Path, seed: int) -> dict[str, Any]:
    """The record of the 3-epoch tiny run of ``seed``, trained serially without any fault: what
    an interrupted and resumed run must reproduce."""
    reference = tmp_path / "reference"
    args = tiny_cli(model, data, reference, "--epochs", "3", "--seeds", f"{seed},")
    assert main(args) == 0
    (record,) = ok_records(reference).values()
    return record


def max_overlap(results: list[dict[str, Any]]) -> int:
    """The most runs that trained at the same moment, from their placement intervals."""
    edges = sorted(
        [(r["placement"]["t_start"], 1) for r in results]
        + [(r["placement"]["t_end"], -1) for r in results]
    )
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


# --- Slurm -------------------------------------------------------------------------------------


def require(reason: str) -> None:
    """Skip, naming what is missing; fail instead where CI sets PEFT_BENCH_REQUIRE_CLUSTER=1, so
    that a cluster step can never pass by skipping everything."""
    if os.environ.get("PEFT_BENCH_REQUIRE_CLUSTER") == "1":
        pytest.fail(f"PEFT_BENCH_REQUIRE_CLUSTER=1 but {reason}")
    pytest.skip(reason)


def _slurm_missing() -> str | None:
    for tool in ("slurmctld", "slurmd", "munged", "sbatch", "scontrol"):
        if shutil.which(tool) is None:
            return f"{tool} not found: install Slurm with `bash scripts/slurm-local.sh install`"
    if os.geteuid() != 0:
        return "the local Slurm runs its daemons as root; run the cluster tests as root"
    try:
        import submitit  # noqa: F401
    except ImportError:
        return "submitit is not installed: pip install -e '.[slurm]'"
    return None


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A running single-machine Slurm; yields the environment its clients and jobs need."""
    reason = _slurm_missing()
    if reason:
        require(reason)
    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "PEFT_SLURM_DIR": str(state)}
    subprocess.run(["bash", str(SLURM_SCRIPT), "start"], env=env, check=True, timeout=120)
    extra = {
        "SLURM_CONF": str(state / "slurm.conf"),
        "PYTHONPATH": checkout_pythonpath(),  # jobs import this checkout's code
    }
    saved = {name: os.environ.get(name) for name in extra}
    os.environ.update(extra)
    try:
        yield {**env, **extra}
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        subprocess.run(["bash", str(SLURM_SCRIPT), "stop"], env=env, timeout=120)


@pytest.fixture
def fast_slurm_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.executors import slurm as slurm_executor

    monkeypatch.setattr(slurm_executor, "POLL_SECONDS", 1.0)


def scontrol(*args: str) -> str:
    return subprocess.run(
        ["scontrol", *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout


def job_field(job_id: str, field: str) -> str:
    for token in scontrol("show", "job", "--oneliner", job_id).split():
        name, _, value = token.partition("=")
        if name == field:
            return value
    raise AssertionError(f"scontrol shows no {field} for job {job_id}")


def start_held_requeue(job_id: str, *updates: str) -> None:
    """Start a requeued job now instead of after Slurm's two-minute hold (``BeginTime``).

    Not in the second of the requeue: slurmd revokes the old attempt's credential with one-second
    resolution and refuses a new one issued in that same second ("already killed, do not launch
    batch job"), which fails the job. Two seconds' pause makes the release safe."""
    time.sleep(2.0)
    scontrol("update", f"JobId={job_id}", *updates, "StartTime=now")


def release_when_requeued(job_id: str, restarts: int = 1) -> None:
    """Wait until ``job_id`` is requeued and held, then start it now."""
    wait_for(
        lambda: (
            int(job_field(job_id, "Restarts")) >= restarts
            and job_field(job_id, "JobState") == "PENDING"
        ),
        f"job {job_id} to be requeued",
    )
    start_held_requeue(job_id)


def wait_for_hang_releasing_early_requeues(job_id: str, hung: Path) -> None:
    """Wait until the element finishes epoch 1 and hangs (``hung`` exists). On a slow or loaded
    machine the time limit's signal may come before epoch 1 ends: submitit then requeues the
    element, which restarts from scratch (no checkpoint yet); start each such requeue at once,
    keeping the 1-minute limit."""

    def hung_or_released() -> bool:
        if hung.exists():
            return True
        if job_field(job_id, "Reason") == "BeginTime":
            start_held_requeue(job_id)
        return False

    wait_for(hung_or_released, "the element to finish epoch 1 and hang", timeout=360.0)


def release_requeues_until(job_id: str, done: Callable[[], bool]) -> int:
    """Start every requeue of ``job_id`` at once, with a 10-minute limit so that the resumed
    element is not signalled again, until ``done()``; returns Slurm's restart count."""

    def finished_or_released() -> bool:
        if done():
            return True
        if job_field(job_id, "Reason") == "BeginTime":
            start_held_requeue(job_id, "TimeLimit=10")
        return False

    wait_for(finished_or_released, f"job {job_id} to write its record")
    return int(job_field(job_id, "Restarts"))


def ledger(out: Path) -> dict[str, str]:
    return json.loads((out / "slurm" / "jobs.json").read_text(encoding="utf-8"))


def slurm_cli(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    """:func:`tiny_cli` on Slurm, CPU-only (Slurm's default is one GPU per run)."""
    args = tiny_cli(model, data, out, "--gpus-per-run", "0", *extra)
    args[args.index("serial")] = "slurm"
    return args


def test_slurm_job_array_is_throttled_and_writes_one_record_per_run(
    slurm, fast_slurm_polls, tiny_bert_dir, tiny_data_dir, tmp_path, capsys
) -> None:
    out = tmp_path / "out"
    args = slurm_cli(tiny_bert_dir, tiny_data_dir, out, "--seeds", "1,2,3,4", "--max-parallel", "2")
    assert main(args) == 0
    assert "submitted Slurm array" in capsys.readouterr().out
    keys = {run.key for run in tiny_plan(tiny_bert_dir, tiny_data_dir, seeds=(1, 2, 3, 4))}
    assert_each_once(out, keys)
    results = list(ok_records(out).values())
    assert len({r["placement"]["slurm_array_job_id"] for r in results}) == 1  # one array
    assert sorted(r["placement"]["slurm_array_task_id"] for r in results) == ["0", "1", "2", "3"]
    assert max_overlap(results) <= 2  # --max-parallel 2
    assert main(args) == 0  # a second invocation submits nothing
    assert "submitted" not in capsys.readouterr().out


def test_slurm_requeued_element_resumes_from_its_epoch_checkpoint(
    slurm, fast_slurm_polls, tiny_bert_dir, tiny_data_dir, tmp_path, monkeypatch
) -> None:
    expected = uninterrupted_record(tiny_bert_dir, tiny_data_dir, tmp_path, seed=13)

    out = tmp_path / "out"
    hung = tmp_path / "hung"  # the fault fires once: after epoch 1's checkpoint, then hangs
    monkeypatch.setenv(
        "PEFT_BENCH_FAULTS", json.dumps([{"fault": "hang", "epoch": 1, "once": str(hung)}])
    )
    args = slurm_cli(
        tiny_bert_dir, tiny_data_dir, out, "--epochs", "3", "--seeds", "13,", "--no-wait"
    )
    assert main(args) == 0
    (job_id,) = ledger(out).values()
    wait_for(hung.exists, "the element to finish epoch 1 and hang")
    scontrol("requeue", job_id)
    release_when_requeued(job_id)
    monkeypatch.delenv("PEFT_BENCH_FAULTS")
    assert main(args[: args.index("--no-wait")]) == 0  # waits for the requeued element

    (record,) = ok_records(out).values()
    assert record["key"] == expected["key"]
    assert record["resumed_from_epoch"] == 1
    assert record["metrics"] == expected["metrics"]
    assert record["curve"] == expected["curve"]
    assert int(job_field(job_id, "Restarts")) == 1
    assert_each_once(out, {expected["key"]})


def test_slurm_time_limit_signal_checkpoints_and_requeues(
    slurm, fast_slurm_polls, tiny_bert_dir, tiny_data_dir, tmp_path, monkeypatch
) -> None:
    from bench.executors import slurm as slurm_executor

    # A 1-minute limit with USR2 40 s before it: the signal comes 20–50 s after the start
    # (Slurm checks time limits about every 30 s), while the element hangs after epoch 1.
    monkeypatch.setattr(slurm_executor, "SIGNAL_DELAY_S", 40)
    expected = uninterrupted_record(tiny_bert_dir, tiny_data_dir, tmp_path, seed=13)

    out = tmp_path / "out"
    hung = tmp_path / "hung"
    monkeypatch.setenv(
        "PEFT_BENCH_FAULTS", json.dumps([{"fault": "hang", "epoch": 1, "once": str(hung)}])
    )
    args = slurm_cli(
        tiny_bert_dir, tiny_data_dir, out, "--epochs", "3", "--seeds", "13,", "--time-min", "1"
    )
    assert main([*args, "--no-wait"]) == 0
    (job_id,) = ledger(out).values()
    wait_for_hang_releasing_early_requeues(job_id, hung)
    # submitit's USR2 handler requeues it; a slow restart may get the signal again
    assert release_requeues_until(job_id, lambda: bool(ok_records(out))) >= 1
    assert main(args) == 0

    (record,) = ok_records(out).values()
    assert record["resumed_from_epoch"] == 1
    assert record["metrics"] == expected["metrics"]
    logs = "".join(p.read_text(errors="replace") for p in (out / "slurm").rglob("*.err"))
    assert "USR2" in logs or "timed-out" in logs or "requeu" in logs.lower()
    assert_each_once(out, {expected["key"]})


def test_slurm_no_wait_then_reindex_and_scancel_then_rerun_failed(
    slurm, fast_slurm_polls, tiny_bert_dir, tiny_data_dir, tmp_path, monkeypatch, capsys
) -> None:
    out = tmp_path / "out"
    plan = tiny_plan(tiny_bert_dir, tiny_data_dir, seeds=(1, 2))
    stuck = next(run for run in plan if run.seed == 2)
    monkeypatch.setenv("PEFT_BENCH_FAULTS", json.dumps([{"fault": "hang", "seed": 2, "step": 1}]))
    args = slurm_cli(tiny_bert_dir, tiny_data_dir, out, "--seeds", "1,2")
    assert main([*args, "--no-wait"]) == 0
    submitted = ledger(out)
    assert "submitted Slurm array" in capsys.readouterr().out

    # Seed 1 finishes on its own; seed 2 hangs. A later --no-wait invocation indexes seed 1 and
    # does not resubmit seed 2, which is still running.
    wait_for(lambda: len(ok_records(out)) == 1, "seed 1's record")
    wait_for(lambda: (out / "running" / f"{stuck.key}.json").exists(), "seed 2 to start")
    assert main([*args, "--no-wait"]) == 0
    said = capsys.readouterr().out
    assert "1 run(s) still queued or running on Slurm; not resubmitted" in said
    assert "submitted Slurm array" not in said
    assert ledger(out) == submitted
    assert {e["key"] for e in records.read_index(out)} == set(ok_records(out))

    # scancel of the hanging element while a driver waits: it records the run failed, naming
    # Slurm's state, and exits 1; a plain invocation then neither resubmits nor hides it.
    with ThreadPoolExecutor(1) as pool:
        driver = pool.submit(main, args)
        time.sleep(3)  # let it reach its wait loop (cancelled earlier, it records it at start)
        subprocess.run(["scancel", submitted[stuck.key]], check=True, timeout=30)
        assert driver.result(timeout=240) == 1
    failed = records.read_record(out, stuck.key)
    assert failed["status"] == "failed"
    assert failed["error"]["type"] == "SlurmCancelled"
    assert "ended CANCELLED without a record" in failed["error"]["message"]
    assert main(args) == 1
    assert ledger(out) == submitted

    monkeypatch.delenv("PEFT_BENCH_FAULTS")
    assert main([*args, "--rerun-failed"]) == 0
    assert_each_once(out, {run.key for run in plan})


# --- Ray ---------------------------------------------------------------------------------------


@pytest.fixture
def ray_nodes() -> Iterator[Any]:
    """A head node that takes no runs and two one-CPU worker nodes, on loopback ports."""
    try:
        import ray  # noqa: F401
    except ImportError:
        require("Ray is not installed: pip install -e '.[ray]'")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False},
    )
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    cluster.workers = workers
    try:
        yield cluster
    finally:
        cluster.shutdown()


def ray_cli(model: Path, data: Path, out: Path, address: str, *extra: str) -> list[str]:
    args = tiny_cli(model, data, out, "--address", address, "--gpus-per-run", "0", *extra)
    args[args.index("serial")] = "ray"
    return args


def test_ray_cluster_spreads_runs_over_its_nodes_and_refuses_what_no_node_has(
    ray_nodes, tiny_bert_dir, tiny_data_dir, tmp_path, capsys
) -> None:
    out = tmp_path / "out"
    args = ray_cli(tiny_bert_dir, tiny_data_dir, out, ray_nodes.address, "--seeds", "1,2,3,4")
    assert main(args) == 0
    assert_each_once(
        out, {run.key for run in tiny_plan(tiny_bert_dir, tiny_data_dir, seeds=(1, 2, 3, 4))}
    )
    nodes = {r["placement"]["ray_node_id"] for r in ok_records(out).values()}
    assert nodes == {node.node_id for node in ray_nodes.workers}

    started = time.monotonic()
    big = ray_cli(
        tiny_bert_dir, tiny_data_dir, tmp_path / "big", ray_nodes.address, "--seeds", "5,"
    )
    assert main([*big, "--cpus-per-run", "2"]) == 2
    assert "no node of the Ray cluster has that many GPUs and CPUs" in capsys.readouterr().err
    assert time.monotonic() - started < 60  # at once, not after waiting for a node
    assert not (tmp_path / "big" / "runs").exists() or not any(
        (tmp_path / "big" / "runs").iterdir()
    )


def test_ray_worker_node_killed_mid_run_is_retried_on_another_node(
    ray_nodes, tiny_bert_dir, tiny_data_dir, tmp_path, monkeypatch
) -> None:
    expected = uninterrupted_record(tiny_bert_dir, tiny_data_dir, tmp_path, seed=7)

    out = tmp_path / "out"
    hung = tmp_path / "hung"  # after epoch 1's checkpoint, on the first attempt only
    fault = [{"fault": "hang", "epoch": 1, "once": str(hung)}]
    monkeypatch.setenv("PEFT_BENCH_FAULTS", json.dumps(fault))
    args = ray_cli(
        tiny_bert_dir, tiny_data_dir, out, ray_nodes.address,
        "--epochs", "3", "--seeds", "7,", "--checkpoints", "--max-retries", "2",
    )  # fmt: skip
    with ThreadPoolExecutor(1) as pool:
        driver = pool.submit(main, args)
        wait_for(hung.exists, "the run to finish epoch 1 and hang")
        marker = json.loads((out / "running" / f"{expected['key']}.json").read_text())
        (node,) = [n for n in ray_nodes.workers if n.node_id == marker["ray_node_id"]]
        ray_nodes.remove_node(node)
        assert driver.result(timeout=300) == 0

    (record,) = ok_records(out).values()
    assert record["placement"]["ray_node_id"] != node.node_id
    assert record["resumed_from_epoch"] == 1
    assert record["metrics"] == expected["metrics"]
    assert_each_once(out, {expected["key"]})
    assert len(records.read_index(out)) == 1  # the driver saw one attempt finish


def test_ray_driver_killed_and_restarted_resumes_without_duplicates(
    ray_nodes, tiny_bert_dir, tiny_data_dir, tmp_path
) -> None:
    out = tmp_path / "out"
    seeds = (1, 2, 3, 4, 5, 6)
    args = ray_cli(
        tiny_bert_dir, tiny_data_dir, out, ray_nodes.address,
        "--seeds", ",".join(map(str, seeds)), "--epochs", "3",
    )  # fmt: skip
    driver = subprocess.Popen(
        [sys.executable, "-m", "bench", *args], cwd=REPO, env={**os.environ},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: ok_records(out), "a first record")
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=60)
    finally:
        driver.kill()
    done_before = set(ok_records(out))
    assert 0 < len(done_before) < len(seeds)

    assert main(args) == 0
    keys = {run.key for run in tiny_plan(tiny_bert_dir, tiny_data_dir, seeds=seeds, epochs=3)}
    assert_each_once(out, keys)
    index = records.read_index(out)
    assert len(index) == len({entry["key"] for entry in index}) == len(seeds)  # no duplicates
