"""`on_failure: hold` under retries (issue 16): an order the ERP refused is held at the portal
(flag `failed_value`) until a person resets it (`mapsync reexport`, or the flag set pending by
hand). Neither the daemon's `retry:` nor `mapsync retry` sends it again: the ERP is not hit
again, the record error keeps its attempts and the ERP's message (the row is no "gone" one), and
a fix at the portal alone does not send it. `reexport` does. SQLite portal → SQLite ERP, in
process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mapsync.engine import Engine
from mapsync.sheet import loader
from mapsync.state.store import StateStore
from tests import helpers as h

SHEET = """
version: 1
connections:
  portal: {{url: "{src}"}}
  erp: {{url: "{dst}"}}
syncs:
  orders:
    from: {{connection: portal, table: orders}}
    to: {{connection: erp, table: erp_orders}}
    key: {{from: id, to: order_ref}}
    fields: {{zip: zip}}
    changes:
      method: export_flag
      flag: exported
      status: erp_status
      error: erp_error
      on_failure: {on_failure}
    retry: {{every: 1s, max_attempts: 5}}
"""


@pytest.fixture
def world(
    tmp_path: Path, sqlite_database: Callable[[], str]
) -> Iterator[tuple[Engine, StateStore, str, str]]:
    src, dst = sqlite_database(), sqlite_database()
    h.execute(
        src,
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, zip VARCHAR(10), exported INTEGER, "
        "erp_status VARCHAR(20), erp_error VARCHAR(300))",
    )
    h.execute(
        dst,
        "CREATE TABLE erp_orders (order_ref INTEGER PRIMARY KEY, zip VARCHAR(10) CHECK (length(zip) = 5))",
    )
    h.install_write_counter(dst, "erp_orders")
    (tmp_path / "sheet.yaml").write_text(SHEET.format(src=src, dst=dst, on_failure="hold"), encoding="utf-8")
    loaded = loader.load(tmp_path / "sheet.yaml")
    store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)
    engine = Engine(loaded, store)  # one Engine across the runs, as a daemon's worker
    try:
        assert engine.run("orders", "seed").counts.written == 0
        h.execute(src, "INSERT INTO orders (id, zip) VALUES (1, '12345'), (2, '1234')")
        yield engine, store, src, dst
    finally:
        engine.close()
        store.close()


def _error(folder: Path) -> list[tuple[Any, ...]]:
    """The open record errors: (key, attempts, carries the ERP's message)."""
    rows = h.query(
        f"sqlite:///{folder / '.mapsync' / 'state.db'}",
        "SELECT key, attempts, message FROM mapsync_record_errors WHERE resolved_at IS NULL",
    )
    return [(k, int(a), "length(zip)" in m) for k, a, m in rows]


def _portal(src: str) -> dict[int, tuple[Any, ...]]:
    return {int(r[0]): tuple(r[1:]) for r in h.query(src, "SELECT id, exported, erp_status FROM orders")}


def test_a_held_order_waits_for_a_reset_not_for_a_retry(
    tmp_path: Path, world: tuple[Engine, StateStore, str, str]
) -> None:
    engine, _, src, dst = world
    report = engine.run("orders", "run")
    assert (report.counts.written, report.counts.rejected) == (1, 1)
    assert _portal(src) == {1: (1, "success"), 2: (2, "failed")}  # held at failed_value
    assert _error(tmp_path) == [("[2]", 1, True)]
    writes = h.writes(dst)

    # the daemon's retry and `mapsync retry` leave it: the ERP is not asked again
    for automatic in (True, False):
        again = engine.retry(
            "orders", trigger="schedule" if automatic else "cli", automatic=automatic, max_attempts=5
        )
        assert (again.counts.read, again.counts.rejected, again.gone) == (0, 0, []), again
    assert _error(tmp_path) == [("[2]", 1, True)]  # its attempts and the ERP's message kept

    # fixed at the portal: still held, by a run or a retry
    h.execute(src, "UPDATE orders SET zip = '54321' WHERE id = 2")
    assert engine.run("orders", "run").counts.read == 0
    assert engine.retry("orders", trigger="schedule", automatic=True, max_attempts=5).counts.read == 0
    assert h.writes(dst) == writes
    assert _portal(src)[2] == (2, "failed")

    # a person looked: reexport sends it
    assert engine.reexport("orders", [("2",)]).counts.written == 1
    assert _portal(src) == {1: (1, "success"), 2: (1, "success")}
    assert h.query(dst, "SELECT order_ref, zip FROM erp_orders ORDER BY order_ref") == [
        (1, "12345"),
        (2, "54321"),
    ]
    assert _error(tmp_path) == []
