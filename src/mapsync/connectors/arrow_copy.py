"""PostgreSQL's write of an Arrow table: binary COPY, encoded by pgpq (Rust) from the Arrow
columns, with no Python object per row (the columnar seed, docs/performance.md).

Binary COPY sends each value in the column type's own binary form, so each Arrow column is cast
to the form of its destination column first (`targets`): INTEGER int32, SMALLINT int16, BIGINT
int64, text of any kind (TEXT, VARCHAR(n), CHAR(n), an ENUM) as UTF-8, BOOLEAN, TIMESTAMP
(without time zone) microseconds, DATE, DOUBLE PRECISION. A table with any other column type
(NUMERIC, REAL, TIMESTAMPTZ, JSON, UUID, arrays, …) has no target here (None): its rows go
through the per-record write, which sends them as the driver adapts each value. A cast that
cannot hold a value (an int beyond INTEGER) raises `ValueError`, and the caller writes the
batch per record, where PostgreSQL refuses that one row.

The same COPY goes straight into the table for a fresh seed, or into a temp table of the
written columns and one `INSERT … SELECT … ON CONFLICT` from it, as `sql_copy.pg_copy`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pgpq
import pyarrow as pa
import sqlalchemy as sa

from mapsync.connectors import sql_copy


def target_of(column: sa.Column[Any]) -> pa.DataType | None:
    """The Arrow type a column's binary COPY form is encoded from (None: not written this way)."""
    kind = column.type
    if isinstance(kind, sa.SmallInteger):
        return pa.int16()
    if isinstance(kind, sa.BigInteger):
        return pa.int64()
    if isinstance(kind, sa.Integer):
        return pa.int32()
    if isinstance(kind, sa.String):  # TEXT, VARCHAR, CHAR, ENUM: their binary form is the text
        return pa.string()
    if isinstance(kind, sa.Boolean):
        return pa.bool_()
    if isinstance(kind, sa.DateTime):
        return None if kind.timezone else pa.timestamp("us")
    if isinstance(kind, sa.Date):
        return pa.date32()
    if isinstance(kind, sa.Double) or type(kind).__name__ == "DOUBLE_PRECISION":
        return pa.float64()
    return None


def targets(table: sa.Table, cols: Sequence[str]) -> dict[str, pa.DataType] | None:
    """Each written column's Arrow target, or None when one has none."""
    out = {}
    for name in cols:
        target = target_of(table.c[name])
        if target is None:
            return None
        out[name] = target
    return out


def cast(data: pa.Table, kinds: Mapping[str, pa.DataType]) -> pa.Table:
    """`data` with each column in its target type; ValueError when a value does not fit."""
    columns = []
    for name in data.column_names:
        column, target = data.column(name), kinds[name]
        if column.type != target:
            try:
                column = column.cast(target)  # safe: an overflow or a lossy cast raises
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise ValueError(f"column {name}: {exc}") from None
        columns.append(column)
    return pa.Table.from_arrays(columns, names=data.column_names)


def pg_copy_arrow(
    conn: sa.Connection,
    qualified: str,
    q: Callable[[str], str],
    key: Sequence[str],
    data: pa.Table,
    *,
    fresh: bool,
    guard: str | None,
) -> None:
    """Binary COPY of `data` (already in its target types, `cast`) into the table (`fresh`) or
    through a temp table and one upsert (`sql_copy.stage_and_upsert`)."""
    cols = list(data.column_names)
    raw: Any = conn.connection.dbapi_connection
    encoder = pgpq.ArrowToPostgresBinaryEncoder(data.schema)
    with raw.cursor() as cur:
        target = qualified if fresh else sql_copy.stage(cur, qualified, q, cols)
        col_list = ", ".join(q(c) for c in cols)
        with cur.copy(f"COPY {target} ({col_list}) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.write(encoder.write_header())
            for batch in data.to_batches():
                copy.write(encoder.write_batch(batch))
            copy.write(encoder.finish())
        if not fresh:
            sql_copy.upsert_from(cur, qualified, target, q, key, cols, guard)
