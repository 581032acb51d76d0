"""PostgreSQL's fastest write of a batch: a (text) COPY of the rows, into the table or into
a temp table that one upsert empties (`SqlDestination` for 200 rows and more, and a fresh seed)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from mapsync import records
from mapsync.connectors import version_guard


def pg_copy(
    conn: sa.Connection,
    qualified: str,
    q: Callable[[str], str],
    key: Sequence[str],
    cols: list[str],
    rows: list[records.Row],
    *,
    fresh: bool,
    guard: str | None,
) -> None:
    """COPY `rows` into the table (`fresh`: straight in, an empty table's seed), else into a
    session temp table of the written columns and one `INSERT … SELECT … ON CONFLICT` from it
    (a version `guard` column keeps a newer row)."""
    col_list = ", ".join(q(c) for c in cols)
    raw: Any = conn.connection.dbapi_connection
    with raw.cursor() as cur:
        target = qualified if fresh else stage(cur, qualified, q, cols)
        with cur.copy(f"COPY {target} ({col_list}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row[c] for c in cols])
        if not fresh:
            upsert_from(cur, qualified, target, q, key, cols, guard)


def stage(cur: Any, qualified: str, q: Callable[[str], str], cols: list[str]) -> str:
    """The session's temp table of the written columns (emptied at commit), created once."""
    # only the written columns: LIKE would copy NOT NULL of columns we never write
    target = q(f"mapsync_stage_{abs(hash((qualified, *cols))) % 10**8}")
    col_list = ", ".join(q(c) for c in cols)
    cur.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {target} ON COMMIT DELETE ROWS AS "  # noqa: S608
        f"SELECT {col_list} FROM {qualified} WITH NO DATA"
    )
    return target


def upsert_from(
    cur: Any,
    qualified: str,
    target: str,
    q: Callable[[str], str],
    key: Sequence[str],
    cols: list[str],
    guard: str | None,
) -> None:
    """One `INSERT … SELECT … ON CONFLICT` from the temp table (a version `guard` column keeps a
    newer row)."""
    col_list = ", ".join(q(c) for c in cols)
    non_key = [c for c in cols if c not in key]
    action = (
        "DO UPDATE SET "
        + ", ".join(f"{q(c)} = EXCLUDED.{q(c)}" for c in non_key)
        + (version_guard.copy_where(q, "mapsync_t", guard) if guard else "")
        if non_key
        else "DO NOTHING"
    )
    cur.execute(
        f"INSERT INTO {qualified} AS mapsync_t ({col_list}) SELECT {col_list} FROM {target} "  # noqa: S608
        f"ON CONFLICT ({', '.join(q(k) for k in key)}) {action}"
    )


@contextlib.contextmanager
def driver_errors(conn: sa.Connection) -> Iterator[None]:
    """A COPY's raw-driver errors (psycopg's, on the DBAPI connection) raised as the
    `DBAPIError` SQLAlchemy would have raised, so the destination classifies them as any other."""
    import psycopg  # (on first use: a MariaDB or SQLite setup never loads it)

    try:
        yield
    except psycopg.Error as exc:
        raise sa.exc.DBAPIError.instance("COPY", None, exc, psycopg.Error, dialect=conn.dialect) from None
