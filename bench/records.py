"""Run records: one JSON file per run (``runs/<key>.json``) plus an append-only JSONL index.

A record is written atomically (temporary file, fsync, rename), so a crash never leaves a torn
record and never damages an existing one. Index lines are appended whole; a torn last line (a
process killed mid-write) is skipped on read.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
PACKAGES = (
    "torch",
    "transformers",
    "datasets",
    "tokenizers",
    "scikit-learn",
    "scipy",
    "seqeval",
    "numpy",
    "peft",
)
STATUS_OK = "ok"


def runs_dir(output: Path) -> Path:
    return output / "runs"


def record_path(output: Path, key: str) -> Path:
    return runs_dir(output) / f"{key}.json"


def delta_path(output: Path, key: str) -> Path:
    return output / "deltas" / f"{key}.safetensors"


def index_path(output: Path) -> Path:
    return output / "index.jsonl"


def running_path(output: Path, key: str) -> Path:
    """Marker of a run in progress (where it runs); removed when its record is written."""
    return output / "running" / f"{key}.json"


def log_path(output: Path, key: str) -> Path:
    return output / "logs" / f"{key}.log"


def checkpoint_dir(output: Path, key: str) -> Path:
    return output / "checkpoints" / key


def ensure_writable(output: Path) -> None:
    """Create ``output/runs`` and prove it writable, before any run trains (UserError if not)."""
    from bench.errors import UserError

    try:
        runs_dir(output).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=runs_dir(output)):
            pass
    except OSError as error:
        raise UserError(f"--output {output} cannot hold run records: {error}") from None


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf floats become None (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def atomic_write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` so that readers see the old file or the new, never a mix."""
    text = json.dumps(_clean(payload), indent=2, sort_keys=True, allow_nan=False)
    _atomic_write_text(path, text + "\n")


def _atomic_write_text(path: Path, text: str) -> None:
    """Write, fsync, rename: readers see the old file or the new one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, new_file_mode())
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def new_file_mode() -> int:
    """The mode a plain new file gets under this process's umask (0644 under umask 022).
    ``mkstemp`` and safetensors create files 0600; records, checkpoints and deltas get this
    instead, so that a team sharing a results folder can read them."""
    return 0o666 & ~current_umask()


def current_umask() -> int:
    """This process's umask, read without changing it where Linux shows it (else set and put
    back at once)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


INDEX_FIELDS = ("key", "status", "task", "method", "seed", "backbone", "finished_at", "primary")


def index_entry(record: dict[str, Any]) -> dict[str, Any]:
    """The one-line summary of ``record`` kept in the index."""
    return _clean({k: record.get(k) for k in INDEX_FIELDS})


def _index_line(entry: dict[str, Any]) -> str:
    return json.dumps(entry, sort_keys=True, allow_nan=False) + "\n"


def append_index(output: Path, record: dict[str, Any]) -> None:
    """Append a one-line summary of ``record`` to the index (one ``write`` call per line).
    Only the driver calls this. Every attempt gets a line; for a key that was retried, the
    last line is current. Index files of several machines can be concatenated."""
    path = index_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(_index_line(index_entry(record)))
        handle.flush()
        os.fsync(handle.fileno())


def repair_index(output: Path) -> dict[str, int]:
    """Make the index agree with the records on disk; return what was fixed.

    Torn or unparseable lines (a driver killed mid-write) are dropped by rewriting the index
    atomically; every record whose latest index line is missing or stale (a driver killed
    between a worker's record and its index line) gets its line; leftover temporary files of
    interrupted atomic writes are removed.
    """
    path = index_path(output)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines() if path.exists() else []
    good: list[dict[str, Any]] = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and "key" in entry:
            good.append(entry)
    torn = len(lines) - len(good)
    latest = {entry["key"]: entry for entry in good}
    missing = []
    for record_file in sorted(runs_dir(output).glob("*.json")):
        record = read_record(output, record_file.stem)
        if record is None:
            continue
        entry = index_entry(record)
        if latest.get(entry["key"]) != entry:
            missing.append(entry)
    stale_tmp = list(runs_dir(output).glob(".*.tmp")) if runs_dir(output).is_dir() else []
    for tmp in stale_tmp:
        tmp.unlink(missing_ok=True)
    if torn or missing:
        text = "".join(_index_line(e) for e in [*good, *missing])
        _atomic_write_text(path, text)
    return {"torn_lines": torn, "added": len(missing), "stale_tmp": len(stale_tmp)}


def read_record(output: Path, key: str) -> dict[str, Any] | None:
    """The record of run ``key``, or None when absent or unreadable."""
    try:
        return json.loads(record_path(output, key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_index(output: Path) -> list[dict[str, Any]]:
    """Index entries in order; unparseable (torn) lines are skipped."""
    path = index_path(output)
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@functools.cache
def environment() -> dict[str, Any]:
    """Package versions, Python, platform and the project's git commit."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "git": git_commit(),
    }


def git_commit() -> dict[str, Any] | None:
    """The project's commit and whether the tree had uncommitted changes (None outside git)."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty.strip())}
