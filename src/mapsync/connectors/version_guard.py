"""The version guard of a SQL destination: an older write never replaces a newer row.

A run that lost its lease may still have a write on the wire (a COMMIT already sent cannot be
fenced by any timeout). When the sheet maps the source's version column (the watermark column)
to a destination column, every upsert carries a condition on it, so such a late write changes
nothing where a newer version is already stored:

- PostgreSQL, SQLite: `INSERT … ON CONFLICT (key) DO UPDATE SET … WHERE dest.v IS NULL OR
  dest.v <= excluded.v` (also the COPY → temp table → upsert path);
- MariaDB: `ON DUPLICATE KEY UPDATE c = IF(dest.v IS NULL OR VALUES(v) >= dest.v, VALUES(c), c)`
  for each column, `v` assigned last (MariaDB assigns left to right, so `v` must still be the
  old value when the other columns are decided);
- the update-then-insert path (`on_null: omit` without a NOT NULL column): `UPDATE … WHERE key
  AND (v IS NULL OR v <= :v)`.

The destination column must be a timestamp, date or number column (text stamps of mixed forms
do not sort as time). A row the guard skips is not an error: it is older than what the
destination holds. Equal versions are written (a re-send after a crash stays idempotent).
`delivery.version_guard: false` turns the guard off.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from mapsync.sheet import models

# column types whose order is the version's order (text stamps of mixed forms are not)
ORDERED = (dt.datetime, dt.date, int, float, decimal.Decimal)


def guard_column(cfg: models.SyncConfig, columns: Mapping[str, Any] | None = None) -> str | None:
    """The destination column holding the source's version, when the guard applies: the
    watermark column is mapped to it and (given the catalog's `columns`) it is a timestamp,
    date or number column."""
    if not cfg.delivery.version_guard or not isinstance(cfg.changes, models.WatermarkChanges):
        return None
    version = cfg.changes.column
    for dest, rule in cfg.fields.items():
        if rule.from_ == version:
            info = columns.get(dest) if columns is not None else None
            if columns is not None and (info is None or info.python_type not in ORDERED):
                return None
            return dest
    return None


def upsert_where(table: sa.Table, excluded: Any, column: str) -> Any:
    """The `ON CONFLICT … DO UPDATE … WHERE` condition (PostgreSQL, SQLite)."""
    current = table.c[column]
    return sa.or_(current.is_(None), current <= excluded[column])


def mysql_assignments(
    table: sa.Table, inserted: Any, columns: list[str], column: str
) -> list[tuple[Any, Any]]:
    """`ON DUPLICATE KEY UPDATE` assignments, each kept when the incoming version is older;
    the version column last."""
    current = table.c[column]
    newer = sa.or_(current.is_(None), inserted[column] >= current)
    ordered = [c for c in columns if c != column] + [column]
    return [(c, sa.func.IF(newer, inserted[c], table.c[c])) for c in ordered]


def copy_where(quote: Any, alias: str, column: str) -> str:
    """The same condition as text, for the COPY → temp table → upsert statement."""
    return f" WHERE {alias}.{quote(column)} IS NULL OR {alias}.{quote(column)} <= EXCLUDED.{quote(column)}"


def update_where(table: sa.Table, column: str, param: str) -> Any:
    current = table.c[column]
    return sa.or_(current.is_(None), current <= sa.bindparam(param))
