"""User-facing errors: one clear message, exit code 2, never a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A problem with what the user asked for (a name, a path, a value, a data file).

    The CLI prints ``str(error)`` and exits with :attr:`exit_code`; no traceback is shown.
    """

    exit_code = 2


class StorageError(UserError):
    """The output directory stopped accepting writes (disk full, permissions). Finished runs are
    safe; the same command finishes the rest once the problem is fixed."""

    exit_code = 74  # EX_IOERR


def closest(name: str, valid: Iterable[str]) -> str | None:
    """The valid name closest to ``name``, or None when nothing is similar enough."""
    matches = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown_name_error(kind: str, name: str, valid: Iterable[str]) -> UserError:
    """``UserError`` for an unknown ``kind`` (task, method, suite, ...) listing valid names.

    >>> str(unknown_name_error("task", "sst", ["sst2", "rte"]))
    "unknown task 'sst'; did you mean 'sst2'? Valid tasks: rte, sst2"
    """
    valid = sorted(valid)
    hint = closest(name, valid)
    did_you_mean = f"; did you mean '{hint}'?" if hint else ";"
    return UserError(f"unknown {kind} '{name}'{did_you_mean} Valid {kind}s: {', '.join(valid)}")
