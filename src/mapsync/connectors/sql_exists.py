"""`on_exists` of a transaction export, inside the destination's write transaction.

Before the upserts of a batch, the destination's rows of its keys are read and locked (`FOR
UPDATE` on PostgreSQL and MariaDB; SQLite's write transaction is the only writer), so what is
judged is what is overwritten: nothing can change a row between the look and the write. A
record the destination does not hold is inserted (an order deleted there by hand is rebuilt). A
record it holds exactly as mapsync would write it (every column mapsync writes to the header:
mapsync's own earlier delivery, a rerun after a crash, a re-export of unchanged data) is written
again, idempotently. A record it holds *changed* (the destination has started processing it) is:

- `skip`: left alone, header and child rows; reported delivered with `records.KEPT` (the export
  writes back `statuses.skipped` and `already imported`);
- `fail`: a record error, `already imported`, naming the columns that differ.

`update` (the default, and every sync that is no export) reads nothing. The destination's natural
key is unique (an upsert target), so no transaction is ever inserted twice.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from mapsync import records
from mapsync.connectors.sql import chunked, key_in

_STARTED = "mapsync__started"
RULE = records.ON_EXISTS  # the rule of the rejections `settle` returns; KEPT ones become deliveries


def settle(
    conn: sa.Connection,
    table: sa.Table,
    key: Sequence[str],
    recs: list[records.Mapped],
    how: str,
    started: str | None = None,
) -> tuple[list[records.Mapped], list[records.Rejection]]:
    """(the records to write, the records turned down: `rule` RULE, message KEPT for `skip`).
    `started`: the sheet's SQL condition on the destination row for "processing has started";
    without it, a row that differs from what mapsync would write counts as started."""
    upserts = [r for r in recs if r.op == "upsert"]
    if how == "update" or not upserts:
        return recs, []
    held = _locked_rows(conn, table, key, [r.dest_key for r in upserts], started)
    write: list[records.Mapped] = []
    turned: list[records.Rejection] = []
    for r in recs:
        row = held.get(records.key_text(r.dest_key)) if r.op == "upsert" else None
        if row is None or not _started(row, r.values, started):
            write.append(r)
        elif how == "skip":
            # `value` carries the destination key to `kept_apart` (never stored: it becomes a delivery)
            turned.append(
                records.Rejection(r.key, records.KEPT, None, RULE, r.version, records.key_text(r.dest_key))
            )
        else:
            changed = sorted(c for c, v in r.values.items() if not same(v, row.get(c)))
            what = f"matches `started` ({started})" if started else f"changed ({', '.join(changed[:5])})"
            message = f"already imported: the destination holds this record, {what}; on_exists: fail"
            turned.append(records.Rejection(r.key, message, None, RULE, r.version))
    return write, turned


def kept_apart(result: records.WriteResult) -> records.WriteResult:
    """The records `skip` left alone, moved from the rejections to the deliveries (note KEPT)."""
    kept = [r for r in result.rejected if r.rule == RULE and r.message == records.KEPT]
    if not kept:
        return result
    ids = {id(r) for r in kept}
    return records.WriteResult(
        result.delivered
        + [records.Delivered(r.key, r.version, "", str(r.value), "upsert", records.KEPT) for r in kept],
        [r for r in result.rejected if id(r) not in ids],
    )


def _started(row: records.Row, values: records.Row, started: str | None) -> bool:
    """A row identical to what mapsync would write is its own delivery (a rerun after a crash),
    never started; any other is started if `started` says so (without it: always)."""
    if all(same(v, row.get(c)) for c, v in values.items()):
        return False
    return bool(row[_STARTED]) if started is not None else True


def _locked_rows(
    conn: sa.Connection, table: sa.Table, key: Sequence[str], keys: list[records.Key], started: str | None
) -> dict[str, Any]:
    cols = [table.c[k] for k in key]
    out: dict[str, Any] = {}
    for chunk in chunked(keys):
        query = sa.select(table).where(key_in(cols, chunk))
        if started is not None:  # the sheet's SQL, as `filter` is
            query = query.add_columns(sa.case((sa.text(f"({started})"), 1), else_=0).label(_STARTED))
        if conn.dialect.name != "sqlite":
            query = query.with_for_update()
        for row in conn.execute(query).mappings():
            out[records.key_text(tuple(row[k] for k in key))] = dict(row)
    return out


def same(a: Any, b: Any) -> bool:
    """Equal as values, across the forms a driver returns (Decimal and float, 1 and True, naive
    and aware times of the same instant, CHAR padding)."""
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
