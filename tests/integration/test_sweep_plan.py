"""The lost-order sweep (issue 17, item 4) against the CIMcloud sandbox, the ERP on real
PostgreSQL and SQLite: a planted order marked exported that mapsync never received is reset and
delivered once (or alerted, changing nothing at CIMcloud); orders in the ledger, in the inbox, or
created before the export started are not touched; `max_calls` is honoured (counted in the
sandbox's request log); a lost destructive GET followed by a sweep delivers every order once."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mapsync import sweep_plan
from mapsync.daemon import Daemon
from mapsync.engine import Engine
from mapsync.records import RunKind, RunStatus
from mapsync.run_types import RunReport
from mapsync.sheet import loader
from mapsync.state.store import StateStore
from tests import helpers as h

ERPS = [
    # PostgreSQL in the campaign tier (.ci/run runs it), to keep the default tier's 5 minutes
    pytest.param("pg_database", id="erp-postgresql", marks=[pytest.mark.postgres, pytest.mark.campaign]),
    pytest.param("sqlite_database", id="erp-sqlite"),
]
ENV = {"PW": "sandbox-password"}


@pytest.fixture(params=ERPS)
def erp(request: pytest.FixtureRequest) -> Callable[[], str]:
    factory: Callable[[], str] = request.getfixturevalue(request.param)
    return factory


class World:
    """A CIMcloud sandbox, an ERP with `sales_orders`, a sheet exporting OnlineOrders into it."""

    def __init__(self, box: Any, erp_url: str, folder: Path, sweep: str = "{}", budget: str = "[]") -> None:
        self.box, self.erp_url, self.folder = box, erp_url, folder
        self.erp = sa.create_engine(erp_url)
        with self.erp.begin() as c:
            c.execute(
                sa.text(
                    "CREATE TABLE sales_orders (order_no VARCHAR(20) PRIMARY KEY, "
                    "customer VARCHAR(40), total NUMERIC(10,2))"
                )
            )
        (folder / "sheet.yaml").write_text(
            f"""
version: 1
connections:
  erp: {{url: "{erp_url}"}}
  cim:
    kind: cimcloud
    base_url: "{box.base_url}"
    site: sandbox
    auth: {{type: token, auth_key: sandbox-key, username: sandbox, password: "${{PW}}"}}
    budget: {budget}
syncs:
  orders:
    from: {{connection: cim, resource: OnlineOrders}}
    to: {{connection: erp, table: sales_orders}}
    key: {{from: c_ordnum, to: order_no}}
    fields:
      customer: customer
      total: {{from: total, cast: decimal, scale: 2}}
    changes:
      method: export_flag
      flag: exported
      status: erp_import_status
      error: erp_import_error
      sweep: {sweep}
    schedule: {{every: 1s}}
"""
        )
        self.loaded = loader.load(folder / "sheet.yaml", env=ENV)
        self.store = StateStore.open(self.loaded.sheet.state.url, self.loaded.folder, create=True)
        self.engine = Engine(self.loaded, self.store)

    def close(self) -> None:
        self.engine.close()
        self.store.close()
        self.erp.dispose()

    def order(self, no: str, *, exported: str = "0", total: str = "10.50", created: Any = None) -> None:
        order = {"c_ordnum": no, "customer": f"C-{no}", "total": total, "exported": exported}
        if created is not None:
            order["create_date"] = created.isoformat() if isinstance(created, dt.datetime) else created
        self.box.sandbox.add_order(order)

    def run(self, kind: str = "run") -> RunReport:
        return self.engine.run("orders", kind)

    def sweep(self) -> RunReport:
        return self.engine.sweep("orders")

    def erp_orders(self) -> dict[str, int]:
        """order_no → how many rows the ERP holds of it."""
        with self.erp.connect() as c:
            rows = c.execute(sa.text("SELECT order_no, COUNT(*) FROM sales_orders GROUP BY order_no"))
            return {r[0]: int(r[1]) for r in rows}

    def cim(self, no: str) -> dict[str, Any]:
        found = self.box.sandbox.order(no)
        assert found is not None
        return dict(found)

    def requests(self, method: str, fragment: str) -> int:
        return sum(
            1
            for r in self.box.sandbox.store.requests()
            if r["method"] == method and r["path"].startswith(fragment)
        )


@pytest.fixture
def world_of(
    cimcloud_sandbox_factory: Callable[..., Any], erp: Callable[[], str], tmp_path: Path
) -> Iterator[Callable[..., World]]:
    made: list[World] = []

    def make(sweep: str = "{}", in_process: bool = True, budget: str = "[]") -> World:
        w = World(cimcloud_sandbox_factory(in_process=in_process), erp(), tmp_path, sweep, budget)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()


def _past(days: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=days)


def test_a_planted_lost_order_is_reset_and_delivered_once_and_nothing_else_is_touched(
    world_of: Callable[..., World],
) -> None:
    w = world_of()
    w.order("OLD1", exported="1", created=_past(1))  # exported before mapsync started: someone else's
    w.run("seed")
    w.order("D1")
    w.order("D2")
    w.order("R1", total="not a number")  # refused: in the inbox (error), never in the ledger
    first = w.run()
    assert first.counts.written == 2 and first.counts.rejected == 1
    w.order("L1", exported="1")  # marked exported at CIMcloud, never received
    untouched = {no: w.cim(no) for no in ("OLD1", "D1", "D2", "R1")}
    posts = w.requests("POST", "orders")

    report = w.sweep()

    assert report.kind == RunKind.SWEEP and report.status == RunStatus.SUCCESS
    assert w.erp_orders() == {"D1": 1, "D2": 1, "L1": 1}
    assert {no: w.cim(no) for no in untouched} == untouched  # no write reached them
    assert w.requests("POST", "orders") == posts + 2  # the reset, then its status write-back
    assert w.cim("L1")["exported"] == "1" and w.cim("L1")["erp_import_status"] == "success"
    text = "\n".join(report.notes)
    assert "sweep plan:" in text and "about 2 read call(s)" in text  # 2 in the ledger: ceil(2/50)+1
    assert "1 read call(s), 4 order(s) marked exported, 1 lost" in text
    assert "1 lost order(s) reset in 1 call(s), 1 delivered" in text
    assert "sweep calls: 2 of at most 20 (reads 1, resets 1)" in text
    assert w.store.open_error_versions("orders").keys() == {'["R1"]'}  # the reset's own error resolved
    run = w.store.history.runs("orders", 1)[0]
    assert run["kind"] == "sweep" and "1 delivered" in (run["message"] or "")

    again = w.sweep()
    assert again.ok and "0 lost" in "\n".join(again.notes)
    assert w.erp_orders() == {"D1": 1, "D2": 1, "L1": 1}


def test_on_lost_alert_records_an_open_error_and_changes_nothing_at_cimcloud(
    world_of: Callable[..., World],
) -> None:
    w = world_of("{on_lost: alert}")
    w.run("seed")
    w.order("L1", exported="1")
    before = w.cim("L1")
    posts = w.requests("POST", "orders")

    report = w.sweep()

    assert report.status == RunStatus.PARTIAL and report.counts.rejected == 1
    assert w.requests("POST", "orders") == posts
    assert w.cim("L1") == before and w.erp_orders() == {}
    errors_ = w.store.history.record_errors("orders", False, 10)
    assert len(errors_) == 1
    message = errors_[0]["message"]
    assert message.startswith("lost: marked exported at CIMcloud on ")
    assert "never received; `mapsync reexport SHEET --sync orders L1` sends it" in message
    # a second sweep alerts no second time; reexport then sends it
    assert w.sweep().counts.rejected == 0 and len(w.store.history.record_errors("orders", False, 10)) == 1
    done = w.engine.reexport("orders", [("L1",)])
    assert done.ok and w.erp_orders() == {"L1": 1} and not w.store.open_error_versions("orders")


def test_max_calls_is_honoured_and_the_sweep_says_where_it_stopped(world_of: Callable[..., World]) -> None:
    w = world_of("{on_lost: alert, max_calls: 2}")
    w.run("seed")
    for i in range(120):
        w.order(f"L{i:03d}", exported="1")
    reads = w.requests("GET", "orders/searchexact~exported~1")

    report = w.sweep()

    assert w.requests("GET", "orders/searchexact~exported~1") == reads + 2
    text = "\n".join(report.notes)
    assert "stopped at the cap (max_calls 2) after 2 read(s), 100 order(s)" in text
    assert report.counts.rejected == 100


def test_max_calls_keeps_the_resets_within_the_cap(world_of: Callable[..., World]) -> None:
    w = world_of("{max_calls: 4}")
    w.run("seed")
    for i in range(60):
        w.order(f"L{i:03d}", exported="1")
    reads, posts = w.requests("GET", "orders/searchexact~exported~1"), w.requests("POST", "orders")

    report = w.sweep()

    # 1 read (50 lost) + 3 resets of 10 = the cap; the 30 delivered add 3 status write-backs
    assert w.requests("GET", "orders/searchexact~exported~1") == reads + 1
    assert w.requests("POST", "orders") == posts + 3 + 3
    assert len(w.erp_orders()) == 30
    text = "\n".join(report.notes)
    assert "stopped at the cap (max_calls 4) after 1 read(s), 50 order(s)" in text
    assert "20 lost order(s) left for the next sweep (max_calls 4)" in text
    assert "sweep calls: 4 of at most 4 (reads 1, resets 3)" in text
    w.sweep()  # the next sweep goes on
    w.sweep()
    assert len(w.erp_orders()) == 60 and set(w.erp_orders().values()) == {1}


def test_a_lost_get_then_a_sweep_delivers_every_order_exactly_once(world_of: Callable[..., World]) -> None:
    w = world_of()
    w.run("seed")
    for i in range(7):
        w.order(f"W{i}")
    w.box.sandbox.faults.online_orders_lost = 1  # marks them exported, then answers 500

    failed = w.run()

    assert failed.status == RunStatus.FAILED and "mapsync sweep" in (failed.message or "")
    assert w.erp_orders() == {} and all(w.cim(f"W{i}")["exported"] == "1" for i in range(7))
    assert w.store.inbox.counts("orders").get("new") == 1  # the `lost:` marker
    assert _status(w) == (True, "warning: orders: a destructive GET's answer was lost: a sweep is due")
    # a later run's GET answers (and closes its own marker): the open one still asks for a sweep
    w.order("W7")
    assert w.run().counts.written == 1
    assert sweep_plan.due(w.store, "orders", w.engine.parts("orders")) == "lost"
    assert _status(w)[0] is True

    report = w.sweep()

    assert report.ok and w.erp_orders() == {f"W{i}": 1 for i in range(8)}
    assert "1 `lost:` marker(s) settled" in "\n".join(report.notes)
    assert not w.store.inbox.counts("orders").get("new")
    assert w.run().counts.read == 0 and "0 lost" in "\n".join(w.sweep().notes)
    assert _status(w) == (False, None)


def _status(w: World) -> tuple[bool, str | None]:
    """`mapsync status`: --json's `sweep_due`, and the text's line that says so."""
    w.engine.release()
    shown = h.mapsync("status", "sheet.yaml", "--json", cwd=w.folder, env=ENV)
    text = h.mapsync("status", "sheet.yaml", cwd=w.folder, env=ENV).stdout
    line = next((x.split(" (")[0] for x in text.splitlines() if "sweep is due" in x), None)
    return bool(json.loads(shown.stdout)[0]["sweep_due"]), line


def test_the_cli_states_the_call_estimate_before_the_outcome(world_of: Callable[..., World]) -> None:
    w = world_of(in_process=False)
    w.run("seed")
    w.order("L1", exported="1")
    w.engine.release()

    done = h.mapsync("sweep", "sheet.yaml", "--sync", "orders", cwd=w.folder, env=ENV)

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("orders sweep #") and "success" in lines[0]
    assert "sweep plan: orders marked exported since" in lines[1] and "about 1 read call(s)" in lines[1]
    assert "budget left: no client-side budget configured" in lines[1]
    assert "1 lost order(s) reset in 1 call(s), 1 delivered" in done.stdout
    assert w.erp_orders() == {"L1": 1}
    print(done.stdout)


def test_the_daemon_sweeps_first_when_a_lost_marker_is_new_and_when_every_passed(
    world_of: Callable[..., World],
) -> None:
    w = world_of("{every: 1h}")
    due = lambda: sweep_plan.due(w.store, "orders", w.engine.parts("orders"))  # noqa: E731
    w.run("seed")
    assert due() == "schedule"  # no sweep yet
    assert w.sweep().ok and due() is None
    for i in range(5):
        w.order(f"W{i}")
    w.box.sandbox.faults.online_orders_lost = 1
    assert w.run().status == RunStatus.FAILED and due() == "lost"
    w.engine.release()

    daemon = Daemon(
        w.loaded,
        w.store,
        ["orders"],
        open_store=lambda: StateStore.open(w.loaded.sheet.state.url, w.loaded.folder, create=False),
        poll=dt.timedelta(seconds=0.1),
    )
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        end = time.monotonic() + 20

        def swept() -> bool:  # the sweep ended (stopping the daemon mid-sweep would end it `stopped`)
            runs = w.store.history.runs("orders", 50)
            return any(
                r["kind"] == "sweep" and r["status"] != "running" and r["trigger"] == "lost" for r in runs
            )

        while time.monotonic() < end and not (len(w.erp_orders()) == 5 and swept()):
            time.sleep(0.1)
    finally:
        daemon.stop.set()
        thread.join(timeout=40)
    assert w.erp_orders() == {f"W{i}": 1 for i in range(5)}
    sweeps = [r for r in w.store.history.runs("orders", 50) if r["kind"] == "sweep"]
    assert [r["trigger"] for r in sweeps][:1] == ["lost"] and sweeps[0]["status"] == "success"
    assert due() is None and not w.store.inbox.counts("orders").get("new")


def test_the_plan_line_says_what_the_call_budget_has_left(world_of: Callable[..., World]) -> None:
    w = world_of(budget='["2/1s", "100/15m"]')
    w.run("seed")
    w.run()  # one OnlineOrders GET, counted
    w.order("L1", exported="1")

    report = w.sweep()

    plan = report.notes[0]
    assert plan.startswith("sweep plan:") and "budget left: " in plan
    left = plan.split("budget left: ")[1]
    assert "of 2/1s" in left and "of 100/15m" in left
    assert int(left.split(" of 100/15m")[0].split(", ")[-1]) < 100  # the run's call is counted
    assert w.erp_orders() == {"L1": 1}


def test_the_cli_exits_1_when_it_alerted_and_2_on_an_export_from_a_sql_table(
    world_of: Callable[..., World], pg_database: Callable[[], str], tmp_path: Path
) -> None:
    w = world_of("{on_lost: alert}", in_process=False)
    w.run("seed")
    w.order("L1", exported="1")
    w.engine.release()
    alerted = h.mapsync("sweep", "sheet.yaml", "--sync", "orders", "--json", cwd=w.folder, env=ENV)
    assert alerted.returncode == 1, alerted.stderr
    (report,) = json.loads(alerted.stdout)
    assert (report["kind"], report["status"], report["counts"]["rejected"]) == ("sweep", "partial", 1)
    assert any(n.startswith("sweep: 1 lost order(s) alerted") for n in report["notes"])

    from tests.export_world import World as SqlWorld

    (tmp_path / "sql").mkdir()
    sql = SqlWorld(pg_database(), pg_database(), tmp_path / "sql")
    try:
        sql.run("seed")
        refused = sql.cli("sweep", "sheet.yaml", "--sync", "orders")
    finally:
        sql.close()
    assert refused.returncode == 2
    assert "reads a SQL table: `mapsync sweep` is for an export from an API" in refused.stderr
