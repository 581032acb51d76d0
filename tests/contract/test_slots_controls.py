"""Contract: what the daemon asks of the state store (schema v5). Scheduled slots run once
(SlotTaken, skipped runs, `last_slot`), run rows carry worker, fingerprint, lateness and
coalesced slots; paused syncs and run requests (taken by one worker); dead record errors
(`bury`, `live_only`, kept dead while open, resolved by a delivery)."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from mapsync import errors
from mapsync.state.clock import utcnow
from mapsync.state.ports import Store
from tests.contract.conftest import begin, commit, delivered, rejected

AT = dt.datetime(2026, 5, 1, 8, 0, tzinfo=dt.UTC)
TTL5 = dt.timedelta(minutes=5)


def test_a_scheduled_slot_runs_once(store: Store) -> None:
    store.set_identity("host-a:12", "f" * 64)
    lease = store.leases.acquire("s", dt.timedelta(minutes=5))
    first = store.start_run("s", "run", "schedule", lease.token, AT, slot="run", coalesced=2)
    row = store.run(first)
    assert (row["slot"], row["worker"], row["sheet_fingerprint"], row["coalesced"]) == (
        "run",
        "host-a:12",
        "f" * 64,
        2,
    )
    assert row["lateness_ms"] >= (utcnow() - AT) // dt.timedelta(milliseconds=1) - 60_000
    with pytest.raises(
        errors.SlotTaken,
        match=r"sync s: the run slot of 2026-05-01T08:00:00.000000Z was already run \(run id \d+\)",
    ) as taken:
        store.start_run("s", "run", "schedule", "another-token", AT, slot="run")
    assert taken.value.run_id == first and not isinstance(taken.value, errors.StateError)
    with pytest.raises(errors.SlotTaken):
        store.record_failed_run("s", "run", "schedule", "source", "down", AT, slot="run")
    assert store.record_skipped_run("s", "run", "schedule", AT, "run", "overlap", "busy") is None
    # the retry slot, another time, another sync and unscheduled runs are other slots
    retry = store.start_run("s", "retry", "schedule", lease.token, AT, slot="retry")
    later = store.record_failed_run(
        "s", "run", "schedule", "source", "down", AT + dt.timedelta(hours=1), slot="run"
    )
    other = store.start_run("t", "run", "schedule", store.leases.acquire("t", TTL5).token, AT, slot="run")
    free = [
        store.start_run("s", "run", "cli", lease.token, AT),
        store.start_run("s", "run", "cli", lease.token, AT),
    ]
    assert len({first, retry, later, other, *free}) == 6
    assert store.run(free[0])["slot"] is None and store.run(free[0])["lateness_ms"] is not None
    assert store.run(later)["status"] == "failed" and store.run(later)["worker"] == "host-a:12"
    assert [r["id"] for r in store.history.runs("s", 3)] == [free[1], free[0], later]


def test_a_retried_start_of_the_same_run_finds_its_row(store: Store) -> None:
    lease = store.leases.acquire("s", dt.timedelta(minutes=5))
    first = store.start_run("s", "run", "schedule", lease.token, AT, slot="run")
    # a cut after COMMIT: the same start again (same lease token) is the row written already
    assert store.start_run("s", "run", "schedule", lease.token, AT, slot="run") == first


def test_a_skipped_run_takes_its_slot_and_says_why(store: Store) -> None:
    skipped = store.record_skipped_run(
        "s", "run", "schedule", AT, "run", "overlap", "the previous run (id 12) was still running"
    )
    assert skipped is not None
    row = store.run(skipped)
    assert (row["status"], row["failure_class"], row["slot"], row["lease_token"]) == (
        "skipped",
        None,
        "run",
        "",
    )
    assert row["message"] == "overlap: the previous run (id 12) was still running"
    assert row["started_at"] == row["finished_at"]
    with pytest.raises(errors.SlotTaken):
        store.start_run("s", "run", "schedule", "tok", AT, slot="run")
    unslotted = store.record_skipped_run("s", "run", "request", None, None, "paused", "paused by al")
    assert unslotted is not None and store.run(unslotted)["scheduled_at"] is None


def test_last_slot_is_the_latest_scheduled_time_of_any_status(store: Store) -> None:
    assert store.last_slot("s", "run") is None
    store.record_skipped_run("s", "run", "schedule", AT + dt.timedelta(hours=2), "run", "paused", "by al")
    store.start_run("s", "run", "schedule", store.leases.acquire("s", TTL5).token, AT, slot="run")
    store.record_failed_run(
        "s", "retry", "schedule", "source", "down", AT + dt.timedelta(hours=5), slot="retry"
    )
    store.start_run("s", "run", "cli", "tok", AT + dt.timedelta(hours=9))  # no slot
    assert store.last_slot("s", "run") == AT + dt.timedelta(hours=2)
    assert store.last_slot("s", "retry") == AT + dt.timedelta(hours=5)
    assert store.last_slot("t", "run") is None


def test_a_scheduled_run_starts_only_under_its_live_lease(store: Store) -> None:
    """A process frozen between its lease and its run row (a zombie) records no slot once its
    lease was taken over or expired: the worker that took over may have counted that slot."""
    lease = store.leases.acquire("s", TTL5)
    with pytest.raises(errors.SlotGone, match="taken over or expired"):
        store.start_run("s", "run", "schedule", "a-token-never-leased", AT, slot="run")
    store.leases.release(lease)
    with pytest.raises(errors.SlotGone):  # released (a takeover that ran and let go): gone
        store.start_run("s", "run", "schedule", lease.token, AT, slot="run")
    short = store.leases.acquire("s", dt.timedelta(milliseconds=1))
    time.sleep(0.01)
    with pytest.raises(errors.SlotGone):  # expired
        store.start_run("s", "run", "schedule", short.token, AT, slot="run")
    assert store.last_slot("s", "run") is None  # nothing recorded
    live = store.leases.acquire("s", TTL5)
    assert store.start_run("s", "run", "schedule", live.token, AT, slot="run") > 0


def test_a_slot_needs_its_scheduled_time(store: Store) -> None:
    with pytest.raises(ValueError, match="needs its scheduled time"):
        store.start_run("s", "run", "schedule", "tok", None, slot="run")


def test_skipped_runs_are_purged_like_other_history(store: Store) -> None:
    old = store.record_skipped_run("s", "run", "schedule", AT, "run", "overlap", "busy")
    latest = store.record_skipped_run(
        "s", "run", "schedule", AT + dt.timedelta(hours=1), "run", "overlap", "busy"
    )
    assert store.history.purge("s", -dt.timedelta(days=1))["runs"] == 1
    assert [r["id"] for r in store.history.runs("s", 10)] == [latest] and old != latest


def test_pause_and_resume_are_seen_by_everyone(store: Store) -> None:
    assert store.paused() == {} and store.resume("s") is False
    store.pause("s", "al@host", "disk full")
    store.pause("t", "bo@host")
    paused = store.paused()
    assert set(paused) == {"s", "t"}
    assert (paused["s"].by, paused["s"].note, paused["t"].note) == ("al@host", "disk full", None)
    assert abs(paused["s"].at - utcnow()) < dt.timedelta(minutes=1)
    store.pause("s", "cy@host", "again")  # paused again: who and why replaced
    assert (store.paused()["s"].by, store.paused()["s"].note) == ("cy@host", "again")
    assert store.resume("s") is True and store.resume("s") is False
    assert set(store.paused()) == {"t"}
    store.pause("s", "al@host")
    assert set(store.paused()) == {"s", "t"}


def test_run_requests_are_taken_once_and_finished(store: Store) -> None:
    a = store.request_run("s", "run", "al@host")
    b = store.request_run("t", "retry", "al@host")
    c = store.request_run("s", "overlap", "bo@host")
    with pytest.raises(ValueError, match="unknown run request kind"):
        store.request_run("s", "seed", "al@host")
    assert store.take_requests([], "w1") == []
    taken = store.take_requests(["s", "u"], "w1")
    assert [(r.id, r.kind, r.status, r.taken_by) for r in taken] == [
        (a, "run", "taken", "w1"),
        (c, "overlap", "taken", "w1"),
    ]
    assert taken[0].requested_by == "al@host" and taken[0].taken_at is not None
    assert store.take_requests(["s"], "w2") == []  # taken already
    assert [r.id for r in store.requests(pending=True)] == [c, b, a]
    store.finish_request(a, "done", run_id=7, message="ok")
    store.finish_request(c, "failed", message="x" * 3000)
    with pytest.raises(ValueError, match="done or failed"):
        store.finish_request(b, "taken")
    got = {r.id: r for r in store.requests("s")}
    assert (got[a].status, got[a].run_id, got[a].message) == ("done", 7, "ok")
    assert got[c].status == "failed" and len(got[c].message or "") == 2000
    assert [r.id for r in store.requests(pending=True)] == [b]
    assert [r.id for r in store.requests(limit=1)] == [c]
    assert [r.id for r in store.take_requests(["t"], "w2")] == [b]


def test_open_errors_tried_max_attempts_times_are_buried(store: Store) -> None:
    lease, run_id = begin(store)
    commit(store, lease, run_id, rejected=[rejected(1), rejected(2)])
    commit(store, lease, run_id, rejected=[rejected(1)])  # key 1: 2 attempts, key 2: 1
    assert store.bury("s", 3) == 0
    assert store.bury("s", 2) == 1 and store.bury("s", 2) == 0  # once
    assert store.open_error_keys("s") == [(1,), (2,)]
    assert store.open_error_keys("s", live_only=True) == [(2,)]
    assert store.open_error_keys("s", "nm", live_only=True) == [(2,)]
    assert store.history.count_dead("s") == 1 and store.history.count_dead(None) == 1
    dead = {e["key"]: e for e in store.history.record_errors("s", False, 10)}
    assert dead["[1]"]["dead_at"] is not None and dead["[2]"]["dead_at"] is None
    # rejected again while open (an operator's retry that failed): still dead
    commit(store, lease, run_id, rejected=[rejected(1)])
    assert store.open_error_keys("s", live_only=True) == [(2,)]
    # delivered: resolved as ever, dead_at kept as history
    commit(store, lease, run_id, delivered=[delivered(1)])
    assert store.open_error_keys("s") == [(2,)] and store.history.count_dead("s") == 0
    resolved = {e["key"]: e for e in store.history.record_errors("s", True, 10)}["[1]"]
    assert resolved["resolved_at"] is not None and resolved["dead_at"] is not None
    # rejected after it was resolved: open again, alive
    commit(store, lease, run_id, rejected=[rejected(1)])
    assert store.open_error_keys("s", live_only=True) == [(1,), (2,)]
    assert store.bury("other", 1) == 0
