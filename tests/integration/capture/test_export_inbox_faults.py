"""CIMcloud order export through the inbox when things fail (issue 17): a destructive GET refused
(503 before any effect) or lost (orders marked, then 500) is sent once, the run fails naming
`mapsync sweep` and leaves a `lost:` item; a status write-back the site refuses fails the run
without doubling an ERP order, and the next run (site or sheet fixed) writes the status."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cim_export_world import STATUS, SYNC, World, expected_lines, number

ERPS = [
    pytest.param("sqlite_database", id="erp-sqlite"),
    pytest.param("pg_database", id="erp-postgresql", marks=pytest.mark.postgres),
    pytest.param("mariadb_database", id="erp-mariadb", marks=pytest.mark.mariadb),
]

# every field an order of the sandbox carries, but not the site-specific status fields
PLAIN_ORDER = frozenset({"c_ordnum", "customer", "total", "exported", "create_date", "last_modify_date"})


@pytest.fixture(params=ERPS)
def erp(request: pytest.FixtureRequest) -> Callable[[], str]:
    factory: Callable[[], str] = request.getfixturevalue(request.param)
    return factory


@pytest.fixture
def world(
    erp: Callable[[], str], cimcloud_sandbox_factory: Callable[..., Any], tmp_path: Path
) -> Iterator[World]:
    w = World(erp(), cimcloud_sandbox_factory(in_process=True), tmp_path)
    yield w
    w.close()


def lost_items(world: World) -> int:
    return sum(1 for i in world.store.inbox.new_items(SYNC, 0, 1000) if i.event_id.startswith("lost:"))


def test_a_refused_get_is_sent_once_and_the_next_run_delivers_everything(world: World) -> None:
    world.add(1, 5, lines=2)
    assert world.run("seed").ok
    world.box.sandbox.faults.online_orders_refuse = 1
    failed = world.run()
    assert not failed.ok
    assert "mapsync sweep" in (failed.message or ""), failed.message
    assert world.gets() == 1  # not retried
    assert [r["status"] for r in world.log() if r["path"].lower() == "onlineorders"] == [503]
    assert lost_items(world) == 1
    assert world.counts() == (0, 0)
    assert {o["exported"] for o in world.cim().values()} == {"0"}  # nothing was marked

    ran = world.run()
    assert ran.ok and ran.counts.written == 5, ran.message
    assert world.gets() == 2
    assert world.counts() == (5, 10)
    assert all(world.lines()[number(i)] == expected_lines(i, 2) for i in range(1, 6))
    assert {o["erp_import_status"] for o in world.cim().values()} == {"success"}


def test_a_lost_answer_is_not_retried_and_asks_for_a_sweep(world: World) -> None:
    world.add(1, 5, lines=1)
    assert world.run("seed").ok
    world.box.sandbox.faults.online_orders_lost = 1
    failed = world.run()
    assert not failed.ok
    assert "mapsync sweep" in (failed.message or ""), failed.message
    assert [r["status"] for r in world.log() if r["path"].lower() == "onlineorders"] == [500]
    assert lost_items(world) == 1
    assert world.counts() == (0, 0)
    # the GET marked them: only the sweep (not built yet) can set them pending again
    assert {o["exported"] for o in world.cim().values()} == {"1"}


@pytest.mark.parametrize("fix", ["site", "sheet"])
def test_a_refused_status_write_fails_the_run_and_the_next_one_writes_it(
    erp: Callable[[], str], cimcloud_sandbox_factory: Callable[..., Any], tmp_path: Path, fix: str
) -> None:
    box = cimcloud_sandbox_factory(in_process=True, order_fields=PLAIN_ORDER)
    w = World(erp(), box, tmp_path)
    try:
        w.add(1, 4, lines=2)
        assert w.run("seed").ok
        failed = w.run()
        assert not failed.ok
        message = failed.message or ""
        assert "erp_import_status" in message and "W000" in message, message
        assert w.counts() == (4, 8)  # committed at the ERP before the write-back
        assert w.gets() == 1
        if fix == "site":
            box.sandbox.config.order_fields = None
        else:
            w.sheet("")  # no status fields: nothing to write but the flag the GET set
        ran = w.run()
        assert ran.ok, ran.message
        assert w.gets() == 2  # the orders came from the inbox, then one short GET
        assert w.counts() == (4, 8)
        assert sorted(w.orders()) == [number(i) for i in range(1, 5)]
        cim = w.cim()
        assert {o["exported"] for o in cim.values()} == {"1"}
        if fix == "site":
            assert {o["erp_import_status"] for o in cim.values()} == {"success"}
        else:
            assert all("erp_import_status" not in o for o in cim.values())
        assert w.store.inbox.new_items(SYNC, 0, 100) == []
    finally:
        w.close()


def test_status_writes_stay_within_ten_records_a_call(world: World) -> None:
    world.add(1, 23, lines=0)
    assert world.run("seed").ok
    ran = world.run()
    assert ran.ok and ran.counts.written == 23, ran.message
    assert sorted(world.posts) == [3, 10, 10]
    assert STATUS  # the default sheet writes the status


def test_lines_that_cannot_be_read_keep_the_stored_page_for_the_next_run(
    erp: Callable[[], str], cimcloud_sandbox_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """Lines from `order_detail` failing (after retries) once the page is stored: the run fails,
    the raw page waits in the inbox, and the next run splits and delivers it with no second
    GET of those orders."""
    box = cimcloud_sandbox_factory(in_process=True, online_orders_lines="separate")
    w = World(erp(), box, tmp_path)
    try:
        text = (tmp_path / "sheet.yaml").read_text()
        (tmp_path / "sheet.yaml").write_text(
            text.replace("budget: []", "budget: []\n    retry: {attempts: 2, backoff: 10ms}")
        )
        w.add(1, 4, lines=2)
        read, failing = box.sandbox.read, [True]

        def flaky(name: str, *args: Any, **kwargs: Any) -> Any:
            if name.lower() == "order_detail" and failing:
                return 500, {"message": "order_detail is down"}
            return read(name, *args, **kwargs)

        box.sandbox.read = flaky
        assert w.run("seed").ok
        failed = w.run()
        assert not failed.ok and "order_detail" in (failed.message or ""), failed.message
        assert w.counts() == (0, 0)
        (page,) = w.store.inbox.new_items(SYNC, 0, 10)
        assert page.event_id.startswith("page:")
        failing.clear()
        ran = w.run()
        assert ran.ok and ran.counts.written == 4, ran.message
        assert w.gets() == 2  # the failed run's GET, and the next run's (empty) one
        assert w.counts() == (4, 8)
        assert all(w.lines()[number(i)] == expected_lines(i, 2) for i in range(1, 5))
        assert {o["erp_import_status"] for o in w.cim().values()} == {"success"}
    finally:
        w.close()
