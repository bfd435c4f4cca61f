"""Hyperparameter search: suite blocks, grids, budgets, winners, two-stage sweeps, protocols and
the reports' use of winners only (tiny models)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench import records
from bench.cli import main
from bench.errors import UserError
from bench.report import collect, searches
from bench.search import PointScore, Search, choose_winner, edge_keys, load_cells
from bench.suites import builtin_suites, parse_suite

REPO = Path(__file__).resolve().parents[1]

#: lr 1e-6 barely moves the tiny model; 1e-3 learns the tiny SST-2 in 6 epochs (test_engine).
TWO_POINT = {
    "tasks": ["sst2"],
    "methods": ["full_finetune"],
    "train": {"epochs": 6, "batch_size": 8, "max_length": 32},
    "search": [
        {
            "source": "a test",
            "grid": {"lr": [1.0e-6, 1.0e-3]},
            "search_seeds": 1,
            "final_seeds": 2,
        }
    ],
}


def _suite_file(tmp_path: Path, data: dict, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _run_args(suite: Path, model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "run", "--suite", str(suite), "--backbone", str(model), "--data-dir", str(data),
        "--output", str(out), "--no-progress", "--executor", "serial", *extra,
    ]  # fmt: skip


# --- grids, budgets, winners (no training) ----------------------------------------------------


def test_grid_order_is_the_product_first_key_slowest() -> None:
    search = Search(grid={"lr": (1, 2), "prompt_length": (8, 20)})
    assert search.all_points() == [
        {"lr": 1, "prompt_length": 8},
        {"lr": 1, "prompt_length": 20},
        {"lr": 2, "prompt_length": 8},
        {"lr": 2, "prompt_length": 20},
    ]


def test_budget_subset_is_seeded_sized_and_in_grid_order() -> None:
    grid = {"lr": (1, 2, 3, 4), "m": (8, 20, 64)}
    a = Search(grid=grid, budget=5, budget_seed=0).chosen()
    assert a == Search(grid=grid, budget=5, budget_seed=0).chosen()  # seeded
    assert len(a) == 5 and a == sorted(a) and len(set(a)) == 5
    others = {tuple(Search(grid=grid, budget=5, budget_seed=s).chosen()) for s in range(1, 6)}
    assert len(others | {tuple(a)}) > 1  # the seed matters
    assert Search(grid=grid, budget=50).chosen() == list(range(12))  # a cap above the grid


def test_the_better_point_wins_and_ties_go_to_the_first_in_grid_order() -> None:
    def point(index: int, *scores: float, status: str = "ok") -> PointScore:
        return PointScore(index, {"lr": index}, scores, tuple(status for _ in scores))

    assert choose_winner([point(0, 0.6), point(1, 0.7)]).index == 1
    tie = [point(2, 0.7, 0.5), point(0, 0.6, 0.6), point(1, 0.5, 0.7)]
    assert choose_winner(tie).index == 0  # equal means: grid order, whatever the input order
    assert choose_winner(list(reversed(tie))).index == 0
    diverged = point(0, math.nan, status="diverged")
    assert choose_winner([diverged, point(1, 0.1)]).index == 1
    assert choose_winner([diverged]) is None


def test_edge_flag_marks_extreme_numeric_values_only() -> None:
    grid = {"lr": [1e-3, 3e-3, 1e-2], "prompt_length": [8, 20], "injection": ["kv", "hidden"]}
    assert edge_keys(grid, {"lr": 3e-3, "prompt_length": 20, "injection": "kv"}) == [
        "prompt_length=max"
    ]
    assert edge_keys(grid, {"lr": 1e-3, "prompt_length": 20, "injection": "kv"}) == [
        "lr=min",
        "prompt_length=max",
    ]
    assert edge_keys({"lr": [1e-3]}, {"lr": 1e-3}) == []  # one value: no edge to speak of


def test_search_blocks_merge_in_order_like_settings() -> None:
    suite = parse_suite(
        {
            "tasks": ["sst2", "rte"],
            "search": [
                {"source": "all", "final_seeds": 3, "grid": {"lr": [1e-3, 1e-2]}},
                {"source": "rte", "tasks": ["rte"], "grid": {"lr": ["3e-3"], "epochs": [2, 4]}},
            ],
        },
        "inline",
    )
    sst2 = suite.search_for("sst2", "p_tuning_v2")
    rte = suite.search_for("rte", "p_tuning_v2")
    assert sst2.grid == {"lr": (1e-3, 1e-2)} and sst2.final_seeds == 3 and sst2.search_seeds == 1
    assert rte.grid == {"lr": (3e-3,), "epochs": (2, 4)} and rte.final_seeds == 3
    assert rte.sources == ("all", "rte")
    assert parse_suite({"tasks": ["rte"]}, "inline").search_for("rte", "p_tuning") is None


def test_shipped_search_suite_parses_with_sources() -> None:
    suite = builtin_suites()["cpu-search"]
    assert suite.tasks == ("sst2", "stsb", "conll2003")
    assert suite.search_for("sst2", "p_tuning_v2").grid == {
        "lr": (5e-3, 1e-2, 3e-2),
        "prompt_length": (8, 20, 64),
    }
    assert suite.search_for("stsb", "prompt_tuning").grid == {
        "lr": (3e-2, 1e-1, 3e-1),
        "prompt_length": (20, 50),
    }
    for method, grid in [
        ("full_finetune", (5e-5, 1e-4, 2e-4)),
        ("p_tuning", (1e-3, 3e-3, 1e-2)),
        ("prefix_tuning", (3e-4, 1e-3, 3e-3)),
    ]:
        search = suite.search_for("conll2003", method)
        assert search.grid == {"lr": grid} and (search.search_seeds, search.final_seeds) == (1, 5)
    assert all(len(block.source) > 40 for block in suite.search)


# --- bad input: exit 2, one message naming the field, nothing written --------------------------


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ({"source": "x", "grid": {"learning_rate": [1e-3]}}, "grid key 'learning_rate'"),
        ({"source": "x", "grid": {}}, "'grid' must be a non-empty mapping"),
        ({"source": "x", "grid": {"lr": []}}, "grid key 'lr' is an empty list"),
        ({"source": "x", "grid": {"lr": 1e-3}}, "grid key 'lr' must be a list"),
        ({"source": "x", "grid": {"lr": [1e-3]}, "final_seeds": 0}, "'final_seeds' must be"),
        ({"source": "x", "grid": {"lr": ["fast"]}}, "lr must be float, got 'fast'"),
        ({"source": "x", "grid": {"epochs": [1.5]}}, "epochs must be a positive integer"),
        ({"source": "x", "grid": {"lr": [1e-3]}, "budget": "2"}, "'budget' must be"),
        ({"source": "x", "grid": {"protocol": ["carved"]}}, "grid key 'protocol'"),
        ({"grid": {"lr": [1e-3]}}, "'source' is required"),
        ({"source": "x", "grid": {"lr": [1e-3]}, "seeds": 2}, "unknown key(s) ['seeds']"),
        ({"source": "x", "final_seeds": 7}, "give no 'grid'"),
    ],
)
def test_bad_search_blocks_exit_2_naming_the_field_and_write_nothing(
    search, message, tiny_bert_dir, tiny_data_dir, tmp_path, capsys
) -> None:
    suite = _suite_file(
        tmp_path, {"tasks": ["sst2"], "methods": ["full_finetune"], "search": [search]}
    )
    out = tmp_path / "out"
    for extra in ([], ["--dry-run"]):
        code = main(_run_args(suite, tiny_bert_dir, tiny_data_dir, out, *extra))
        err = capsys.readouterr().err
        assert code == 2, err
        assert message in err and err.count("error:") == 1, err
        assert not out.exists()


def test_sweep_refused_for_another_drivers_lock_writes_no_search_records(
    tiny_bert_dir, tiny_data_dir, tmp_path, capsys
) -> None:
    from bench.sweep import output_lock

    suite = _suite_file(tmp_path, TWO_POINT)
    out = tmp_path / "out"
    with output_lock(out):  # another sweep holds the folder
        code = main(_run_args(suite, tiny_bert_dir, tiny_data_dir, out))
    assert code == 2 and "another sweep" in capsys.readouterr().err
    assert not (out / "searches").exists() and not list(out.rglob("*.json"))


def test_suite_seeds_too_few_for_final_seeds_is_refused(tiny_bert_dir, tiny_data_dir) -> None:
    from bench.runner import PlanRequest, build_sweep

    suite = parse_suite({**TWO_POINT, "seeds": [1]}, "inline")
    request = PlanRequest(
        tasks=["sst2"],
        methods=["full_finetune"],
        seeds=[1],
        backbones=[str(tiny_bert_dir)],
        data_dir=str(tiny_data_dir),
        suite=suite,
    )
    with pytest.raises(UserError, match="final_seeds 2 needs that many seeds"):
        build_sweep(request)


# --- planning -----------------------------------------------------------------------------------


def _sweep(tiny_bert_dir, tiny_data_dir, data: dict, **request):
    from bench.runner import PlanRequest, build_sweep

    values = {
        "tasks": list(data["tasks"]),
        "methods": list(data["methods"]),
        "seeds": [13, 21, 42],
        "backbones": [str(tiny_bert_dir)],
        "data_dir": str(tiny_data_dir),
        "suite": parse_suite(data, "inline"),
        **request,
    }
    return build_sweep(PlanRequest(**values))


def test_search_plan_layers_point_over_settings_and_flags_over_point(
    tiny_bert_dir, tiny_data_dir
) -> None:
    data = {
        **TWO_POINT,
        "settings": [{"source": "s", "method": {"lr": 5e-4}, "train": {"batch_size": 4}}],
        "search": [{"source": "g", "grid": {"lr": [1e-3, 2e-3], "batch_size": [8]}}],
    }
    sweep = _sweep(tiny_bert_dir, tiny_data_dir, data)
    assert [r.method_config["lr"] for r in sweep.search_runs] == [1e-3, 2e-3]  # point > setting
    assert {r.train.batch_size for r in sweep.search_runs} == {8}
    assert [r.seed for r in sweep.search_runs] == [13, 13]  # first search_seeds of the pool
    (cell,) = sweep.cells
    assert cell["final_seeds"] == [13, 21, 42, 87, 100]  # the default 5 final seeds
    flagged = _sweep(tiny_bert_dir, tiny_data_dir, data, method_overrides={"lr": 0.1})
    assert [r.method_config["lr"] for r in flagged.search_runs] == [0.1]  # flag wins, lr dropped
    assert flagged.cells[0]["fixed_by_flags"] == ["lr"]
    explicit = _sweep(tiny_bert_dir, tiny_data_dir, data, explicit_seeds=True, seeds=[5, 6])
    assert explicit.cells[0]["search_seeds"] == [5] and explicit.cells[0]["final_seeds"] == [5, 6]


def test_final_runs_of_a_point_share_keys_with_its_search_runs(
    tiny_bert_dir, tiny_data_dir
) -> None:
    sweep = _sweep(tiny_bert_dir, tiny_data_dir, TWO_POINT)
    for point in sweep.cells[0]["points"]:
        assert point["final_keys"]["13"] == point["search_keys"]["13"]
        assert point["final_keys"]["21"] not in {r.key for r in sweep.search_runs}


# --- protocols ----------------------------------------------------------------------------------


def test_protocols_follow_the_task_and_official_dev_has_its_own_keys(
    tiny_bert_dir, tiny_data_dir
) -> None:
    from bench.protocols import resolve, standard
    from bench.runner import PlanRequest, build_plan
    from tasks import get_task

    assert standard(get_task("conll2003")) == "validation"
    assert standard(get_task("sst2")) == "carved"
    assert resolve("official-dev", get_task("conll2003")) == "validation"  # the NER code's way

    def plan(task: str, **train):
        request = PlanRequest(
            tasks=[task],
            methods=["full_finetune"],
            seeds=[13],
            backbones=[str(tiny_bert_dir)],
            data_dir=str(tiny_data_dir),
            train=train,
        )
        return build_plan(request)[0]

    carved, official = plan("sst2"), plan("sst2", protocol="official-dev")
    assert carved.train.protocol is None and "protocol" not in carved.train.key_dict()
    assert official.train.protocol == "official-dev" and official.key != carved.key
    assert plan("sst2", protocol="carved").key == carved.key  # the same runs
    assert plan("conll2003").train.protocol == "validation"
    assert plan("conll2003", protocol="carved").key != plan("conll2003").key


def test_conll_selects_on_validation_trains_on_all_of_train_and_reports_test(
    tiny_bert_dir, tiny_data_dir, tmp_path
) -> None:
    from bench.runner import PlanRequest, build_plan, run_serial

    (run,) = build_plan(
        PlanRequest(
            tasks=["conll2003"],
            methods=["full_finetune"],
            seeds=[13],
            backbones=[str(tiny_bert_dir)],
            data_dir=str(tiny_data_dir),
            train={"epochs": 1, "batch_size": 8, "max_length": 32},
        )
    )
    (record,) = run_serial([run], tmp_path / "out")
    assert record["status"] == "ok", record.get("error")
    assert record["protocol"]["name"] == "validation"
    sizes = record["sizes"]
    assert sizes["train"] == sizes["train_pool"] == 80  # all of train (tiny CoNLL: 80/20/20)
    assert sizes["selection"] == 20 and sizes["eval_test"] == 20
    assert record["metrics"]["validation"] == record["metrics"]["selection"]
    assert record["best"]["score"] == max(p["selection"]["f1"] for p in record["curve"])
    assert collect.headline(record) == ("test", "f1")


# --- two stages end to end -----------------------------------------------------------------------


def test_two_point_grid_picks_the_better_point_and_reuses_its_search_run(
    tiny_bert_dir, tiny_data_dir, tmp_path, capsys
) -> None:
    suite = _suite_file(tmp_path, TWO_POINT)
    out = tmp_path / "out"
    assert main(_run_args(suite, tiny_bert_dir, tiny_data_dir, out, "--dry-run")) == 0
    dry = capsys.readouterr().out
    assert "0/2 search runs finished" in dry
    assert "still to plan after the searches: 1 final runs" in dry
    assert not out.exists()

    assert main(_run_args(suite, tiny_bert_dir, tiny_data_dir, out)) == 0
    (cell,) = load_cells(out)
    scores = {}
    for point in cell["points"]:
        record = records.read_record(out, point["search_keys"]["13"])
        scores[point["values"]["lr"]] = record["best"]["score"]
    assert scores[1e-3] > scores[1e-6]  # the tiny task is learnable at 1e-3
    winner = next(p for p in cell["points"] if p["values"]["lr"] == 1e-3)
    entries = records.read_index(out)
    assert len(entries) == 3  # 2 search runs + 1 new final run: seed 13 was reused
    assert {e["key"] for e in entries} == {
        *(p["search_keys"]["13"] for p in cell["points"]),
        winner["final_keys"]["21"],
    }

    # Tables and claims read only the winner's final runs.
    collection = collect.load_records(out)
    assert {r["key"] for r in collection.records} == set(winner["final_keys"].values())
    loser = next(p for p in cell["points"] if p is not winner)
    assert collection.set_aside == (loser["search_keys"]["13"],)
    frame = collect.run_frame(collection.records)
    assert set(frame["row"]) == {"full_finetune"} and sorted(frame["seed"]) == [13, 21]

    summary = searches.summarize(out)
    (state,) = summary.states
    assert state.winner.point == {"lr": 1e-3} and state.edge == ["lr=max"]
    assert summary.budgets[(str(tiny_bert_dir), "full_finetune")][0] == 2
    page = searches.to_markdown(summary)
    assert "**Edge of the grid**" in page and "winner" in page and "all 2 grid points" in page

    again = main(_run_args(suite, tiny_bert_dir, tiny_data_dir, out, "--dry-run"))
    assert again == 0
    assert "3 already done; 0 to run" in capsys.readouterr().out


def test_report_of_a_search_writes_the_page_heatmap_and_budget_column(
    tiny_bert_dir, tiny_data_dir, tmp_path
) -> None:
    data = {
        **TWO_POINT,
        "train": {"epochs": 1, "batch_size": 16, "max_length": 16},
        "search": [
            {
                "source": "two keys",
                "grid": {"lr": [1e-3, 3e-3], "weight_decay": [0.0, 0.1]},
                "final_seeds": 1,
                "budget": 3,
                "budget_seed": 7,
            }
        ],
    }
    out = tmp_path / "out"
    suite = _suite_file(tmp_path, data)
    assert main(_run_args(suite, tiny_bert_dir, tiny_data_dir, out)) == 0
    (cell,) = load_cells(out)
    assert cell["budget"] == 3 and cell["budget_seed"] == 7 and len(cell["chosen"]) == 3
    assert (
        cell["chosen"] == Search(grid={"a": (1, 2), "b": (1, 2)}, budget=3, budget_seed=7).chosen()
    )
    assert main(["report", "--results", str(out), "--out", str(tmp_path / "report")]) == 0
    report = tmp_path / "report"
    page = (report / "search.md").read_text()
    assert "budget 3: 3 of 4 grid points, a random subset seeded with 7" in page
    assert "sst2 3/4, budget 3" in page  # the budget each method got, in the budget table
    assert (report / "figures" / "search" / f"{cell['id']}.png").is_file()
    params_md = (report / "tables" / "params.md").read_text()
    assert "tuning budget" in params_md and "3 runs" in params_md
    index = (report / "README.md").read_text()
    assert "search.md" in index and "2 search run(s) that are no winner's final run" in index


def test_sigkill_in_the_final_stage_then_resume_repeats_and_loses_nothing(
    tiny_bert_dir, tiny_data_dir, tmp_path, capsys
) -> None:
    data = {
        **TWO_POINT,
        "train": {"epochs": 1, "batch_size": 8, "max_length": 16},
        "search": [{**TWO_POINT["search"][0], "final_seeds": 3}],
    }
    suite = _suite_file(tmp_path, data)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "bench", *_run_args(suite, tiny_bert_dir, tiny_data_dir, out)]
    fault = [{"fault": "sigkill", "seed": 42, "step": 2}]  # seed 42 runs only in the final stage
    env = {**os.environ, "PEFT_BENCH_FAULTS": json.dumps(fault)}
    killed = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    before = {
        e["key"]: records.read_record(out, e["key"])["started_at"] for e in records.read_index(out)
    }
    assert len(before) == 3  # 2 search runs and the final run of seed 21
    assert main(args[3:]) == 0  # resumed in this process (the fault variable is not set here)
    err = capsys.readouterr().err
    assert "2 runs planned, 2 already done; 0 to run" in err  # the search stage
    assert "2 runs planned, 1 already done; 1 to run" in err  # final stage: 21 done, 42 not
    entries = records.read_index(out)
    assert len(entries) == 4 and all(e["status"] == "ok" for e in entries)
    for key, started in before.items():
        assert records.read_record(out, key)["started_at"] == started  # not re-executed


def test_slurm_no_wait_submits_the_search_then_the_final_stage_later(
    tiny_bert_dir, tiny_data_dir, tmp_path, monkeypatch, capsys
) -> None:
    pytest.importorskip("submitit")
    from test_runner import FAKE_SBATCH

    from bench.runner import run_serial

    bin_dir, spool = tmp_path / "bin", tmp_path / "spool"
    bin_dir.mkdir()
    spool.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH.format(spool=spool))
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    data = {**TWO_POINT, "train": {"epochs": 1, "batch_size": 16, "max_length": 16}}
    out = tmp_path / "out"
    args = _run_args(_suite_file(tmp_path, data), tiny_bert_dir, tiny_data_dir, out)
    args[args.index("serial")] = "slurm"
    args += ["--no-wait", "--gpus-per-run", "0"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "submitted Slurm array 4242 (2 runs)" in captured.out  # the search stage only
    assert "waiting: 1 final run(s)" in captured.err and "run the same command" in captured.err

    # The array's elements finish (run here), then the same command submits the final stage.
    from bench.runner import PlanRequest, build_sweep

    sweep = build_sweep(
        PlanRequest(
            tasks=["sst2"],
            methods=["full_finetune"],
            seeds=[13],
            backbones=[str(tiny_bert_dir)],
            data_dir=str(tiny_data_dir),
            suite=parse_suite(data, "inline"),
        )
    )
    monkeypatch.setattr("bench.executors.slurm.still_queued", lambda output, keys: {})
    run_serial(sweep.search_runs, out)
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "submitted Slurm array 4242 (1 runs)" in captured.out, captured
    assert "winner" in captured.err


@pytest.fixture
def ray_cpus():
    """A local Ray with 2 CPUs and no GPU, shut down afterwards."""
    ray = pytest.importorskip("ray")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_both_stages_run_on_ray(ray_cpus, tiny_bert_dir, tiny_data_dir, tmp_path) -> None:
    data = {**TWO_POINT, "train": {"epochs": 1, "batch_size": 16, "max_length": 16}}
    out = tmp_path / "out"
    args = _run_args(_suite_file(tmp_path, data), tiny_bert_dir, tiny_data_dir, out)
    args[args.index("serial")] = "ray"
    assert main([*args, "--gpus-per-run", "0", "--device", "cpu"]) == 0
    entries = records.read_index(out)
    assert len(entries) == 3  # 2 search runs, then the winner's seed 21
    placements = {records.read_record(out, e["key"])["placement"]["executor"] for e in entries}
    assert placements == {"ray"}
    assert sorted(e["seed"] for e in entries) == [13, 13, 21]


def _fake_cell(cid: str, lrs: list[float], keys: list[str], finals: dict[str, str]) -> dict:
    points = [
        {
            "index": i,
            "values": {"lr": lr},
            "search_keys": {"13": key},
            "final_keys": {"13": key, "21": finals[key]},
        }
        for i, (lr, key) in enumerate(zip(lrs, keys, strict=True))
    ]
    return {
        "id": cid,
        "backbone": "b",
        "backbone_identity": "x",
        "task": "sst2",
        "method": "full_finetune",
        "protocol": "carved",
        "metric": "accuracy",
        "grid": {"lr": lrs},
        "searched_grid": {"lr": lrs},
        "grid_points": len(lrs),
        "chosen": list(range(len(lrs))),
        "search_seeds": [13],
        "final_seeds": [13, 21],
        "points": points,
    }


def test_a_researched_cell_counts_once_with_its_latest_search(tmp_path) -> None:
    scores = {"a1": 0.6, "a2": 0.7, "b1": 0.9, "b2": 0.5}
    finals = {k: f"{k}f" for k in scores}
    for key, score in [*scores.items(), *((f, 0.8) for f in finals.values())]:
        seed = 21 if key.endswith("f") else 13
        stamp = "2026-01-02" if key.startswith("b") else "2026-01-01"
        record = {"key": key, "status": "ok", "task": "sst2", "method": "full_finetune"}
        record |= {"seed": seed, "backbone": "b", "best": {"score": score}, "finished_at": stamp}
        records.atomic_write_json(records.record_path(tmp_path, key), record)
    old = _fake_cell("old", [1e-4, 1e-3], ["a1", "a2"], finals)
    new = _fake_cell("new", [1e-5, 1e-4], ["b1", "b2"], finals)
    from bench.search import write_cells

    write_cells(tmp_path, [old, new])
    collection = collect.load_records(tmp_path)
    assert {r["key"] for r in collection.records} == {"b1", "b1f"}  # the newer search's winner
    assert set(collection.set_aside) == {"a1", "a2", "a1f", "a2f", "b2", "b2f"}
    (state,) = searches.summarize(tmp_path).states
    assert state.cell["id"] == "new" and state.winner.point == {"lr": 1e-5}
    assert state.edge == ["lr=min"]


def test_a_tie_is_reported_and_raises_no_edge_flag() -> None:
    from bench.search import cell_state

    keys = ["t1", "t2", "t3"]
    cell = _fake_cell("tie", [1e-4, 1e-3, 1e-2], keys, {k: f"{k}f" for k in keys})
    found = {k: {"status": "ok", "best": {"score": 0.55}} for k in keys}
    state = cell_state(cell, found.get)
    assert state.winner.index == 0 and state.ties == 3 and state.edge == []
    assert "Tie: 3 points share the best mean" in searches.cell_markdown(state)
    found["t1"] = {"status": "ok", "best": {"score": 0.6}}
    state = cell_state(cell, found.get)
    assert state.ties == 1 and state.edge == ["lr=min"]
    found["t3"] = {"status": "failed"}
    assert not cell_state(cell, found.get).complete  # a failed run can be rerun: still waiting


def test_official_dev_runs_are_labelled_and_never_share_a_cell() -> None:
    def record(key: str, protocol: str | None, seed: int) -> dict:
        train = {"epochs": 1} | ({"protocol": protocol} if protocol else {})
        config = {"method_config": {"lr": 1e-2}, "train": train}
        text = "official-dev: the reported dev split" if protocol else "carved from train"
        return {
            "key": key,
            "status": "ok",
            "task": "rte",
            "method": "p_tuning_v2",
            "seed": seed,
            "backbone": "b",
            "config": config,
            "protocol": {"selection_split": text, "report_splits": ["validation"]},
            "metrics": {"validation": {"accuracy": 0.6}},
        }

    alone = collect.run_frame([record("a", "official-dev", 1)])
    assert list(alone["row"]) == ["p_tuning_v2 [official-dev]"]
    from bench.report import tables

    caption = " ".join(tables.footnote(alone, "b"))
    assert "Selection: official-dev: the reported dev split" in caption
    mixed = collect.run_frame([record("a", "official-dev", 1), record("b", None, 1)])
    assert len(set(mixed["row"])) == 2  # separate rows, hence separate cells and claim rows
    assert any("official-dev" in row for row in mixed["row"])
