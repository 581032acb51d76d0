"""Transaction export (`changes: {method: export_flag}`, issue 16) on real databases: the portal
(PostgreSQL; also SQLite where the write-back's lock matters, MariaDB where `ON UPDATE
CURRENT_TIMESTAMP` does) exports its orders with their lines into an ERP on PostgreSQL and on
MariaDB (tests/export_world.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import helpers as h
from tests.export_world import World, lines_of

ERPS = [
    pytest.param("pg_database", id="erp-postgresql", marks=pytest.mark.postgres),
    pytest.param("mariadb_database", id="erp-mariadb", marks=pytest.mark.mariadb),
]


PORTALS = [
    pytest.param("pg_database", id="portal-postgresql", marks=pytest.mark.postgres),
    pytest.param("sqlite_database", id="portal-sqlite"),
]


@pytest.fixture(params=ERPS)
def erp(request: pytest.FixtureRequest) -> Callable[[], str]:
    factory: Callable[[], str] = request.getfixturevalue(request.param)
    return factory


@pytest.fixture(params=PORTALS)
def portal(request: pytest.FixtureRequest) -> Callable[[], str]:
    """PostgreSQL (rows locked FOR UPDATE by the write-back) or SQLite (BEGIN IMMEDIATE)."""
    factory: Callable[[], str] = request.getfixturevalue(request.param)
    return factory


@pytest.fixture
def world(portal: Callable[[], str], erp: Callable[[], str], tmp_path: Path) -> Iterator[World]:
    w = World(portal(), erp(), tmp_path)
    yield w
    w.close()


def test_a_run_exports_pending_orders_with_their_lines_and_writes_the_status_back(world: World) -> None:
    assert world.run("seed").counts.written == 0
    world.order(1)
    world.order(2, lines=3, exported=0)
    world.order(3, lines=1)
    world.order(4, exported=1)  # exported before: not pending
    ran = world.run()
    assert ran.ok and ran.counts.written == 3
    held = world.erp_orders()
    assert sorted(held) == [1, 2, 3]
    assert held[2][1:] == ("customer 2", "12345", "new")
    assert world.erp_lines() == {1: lines_of(1), 2: lines_of(2, 3), 3: lines_of(3, 1)}
    states = world.states()
    for no in (1, 2, 3):
        assert states[no] == (1, "success", None, held[no][0])
    assert len({held[no][0] for no in held}) == 3 and all(held[no][0] >= 5000 for no in held)
    assert states[4] == (1, None, None, None)
    writes = world.erp_writes()
    again = world.run()
    assert again.ok and again.counts.read == 0 and again.counts.written == 0
    assert world.erp_writes() == writes
    assert world.states() == states


@pytest.mark.parametrize("kind", ["run", "seed"])
def test_many_pending_orders_are_read_page_by_page_while_their_flags_are_written_back(
    portal: Callable[[], str], erp: Callable[[], str], tmp_path: Path, kind: str
) -> None:
    """45 orders, batches of 20, by a run or by a seed with `export_existing`: each page is read
    by a query of its own after the previous one was marked (SQLite: a read left open would lock
    the write-back out), and every order reaches the ERP once."""
    w = World(portal(), erp(), tmp_path, seed="{export_existing: true}")
    try:
        if kind == "run":
            w.run("seed")
        for no in range(1, 46):
            w.order(no, lines=1)
        ran = w.run(kind)
        assert ran.ok and ran.counts.read == 45 and ran.counts.written == 45, ran.message
        assert w.erp_writes() == 45 and sorted(w.erp_orders()) == list(range(1, 46))
        assert {s[:3] for s in w.states().values()} == {(1, "success", None)}
        assert w.run().counts.read == 0
    finally:
        w.close()


@pytest.mark.parametrize(
    ("seed", "exported"),
    [
        pytest.param("{}", [], id="default"),
        pytest.param("{export_existing: true}", [1, 2], id="export_existing"),
        pytest.param("{where: \"customer = 'vip'\"}", [2], id="where"),
    ],
)
def test_a_seed_exports_nothing_unless_the_sheet_says_so(
    pg_database: Callable[[], str], erp: Callable[[], str], tmp_path: Path, seed: str, exported: list[int]
) -> None:
    w = World(pg_database(), erp(), tmp_path, seed=seed)
    try:
        w.order(1)
        w.order(2, customer="vip", exported=0)
        w.order(3, exported=1)
        seeded = w.run("seed")
        assert seeded.ok and seeded.counts.written == len(exported)
        assert sorted(w.erp_orders()) == exported
        states = w.states()
        for no in (1, 2):
            if no in exported:
                assert states[no][:3] == (1, "success", None)
            else:  # untouched
                assert states[no] == ((None, None, None, None) if no == 1 else (0, None, None, None))
        assert states[3] == (1, None, None, None)
        w.order(4)  # after the seed: the next run exports it, and no earlier pending order
        ran = w.run()
        assert ran.ok and ran.counts.written == 1
        assert sorted(w.erp_orders()) == sorted([*exported, 4])
        assert w.erp_lines()[4] == lines_of(4)
    finally:
        w.close()


@pytest.mark.parametrize("version", ["updated_at", None], ids=["version-column", "hash"])
def test_an_order_edited_during_the_sync_stays_pending_and_is_exported_again_once(
    portal: Callable[[], str], erp: Callable[[], str], tmp_path: Path, version: str | None
) -> None:
    w = World(portal(), erp(), tmp_path, version=version)
    try:
        w.run("seed")
        w.order(1)
        w.order(2)
        edited: list[int] = []

        def edit() -> None:  # between the read and the write-back
            if not edited:
                edited.append(2)
                if version:
                    w.edit(2, customer="changed")
                else:  # the hash covers the lines: only a line changes, no timestamp moves
                    h.execute(w.portal, "UPDATE order_lines SET qty = 99 WHERE order_no = 2 AND line_no = 1")

        w.during_write = edit
        first = w.run()
        assert first.counts.written == 2 and edited == [2]
        held = w.erp_orders()
        assert held[2][1] == "customer 2" and w.erp_lines()[2] == lines_of(2)  # what was read
        states = w.states()
        assert states[1] == (1, "success", None, held[1][0])
        assert states[2] == (None, None, None, None)  # not marked: the ERP holds an older version
        second = w.run()
        assert second.ok and second.counts.read == 1 and second.counts.written == 1
        now = w.erp_orders()
        assert now[2][0] == held[2][0]  # updated, not duplicated
        if version:
            assert now[2][1] == "changed"
        else:
            assert w.erp_lines()[2] == [(1, "SKU2-1", 99), (2, "SKU2-2", 20)]
        assert w.states()[2] == (1, "success", None, held[2][0])
        writes = w.erp_writes()
        third = w.run()
        assert third.counts.read == 0 and w.erp_writes() == writes
        assert w.erp_counts() == (2, 4)
    finally:
        w.close()


WATERMARK_COPY = """
  orders_copy:
    from: {connection: portal, table: orders}
    to: {connection: erp, table: order_copy}
    key: {from: order_no, to: order_no}
    fields:
      customer: customer
    changes: {method: watermark, column: updated_at, lag: 0s}
"""


@pytest.mark.mariadb
@pytest.mark.parametrize("version", ["updated_at", None], ids=["version-column", "hash"])
def test_the_write_back_does_not_move_a_mariadb_on_update_timestamp(
    mariadb_database: Callable[[], str], erp: Callable[[], str], tmp_path: Path, version: str | None
) -> None:
    """A watermark sync on `orders.updated_at` beside the export does not see the write-back."""
    w = World(mariadb_database(), erp(), tmp_path, version=version, extra=WATERMARK_COPY)
    try:
        h.execute(w.erp, "CREATE TABLE order_copy (order_no INTEGER PRIMARY KEY, customer VARCHAR(40))")
        w.run("seed")
        w.run("seed", sync="orders_copy")
        w.order(1)
        w.order(2, zip="1234", exported=0)
        assert w.run(sync="orders_copy").counts.read == 2
        # what the watermark reads again with nothing changed (the row at its boundary, skipped)
        idle = w.run(sync="orders_copy").counts
        assert idle.read <= 1 and idle.written == 0
        before = w.stamps()
        ran = w.run()
        assert ran.counts.written == 1 and ran.counts.rejected == 1
        states = w.states()
        assert states[1][:2] == (1, "success") and states[2][:2] == (0, "failed")
        assert w.stamps() == before  # success and failure written back, updated_at where it was
        again = w.reexport("2")  # the reset and the failure again
        assert again.counts.rejected == 1
        assert w.stamps() == before
        assert w.run(sync="orders_copy").counts == idle  # the watermark saw none of it
        assert w.run().counts.read == 0
    finally:
        w.close()


def _record_error(w: World) -> str:
    rows = w.store.history.record_errors("orders", False, 10)
    assert len(rows) == 1, rows
    return str(rows[0]["message"])


@pytest.mark.parametrize("on_failure", ["retry", "hold"])
def test_a_refused_order_shows_failed_with_the_erps_message_until_it_is_fixed(
    pg_database: Callable[[], str], erp: Callable[[], str], tmp_path: Path, on_failure: str
) -> None:
    w = World(pg_database(), erp(), tmp_path, changes=f"      on_failure: {on_failure}")
    try:
        w.run("seed")
        w.order(1, exported=0)
        w.order(2, zip="1234", exported=0)
        ran = w.run()
        assert ran.counts.written == 1 and ran.counts.rejected == 1
        assert sorted(w.erp_orders()) == [1] and 2 not in w.erp_lines()
        message = _record_error(w)
        assert "zip_has_five" in message  # the ERP's CHECK, by name
        flag, status, error, number = w.states()[2]
        assert (flag, status, number) == (0 if on_failure == "retry" else 2, "failed", None)
        assert len(error) == 60 and error == message[:59] + "…"  # capped to VARCHAR(60)
        writes = w.erp_writes()
        assert w.run().counts.read == 0  # same version: not sent again
        w.edit(2, zip="54321")  # a worker fixes it at the source
        if on_failure == "hold":
            assert w.run().counts.read == 0  # held until a reset
            assert w.erp_writes() == writes and w.states()[2][0] == 2
            w.reset(2)
        fixed = w.run()
        assert fixed.ok and fixed.counts.written == 1
        held = w.erp_orders()
        assert held[2][2] == "54321" and w.erp_lines()[2] == lines_of(2)
        assert w.states()[2] == (1, "success", None, held[2][0])
        assert w.open_errors() == {}
    finally:
        w.close()


@pytest.mark.parametrize(
    "portal_db",
    [
        pytest.param("pg_database", id="portal-postgresql", marks=pytest.mark.postgres),
        pytest.param("mariadb_database", id="portal-mariadb", marks=pytest.mark.mariadb),
    ],
)
def test_the_return_leg_writes_the_erp_status_into_the_portal_without_a_second_export(
    request: pytest.FixtureRequest, portal_db: str, erp: Callable[[], str], tmp_path: Path
) -> None:
    """The ERP's status comes back into the portal's `orders` by an ordinary sync: the export's
    columns stay as they are and nothing is exported again. (On MariaDB the return leg's own
    write moves `updated_at ... ON UPDATE`: an ordinary sync sets no column to itself.)"""
    w = World(request.getfixturevalue(portal_db)(), erp(), tmp_path, return_leg=True)
    try:
        w.run("seed")
        w.order(1)
        w.order(2)
        assert w.run().counts.written == 2
        assert w.run("seed", sync="order_status").counts.written == 2
        states, stamps = w.states(), w.stamps()
        w.erp_set(1, status="shipped")
        writes = w.erp_writes()
        back = w.run(sync="order_status")
        assert back.ok and back.counts.written == 1
        got = h.query(w.portal, "SELECT order_no, order_status FROM orders ORDER BY order_no")
        assert got == [(1, "shipped"), (2, "new")]
        assert w.states() == states  # flag, status, error, document number
        moved = {no for no, at in w.stamps().items() if at != stamps[no]}
        assert moved == (set() if portal_db == "pg_database" else {1})
        assert w.run().counts.read == 0  # no second export
        assert w.erp_writes() == writes
    finally:
        w.close()


def test_mapsync_retry_sends_a_refused_order_again_and_writes_the_status_back(
    pg_database: Callable[[], str], erp: Callable[[], str], tmp_path: Path
) -> None:
    """`on_failure: retry`: the order waits for a retry (not every run); once the ERP accepts it
    (here: the ERP drops its CHECK), `mapsync retry` delivers it and marks it."""
    w = World(pg_database(), erp(), tmp_path)
    try:
        w.run("seed")
        w.order(1, zip="1234", exported=0)
        assert w.run().counts.rejected == 1
        h.execute(w.erp, "ALTER TABLE sales_order DROP CONSTRAINT zip_has_five")
        assert w.run().counts.read == 0  # a run still leaves it to the retry
        retried = w.engine.retry("orders")
        assert retried.ok and retried.counts.written == 1
        held = w.erp_orders()
        assert held[1][2] == "1234" and w.erp_lines()[1] == lines_of(1)
        assert w.states()[1] == (1, "success", None, held[1][0])
        assert w.open_errors() == {}
    finally:
        w.close()


QUEUED_COPY = """
  orders_copy:
    from: {connection: portal, table: orders}
    to: {connection: erp, table: order_copy}
    key: {from: order_no, to: order_no}
    fields:
      customer: customer
    changes: {method: queue}
    deletes: {policy: ignore}
"""


def test_the_write_back_does_not_fire_the_queue_triggers_of_the_same_table(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    w = World(pg_database(), pg_database(), tmp_path, extra=QUEUED_COPY)
    try:
        h.execute(w.erp, "CREATE TABLE order_copy (order_no INTEGER PRIMARY KEY, customer VARCHAR(40))")
        installed = w.cli("triggers", "install", "sheet.yaml")
        assert installed.returncode == 0, installed.stdout + installed.stderr
        w.run("seed")
        w.run("seed", sync="orders_copy")
        w.order(1)
        assert w.run(sync="orders_copy").counts.written == 1  # the queue is drained
        assert w.run().counts.written == 1  # the export and its write-back
        assert w.states()[1][:2] == (1, "success")
        queued = h.query(w.portal, "SELECT change_type FROM mapsync_changes WHERE sync_status = 'new'")
        assert queued == []
    finally:
        w.close()


@pytest.mark.parametrize("point", ["after_write", "during_writeback", "after_ack"])
def test_a_run_killed_around_the_write_back_leaves_one_erp_order_each_and_a_true_status(
    pg_database: Callable[[], str], erp: Callable[[], str], tmp_path: Path, point: str
) -> None:
    """Killed (in-process crash point) after the ERP committed, between the two write-backs, or
    after them: the rerun leaves exactly one ERP order per portal order and every status true."""
    w = World(pg_database(), erp(), tmp_path)
    try:
        w.run("seed")
        w.order(1)
        w.order(2, zip="1234", exported=0)
        w.order(3, lines=3)
        w.close()
        marker = tmp_path / "fired"
        env = {"MAPSYNC_CRASH_AT": point, "MAPSYNC_CRASH_MARKER": str(marker)}
        killed = h.mapsync("run", "sheet.yaml", "--sync", "orders", cwd=tmp_path, env=env, process=False)
        assert killed.returncode == -9 and marker.read_text().startswith(point)
        rerun = h.mapsync("run", "sheet.yaml", "--sync", "orders", cwd=tmp_path)
        assert rerun.returncode in (0, 1), rerun.stdout + rerun.stderr  # 1: order 2 refused
        held = w.erp_orders()
        assert sorted(held) == [1, 3] and w.erp_counts() == (2, 5)
        assert w.erp_lines() == {1: lines_of(1), 3: lines_of(3, 3)}
        states = w.states()
        assert states[1] == (1, "success", None, held[1][0])
        assert states[3] == (1, "success", None, held[3][0])
        assert states[2][:2] == (0, "failed") and "zip_has_five" in _record_error(w)
        assert w.run().counts.read == 0
    finally:
        w.close()
