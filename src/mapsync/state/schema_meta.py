"""The one SQLAlchemy `MetaData` every state table belongs to (schema.py, schema_v7.py…), and
the in-place addition of columns the later versions bring."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()


def add_missing_columns(conn: sa.Connection, table: str, columns: dict[str, str]) -> None:
    """`ALTER TABLE … ADD COLUMN` (NULL on old rows) for each of `columns` (name → DDL type) the
    table does not have yet: idempotent, for fresh and migrated stores alike."""
    q = conn.dialect.identifier_preparer.quote
    have = {c["name"] for c in sa.inspect(conn).get_columns(table)}
    for name, ddl in columns.items():
        if name not in have:
            conn.exec_driver_sql(f"ALTER TABLE {q(table)} ADD COLUMN {q(name)} {ddl}")
