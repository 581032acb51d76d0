"""MariaDB's and SQLite's write of an Arrow table (the columnar path's; PostgreSQL's is binary
COPY, arrow_copy.py): the per-record write's own upsert statement, compiled once and sent with
the rows as tuples through the driver's executemany (PyMySQL turns it into multi-row INSERTs of
up to 1 MB; sqlite3 steps one prepared statement). So the SQL and the values are the per-record
write's, while SQLAlchemy processes no parameter per row: each column goes through its type's
bind processor (SQLite's text of a time, …) once, as a list, and the driver gets tuples (qmark)
or plain dicts (pyformat). The driver still binds (escapes) every value itself."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import sqlalchemy as sa


def execute(conn: sa.Connection, stmt: Any, table: sa.Table, data: pa.Table) -> None:
    """`conn.execute(stmt, data.to_pylist())`, without SQLAlchemy's work per row. A statement
    with parameters other than the columns, or bind names SQLAlchemy escapes, is executed
    that way."""
    cols = list(data.column_names)
    compiled = stmt.compile(dialect=conn.dialect, column_keys=cols)
    names = compiled.positiontup if compiled.positional else list(dict.fromkeys(compiled.bind_names.values()))
    if names is None or sorted(names) != sorted(cols) or compiled.escaped_bind_names:
        conn.execute(stmt, data.to_pylist())
        return
    columns = []
    for name in names:
        values = data.column(name).to_pylist()
        process = table.c[name].type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
        columns.append(values if process is None else [process(v) for v in values])
    rows = zip(*columns, strict=True)
    # by position (`?`, sqlite3) or by name (`%(name)s`, PyMySQL)
    params = list(rows) if compiled.positional else [dict(zip(names, row, strict=True)) for row in rows]
    conn.exec_driver_sql(str(compiled), params)
