"""Sending exported transactions again (issue 16) on real databases: a worker's reset, `mapsync
reexport KEY… | --failed`, and what `on_exists` does with an order the ERP holds already. The
portal is PostgreSQL, the ERP PostgreSQL and MariaDB (tests/export_world.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mapsync import errors
from tests import helpers as h
from tests.export_world import World, lines_of

ERPS = [
    pytest.param("pg_database", id="erp-postgresql", marks=pytest.mark.postgres),
    pytest.param("mariadb_database", id="erp-mariadb", marks=pytest.mark.mariadb),
]


@pytest.fixture(params=ERPS)
def erp(request: pytest.FixtureRequest) -> Callable[[], str]:
    factory: Callable[[], str] = request.getfixturevalue(request.param)
    return factory


@pytest.mark.parametrize("version", ["updated_at", None], ids=["version-column", "hash"])
def test_a_reset_flag_sends_the_unchanged_order_again_as_an_update(
    pg_database: Callable[[], str], erp: Callable[[], str], tmp_path: Path, version: str | None
) -> None:
    w = World(pg_database(), erp(), tmp_path, version=version)
    try:
        w.run("seed")
        w.order(1)
        w.order(2, lines=3)
        assert w.run().counts.written == 2
        erp_before, writes = w.erp_orders(), w.erp_writes()
        assert w.erp_counts() == (2, 5)
        w.reset(2)  # a worker: `exported = 0`, nothing else changed
        again = w.run()
        assert again.ok and again.counts.written == 1  # the ledger's "unchanged" did not skip it
        assert w.erp_writes() == writes + 1
        assert w.erp_orders() == erp_before and w.erp_counts() == (2, 5)  # updated, not duplicated
        assert w.erp_lines()[2] == lines_of(2, 3)
        assert w.states()[2] == (1, "success", None, erp_before[2][0])
        assert w.run().counts.read == 0
    finally:
        w.close()


def test_reexport_by_key_and_of_the_failed_ones(
    pg_database: Callable[[], str], erp: Callable[[], str], tmp_path: Path
) -> None:
    w = World(pg_database(), erp(), tmp_path)
    try:
        w.order(1)
        w.order(2)
        assert w.run("seed").counts.written == 0  # the starting point: order 2
        w.order(3)
        w.order(4, zip="1234", exported=0)
        ran = w.run()
        assert ran.counts.written == 1 and ran.counts.rejected == 1
        assert sorted(w.erp_orders()) == [3]
        assert w.states()[4][:2] == (0, "failed")

        # an order older than the seed's starting point
        done = w.cli("reexport", "sheet.yaml", "--sync", "orders", "1")
        assert done.returncode == 0, done.stdout + done.stderr
        held = w.erp_orders()
        assert sorted(held) == [1, 3] and w.erp_lines()[1] == lines_of(1)
        assert w.states()[1] == (1, "success", None, held[1][0])
        assert w.states()[2] == (None, None, None, None)  # not named: untouched

        # an ERP order deleted by hand is rebuilt (the ERP gives it a new document number)
        h.execute(
            w.erp,
            "DELETE FROM sales_order_lines WHERE portal_ref = 3",
            "DELETE FROM sales_order WHERE portal_ref = 3",
        )
        rebuilt = w.cli("reexport", "sheet.yaml", "--sync", "orders", "3")
        assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
        now = w.erp_orders()
        assert now[3][1:] == held[3][1:] and now[3][0] != held[3][0]
        assert w.erp_lines()[3] == lines_of(3)
        assert w.states()[3] == (1, "success", None, now[3][0])

        # --failed: the refused order, fixed at the source, sent now
        h.execute(w.portal, "UPDATE orders SET zip = '54321' WHERE order_no = 4")
        failed = w.cli("reexport", "sheet.yaml", "--sync", "orders", "--failed")
        assert failed.returncode == 0, failed.stdout + failed.stderr
        now = w.erp_orders()
        assert now[4][2] == "54321" and w.erp_lines()[4] == lines_of(4)
        assert w.states()[4] == (1, "success", None, now[4][0])
        assert w.open_errors() == {}
        assert w.erp_counts() == (3, 6)
        assert w.run().counts.read == 0
    finally:
        w.close()


def test_reexport_of_a_key_the_portal_does_not_hold_says_so(
    pg_database: Callable[[], str], erp: Callable[[], str], tmp_path: Path
) -> None:
    w = World(pg_database(), erp(), tmp_path)
    try:
        w.run("seed")
        gone = w.cli("reexport", "sheet.yaml", "--sync", "orders", "77")
        assert gone.returncode == 1, gone.stdout + gone.stderr
        assert w.erp_counts() == (0, 0)
    finally:
        w.close()


@pytest.mark.parametrize("on_exists", ["skip", "fail", "update"])
def test_on_exists_decides_what_becomes_of_an_order_the_erp_changed(
    pg_database: Callable[[], str], erp: Callable[[], str], tmp_path: Path, on_exists: str
) -> None:
    w = World(pg_database(), erp(), tmp_path, changes=f"      on_exists: {on_exists}")
    try:
        w.run("seed")
        w.order(1)
        w.order(2)
        assert w.run().counts.written == 2
        before = w.erp_orders()
        w.erp_set(1, status="picked")  # the ERP started processing order 1
        w.reset(1)
        w.reset(2)  # the ERP holds order 2 as mapsync wrote it: written again whatever on_exists says
        again = w.run()
        held, states = w.erp_orders(), w.states()
        assert states[2] == (1, "success", None, before[2][0])
        assert w.erp_counts() == (2, 4)
        flag, status, error, number = states[1]
        if on_exists == "skip":
            assert again.ok
            assert held[1] == (before[1][0], "customer 1", "12345", "picked")  # left alone
            assert (flag, status, number) == (1, "skipped", before[1][0])
            assert "already imported" in error
            assert w.open_errors() == {}
        elif on_exists == "fail":
            assert again.counts.rejected == 1
            assert held[1][3] == "picked"
            assert (flag, status, number) == (0, "failed", before[1][0])
            assert error.startswith("already imported")
            assert list(w.open_errors()) == ["[1]"]
        else:
            assert again.ok
            assert held[1] == before[1]  # overwritten: status `new` again
            assert (flag, status, error, number) == (1, "success", None, before[1][0])
    finally:
        w.close()


def test_a_reexport_cut_short_leaves_its_orders_listed_and_sent_by_reexport_failed(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    """Orders below the seed's starting point, reset by a reexport that then died before sending
    (the ERP away), are open record errors ("re-export requested"), not lost: a plain run does
    not send them (a portal's `pending` history must not flood the ERP), `reexport --failed`
    does, once, and resolves them."""
    w = World(pg_database(), pg_database(), tmp_path)
    try:
        w.order(1)
        w.order(2)
        w.order(3)
        w.run("seed")  # the starting point: order 3; nothing exported
        h.execute(w.portal, "UPDATE orders SET erp_import_status = 'pending'")  # the portal's own default
        h.execute(w.erp, "ALTER TABLE sales_order RENAME TO sales_order_away")
        cut = w.reexport("1", "2")
        assert not cut.ok  # the ERP is away: the run failed after the reset
        assert {n: s[:2] for n, s in w.states().items()} == {
            1: (0, "pending"),
            2: (0, "pending"),
            3: (None, "pending"),
        }
        assert sorted(w.open_errors()) == ["[1]", "[2]"]
        h.execute(w.erp, "ALTER TABLE sales_order_away RENAME TO sales_order")
        w.close()
        assert w.run().counts.read == 0  # below the starting point: no run takes the history
        done = w.reexport()  # --failed
        assert (done.counts.read, done.counts.written) == (2, 2)
        assert sorted(w.erp_orders()) == [1, 2] and w.erp_counts() == (2, 4)
        assert {n: s[:2] for n, s in w.states().items()} == {
            1: (1, "success"),
            2: (1, "success"),
            3: (None, "pending"),
        }
        assert w.open_errors() == {}
    finally:
        w.close()


def test_reexport_stays_within_the_sync_filter(pg_database: Callable[[], str], tmp_path: Path) -> None:
    """Two exports can share a table, split by `filter`: `reexport --failed` and `reexport KEY`
    of one never send the other's orders."""
    w = World(pg_database(), pg_database(), tmp_path)
    try:
        text = (tmp_path / "sheet.yaml").read_text()
        (tmp_path / "sheet.yaml").write_text(
            text.replace("    seed: {}", "    filter: \"customer <> 'other'\"\n    seed: {}")
        )
        w.run("seed")
        w.order(1, zip="1234")
        w.order(2, customer="other", zip="1234")
        w.run()
        h.execute(w.portal, "UPDATE orders SET erp_import_status = 'failed' WHERE order_no = 2")
        h.execute(w.portal, "UPDATE orders SET zip = '12345'")
        failed = w.reexport()
        assert failed.counts.written == 1 and sorted(w.erp_orders()) == [1]
        by_key = w.reexport("2")
        assert [list(k) for k in by_key.gone] == [[2]] and sorted(w.erp_orders()) == [1]
        assert w.states()[2][:2] == (None, "failed")  # not this sync's: left as it was
    finally:
        w.close()


def test_on_exists_fail_of_many_orders_does_not_trip_the_breaker(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    """`already imported` is no refused write: five batches of orders the ERP has started on are
    refused one by one, and the run ends (partial), not failed by `delivery.breaker`."""
    w = World(
        pg_database(),
        pg_database(),
        tmp_path,
        changes="      on_exists: fail\n      started: \"status <> 'new'\"",
    )
    try:
        text = (tmp_path / "sheet.yaml").read_text()
        (tmp_path / "sheet.yaml").write_text(text.replace("delivery: {batch: 20}", "delivery: {batch: 1}"))
        w.run("seed")
        for no in range(1, 6):
            w.order(no)
        assert w.run().counts.written == 5
        h.execute(w.erp, "UPDATE sales_order SET status = 'picking'")
        again = w.reexport(*[str(n) for n in range(1, 6)])
        assert again.status == "partial" and again.counts.rejected == 5
        states = w.states()
        assert all(states[n][1] == "failed" and "already imported" in states[n][2] for n in range(1, 6))
    finally:
        w.close()


def test_a_status_column_too_short_for_a_status_word_is_a_config_error(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    w = World(pg_database(), pg_database(), tmp_path)
    try:
        h.execute(w.portal, "ALTER TABLE orders ALTER COLUMN erp_import_status TYPE VARCHAR(5)")
        with pytest.raises(errors.ConfigError, match="holds 5 characters, too few for the status 'pending'"):
            w.run("seed")
    finally:
        w.close()
