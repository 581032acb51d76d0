"""Bulk upsert by natural key: a batch ends as the source ended, on every backend and every path.

`SqlDestination.write` is called directly with mapped records. A key repeated in one batch keeps
its last value in one row; a delete followed by a re-insert leaves the row present. On
PostgreSQL, batches of `COPY_THRESHOLD` rows or more go COPY → session temp table →
`INSERT … ON CONFLICT`, and a seed into an empty table (`fresh=True`) COPYs straight in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from mapsync import records
from mapsync.connectors import arrow_copy, sql_copy
from mapsync.connectors.sql import SqlDatabase
from mapsync.connectors.sql_destination import COPY_THRESHOLD, SqlDestination
from mapsync.engine import Engine
from mapsync.sheet import loader, models
from mapsync.state.store import StateStore
from tests import helpers as h

CFG = models.SyncConfig.model_validate(
    {
        "from": {"connection": "src", "table": "items"},
        "to": {"connection": "dst", "table": "items"},
        "key": {"from": "code", "to": "code"},
        "fields": {"name": "name", "qty": "qty"},
        "changes": {"method": "full"},
    }
)


def up(code: str, name: str, qty: int = 1) -> records.Mapped:
    values = {"code": code, "name": name, "qty": qty}
    return records.Mapped("upsert", (code,), (code,), None, values, {}, records.content_hash(values))


def gone(code: str) -> records.Mapped:
    return records.Mapped("delete", (code,), (code,), None, {"code": code}, {}, "deleted")


def table_ddl(d: str, surrogate: bool = False) -> str:
    if surrogate:  # a surrogate id the sync never writes, the natural key under a unique index
        ident = {
            "postgresql": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
            "mysql": "BIGINT AUTO_INCREMENT PRIMARY KEY",
            "sqlite": "INTEGER PRIMARY KEY AUTOINCREMENT",
        }[d]
        return (
            f"CREATE TABLE items (id {ident}, code VARCHAR(20) NOT NULL UNIQUE, "
            "name VARCHAR(50) NOT NULL, qty INTEGER NOT NULL)"
        )
    return (
        "CREATE TABLE items (code VARCHAR(20) PRIMARY KEY, name VARCHAR(50) NOT NULL, qty INTEGER NOT NULL)"
    )


@pytest.fixture
def make_dest(tmp_path: Path) -> Iterator[Callable[..., SqlDestination]]:
    opened: list[SqlDatabase] = []

    def make(
        url: str, *, surrogate: bool = False, rows: Sequence[tuple[str, str, int]] = ()
    ) -> SqlDestination:
        h.execute(url, table_ddl(h.dialect(url), surrogate))
        if rows:
            h.execute(
                url,
                "INSERT INTO items (code, name, qty) VALUES (:c, :n, :q)",
                params=[{"c": c, "n": n, "q": q} for c, n, q in rows],
            )
        h.install_write_counter(url, "items")
        db = SqlDatabase("dst", url, tmp_path)
        opened.append(db)
        return SqlDestination(db, "items", CFG)

    yield make
    for db in opened:
        db.close()


def contents(url: str) -> dict[str, tuple[str, int]]:
    return {c: (n, int(q)) for c, n, q in h.query(url, "SELECT code, name, qty FROM items")}


def count(url: str) -> int:
    return int(h.query(url, "SELECT COUNT(*) FROM items")[0][0])


def delivered_keys(result: records.WriteResult) -> list[str]:
    return [d.key[0] for d in result.delivered]


@pytest.fixture
def copy_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """Spy on the PostgreSQL COPY paths, text (records) and binary (a columnar seed's Arrow
    table): (rows, fresh) of every call."""
    calls: list[tuple[int, bool]] = []
    original, arrow = sql_copy.pg_copy, arrow_copy.pg_copy_arrow

    def spy(*args: Any, fresh: bool, **kwargs: Any) -> None:
        calls.append((len(args[5]), fresh))  # (conn, qualified, quote, key, cols, rows)
        original(*args, fresh=fresh, **kwargs)

    def arrow_spy(*args: Any, fresh: bool, **kwargs: Any) -> None:
        calls.append((args[4].num_rows, fresh))  # (conn, qualified, quote, key, data)
        arrow(*args, fresh=fresh, **kwargs)

    monkeypatch.setattr(sql_copy, "pg_copy", spy)
    monkeypatch.setattr(arrow_copy, "pg_copy_arrow", arrow_spy)
    return calls


# --------------------------------------------------------------------------- every backend


def test_key_three_times_in_one_batch_keeps_the_last_value(
    database: Callable[[], str], make_dest: Callable[..., SqlDestination]
) -> None:
    url = database()
    dest = make_dest(url, rows=[("K", "before", 0), ("other", "untouched", 5)])
    batch = [up("K", "first", 1), up("A", "a", 1), up("K", "second", 2), up("K", "third", 3)]
    result = dest.write(batch)
    assert not result.rejected
    assert sorted(delivered_keys(result)) == ["A", "K", "K", "K"]  # every change of K is confirmed
    assert contents(url) == {"K": ("third", 3), "A": ("a", 1), "other": ("untouched", 5)}
    # one row for K, written once: the earlier values never reach the table
    assert count(url) == 3
    assert h.writes(url) == 2


def test_new_key_three_times_in_one_batch_is_one_row(
    database: Callable[[], str], make_dest: Callable[..., SqlDestination]
) -> None:
    url = database()
    dest = make_dest(url)
    result = dest.write([up("N", "v1", 1), up("N", "v2", 2), up("N", "v3", 3)])
    assert not result.rejected and len(result.delivered) == 3
    assert contents(url) == {"N": ("v3", 3)}
    assert h.writes(url) == 1


def test_delete_then_reinsert_in_one_batch_leaves_the_row(
    database: Callable[[], str], make_dest: Callable[..., SqlDestination]
) -> None:
    url = database()
    dest = make_dest(url, rows=[("D", "old", 1), ("E", "old", 1)])
    result = dest.write([gone("D"), up("E", "new-e", 2), up("D", "back", 7)])
    assert not result.rejected
    assert contents(url) == {"D": ("back", 7), "E": ("new-e", 2)}
    ops = {(d.key[0], d.op) for d in result.delivered}
    assert ops == {("D", "delete"), ("D", "upsert"), ("E", "upsert")}


def test_reinsert_then_delete_in_one_batch_ends_deleted(
    database: Callable[[], str], make_dest: Callable[..., SqlDestination]
) -> None:
    url = database()
    dest = make_dest(url, rows=[("D", "old", 1)])
    result = dest.write([up("D", "changed", 2), gone("D"), up("F", "f", 1)])
    assert not result.rejected
    assert contents(url) == {"F": ("f", 1)}


def test_upsert_against_a_unique_index_beside_a_surrogate_id(
    database: Callable[[], str], make_dest: Callable[..., SqlDestination]
) -> None:
    url = database()
    dest = make_dest(url, surrogate=True, rows=[("S", "old", 1)])
    result = dest.write([up("S", "x", 1), up("T", "t", 1), up("S", "y", 2), gone("T"), up("T", "t2", 3)])
    assert not result.rejected
    assert contents(url) == {"S": ("y", 2), "T": ("t2", 3)}
    ids = h.query(url, "SELECT id FROM items WHERE code = 'S'")
    assert len(ids) == 1  # updated in place, not re-inserted under a new surrogate id


# --------------------------------------------------------------------------- PostgreSQL bulk paths


def _big_batch(n: int, tag: str) -> list[records.Mapped]:
    batch = [up(f"k{i:04d}", f"{tag}-{i}", i) for i in range(n)]
    batch += [up("k0007", f"{tag}-7a", 70), up("k0007", f"{tag}-7b", 71)]  # k0007 three times
    batch += [gone("k0008"), up("k0008", f"{tag}-8-again", 80)]  # delete then re-insert
    return batch


@pytest.mark.postgres
@pytest.mark.parametrize("surrogate", [False, True], ids=["natural-pk", "identity-pk"])
def test_pg_copy_stage_upsert(
    pg_database: Callable[[], str],
    make_dest: Callable[..., SqlDestination],
    copy_calls: list[tuple[int, bool]],
    surrogate: bool,
) -> None:
    url = pg_database()
    existing = [(f"k{i:04d}", "old", -1) for i in range(0, 300, 3)]  # every third key exists
    dest = make_dest(url, surrogate=surrogate, rows=existing)
    n = 300
    assert n >= COPY_THRESHOLD
    result = dest.write(_big_batch(n, "b1"))
    assert not result.rejected, result.rejected[:3]
    assert copy_calls == [(n, False)]  # one COPY into the stage, not straight into the table
    want = {f"k{i:04d}": (f"b1-{i}", i) for i in range(n)}
    want["k0007"] = ("b1-7b", 71)
    want["k0008"] = ("b1-8-again", 80)
    assert contents(url) == want
    assert h.writes(url) == n  # 100 updates + 200 inserts, each row once

    # a second bulk batch on the same pooled session: the stage table is reused and empty
    second = [up(f"k{i:04d}", f"b2-{i}", 1000 + i) for i in range(100, 100 + n)]
    result = dest.write(second)
    assert not result.rejected, result.rejected[:3]
    assert copy_calls == [(n, False), (n, False)]
    want.update({f"k{i:04d}": (f"b2-{i}", 1000 + i) for i in range(100, 100 + n)})
    assert contents(url) == want
    assert h.writes(url) == 2 * n
    if surrogate:
        assert h.query(url, "SELECT COUNT(DISTINCT id) FROM items")[0][0] == len(want)


@pytest.mark.postgres
def test_pg_copy_straight_into_an_empty_table_when_fresh(
    pg_database: Callable[[], str],
    make_dest: Callable[..., SqlDestination],
    copy_calls: list[tuple[int, bool]],
) -> None:
    url = pg_database()
    dest = make_dest(url)
    assert dest.is_empty()
    n = 250
    result = dest.write(_big_batch(n, "s"), fresh=True)
    assert not result.rejected, result.rejected[:3]
    assert copy_calls == [(n, True)]
    want = {f"k{i:04d}": (f"s-{i}", i) for i in range(n)}
    want["k0007"] = ("s-7b", 71)
    want["k0008"] = ("s-8-again", 80)
    assert contents(url) == want
    assert h.writes(url) == n
    assert len(result.delivered) == n + 4


@pytest.mark.postgres
def test_pg_fresh_copy_that_conflicts_falls_back_to_upsert(
    pg_database: Callable[[], str],
    make_dest: Callable[..., SqlDestination],
    copy_calls: list[tuple[int, bool]],
) -> None:
    """`fresh` is a promise of an empty table; if it is broken, nothing is lost or doubled."""
    url = pg_database()
    dest = make_dest(url, rows=[("k0005", "already", 0)])
    result = dest.write([up(f"k{i:04d}", f"v{i}", i) for i in range(210)], fresh=True)
    assert not result.rejected, result.rejected[:3]
    assert copy_calls[0] == (210, True)
    assert contents(url) == {f"k{i:04d}": (f"v{i}", i) for i in range(210)}


@pytest.mark.postgres
def test_pg_small_batch_uses_plain_upsert(
    pg_database: Callable[[], str],
    make_dest: Callable[..., SqlDestination],
    copy_calls: list[tuple[int, bool]],
) -> None:
    url = pg_database()
    dest = make_dest(url, rows=[("a", "old", 0)])
    result = dest.write([up("a", "new", 1), gone("b"), up("b", "b", 2), up("a", "newer", 3)])
    assert not result.rejected
    assert copy_calls == []
    assert contents(url) == {"a": ("newer", 3), "b": ("b", 2)}


# --------------------------------------------------------------------------- through the engine

SHEET = """
version: 1
connections:
  src: {{url: "{src}"}}
  dst: {{url: "{dst}"}}
syncs:
  items:
    from: {{connection: src, table: items}}
    to: {{connection: dst, table: items}}
    key: {{from: code, to: code}}
    fields: {{name: name, qty: qty}}
    changes: {{method: full}}
    delivery: {{batch: {batch}}}
"""


def test_seed_and_full_runs_in_bulk(
    database: Callable[[], str], tmp_path: Path, copy_calls: list[tuple[int, bool]]
) -> None:
    """A 300-row seed (straight COPY on PostgreSQL) and a 250-row change run (staged upsert)."""
    src, dst = database(), database()
    d = h.dialect(src)
    h.execute(src, table_ddl(d))
    h.execute(dst, table_ddl(d))
    h.install_write_counter(dst, "items")
    rows = [{"c": f"k{i:04d}", "n": f"n{i}", "q": i} for i in range(300)]
    h.execute(src, "INSERT INTO items (code, name, qty) VALUES (:c, :n, :q)", params=rows)
    (tmp_path / "sheet.yaml").write_text(SHEET.format(src=src, dst=dst, batch=1000))
    loaded = loader.load(tmp_path / "sheet.yaml")
    store = StateStore.open(loaded.sheet.state.url, tmp_path, create=True)
    engine = Engine(loaded, store)
    try:
        seeded = engine.run("items", "seed")
        assert seeded.status == "success" and seeded.counts.written == 300
        assert contents(dst) == contents(src)
        assert h.writes(dst) == 300

        h.execute(src, "UPDATE items SET qty = qty + 1000 WHERE qty >= 50")  # 250 changed rows
        ran = engine.run("items", "run")
        assert ran.status == "success"
        assert (ran.counts.written, ran.counts.skipped) == (250, 50)
    finally:
        engine.close()
        store.close()
    assert contents(dst) == contents(src)
    assert h.writes(dst) == 550
    assert copy_calls == ([(300, True), (250, False)] if d == "postgresql" else [])


@pytest.mark.parametrize("rows_per_set", [2, COPY_THRESHOLD])
def test_rows_without_some_fields_leave_those_columns_alone(
    database: Callable[[], str], make_dest: Callable[..., SqlDestination], rows_per_set: int
) -> None:
    """`on_null: omit` drops a field from some records: one batch mixes column sets, and each
    row keeps the destination's value of the columns it does not carry (also via COPY)."""
    url = database()
    keep = [(f"k{i:04d}", f"old {i}", i) for i in range(rows_per_set)]
    dest = make_dest(url, rows=keep)

    def partial(code: str, **values: Any) -> records.Mapped:
        values = {"code": code, **values}
        return records.Mapped("upsert", (code,), (code,), None, values, {}, records.content_hash(values))

    batch = [
        partial(code, qty=q + 100) if i % 2 else partial(code, name=f"new {i}")
        for i, (code, _, q) in enumerate(keep)
    ]
    result = dest.write(batch)
    assert not result.rejected and len(result.delivered) == rows_per_set
    expected = {
        code: ((name, q + 100) if i % 2 else (f"new {i}", q)) for i, (code, name, q) in enumerate(keep)
    }
    assert contents(url) == expected


def test_a_new_row_without_a_not_null_column_is_refused_alone(
    database: Callable[[], str], make_dest: Callable[..., SqlDestination]
) -> None:
    url = database()
    dest = make_dest(url, rows=[("K", "kept", 1)])
    values = [{"code": "K", "qty": 2}, {"code": "NEW", "qty": 3}]
    batch = [records.Mapped("upsert", (v["code"],), (v["code"],), None, v, {}, "h") for v in values]
    result = dest.write(batch)
    assert delivered_keys(result) == ["K"]
    assert [r.key for r in result.rejected] == [("NEW",)]
    assert contents(url) == {"K": ("kept", 2)}


def test_a_row_a_check_constraint_refuses_is_refused_alone(
    database: Callable[[], str], tmp_path: Path
) -> None:
    """A CHECK refusal is the record's fault, not a lost connection (MariaDB's 4025 reaches
    PyMySQL as an OperationalError): refused alone at once, the rest written, nothing retried."""
    url = database()
    length = "char_length" if h.dialect(url) == "mysql" else "length"
    h.execute(
        url,
        "CREATE TABLE items (code VARCHAR(20) PRIMARY KEY, name VARCHAR(50) NOT NULL, "
        f"qty INTEGER NOT NULL, CONSTRAINT name_len CHECK ({length}(name) = 5))",
    )
    db = SqlDatabase("dst", url, tmp_path)
    try:
        result = SqlDestination(db, "items", CFG).write([up("A", "fine."), up("B", "bad"), up("C", "fine!")])
    finally:
        db.close()
    assert delivered_keys(result) == ["A", "C"]
    assert [r.key for r in result.rejected] == [("B",)]
    assert "name_len" in result.rejected[0].message
    assert contents(url) == {"A": ("fine.", 1), "C": ("fine!", 1)}


REFUSE_NEGATIVE = {  # a trigger refusing a row: PostgreSQL's RAISE EXCEPTION, MariaDB's SIGNAL
    "postgresql": [
        "CREATE FUNCTION no_negative() RETURNS trigger AS $$ BEGIN IF NEW.qty < 0 THEN "
        "RAISE EXCEPTION 'qty_not_negative'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER no_negative BEFORE INSERT OR UPDATE ON items FOR EACH ROW EXECUTE FUNCTION no_negative()",
    ],
    "mysql": [
        "CREATE TRIGGER no_negative BEFORE INSERT ON items FOR EACH ROW IF NEW.qty < 0 THEN "
        "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'qty_not_negative'; END IF"
    ],
}


@pytest.mark.parametrize("how", ["check", "trigger"])
@pytest.mark.parametrize(
    "server",
    [
        pytest.param("pg_database", marks=pytest.mark.postgres, id="postgresql"),
        pytest.param("mariadb_database", marks=pytest.mark.mariadb, id="mariadb"),
    ],
)
def test_a_row_a_check_or_a_trigger_refuses_is_refused_alone(
    request: pytest.FixtureRequest, server: str, how: str, make_dest: Callable[..., SqlDestination]
) -> None:
    """A CHECK failure (MariaDB errno 4025, an OperationalError to PyMySQL) or a trigger's
    refusal (PostgreSQL P0001, a ProgrammingError to psycopg; MariaDB 1644) is the record's
    fault, not a lost connection or a broken statement: the others are written."""
    url = request.getfixturevalue(server)()
    dest = make_dest(url)
    if how == "check":
        h.execute(url, "ALTER TABLE items ADD CONSTRAINT qty_not_negative CHECK (qty >= 0)")
    else:
        h.execute(url, *REFUSE_NEGATIVE[h.dialect(url)])
    result = dest.write([up("A", "a"), up("B", "b", -1), up("C", "c")])
    assert sorted(delivered_keys(result)) == ["A", "C"]
    assert [r.key for r in result.rejected] == [("B",)]
    assert "qty_not_negative" in result.rejected[0].message
    assert contents(url) == {"A": ("a", 1), "C": ("c", 1)}
