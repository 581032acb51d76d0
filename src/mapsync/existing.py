"""`on_exists` of a transaction export: what a record the destination already holds becomes.

Before a batch is written, the destination's rows of its keys are read (`read_back`). A record
the destination does not hold is written (an order deleted there by hand is rebuilt). A record
it holds exactly as mapsync would write it (the compared columns: every column mapsync writes
to the header) is written again, idempotently: that is mapsync's own earlier delivery, a rerun
after a crash or a re-export of unchanged data. A record it holds *changed* (the destination has
started processing it) is, by `on_exists`:

- `update`: written again (the default; nothing is read);
- `skip`: left alone and reported delivered with the note `kept` (the export writes back
  `statuses.skipped` and `already imported`);
- `fail`: a record error, `already imported`.

Nothing is ever inserted twice: the destination's natural key is unique (an upsert target).
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Sequence
from typing import Any

from mapsync import errors, records
from mapsync.capture.export_writeback import KEPT
from mapsync.ports import Destination
from mapsync.sheet import models


def mode(cfg: models.SyncConfig) -> str:
    """The sync's `on_exists` (only an export has one: everything else is `update`)."""
    changes = cfg.changes
    return changes.on_exists if isinstance(changes, models.ExportFlagChanges) else "update"


def settle(
    dest: Destination, send: Sequence[records.Mapped], how: str, key_to: Sequence[str]
) -> tuple[list[records.Mapped], list[records.Delivered], list[records.Rejection]]:
    """(to write, kept as they are, refused) for `on_exists: how`."""
    upserts = [m for m in send if m.op == "upsert"]
    if how == "update" or not upserts:
        return list(send), [], []
    if not dest.capabilities.read_back:
        raise errors.ConfigError(f"on_exists: {how} needs a destination that reads its rows back by key")
    rows = dest.read_keys([m.dest_key for m in upserts])
    held = {records.key_text(tuple(row[c] for c in key_to)): row for row in rows}
    write: list[records.Mapped] = []
    kept: list[records.Delivered] = []
    refused: list[records.Rejection] = []
    for m in send:
        row = held.get(records.key_text(m.dest_key)) if m.op == "upsert" else None
        if row is None or _same_row(m.values, row):
            write.append(m)
        elif how == "skip":
            kept.append(
                records.Delivered(m.key, m.version, m.hash, records.key_text(m.dest_key), "upsert", KEPT)
            )
        else:
            changed = sorted(c for c in m.values if not _same(m.values[c], row.get(c)))
            refused.append(
                records.Rejection(
                    m.key,
                    "already imported: the destination holds this record changed "
                    f"({', '.join(changed[:5])}); on_exists: fail",
                    version=m.version,
                )
            )
    return write, kept, refused


def _same_row(values: records.Row, row: records.Row) -> bool:
    return all(_same(v, row.get(c)) for c, v in values.items())


def _same(a: Any, b: Any) -> bool:
    """Equal as values, across the forms a driver returns (Decimal and float, 1 and True,
    naive and aware times of the same instant, CHAR padding)."""
    if a == b:
        return True
    if a is None or b is None:
        return False
    if isinstance(a, dt.datetime) and isinstance(b, dt.datetime):
        if (a.tzinfo is None) != (b.tzinfo is None):
            a, b = a.replace(tzinfo=None), b.replace(tzinfo=None)
        return bool(a == b)
    if isinstance(a, int | float | decimal.Decimal) and isinstance(b, int | float | decimal.Decimal):
        try:
            return bool(decimal.Decimal(str(a)) == decimal.Decimal(str(b)))
        except decimal.InvalidOperation:
            return False
    return str(a).rstrip() == str(b).rstrip()
