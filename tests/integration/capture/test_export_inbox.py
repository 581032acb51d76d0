"""CIMcloud order export through the inbox (issue 17, capture/export_inbox.py): the sandbox's
destructive `OnlineOrders` into an ERP on SQLite, PostgreSQL and MariaDB, by an in-process
engine (tests/cim_export_world.py): seed, a run of 120 orders (nested lines and lines from
`order_detail`), the status write-back ≤ 10 per call or none at all, an ERP refusal and its
retry from the inbox, `reexport`, a worker's re-export, `on_exists: skip`, `document`."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mapsync.records import key_text
from tests import helpers as h
from tests.cim_export_world import STATUS, SYNC, World, expected_lines, number

ERPS = [
    pytest.param("sqlite_database", id="erp-sqlite"),
    pytest.param("pg_database", id="erp-postgresql", marks=pytest.mark.postgres),
    pytest.param("mariadb_database", id="erp-mariadb", marks=pytest.mark.mariadb),
]


@pytest.fixture(params=ERPS)
def erp(request: pytest.FixtureRequest) -> Callable[[], str]:
    factory: Callable[[], str] = request.getfixturevalue(request.param)
    return factory


def make(
    erp: Callable[[], str], factory: Callable[..., Any], folder: Path, changes: str = STATUS, **config: Any
) -> World:
    return World(erp(), factory(in_process=True, **config), folder, changes=changes)


@pytest.fixture
def world(
    erp: Callable[[], str], cimcloud_sandbox_factory: Callable[..., Any], tmp_path: Path
) -> Iterator[World]:
    w = make(erp, cimcloud_sandbox_factory, tmp_path)
    yield w
    w.close()


@pytest.mark.parametrize("shape", ["nested", "separate"])
def test_seed_reads_nothing_and_a_run_delivers_120_orders_in_three_gets(
    erp: Callable[[], str], cimcloud_sandbox_factory: Callable[..., Any], tmp_path: Path, shape: str
) -> None:
    w = make(erp, cimcloud_sandbox_factory, tmp_path, online_orders_lines=shape)
    try:
        w.add(1, 120, lines=2)
        seeded = w.run("seed")
        assert seeded.ok and seeded.counts.written == 0, seeded.message
        assert w.gets() == 0
        assert {o["exported"] for o in w.cim().values()} == {"0"}
        ran = w.run()
        assert ran.ok and ran.counts.written == 120, ran.message
        assert w.gets() == 3  # 50, 50, 20: the short page ends the run
        held = w.orders()
        assert sorted(held) == [number(i) for i in range(1, 121)]
        assert held["W0007"][:3] == ("C0", "7.25", "new")
        total = sum(float(v[1]) for v in held.values())
        assert total == pytest.approx(sum(i + 0.25 for i in range(1, 121)))
        lines = w.lines()
        assert len(lines) == 120 and all(lines[number(i)] == expected_lines(i, 2) for i in range(1, 121))
        cim = w.cim()
        for o in cim.values():
            assert (o["exported"], o["erp_import_status"], o["erp_import_error"]) == ("1", "success", "")
        assert w.posts and max(w.posts) <= 10 and sum(w.posts) == 120
        assert w.status_posts() == len(w.posts) >= 12
        detail_gets = sum(1 for r in w.log() if r["path"].lower().startswith("order_detail"))
        assert detail_gets == (12 if shape == "separate" else 0)  # 10 orders per `|or|` GET
        again = w.run()
        assert again.ok and again.counts.read == 0 and w.gets() == 4
        assert w.counts() == (120, 240)
    finally:
        w.close()


def test_a_site_without_status_fields_gets_no_status_post(
    erp: Callable[[], str], cimcloud_sandbox_factory: Callable[..., Any], tmp_path: Path
) -> None:
    w = make(erp, cimcloud_sandbox_factory, tmp_path, changes="")
    try:
        w.add(1, 12, lines=1)
        assert w.run("seed").ok
        ran = w.run()
        assert ran.ok and ran.counts.written == 12, ran.message
        assert w.counts() == (12, 12)
        assert w.status_posts() == 0 and w.posts == []
        methods = {(r["method"], r["path"].lower()) for r in w.log()}
        assert methods == {("POST", "authenticate"), ("GET", "onlineorders")}
        assert all(o["exported"] == "1" and "erp_import_status" not in o for o in w.cim().values())
    finally:
        w.close()


def test_an_erp_refusal_is_written_back_and_retried_from_the_inbox(world: World) -> None:
    world.add(1, 4, lines=2)
    world.block("C2")  # W0002 (2 % 7 == 2)
    assert world.run("seed").ok
    ran = world.run()
    assert ran.counts.written == 3 and ran.counts.rejected == 1, ran
    assert sorted(world.orders()) == ["W0001", "W0003", "W0004"]
    cim = world.cim()
    assert cim["W0002"]["exported"] == "1"
    assert cim["W0002"]["erp_import_status"] == "failed"
    assert cim["W0002"]["erp_import_error"] == ran.samples[0].message  # the ERP's own message
    assert "customer" in cim["W0002"]["erp_import_error"].lower()
    assert cim["W0001"]["erp_import_status"] == "success"
    assert list(world.store.open_error_versions(SYNC)) == [key_text(("W0002",))]
    prefix = f"order:{key_text(('W0002',))}:"
    assert world.store.inbox.latest(SYNC, [prefix])[prefix][1] == "error"
    gets = world.gets()
    world.unblock()
    retried = world.engine.retry(SYNC)
    assert retried.ok and retried.counts.written == 1, retried.message
    assert world.gets() == gets  # from the inbox, never a GET
    assert world.orders()["W0002"][:2] == ("C2", "2.25")
    assert world.lines()["W0002"] == expected_lines(2, 2)
    assert world.cim()["W0002"]["erp_import_status"] == "success"
    assert world.cim()["W0002"]["erp_import_error"] == ""
    assert world.store.open_error_versions(SYNC) == {}
    assert world.counts() == (4, 8)


def test_a_refused_line_refuses_its_whole_order(world: World) -> None:
    """A line the ERP refuses (a CHECK on the lines; a trigger on SQLite) keeps its header out too."""
    world.add(1, 2, lines=2)
    bad = [{"sku": "A", "quantity": "1", "price": "1"}, {"sku": "B", "quantity": "-1", "price": "1"}]
    world.box.sandbox.add_order({"c_ordnum": "W0009", "customer": "C9", "total": "9"}, bad)
    if world.dialect == "sqlite":
        h.execute(
            world.erp,
            "CREATE TRIGGER qty_pos BEFORE INSERT ON sales_order_lines WHEN NEW.qty < 0 "
            "BEGIN SELECT RAISE(ABORT, 'qty_pos: a quantity is never negative'); END",
        )
    else:
        h.execute(world.erp, "ALTER TABLE sales_order_lines ADD CONSTRAINT qty_pos CHECK (qty >= 0)")
    assert world.run("seed").ok
    ran = world.run()
    assert ran.counts.written == 2 and ran.counts.rejected == 1, ran
    assert sorted(world.orders()) == ["W0001", "W0002"] and world.counts() == (2, 4)
    w9 = world.cim()["W0009"]
    assert w9["erp_import_status"] == "failed" and "qty_pos" in w9["erp_import_error"], w9
    assert list(world.store.open_error_versions(SYNC)) == [key_text(("W0009",))]


def test_reexport_resets_at_cimcloud_and_updates_the_erp_order(world: World) -> None:
    world.add(1, 6, lines=2)
    assert world.run("seed").ok
    assert world.run().ok
    h.execute(world.erp, "UPDATE sales_orders SET total = 0 WHERE order_no = 'W0005'")
    h.execute(world.erp, "DELETE FROM sales_order_lines WHERE order_no = 'W0005' AND line_no = 2")
    gets, posts, writes = world.gets(), len(world.posts), world.writes()
    done = world.engine.reexport(SYNC, [("W0005",)])
    assert done.ok, done.message
    assert world.gets() == gets + 1  # the same run GETs it again
    assert len(world.posts) == posts + 2  # the reset (exported=0) and the status
    assert world.orders()["W0005"][1] == "5.25"
    assert world.writes() == writes + 1
    assert world.lines()["W0005"] == expected_lines(5, 2)
    assert world.counts() == (6, 12)
    w5 = world.cim()["W0005"]
    assert (w5["exported"], w5["erp_import_status"]) == ("1", "success")

    # typed in lower case: reset and delivered under CIMcloud's spelling, the ERP order updated
    writes = world.writes()
    lower = world.engine.reexport(SYNC, [("w0003",)])
    assert lower.ok and lower.counts.written == 1, lower
    assert sorted(world.orders()) == [number(i) for i in range(1, 7)] and world.counts() == (6, 12)
    assert world.writes() == writes + 1 and "W0003" in world.cim()

    before, posts = set(world.cim()), len(world.posts)
    typo = world.engine.reexport(SYNC, [("W9999",)])
    assert typo.gone == [("W9999",)] and typo.counts.written == 0, typo
    assert set(world.cim()) == before and len(world.posts) == posts  # nothing created at CIMcloud
    assert world.counts() == (6, 12)


def test_a_worker_re_export_comes_again_as_a_new_inbox_item(world: World) -> None:
    world.add(1, 3, lines=1)
    assert world.run("seed").ok
    assert world.run().ok
    h.execute(world.erp, "UPDATE sales_orders SET customer = 'edited' WHERE order_no = 'W0002'")
    world.set_exported("W0002", "0")
    writes = world.writes()
    ran = world.run()
    assert ran.ok and ran.counts.read == 1 and ran.counts.written == 1, ran.message
    assert world.orders()["W0002"][0] == "C2"
    assert world.writes() == writes + 1
    prefix = f"order:{key_text(('W0002',))}:"
    # 2 pages split, 3 + 1 orders, and the 2 `lost:` items closed with their pages
    assert world.store.inbox.counts(SYNC) == {"processed": 3 + 2 + 1 + 2}
    assert world.store.inbox.latest(SYNC, [prefix])[prefix][0].event_id.startswith(prefix)
    assert world.counts() == (3, 3)
    assert world.cim()["W0002"]["exported"] == "1"
    assert world.run().counts.written == 0


def test_on_exists_skip_leaves_a_started_erp_order_alone(
    erp: Callable[[], str], cimcloud_sandbox_factory: Callable[..., Any], tmp_path: Path
) -> None:
    changes = f"{STATUS}\n      on_exists: skip\n      started: \"status <> 'new'\""
    w = make(erp, cimcloud_sandbox_factory, tmp_path, changes=changes)
    try:
        w.add(1, 2, lines=1)
        assert w.run("seed").ok and w.run().ok
        h.execute(w.erp, "UPDATE sales_orders SET status = 'picking', total = 99 WHERE order_no = 'W0001'")
        w.set_exported("W0001", "0")
        w.set_exported("W0002", "0")
        ran = w.run()
        assert ran.ok, ran.message
        held = w.orders()
        assert held["W0001"][1:3] == ("99.00", "picking")  # left alone
        cim = w.cim()
        assert cim["W0001"]["erp_import_status"] == "skipped"
        assert cim["W0001"]["erp_import_error"].startswith("already imported")
        assert cim["W0002"]["erp_import_status"] == "success"
        assert w.counts() == (2, 2)
    finally:
        w.close()


def test_the_erp_document_number_reaches_the_cimcloud_order(
    erp: Callable[[], str], cimcloud_sandbox_factory: Callable[..., Any], tmp_path: Path
) -> None:
    changes = f"{STATUS}\n      document: {{from: erp_order_no, to: erp_order_number}}"
    w = make(erp, cimcloud_sandbox_factory, tmp_path, changes=changes)
    try:
        w.add(1, 3, lines=1)
        assert w.run("seed").ok
        ran = w.run()
        assert ran.ok, ran.message
        held = w.orders()
        cim = w.cim()
        numbers = {k: str(v[3]) for k, v in held.items()}
        assert len(set(numbers.values())) == 3
        for key, no in numbers.items():
            assert cim[key]["erp_order_number"] == no
    finally:
        w.close()


def test_gets_and_status_writes_stay_within_the_sites_budget(
    sqlite_database: Callable[[], str], cimcloud_sandbox_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """CIMcloud's 2 calls a second (and 100 in 15 minutes), enforced by the sandbox: the token, 1
    GET and 3 status writes of 25 orders keep to it, with no 429 (the ERP plays no part: SQLite)."""
    budget = [(2, dt.timedelta(seconds=1)), (100, dt.timedelta(minutes=15))]
    w = make(sqlite_database, cimcloud_sandbox_factory, tmp_path, budget=budget)
    try:
        text = (tmp_path / "sheet.yaml").read_text().replace("budget: []", 'budget: ["2/1s", "100/15m"]')
        (tmp_path / "sheet.yaml").write_text(text)
        w.add(1, 25, lines=1)
        assert w.run("seed").ok
        started = time.monotonic()
        ran = w.run()
        assert ran.ok and ran.counts.written == 25, ran.message
        log = w.log()
        assert [r["status"] for r in log if r["status"] == 429] == []
        assert w.gets() == 1 and sorted(w.posts) == [5, 10, 10]
        assert len(log) == 5  # the token, the GET, 3 status writes
        stamps = [r["t"] for r in log]
        assert all(b - a >= 0.95 for a, b in zip(stamps, stamps[2:], strict=False))  # ≤ 2 in any second
        assert time.monotonic() - started >= 1.0
        assert {o["erp_import_status"] for o in w.cim().values()} == {"success"}
    finally:
        w.close()
