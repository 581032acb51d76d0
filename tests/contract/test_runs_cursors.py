"""Contract: cursors and their audit, the run history (start, finish, discard, a failed run
recorded before it started), the history views, reset and the retention purge."""

from __future__ import annotations

import datetime as dt
import decimal

import pytest

from mapsync.state import report, retention
from mapsync.state.ports import Store
from mapsync.state.runs import started_run
from tests.contract.conftest import begin, commit, delivered, rejected


def test_cursors_keep_typed_values_and_audit_each_change(store: Store) -> None:
    assert store.cursor("s", "watermark") is None and store.cursors("s") == {}
    moment = dt.datetime(2026, 3, 1, 12, 0, 0, 5, tzinfo=dt.UTC)
    lease, run_id = begin(store)
    store.set_cursors("s", {"watermark": moment, "seed": {"status": "done", "after": [1, "x"]}}, run_id)
    store.set_cursors("s", {"watermark": moment})  # unchanged: no audit row
    store.set_cursors("s", {"position": decimal.Decimal("1.10"), "overlap_at": None}, run_id)
    assert store.cursor("s", "watermark") == moment
    assert store.cursors("s") == {
        "watermark": moment,
        "seed": {"status": "done", "after": [1, "x"]},
        "position": decimal.Decimal("1.10"),
    }  # a cursor set to None that was not there is no change
    audit = list(reversed(store.history.audit("s", 10)))
    assert [(a["name"], a["old_value"], a["run_id"]) for a in audit] == [
        ("watermark", None, run_id),
        ("seed", None, run_id),
        ("position", None, run_id),
    ]
    store.set_cursors("s", {"position": None})
    assert store.cursors("s")["position"] is None
    newest = store.history.audit("s", 1)[0]
    assert (newest["name"], newest["old_value"], newest["new_value"], newest["run_id"]) == (
        "position",
        '{"decimal":"1.10"}',
        None,
        None,
    )
    assert store.cursors("other") == {}
    del lease


def test_a_run_starts_running_and_finishes_with_its_status(store: Store) -> None:
    lease, run_id = begin(store)
    assert started_run.get() == run_id  # the engine tells failures before the run row by it
    run = store.run(run_id)
    assert (run["sync"], run["kind"], run["trigger"], run["status"], run["lease_token"]) == (
        "s",
        "run",
        "test",
        "running",
        lease.token,
    )
    assert run["finished_at"] is None and run["read"] == 0
    store.finish_run(run_id, "failed", "destination", "connection lost")
    run = store.run(run_id)
    assert (run["status"], run["failure_class"], run["message"]) == (
        "failed",
        "destination",
        "connection lost",
    )
    assert run["finished_at"] is not None and run["finished_at"] >= run["started_at"]
    scheduled = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    other = store.start_run("s", "seed", "schedule", lease.token, scheduled)
    assert store.run(other)["scheduled_at"] == "2026-01-02T03:04:05.000000Z"
    assert other > run_id


def test_a_failed_run_is_recorded_before_it_started(store: Store) -> None:
    run_id = store.record_failed_run("s", "run", "cli", "source", "x" * 3000)
    run = store.run(run_id)
    assert (run["status"], run["failure_class"], run["lease_token"]) == ("failed", "source", "")
    assert len(run["message"]) == 2000 and run["started_at"] == run["finished_at"]


def test_a_discarded_run_leaves_no_trace(store: Store) -> None:
    lease, first = begin(store)
    store.set_cursors("s", {"watermark": 1}, first)
    idle = store.start_run("s", "run", "test", lease.token)
    store.set_cursors("s", {"watermark": 2}, idle)
    store.set_cursors("s", {"watermark": 1}, idle)
    store.discard_run(idle)
    assert [r["id"] for r in store.history.runs("s", 10)] == [first]
    assert [a["run_id"] for a in store.history.audit("s", 10)] == [first]


def test_history_views_list_newest_first(store: Store) -> None:
    lease, first = begin(store)
    second = store.start_run("s", "run", "test", lease.token)
    store.start_run("t", "run", "test", lease.token)
    assert [r["id"] for r in store.history.runs("s", 10)] == [second, first]
    assert [r["id"] for r in store.history.runs("s", 1)] == [second]
    assert len(store.history.runs(None, 10)) == 3
    last = store.history.last_run("s")
    assert last is not None and last["id"] == second
    assert store.history.last_run("nothing") is None
    commit(store, lease, second, rejected=[rejected(1), rejected(2)], cursors={"watermark": 3})
    assert store.history.count_record_errors("s", False) == 2
    status = report.sync_status(store, "s")
    assert (status["open_errors"], status["ledger_keys"], status["cursors"]) == (2, 0, {"watermark": 3})
    assert status["last_run"]["id"] == second


def test_reset_forgets_a_syncs_state_but_keeps_history(store: Store) -> None:
    lease, run_id = begin(store)
    commit(
        store,
        lease,
        run_id,
        delivered=[delivered(1)],
        rejected=[rejected(2, "c", "map", "Q")],
        cursors={"watermark": 1},
    )
    store.finish_run(run_id, "partial")
    removed = store.history.reset("s")
    assert removed == {
        "mapsync_cursors": 1,
        "mapsync_ledger": 1,
        "mapsync_record_errors": 1,
        "mapsync_unmapped": 1,
        "mapsync_attempts": 0,
        "mapsync_leases": 1,
    }
    assert (store.cursors("s"), store.ledger_count("s"), store.open_error_keys("s")) == ({}, 0, [])
    assert store.history.audit("s", 1)[0]["new_value"] == "reset"
    assert [r["id"] for r in store.history.runs("s", 10)] == [run_id]
    store.leases.acquire("s", lease.ttl)  # the lease went too


@pytest.mark.parametrize("form", ["port", "module"])
def test_purge_drops_old_history_but_keeps_the_latest_run_and_open_errors(store: Store, form: str) -> None:
    lease, old = begin(store)
    commit(store, lease, old, rejected=[rejected(1), rejected(2)], cursors={"watermark": 1})
    commit(store, lease, old, delivered=[delivered(1)])  # resolves the error of key 1
    store.finish_run(old, "success")
    new = store.start_run("s", "run", "test", lease.token)
    store.finish_run(new, "success")
    running = store.start_run("s", "run", "test", lease.token)
    keep = dt.timedelta(days=1)
    purge = store.history.purge if form == "port" else lambda s, r: retention.purge(store, s, r)
    assert purge("s", keep) == {"runs": 0, "audit": 0, "errors": 0}  # nothing is a day old
    removed = purge("s", -keep)  # everything is older than a day from now
    assert removed == {"runs": 1, "audit": 1, "errors": 1}
    # the latest row (unfinished) and the latest run that ran to an end (and succeeded) stay
    assert [r["id"] for r in store.history.runs("s", 10)] == [running, new]
    assert store.open_error_keys("s") == [(2,)]
    assert store.cursors("s") == {"watermark": 1} and store.ledger_count("s") == 1


def test_sync_gauges_last_success_and_open_errors(store: Store) -> None:
    lease, first = begin(store, "a")
    store.finish_run(first, "success")
    store.leases.release(lease)
    lease, second = begin(store, "a")
    commit(store, lease, second, rejected=[rejected(1), rejected(2)])
    store.finish_run(second, "failed", "source", "down")
    store.leases.release(lease)
    gauges = store.history.sync_gauges()
    assert gauges["a"]["open_errors"] == 2
    assert gauges["a"]["last_success"] == store.run(first)["finished_at"]  # the failed run is not one
    assert "b" not in gauges


def test_a_failed_run_keeps_its_reason(store: Store) -> None:
    early = store.record_failed_run("s", "run", "cli", "destination", "refused", reason="auth")
    run_id = store.start_run("s", "run", "cli", "tok")
    store.finish_run(run_id, "failed", "guard", "mass-delete guard", reason="guard")
    plain = store.start_run("s", "run", "cli", "tok")
    store.finish_run(plain, "success")
    assert [store.run(i)["reason"] for i in (early, run_id, plain)] == ["auth", "guard", None]
    assert [r["reason"] for r in store.history.runs("s", 10)] == [None, "guard", "auth"]
