"""The drift walk (`reconcile.drift.walk`) finds exactly the planted differences between a sync's
destination and its key ledger, PostgreSQL → MariaDB, SQLite → SQLite and MariaDB → PostgreSQL:
a hand-edited destination field (changed), a destination row deleted by hand (missing), a row
inserted by hand (extra, unknown to the ledger), a row whose delete mapsync delivered and that
was put back by hand (extra, with the ledger's key text). A translated field (free text
"Deutschland" at the source, `DEU` in the destination) is no difference; equal data reports
zero; a row the `disable` policy left in the destination is no extra.

The worlds are seeded through the real engine (a `snapshot` sync delivers deletes), so the
ledger's digests are the ones delivery records.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mapsync import errors, records
from mapsync.connectors.sql_destination import SqlDestination
from mapsync.engine import Engine
from mapsync.reconcile import drift
from mapsync.reconcile.results import CheckResult, Extra
from mapsync.records import key_text
from mapsync.sheet import loader
from mapsync.state.store import StateStore
from tests import helpers as h

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
      nm: name
      country: {{from: land, country: iso3}}
      balance: balance
{extra_fields}
    changes: {{method: snapshot}}
    deletes: {deletes}
"""
HARD = "{policy: hard, max_delete_ratio: 1}"
DISABLE = "{policy: disable, field: active, value: 0, max_delete_ratio: 1}"
LANDS = ["Deutschland", "France", "Germany", "Österreich", "Italia"]
ROWS = 20


class World:
    """An ERP `customers` table (free-text `land`) and a portal `accounts` table (ISO3 `country`),
    the sync between them, and its state store."""

    def __init__(self, src: str, dst: str, folder: Path, deletes: str = HARD) -> None:
        self.src, self.dst, self.folder = src, dst, folder
        h.execute(
            src,
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, name VARCHAR(50), land VARCHAR(40), "
            "balance NUMERIC(12,2))",
        )
        h.execute(
            src,
            "INSERT INTO customers VALUES (:id, :name, :land, :balance)",
            params=[
                {"id": i, "name": f"c{i}", "land": LANDS[i % len(LANDS)], "balance": f"{i}.50"}
                for i in range(1, ROWS + 1)
            ],
        )
        active = ", active INTEGER NOT NULL DEFAULT 1" if deletes == DISABLE else ""
        h.execute(
            dst,
            f"CREATE TABLE accounts (ref INTEGER PRIMARY KEY, nm VARCHAR(50), country CHAR(3), "
            f"balance DECIMAL(12,2){active})",
        )
        extra_fields = "      active: {value: 1}" if deletes == DISABLE else ""
        sheet = SHEET.format(src=src, dst=dst, deletes=deletes, extra_fields=extra_fields)
        (folder / "sheet.yaml").write_text(sheet)
        self.deletes = deletes
        self.store = StateStore.open("sqlite:///state.db", folder, create=True)
        self.engine = Engine(loader.load(folder / "sheet.yaml", env={}), self.store)

    def run(self, mode: str = "run") -> None:
        report = self.engine.run("customers", mode) if mode != "run" else self.engine.run("customers")
        assert report.status == "success", report.message

    def walk(self, buckets: int = 4096) -> CheckResult:
        dest = self.engine.parts("customers").dest
        assert isinstance(dest, SqlDestination)
        cfg = self.engine.sheet.syncs["customers"]
        assert dest.drift_form is not None
        return drift.walk(
            self.store, "customers", dest, dest.drift_form, buckets=buckets, deletes=cfg.deletes
        )

    def close(self) -> None:
        self.engine.close()
        self.store.close()


def make_world(request: pytest.FixtureRequest, tmp_path: Path, deletes: str) -> World:
    src_fixture, dst_fixture = request.param
    src: str = request.getfixturevalue(src_fixture)()
    dst: str = request.getfixturevalue(dst_fixture)()
    return World(src, dst, tmp_path, deletes)


PAIRS = [
    pytest.param(
        ("pg_database", "mariadb_database"),
        id="pg-mariadb",
        marks=[pytest.mark.postgres, pytest.mark.mariadb],
    ),
    pytest.param(("sqlite_database", "sqlite_database"), id="sqlite-sqlite"),
    pytest.param(
        ("mariadb_database", "pg_database"),
        id="mariadb-pg",
        marks=[pytest.mark.postgres, pytest.mark.mariadb],
    ),
]


@pytest.fixture(params=PAIRS)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    w = make_world(request, tmp_path, HARD)
    yield w
    w.close()


@pytest.fixture(params=PAIRS[:2])
def disabling(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    w = make_world(request, tmp_path, DISABLE)
    yield w
    w.close()


def k(i: int) -> str:
    return key_text((i,))


@pytest.mark.parametrize("buckets", [4096, 1])  # 1: 20 numbers of 60 bits overflow a BIGINT sum
def test_equal_data_reports_zero_and_translated_fields_are_no_difference(world: World, buckets: int) -> None:
    world.run("seed")
    assert {r[0] for r in h.query(world.dst, "SELECT DISTINCT country FROM accounts")} == {
        "DEU",
        "FRA",
        "AUT",
        "ITA",
    }
    result = world.walk(buckets)
    assert result.ok, result.to_json()
    assert (result.compared, result.matched, result.undigested) == (ROWS, ROWS, 0)
    # equal buckets: the destination sent its bucket figures only, nothing row by row
    assert result.read["dest"].rows <= ROWS and result.read["ledger"].rows == ROWS


@pytest.mark.parametrize("buckets", [4096, 3])
def test_finds_exactly_the_planted_differences(world: World, buckets: int) -> None:
    world.run("seed")
    h.execute(world.src, "DELETE FROM customers WHERE id = 7")
    world.run()  # the delete is delivered: the ledger holds key 7 deleted
    assert not h.query(world.dst, "SELECT ref FROM accounts WHERE ref = 7")
    h.execute(
        world.dst,
        "UPDATE accounts SET nm = 'edited by hand' WHERE ref = 3",  # changed
        "UPDATE accounts SET balance = 12.51 WHERE ref = 12",  # changed (a decimal)
        "DELETE FROM accounts WHERE ref = 5",  # missing
        "INSERT INTO accounts (ref, nm, country, balance) VALUES (999, 'stranger', 'FRA', 1.00)",  # extra
        "INSERT INTO accounts (ref, nm, country, balance) VALUES (7, 'c7', 'DEU', 7.50)",  # extra, ours once
    )
    result = world.walk(buckets)
    assert sorted(result.changed) == sorted([k(3), k(12)])
    assert result.missing == [k(5)]
    assert sorted(result.extra, key=lambda e: e.dest_key) == [Extra((7,), k(7)), Extra((999,), None)]
    assert result.differences() == 5 and result.error is None
    assert (result.compared, result.matched) == (ROWS - 1 + 2, ROWS - 1 - 3)


def test_rows_the_disable_policy_keeps_are_no_extras(disabling: World) -> None:
    w = disabling
    w.run("seed")
    h.execute(w.src, "DELETE FROM customers WHERE id IN (4, 9)")
    w.run()
    assert sorted(h.query(w.dst, "SELECT ref, active FROM accounts WHERE active = 0")) == [(4, 0), (9, 0)]
    assert w.walk().ok, w.walk().to_json()
    assert w.walk(buckets=2).ok  # also when their buckets are read row by row for another reason
    h.execute(w.dst, "UPDATE accounts SET active = 0 WHERE ref = 6")  # disabled by hand: changed
    result = w.walk(buckets=2)
    assert (result.changed, result.missing, result.extra) == ([k(6)], [], [])


def test_undigested_entries_are_counted_and_their_buckets_left_out(
    sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    w = World(sqlite_database(), sqlite_database(), tmp_path)
    try:
        w.run("seed")
        h.execute(w.dst, "UPDATE accounts SET nm = 'edited' WHERE ref = 2")
        h.execute(
            f"sqlite:///{tmp_path / 'state.db'}",
            "UPDATE mapsync_ledger SET digest = NULL WHERE " + '"key" = :k',
            params=[{"k": k(2)}],
        )
        result = w.walk()
        assert result.undigested == 1 and result.differences() == 0
        assert (result.ok, result.status) == (False, "incomplete")  # not everything compared: not ok
        assert result.compared == ROWS - 1 and any("no drift digest" in n for n in result.notes)
        assert any("mapsync reconcile SHEET --sync customers --backfill" in n for n in result.notes)
    finally:
        w.close()


def test_rows_the_digest_cannot_describe_are_left_out_and_said_never_incomplete(
    sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    """Second review: a row kept as the destination had it (`on_exists: skip`) or holding a value
    the form cannot read is stored (dkey, UNCOMPARED): no backfill or delivery would ever digest
    it, so it must not keep the check `incomplete` (an alert that never clears): its bucket is
    left out and a note says why; the rest is compared as usual."""
    w = World(sqlite_database(), sqlite_database(), tmp_path)
    try:
        w.run("seed")
        h.execute(w.dst, "UPDATE accounts SET nm = 'kept by the portal' WHERE ref = 2")
        h.execute(
            f"sqlite:///{tmp_path / 'state.db'}",
            "UPDATE mapsync_ledger SET digest = :d WHERE " + '"key" = :k',
            params=[{"d": records.UNCOMPARED, "k": k(2)}],
        )
        result = w.walk()
        assert (result.status, result.undigested, result.differences()) == ("ok", 0, 0)
        assert result.compared == ROWS - 1
        assert any("1 rows not compared: kept as the destination had them" in n for n in result.notes)
    finally:
        w.close()


def test_entries_without_any_drift_pair_hide_no_row_as_extra(
    sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    """A ledger from before v8 (no dkey, no digest): the rows of such entries cannot be placed, so
    unmatched destination rows are withheld (a repair must not delete them), not reported extra."""
    w = World(sqlite_database(), sqlite_database(), tmp_path)
    try:
        w.run("seed")
        state = f"sqlite:///{tmp_path / 'state.db'}"
        h.execute(
            state,
            "UPDATE mapsync_ledger SET dkey = NULL, digest = NULL WHERE " + '"key" = :k',
            params=[{"k": k(2)}],
        )
        result = w.walk(buckets=2)
        assert result.status == "incomplete" and result.undigested == 1 and result.compared == ROWS - 1
        assert any("not reported as extra" in n for n in result.notes), result.notes
        h.execute(state, "UPDATE mapsync_ledger SET dkey = NULL, digest = NULL")
        result = w.walk()
        assert result.status == "incomplete" and result.undigested == ROWS and result.compared == 0
        assert any("nothing compared" in n and "--backfill" in n for n in result.notes)
        assert result.read["dest"].rows <= ROWS  # the bucket figures only: no row-by-row read
    finally:
        w.close()


@pytest.fixture(params=PAIRS[:1])
def servers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    w = make_world(request, tmp_path, HARD)
    yield w
    w.close()


def test_a_ledger_from_before_v8_is_incomplete_and_not_read_twice(servers: World, tmp_path: Path) -> None:
    """Right after the upgrade (one entry re-delivered with a digest, the rest without even a
    dkey): the result is `incomplete` at best, a hand edit of the digested row is found, and only
    the bucket of that entry is read row by row (not the whole table a second time)."""
    w = servers
    w.run("seed")
    state = f"sqlite:///{tmp_path / 'state.db'}"
    h.execute(
        state,
        "UPDATE mapsync_ledger SET dkey = NULL, digest = NULL WHERE " + '"key" <> :k',
        params=[{"k": k(1)}],
    )
    h.execute(w.dst, "UPDATE accounts SET nm = 'edited' WHERE ref = 1")
    result = w.walk()
    assert (result.status, result.changed, result.undigested) == ("differs", [k(1)], ROWS - 1)
    # the bucket figures (one line per bucket), then the digested entry's bucket (read twice)
    assert result.read["dest"].rows <= ROWS + 2, result.read
    h.execute(w.dst, "UPDATE accounts SET nm = 'c1' WHERE ref = 1")
    result = w.walk()
    assert (result.status, result.ok, result.differences()) == ("incomplete", False, 0)
    assert result.read["dest"].rows <= ROWS, result.read


class Racing:
    """A run delivering in the middle of the walk's first read of the differing buckets: the
    destination's rows are read before it, the ledger's entries after it (the ledger's read
    waits for the run)."""

    def __init__(self, world: World, run: Callable[[], None]) -> None:
        self.world, self.run, self.delivered = world, run, threading.Event()

    def rows(self, original: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        def rows(side: Any, suspects: Any) -> Iterator[Any]:
            got = list(original(side, suspects))
            if self.run is not None:
                run, self.run = self.run, None
                try:
                    run()
                finally:
                    self.delivered.set()
            yield from got

        return rows

    def drift_scan(self, sync: str, page: int, buckets: Any = None) -> Iterator[list[Any]]:
        if buckets is not None:
            assert self.delivered.wait(30)
        yield from self.world.store.drift_scan(sync, page, buckets)


def test_a_run_delivering_during_the_walk_is_no_difference(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.run("seed")
    h.execute(world.dst, "UPDATE accounts SET nm = 'edited by hand' WHERE ref = 3")  # a real difference

    def deliver() -> None:  # the source changes and a run delivers it mid-walk
        h.execute(world.src, "UPDATE customers SET name = 'renamed' WHERE id = 8")
        h.execute(world.src, "INSERT INTO customers VALUES (77, 'new', 'France', 1.50)")
        h.execute(world.src, "DELETE FROM customers WHERE id = 9")
        world.run()

    racing = Racing(world, deliver)
    monkeypatch.setattr(drift._DestSide, "rows", racing.rows(drift._DestSide.rows))
    dest = world.engine.parts("customers").dest
    assert isinstance(dest, SqlDestination) and dest.drift_form is not None
    cfg = world.engine.sheet.syncs["customers"]
    result = drift.walk(racing, "customers", dest, dest.drift_form, buckets=1, deletes=cfg.deletes)
    assert racing.run is None  # the run did deliver mid-walk
    assert (result.changed, result.missing, result.extra) == ([k(3)], [], []), result.to_json()
    assert any("3 difference(s) matched when read again" in n for n in result.notes), result.notes


def test_a_destination_outage_is_a_transient_error_and_a_refused_query_a_config_error(
    servers: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    servers.run("seed")
    dest = servers.engine.parts("customers").dest
    assert isinstance(dest, SqlDestination)
    away = sa.create_engine("mysql+pymysql://root@127.0.0.1:1/nowhere")  # nothing listens on port 1
    monkeypatch.setattr(dest.db, "engine", away)
    assert dest.drift_form is not None
    with pytest.raises(errors.TransientError, match=r"^check drift:customers: connection portal") as caught:
        drift.walk(servers.store, "customers", dest, dest.drift_form)
    assert "SELECT" not in str(caught.value)
    monkeypatch.undo()
    h.execute(servers.dst, "DROP TABLE accounts")
    with pytest.raises(errors.ConfigError, match="the drift query on accounts in connection portal fails"):
        drift.walk(servers.store, "customers", dest, dest.drift_form)


def test_a_ledger_failure_during_the_walk_is_the_stores_error(world: World) -> None:
    world.run("seed")
    h.execute(f"sqlite:///{world.folder / 'state.db'}", "ALTER TABLE mapsync_ledger RENAME TO gone")
    with pytest.raises(errors.StateError, match="the drift scan of sync customers failed: no such table"):
        world.walk()
