"""`arrow_rows.execute`, MariaDB's and SQLite's columnar write: an Arrow table sent through the
per-record upsert statement as tuples gives exactly the rows `conn.execute(stmt, rows)` gives
(hostile texts, NULLs, times with a fraction, booleans, an existing row updated), on a real
server; a statement that binds by name or has a parameter of its own takes that very call."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from mapsync.connectors import arrow_rows
from tests import helpers as h

TIME = {"sqlite": "TIMESTAMP", "postgresql": "TIMESTAMP(6)", "mysql": "DATETIME(6)"}
ROWS = {
    "id": [1, 2, 3, 4],
    "name": ["O'Brien", 'say "hi"\\n', None, "Zoë 😀 %s %(x)s ?"],
    "at": [
        dt.datetime(2024, 1, 2, 3, 4, 5, 123456),  # noqa: DTZ001 (naive columns)
        None,
        dt.datetime(1999, 12, 31),  # noqa: DTZ001
        dt.datetime(2024, 2, 29),  # noqa: DTZ001
    ],
    "flag": [True, False, None, True],
}


def _upsert(dialect: str, table: sa.Table, extra: bool) -> Any:
    """The upsert, with (`extra`) a parameter of its own: an existing row's name set to it."""
    cols = [c for c in ROWS if c != "id"]
    ins: Any = {"mysql": mysql.insert, "postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect](
        table
    )
    new = ins.inserted if dialect == "mysql" else ins.excluded
    update = {c: new[c] for c in cols} | ({"name": sa.literal("updated")} if extra else {})
    if dialect == "mysql":
        return ins.on_duplicate_key_update(update)
    return ins.on_conflict_do_update(index_elements=["id"], set_=update)


def test_rows_as_tuples_are_the_rows_the_statement_writes(
    database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _both_ways(database(), monkeypatch, extra=False)


def test_a_statement_with_a_parameter_of_its_own_is_executed_by_sqlalchemy(
    sqlite_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """(Not on MariaDB: PyMySQL's executemany takes no parameter after VALUES, so the upsert
    has none there either.)"""
    _both_ways(sqlite_database(), monkeypatch, extra=True)


def _both_ways(url: str, monkeypatch: pytest.MonkeyPatch, *, extra: bool) -> None:
    engine = h.engine(url)  # (`mysql://` becomes PyMySQL's URL)
    dialect = engine.dialect.name
    try:
        with engine.begin() as conn:
            for name in ("by_rows", "by_dicts"):
                conn.exec_driver_sql(
                    f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, name VARCHAR(40), "
                    f"at {TIME[dialect]} NULL, flag BOOLEAN)"
                )
                conn.exec_driver_sql(f"INSERT INTO {name} (id, name) VALUES (2, 'before')")  # updated
        meta = sa.MetaData()
        tables = {n: sa.Table(n, meta, autoload_with=engine) for n in ("by_rows", "by_dicts")}
        data = pa.table(ROWS)
        driver_calls: list[str] = []
        real = sa.Connection.exec_driver_sql

        def spy(self: sa.Connection, statement: str, *args: Any, **kwargs: Any) -> Any:
            driver_calls.append(statement)
            return real(self, statement, *args, **kwargs)

        monkeypatch.setattr(sa.Connection, "exec_driver_sql", spy)
        for name, table in tables.items():
            stmt = _upsert(dialect, table, extra)
            with engine.begin() as conn:
                if name == "by_rows":
                    arrow_rows.execute(conn, stmt, table, data)
                else:
                    conn.execute(stmt, data.to_pylist())
        with engine.connect() as conn:
            got = [tuple(r) for r in conn.execute(sa.text("SELECT * FROM by_rows ORDER BY id"))]
            want = [tuple(r) for r in conn.execute(sa.text("SELECT * FROM by_dicts ORDER BY id"))]
    finally:
        engine.dispose()
    assert got == want
    assert [r[0] for r in got] == [1, 2, 3, 4]
    assert got[1][1] == ("updated" if extra else ROWS["name"][1])  # the existing row, updated
    assert got[0][2] in (ROWS["at"][0], "2024-01-02 03:04:05.123456")  # SQLite keeps the text
    assert len(driver_calls) == (0 if extra else 1), driver_calls  # the driver's executemany
