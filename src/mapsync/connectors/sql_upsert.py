"""The statements of `SqlDestination`'s upserts, by dialect: MariaDB's `INSERT … ON DUPLICATE
KEY UPDATE`, PostgreSQL's and SQLite's `INSERT … ON CONFLICT` (under a version guard, older
never replaces newer: connectors/version_guard.py), and the update-then-insert of rows that
leave out a NOT NULL column. The per-record write and the columnar write (arrow_rows) send the
same statement."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from mapsync import records
from mapsync.connectors import version_guard
from mapsync.connectors.sql import chunked, key_in


def key_cond(table: sa.Table, key: Sequence[str]) -> Any:
    """`key = :k_0 AND …`, the key columns as parameters `k_0`, `k_1`, …"""
    return sa.and_(*[table.c[k] == sa.bindparam(f"k_{i}") for i, k in enumerate(key)])


def upsert_stmt(
    dialect: str, table: sa.Table, key: Sequence[str], cols: Sequence[str], guard: str | None
) -> Any:
    """The upsert of rows of these columns (`guard`: the version column, or None)."""
    non_key = [c for c in cols if c not in key]
    if dialect == "mysql":
        my = mysql.insert(table)
        if guard and non_key:
            return my.on_duplicate_key_update(
                version_guard.mysql_assignments(table, my.inserted, non_key, guard)
            )
        return my.on_duplicate_key_update({c: my.inserted[c] for c in non_key or key})
    ins: Any = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    if not non_key:
        return ins.on_conflict_do_nothing(index_elements=list(key))
    return ins.on_conflict_do_update(
        index_elements=list(key),
        set_={c: ins.excluded[c] for c in non_key},
        where=version_guard.upsert_where(table, ins.excluded, guard) if guard else None,
    )


def lacks_required(table: sa.Table, cols: Sequence[str]) -> bool:
    """Whether rows leave out a NOT NULL column the database cannot fill (`on_null: omit`)."""
    return any(
        not c.nullable and c.server_default is None and c.identity is None and not c.primary_key
        for c in table.columns
        if c.name not in cols
    )


def update_then_insert(
    conn: sa.Connection, table: sa.Table, key: Sequence[str], rows: list[records.Row], guard: str | None
) -> None:
    """An upsert of rows without a NOT NULL column fails the NOT NULL check before it finds the
    existing row: update the rows that exist, insert the others (the database may refuse
    those, as a new row needs the column)."""
    key_cols = [table.c[k] for k in key]
    keys = [tuple([row[k] for k in key]) for row in rows]
    found: set[tuple[Any, ...]] = set()
    for part in chunked(keys):
        found.update(tuple(r) for r in conn.execute(sa.select(*key_cols).where(key_in(key_cols, part))))
    non_key = [c for c in rows[0] if c not in key]
    old = [(row, k) for row, k in zip(rows, keys, strict=True) if k in found]
    new = [row for row, k in zip(rows, keys, strict=True) if k not in found]
    if old and non_key:
        stmt = sa.update(table).where(key_cond(table, key))
        if guard:
            stmt = stmt.where(version_guard.update_where(table, guard, f"v_{non_key.index(guard)}"))
        stmt = stmt.values({c: sa.bindparam(f"v_{i}") for i, c in enumerate(non_key)})
        conn.execute(
            stmt,
            [
                {f"k_{i}": v for i, v in enumerate(k)} | {f"v_{i}": row[c] for i, c in enumerate(non_key)}
                for row, k in old
            ],
        )
    if new:
        conn.execute(sa.insert(table), new)
