"""A newcomer's first hour (issue 19): rows keyed on what changes results, bad input refused
before anything is written, readable records, progress and the closing summary."""

from __future__ import annotations

from tests.test_report import record


def test_result_neutral_and_absent_train_keys_do_not_split_rows() -> None:
    """An old record lacks the keys added later; a new one has them at their defaults or sets a
    result-neutral one (activation checkpointing): all are the same row."""
    from bench.report import collect

    old = record("sst2", "p_tuning_v2", 13, 0.90)
    new = record(
        "sst2",
        "p_tuning_v2",
        21,
        0.91,
        train={"activation_checkpointing": True, "compile": False, "group_by_length": False},
    )
    del old["config"]["method_config"]["lr"]  # a method field the old record never had
    frame = collect.run_frame([old, new])
    assert collect.ordered_rows(frame) == ["p_tuning_v2"]
    grouped = record("sst2", "p_tuning_v2", 42, 0.92, train={"group_by_length": True})
    rows = collect.ordered_rows(collect.run_frame([old, new, grouped]))
    assert rows == [
        "p_tuning_v2 [train.group_by_length=False]",
        "p_tuning_v2 [train.group_by_length=True]",
    ]
