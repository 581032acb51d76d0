"""The dashboard's read functions over a real SQLite state store filled by real engine runs."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mapsync.web import readmodel
from tests.integration.web.world import SECRET, World, world


@pytest.fixture
def w(tmp_path: Path, sqlite_database: Callable[[], str]) -> Iterator[World]:
    made = world(tmp_path, sqlite_database)
    yield made
    made.close()


def test_overview_names_the_last_run_errors_and_unmapped_values(w: World) -> None:
    (row,) = readmodel.overview(w.loaded, w.store)
    assert row["sync"] == "items" and row["kind"] == "src→dst"
    last = row["last_run"]
    assert last["kind"] == "run" and last["status"] == "partial"
    assert (last["read"], last["written"], last["failed"]) == (5, 1, 2)
    assert last["duration_s"] is not None and last["duration_s"] >= 0
    assert row["open_errors"] == 2 and row["dead_errors"] == 0
    assert row["unmapped"] == 1
    assert row["paused"] is None and row["export"] is False
    assert row["on_time"] is None  # no schedule: nothing is late
    json.dumps(row)  # JSON-ready


def test_overview_shows_a_pause_and_a_pending_request(w: World) -> None:
    w.store.pause("items", "alice", "maintenance")
    request = w.store.request_run("items", "run", "alice")
    (row,) = readmodel.overview(w.loaded, w.store)
    assert row["paused"]["by"] == "alice" and row["paused"]["note"] == "maintenance"
    assert [r["id"] for r in row["requests"]] == [request]
    assert [r["status"] for r in readmodel.requests(w.loaded, w.store)] == ["new"]


def test_runs_newest_first(w: World) -> None:
    runs = readmodel.runs(w.loaded, w.store, "items")
    assert [r["kind"] for r in runs] == ["run", "seed"]
    assert runs[1]["status"] == "success" and runs[1]["written"] == 2
    assert runs[0]["started_at"].endswith("+00:00")


def test_errors_are_redacted_and_complete(w: World) -> None:
    rows = readmodel.errors(w.loaded, w.store, "items")
    by_key = {r["key"]: r for r in rows}
    assert len(rows) == 2
    keys = sorted(by_key)
    assert all(by_key[k]["attempts"] == 1 and by_key[k]["dead"] is False for k in keys)
    assert {r["field"] for r in rows} == {"name", "qty"}
    assert SECRET not in json.dumps(rows)
    assert readmodel.errors(w.loaded, w.store, "nope") == []


def test_unmapped_offers_the_snippet(w: World) -> None:
    (row,) = readmodel.unmapped(w.loaded, w.store)
    assert (row["field"], row["rule"], row["value"], row["count"]) == ("name", "map", "bogus", 1)
    assert row["snippet"].startswith('map: {"bogus": ')


def test_trace_of_a_rejected_record_and_an_unknown_one(w: World) -> None:
    key = next(r["key"] for r in readmodel.errors(w.loaded, w.store, "items") if r["field"] == "qty")
    found = readmodel.trace(w.loaded, w.store, "items", key)
    assert found is not None and found["sync"] == "items"
    assert found["error"] is not None
    assert SECRET not in json.dumps(found)
    assert readmodel.trace(w.loaded, w.store, "items", "999") is None


def test_queues_count_async_batches_by_status_and_show_the_backlog(w: World) -> None:
    first = w.store.jobs.record("items", [(1,), (2,)])
    w.store.jobs.record("items", [(3,)])
    w.store.jobs.submitted(first, "job-1")
    done = w.store.jobs.record("items", [(4,)])
    w.store.jobs.finish(done, "done")
    w.store.observations.observe("items", {"backlog_rows": 42, "oldest_pending_s": 90.0})
    (queue,) = readmodel.queues(w.loaded, w.store)
    assert queue["async"] == {"submitted": 1, "pending": 1} and queue["async_unfinished"] == 2
    assert queue["async_oldest"] is not None and (queue["backlog"], queue["oldest_pending_s"]) == (42, 90.0)


def test_the_operational_reads_answer_on_a_quiet_store(w: World) -> None:
    assert readmodel.orders(w.loaded, w.store) == []  # no export sync
    (queue,) = readmodel.queues(w.loaded, w.store)
    assert queue == {
        "sync": "items", "inbox": {}, "async_unfinished": 0, "async": {}, "async_oldest": None,
        "backlog": None, "oldest_pending_s": None,
    }  # fmt: skip
    assert readmodel.alerts(w.loaded, w.store) == []
    assert readmodel.reconcile(w.loaded, w.store) == []
    assert readmodel.budgets(w.loaded, w.store) == []
    assert "workers" in readmodel.workers(w.loaded, w.store)


def test_orders_of_an_export_sync_from_what_the_monitors_observed(
    tmp_path: Path, sqlite_database: Callable[[], str]
) -> None:
    made = world(tmp_path, sqlite_database, export=True)
    try:
        made.store.observations.observe("orders", {"backlog_rows": 3, "oldest_pending_s": 120.5})
        (orders,) = readmodel.orders(made.loaded, made.store)
        assert orders == {
            "sync": "orders",
            "pending": 3,
            "oldest_pending_s": 120.5,
            "failed": [],
            "recent": [],
        }
        assert readmodel.orders(made.loaded, made.store, "items") == []
        export = {r["sync"]: r["export"] for r in readmodel.overview(made.loaded, made.store)}
        assert export == {"items": False, "orders": True}
        backlog = {r["sync"]: r["backlog"] for r in readmodel.overview(made.loaded, made.store)}
        assert backlog == {"items": None, "orders": 3}
    finally:
        made.close()


def test_a_run_with_the_records_it_touched(w: World) -> None:
    last = readmodel.runs(w.loaded, w.store, "items")[0]
    found = readmodel.run(w.loaded, w.store, last["id"])
    assert found is not None and found["status"] == "partial"
    outcomes = sorted(r["outcome"] for r in found["records"])
    assert len(outcomes) >= 3  # 3 written, 4 and 5 rejected
    assert SECRET not in json.dumps(found)
    assert readmodel.run(w.loaded, w.store, 99999) is None


@pytest.mark.parametrize(("late_s", "on_time"), [(1, True), (600, False)])
def test_on_time_as_the_late_start_monitor_judges_it(
    tmp_path: Path, sqlite_database: Callable[[], str], late_s: int, on_time: bool
) -> None:
    made = world(tmp_path, sqlite_database, schedule="every: 1h, start_within: 30s, finish_within: 10m")
    try:
        when = made.store.workers.now() - dt.timedelta(seconds=late_s)
        with made.store.leases.held("items", dt.timedelta(minutes=5)) as lease:
            run_id = made.store.start_run("items", "run", "schedule", lease.token, when, slot="run")
            made.store.finish_run(run_id, "success")
        (row,) = readmodel.overview(made.loaded, made.store)
        assert (row["on_time"], row["start_within_s"], row["window_s"]) == (on_time, 30.0, 600.0)
        if on_time:
            assert row["late_by_s"] is None
        else:  # late by its own start (or, in an hour's first 10 minutes, by the slot it missed)
            assert row["late_by_s"] is not None and row["late_by_s"] > 30
        made.store.pause("items", "alice")  # a paused sync is never late
        assert readmodel.overview(made.loaded, made.store)[0]["on_time"] is True
    finally:
        made.close()


def test_the_records_recent_runs_touched_newest_run_first(w: World) -> None:
    from mapsync.web import read_ops

    recent = read_ops._recent(w.store, "items")
    last = readmodel.runs(w.loaded, w.store, "items")[0]["id"]
    assert {r["key"] for r in recent if r["run_id"] == last} >= {"[4]", "[5]"}
    assert recent[0]["run_id"] == last
    assert all(set(r) >= {"key", "outcome", "message", "at", "run_id"} for r in recent)
