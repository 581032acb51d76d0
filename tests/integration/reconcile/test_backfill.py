"""The drift digest's backfill: ledger entries delivered without a digest (before state v8) get
the pair a new delivery would store, read from the source and mapped again, without a write to
the destination; an entry whose source row changed since is left for its next delivery."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from mapsync import errors
from mapsync.engine import Engine
from mapsync.reconcile.backfill import backfill
from mapsync.sheet import loader
from mapsync.state.store import StateStore
from tests import helpers as h

SHEET = """
version: 1
connections:
  erp: {{url: "{src}"}}
  portal: {{url: "{dst}"}}
syncs:
  invoices:
    from: {{connection: erp, table: invoices}}
    to: {{connection: portal, table: invoices}}
    key: {{from: id, to: ref}}
    changes: {{method: full}}
    fields:
      account: customer_no
      balance: {{from: balance, cast: decimal, scale: 2}}
      status: {{from: status, map: {{O: open, C: closed}}}}
      issued: issued
"""


def _drift(store: StateStore) -> dict[str, tuple[str | None, str | None]]:
    return {k: (dk, dg) for page in store.drift_scan("invoices", 100) for k, dk, dg, _ in page}


def _world(tmp_path: Path, src: str, dst: str) -> tuple[Engine, StateStore]:
    h.execute(
        src,
        "CREATE TABLE invoices (id INTEGER PRIMARY KEY, customer_no VARCHAR(20), balance NUMERIC(12,2), "
        "status CHAR(1), issued TIMESTAMP(3))",
    )
    h.execute(
        src,
        "INSERT INTO invoices VALUES (:i, :c, :b, :s, :t)",
        params=[
            {
                "i": i,
                "c": f"C{i % 7}",
                "b": f"{i * 10}.{i % 100:02d}",
                "s": "OC"[i % 2],
                "t": f"2026-01-0{1 + i % 9} 10:00:00.{i:03d}",
            }
            for i in range(1, 41)
        ],
    )
    h.execute(
        dst,
        "CREATE TABLE invoices (ref INTEGER PRIMARY KEY, account VARCHAR(20), balance DECIMAL(14,2), "
        "status VARCHAR(10), issued DATETIME(6), note VARCHAR(20))",
    )
    (tmp_path / "sheet.yaml").write_text(SHEET.format(src=src, dst=dst))
    store = StateStore.open("sqlite:///state.db", tmp_path, create=True)
    return Engine(loader.load(tmp_path / "sheet.yaml", env={}), store), store


@pytest.mark.postgres
@pytest.mark.mariadb
def test_backfill_sets_what_a_delivery_would_and_leaves_changed_rows(
    tmp_path: Path, pg_database: Callable[[], str], mariadb_database: Callable[[], str]
) -> None:
    src, dst = pg_database(), mariadb_database()
    engine, store = _world(tmp_path, src, dst)
    try:
        assert engine.run("invoices", "seed").status == "success"
        delivered = _drift(store)
        assert len(delivered) == 40 and all(dk and dg for dk, dg in delivered.values())
        h.execute(str(store.engine.url), "UPDATE mapsync_ledger SET dkey = NULL, digest = NULL")
        h.execute(src, "UPDATE invoices SET balance = balance + 1 WHERE id = 7")  # changed since
        h.install_write_counter(dst, "invoices")

        assert backfill(engine, "invoices", batch=15) == 39
        after = _drift(store)
        assert after["[7]"] == (None, None)  # its next delivery sets it
        assert {k: v for k, v in after.items() if k != "[7]"} == {
            k: v for k, v in delivered.items() if k != "[7]"
        }
        assert h.writes(dst) == 0
        assert backfill(engine, "invoices") == 0  # nothing left that it may set

        engine.run("invoices", "run")  # the changed row delivered: its pair is new
        final = _drift(store)
        assert final["[7]"][1] is not None and final["[7]"] != delivered["[7]"]
        assert final["[7]"][0] == delivered["[7]"][0]  # the same destination key
    finally:
        engine.close()


@pytest.mark.postgres
@pytest.mark.mariadb
def test_backfill_keeps_its_lease_alive_and_never_overwrites_a_newer_delivery(
    tmp_path: Path,
    pg_database: Callable[[], str],
    mariadb_database: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review finding 5: the backfill read the whole source without renewing the sync's lease, and
    set_drift overwrote whatever the entry held. Here a run delivers entry [3] anew (another hash,
    its own pair) between the backfill's ledger read and its update: the run's pair stays."""
    src, dst = pg_database(), mariadb_database()
    engine, store = _world(tmp_path, src, dst)
    try:
        assert engine.run("invoices", "seed").status == "success"
        h.execute(str(store.engine.url), "UPDATE mapsync_ledger SET dkey = NULL, digest = NULL")
        newer = ("c" * 32, "d" * 32)
        real = store.set_drift
        beating: list[bool] = []

        def racing(sync: str, entries: Mapping[str, tuple[str, str, str]]) -> int:
            beating.append(any(t.name == "lease-heartbeat-invoices" for t in threading.enumerate()))
            if "[3]" in entries:  # a run's commit got in: a newer row, its own pair
                h.execute(
                    str(store.engine.url),
                    "UPDATE mapsync_ledger SET hash = 'newer', dkey = :k, digest = :d WHERE key = '[3]'",
                    params={"k": newer[0], "d": newer[1]},
                )
            return real(sync, entries)

        monkeypatch.setattr(store, "set_drift", racing)
        assert backfill(engine, "invoices", batch=15) == 39
        assert beating and all(beating)  # the lease renewed throughout
        after = _drift(store)
        assert after["[3]"] == newer
        assert all(dk and dg for k, (dk, dg) in after.items())
    finally:
        engine.close()


def test_backfill_refuses_a_destination_without_a_digest(
    tmp_path: Path, sqlite_database: Callable[[], str]
) -> None:
    src, dst = sqlite_database(), sqlite_database()
    engine, _ = _world_sqlite(tmp_path, src, dst)
    try:
        with pytest.raises(errors.ConfigError, match="keeps no drift digest"):
            backfill(engine, "invoices")
    finally:
        engine.close()


def _world_sqlite(tmp_path: Path, src: str, dst: str) -> tuple[Engine, StateStore]:
    h.execute(
        src,
        "CREATE TABLE invoices (id INTEGER PRIMARY KEY, customer_no TEXT, balance NUMERIC, status TEXT, issued TEXT)",
    )
    h.execute(
        dst,
        "CREATE TABLE invoices (ref REAL PRIMARY KEY, account TEXT, balance NUMERIC, status TEXT, issued TEXT)",
    )
    (tmp_path / "sheet.yaml").write_text(SHEET.format(src=src, dst=dst))
    store = StateStore.open("sqlite:///state.db", tmp_path, create=True)
    return Engine(loader.load(tmp_path / "sheet.yaml", env={}), store), store
