"""A cheap mark of a SQL connection's catalog, so a long-running process can tell, with one
query per run, whether the tables its cached parts were built from changed.

The mark covers every column of every table and view the connection's default schema (MariaDB:
its database; PostgreSQL: every schema but the system ones; SQLite: the main schema) holds:
name, type, nullability, position and the table's identity. Any change (a column dropped, a
type widened, a table dropped or re-created, a queue table removed) gives another mark, and the
engine then rebuilds the sync's parts from a fresh reflection, which raises the same
ConfigError a fresh process would. A dialect without a mark query gives None: "cannot tell",
and the parts are rebuilt every run (as before they were cached).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from mapsync.ports import Handle

# SQLite bumps `schema_version` on every change of the schema (CREATE, DROP, ALTER)
_SQLITE = "SELECT schema_version FROM pragma_schema_version"
_POSTGRES = """
SELECT count(*), md5(coalesce(string_agg(
    c.oid::text || ':' || a.attname || ':' || a.atttypid::text || ':' || a.atttypmod::text
    || ':' || a.attnotnull::text || ':' || a.attnum::text, ',' ORDER BY c.oid, a.attnum), ''))
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
  AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
"""
# order-free: a sum and a xor of per-column checksums (GROUP_CONCAT would be cut at 1 KB)
_MYSQL = """
SELECT COUNT(*), SUM(CRC32(x)), BIT_XOR(CRC32(x)) FROM (
  SELECT CONCAT_WS('|', TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, ORDINAL_POSITION,
                   COALESCE(CHARACTER_SET_NAME, ''), COALESCE(COLLATION_NAME, '')) AS x
  FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()
) cols
"""
_QUERIES = {"sqlite": _SQLITE, "postgresql": _POSTGRES, "mysql": _MYSQL}
Mark = tuple[Any, ...] | None  # None: cannot tell
STATIC = ("static",)  # a connection without a SQL catalog (an API): its columns come from the sheet


def mark(handle: Handle) -> Mark:
    """The connection's catalog mark: equal marks, same catalog. None: this dialect cannot tell."""
    if handle.engine is None:
        return STATIC
    query = _QUERIES.get(handle.dialect or "")
    if query is None:
        return None
    try:
        with handle.engine.connect() as conn:
            row = conn.execute(sa.text(query)).one()
    except sa.exc.DBAPIError:  # cannot tell: the rebuild meets the error as a fresh process would
        return None
    return tuple(row)
