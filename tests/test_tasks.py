"""Tests for the ``tasks`` package: schema, registry, local / Hub loading, metrics."""

from __future__ import annotations

import copy
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tasks
from bench.errors import UserError
from tasks import (
    LoadedTask,
    TaskKind,
    TaskSpec,
    compute_metrics,
    get_task,
    load_task_data,
    task_names,
)
from tasks.loaders import clear_cache
from tasks.registry import TASKS_DIR, discover
from tasks.spec import HUB_KEYS, LOCAL_KEYS, SPEC_KEYS, load_spec_file, spec_from_mapping

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("PEFT_BENCH_DATA", REPO_ROOT.parent / "shared" / "data"))
GLUE_DIR = DATA_ROOT / "glue"
NEEDS_DATA = pytest.mark.skipif(
    not (GLUE_DIR.is_dir() and (DATA_ROOT / "conll2003").is_dir()),
    reason=f"offline task data not found at {DATA_ROOT} (set PEFT_BENCH_DATA to its folder)",
)


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    clear_cache()


# --------------------------------------------------------------------------- schema / registry

GLUE_TASKS = ["cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb", "wnli"]


def sst2_mapping() -> dict[str, Any]:
    """A valid task mapping (what yaml.safe_load gives for a task file), to mutate in tests."""
    return {
        "name": "toy",
        "suite": "glue",
        "kind": "classification",
        "description": "A toy task.",
        "text_fields": ["sentence"],
        "labels": ["negative", "positive"],
        "metrics": ["accuracy", "f1"],
        "primary_metric": "accuracy",
        "eval_splits": ["validation"],
        "report_splits": ["validation"],
        "hub": {
            "path": "nyu-mll/glue",
            "name": "sst2",
            "splits": {"train": "train", "validation": "validation"},
            "columns": {"sentence": "sentence", "label": "label"},
        },
        "local": {
            "format": "glue_tsv",
            "subdir": "SST-2",
            "files": {"train": "train.tsv", "validation": "dev.tsv"},
            "header": True,
            "columns": {"sentence": "sentence", "label": "label"},
            "label_values": ["0", "1"],
        },
    }


def test_registry_has_the_twenty_tasks() -> None:
    # supersets: a task YAML dropped into tasks/ must not break this test
    ner = ["conll04", "conll2003", "ontonotes"]
    superglue = ["boolq", "cb", "copa", "multirc", "record", "superglue_rte", "wic", "wsc"]
    assert set(task_names()) >= {*GLUE_TASKS, *ner, *superglue}
    assert set(task_names("glue")) >= set(GLUE_TASKS)
    assert set(task_names("ner")) >= set(ner)
    assert set(task_names("superglue")) >= set(superglue)
    assert set(tasks.suite_names()) >= {"glue", "ner", "superglue"}
    yaml_files = sorted(TASKS_DIR.rglob("*.yaml"))
    assert len(yaml_files) == len(task_names()) >= 20
    for path in yaml_files:
        spec = load_spec_file(path)
        assert spec == get_task(path.stem)
        lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
        assert 10 <= len(lines) <= 27, path  # source comments aside; +2: template, verbalizer


@pytest.mark.parametrize(
    ("name", "labels", "primary", "evals", "reports"),
    [
        ("cola", ("unacceptable", "acceptable"), "matthews_correlation", ["validation"], None),
        ("sst2", ("negative", "positive"), "accuracy", ["validation"], None),
        ("mrpc", ("not_equivalent", "equivalent"), "accuracy", ["validation"], None),
        ("qqp", ("not_duplicate", "duplicate"), "accuracy", ["validation"], None),
        ("stsb", (), "pearson", ["validation"], None),
        (
            "mnli",
            ("entailment", "neutral", "contradiction"),
            "accuracy",
            ["validation_matched", "validation_mismatched"],
            None,
        ),
        ("qnli", ("entailment", "not_entailment"), "accuracy", ["validation"], None),
        ("rte", ("entailment", "not_entailment"), "accuracy", ["validation"], None),
        ("wnli", ("not_entailment", "entailment"), "accuracy", ["validation"], None),
        (
            "conll2003",
            ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"),
            "f1",
            ["validation", "test"],
            ["test"],
        ),
    ],
)
def test_task_definitions(
    name: str, labels: tuple[str, ...], primary: str, evals: list[str], reports: list[str] | None
) -> None:
    spec = get_task(name)
    assert spec.labels == labels
    assert spec.primary_metric == primary
    assert list(spec.eval_splits) == evals
    assert list(spec.report_splits) == (reports or evals)
    assert spec.max_length == 128 and spec.keywords
    assert spec.hub is not None and spec.local is not None
    if spec.suite == "glue":
        assert spec.hub.path == "nyu-mll/glue" and spec.hub.name == name
    assert hash(spec) == hash(load_spec_file(TASKS_DIR / spec.suite / f"{name}.yaml"))


def test_task_kinds_and_fields() -> None:
    assert get_task("stsb").kind is TaskKind.REGRESSION
    assert get_task("stsb").label_range == (0.0, 5.0)
    assert get_task("stsb").num_labels == 1
    assert get_task("mrpc").fields == ("sentence1", "sentence2", "label")
    assert get_task("mrpc").metrics == ("accuracy", "f1")
    ner = get_task("conll2003")
    assert ner.kind is TaskKind.TOKEN_CLASSIFICATION
    assert ner.fields == ("tokens", "tags") and ner.num_labels == 9
    assert ner.to_dict()["hub"]["columns"] == {"tokens": "tokens", "tags": "ner_tags"}


def test_get_task_near_miss_suggests_the_right_name() -> None:
    with pytest.raises(UserError, match=r"unknown task 'sst'; did you mean 'sst2'\?") as info:
        get_task("sst")
    assert "conll2003" in str(info.value)  # the valid names are listed
    with pytest.raises(UserError, match="did you mean 'conll2003'"):
        get_task("conll2030")
    with pytest.raises(UserError, match="unknown suite 'glu'; did you mean 'glue'"):
        task_names("glu")


def test_unknown_key_is_rejected_listing_allowed_keys(tmp_path: Path) -> None:
    path = tmp_path / "toy.yaml"
    path.write_text("name: toy\nmetric: accuracy\n")
    with pytest.raises(UserError) as info:
        load_spec_file(path)
    message = str(info.value)
    assert str(path) in message and "'metric'" in message
    assert "allowed keys: " + ", ".join(SPEC_KEYS) in message

    data = sst2_mapping()
    data["hub"]["config"] = "sst2"
    with pytest.raises(UserError, match="hub: unknown key.*'config'") as info:
        spec_from_mapping(data)
    assert ", ".join(HUB_KEYS) in str(info.value)
    data = sst2_mapping()
    data["local"]["delimiter"] = "\t"
    with pytest.raises(UserError, match="'delimiter'") as info:
        spec_from_mapping(data)
    assert ", ".join(LOCAL_KEYS) in str(info.value)


def _set(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(data)
    *parents, last = dotted.split(".")
    target = data
    for key in parents:
        target = target[key]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return data


DELETE = object()


@pytest.mark.parametrize(
    ("dotted", "value", "expected"),
    [
        ("kind", "clasification", "did you mean 'classification'"),
        ("suite", "Super GLUE", "suite must be lower-case letters"),
        ("metrics", ["acc"], "unknown metric 'acc'; did you mean 'accuracy'"),
        ("metrics", ["pearson"], "metric 'pearson' does not apply to a classification task"),
        ("primary_metric", "matthews_correlation", "primary_metric: unknown metric result"),
        ("eval_splits", ["validation", "test"], "eval_splits names 'test'"),
        ("eval_splits", ["train"], "must not include 'train'"),
        ("report_splits", ["test"], "report_splits names 'test'.*eval_splits provides"),
        ("labels", ["only"], "at least two classes"),
        ("labels", ["a", "a"], "duplicate entries: a"),
        ("label_range", [0, 1], "label_range is only for regression"),
        ("max_length", 0, "max_length must be positive"),
        ("description", "two\nlines", "single line"),
        ("name", "Toy Task", "task name must be"),
        ("text_fields", ["label"], "text field 'label'"),
        ("primary_metric", DELETE, "missing required key.*primary_metric"),
        ("hub.columns", {"sentence": "sentence"}, "hub.columns is missing 'label'"),
        ("hub.splits", {"validation": "validation"}, "must name a 'train' split"),
        ("local.format", "csv", "unknown local format 'csv'"),
        ("local.label_values", [0, 1], "quote it in YAML"),
        ("local.label_values", ["0", "1", "2"], "one raw value per label"),
        ("local.columns", {"sentence": "sentence"}, "local.columns is missing 'label'"),
        ("local.header", False, "headerless files need 0-based indices"),
        ("local.subdir", "../etc", "relative folder name"),
        ("input_format", "nope", "unknown input format 'nope'"),
        ("input_format", "wic_pair", "reads the text field.*word, sentence1, sentence2"),
        ("input_format", "copa_choices", "builds choices; it does not fit a classification"),
        ("input_formats", ["wic_pair"], "are given but no input_format"),
        ("meta_fields", ["grp"], "meta_fields names 'grp'"),
        ("metrics", ["multirc"], "metric 'multirc' reads the column.s. group of every row"),
        ("local.format", "spert_json", "must be omitted for format 'spert_json'"),
        ("hub.expand", "nope", "unknown row expansion 'nope'"),
    ],
)
def test_invalid_specs_are_rejected(dotted: str, value: Any, expected: str) -> None:
    with pytest.raises(UserError, match=expected) as info:
        spec_from_mapping(_set(sst2_mapping(), dotted, value), "toy.yaml")
    assert str(info.value).startswith("toy.yaml: ")


def test_regression_and_ner_specific_validation() -> None:
    stsb = get_task("stsb").to_dict()
    with pytest.raises(UserError, match=r"label_range must be \[low, high\]"):
        spec_from_mapping(_set(stsb, "label_range", None))
    with pytest.raises(UserError, match="low < high"):
        spec_from_mapping(_set(stsb, "label_range", [5, 0]))
    ner = get_task("conll2003").to_dict()
    with pytest.raises(UserError, match="IOB2 tags"):
        spec_from_mapping(_set(ner, "labels", ["O", "PER"]))
    with pytest.raises(UserError, match="must be omitted for format 'conll'"):
        spec_from_mapping(_set(ner, "local.columns", {"tokens": 0, "tags": 3}))
    with pytest.raises(UserError, match="must be one of conll, spert_json, conll2012 for a token"):
        spec_from_mapping(_set(ner, "local.format", "superglue_jsonl"))
    # to_dict round-trips through the builder
    assert spec_from_mapping(stsb) == get_task("stsb")
    assert spec_from_mapping(ner) == get_task("conll2003")


def test_discover_rejects_misnamed_and_duplicate_files(tmp_path: Path) -> None:
    text = (TASKS_DIR / "glue" / "rte.yaml").read_text()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "rte.yaml").write_text(text)
    assert list(discover(tmp_path)) == ["rte"]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "rte.yaml").write_text(text)
    with pytest.raises(UserError, match="task 'rte' is defined twice"):
        discover(tmp_path)
    shutil.rmtree(tmp_path / "b")
    (tmp_path / "a" / "rte2.yaml").write_text(text)
    with pytest.raises(UserError, match="file name must match the task name"):
        discover(tmp_path)


def test_import_does_not_pull_heavy_libraries() -> None:
    code = (
        "import sys, tasks; tasks.task_names(); tasks.get_task('sst2');"
        "heavy = ['torch', 'transformers', 'datasets', 'sklearn', 'scipy', 'seqeval'];"
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


# --------------------------------------------------------------------------- real local data


@NEEDS_DATA
@pytest.mark.parametrize(
    ("name", "train", "validation"),
    [
        ("sst2", 67_349, 872),
        ("cola", 8_551, 1_043),
        ("mrpc", 3_668, 408),
        ("rte", 2_490, 277),
        ("stsb", 5_749, 1_500),
    ],
)
def test_glue_row_counts(name: str, train: int, validation: int) -> None:
    loaded = load_task_data(get_task(name), GLUE_DIR)
    assert {split: len(ds) for split, ds in loaded.splits.items()} == {
        "train": train,
        "validation": validation,
    }
    spec = get_task(name)
    for ds in loaded.splits.values():
        assert ds.column_names == list(spec.fields)
    assert loaded.source == f"local:{GLUE_DIR.resolve() / spec.local.subdir}"
    assert len(loaded.fingerprint) == 64


@NEEDS_DATA
@pytest.mark.parametrize(
    ("name", "counts"),
    [
        ("sst2", {"positive": 444, "negative": 428}),
        ("rte", {"entailment": 146, "not_entailment": 131}),
        ("mrpc", {"equivalent": 279, "not_equivalent": 129}),
    ],
)
def test_glue_dev_label_balance(name: str, counts: dict[str, int]) -> None:
    spec = get_task(name)
    labels = load_task_data(spec, GLUE_DIR).splits["validation"]["label"]
    assert {label: list(labels).count(spec.labels.index(label)) for label in counts} == counts


@NEEDS_DATA
def test_glue_text_and_regression_values() -> None:
    sst2 = load_task_data(get_task("sst2"), GLUE_DIR).splits["validation"][0]
    assert sst2 == {"sentence": "it 's a charming and often affecting journey . ", "label": 1}
    mrpc = load_task_data(get_task("mrpc"), GLUE_DIR).splits["validation"][0]
    assert mrpc["sentence2"].startswith('"The foodservice pie')  # quote kept (QUOTE_NONE)
    cola = load_task_data(get_task("cola"), GLUE_DIR).splits["validation"][0]
    assert cola == {"sentence": "The sailors rode the breeze clear of the rocks.", "label": 1}
    stsb = load_task_data(get_task("stsb"), GLUE_DIR).splits["validation"]
    assert stsb[0]["label"] == 5.0 and stsb[1]["label"] == pytest.approx(4.75)
    assert all(0.0 <= value <= 5.0 for value in stsb["label"])
    qnli = load_task_data(get_task("qnli"), GLUE_DIR, splits=["validation"])
    assert list(qnli.splits) == ["validation"] and len(qnli.splits["validation"]) == 5_463


@NEEDS_DATA
def test_conll_sentence_and_entity_counts() -> None:
    spec = get_task("conll2003")
    loaded = load_task_data(spec, DATA_ROOT)  # found under DATA_ROOT/conll2003
    expected = {"train": (14_041, 23_499), "validation": (3_250, 5_942), "test": (3_453, 5_648)}
    begin = {i for i, tag in enumerate(spec.labels) if tag.startswith("B-")}
    for split, (sentences, entities) in expected.items():
        ds = loaded.splits[split]
        assert ds.column_names == ["tokens", "tags"]
        assert len(ds) == sentences
        assert sum(tag in begin for tags in ds["tags"] for tag in tags) == entities
        assert all(len(t) == len(g) for t, g in zip(ds["tokens"], ds["tags"], strict=True))
    assert loaded.splits["train"][0]["tokens"][:3] == ["EU", "rejects", "German"]
    assert loaded.splits["train"][0]["tags"][:3] == [3, 0, 7]  # B-ORG, O, B-MISC


@NEEDS_DATA
def test_suite_subfolder_fallback_and_cache(tmp_path: Path) -> None:
    spec = get_task("cola")
    via_root = load_task_data(spec, DATA_ROOT)  # DATA_ROOT/glue/CoLA
    direct = load_task_data(spec, GLUE_DIR)  # GLUE_DIR/CoLA
    assert via_root.source == direct.source and via_root.fingerprint == direct.fingerprint
    again = load_task_data(spec, GLUE_DIR)
    assert again.splits["train"] is direct.splits["train"]  # cached
    assert again.splits is not direct.splits  # ... but each caller gets its own dict

    copy_dir = tmp_path / "CoLA"
    copy_dir.mkdir()
    for name in ("train.tsv", "dev.tsv"):
        shutil.copy(GLUE_DIR / "CoLA" / name, copy_dir / name)
    copied = load_task_data(spec, tmp_path)
    assert copied.fingerprint == direct.fingerprint  # same bytes, other path
    assert copied.source == f"local:{copy_dir.resolve()}"
    with (copy_dir / "dev.tsv").open("a") as handle:
        handle.write("\nxx\t0\t*\tAn extra sentence.\n")
    edited = load_task_data(spec, tmp_path)  # file changed: read again
    assert len(edited.splits["validation"]) == 1_044
    assert edited.fingerprint != direct.fingerprint


# --------------------------------------------------------------------------- local error cases


def write_sst2(
    root: Path, train: str | bytes, dev: str | bytes | None = "sentence\tlabel\nok\t1\n"
):
    folder = root / "SST-2"
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in (("train.tsv", train), ("dev.tsv", dev)):
        if content is None:
            continue
        data = content.encode() if isinstance(content, str) else content
        (folder / name).write_bytes(data)
    return folder


def load_error(spec: TaskSpec, data_dir: Path) -> str:
    with pytest.raises(UserError) as info:
        load_task_data(spec, data_dir)
    return str(info.value)


def test_small_glue_file_parses(tmp_path: Path) -> None:
    write_sst2(tmp_path, 'sentence\tlabel\r\na "quoted\t0\r\n\r\n  \n' + "fine\t1\n", dev=None)
    loaded = load_task_data(get_task("sst2"), tmp_path, splits="train")
    assert loaded.splits["train"].to_dict() == {"sentence": ['a "quoted', "fine"], "label": [0, 1]}
    assert isinstance(loaded, LoadedTask)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    spec = get_task("sst2")
    folder = write_sst2(tmp_path, "sentence\tlabel\nok\t1\n", dev=None)
    message = load_error(spec, tmp_path)
    assert f"expected {folder.resolve() / 'dev.tsv'}" in message
    assert "task 'sst2'" in message and "split 'validation'" in message
    message = load_error(spec, tmp_path / "nowhere")
    assert f"{tmp_path / 'nowhere'} does not exist" in message
    assert str(tmp_path / "nowhere" / "SST-2" / "train.tsv") in message


def test_malformed_row_names_file_and_line(tmp_path: Path) -> None:
    folder = write_sst2(tmp_path, "sentence\tlabel\ngood\t1\n\nno label here\n")
    message = load_error(get_task("sst2"), tmp_path)
    assert f"{folder.resolve() / 'train.tsv'}:4:" in message
    assert "expected at least 2 tab-separated fields, found 1" in message


def test_unknown_label_names_value_and_allowed(tmp_path: Path) -> None:
    folder = write_sst2(tmp_path, "sentence\tlabel\ngood\t1\nbad\tpositive\n")
    message = load_error(get_task("sst2"), tmp_path)
    assert f"{folder.resolve() / 'train.tsv'}:3:" in message
    assert "'positive'" in message and "'0', '1'" in message


def test_non_utf8_file(tmp_path: Path) -> None:
    folder = write_sst2(tmp_path, "sentence\tlabel\ncaf\xe9\t1\n".encode("latin-1"))
    message = load_error(get_task("sst2"), tmp_path)
    assert f"{folder.resolve() / 'train.tsv'}:2: not valid UTF-8" in message


def test_empty_file_and_header_only_file(tmp_path: Path) -> None:
    folder = write_sst2(tmp_path, "")
    assert f"{folder.resolve() / 'train.tsv'} is empty" in load_error(get_task("sst2"), tmp_path)
    write_sst2(tmp_path, "sentence\tlabel\n\n")
    message = load_error(get_task("sst2"), tmp_path)
    assert f"{folder.resolve() / 'train.tsv'} has no examples" in message


def test_missing_header_column(tmp_path: Path) -> None:
    folder = write_sst2(tmp_path, "text\tlabel\ngood\t1\n")
    message = load_error(get_task("sst2"), tmp_path)
    assert f"{folder.resolve() / 'train.tsv'}:1: header has no column 'sentence'" in message
    assert "columns present: text, label" in message


def test_bom_header_and_headerless_index_columns(tmp_path: Path) -> None:
    mrpc = tmp_path / "MRPC"
    mrpc.mkdir()
    header = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    (mrpc / "train.tsv").write_text(header + "1\t1\t2\tA cat.\tA feline.\n", encoding="utf-8")
    (mrpc / "dev.tsv").write_text(header + "0\t3\t4\tYes.\tNo.\n", encoding="utf-8")
    loaded = load_task_data(get_task("mrpc"), tmp_path)
    assert loaded.splits["train"][0] == {
        "sentence1": "A cat.",
        "sentence2": "A feline.",
        "label": 1,
    }
    assert loaded.splits["validation"][0]["label"] == 0

    cola = tmp_path / "CoLA"
    cola.mkdir()
    (cola / "train.tsv").write_text("src\t0\t*\tBad sentence the.\nsrc\t1\t\tGood.\n")
    (cola / "dev.tsv").write_text("src\t1\t\n")  # 3 fields: the sentence (index 3) is missing
    message = load_error(get_task("cola"), tmp_path)
    assert (
        f"{(cola / 'dev.tsv').resolve()}:1: expected at least 4" in message and "found 3" in message
    )


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        ("high", "score 'high' is not a number"),
        ("5.5", "score '5.5' is outside the range [0.0, 5.0]"),
    ],
)
def test_regression_scores_are_checked(tmp_path: Path, score: str, expected: str) -> None:
    folder = tmp_path / "STS-B"
    folder.mkdir()
    header = (
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    )
    row = "0\tg\tf\ty\t0\tn\tn\tA.\tB.\t{}\n"
    (folder / "train.tsv").write_text(header + row.format("3.5") + row.format(score))
    (folder / "dev.tsv").write_text(header + row.format("1.0"))
    message = load_error(get_task("stsb"), tmp_path)
    assert f"{(folder / 'train.tsv').resolve()}:3: {expected}" in message


def test_conll_parsing_and_errors(tmp_path: Path) -> None:
    folder = tmp_path / "conll2003"
    folder.mkdir()
    good = "-DOCSTART- -X- -X- O\n\nJohn NNP B-NP B-PER\nSmith NNP I-NP I-PER\n\n\nhi UH B-INTJ O\n"
    for name in ("train.txt", "valid.txt", "test.txt"):
        (folder / name).write_text(good)
    loaded = load_task_data(get_task("conll2003"), tmp_path)
    assert loaded.splits["test"].to_dict() == {
        "tokens": [["John", "Smith"], ["hi"]],
        "tags": [[1, 2], [0]],
    }
    (folder / "valid.txt").write_text("John NNP B-NP B-PERSON\n")
    message = load_error(get_task("conll2003"), tmp_path)
    assert f"{(folder / 'valid.txt').resolve()}:1: tag 'B-PERSON'" in message and "B-PER" in message
    (folder / "valid.txt").write_text("John B-PER\n\nlonely\n")
    message = load_error(get_task("conll2003"), tmp_path)
    assert f"{(folder / 'valid.txt').resolve()}:3: expected a token and a tag" in message
    (folder / "valid.txt").write_text("-DOCSTART- -X- -X- O\n\n")
    assert "has no sentences" in load_error(get_task("conll2003"), tmp_path)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    content=st.binary(max_size=60)
    | st.lists(st.text(alphabet='ab01\t\r\n "\u2028', max_size=12), max_size=5).map(
        lambda rows: ("sentence\tlabel\n" + "\n".join(rows)).encode()
    )
)
def test_arbitrary_tsv_content_loads_or_is_a_user_error(tmp_path: Path, content: bytes) -> None:
    clear_cache()
    write_sst2(tmp_path, content)
    try:
        loaded = load_task_data(get_task("sst2"), tmp_path)
    except UserError as error:
        assert str(tmp_path.resolve() / "SST-2" / "train.tsv") in str(error)
        return
    labels = loaded.splits["train"]["label"]
    assert len(labels) > 0 and set(labels) <= {0, 1}


def test_unknown_split_and_missing_source(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown split 'valid'; did you mean 'validation'"):
        load_task_data(get_task("sst2"), tmp_path, splits=["valid"])
    hubless = spec_from_mapping(_set(sst2_mapping(), "hub", None))
    with pytest.raises(UserError, match="has no Hugging Face Hub source; pass --data-dir"):
        load_task_data(hubless, None)


# --------------------------------------------------------------------------- Hub (faked)


def fake_glue_rte(path: str, name: str | None = None, revision: str | None = None) -> Any:
    """A stand-in for datasets.load_dataset: RTE with labels in REVERSED order, and a test
    split of unlabelled (-1) rows."""
    import datasets

    assert (path, name, revision) == ("nyu-mll/glue", "rte", None)
    features = datasets.Features(
        {
            "sentence1": datasets.Value("string"),
            "sentence2": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["not_entailment", "entailment"]),
            "idx": datasets.Value("int32"),
        }
    )

    def make(labels: list[int]) -> datasets.Dataset:
        rows = {
            "sentence1": [f"p{i}" for i in range(len(labels))],
            "sentence2": [f"h{i}" for i in range(len(labels))],
            "label": labels,
            "idx": list(range(len(labels))),
        }
        return datasets.Dataset.from_dict(rows, features=features)

    return datasets.DatasetDict(
        train=make([0, 1, 1]), validation=make([1, -1, 0]), test=make([-1, -1])
    )


def test_hub_labels_are_mapped_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", fake_glue_rte)
    spec = get_task("rte")  # labels: [entailment, not_entailment]
    loaded = load_task_data(spec, None)
    assert loaded.source == "hub:nyu-mll/glue/rte"
    assert loaded.splits["train"].to_dict() == {
        "sentence1": ["p0", "p1", "p2"],
        "sentence2": ["h0", "h1", "h2"],
        "label": [1, 0, 0],
    }
    assert loaded.splits["validation"]["label"] == [0, 1]  # the -1 row is dropped
    assert loaded.splits["train"].features["label"].names == list(spec.labels)
    clear_cache()
    assert load_task_data(spec, None).fingerprint == loaded.fingerprint


def test_hub_label_names_that_disagree_are_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", fake_glue_rte)
    wrong = get_task("rte").to_dict()
    wrong["labels"] = ["yes", "no"]
    wrong["verbalizer"] = {"yes": "Yes", "no": "No"}  # the verbalizer follows the labels
    with pytest.raises(UserError) as info:
        load_task_data(spec_from_mapping(wrong), None)
    assert "['not_entailment', 'entailment']" in str(info.value)
    assert "['yes', 'no']" in str(info.value)


def test_hub_failure_becomes_an_offline_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def offline(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError) as info:
        load_task_data(get_task("sst2"), None)
    assert str(info.value) == (
        "could not load task 'sst2' from the Hugging Face Hub (nyu-mll/glue, config sst2):"
        " Couldn't reach 'nyu-mll/glue' on the Hub. If you are offline, pass --data-dir DIR"
        " with the original GLUE layout (DIR/SST-2/train.tsv, DIR/SST-2/dev.tsv)"
    )


# --------------------------------------------------------------------------- metrics


def test_classification_metrics_by_hand() -> None:
    refs = [1, 1, 0, 0, 1]
    preds = [1, 0, 0, 1, 1]  # TP=2 FN=1 TN=1 FP=1
    assert compute_metrics(get_task("mrpc"), preds, refs) == pytest.approx(
        {"accuracy": 3 / 5, "f1": 2 / 3}
    )
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2 - 1) / sqrt(3*3*2*2)
    assert compute_metrics(get_task("cola"), preds, refs) == pytest.approx(
        {"matthews_correlation": 1 / 6}
    )
    three_way = compute_metrics(get_task("mnli"), [0, 1, 2, 2], [0, 1, 1, 2])
    assert three_way == {"accuracy": 0.75} and isinstance(three_way["accuracy"], float)


def test_regression_metrics_by_hand() -> None:
    # x = 1..4, y = [1, 9, 4, 16]: ranks of y are [1, 3, 2, 4], so spearman = pearson(x, ranks)
    # = sum(dx*dr) / sum(dx^2) = (2.25 - 0.25 - 0.25 + 2.25) / 5 = 0.8
    x, y = [1.0, 2.0, 3.0, 4.0], [1.0, 9.0, 4.0, 16.0]
    result = compute_metrics(get_task("stsb"), y, x)
    assert result["spearmanr"] == pytest.approx(0.8)
    # pearson: dy = [-6.5, 1.5, -3.5, 8.5]; sum(dx*dy) = 9.75 - 0.75 - 1.75 + 12.75 = 20;
    # sum(dy^2) = 42.25 + 2.25 + 12.25 + 72.25 = 129; r = 20 / sqrt(5 * 129)
    assert result["pearson"] == pytest.approx(20 / math.sqrt(5 * 129))
    assert list(result) == ["pearson", "spearmanr"]


def test_seqeval_partial_entity_match() -> None:
    spec = get_task("conll2003")
    refs = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    preds = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "O"]]
    # entities: gold PER(0-1), LOC(3), ORG(0); predicted PER(0), LOC(3), ORG(0)
    # the PER span is only partly found -> TP=2 of 3 predicted and 3 gold entities
    result = compute_metrics(spec, preds, refs)
    assert result == pytest.approx(
        {"f1": 2 / 3, "precision": 2 / 3, "recall": 2 / 3, "accuracy": 5 / 6}
    )


def test_degenerate_metric_inputs() -> None:
    assert compute_metrics(get_task("cola"), [1, 1, 1], [0, 1, 1]) == {"matthews_correlation": 0.0}
    assert compute_metrics(get_task("mrpc"), [0, 0], [0, 0]) == {"accuracy": 1.0, "f1": 0.0}
    constant = compute_metrics(get_task("stsb"), [2.0, 2.0, 2.0], [1.0, 2.0, 3.0])
    assert math.isnan(constant["pearson"]) and math.isnan(constant["spearmanr"])
    single = compute_metrics(get_task("stsb"), [2.0], [1.0])
    assert math.isnan(single["pearson"])
    no_entities = compute_metrics(get_task("conll2003"), [["O", "O"]], [["O", "O"]])
    assert no_entities == {"f1": 0.0, "precision": 0.0, "recall": 0.0, "accuracy": 1.0}


@pytest.mark.parametrize(
    ("name", "preds", "refs", "expected"),
    [
        ("sst2", [], [], "no predictions"),
        ("sst2", [1], [1, 0], "1 predictions for 2 references"),
        ("sst2", [2], [1], r"not a class index in \[0, 2\)"),
        ("sst2", [0.5], [1], "must be a class index"),
        ("conll2003", [["O"]], [["O", "O"]], "1 predicted tags for 2 reference tags"),
        ("conll2003", [[1]], [["O"]], "unknown tag"),
    ],
)
def test_bad_metric_inputs_are_value_errors(
    name: str, preds: list[Any], refs: list[Any], expected: str
) -> None:
    with pytest.raises(ValueError, match=expected):
        compute_metrics(get_task(name), preds, refs)
