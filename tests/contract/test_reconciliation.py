"""Contract: the results of reconciliation checks (schema v8, port `Reconciliation`): each check
run kept with its counts and its whole result, newest first per check; `latest` gives each
check's newest; retention (`reconcile`) purges old results but never a check's latest."""

from __future__ import annotations

import datetime as dt
import decimal

import pytest

from mapsync.reconcile.results import CheckResult, GroupDiff
from mapsync.state import clock
from mapsync.state.clock import utcnow
from mapsync.state.ports import Store

DAY = dt.timedelta(days=1)


def business(check: str = "open_ar", diffs: int = 0, error: str | None = None) -> CheckResult:
    result = CheckResult(check, "business", sync="invoices", compared=10, matched=10 - diffs, error=error)
    result.mismatched = [
        GroupDiff((f"C{i}",), decimal.Decimal("10.50"), decimal.Decimal(i)) for i in range(diffs)
    ]
    return result


def record(store: Store, result: CheckResult, run_id: int | None = None, status: str | None = None) -> int:
    data = result.to_json()
    if status is not None:
        data["status"] = status
    now = utcnow()
    return store.reconciliation.record_result(
        data, run_id=run_id, started_at=now - dt.timedelta(seconds=2), finished_at=now
    )


def test_a_result_is_kept_whole_and_read_back_newest_first(store: Store) -> None:
    first = record(store, business(diffs=2), run_id=7)
    second = record(store, business())
    record(store, CheckResult("rows", "drift", sync="invoices", compared=5, changed=["1"]))
    rows = store.reconciliation.results("open_ar", 10)
    assert [r["id"] for r in rows] == [second, first]
    old = rows[1]
    assert (old["check"], old["kind"], old["sync"], old["run_id"]) == ("open_ar", "business", "invoices", 7)
    assert (old["status"], old["compared"], old["differences"]) == ("differs", 10, 2)
    assert old["finished_at"] - old["started_at"] == dt.timedelta(seconds=2)
    assert old["finished_at"].tzinfo is not None
    back = CheckResult.from_json(old["detail"])
    assert (
        back.mismatched[1].source == decimal.Decimal("10.50") and str(back.mismatched[1].difference) == "9.50"
    )
    assert rows[0]["status"] == "ok" and rows[0]["run_id"] is None
    assert store.reconciliation.results("open_ar", 1)[0]["id"] == second
    assert store.reconciliation.results("unknown", 10) == []


def test_latest_is_each_checks_newest(store: Store) -> None:
    record(store, business())
    bad = record(store, business(error="connection erp: refused"))
    drift = record(store, CheckResult("rows", "drift", sync="invoices"), status="repaired")
    latest = store.reconciliation.latest()
    assert {c: r["id"] for c, r in latest.items()} == {"open_ar": bad, "rows": drift}
    assert latest["open_ar"]["status"] == "error"
    assert latest["open_ar"]["detail"]["error"] == "connection erp: refused"
    assert latest["rows"]["status"] == "repaired" and latest["rows"]["sync"] == "invoices"
    assert set(store.reconciliation.latest(["rows", "gone"])) == {"rows"}
    assert store.reconciliation.latest([]) == {}


def test_an_unknown_status_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="unknown result status"):
        record(store, business(), status="maybe")
    assert store.reconciliation.latest() == {}


def test_retention_purges_old_results_but_each_checks_latest(store: Store) -> None:
    before = clock.offset()
    clock.set_offset(before - 100 * 86400)
    try:
        old = record(store, business())
        kept_old = record(store, business(diffs=1))  # open_ar's latest for now
        alone = record(store, CheckResult("rows", "drift", sync="other"))  # rows' only one
    finally:
        clock.set_offset(before)
    assert store.history.purge_tables({"reconcile": 30 * DAY}, dry_run=True) == {"reconcile": 1}
    assert store.history.purge_tables({"reconcile": 30 * DAY}) == {"reconcile": 1}
    assert [r["id"] for r in store.reconciliation.results("open_ar", 10)] == [kept_old]
    new = record(store, business())
    assert store.history.purge_tables({"reconcile": 30 * DAY}, syncs=["other"]) == {"reconcile": 0}
    assert store.history.purge_tables({"reconcile": 30 * DAY}) == {"reconcile": 1}
    assert [r["id"] for r in store.reconciliation.results("open_ar", 10)] == [new]
    assert [r["id"] for r in store.reconciliation.results("rows", 10)] == [alone]
    assert old not in {r["id"] for r in store.reconciliation.results("open_ar", 10)}
