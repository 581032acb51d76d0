"""The reconcile run (`reconcile.runner`) on SQLite through the real engine: a check runs under
its lease `reconcile:<check>` as a run of kind `reconcile` (success when clean, partial when it
finds differences, failed when it cannot run), its result is kept in the state store and judged
by the monitor `reconcile_mismatch`; `--check`/`--sync` resolve to the right checks (an implicit
`drift:SYNC`); the daemon's chore runs a scheduled check once per slot among several daemons."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mapsync import errors, watch, watch_environment
from mapsync.daemon import Daemon
from mapsync.daemon_reconcile import ScheduledChecks
from mapsync.engine import Engine
from mapsync.reconcile import runner
from mapsync.reconcile.results import CheckResult
from mapsync.records import key_text
from mapsync.sheet import loader, models
from mapsync.sheet.alert_models import AlertsConfig
from mapsync.sheet.loader import LoadedSheet
from mapsync.state.store import StateStore
from tests import helpers as h

SHEET = """
version: 1
connections:
  erp: {{url: "{src}"}}
  portal: {{url: "{dst}"}}
syncs:
  customers:
    from: {{connection: erp, table: customers}}
    to: {{connection: portal, table: accounts}}
    key: {{from: id, to: ref}}
    fields:
      nm: name
      balance: balance
    changes: {{method: snapshot}}
    deletes: {{policy: hard, max_delete_ratio: 1}}
reconcile:
  balances:
    sync: customers
    source: {{connection: erp, table: customers, group: id, sum: balance}}
    dest: {{connection: portal, table: accounts, group: ref, sum: balance}}
    schedule: {{every: 1h}}
  rows:
    drift: customers
  broken:
    source: {{connection: erp, table: customers, group: id, sum: balance}}
    dest: {{connection: portal, table: nowhere, group: ref, sum: balance}}
"""
ROWS = 12


class World:
    def __init__(self, src: str, dst: str, folder: Path, state: str = "sqlite:///state.db") -> None:
        self.src, self.dst, self.folder, self.state = src, dst, folder, state
        h.execute(
            src, "CREATE TABLE customers (id INTEGER PRIMARY KEY, name VARCHAR(50), balance NUMERIC(12,2))"
        )
        h.execute(
            src,
            "INSERT INTO customers VALUES (:id, :name, :balance)",
            params=[{"id": i, "name": f"c{i}", "balance": f"{i}.10"} for i in range(1, ROWS + 1)],
        )
        h.execute(
            dst, "CREATE TABLE accounts (ref INTEGER PRIMARY KEY, nm VARCHAR(50), balance DECIMAL(12,2))"
        )
        (folder / "sheet.yaml").write_text(SHEET.format(src=src, dst=dst))
        self.loaded: LoadedSheet = loader.load(folder / "sheet.yaml", env={})
        self.store = StateStore.open(state, folder, create=True)
        self.engine = Engine(self.loaded, self.store)
        report = self.engine.run("customers", "seed")
        assert report.status == "success", report.message

    def close(self) -> None:
        self.engine.close()
        self.store.close()


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        # PostgreSQL → MariaDB with a PostgreSQL state store (the daemons' shared store)
        pytest.param("servers", id="pg-mariadb", marks=[pytest.mark.postgres, pytest.mark.mariadb]),
    ]
)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    if request.param == "sqlite":
        make = request.getfixturevalue("sqlite_database")
        w = World(make(), make(), tmp_path)
    else:
        pg, maria = request.getfixturevalue("pg_database"), request.getfixturevalue("mariadb_database")
        state = sa.make_url(pg()).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        w = World(pg(), maria(), tmp_path, state)
    yield w
    w.close()


def last_run(world: World, check: str) -> dict[str, Any]:
    run = world.store.history.last_run(runner.run_sync(check))
    assert run is not None
    return run


def test_a_clean_check_is_a_successful_reconcile_run_with_its_result_kept(world: World) -> None:
    result = runner.run_check(world.engine, "balances")
    assert result.ok and (result.compared, result.matched) == (ROWS, ROWS)
    run = last_run(world, "balances")
    assert (run["kind"], run["status"], run["trigger"]) == ("reconcile", "success", "cli")
    assert run["message"] == f"{ROWS} groups compared, {ROWS} matched"
    (row,) = world.store.reconciliation.results("balances", 10)
    assert (row["status"], row["run_id"], row["compared"], row["kind"]) == ("ok", run["id"], ROWS, "business")
    assert row["sync"] == "customers" and row["detail"]["matched"] == ROWS
    assert world.store.leases.holder("reconcile:balances") is None  # given back


def test_planted_differences_make_a_partial_run_and_a_differing_result(world: World) -> None:
    h.execute(world.dst, "UPDATE accounts SET balance = 99.99 WHERE ref = 3")
    h.execute(world.dst, "DELETE FROM accounts WHERE ref = 5")
    business = runner.run_check(world.engine, "balances")
    assert [(d.group, d.source, d.dest) for d in business.mismatched] == [(("3",), D("3.10"), D("99.99"))]
    assert [d.group for d in business.missing_dest] == [("5",)]
    assert last_run(world, "balances")["status"] == "partial"
    assert "1 mismatched" in last_run(world, "balances")["message"]
    rows = runner.run_check(world.engine, "rows")
    assert (rows.changed, rows.missing, rows.extra) == ([key_text((3,))], [key_text((5,))], [])
    latest = world.store.reconciliation.latest()
    assert {c: r["status"] for c, r in latest.items()} == {"balances": "differs", "rows": "differs"}


def test_a_check_that_cannot_run_is_a_failed_run_and_an_error_result(world: World) -> None:
    result = runner.run_check(world.engine, "broken")
    assert result.error is not None and "nowhere" in result.error
    run = last_run(world, "broken")
    assert run["status"] == "failed" and run["message"].startswith(
        "check broken could not run (source failure)"
    )
    assert world.store.reconciliation.latest(["broken"])["broken"]["status"] == "error"


def test_a_drift_check_of_a_sync_writing_to_an_api_is_a_config_error(world: World) -> None:
    def fake(engine: Engine, name: str, check: Any) -> CheckResult:
        raise errors.ConfigError(f"check {name}: drift needs a SQL destination")

    result = runner.run_check(world.engine, "rows", compute_with=fake)
    assert result.error == "check rows: drift needs a SQL destination"
    assert last_run(world, "rows")["failure_class"] == "config"


def test_a_bug_in_a_check_is_recorded_failed_then_raised(world: World) -> None:
    def buggy(engine: Engine, name: str, check: Any) -> CheckResult:
        raise ZeroDivisionError("oops")

    with pytest.raises(ZeroDivisionError):
        runner.run_check(world.engine, "rows", compute_with=buggy)
    run = last_run(world, "rows")
    assert (run["status"], run["failure_class"]) == ("failed", "tool")
    assert world.store.leases.holder("reconcile:rows") is None


def test_one_process_at_a_time_per_check(world: World) -> None:
    held = world.store.leases.acquire("reconcile:balances", dt.timedelta(minutes=5))
    try:
        with pytest.raises(errors.LeaseHeld, match=r"^check balances is running in pid"):
            runner.run_check(world.engine, "balances")
        assert runner.run_check(world.engine, "rows").ok  # another check is not held up
    finally:
        world.store.leases.release(held)
    assert world.store.reconciliation.results("balances", 10) == []


def test_check_and_sync_options_resolve_to_checks(world: World) -> None:
    sheet = world.loaded.sheet
    assert runner.checks_for(sheet) == ["balances", "rows", "broken"]
    assert runner.checks_for(sheet, sync="customers") == ["balances", "rows"]
    assert runner.checks_for(sheet, check="rows", sync="customers") == ["rows"]
    with pytest.raises(errors.ConfigError, match="unknown check 'nope'"):
        runner.checks_for(sheet, check="nope")
    with pytest.raises(errors.ConfigError, match="unknown sync 'nope'"):
        runner.checks_for(sheet, sync="nope")
    with pytest.raises(errors.ConfigError, match="check broken is not a check of sync customers"):
        runner.checks_for(sheet, check="broken", sync="customers")
    bare = sheet.model_copy(update={"reconcile": {}})
    assert runner.checks_for(bare, sync="customers") == ["drift:customers"]
    assert runner.check_of(bare, "drift:customers").drift == "customers"


def test_an_implicit_drift_check_runs_under_its_own_name(world: World) -> None:
    h.execute(world.dst, "INSERT INTO accounts VALUES (500, 'by hand', 1.00)")
    result = runner.run_check(world.engine, "drift:customers")
    assert result.check == "drift:customers" and [e.dest_key for e in result.extra] == [(500,)]
    assert last_run(world, "drift:customers")["kind"] == "reconcile"


def test_the_monitor_opens_an_incident_and_a_clean_result_resolves_it(world: World) -> None:
    h.execute(world.dst, "UPDATE accounts SET balance = 0 WHERE ref = 2")
    runner.run_check(world.engine, "balances")
    report = watch.evaluate(world.loaded, world.store, [], only=("reconcile_mismatch",))
    (opened,) = report.opened
    assert (opened.monitor, opened.subject, opened.sync) == ("reconcile_mismatch", "balances", None)
    assert "1 difference(s) (1 mismatched)" in opened.message and "2.10" not in opened.message
    h.execute(world.dst, "UPDATE accounts SET balance = 2.10 WHERE ref = 2")
    assert runner.run_check(world.engine, "balances").ok
    report = watch.evaluate(world.loaded, world.store, [], only=("reconcile_mismatch",))
    assert [i.subject for i in report.resolved] == ["balances"]


def test_with_include_values_the_monitor_quotes_the_groups_values(world: World) -> None:
    """The sheet's `alerts.include_values` reaches the sheet monitors as `SheetFacts.include_values`."""
    alerts = AlertsConfig.model_validate({"channels": {"ops": {"log": {}}}, "include_values": True})
    loaded = dataclasses.replace(world.loaded, sheet=world.loaded.sheet.model_copy(update={"alerts": alerts}))
    h.execute(world.dst, "UPDATE accounts SET balance = 0 WHERE ref = 2")
    runner.run_check(world.engine, "balances")
    (opened,) = watch.evaluate(loaded, world.store, [], only=("reconcile_mismatch",)).opened
    assert "; 2: 2.1" in opened.message and " vs 0" in opened.message  # 2.10 on MariaDB


def test_the_daemon_runs_a_scheduled_check_once_per_slot_among_daemons(world: World) -> None:
    now = [dt.datetime(2026, 12, 3, 10, 30, tzinfo=dt.UTC)]
    judged: list[int] = []
    store_b = StateStore.open(world.state, world.folder, create=False)

    def chore(store: StateStore) -> ScheduledChecks:
        return ScheduledChecks(lambda: world.loaded, str, lambda s: judged.append(1), now=lambda: now[0])

    a, b = chore(world.store), chore(store_b)
    try:
        a(world.store)
        b(store_b)  # never ran: both wait for the next slot
        assert world.store.reconciliation.results("balances", 10) == [] and judged == []
        now[0] = dt.datetime(2026, 12, 3, 11, 0, 5, tzinfo=dt.UTC)
        a(world.store)
        b(store_b)  # the slot ran already (SlotTaken): not again
        (row,) = world.store.reconciliation.results("balances", 10)
        run = last_run(world, "balances")
        assert (run["trigger"], run["slot"], run["scheduled_at"]) == (
            "schedule",
            "reconcile",
            "2026-12-03T11:00:00.000000Z",
        )
        assert judged == [1] and row["status"] == "ok"
        a(world.store)  # the same slot: nothing
        now[0] = dt.datetime(2026, 12, 3, 14, 0, 1, tzinfo=dt.UTC)
        b(store_b)  # after downtime only the latest slot runs, in whichever daemon looks first
        a(world.store)
        assert len(world.store.reconciliation.results("balances", 10)) == 2
        assert last_run(world, "balances")["scheduled_at"] == "2026-12-03T14:00:00.000000Z"
        assert world.store.reconciliation.results("rows", 10) == []  # no schedule: never by the daemon
    finally:
        a.close()
        b.close()
        store_b.close()


def test_a_failing_scheduled_check_never_stops_the_chore(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    sheet = world.loaded.sheet
    checks = dict(sheet.reconcile)
    checks["broken"] = checks["broken"].model_copy(update={"schedule": checks["balances"].schedule})
    loaded = dataclasses.replace(world.loaded, sheet=sheet.model_copy(update={"reconcile": checks}))
    now = [dt.datetime(2026, 12, 3, 10, 30, tzinfo=dt.UTC)]
    chore = ScheduledChecks(lambda: loaded, str, now=lambda: now[0])
    try:
        chore(world.store)
        now[0] = dt.datetime(2026, 12, 3, 11, 0, 1, tzinfo=dt.UTC)
        chore(world.store)
    finally:
        chore.close()
    assert world.store.reconciliation.latest(["broken"])["broken"]["status"] == "error"
    assert world.store.reconciliation.latest(["balances"])["balances"]["status"] == "ok"


def test_repair_then_the_check_again(world: World) -> None:
    h.execute(world.dst, "UPDATE accounts SET nm = 'edited' WHERE ref = 4")
    before = runner.run_check(world.engine, "rows")
    assert before.changed == [key_text((4,))]
    fixed = runner.repair_check(world.engine, "rows", before)
    assert fixed.outcome is not None and fixed.outcome.sent == 1 and fixed.outcome.report is not None
    assert fixed.outcome.report.kind == "repair"
    assert fixed.after is not None and fixed.after.ok and fixed.final is fixed.after
    assert h.query(world.dst, "SELECT nm FROM accounts WHERE ref = 4") == [("c4",)]
    assert [r["status"] for r in world.store.reconciliation.results("rows", 10)] == ["repaired", "differs"]
    clean = runner.run_check(world.engine, "balances")
    assert runner.repair_check(world.engine, "balances", clean).after is None  # nothing to repair


def test_the_daemon_has_the_reconcile_chore_without_a_lease_of_its_own(world: World) -> None:
    d = Daemon(world.loaded, world.store, ["customers"], open_store=lambda: world.store)
    chores = {c.name: c for c in d._chores()}
    assert "reconcile" in chores and chores["reconcile"].lease is False  # each check takes its own
    assert isinstance(chores["reconcile"].do, ScheduledChecks)


def test_the_run_message_never_holds_the_errors_values(world: World) -> None:
    """An API side's error may quote a record's values: the run row says only that the check
    could not run and its failure kind; the stored result keeps the (redacted) text."""

    def leaky(engine: Engine, name: str, check: Any) -> CheckResult:
        raise errors.PermanentError("record 7: field balance = 'ACME-SECRET-9' is not a number", "source")

    result = runner.run_check(world.engine, "balances", compute_with=leaky)
    assert result.error is not None and "ACME-SECRET-9" in result.error
    run = last_run(world, "balances")
    assert run["status"] == "failed" and "ACME-SECRET-9" not in run["message"]
    assert run["message"].startswith("check balances could not run (source failure)")


def test_the_result_is_recorded_before_the_run_is_finished(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash between the two leaves no finished run whose result the monitor never sees."""

    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the process dies here")

    monkeypatch.setattr(world.store, "finish_run", crash)
    with pytest.raises(RuntimeError):
        runner.run_check(world.engine, "rows")
    assert world.store.reconciliation.latest(["rows"])["rows"]["status"] == "ok"


def test_undigested_entries_make_an_incomplete_result_that_alerts(world: World) -> None:
    state = world.state if world.state != "sqlite:///state.db" else f"sqlite:///{world.folder / 'state.db'}"
    h.execute(
        state, "UPDATE mapsync_ledger SET digest = NULL WHERE " + '"key" = :k', params=[{"k": key_text((3,))}]
    )
    result = runner.run_check(world.engine, "rows")
    assert (result.status, result.ok, result.differences(), result.undigested) == ("incomplete", False, 0, 1)
    assert any("--backfill" in n for n in result.notes)
    run = last_run(world, "rows")
    assert run["status"] == "partial" and "1 undigested" in run["message"]
    assert world.store.reconciliation.latest(["rows"])["rows"]["status"] == "incomplete"
    assert runner.repair_check(world.engine, "rows", result).outcome is None  # nothing to re-send
    report = watch.evaluate(world.loaded, world.store, [], only=("reconcile_mismatch",))
    assert [(i.subject, "--backfill" in i.message) for i in report.opened] == [("rows", True)]


def rest_sheet(world: World) -> Any:
    """The world's sheet with the sync writing to a REST connection instead."""
    sheet = world.loaded.sheet
    api = models.RestConnection(kind="rest", base_url="http://127.0.0.1:9/api/")
    sync = sheet.syncs["customers"]
    moved = sync.model_copy(update={"to": sync.to.model_copy(update={"connection": "api"})})
    return sheet.model_copy(
        update={
            "connections": {**sheet.connections, "api": api},
            "syncs": {"customers": moved},
            "reconcile": {},
        }
    )


def test_a_sync_writing_to_an_api_has_no_implicit_drift_check(world: World) -> None:
    sheet = rest_sheet(world)
    assert runner.checks_for(sheet, sync="customers") == []
    with pytest.raises(errors.ConfigError, match="not a SQL connection: it has no drift check"):
        runner.check_of(sheet, "drift:customers")


def test_the_monitor_judges_implicit_drift_checks_of_sql_syncs_only(world: World) -> None:
    h.execute(world.dst, "INSERT INTO accounts VALUES (500, 'by hand', 1.00)")
    runner.run_check(world.engine, "drift:customers")
    assert set(watch_environment.reconcile_latest(world.loaded, world.store)) >= {"drift:customers"}
    moved = dataclasses.replace(world.loaded, sheet=rest_sheet(world))
    assert "drift:customers" not in watch_environment.reconcile_latest(moved, world.store)


def test_the_daemons_stop_closes_the_scheduled_checks_engine(world: World) -> None:
    d = Daemon(world.loaded, world.store, ["customers"], open_store=lambda: world.store)
    (checks,) = [c.do for c in d._chores() if c.name == "reconcile"]
    assert isinstance(checks, ScheduledChecks)
    engine = checks._engine_for(world.loaded, world.store)  # as a due check opens it
    engine.database(world.loaded.sheet.syncs["customers"].to.connection)
    assert engine._dbs
    assert d._shutdown() == 0
    assert checks._engine is None and engine._dbs == {}  # its SQL connections closed
