"""SQLite text that is not valid UTF-8: one record error with its key, not a failed run.

SQLite stores whatever bytes it is given in a TEXT column; Python's sqlite3 then fails the whole
fetch with `Could not decode to UTF-8`, naming no key, so every run stops at that row and the
rows behind it are never delivered. Every SQLite connection of mapsync decodes text through
`decode` instead (`text_factory`; as fast as the default), which returns an `Undecodable`
marker for such a value. `reject` turns the changes holding one into record errors (rule
`undecodable`) naming the key and the column, before mapping; the other rows go on.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from mapsync import records

_seen = 0  # undecodable values met in this process: the scan in `reject` runs only after one


class Undecodable:
    """A TEXT value whose bytes are not UTF-8. Its text form shows the bad bytes escaped."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def __str__(self) -> str:
        return self.raw.decode("utf-8", "backslashreplace")

    def __repr__(self) -> str:
        return repr(str(self))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Undecodable) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)


# bound as the bytes it holds (a child lookup by an undecodable parent key finds nothing)
sqlite3.register_adapter(Undecodable, lambda value: value.raw)


def decode(raw: bytes) -> str | Undecodable:
    """The sqlite3 `text_factory` of mapsync's connections."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        global _seen
        _seen += 1
        return Undecodable(raw)


def _bad_column(row: Mapping[str, Any]) -> str | None:
    return next((col for col, v in row.items() if type(v) is Undecodable), None)


def reject(changes: list[records.Change]) -> tuple[list[records.Change], list[records.Rejection]]:
    """The changes without those holding undecodable text (in the row or a child row), and a
    rejection for each of those."""
    if not _seen:
        return changes, []
    keep: list[records.Change] = []
    rejected: list[records.Rejection] = []
    for change in changes:
        where = _bad_column(change.data)
        if where is None:
            for name, rows in change.children.items():
                bad = next((c for c in map(_bad_column, rows) if c is not None), None)
                if bad is not None:
                    where = f"{name}.{bad}"
                    break
        if where is None:
            keep.append(change)
            continue
        value = change.data.get(where) if "." not in where else None
        shown = f" ({str(value)[:60]!r})" if value is not None else ""
        rejected.append(
            records.Rejection(
                change.key,
                f"source column {where!r} holds text that is not valid UTF-8{shown}: fix the value at "
                "the source; the row is not delivered until then",
                where,
                "undecodable",
                change.version,
            )
        )
    return keep, rejected
