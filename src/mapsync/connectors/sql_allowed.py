"""Allowed values a destination declares, read from its catalog so they are checked before sending.

Two sources: a column type that lists its values (MariaDB/MySQL `ENUM(...)`, PostgreSQL enum
types), and CHECK constraints of the one-column list form (parsed by `mapsync.allowed`).
"""

from __future__ import annotations

import sqlalchemy as sa

from mapsync.allowed import parse_check


def _check_texts(conn: sa.Connection, table: sa.Table) -> list[str]:
    """The CHECK clauses of `table`. MariaDB keeps column-level ones where SQLAlchemy's
    reflection does not look, so its catalog is asked directly."""
    if conn.dialect.name == "mysql":
        try:
            rows = conn.execute(
                sa.text(
                    "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
                    "WHERE CONSTRAINT_SCHEMA = COALESCE(:schema, DATABASE()) AND TABLE_NAME = :table"
                ),
                {"schema": table.schema, "table": table.name},
            )
            return [str(r[0]) for r in rows]
        except sa.exc.DBAPIError:  # MySQL's CHECK_CONSTRAINTS has no TABLE_NAME: reflection below
            conn.rollback()
    try:
        found = sa.inspect(conn).get_check_constraints(table.name, schema=table.schema)
    except NotImplementedError:
        return []
    return [str(c.get("sqltext") or "") for c in found]


def allowed_values(conn: sa.Connection, table: sa.Table) -> dict[str, tuple[str, ...]]:
    """Column → allowed values, from enum types and list CHECK constraints of `table`."""
    out: dict[str, tuple[str, ...]] = {}
    for col in table.columns:
        enums = getattr(col.type, "enums", None)
        if enums:
            out[col.name] = tuple(str(e) for e in enums)
    for text in _check_texts(conn, table):
        parsed = parse_check(text)
        if parsed is None or parsed[0] not in table.columns:
            continue
        column, values = parsed
        if column in out:  # two lists: only what both allow
            values = tuple(v for v in out[column] if v in set(values))
        out[column] = values
    return out
