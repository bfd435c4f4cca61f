"""``load_task_data``: a task's splits as ``datasets.Dataset``s, from a local directory or the Hub.

Every split has the columns ``spec.fields``:

- classification and multiple choice: each text field (``string``) and ``label``
  (``ClassLabel`` over ``spec.labels``, read as an ``int`` class index), then the meta fields
  (``group``: ``string``; ``answers``: list of strings);
- regression: each text field and ``label`` (``float32``);
- token classification: ``tokens`` (list of strings) and ``tags`` (list of ``ClassLabel``
  indices into ``spec.labels``).

Results are cached in-process (a sweep loads the same task many times); local entries are keyed
by the files' paths, sizes and modification times, so an edited file is read again.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.errors import UserError, unknown_name_error

from .spec import TaskKind, TaskSpec

if TYPE_CHECKING:
    import datasets

FileStamp = tuple[str, str, int, int]  # split, absolute path, mtime_ns, size


@dataclass(frozen=True, eq=False)
class LoadedTask:
    """A task's data as loaded: ``splits`` maps split name -> ``datasets.Dataset``.

    ``source`` says where it came from (``local:/abs/dir/SST-2`` or ``hub:nyu-mll/glue/sst2``);
    ``fingerprint`` is a sha256 hex digest of the content loaded (the local files' bytes, or the
    Hub datasets' fingerprints), equal on two machines holding the same data.
    """

    spec: TaskSpec
    splits: dict[str, datasets.Dataset]
    source: str
    fingerprint: str

    def __post_init__(self) -> None:
        if not isinstance(self.spec, TaskSpec):
            raise TypeError(f"spec must be a TaskSpec, got {type(self.spec).__name__}")
        if not self.splits:
            raise ValueError(f"task '{self.spec.name}': a LoadedTask needs at least one split")


def features_for(spec: TaskSpec) -> datasets.Features:
    """The ``datasets.Features`` every split of ``spec`` is cast to."""
    import datasets

    if spec.kind is TaskKind.TOKEN_CLASSIFICATION:
        return datasets.Features(
            {
                "tokens": datasets.List(datasets.Value("string")),
                "tags": datasets.List(datasets.ClassLabel(names=list(spec.labels))),
            }
        )
    label = (
        datasets.Value("float32")
        if spec.kind is TaskKind.REGRESSION
        else datasets.ClassLabel(names=list(spec.labels))
    )
    meta = {
        name: datasets.List(datasets.Value("string"))
        if name == "answers"
        else datasets.Value("string")
        for name in spec.meta_fields
    }
    return datasets.Features(
        {**{name: datasets.Value("string") for name in spec.text_fields}, "label": label, **meta}
    )


def _wanted_splits(
    spec: TaskSpec, available: Sequence[str], splits: Sequence[str] | None, what: str
) -> tuple[str, ...]:
    if splits is None:
        return tuple(available)
    if isinstance(splits, str):
        splits = [splits]
    for split in splits:
        if split not in available:
            error = unknown_name_error("split", split, available)
            raise UserError(f"task '{spec.name}' ({what}): {error}")
    return tuple(dict.fromkeys(splits))


def _locate_dir(spec: TaskSpec, root: Path, first_file: str) -> Path:
    """``root/<subdir>``, or ``root/<suite>/<subdir>`` when only that one exists."""
    assert spec.local is not None
    direct = root / spec.local.subdir
    nested = root / spec.suite / spec.local.subdir
    if direct.is_dir() or not nested.is_dir():
        if not root.is_dir():
            raise UserError(
                f"data directory {root} does not exist (task '{spec.name}' expects"
                f" {direct / first_file})"
            )
        return direct
    return nested


def _stamp_files(spec: TaskSpec, root: Path, splits: Sequence[str]) -> tuple[FileStamp, ...]:
    assert spec.local is not None
    folder = _locate_dir(spec, root, spec.local.files[splits[0]])
    stamps = []
    for split in splits:
        # a file may name its own folder, relative to the task's: ../SST-2-heldout/test.tsv
        path = Path(os.path.normpath(folder / spec.local.files[split]))  # links not followed
        if not path.is_relative_to(root):
            raise UserError(
                f"task '{spec.name}' split '{split}': local file {spec.local.files[split]!r} "
                f"resolves to {path}, outside the data directory {root}"
            )
        if not path.is_file():
            nested = root / spec.suite / spec.local.subdir / spec.local.files[split]
            also = f" (also looked for {nested})" if folder != nested.parent else ""
            raise UserError(
                f"missing data file for task '{spec.name}' (split '{split}'): expected {path}{also}"
            )
        stat = path.stat()
        stamps.append((split, str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(stamps)


@functools.lru_cache(maxsize=32)
def _load_local(spec: TaskSpec, stamps: tuple[FileStamp, ...]) -> LoadedTask:
    import datasets

    from .local_files import PARSERS, read_text

    assert spec.local is not None
    parse = PARSERS[spec.local.format]
    features = features_for(spec)
    digest = hashlib.sha256()
    splits: dict[str, datasets.Dataset] = {}
    for split, name, _, _ in stamps:
        path = Path(name)
        data, text = read_text(path, spec, split)
        digest.update(f"{split}\0{len(data)}\0".encode())
        digest.update(data)
        splits[split] = datasets.Dataset.from_dict(parse(spec, path, text), features=features)
    source = f"local:{Path(stamps[0][1]).parent}"
    return LoadedTask(spec, splits, source, digest.hexdigest())


@functools.lru_cache(maxsize=32)
def _load_hub(spec: TaskSpec, splits: tuple[str, ...]) -> LoadedTask:
    from .hub import load_from_hub

    assert spec.hub is not None
    loaded, fingerprint = load_from_hub(spec, splits, features_for(spec))
    name = f"/{spec.hub.name}" if spec.hub.name else ""
    revision = f"@{spec.hub.revision}" if spec.hub.revision else ""
    return LoadedTask(spec, loaded, f"hub:{spec.hub.path}{name}{revision}", fingerprint)


def local_files(
    spec: TaskSpec, data_dir: str | Path, splits: Sequence[str] | None = None
) -> dict[str, Path]:
    """The local file of each split (``UserError`` naming the expected path when one is missing)."""
    if spec.local is None:
        raise UserError(f"task '{spec.name}' has no local source; run it without --data-dir")
    wanted = _wanted_splits(spec, list(spec.local.files), splits, "local.files")
    root = Path(data_dir).expanduser().resolve()
    return {split: Path(path) for split, path, _, _ in _stamp_files(spec, root, wanted)}


def load_task_data(
    spec: TaskSpec, data_dir: str | Path | None, splits: Sequence[str] | None = None
) -> LoadedTask:
    """Load ``spec``'s splits: from ``data_dir`` (original GLUE / CoNLL layout) when given,
    else from the Hugging Face Hub.

    ``splits`` restricts loading to some of the splits the source names (default: all of
    them, in the order the task file lists them). Files are looked up as
    ``DATA_DIR/<subdir>/<file>``, falling back to ``DATA_DIR/<suite>/<subdir>/<file>``.
    Every problem with the data is a ``UserError`` naming the file (and line) at fault.
    """
    if not isinstance(spec, TaskSpec):
        raise TypeError(f"spec must be a TaskSpec, got {type(spec).__name__}")
    if data_dir is None:
        if spec.hub is None:
            raise UserError(
                f"task '{spec.name}' has no Hugging Face Hub source; pass --data-dir DIR"
            )
        wanted = _wanted_splits(spec, list(spec.hub.splits), splits, "hub.splits")
        loaded = _load_hub(spec, wanted)
    else:
        if spec.local is None:
            raise UserError(
                f"task '{spec.name}' has no local source; run it without --data-dir"
                " to load it from the Hugging Face Hub"
            )
        wanted = _wanted_splits(spec, list(spec.local.files), splits, "local.files")
        root = Path(data_dir).expanduser().resolve()
        loaded = _load_local(spec, _stamp_files(spec, root, wanted))
    # a fresh dict per call, so one caller's edits cannot leak into the cache
    return dataclasses.replace(loaded, splits=dict(loaded.splits))


def clear_cache() -> None:
    """Forget every cached :class:`LoadedTask` (tests, or after replacing files in place)."""
    _load_local.cache_clear()
    _load_hub.cache_clear()
