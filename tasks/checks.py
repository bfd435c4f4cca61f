"""Small validation helpers shared by the task schema: each raises ``UserError`` naming the value.

Also :class:`FrozenMap`, the immutable, hashable mapping used for the schema's mapping fields, so
that a :class:`~tasks.spec.TaskSpec` can be a cache key.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

from bench.errors import UserError, unknown_name_error

K = TypeVar("K")
V = TypeVar("V")


class FrozenMap(Mapping[K, V]):
    """An immutable, hashable ``dict`` (insertion order kept, equality as for ``dict``)."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        self._data: dict[K, V] = dict(data)

    def __getitem__(self, key: K) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._data == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"

    def to_dict(self) -> dict[K, V]:
        """A plain (mutable) copy."""
        return dict(self._data)


def type_name(value: object) -> str:
    """A short name for ``value``'s type, as used in error messages."""
    return type(value).__name__


def check_str(value: Any, what: str) -> str:
    """``value`` as a non-empty string, else ``UserError`` naming ``what``."""
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{what} must be a non-empty string, got {value!r}")
    return value


def check_one_line(value: Any, what: str) -> str:
    """A non-empty string without line breaks."""
    text = check_str(value, what)
    if "\n" in text or "\r" in text:
        raise UserError(f"{what} must be a single line, got {text!r}")
    return text


def check_str_tuple(value: Any, what: str, *, allow_empty: bool = False) -> tuple[str, ...]:
    """``value`` (a list or tuple of distinct non-empty strings) as a tuple."""
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise UserError(f"{what} must be a list of strings, got {value!r}")
    items = tuple(value)
    if not items and not allow_empty:
        raise UserError(f"{what} must not be empty")
    for item in items:
        if not isinstance(item, str) or not item:
            hint = " (quote it in YAML)" if isinstance(item, int | float | bool) else ""
            raise UserError(f"{what} must contain non-empty strings, got {item!r}{hint}")
    duplicates = sorted({item for item in items if items.count(item) > 1})
    if duplicates:
        raise UserError(f"{what} has duplicate entries: {', '.join(duplicates)}")
    return items


def check_choice(value: Any, what: str, kind: str, valid: Iterable[str]) -> str:
    """``value`` if it is one of ``valid``, else the registry-style unknown-name error."""
    valid = list(valid)
    if not isinstance(value, str):
        raise UserError(f"{what} must be one of {', '.join(valid)}; got {value!r}")
    if value not in valid:
        raise UserError(f"{what}: {unknown_name_error(kind, value, valid)}")
    return value


def check_subset(items: Iterable[str], what: str, allowed: Iterable[str], origin: str) -> None:
    """Every item of ``items`` is in ``allowed`` (``origin`` says where the allowed ones are)."""
    allowed = list(allowed)
    extra = [item for item in items if item not in allowed]
    if extra:
        raise UserError(
            f"{what} names {', '.join(repr(e) for e in extra)}, which {origin} does not provide;"
            f" {origin} provides: {', '.join(allowed) or '(nothing)'}"
        )


def check_str_map(value: Any, what: str) -> FrozenMap[str, str]:
    """A mapping of non-empty strings to non-empty strings."""
    if not isinstance(value, Mapping):
        raise UserError(f"{what} must be a mapping, got {value!r}")
    for key, item in value.items():
        check_str(key, f"{what} key")
        check_str(item, f"{what}[{key!r}]")
    return FrozenMap(value)


def check_keys(mapping: Mapping[str, Any], what: str, allowed: Iterable[str]) -> None:
    """Reject keys of ``mapping`` that are not in ``allowed``, listing the allowed ones."""
    allowed = list(allowed)
    unknown = [key for key in mapping if key not in allowed]
    if unknown:
        names = ", ".join(repr(key) for key in unknown)
        raise UserError(f"{what}: unknown key(s) {names}; allowed keys: {', '.join(allowed)}")


def check_exact_keys(
    mapping: Mapping[str, Any], what: str, required: Iterable[str], purpose: str
) -> None:
    """``mapping``'s keys are exactly ``required`` (``purpose`` explains where they come from)."""
    required = list(required)
    missing = [key for key in required if key not in mapping]
    if missing:
        raise UserError(
            f"{what} is missing {', '.join(repr(m) for m in missing)};"
            f" it must map each of {', '.join(required)} ({purpose})"
        )
    check_keys(mapping, what, required)
