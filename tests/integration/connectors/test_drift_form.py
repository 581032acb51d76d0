"""The drift digest's property test: for every column kind, Python's `DriftForm.of` over the
values mapsync writes equals the digest PostgreSQL and MariaDB compute server-side over the
stored rows (and SQLite's joined text, hashed by the client). Seeded random values, ~200 rows
per table, the edge cases planted first."""

from __future__ import annotations

import datetime as dt
import decimal
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mapsync import records
from mapsync.connectors.drift_form import DriftForm, bucket, frame, hex_int_sql, md5_hex
from mapsync.connectors.sql import SqlDatabase
from mapsync.connectors.sql_destination import SqlDestination
from mapsync.mapping import constraint_check
from mapsync.sheet import models

ROWS = 200

_TYPES = {  # column → DDL per dialect
    "postgresql": {
        "t": "VARCHAR(40)",
        "ch": "CHAR(6)",
        "n": "BIGINT",
        "flag": "BOOLEAN",
        "d0": "NUMERIC(18,0)",
        "d2": "NUMERIC(14,2)",
        "d6": "NUMERIC(20,6)",
        "ts": "TIMESTAMP(6)",
        "ts0": "TIMESTAMP(0)",
        "tz": "TIMESTAMPTZ",
        "day": "DATE",
        "tm": "TIME",
        "bin": "BYTEA",
        "f": "DOUBLE PRECISION",
    },
    "mysql": {
        "t": "VARCHAR(40)",
        "ch": "CHAR(6)",
        "n": "BIGINT",
        "flag": "TINYINT(1)",
        "d0": "DECIMAL(18,0)",
        "d2": "DECIMAL(14,2)",
        "d6": "DECIMAL(20,6)",
        "ts": "DATETIME(6)",
        "ts0": "DATETIME",
        "tz": "TIMESTAMP(6) NULL",
        "day": "DATE",
        "tm": "TIME(6)",
        "bin": "VARBINARY(40)",
        "f": "DOUBLE",
    },
    "sqlite": {
        "t": "VARCHAR(40)",
        "ch": "CHAR(6)",
        "n": "BIGINT",
        "flag": "BOOLEAN",
        "d0": "NUMERIC(18,0)",
        "d2": "NUMERIC(14,2)",
        "d6": "NUMERIC(20,6)",
        "ts": "TIMESTAMP",
        "ts0": "TIMESTAMP",
        "tz": "TIMESTAMP",
        "day": "DATE",
        "tm": "TIME",
        "bin": "BLOB",
        "f": "FLOAT",
    },
}
EDGES: list[dict[str, Any]] = [
    {"t": "", "ch": "", "n": 0, "flag": False, "d0": decimal.Decimal(0), "d2": decimal.Decimal("0.00")},
    {"t": None, "ch": None, "n": None, "flag": None, "d0": None, "d2": None, "d6": None, "ts": None},
    {"t": "a, b:1,-", "ch": "ab  ", "n": -(2**62), "flag": True, "d2": decimal.Decimal("-12.30")},
    {"t": "trail  ", "ch": "x", "n": 2**62, "d0": decimal.Decimal("100"), "d6": decimal.Decimal("-0.000001")},
    {"t": "é漢字🙂", "d2": decimal.Decimal("100.00"), "d6": decimal.Decimal("12345678901234.5")},
    {"d2": decimal.Decimal("7.10"), "d6": decimal.Decimal("1E-6"), "d0": decimal.Decimal("2.000")},
    {"ts": dt.datetime(2024, 2, 29, 23, 59, 59), "ts0": dt.datetime(2024, 1, 1, 0, 0, 0, 999999)},  # noqa: DTZ001 (naive columns)
    {"tz": dt.datetime(2024, 3, 31, 1, 30, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))},
    {"bin": b"", "tm": dt.time(0, 0), "day": dt.date(1970, 1, 1)},
    {"bin": b"\x00\xff\x10", "tm": dt.time(23, 59, 59, 1), "day": dt.date(2099, 12, 31)},
    # texts the mapping passes through uncoerced (SQLite's TIME is text): the database parses them
    {"tm": "10:30:00"},
    {"tm": "23:59:59.000001"},
    {"tm": "07:05"},
]


def _random_row(rng: random.Random, cols: list[str]) -> dict[str, Any]:
    def text() -> str:
        alphabet = "ab ,:-\\'\"é漢🙂0"
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))

    def dec(scale: int) -> decimal.Decimal:
        digits = rng.randint(0, 12)
        return decimal.Decimal(rng.randint(-(10**digits), 10**digits)).scaleb(-rng.randint(0, scale))

    def when() -> dt.datetime:
        return dt.datetime(2000, 1, 1) + dt.timedelta(  # noqa: DTZ001 (naive columns)
            seconds=rng.randint(0, 10**9), microseconds=rng.choice([0, rng.randint(0, 999999)])
        )

    make: dict[str, Callable[[], Any]] = {
        "t": text,
        "ch": lambda: text()[:6],
        "n": lambda: rng.randint(-(2**63), 2**63 - 1),
        "flag": lambda: rng.random() < 0.5,
        "d0": lambda: dec(0),
        "d2": lambda: dec(2),
        "d6": lambda: dec(6),
        "ts": when,
        "ts0": when,
        "tz": lambda: when().replace(tzinfo=dt.UTC) + dt.timedelta(hours=rng.randint(-12, 12)),
        "day": lambda: when().date(),
        "tm": lambda: when().time(),
        "bin": lambda: rng.randbytes(rng.randint(0, 20)),
        "f": lambda: rng.random(),
    }
    return {c: None if rng.random() < 0.1 else make[c]() for c in cols}


def _world(url: str, tmp_path: Path) -> tuple[SqlDatabase, sa.Table, DriftForm, list[dict[str, Any]]]:
    db = SqlDatabase("dest", url, tmp_path)
    types = _TYPES[db.dialect]
    q = db.engine.dialect.identifier_preparer.quote
    with db.engine.begin() as conn:
        cols = ", ".join(f"{q(c)} {ddl}" for c, ddl in types.items())
        conn.exec_driver_sql(f"CREATE TABLE drift_t ({q('id')} INTEGER PRIMARY KEY, {cols})")
    table = db.table("drift_t", "test")
    columns = db.columns(table)
    checks = {c: constraint_check(c, columns[c]) for c in columns}
    rng = random.Random(18)
    names = list(types)
    rows = []
    for i in range(ROWS):
        raw = {**_random_row(rng, names), **(EDGES[i] if i < len(EDGES) else {})}
        # SQLAlchemy's SQLite TIME refuses a text (the write rejects the row: no digest needed)
        if db.dialect == "sqlite" and isinstance(raw["tm"], str):
            raw["tm"] = dt.time.fromisoformat(raw["tm"])
        rows.append({"id": i, **{c: checks[c](v) for c, v in raw.items()}})  # as mapsync writes them
    with db.engine.begin() as conn:
        conn.execute(sa.insert(table), rows)
    form = DriftForm(["id"], names, columns)
    return db, table, form, rows


@pytest.mark.parametrize("dialect", ["postgresql", "mysql", "sqlite"])
def test_python_digest_equals_sql_digest_for_every_kind(
    dialect: str, pg_database: Any, mariadb_database: Any, sqlite_database: Any, tmp_path: Path
) -> None:
    url = {"postgresql": pg_database, "mysql": mariadb_database, "sqlite": sqlite_database}[dialect]()
    db, table, form, rows = _world(url, tmp_path)
    assert form.notes == [f"column f ({form_type(db, table)}) is not digested (drift not compared)"]
    assert "f" not in form.owned and "id" in form.owned
    dkey, digest, client = form.sql(db.dialect, lambda c: table.c[c])
    text = form.form_sql(db.dialect, lambda c: table.c[c], form.owned)
    query = sa.select(table.c.id, dkey, digest, text).order_by(table.c.id)
    if not client:
        query = query.add_columns(
            form.bucket_sql(db.dialect, lambda c: table.c[c], 4096), hex_int_sql(digest, 15)
        )
    with db.engine.connect() as conn:
        got = conn.execute(query).all()
    assert len(got) == ROWS
    for row, (ident, sql_key, sql_digest, sql_text, *buck) in zip(rows, got, strict=True):
        want_key, want_digest = form.of(row)
        if client:
            sql_key, sql_digest = md5_hex(sql_key), md5_hex(sql_digest)
        want_text = frame(form.texts(row, form.owned))
        assert sql_text == want_text, [
            (n, a, b)
            for n, a, b in zip(form.owned, sql_text.split(","), want_text.split(","), strict=False)
            if a != b
        ]
        assert (ident, sql_key, sql_digest) == (row["id"], want_key, want_digest)
        if buck:
            assert buck == [bucket(want_key, 4096), int(want_digest[:15], 16)]
    db.close()


def form_type(db: SqlDatabase, table: sa.Table) -> str:
    return db.columns(table)["f"].type_name


# --------------------------------------------------------------------------- at delivery

SYNC = models.SyncConfig.model_validate(
    {
        "from": {"connection": "src", "table": "items"},
        "to": {"connection": "dst", "table": "items"},
        "key": {"from": "code", "to": "code"},
        "fields": {"name": "name", "amount": "amount", "seen": "seen"},
        "changes": {"method": "full"},
    }
)


def _up(i: int, name: str) -> records.Mapped:
    values = {
        "code": f"k{i:04d}",
        "name": name,
        "amount": decimal.Decimal(i).scaleb(-2),
        "seen": dt.datetime(2026, 1, 1, 12, 0, 0, i),  # noqa: DTZ001 (a naive column)
    }
    return records.Mapped("upsert", (values["code"],), (values["code"],), None, values, {}, "h")


def _stored_pairs(db: SqlDatabase, dest: SqlDestination) -> dict[str, tuple[str, str]]:
    assert dest.drift_form is not None
    table = dest.main.table
    dkey, digest, client = dest.drift_form.sql(db.dialect, lambda c: table.c[c])
    with db.engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.code, dkey, digest)).all()
    return {c: (md5_hex(k), md5_hex(d)) if client else (k, d) for c, k, d in rows}


@pytest.mark.parametrize(
    ("dialect", "size", "fresh"),
    [
        ("postgresql", 5, False),
        ("postgresql", 300, False),
        ("postgresql", 300, True),
        ("mysql", 50, False),
        ("sqlite", 50, False),
    ],
)
def test_each_confirmed_upsert_carries_the_digest_of_the_stored_row(
    dialect: str,
    size: int,
    fresh: bool,
    pg_database: Any,
    mariadb_database: Any,
    sqlite_database: Any,
    tmp_path: Path,
) -> None:
    """The normal upsert, PostgreSQL's COPY through a stage and its straight COPY of a seed: the
    pair a Delivered carries is the pair the server computes from the row it stored."""
    url = {"postgresql": pg_database, "mysql": mariadb_database, "sqlite": sqlite_database}[dialect]()
    db = SqlDatabase("dst", url, tmp_path)
    seen = "TIMESTAMP(6)" if dialect != "mysql" else "DATETIME(6)"
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE items (code VARCHAR(20) PRIMARY KEY, name VARCHAR(50), amount NUMERIC(12,2), seen {seen})"
        )
    dest = SqlDestination(db, "items", SYNC)
    result = dest.write([_up(i, f"n{i} ") for i in range(size)], fresh=fresh)
    assert not result.rejected and len(result.delivered) == size
    stored = _stored_pairs(db, dest)
    assert {d.key[0]: d.drift for d in result.delivered} == stored
    # a second write: one row changed, one deleted; the delete carries no pair
    again = dest.write(
        [
            _up(1, "changed"),
            records.Mapped("delete", ("k0002",), ("k0002",), None, {"code": "k0002"}, {}, "deleted"),
        ]
    )
    pairs = {d.key[0]: d.drift for d in again.delivered}
    after = _stored_pairs(db, dest)
    assert pairs == {"k0001": after["k0001"], "k0002": None}
    assert after["k0001"] != stored["k0001"] and "k0002" not in after
    db.close()


TIMED = models.SyncConfig.model_validate(
    {
        "from": {"connection": "src", "table": "shifts"},
        "to": {"connection": "dst", "table": "shifts"},
        "key": {"from": "code", "to": "code"},
        "fields": {"starts": "starts"},
        "changes": {"method": "full"},
    }
)


def test_a_text_into_a_time_column_is_written_digested_and_an_unreadable_one_undigested(
    mariadb_database: Any, tmp_path: Path
) -> None:
    """Review finding 1: SQLite's TIME is text and the mapping passes it through; the digest
    raised TypeError after the rows were written, failing every run. A text the form reads gets
    the server's pair; one it cannot read ('1 10:30:00', MariaDB's day form) is written and marked
    not comparable (its dkey and `UNCOMPARED`), never an exception."""
    db = SqlDatabase("dst", mariadb_database(), tmp_path)
    with db.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE shifts (code VARCHAR(20) PRIMARY KEY, starts TIME(6))")
    dest = SqlDestination(db, "shifts", TIMED)

    def up(code: str, starts: Any) -> records.Mapped:
        values = {"code": code, "starts": starts}
        return records.Mapped("upsert", (code,), (code,), None, values, {}, "h")

    result = dest.write([up("a", "10:30:00"), up("b", dt.time(7, 5)), up("c", "1 10:30:00")])
    assert not result.rejected
    pairs = {d.key[0]: d.drift for d in result.delivered}
    table = dest.main.table
    assert dest.drift_form is not None
    dkey, digest, _ = dest.drift_form.sql(db.dialect, lambda c: table.c[c])
    with db.engine.connect() as conn:
        stored = {c: (k, g) for c, k, g in conn.execute(sa.select(table.c.code, dkey, digest))}
    assert pairs == {"a": stored["a"], "b": stored["b"], "c": (stored["c"][0], records.UNCOMPARED)}
    db.close()


def test_a_row_written_without_a_digested_column_clears_the_pair(
    sqlite_database: Any, tmp_path: Path
) -> None:
    """Review finding 2: a row written without a digested column carried no pair, and the ledger
    kept the old one (a false "changed" no repair clears); it carries its dkey and `UNCOMPARED`
    now: a drift check leaves it out and says so (a backfill would never digest it, so it is not
    "undigested"). A delete still carries none (the ledger keeps its pair)."""
    db = SqlDatabase("dst", sqlite_database(), tmp_path)
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE items (code VARCHAR(20) PRIMARY KEY, name VARCHAR(50), amount NUMERIC(12,2), "
            "seen TIMESTAMP)"
        )
    dest = SqlDestination(db, "items", SYNC)
    first = dest.write([_up(1, "full")])
    assert first.delivered[0].drift not in (None, records.NO_DRIFT)
    omitted = _up(1, "ignored")
    del omitted.values["name"]  # as `on_null: omit` leaves a NULL name out of the write
    gone = records.Mapped("delete", ("k0002",), ("k0002",), None, {"code": "k0002"}, {}, "deleted")
    again = dest.write([omitted, gone])
    dkey = first.delivered[0].drift[0]  # type: ignore[index]
    assert {d.key[0]: d.drift for d in again.delivered} == {
        "k0001": (dkey, records.UNCOMPARED),
        "k0002": None,
    }
    db.close()


def test_a_field_on_null_omit_may_leave_out_is_not_in_the_digest(
    sqlite_database: Any, tmp_path: Path
) -> None:
    """Second review: with `on_null: omit` a write may leave `name` out (the destination keeps its
    own value), so `name` is not digested at all: a row written with or without it has one pair,
    and the form says the column is not compared."""
    db = SqlDatabase("dst", sqlite_database(), tmp_path)
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE items (code VARCHAR(20) PRIMARY KEY, name VARCHAR(50), amount NUMERIC(12,2), "
            "seen TIMESTAMP)"
        )
    data = SYNC.model_dump(by_alias=True, exclude_unset=True)
    omit = models.SyncConfig.model_validate(
        {**data, "fields": {**data["fields"], "name": {"from": "name", "on_null": "omit"}}}
    )
    dest = SqlDestination(db, "items", omit)
    assert dest.drift_form is not None and dest.drift_form.owned == ["amount", "code", "seen"]
    assert any("name is not compared" in n for n in dest.drift_form.notes)
    full = dest.write([_up(1, "full")]).delivered[0].drift
    omitted = _up(1, "ignored")
    del omitted.values["name"]
    assert (
        dest.write([omitted]).delivered[0].drift == full
        and full is not None
        and full[1] != records.UNCOMPARED
    )
    db.close()
