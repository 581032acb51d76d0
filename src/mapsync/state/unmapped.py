"""Unmapped values: what a translating rule could not place, counted per distinct value.

`record` runs inside the state store's batch commit (same transaction as the batch); `resolve`
closes a value once no open record error carries it any more.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from mapsync import records
from mapsync.state import schema, values

RULES = frozenset({"map", "country", "lookup", "map_from"})  # rules that translate values


def is_unmapped(r: records.Rejection) -> bool:
    return r.value is not None and r.rule in RULES


def value_text(value: Any) -> str:
    return str(value)[:512]


def record(
    conn: sa.Connection, sync: str, rejected: Sequence[records.Rejection], now: str
) -> list[dict[str, Any]]:
    """Count this batch's unmapped values; return the ones seen for the first time.

    `count` is the number of records a value blocked: a record re-read while its open error
    already carries the same value is not counted again (its `last_seen` still moves). Runs
    before the batch's record errors are written (see StateStore.commit)."""
    u = schema.unmapped
    relevant = [r for r in rejected if is_unmapped(r)]
    if not relevant:
        return []
    blocked = _open_errors(conn, sync, sorted({records.key_text(r.key) for r in relevant}))
    batch = tally(sync, relevant, blocked, now)
    if not batch:
        return []
    known = {
        tuple(row)
        for row in conn.execute(
            sa.select(u.c.field, u.c.rule, u.c.value).where(
                u.c.sync == sync, u.c.value.in_(sorted({v for _, _, v in batch}))
            )
        )
    }
    rows = list(batch.values())
    ins: Any = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(u)
    conn.execute(
        ins.on_conflict_do_update(
            index_elements=["sync", "field", "rule", "value"],
            set_={
                "count": u.c.count + ins.excluded["count"],
                "last_seen": ins.excluded.last_seen,
                "resolved_at": None,
            },
        ),
        rows,
    )
    return [row for ident, row in batch.items() if ident not in known]


def tally(
    sync: str, relevant: Sequence[records.Rejection], blocked: set[tuple[str, str, str, str]], now: str
) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The batch's unmapped values by (field, rule, value), as rows to add: `count` is the
    records each blocked that no open error (`blocked`: key, field, rule, value) carried yet."""
    batch: dict[tuple[str, str, str], dict[str, Any]] = {}
    counted: set[tuple[str, tuple[str, str, str]]] = set()
    for r in relevant:
        ident = (r.field or "", r.rule or "", value_text(r.value))
        key = records.key_text(r.key)
        fresh = (key, *ident) not in blocked and (key, ident) not in counted
        counted.add((key, ident))
        row = batch.get(ident)
        if row is None:
            batch[ident] = {
                "sync": sync,
                "field": ident[0],
                "rule": ident[1],
                "value": ident[2],
                "count": int(fresh),
                "first_seen": now,
                "last_seen": now,
                "sample_key": key,
                "resolved_at": None,
            }
        else:
            row["count"] += int(fresh)
    return batch


def _open_errors(conn: sa.Connection, sync: str, keys: list[str]) -> set[tuple[str, str, str, str]]:
    """(key, field, rule, value) of the open record errors of these keys."""
    e = schema.record_errors
    found: set[tuple[str, str, str, str]] = set()
    for i in range(0, len(keys), 500):
        rows = conn.execute(
            sa.select(e.c.key, e.c.field, e.c.rule, e.c.value).where(
                e.c.sync == sync, e.c.key.in_(keys[i : i + 500]), e.c.resolved_at.is_(None)
            )
        )
        found.update((k, f or "", r or "", v) for k, f, r, v in rows if v is not None)
    return found


def resolve(conn: sa.Connection, sync: str, now: str) -> int:
    """Close the open values of `sync` that no open record error carries any more."""
    u, e = schema.unmapped, schema.record_errors
    still = (
        sa.select(sa.literal(1))
        .where(
            e.c.sync == u.c.sync,
            e.c.resolved_at.is_(None),
            sa.func.coalesce(e.c.field, "") == u.c.field,
            sa.func.coalesce(e.c.rule, "") == u.c.rule,
            e.c.value == u.c.value,
        )
        .exists()
    )
    return int(
        conn.execute(
            sa.update(u).where(u.c.sync == sync, u.c.resolved_at.is_(None), ~still).values(resolved_at=now)
        ).rowcount
    )


def open_error_versions(conn: sa.Connection, sync: str) -> dict[str, str | None]:
    """Key text → stored version of the open record errors of `sync`."""
    e = schema.record_errors
    query = sa.select(e.c.key, e.c.version).where(e.c.sync == sync, e.c.resolved_at.is_(None))
    return {records.key_text(tuple(values.decode(k))): v for k, v in conn.execute(query)}


def open_error_keys(
    conn: sa.Connection, sync: str, field: str | None = None, *, live_only: bool = False
) -> list[records.Key]:
    """Keys of the open record errors of `sync` (only those naming `field`, if given; only the
    ones not buried as dead, with `live_only`)."""
    e = schema.record_errors
    query = sa.select(e.c.key).where(e.c.sync == sync, e.c.resolved_at.is_(None)).order_by(e.c.key)
    if field is not None:
        query = query.where(e.c.field == field)
    if live_only:
        query = query.where(e.c.dead_at.is_(None))
    return [tuple(values.decode(k)) for k in conn.execute(query).scalars()]


GONE = "retry: the source row is gone"


def note_gone(conn: sa.Connection, sync: str, keys: Sequence[records.Key], now: str) -> None:
    """Leave these errors open, saying why a retry could not send them."""
    e = schema.record_errors
    texts = [records.key_text(k) for k in keys]
    for i in range(0, len(texts), 500):
        conn.execute(
            sa.update(e)
            .where(e.c.sync == sync, e.c.key.in_(texts[i : i + 500]), e.c.resolved_at.is_(None))
            .values(message=f"{GONE} ({now})", last_seen=now)
        )


def listing(conn: sa.Connection, sync: str | None, include_resolved: bool = False) -> list[dict[str, Any]]:
    u = schema.unmapped
    query = sa.select(u).order_by(u.c.sync, u.c.field, u.c.count.desc(), u.c.value)
    if sync is not None:
        query = query.where(u.c.sync == sync)
    if not include_resolved:
        query = query.where(u.c.resolved_at.is_(None))
    return [dict(row) for row in conn.execute(query).mappings()]
