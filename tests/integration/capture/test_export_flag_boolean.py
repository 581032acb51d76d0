"""An export whose flag is a PostgreSQL `boolean` (the sheet's 0/1 are false/true) and whose
portal has no status column: a refused order stays pending, `reexport --failed` finds it by its
open record error, and the monitors' facts read the boolean flag too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mapsync import watch_export
from mapsync.engine import Engine
from mapsync.records import RunStatus
from mapsync.sheet import loader
from mapsync.state.store import StateStore
from tests import helpers as h

SHEET = """\
version: 1
connections:
  portal: {{url: "{portal}"}}
  erp: {{url: "{erp}"}}
state: {{url: "sqlite:///state.db"}}
syncs:
  orders:
    from: {{connection: portal, table: orders}}
    to: {{connection: erp, table: so}}
    key: {{from: id, to: order_no}}
    fields: {{cust: customer, zip: zip}}
    changes: {{method: export_flag, flag: exported, created: created_at}}
    seed: {{export_existing: true}}
"""


def test_boolean_flag_and_reexport_failed_without_a_status_column(
    tmp_path: Path, pg_database: Callable[[], str], sqlite_database: Callable[[], str]
) -> None:
    portal, erp = pg_database(), sqlite_database()
    h.execute(
        portal,
        "CREATE TABLE orders (id int PRIMARY KEY, customer text, zip text, "
        "created_at timestamptz DEFAULT now(), exported boolean)",
        "INSERT INTO orders (id, customer, zip, exported) VALUES (1, 'a', '11111', NULL), "
        "(2, 'b', '2222', false), (3, 'c', '33333', true)",
    )
    h.execute(erp, "CREATE TABLE so (order_no int PRIMARY KEY, cust text, zip text CHECK (length(zip) = 5))")
    path = tmp_path / "sheet.yaml"
    path.write_text(SHEET.format(portal=portal, erp=erp))
    loaded = loader.load(path)
    store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)
    engine = Engine(loaded, store)
    try:
        seeded = engine.run("orders", "seed")
        assert (seeded.status, seeded.counts.written, seeded.counts.rejected) == (RunStatus.PARTIAL, 1, 1)
        assert h.query(portal, "SELECT id, exported FROM orders ORDER BY id") == [
            (1, True),
            (2, False),
            (3, True),
        ]
        assert h.query(erp, "SELECT order_no FROM so") == [(1,)]  # 3 was exported before: not sent
        facts = watch_export.source_facts(loaded, store, "orders", engine.database("portal"))  # type: ignore[arg-type]
        assert facts["export_pending"] == 1  # order 2, refused, still pending (no status column)
        # a second run leaves the unchanged refused order to a retry: nothing is sent
        again = engine.run("orders")
        assert (again.counts.read, again.counts.rejected) == (0, 0)
        h.execute(erp, "DROP TABLE so", "CREATE TABLE so (order_no int PRIMARY KEY, cust text, zip text)")
        engine.close()
        engine = Engine(loaded, store)
        done = engine.reexport("orders", None)  # --failed: found by its open record error
        assert (done.status, done.counts.written) == (RunStatus.SUCCESS, 1)
        assert h.query(erp, "SELECT order_no, zip FROM so") == [(2, "2222")]
        assert h.query(portal, "SELECT id, exported FROM orders ORDER BY id") == [
            (1, True),
            (2, True),
            (3, True),
        ]
        assert store.open_error_keys("orders") == []
    finally:
        engine.close()
        store.close()


def test_hold_without_a_status_column_is_found_and_sent_by_reexport_failed(
    tmp_path: Path, sqlite_database: Callable[[], str]
) -> None:
    """`on_failure: hold`, no status column: the refused order is held at `failed_value`, a run
    leaves it, and `reexport --failed` finds it by its open record error and sends it (no reset
    is written first: the write-back sets the flag)."""
    portal, erp = sqlite_database(), sqlite_database()
    h.execute(
        portal, "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, zip TEXT, exported INTEGER)"
    )
    h.execute(portal, "INSERT INTO orders VALUES (1, 'a', '11111', 0), (2, 'b', '2222', 0)")
    h.execute(
        erp, "CREATE TABLE so (order_no INTEGER PRIMARY KEY, cust TEXT, zip TEXT CHECK (length(zip) = 5))"
    )
    path = tmp_path / "sheet.yaml"
    text = SHEET.format(portal=portal, erp=erp).replace("created: created_at}", "on_failure: hold}")
    path.write_text(text)
    loaded = loader.load(path)
    store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)
    engine = Engine(loaded, store)
    try:
        engine.run("orders", "seed")
        assert h.query(portal, "SELECT id, exported FROM orders ORDER BY id") == [(1, 1), (2, 2)]
        h.execute(portal, "UPDATE orders SET zip = '22222' WHERE id = 2")
        assert engine.run("orders").counts.read == 0  # held: no run sends it
        done = engine.reexport("orders", None)
        assert (done.status, done.counts.written) == (RunStatus.SUCCESS, 1)
        assert h.query(portal, "SELECT id, exported FROM orders ORDER BY id") == [(1, 1), (2, 1)]
        assert h.query(erp, "SELECT order_no, zip FROM so ORDER BY order_no") == [(1, "11111"), (2, "22222")]
    finally:
        engine.close()
        store.close()
