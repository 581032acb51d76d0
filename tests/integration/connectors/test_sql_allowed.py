"""Allowed values the destination declares are read from the real catalogs and checked before
sending: PostgreSQL CHECK `IN` (stored as `= ANY (ARRAY[…])`) on text and varchar, enum types;
MariaDB `ENUM(…)` columns and CHECK `IN`. A value outside them is a record error naming field,
value and the allowed list, not a database exception."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mapsync.allowed import parse_check
from mapsync.connectors.sql import SqlDatabase
from mapsync.engine import Engine
from mapsync.sheet import loader
from mapsync.state.store import StateStore
from tests import helpers as h

PG_TABLE = (
    "CREATE TYPE mood AS ENUM ('happy', 'sad')",
    "CREATE TABLE accounts (ref INTEGER PRIMARY KEY, "
    "status TEXT CHECK (status IN ('A', 'I')), "
    "kind VARCHAR(10) CONSTRAINT kind_ok CHECK (kind IN ('b2b', 'b2c', 'it''s')), "
    "level INTEGER CHECK (level IN (1, 2, 3)), "
    "feeling mood, "
    "score INTEGER CHECK (score > 0 AND score < 10))",
)
MARIADB_TABLE = (
    "CREATE TABLE accounts (ref INTEGER PRIMARY KEY, "
    "status ENUM('A', 'I'), "
    "kind VARCHAR(10) CHECK (kind IN ('b2b', 'b2c', 'it''s')), "
    "level INTEGER CHECK (level IN (1, 2, 3)), "
    "feeling VARCHAR(10), "
    "score INTEGER CHECK (score > 0 AND score < 10))",
)


@pytest.fixture(
    params=[
        pytest.param("pg_database", id="postgresql", marks=pytest.mark.postgres),
        pytest.param("mariadb_database", id="mariadb", marks=pytest.mark.mariadb),
    ]
)
def dst(request: pytest.FixtureRequest) -> str:
    make: Callable[[], str] = request.getfixturevalue(request.param)
    url = make()
    h.execute(url, *(PG_TABLE if request.param == "pg_database" else MARIADB_TABLE))
    return url


def test_the_catalog_yields_the_allowed_values(dst: str, tmp_path: Path) -> None:
    db = SqlDatabase("portal", dst, tmp_path)
    try:
        cols = db.columns(db.table("accounts", "test"))
    finally:
        db.close()
    assert cols["status"].allowed == ("A", "I")
    assert cols["kind"].allowed == ("b2b", "b2c", "it's")
    assert cols["level"].allowed == ("1", "2", "3")
    assert cols["feeling"].allowed == (("happy", "sad") if h.dialect(dst) == "postgresql" else None)
    assert cols["score"].allowed is None  # a range check is left to the database
    assert cols["ref"].allowed is None


SHEET = """
version: 1
connections:
  erp: {{url: "{src}"}}
  portal: {{url: "{dst}"}}
syncs:
  customers:
    from: {{connection: erp, table: customers}}
    to: {{connection: portal, table: accounts}}
    key: {{from: id, to: ref}}
    fields:
      status: {{from: status, map: {{active: A, inactive: I, closed: C}}}}
      kind: kind
      level: level
    changes: {{method: full}}
"""


def test_a_value_outside_them_is_a_record_error_not_a_database_exception(dst: str, tmp_path: Path) -> None:
    src = f"sqlite:///{tmp_path / 'erp.db'}"
    h.execute(src, "CREATE TABLE customers (id INTEGER PRIMARY KEY, status TEXT, kind TEXT, level TEXT)")
    rows = [
        (1, "active", "b2b", "1"),
        (2, "closed", "b2c", "2"),  # maps to C: not allowed by the destination
        (3, "inactive", "retail", "3"),  # kind not allowed
        (4, "inactive", "it's", "4"),  # level not allowed
        (5, "active", None, None),  # NULL passes (the column is nullable)
    ]
    h.execute(
        src,
        "INSERT INTO customers VALUES (:id, :status, :kind, :level)",
        params=[dict(zip(("id", "status", "kind", "level"), r, strict=True)) for r in rows],
    )
    (tmp_path / "sheet.yaml").write_text(SHEET.format(src=src, dst=dst))
    store = StateStore.open("sqlite:///state.db", tmp_path, create=True)
    engine = Engine(loader.load(tmp_path / "sheet.yaml", env={}), store)
    try:
        report = engine.run("customers", "seed")
    finally:
        engine.close()
        store.close()
    assert report.status == "partial"
    assert (report.counts.written, report.counts.rejected) == (2, 3)
    messages = {s.key[0]: (s.field, s.rule, s.message) for s in report.samples}
    assert messages == {
        2: ("status", "allowed", "field `status` value 'C' not allowed (destination allows A, I)"),
        3: ("kind", "allowed", "field `kind` value 'retail' not allowed (destination allows b2b, b2c, it's)"),
        4: ("level", "allowed", "field `level` value 4 not allowed (destination allows 1, 2, 3)"),
    }
    assert sorted(h.query(dst, "SELECT ref, status, kind, level FROM accounts")) == [
        (1, "A", "b2b", 1),
        (5, "A", None, None),
    ]


@pytest.mark.parametrize(
    ("sqltext", "expected"),
    [
        ("status = ANY (ARRAY['A'::text, 'B'::text])", ("status", ("A", "B"))),
        (
            "((kind)::text = ANY ((ARRAY['a'::character varying, 'b''c'::character varying])::text[]))",
            ("kind", ("a", "b'c")),
        ),
        ("`status` in ('A','B')", ("status", ("A", "B"))),
        ("(status IN ('a)b', 'c'))", ("status", ("a)b", "c"))),
        ("level IN (1, -2, 3.5)", ("level", ("1", "-2", "3.5"))),
        ("level > 0", None),
        ("status IN ('A') OR status IS NULL", None),
        ("status IN (lower('A'))", None),
        ("json_valid(`doc`)", None),
    ],
)
def test_only_one_column_list_checks_are_read(sqltext: str, expected: object) -> None:
    assert parse_check(sqltext) == expected
