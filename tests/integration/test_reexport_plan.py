"""Sending exported transactions again (issue 16) on real databases: a worker's reset, `mapsync
reexport KEY… | --failed`, and what `on_exists` does with an order the ERP holds already. The
portal is PostgreSQL, the ERP PostgreSQL and MariaDB (tests/export_world.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

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
