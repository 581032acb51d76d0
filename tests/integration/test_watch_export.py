"""The export's facts read from real sources (SQLite, PostgreSQL and MariaDB portals, SQLite ERP) and the
export monitors through `mapsync.watch` on a real SQLite state store: the backlog beyond the
seed's starting point, the oldest pending creation time, the failed rows and imports after a real
run whose ERP refuses an order (a CHECK on the zip code); `/metrics` and `mapsync status` show the
backlog; the failed-import alert opens once (after the run and on the next evaluation alike) and
resolves once the order is fixed and re-exported; a portal that does not answer leaves the facts
out and the incidents as they are."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mapsync import errors, metrics, watch, watch_export
from mapsync import watch_sources as ws
from mapsync.engine import Engine
from mapsync.sheet import loader
from mapsync.sheet.loader import LoadedSheet
from mapsync.state.store import StateStore
from tests import helpers as h

SHEET = """
version: 1
connections:
  portal: {{url: "{src}"}}
  erp: {{url: "{dst}"}}
state: {{url: "sqlite:///{state}"}}
syncs:
  orders:
    from: {{connection: portal, table: orders}}
    to: {{connection: erp, table: erp_orders}}
    key: {{from: order_no, to: order_no}}
    fields: {{zip: zip}}
    changes:
      method: export_flag
      flag: exported
      status: erp_status
      error: erp_error
      created: created_at
alerts:
  include_values: {values}
  channels:
    hook: {{webhook: {{url: "http://127.0.0.1:9/never"}}}}
"""
ORDERS = (
    "CREATE TABLE orders (order_no INTEGER PRIMARY KEY, zip VARCHAR(10), created_at TIMESTAMP, "
    "exported INTEGER, erp_status VARCHAR(20), erp_error VARCHAR(300))"
)
ERP = "CREATE TABLE erp_orders (order_no INTEGER PRIMARY KEY, zip VARCHAR(10) CHECK (length(zip) = 5))"


def _ago(url: str, minutes: int) -> str:
    """SQL for the source's own clock `minutes` ago, as a naive time in its zone."""
    if h.dialect(url) == "postgresql":
        return f"LOCALTIMESTAMP - INTERVAL '{minutes} minutes'"
    if h.dialect(url) == "mysql":
        return f"NOW(6) - INTERVAL {minutes} MINUTE"
    return f"datetime('now', '-{minutes} minutes')"


class World:
    def __init__(self, folder: Path, src: str, dst: str, values: bool = False) -> None:
        self.src, self.dst, self.folder = src, dst, folder
        h.execute(src, ORDERS)
        h.execute(dst, ERP)
        (folder / "sheet.yaml").write_text(
            SHEET.format(src=src, dst=dst, state=folder / "state.db", values=str(values).lower())
        )
        self.loaded: LoadedSheet = loader.load(folder / "sheet.yaml")
        self.store = StateStore.open(self.loaded.sheet.state.url, folder, create=True)

    def order(self, no: int, zip_code: str, minutes_ago: int) -> None:
        h.execute(
            self.src,
            f"INSERT INTO orders (order_no, zip, created_at) VALUES ({no}, '{zip_code}', "
            f"{_ago(self.src, minutes_ago)})",
        )

    def engine(self, what: Callable[[Engine], Any]) -> Any:
        engine = Engine(self.loaded, self.store)
        try:
            return what(engine)
        finally:
            engine.close()

    def facts(self) -> dict[str, Any]:
        handles: dict[str, Any] = {}
        try:
            return ws.sync_extra(self.loaded, self.store, "orders", handles)
        finally:
            ws.release(handles)

    def close(self) -> None:
        self.store.close()


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def world(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_database: Callable[[], str]
) -> Iterator[World]:
    fixture = {"postgresql": "pg_database", "mariadb": "mariadb_database"}.get(request.param)
    src = request.getfixturevalue(fixture)() if fixture else sqlite_database()
    w = World(tmp_path, src, sqlite_database())
    yield w
    w.close()


def test_backlog_oldest_and_failed_from_the_source_before_and_after_a_run(world: World) -> None:
    world.order(1, "10115", 600)  # historical: before the seed's starting point
    seeded = world.engine(lambda e: e.run("orders", "seed"))
    assert seeded.status == "success" and seeded.counts.written == 0  # a seed exports nothing
    world.order(2, "20095", 120)
    world.order(3, "80331", 1)
    world.order(4, "123", 30)  # the ERP refuses it (CHECK on the zip)

    before = world.facts()
    assert before["export_pending"] == 3  # order 1 is before the starting point
    assert "export_failed_rows" in before and before["export_failed_rows"] == 0
    created = before["export_created"]
    assert len(created) == 3 and created == sorted(created)
    age = (before["export_now"] - before["export_oldest_created"]).total_seconds()
    assert 119 * 60 < age < 122 * 60, age  # order 2, on the source's clock and zone
    assert before["export_failures"] == [] and before["export_failures_total"] == 0
    seen = world.store.observations.observations("orders")
    assert seen[("orders", "export_pending")][0] == 3
    assert 119 * 60 < seen[("orders", "export_oldest_pending_s")][0] < 122 * 60

    ran = world.engine(lambda e: e.run("orders"))
    assert ran.counts.written == 2 and ran.counts.rejected == 1
    after = world.facts()
    assert after["export_pending"] == 0 and after["export_failed_rows"] == 1
    assert after["export_created"] == [] and "export_oldest_created" not in after
    (failure,) = after["export_failures"]
    assert failure["arg"] == "4" and "CHECK" in failure["message"].upper()
    assert after["export_failures_total"] == 1

    exposed = metrics.Metrics(world.loaded, world.store, cache_s=0.0).exposition().decode()
    assert 'mapsync_export_pending{sync="orders"} 0.0' in exposed
    assert 'mapsync_export_oldest_pending_seconds{sync="orders"} 0.0' in exposed

    status = watch_export.status(world.loaded, world.store, ["orders"])
    assert status["orders"]["pending"] == 0 and status["orders"]["failed"] == 1
    assert status["orders"]["summary"] == "export: 0 pending, 1 failed"
    world.order(5, "10117", 45)
    shown = h.mapsync("status", "sheet.yaml", cwd=world.folder)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "orders: export: 1 pending, oldest unexported 45m old, 1 failed" in shown.stdout
    as_json = h.mapsync("status", "sheet.yaml", "--json", cwd=world.folder)
    (row,) = json.loads(as_json.stdout)
    assert row["export"]["pending"] == 1 and 44 * 60 < row["export"]["oldest_pending_s"] < 47 * 60


def _open(store: StateStore, monitor: str) -> list[Any]:
    return [i for i in store.incidents.open_incidents("orders") if i.monitor == monitor]


def test_a_failed_import_alerts_once_and_resolves_after_the_fix_and_reexport(
    tmp_path: Path, sqlite_database: Callable[[], str]
) -> None:
    w = World(tmp_path, sqlite_database(), sqlite_database(), values=True)
    try:
        assert w.engine(lambda e: e.run("orders", "seed")).status == "success"
        w.order(7, "123", 5)
        w.order(8, "50667", 5)
        ran = w.engine(lambda e: e.run("orders"))
        assert ran.counts.rejected == 1

        after = watch.after_run(w.loaded, w.store, "orders", quiet=True)  # what `mapsync run` does
        assert after is not None
        (opened,) = after.opened
        assert (opened.monitor, opened.subject, opened.failure_class) == ("export_failed", "7", "destination")
        assert (
            "CHECK" in opened.message.upper() and "mapsync reexport SHEET --sync orders 7" in opened.message
        )
        assert [i.monitor for i in w.store.incidents.open_incidents("orders")] == ["export_failed"]

        again = watch.evaluate(w.loaded, w.store, ["orders"])  # the chore's: no second alert
        assert again.opened == [] and again.resolved == []
        assert len(_open(w.store, "export_failed")) == 1
        nothing_else = {i.monitor for i in w.store.incidents.open_incidents("orders")}
        assert nothing_else == {"export_failed"}, nothing_else  # success_with_rejections leaves it

        h.execute(w.src, "UPDATE orders SET zip = '10117' WHERE order_no = 7")
        redone = w.engine(lambda e: e.reexport("orders", [("7",)]))
        assert redone.counts.written == 1 and redone.counts.rejected == 0
        assert h.query(w.src, "SELECT exported, erp_status FROM orders WHERE order_no = 7") == [
            (1, "success")
        ]
        resolved = watch.after_run(w.loaded, w.store, "orders", quiet=True)
        assert resolved is not None and [i.subject for i in resolved.resolved] == ["7"]
        assert _open(w.store, "export_failed") == []
        assert watch.evaluate(w.loaded, w.store, ["orders"]).changed is False
        kinds = [n.kind for n in w.store.incidents.notifications(limit=1000) if n.incident_id == opened.id]
        assert sorted(kinds) == ["opened", "resolved"]
    finally:
        w.close()


def test_without_include_values_the_alert_names_neither_the_order_nor_the_erp_message(
    tmp_path: Path, sqlite_database: Callable[[], str]
) -> None:
    w = World(tmp_path, sqlite_database(), sqlite_database())
    try:
        w.engine(lambda e: e.run("orders", "seed"))
        w.order(424242, "999", 5)
        w.engine(lambda e: e.run("orders"))
        report = watch.evaluate(w.loaded, w.store, ["orders"])
        (opened,) = [i for i in report.opened if i.monitor == "export_failed"]
        text = json.dumps([opened.message, opened.subject, opened.numbers])
        assert "424242" not in text and "999" not in text and "CHECK" not in text.upper()
        assert opened.subject.startswith("import-")
    finally:
        w.close()


def test_a_portal_away_leaves_the_source_facts_out_and_the_pickup_incident_as_it_is(
    tmp_path: Path, sqlite_database: Callable[[], str]
) -> None:
    w = World(tmp_path, sqlite_database(), sqlite_database())
    try:
        w.engine(lambda e: e.run("orders", "seed"))
        w.order(5, "10115", 60)  # pending for an hour: late (15m)
        report = watch.evaluate(w.loaded, w.store, ["orders"])
        (late,) = [i for i in report.opened if i.monitor == "export_pickup"]
        assert "1 transaction(s) not picked up within 15m" in late.message
        h.execute(w.src, "ALTER TABLE orders RENAME TO orders_away")  # the source cannot answer
        facts = w.facts()
        assert "export_pending" not in facts and "export_created" not in facts
        assert "export_failures" in facts  # the store's part is still known
        quiet = watch.evaluate(w.loaded, w.store, ["orders"])
        assert "export_pickup" in quiet.unknown["orders"] and quiet.resolved == []
        assert len(_open(w.store, "export_pickup")) == 1
        status = watch_export.status(w.loaded, w.store, ["orders"])
        assert status["orders"]["error"] and "pending" not in status["orders"]
    finally:
        w.close()


def test_a_reexport_that_fails_before_it_starts_is_recorded_and_alerted_as_a_reexport(
    tmp_path: Path, sqlite_database: Callable[[], str]
) -> None:
    w = World(tmp_path, sqlite_database(), sqlite_database())
    try:
        with pytest.raises(errors.StateError):  # not seeded
            w.engine(lambda e: e.reexport("orders", [("1",)]))
        (run,) = w.store.history.runs("orders", 5)
        assert (run["kind"], run["status"], run["failure_class"]) == ("reexport", "failed", "unseeded")
        report = watch.after_run(w.loaded, w.store, "orders", quiet=True)
        assert report is not None
        (failed,) = [i for i in report.opened if i.monitor == "failed_run"]
        assert "(reexport) failed" in failed.message
    finally:
        w.close()


def test_a_cimcloud_order_the_erp_refuses_alerts_as_a_failed_import(
    tmp_path: Path, sqlite_database: Callable[[], str], cimcloud_inprocess: Any
) -> None:
    """An export from CIMcloud has no source table to count pending orders in, but an order the
    ERP refuses is a failed import all the same: `export_failed` alerts on it."""
    from tests.cim_export_world import SYNC
    from tests.cim_export_world import World as CimWorld

    w = CimWorld(sqlite_database(), cimcloud_inprocess, tmp_path)
    try:
        assert w.run("seed").status == "success"
        w.add(1, 3)
        w.block("C2")  # W0002
        ran = w.run()
        assert ran.counts.rejected == 1 and ran.counts.written == 2
        loaded = loader.load(tmp_path / "sheet.yaml", env={"CIM_PASSWORD": "sandbox-password"})
        after = watch.after_run(loaded, w.store, SYNC, quiet=True)
        assert after is not None
        assert [i.monitor for i in after.opened] == ["export_failed"]
    finally:
        w.close()
