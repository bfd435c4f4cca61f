"""SuperGLUE, CoNLL04 and OntoNotes tasks: parsing the original files, the official P-Tuning v2
input formats, label orders against the Hub's, the grouped metrics, the multiple_choice kind
with every method, and bad input (file:line, exit 2, nothing run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from superglue_data import ONTONOTES_SAMPLE, write_tiny_conll04, write_tiny_superglue

from bench import records
from bench.cli import main
from bench.config import TrainConfig
from bench.errors import UserError
from tasks import compute_metrics, get_task, load_task_data, task_names
from tasks.input_formats import INPUT_FORMATS, render_batch, with_input_format
from tasks.loaders import clear_cache

NEW_TASKS = ("boolq", "cb", "copa", "wic", "wsc", "multirc", "record", "superglue_rte")

#: The Hub's ClassLabel names, copied from huggingface/datasets datasets/super_glue/super_glue.py
#: (BUILDER_CONFIGS: cb label_classes [entailment, contradiction, neutral], copa [choice1,
#: choice2], rte [entailment, not_entailment], the default [False, True] for the others) and
#: ontonotes/conll2012_ontonotesv5 (named_entities). ReCoRD has no label column: the official
#: P-Tuning v2 code's label_list is ["0", "1"].
HUB_LABELS = {
    "boolq": ["False", "True"],
    "cb": ["entailment", "contradiction", "neutral"],
    "copa": ["choice1", "choice2"],
    "superglue_rte": ["entailment", "not_entailment"],
    "wic": ["False", "True"],
    "wsc": ["False", "True"],
    "multirc": ["False", "True"],
    "record": ["0", "1"],
}
ONTONOTES_TYPES = ["PERSON", "NORP", "FAC", "ORG", "GPE", "LOC", "PRODUCT", "DATE", "TIME",
                   "PERCENT", "MONEY", "QUANTITY", "ORDINAL", "CARDINAL", "EVENT", "WORK_OF_ART",
                   "LAW", "LANGUAGE"]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_superglue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("superglue-data")
    write_tiny_superglue(root)
    write_tiny_conll04(root)
    return root


def test_every_task_is_registered_in_its_suite() -> None:
    assert set(task_names("superglue")) == set(NEW_TASKS)
    assert {"conll04", "ontonotes"} <= set(task_names("ner"))
    assert get_task("copa").kind.value == "multiple_choice"
    assert get_task("copa").num_labels == 1  # one score per choice


@pytest.mark.parametrize("name", sorted(HUB_LABELS))
def test_label_order_is_the_hubs(name: str) -> None:
    spec = get_task(name)
    assert list(spec.labels) == HUB_LABELS[name]
    assert spec.hub is not None and spec.hub.path == "aps/super_glue"


def test_ontonotes_tag_order_is_the_hubs() -> None:
    tags = ["O"] + [f"{p}-{t}" for t in ONTONOTES_TYPES for p in ("B", "I")]
    assert list(get_task("ontonotes").labels) == tags


def test_input_formats_as_the_official_code() -> None:
    row = {"word": "bank", "sentence1": "A river bank.", "sentence2": "A bank loan."}
    assert INPUT_FORMATS["wic_pair"].render(row) == ("bank: A river bank.", "bank: A bank loan.")
    assert INPUT_FORMATS["wic_question"].render(row) == (
        "A river bank. A bank loan. Does bank have the same meaning in both sentences?",
    )
    wsc = {"text": "Mark told Pete he was late.", "span1_text": "Pete", "span2_text": "he"}
    assert INPUT_FORMATS["wsc_pair"].render(wsc) == ("he: Mark told Pete he was late.", "Pete")
    copa = {"premise": "It rained.", "question": "effect", "choice1": "A", "choice2": "B"}
    effect = [("It rained. so", "A"), ("It rained. so", "B")]
    assert INPUT_FORMATS["copa_choices"].render(copa) == effect
    copa["question"] = "cause"
    assert INPUT_FORMATS["copa_choices"].render(copa)[1] == ("It rained. because", "B")
    multirc = {"paragraph": "P.", "question": "Who?", "answer": "Ann"}
    assert INPUT_FORMATS["multirc_pair"].render(multirc) == ("P.", "Who? Ann")
    record = {"passage": "Text.\n@highlight\nNews", "query": "@placeholder won", "entity": "Ann"}
    assert INPUT_FORMATS["record_filled"].render(record) == ("Text.\n- News", "Ann won")
    batch = {"premise": ["p", "q"], "hypothesis": ["h", "i"]}
    assert render_batch(None, ("premise", "hypothesis"), batch) == [["p", "q"], ["h", "i"]]


def test_input_format_choice_per_run() -> None:
    spec = get_task("wic")
    assert spec.input_format == "wic_question"  # the official default, template_id 0
    assert with_input_format(spec, "wic_pair").input_format == "wic_pair"
    assert with_input_format(spec, None) is spec
    with pytest.raises(UserError, match="offers: wic_question, wic_pair"):
        with_input_format(spec, "wsc_pair")
    with pytest.raises(UserError, match="has no input format 'wic_pair'"):
        with_input_format(get_task("cb"), "wic_pair")
    assert TrainConfig(input_format="wic_pair").key_dict()["input_format"] == "wic_pair"
    assert "input_format" not in TrainConfig().key_dict()  # old run keys stay valid


def test_an_input_format_the_task_lacks_is_refused_at_plan_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = tmp_path / "mine.yaml"
    suite.write_text(
        "tasks: [wic, cb]\nmethods: [full_finetune]\n"
        "settings:\n  - {source: test, train: {input_format: wic_pair}}\n"
    )
    assert main(["run", "--dry-run", "--suite", str(suite), "--seeds", "1"]) == 2
    assert "task 'cb' has no input format 'wic_pair'" in capsys.readouterr().err
    suite.write_text(
        "tasks: [wic, cb]\nmethods: [full_finetune]\n"
        "settings:\n  - {source: test, tasks: [wic], train: {input_format: wic_pair}}\n"
    )
    assert main(["run", "--dry-run", "--suite", str(suite), "--seeds", "1"]) == 0


def test_tiny_files_load_with_fields_and_groups(tiny_superglue: Path) -> None:
    copa = load_task_data(get_task("copa"), tiny_superglue).splits["train"]
    assert copa.column_names == ["premise", "question", "choice1", "choice2", "label"]
    wsc = load_task_data(get_task("wsc"), tiny_superglue).splits["train"][0]
    assert wsc["span2_text"] == "the" and wsc["label"] == 0
    multirc = load_task_data(get_task("multirc"), tiny_superglue).splits["validation"]
    assert len(multirc) == 12 * 2 * 3  # paragraphs x questions x answer options
    assert multirc["group"][:4] == ["0", "0", "0", "1"]
    record = load_task_data(get_task("record"), tiny_superglue).splits["train"]
    first = record.select(range(3)).to_dict()
    assert len(set(first["entity"])) == 3 and sum(first["label"]) == 1
    gold = first["entity"][first["label"].index(1)]
    assert first["answers"] == [[gold]] * 3
    spec = get_task("conll04")
    conll04 = load_task_data(spec, tiny_superglue).splits["test"][0]
    tags = [spec.labels[t] for t in conll04["tags"]]
    assert tags[3].startswith("B-") and tags[:3] + tags[4:] == ["O"] * 5


def test_real_superglue_and_conll04_counts(shared_data: Path) -> None:
    if not (shared_data / "superglue").is_dir():
        pytest.skip("no superglue data")
    sizes = {"cb": (250, 56), "copa": (400, 100), "wic": (5428, 638), "wsc": (554, 104),
             "multirc": (27243, 4848), "superglue_rte": (2490, 277)}  # fmt: skip
    for name, (train, validation) in sizes.items():
        splits = load_task_data(get_task(name), shared_data).splits
        assert (len(splits["train"]), len(splits["validation"])) == (train, validation), name
    cb = load_task_data(get_task("cb"), shared_data).splits["validation"]["label"]
    assert [cb.count(i) for i in range(3)] == [23, 28, 5]  # entailment, contradiction, neutral
    spec = get_task("conll04")
    conll04 = load_task_data(spec, shared_data).splits
    entities = {
        split: sum(spec.labels[t].startswith("B-") for tags in data["tags"] for t in tags)
        for split, data in conll04.items()
    }
    assert entities == {"train": 3377, "validation": 893, "test": 1079}


def test_spert_spans_become_iob2(tmp_path: Path) -> None:
    folder = tmp_path / "conll04"
    folder.mkdir()
    sentence = {"tokens": ["John", "Smith", "of", "Acme", "Corp", "."],
                "entities": [{"type": "Peop", "start": 0, "end": 2},
                             {"type": "Org", "start": 3, "end": 5}]}  # fmt: skip
    for name in ("train", "dev", "test"):
        (folder / f"conll04_{name}.json").write_text(json.dumps([sentence]), encoding="utf-8")
    spec = get_task("conll04")
    tags = load_task_data(spec, tmp_path).splits["train"][0]["tags"]
    assert [spec.labels[t] for t in tags] == ["B-Peop", "I-Peop", "O", "B-Org", "I-Org", "O"]


def test_ontonotes_brackets_become_iob2(tmp_path: Path) -> None:
    folder = tmp_path / "ontonotes"
    folder.mkdir()
    for name in ("train.conll", "development.conll", "test.conll"):
        (folder / name).write_text(ONTONOTES_SAMPLE, encoding="utf-8")
    spec = get_task("ontonotes")
    train = load_task_data(spec, tmp_path).splits["train"]
    assert train["tokens"] == [["John", "Smith", "visited", "Paris", "."], ["He", "left"]]
    assert [[spec.labels[t] for t in row] for row in train["tags"]] == [
        ["B-PERSON", "I-PERSON", "O", "B-GPE", "O"],
        ["O", "O"],
    ]
    broken = ONTONOTES_SAMPLE.replace("*) - - - - *) *) 0)", "*) - - - - * *) 0)")
    (folder / "train.conll").write_text(broken, encoding="utf-8")
    clear_cache()
    with pytest.raises(UserError, match=r"train.conll:5: entity \(GPE opens inside \(PERSON"):
        load_task_data(spec, tmp_path)


@pytest.mark.parametrize("name", ["boolq", "copa", "superglue_rte", "wic", "wsc"])
def test_accuracy_tasks_by_hand(name: str) -> None:
    assert compute_metrics(get_task(name), [0, 1, 1, 0], [0, 1, 0, 0]) == {"accuracy": 0.75}


def test_bad_labels_and_copa_questions_name_file_and_line(tmp_path: Path) -> None:
    write_tiny_superglue(tmp_path)
    cb = tmp_path / "superglue" / "CB" / "val.jsonl"
    lines = cb.read_text(encoding="utf-8").splitlines()
    lines[4] = lines[4].replace('"label": "', '"label": "maybe-')
    cb.write_text("\n".join(lines) + "\n", encoding="utf-8")
    clear_cache()
    with pytest.raises(UserError, match=rf"{cb}:5: label 'maybe-\w+' is not one of"):
        load_task_data(get_task("cb"), tmp_path)
    copa = tmp_path / "superglue" / "COPA" / "train.jsonl"
    lines = copa.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1].replace('"question": "effect"', '"question": "reason"')
    lines[1] = lines[1].replace('"question": "cause"', '"question": "reason"')
    copa.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=rf"{copa}:2: COPA question must be 'cause' or 'effect'"):
        load_task_data(get_task("copa"), tmp_path)
    clear_cache()


def test_cb_macro_f1_by_hand() -> None:
    # refs: e e c n ; preds: e c c e -> per class F1: e 0.5, c 0.667, n 0.0 -> mean 0.3889
    scores = compute_metrics(get_task("cb"), [0, 1, 1, 0], [0, 0, 1, 2])
    assert scores["accuracy"] == pytest.approx(0.5)
    assert scores["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.0) / 3)


def test_multirc_f1a_and_em_by_hand() -> None:
    preds, refs = [1, 0, 1, 1, 0], [1, 0, 0, 1, 0]
    groups = ["q1", "q1", "q2", "q2", "q3"]
    scores = compute_metrics(get_task("multirc"), preds, refs, {"group": groups})
    # positives: tp 2, fp 1, fn 0 -> F1a 0.8; q1 and q3 all right, q2 not -> EM 2/3
    assert scores["f1a"] == pytest.approx(0.8)
    assert scores["em"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="needs context"):
        compute_metrics(get_task("multirc"), preds, refs)


def test_record_best_entity_f1_em_by_hand() -> None:
    context = {
        "group": ["a", "a", "b", "b"],
        "entity": ["The Eiffel Tower", "Paris", "New York", "York"],
        "answers": [["eiffel tower"], ["eiffel tower"], ["New York City"], ["New York City"]],
        "score": [0.9, 0.2, 0.1, 0.7],
    }
    scores = compute_metrics(get_task("record"), [1, 0, 0, 1], [1, 0, 0, 0], context)
    # a: "The Eiffel Tower" == "eiffel tower" after normalization (EM 1, F1 1);
    # b: "York" vs "new york city": precision 1, recall 1/3 -> F1 0.5, EM 0
    assert scores["exact_match"] == pytest.approx(0.5)
    assert scores["f1"] == pytest.approx((1.0 + 0.5) / 2)


def _fake_record_hub(*args: Any, **kwargs: Any) -> Any:
    import datasets

    def split(n: int) -> datasets.Dataset:
        return datasets.Dataset.from_dict(
            {
                "passage": ["Ann met Bob.\n@highlight\nNews"] * n,
                "query": ["@placeholder smiled"] * n,
                "entities": [["Bob", "Ann", "Bob"]] * n,
                "entity_spans": [{"text": ["Ann"], "start": [0], "end": [3]}] * n,
                "answers": [["Ann"]] * n,
                "idx": [{"passage": 0, "query": i} for i in range(n)],
            }
        )

    return datasets.DatasetDict(train=split(2), validation=split(1))


def test_record_hub_rows_expand_per_entity(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", _fake_record_hub)
    clear_cache()
    train = load_task_data(get_task("record"), None).splits["train"].to_dict()
    assert train["entity"] == ["Ann", "Bob", "Ann", "Bob"]
    assert train["label"] == [1, 0, 1, 0]
    assert train["group"] == ["0", "0", "1", "1"]
    assert train["answers"] == [["Ann"]] * 4
    clear_cache()


def test_multiple_choice_with_every_method(tiny_bert_dir: Path) -> None:
    """Each choice gets its own score from the same model: swapping the two choices swaps the
    scores, for every method (prompt methods included), and the loss trains the method."""
    import torch

    from bench.backbones import load_backbone, load_tokenizer, resolve_backbone
    from bench.data import Collator, _encode_choices
    from bench.train import model_logits, task_loss
    from methods import build_method, method_names

    spec = get_task("copa")
    ref = resolve_backbone(str(tiny_bert_dir))
    tokenizer = load_tokenizer(ref, spec)
    batch = {"premise": ["the movie was good", "the plot"], "question": ["cause", "effect"],
             "choice1": ["a great film", "awful acting"], "choice2": ["a boring story", "nice"],
             "label": [0, 1]}  # fmt: skip
    swapped = {**batch, "choice1": batch["choice2"], "choice2": batch["choice1"]}
    collator = Collator(tokenizer)

    def inputs(rows: dict[str, list]) -> dict[str, torch.Tensor]:
        encoded = _encode_choices(rows, spec, tokenizer, 32)
        features = [{k: v[i] for k, v in encoded.items()} | {"index": i} for i in range(2)]
        return collator(features)

    plain, crossed = inputs(batch), inputs(swapped)
    model_inputs = {k: v for k, v in plain.items() if k not in ("labels", "index")}
    crossed_inputs = {k: v for k, v in crossed.items() if k not in ("labels", "index")}
    assert plain["input_ids"].shape[:2] == (2, 2) and plain["labels"].tolist() == [0, 1]
    # peft's own prefix tuning refuses BERT on transformers 5.x whatever the task (DESIGN.md §5)
    variants = [(name, {}) for name in method_names() if name != "peft_prefix_tuning"]
    variants.append(("p_tuning_v2", {"injection": "hidden"}))
    for name, overrides in variants:
        torch.manual_seed(0)
        backbone = load_backbone(ref, spec, tokenizer.pad_token_id)
        model = build_method(name, overrides).attach(backbone, spec).eval()
        with torch.no_grad():
            scores = model_logits(model, model_inputs)
            flipped = model_logits(model, crossed_inputs)
        assert scores.shape == (2, 2), name
        torch.testing.assert_close(scores, flipped.flip(-1), msg=name)
        model.train()
        loss = task_loss("multiple_choice", model_logits(model, model_inputs), plain["labels"])
        loss.backward()
        trained = [p for p in model.parameters() if p.requires_grad]
        assert trained and any(p.grad is not None and p.grad.abs().sum() > 0 for p in trained), name


@pytest.mark.parametrize("task", ["copa", "multirc", "record", "wic", "conll04"])
def test_tiny_run_records_the_task_metrics(
    task: str, tiny_superglue: Path, tiny_bert_dir: Path, tmp_path: Path
) -> None:
    code = main(
        ["run", "--tasks", task, "--methods", "p_tuning_v2", "--backbone", str(tiny_bert_dir),
         "--data-dir", str(tiny_superglue), "--output", str(tmp_path), "--epochs", "1",
         "--batch-size", "8", "--max-length", "48", "--seeds", "13,", "--no-progress",
         "--executor", "serial"]  # fmt: skip
    )
    assert code == 0
    (entry,) = records.read_index(tmp_path)
    record = records.read_record(tmp_path, entry["key"])
    assert record["status"] == "ok"
    expected = {"copa": {"accuracy"}, "multirc": {"f1a", "em", "accuracy"},
                "record": {"f1", "exact_match"}, "wic": {"accuracy"},
                "conll04": {"f1", "precision", "recall", "accuracy"}}  # fmt: skip
    assert set(record["metrics"]["validation"]) == expected[task]


def _corrupt(root: Path, relative: str, line: int, edit) -> Path:
    path = root / relative
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[line - 1] = edit(lines[line - 1])
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _drop(key: str):
    def edit(line: str) -> str:
        row = json.loads(line)
        del row[key]
        return json.dumps(row)

    return edit


def _outside(text: str) -> str:
    sentences = json.loads(text)
    sentences[1]["entities"][0]["end"] = len(sentences[1]["tokens"]) + 2
    return "[\n" + ",\n".join(json.dumps(s) for s in sentences) + "\n]"  # sentence 2: line 3


@pytest.mark.parametrize(
    ("task", "relative", "line", "edit", "message"),
    [
        ("cb", "superglue/CB/train.jsonl", 3, _drop("hypothesis"), "missing field 'hypothesis'"),
        ("copa", "superglue/COPA/val.jsonl", 2, _drop("choice2"), "missing field 'choice2'"),
        ("conll04", "conll04/conll04_dev.json", 1, _outside, "is outside the sentence"),
    ],
)
def test_bad_input_is_file_line_exit_2_nothing_run(
    task: str, relative: str, line: int, edit, message: str, tmp_path: Path, tiny_bert_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    data = tmp_path / "data"
    write_tiny_superglue(data)
    write_tiny_conll04(data)
    path = _corrupt(data, relative, line, edit)
    where = f"{path}:{3 if task == 'conll04' else line}"
    clear_cache()
    out = tmp_path / "out"
    code = main(["run", "--tasks", task, "--methods", "full_finetune", "--backbone",
                 str(tiny_bert_dir), "--data-dir", str(data), "--output", str(out),
                 "--seeds", "13,", "--no-progress", "--executor", "serial"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert where in err and message in err
    assert not out.exists() or not list(out.rglob("*.json"))


def _fake_multirc_hub(*args: Any, **kwargs: Any) -> Any:
    import datasets

    features = datasets.Features(
        {
            "paragraph": datasets.Value("string"),
            "question": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "idx": {
                "paragraph": datasets.Value("int32"),
                "question": datasets.Value("int32"),
                "answer": datasets.Value("int32"),
            },
            "label": datasets.ClassLabel(names=["False", "True"]),
        }
    )
    rows = {
        "paragraph": ["P"] * 3,
        "question": ["Q1", "Q1", "Q2"],
        "answer": ["a", "b", "c"],
        "idx": [{"paragraph": 0, "question": q, "answer": a} for q, a in ((0, 0), (0, 1), (1, 0))],
        "label": [1, 0, 1],
    }
    split = datasets.Dataset.from_dict(rows, features=features)
    return datasets.DatasetDict(train=split, validation=split)


def test_multirc_hub_group_is_the_question_idx(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", _fake_multirc_hub)
    clear_cache()
    train = load_task_data(get_task("multirc"), None).splits["train"].to_dict()
    assert train == {"paragraph": ["P"] * 3, "question": ["Q1", "Q1", "Q2"],
                     "answer": ["a", "b", "c"], "label": [1, 0, 1],
                     "group": ["0", "0", "1"]}  # fmt: skip
    clear_cache()


def _fake_conll04_hub(*args: Any, **kwargs: Any) -> Any:
    import datasets

    split = datasets.Dataset.from_dict(
        {
            "tokens": [["Ann", "Lee", "visited", "Rome"]],
            "entities": [[{"end": 2, "start": 0, "type": "Peop"}, {"end": 4, "start": 3,
                          "type": "Loc"}]],
            "relations": [[]],
            "orig_id": [7],
        }
    )  # fmt: skip
    return datasets.DatasetDict(train=split, validation=split, test=split)


def test_conll04_hub_spans_become_iob2(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", _fake_conll04_hub)
    clear_cache()
    spec = get_task("conll04")
    row = load_task_data(spec, None).splits["test"][0]
    assert row["tokens"] == ["Ann", "Lee", "visited", "Rome"]
    assert [spec.labels[t] for t in row["tags"]] == ["B-Peop", "I-Peop", "O", "B-Loc"]
    clear_cache()
