"""Contract: the per-table retention purge (`History.purge_tables`) and the daily rollups
(`Rollups`). History is written through the ports with the store's clock set back (`clock.set_offset`),
so every store ages the same rows; then each table goes by its own age, only what is finished, the
latest run of a sync stays, and the runs purged are folded into the rollups exactly once."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator

from mapsync.sheet.models import RETENTION_TABLES
from mapsync.state import clock
from mapsync.state.clock import utcnow
from mapsync.state.data import Counts, Finding
from mapsync.state.ports import Store
from tests.contract.conftest import begin, commit, delivered, rejected

DAY = dt.timedelta(days=1)


@contextlib.contextmanager
def days_ago(days: float) -> Iterator[dt.datetime]:
    """The store's clock `days` back while the block writes (the machine's clock is untouched)."""
    before = clock.offset()
    clock.set_offset(before - days * 86400)
    try:
        yield utcnow()
    finally:
        clock.set_offset(before)


def finding(sync: str | None, subject: str) -> Finding:
    return Finding("failed_run", sync, "critical", "destination", "run failed", subject=subject)


def ages(days: int, **per_table: int) -> dict[str, dt.timedelta]:
    return {t: dt.timedelta(days=per_table.get(t, days)) for t in RETENTION_TABLES}


def _history(store: Store) -> dict[str, int]:
    """100 days ago: finished and unfinished history of sync `s` in every table; ids to check."""
    with days_ago(100):
        lease, run = begin(store)
        commit(
            store,
            lease,
            run,
            rejected=[rejected(1), rejected(2, rule="map", value="X"), rejected(5, rule="map", value="Y")],
            cursors={"w": 1},
        )
        commit(
            store, lease, run, delivered=[delivered(1), delivered(3, op="delete"), delivered(5)]
        )  # 1 resolved, 3 gone
        commit(store, lease, run, delivered=[delivered(4)])
        store.finish_run(run, "partial")
        second = store.start_run("s", "run", "test", lease.token)
        store.finish_run(second, "success")
        store.leases.release(lease)
        done, failed, waiting = (store.inbox.append("s", f"e{i}", "{}") for i in range(3))
        assert done and failed and waiting
        store.inbox.finish([done], {failed: "bad payload"})
        settled, unsettled = store.jobs.record("s", [(1,)]), store.jobs.record("s", [(2,)])
        store.jobs.finish(settled, "done")
        store.incidents.raise_incident(finding("s", "quiet"), [])
        store.incidents.clear_incident(finding("s", "quiet").key)  # resolved, nothing to send
        store.incidents.raise_incident(finding("s", "loud"), ["ops"])
        store.incidents.clear_incident(finding("s", "loud").key)  # resolved, its notices pending
        store.incidents.raise_incident(finding("s", "open"), [])
        # sync `t`: one old run only, its latest
        lease_t, only = begin(store, "t")
        store.finish_run(only, "success")
        store.leases.release(lease_t)
    del unsettled, waiting
    return {"run": run, "second": second, "only": only}


def test_each_table_goes_by_its_own_age_and_only_what_is_finished(store: Store) -> None:
    ids = _history(store)
    assert store.history.purge_tables(ages(365)) == dict.fromkeys(RETENTION_TABLES, 0)  # nothing so old
    counted = store.history.purge_tables(ages(30, rollups=400), dry_run=True)
    expected = {
        "runs": 1,  # s's first run: each sync's latest stays (s's second, t's only one)
        "record_errors": 2,  # the resolved ones (keys 1, 5); key 2 is open
        "cursor_audit": 1,
        "inbox": 1,  # processed; `error` and `new` stay
        "async_batches": 1,  # done; pending stays
        "unmapped": 1,  # Y (resolved with key 5); X still blocks key 2
        "tombstones": 1,  # key 3's delete
        "alerts": 1,  # `quiet`; `loud` has pending notices, `open` is open
        "attempts": 0,
        "rollups": 0,
        "reconcile": 0,
    }
    assert counted == expected
    assert len(store.history.runs(None, 10)) == 3  # a dry run deletes nothing
    assert store.rollups.rollups(None, utcnow() - 200 * DAY) == []
    assert store.history.purge_tables(ages(30, rollups=400)) == expected
    assert [r["id"] for r in store.history.runs(None, 10)] == [ids["only"], ids["second"]]
    assert store.open_error_keys("s") == [(2,)]
    assert store.history.audit("s", 10) == []
    assert store.inbox.counts("s") == {"error": 1, "new": 1}
    assert [b["status"] for b in store.jobs.unfinished("s")] == ["pending"]
    assert store.ledger_count("s") == 3 and set(store.ledger("s", [(1,), (3,), (4,)])) == {(1,), (4,)}
    assert [i.subject for i in store.incidents.incidents()] == ["open", "loud"]
    assert store.cursors("s") == {"w": 1}
    assert [u["value"] for u in store.unmapped_values("s", include_resolved=True)] == ["X"]
    assert [r["runs"] for r in store.rollups.rollups(None, utcnow() - 200 * DAY)] == [1]  # kept
    assert store.history.purge_tables(ages(30, rollups=400)) == dict.fromkeys(
        RETENTION_TABLES, 0
    )  # idempotent


def test_per_table_ages_leave_the_other_tables_alone(store: Store) -> None:
    _history(store)
    short = {"inbox": 10 * DAY, "runs": 365 * DAY}
    assert store.history.purge_tables(short) == {"inbox": 1, "runs": 0}
    assert len(store.history.runs(None, 10)) == 3
    assert store.history.purge_tables({"runs": 10 * DAY}, syncs=["t"]) == {"runs": 0}


def test_purged_runs_are_rolled_up_per_sync_and_day_exactly_once(store: Store) -> None:
    with days_ago(100) as then:
        lease, a = begin(store)
        commit(store, lease, a, delivered=[delivered(1), delivered(2)], counts=Counts(read=3, written=2))
        store.finish_run(a, "success")
        b = store.start_run("s", "run", "test", lease.token)
        store.finish_run(b, "failed", "destination", "down")
        store.record_skipped_run("s", "run", "schedule", then, "run", "overlap", "busy")
        store.leases.release(lease)
    with days_ago(50):
        lease, c = begin(store)
        store.finish_run(c, "success")
        store.leases.release(lease)
    assert store.history.purge_tables({"runs": 30 * DAY}) == {"runs": 3}  # the latest run (c) stays
    rows = store.rollups.rollups("s", then - DAY)
    assert len(rows) == 1
    row = rows[0]
    assert row["day"] == then.date().isoformat()
    counts = {k: row[k] for k in ("runs", "success", "partial", "failed", "skipped", "read", "written")}
    assert counts == {
        "runs": 3,
        "success": 1,
        "partial": 0,
        "failed": 1,
        "skipped": 1,
        "read": 3,
        "written": 2,
    }
    assert row["p95_ms"] is not None and row["max_ms"] is not None and row["p95_ms"] <= row["max_ms"]
    assert store.history.purge_tables({"runs": 30 * DAY}) == {"runs": 0}
    assert store.rollups.rollups("s", then - DAY)[0]["runs"] == 3  # folded once
    assert store.rollups.rollups("s", then + DAY) == []  # `since` is a day bound
    # rollups have their own age; a day younger than it stays
    assert store.history.purge_tables({"rollups": 60 * DAY}) == {"rollups": 1}
    assert store.rollups.rollups(None, then - DAY) == []


def test_a_day_folded_twice_merges_its_counts(store: Store) -> None:
    with days_ago(100):
        lease, a = begin(store)
        store.finish_run(a, "success")
        b = store.start_run("s", "run", "test", lease.token)
        store.finish_run(b, "partial")
        store.leases.release(lease)
    assert store.history.purge_tables({"runs": 30 * DAY}) == {"runs": 0}  # a: latest success; b: latest
    with days_ago(100):
        lease, a2 = begin(store)
        store.finish_run(a2, "success")
        b2 = store.start_run("s", "run", "test", lease.token)
        store.finish_run(b2, "partial")
        store.leases.release(lease)
    assert store.history.purge_tables({"runs": 30 * DAY}) == {"runs": 2}  # a and b go, a2 and b2 stay
    with days_ago(10):
        lease, c = begin(store)
        store.finish_run(c, "success")
        store.leases.release(lease)
    assert store.history.purge_tables({"runs": 30 * DAY}) == {"runs": 2}  # now a2 and b2 go
    (row,) = store.rollups.rollups("s", utcnow() - 200 * DAY)
    assert (row["runs"], row["success"], row["partial"]) == (4, 2, 2)


def test_the_per_run_purge_keeps_its_old_form(store: Store) -> None:
    _history(store)
    assert store.history.purge("s", 30 * DAY) == {"runs": 1, "audit": 1, "errors": 2}
    assert store.inbox.counts("s")["processed"] == 1  # not its business
    assert store.rollups.rollups("s", utcnow() - 200 * DAY)[0]["runs"] == 1


def test_a_purge_keeps_a_running_run_and_its_lease(store: Store) -> None:
    with days_ago(100):
        lease, old = begin(store)
        store.finish_run(old, "success")
        running = store.start_run("s", "run", "test", lease.token)
    assert store.history.purge_tables(ages(30)) == dict.fromkeys(
        RETENTION_TABLES, 0
    )  # old: the latest success
    assert [r["id"] for r in store.history.runs("s", 10)] == [running, old]
    store.leases.renew(lease)  # still held
    commit(store, lease, running, delivered=[delivered(9)])
    store.finish_run(running, "success")
    assert store.ledger_count("s") == 1


def test_every_retention_table_can_be_purged_alone(store: Store) -> None:
    for table in RETENTION_TABLES:
        assert store.history.purge_tables({table: DAY}) == {table: 0}
        assert store.history.purge_tables({table: DAY}, syncs=["s"], dry_run=True) == {table: 0}


def test_a_syncs_last_real_run_and_last_success_are_kept_behind_skips(store: Store) -> None:
    with days_ago(100) as then:
        lease, ok = begin(store)
        store.finish_run(ok, "success")
        bad = store.start_run("s", "run", "test", lease.token)
        store.finish_run(bad, "failed", "destination", "down")
        store.leases.release(lease)
    with days_ago(90):
        skips = [
            store.record_skipped_run(
                "s", "run", "schedule", then + dt.timedelta(minutes=i), "run", "busy", "b"
            )
            for i in range(3)
        ]
    assert store.history.purge_tables({"runs": 30 * DAY}) == {"runs": 2}  # the two older skips
    left = [r["id"] for r in store.history.runs("s", 20)]
    assert left == [skips[-1], bad, ok]  # the latest row, the latest run to an end, the latest success
