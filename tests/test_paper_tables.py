"""The paper-ptv2 suite (per-backbone settings, exclusions, sources in the dry run) and the
paper-style table (ours beside published, from fabricated records and published files)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pytest

from bench.cli import main
from bench.errors import UserError
from bench.report import collect, paper, published
from bench.report.build import build_report
from bench.runner import PlanRequest, build_plan
from bench.suites import builtin_suites, parse_suite

REPO = Path(__file__).resolve().parents[1]
NER = {"conll2003", "conll04", "ontonotes"}


def record(
    task: str, method: str, seed: int, score: float, backbone: str, profile: str = "project"
) -> dict[str, Any]:
    """A minimal ok run record: ``score`` (a fraction) as the task's headline metric (entity F1
    on test for NER, accuracy on validation otherwise)."""
    split, metric = ("test", "f1") if task in NER else ("validation", "accuracy")
    return {
        "key": f"{backbone}-{task}-{method}-{seed}-{profile}",
        "task": task,
        "method": method,
        "seed": seed,
        "backbone": backbone,
        "status": "ok",
        "config": {
            "method_config": {"profile": profile},
            "train": {},
            "backbone_identity": f"hub:{backbone}",
        },
        "protocol": {"report_splits": [split], "primary_metric": metric},
        "metrics": {split: {metric: score}},
        "finished_at": "2026-01-01T00:00:00+00:00",
    }


def write_published(folder: Path, name: str, rows: list[dict[str, str]]) -> None:
    folder.mkdir(exist_ok=True)
    with (folder / name).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=published.COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {"source": "s", "protocol": "p", "scale": "percent", "citation": name, **row}
            )


def ref_row(backbone: str, task: str, method: str, value: str, **extra: str) -> dict[str, str]:
    split, metric = ("test", "f1") if task in NER else ("validation", "accuracy")
    return {"backbone": backbone, "task": task, "method": method, "value": value,
            "split": split, "metric": metric, **extra}  # fmt: skip


RECORDS = [
    record("superglue_rte", "p_tuning_v2", 1, 0.87, "roberta-large"),
    record("superglue_rte", "p_tuning_v2", 2, 0.89, "FacebookAI/roberta-large"),
    record("superglue_rte", "full_finetune", 1, 0.80, "roberta-large"),
    record("conll04", "p_tuning_v2", 1, 0.90, "roberta-large"),
    record("boolq", "prompt_tuning", 1, 0.70, "bert-large-cased"),
    record("conll04", "p_tuning_v2", 1, 0.80, "google-bert/bert-large-uncased"),
    record("wic", "p_tuning_v2", 1, 0.60, "minilm"),
    record("superglue_rte", "p_tuning_v2", 1, 0.90, "roberta-large", profile="official"),
    record("sst2", "p_tuning_v2", 1, 0.90, "roberta-large"),  # not a paper column
]


def test_paper_table_puts_ours_beside_published_with_the_difference(tmp_path: Path) -> None:
    folder = tmp_path / "published"
    write_published(
        folder,
        "a_paper.csv",
        [
            ref_row("roberta-large", "superglue_rte", "p_tuning_v2", "85.0"),
            ref_row("roberta-large", "superglue_rte", "full_finetune", "86.0"),
            ref_row("bert-large", "boolq", "prompt_tuning", "67.2", split="test"),
        ],
    )
    write_published(
        folder,
        "b_readme.csv",
        [
            ref_row("roberta-large", "superglue_rte", "p_tuning_v2", "86.6"),  # a_paper wins
            ref_row("roberta-large", "conll04", "p_tuning_v2", "88.4"),
            ref_row("roberta-large", "wsc", "p_tuning_v2", "64.4"),
        ],
    )
    table = paper.build_paper_table(collect.run_frame(RECORDS), published.load_published(folder))
    assert [b for b, _ in table.blocks] == ["BERT-large", "RoBERTa-large", "minilm"]
    assert dict(table.blocks)["RoBERTa-large"] == ("FT", "PT-2", "PT-2 (official)")
    assert [c.task for c in table.columns] == ["boolq", "superglue_rte", "wic", "wsc", "conll04"]

    rte = table.cell("RoBERTa-large", "PT-2", "superglue_rte")
    assert (rte.n, rte.ours, rte.published.file) == (2, pytest.approx(88.0), "a_paper.csv")
    assert rte.delta == pytest.approx(3.0)
    assert paper.cell_text(rte) == "88.0 / 85.0† (+3.0)"
    assert paper.cell_text(table.cell("RoBERTa-large", "FT", "superglue_rte")) == (
        "80.0 / 86.0† (−6.0)"
    )
    assert paper.cell_text(table.cell("RoBERTa-large", "PT-2", "conll04")) == "90.0 / 88.4‡ (+1.6)"
    assert paper.cell_text(table.cell("RoBERTa-large", "PT-2", "wsc")) == "— / 64.4‡"
    # The official profile's row is compared with the same published number.
    official = table.cell("RoBERTa-large", "PT-2 (official)", "superglue_rte")
    assert paper.cell_text(official) == "90.0 / 85.0† (+5.0)"
    assert paper.cell_text(table.cell("RoBERTa-large", "PT-2 (official)", "wsc")) == "— / 64.4‡"
    # A published split that is not our headline split is shown but not compared.
    boolq = table.cell("BERT-large", "PT", "boolq")
    assert not boolq.comparable and paper.cell_text(boolq) == "70.0 / 67.2†"
    # Hub ids and both BERT-large checkpoints land in the paper's BERT-large block.
    assert table.backbones["BERT-large"] == ("bert-large-cased", "google-bert/bert-large-uncased")
    assert paper.cell_text(table.cell("minilm", "PT-2", "wic")) == "60.0"

    text = paper.to_markdown(table)
    header, _, groups, *body = text.splitlines()[:8]
    assert [h.strip() for h in header.split("|")[3:8]] == ["BoolQ", "RTE", "WiC", "WSC", "CoNLL04"]
    assert "*SuperGLUE*" in groups and "*NER*" in groups
    assert groups.index("*NER*") > groups.index("*SuperGLUE*")
    assert body[0].startswith("| BERT-large") and "| 70.0 / 67.2† " in body[0]
    assert "- † `a_paper.csv`: a_paper.csv" in text and "- ‡ `b_readme.csv`" in text

    latex = paper.to_latex(table)
    assert r"\multicolumn{4}{c}{SuperGLUE} & \multicolumn{1}{c}{NER} \\" in latex
    assert r"\cmidrule(lr){3-6} \cmidrule(lr){7-7}" in latex
    assert r"88.0 / 85.0$^{\dagger}$ (+3.0)" in latex and r"(--6.0)" not in latex
    assert r"80.0 / 86.0$^{\dagger}$ ($-$6.0)" in latex

    frame = paper.to_frame(table)
    row = frame[(frame["method"] == "PT-2") & (frame["task"] == "conll04")]
    row = row[row["backbone"] == "RoBERTa-large"].iloc[0]
    assert (row["ours"], row["published"], row["published_file"]) == (90.0, 88.4, "b_readme.csv")
    assert row["ours_minus_published"] == pytest.approx(1.6)
    assert math.isnan(frame[frame["task"] == "wsc"]["ours"].iloc[0])


def test_report_writes_the_paper_table_only_for_paper_tasks(tmp_path: Path) -> None:
    import json

    runs = tmp_path / "results" / "runs"
    runs.mkdir(parents=True)
    for r in RECORDS:
        (runs / f"{r['key'].replace('/', '_')}.json").write_text(json.dumps(r), encoding="utf-8")
    out = tmp_path / "reports"
    build_report(tmp_path / "results", out, published_dir=REPO / "results" / "published",
                 figures=False)  # fmt: skip
    text = (out / "tables" / "paper.md").read_text(encoding="utf-8")
    # The repository's README reproduction (86.6 on RTE, 88.4 on CoNLL04, RoBERTa-large).
    assert "| 88.0 / 86.6† (+1.4)" in text and "90.0 / 88.4† (+1.6)" in text
    assert "README.md lines 81-87" in text and "README.md lines 73-79" in text  # both tables
    assert (out / "tables" / "paper.tex").is_file() and (out / "tables" / "paper.csv").is_file()
    assert "tables/paper.md" in (out / "README.md").read_text(encoding="utf-8")

    for path in runs.glob("*.json"):
        if json.loads(path.read_text(encoding="utf-8"))["task"] != "sst2":
            path.unlink()
    build_report(tmp_path / "results", out, figures=False)
    assert not (out / "tables" / "paper.md").exists()
    assert "tables/paper.md" not in (out / "README.md").read_text(encoding="utf-8")


# --- the suite ------------------------------------------------------------------------------------

SCRIPT_TASKS = {
    "boolq": "boolq",
    "copa": "copa",
    "superglue_rte": "rte",
    "wic": "wic",
    "wsc": "wsc",
    "conll2003": "conll03",
    "conll04": "conll04",
    "ontonotes": "ontonotes",
}


def test_every_official_cell_has_its_script_setting() -> None:
    suite = builtin_suites()["paper-ptv2"]
    assert set(suite.tasks) == set(SCRIPT_TASKS)
    cells = [
        (task, backbone)
        for task in suite.tasks
        for backbone in suite.backbones
        if not suite.excluded(task, "p_tuning_v2", backbone)
    ]
    # 5 SuperGLUE tasks × 2 backbones, CoNLL04 and OntoNotes × 2, CoNLL03 on RoBERTa only.
    assert len(cells) == 15
    for task, backbone in cells:
        script = f"run_{SCRIPT_TASKS[task]}_{backbone.split('-')[0]}.sh"
        own = [
            s
            for s in suite.settings
            if s.tasks == (task,)
            and s.backbones == (backbone,)
            and "p_tuning_v2" in s.methods
            and s.train
            and script in s.source
        ]
        assert len(own) == 1, (task, backbone, own)
        assert {"batch_size", "epochs", "max_length"} <= set(own[0].train)
        assert {"lr", "prompt_length", "prompt_dropout"} <= set(own[0].method)
        assert "(line 6)" in own[0].source and "(line 8)" in own[0].source
        train, method = suite.overrides(task, "p_tuning_v2", backbone)
        assert train["epochs"] == own[0].train["epochs"] and method["injection"] == "kv"
    # WiC on BERT is the one script with --prefix_projection (an MLP generator of width 512).
    assert suite.overrides("wic", "p_tuning_v2", "bert-large-cased")[1]["reparam"] == "mlp"
    assert suite.overrides("wic", "p_tuning_v2", "roberta-large")[1]["reparam"] == "none"
    assert suite.overrides("conll04", "p_tuning_v2", "bert-large-uncased")[1]["lr"] == 2e-2
    # Hub ids match the short names of the settings.
    assert suite.overrides("boolq", "p_tuning_v2", "FacebookAI/roberta-large")[1]["lr"] == 7e-3
    assert suite.excluded("conll2003", "full_finetune", "bert-large-cased")


def _suite(**extra: Any) -> Any:
    data = {
        "name": "t",
        "tasks": ["rte", "sst2"],
        "methods": ["p_tuning_v2", "full_finetune"],
        "seeds": [1],
        "backbones": ["bert-large-cased", "roberta-large"],
        "exclude": [{"reason": "no script", "tasks": ["sst2"], "backbones": ["bert-large-cased"]}],
        "settings": [
            {"source": "shared source", "methods": ["p_tuning_v2"], "method": {"lr": 2e-3}},
            {
                "source": "roberta rte source",
                "tasks": ["rte"],
                "backbones": ["roberta-large"],
                "train": {"epochs": 7},
            },
        ],
        **extra,
    }
    return parse_suite(data, "t.yaml")


def test_backbone_settings_and_exclusions_shape_the_plan() -> None:
    suite = _suite()
    plan = build_plan(
        PlanRequest(
            tasks=suite.tasks,
            methods=suite.methods,
            seeds=suite.seeds,
            backbones=suite.backbones,
            data_dir=None,
            suite=suite,
        )  # fmt: skip
    )
    cells = {(r.task, r.method, r.backbone): r for r in plan}
    assert len(plan) == 6 and ("sst2", "p_tuning_v2", "bert-large-cased") not in cells
    assert cells[("rte", "full_finetune", "roberta-large")].train.epochs == 7
    assert cells[("rte", "full_finetune", "bert-large-cased")].train.epochs == 3
    assert cells[("sst2", "p_tuning_v2", "roberta-large")].method_config["lr"] == 2e-3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"exclude": [{"tasks": ["rte"]}]}, "'reason' is required"),
        ({"exclude": [{"reason": "x", "tasks": ["cola"]}]}, "task(s) ['cola'] are not in"),
        ({"exclude": [{"reason": "x", "method": ["p"]}]}, "unknown key(s) ['method']"),
        ({"exclude": [{"reason": "x", "methods": ["lora"]}]}, "unknown method 'lora'"),
        ({"exclude": {"reason": "x"}}, "'exclude' must be a list"),
        ({"settings": [{"source": "s", "backbones": "roberta"}]}, "'backbones' must be a list"),
    ],
)
def test_bad_exclusions_and_backbone_filters_name_the_problem(extra, message) -> None:
    with pytest.raises(UserError) as error:
        _suite(**extra)
    assert message in str(error.value)


def test_dry_run_lists_each_setting_with_its_source_runs_and_gpu_time(tmp_path, capsys) -> None:
    import yaml

    suite = {
        "name": "t",
        "tasks": ["rte", "conll2003"],
        "methods": ["p_tuning_v2"],
        "seeds": [1, 2],
        "backbones": ["bert-large-cased", "roberta-large"],
        "exclude": [
            {"reason": "no BERT script", "tasks": ["conll2003"], "backbones": ["bert-large-cased"]}
        ],
        "settings": [
            {
                "source": "run_script/run_rte_roberta.sh (line 6)",
                "tasks": ["rte"],
                "backbones": ["roberta-large"],
                "method": {"lr": 5e-3},
            }
        ],
    }
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(suite), encoding="utf-8")
    assert main(["run", "--suite", str(path), "--dry-run", "--output", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    table, _, rest = out.partition("Settings of suite 't'")
    rows = [line.split() for line in table.splitlines()[2:] if line.strip()]
    assert len(rows) == 6  # 2 seeds × (rte on both backbones, conll2003 on RoBERTa only)
    for row in rows:
        task, backbone, settings = row[3], row[6], row[-1]  # after '#', key, stage
        assert settings == ("1" if (task, backbone) == ("rte", "roberta-large") else "-")
    assert "[1] rte × all methods × roberta-large — 2 planned run(s), " in rest
    assert "values: method: lr=0.005" in rest
    assert "source: run_script/run_rte_roberta.sh (line 6)" in rest
    assert "- conll2003 × all methods × bert-large-cased: no BERT script" in rest


def test_a_local_directory_named_after_a_checkpoint_gets_its_settings(tmp_path: Path) -> None:
    suite = builtin_suites()["paper-ptv2"]
    named, other = tmp_path / "roberta-large", tmp_path / "my-model"
    named.mkdir()
    other.mkdir()
    assert suite.overrides("copa", "p_tuning_v2", str(named))[1]["lr"] == 9e-3
    assert "lr" not in suite.overrides("copa", "p_tuning_v2", str(other))[1]
    assert suite.excluded("conll2003", "p_tuning_v2", str(tmp_path / "bert-large-cased")) is None
    (tmp_path / "bert-large-cased").mkdir()
    assert suite.excluded("conll2003", "p_tuning_v2", str(tmp_path / "bert-large-cased"))


def test_copa_search_suite_is_the_official_grid() -> None:
    suite = builtin_suites()["paper-ptv2-copa-search"]
    search = suite.search_for("copa", "p_tuning_v2")
    assert search.grid == {
        "lr": (5e-3, 7e-3, 1e-2),
        "prompt_length": (4, 8, 16, 32, 64, 128),
        "epochs": (20, 40, 60, 80, 100, 120),
    }
    assert (len(search.all_points()), search.search_seeds, search.final_seeds) == (108, 1, 3)
    assert suite.seeds[0] == 11  # the script's --seed 11 is the search seed
    train, method = suite.overrides("copa", "p_tuning_v2", "roberta-large")
    assert (train["batch_size"], train["max_length"], method["prompt_dropout"]) == (16, 128, 0.1)
