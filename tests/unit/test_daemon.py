"""The daemon's scheduler alone (`Daemon.tick`, no worker thread started), on the MemoryStore and
the SQL store, at chosen instants: what falls due goes to the sync's worker once, with its slot;
what cannot run is recorded as skipped with its reason; slots missed while no daemon ran are run
once, as the latest; operator requests are taken for syncs that are not paused; a sync seeded as
another sync is held."""

from __future__ import annotations

import dataclasses
import datetime as dt
import queue
import zoneinfo
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mapsync.daemon import Daemon
from mapsync.daemon_process import release_orphaned_requests
from mapsync.daemon_worker import Job, Worker
from mapsync.sheet import identity
from mapsync.state.memory import MemoryStore
from mapsync.state.ports import Store
from mapsync.testing import fakes

T0 = dt.datetime(2026, 12, 3, 12, 0, 0, tzinfo=dt.UTC)


def _jobs(w: Worker) -> list[Job]:
    found: list[Job] = [*w.mailbox.values()]  # scheduled slots wait in the mailbox
    w.mailbox.clear()
    while True:
        try:
            found.append(w.jobs.get_nowait())
        except queue.Empty:
            return found


@pytest.fixture(params=["memory", "sqlite"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    stores: list[Store] = []

    def build(**schedules: dict[str, Any]) -> Daemon:
        loaded = fakes.sheet(
            {
                name: {"key": {"from": "id", "to": "id"}, "fields": {"nm": "name"}, **spec}
                for name, spec in schedules.items()
            },
            tmp_path,
        )
        store: Store = (
            MemoryStore() if request.param == "memory" else fakes.state_store(tmp_path / f"s{len(stores)}")
        )
        stores.append(store)
        d = Daemon(loaded, store, list(schedules), open_store=lambda: store, worker="host:1")
        for name in schedules:
            d._add(name, loaded, start=False)
        return d

    (tmp_path / "s0").mkdir()
    (tmp_path / "s1").mkdir()
    yield build
    for store in stores:
        store.close()


def _runs(d: Daemon, sync: str) -> list[dict[str, Any]]:
    from mapsync.state import report

    return list(reversed(report.runs(d.store, sync, 100)))


def test_a_never_run_sync_waits_for_its_next_slot_then_gets_it_once(make: Callable[..., Daemon]) -> None:
    d = make(a={"schedule": {"every": "5m"}})
    w = d.workers["a"]
    d.tick(T0 + dt.timedelta(minutes=2))
    assert _jobs(w) == []  # 12:00 passed before the daemon looked: wait for 12:05
    wait = d.tick(T0 + dt.timedelta(minutes=4, seconds=59))
    assert _jobs(w) == [] and wait <= 1.0
    d.tick(T0 + dt.timedelta(minutes=5, seconds=0.3))
    d.tick(T0 + dt.timedelta(minutes=5, seconds=0.8))
    jobs = _jobs(w)
    assert jobs == [Job("run", "schedule", T0 + dt.timedelta(minutes=5), "run", 0)]


def test_a_slot_due_while_busy_paused_or_backing_off_is_recorded_as_skipped(
    make: Callable[..., Daemon],
) -> None:
    d = make(a={"schedule": {"every": "1m"}})
    w = d.workers["a"]
    d.tick(T0)  # the first look
    w.pending["run"] = 1  # a run is under way
    d.tick(T0 + dt.timedelta(minutes=1))
    w.pending["run"] = 0
    d.store.pause("a", "ops@host", "ERP upgrade")
    d.tick(T0 + dt.timedelta(minutes=2))
    d.store.resume("a")
    w.backoff.failed("a", d.clock.monotonic())
    w.backoff.until["a"] = d.clock.monotonic() + 3600
    d.tick(T0 + dt.timedelta(minutes=3))
    assert _jobs(w) == []
    runs = _runs(d, "a")
    assert [(r["status"], r["scheduled_at"][:16]) for r in runs] == [
        ("skipped", "2026-12-03T12:01"),
        ("skipped", "2026-12-03T12:02"),
        ("skipped", "2026-12-03T12:03"),
    ]
    messages = [r["message"] for r in runs]
    assert "still running" in messages[0]
    assert "paused by ops@host" in messages[1] and "ERP upgrade" in messages[1]
    assert "backing off after 1 failed run" in messages[2]


def test_slots_missed_while_no_daemon_ran_run_once_as_the_latest(make: Callable[..., Daemon]) -> None:
    d = make(a={"schedule": {"every": "10m"}})
    w = d.workers["a"]
    d.store.record_skipped_run("a", "run", "schedule", T0, "run", "paused", "paused")  # the last slot seen
    d.tick(T0 + dt.timedelta(hours=2, minutes=3))  # 12 slots since: 12:10 … 14:00
    assert _jobs(w) == [Job("run", "schedule", T0 + dt.timedelta(hours=2), "run", 11)]
    d.tick(T0 + dt.timedelta(hours=2, minutes=9))
    assert _jobs(w) == []


def test_retry_slots_are_their_own(make: Callable[..., Daemon]) -> None:
    d = make(a={"schedule": {"every": "1m"}, "retry": {"every": "30m", "max_attempts": 3}})
    w = d.workers["a"]
    d.tick(T0 - dt.timedelta(seconds=1))
    d.tick(T0)
    kinds = sorted((j.kind, j.slot) for j in _jobs(w))
    assert kinds == [("retry", "retry"), ("run", "run")]


def test_requests_are_taken_for_syncs_that_are_not_paused(make: Callable[..., Daemon]) -> None:
    d = make(a={"schedule": {"every": "1h"}}, b={"schedule": {"every": "1h"}})
    first = d.store.request_run("a", "overlap", "ops@host")
    d.store.request_run("b", "run", "ops@host")
    d.store.pause("b", "ops@host")
    d.tick(T0 + dt.timedelta(minutes=1))
    assert _jobs(d.workers["a"]) == [Job("overlap", "request", request_id=first)]
    assert _jobs(d.workers["b"]) == []
    d.store.resume("b")
    d.tick(T0 + dt.timedelta(minutes=2))
    assert [j.kind for j in _jobs(d.workers["b"])] == ["run"]
    assert _jobs(d.workers["a"]) == []  # taken once


def test_a_request_hands_its_keys_to_the_worker(make: Callable[..., Daemon]) -> None:
    d = make(a={"schedule": {"every": "1h"}})
    retry = d.store.request_run("a", "retry", "ops@host", keys=["7", "x,y"], note="fixed")
    reexport = d.store.request_run("a", "reexport", "ops@host")
    d.tick(T0 + dt.timedelta(minutes=1))
    assert _jobs(d.workers["a"]) == [
        Job("retry", "request", request_id=retry, keys=("7", "x,y")),
        Job("reexport", "request", request_id=reexport),
    ]
    assert [(r.keys, r.note) for r in d.store.requests("a")] == [(None, None), (("7", "x,y"), "fixed")]


def test_a_sync_seeded_as_another_sync_is_held_and_its_slots_say_why(make: Callable[..., Daemon]) -> None:
    d = make(a={"schedule": {"every": "1m"}})
    d.store.set_cursors("a", {identity.CURSOR: "0123456789abcdef"}, None)
    w = d._add("a", d.loaded, start=False)
    assert w.held is not None and "seed --sync a --again" in w.held
    d.tick(T0)
    d.tick(T0 + dt.timedelta(minutes=1))
    assert _jobs(w) == []
    runs = _runs(d, "a")
    assert runs[-1]["status"] == "skipped" and "state reset --sync a" in runs[-1]["message"]
    d.store.set_cursors("a", {identity.CURSOR: identity.identity(d.loaded.sheet, "a")}, None)
    d.tick(T0 + dt.timedelta(minutes=2))  # seeded again under this sheet: runs
    assert [j.slot for j in _jobs(w)] == ["run"]


def test_the_daemon_leases_for_60s_unless_the_sheet_says_otherwise(tmp_path: Path) -> None:
    from mapsync.daemon_process import with_daemon_lease

    spec = {"a": {"key": {"from": "id", "to": "id"}, "fields": {"nm": "name"}}}
    plain = fakes.sheet(spec, tmp_path)
    assert plain.sheet.state.lease_ttl == dt.timedelta(minutes=10)  # a one-off command's
    assert with_daemon_lease(plain).sheet.state.lease_ttl == dt.timedelta(seconds=60)
    assert plain.sheet.state.lease_ttl == dt.timedelta(minutes=10)  # the original is left alone
    own = plain.sheet.model_copy(update={"state": plain.sheet.state.model_validate({"lease_ttl": "5m"})})
    assert with_daemon_lease(dataclasses.replace(plain, sheet=own)).sheet.state.lease_ttl == dt.timedelta(
        minutes=5
    )
    slow = plain.sheet.model_copy(
        update={"state": plain.sheet.state.model_validate({"timeouts": {"statement": "2m"}})}
    )
    assert with_daemon_lease(dataclasses.replace(plain, sheet=slow)).sheet.state.lease_ttl == dt.timedelta(
        minutes=4
    )


def test_a_cron_slot_in_a_time_zone_fires_at_its_wall_time_across_a_dst_change(
    make: Callable[..., Daemon],
) -> None:
    d = make(a={"schedule": {"cron": "30 2 * * *", "timezone": "Europe/Berlin"}})
    w = d.workers["a"]
    fired: list[dt.datetime] = []
    # 2026-10-24 to 2026-10-27 (Berlin goes from CEST to CET on the 25th), a tick every 10 minutes
    now = dt.datetime(2026, 10, 24, 0, 0, tzinfo=dt.UTC)
    while now < dt.datetime(2026, 10, 27, 12, 0, tzinfo=dt.UTC):
        d.tick(now)
        fired += [j.scheduled_at for j in _jobs(w) if j.scheduled_at is not None]
        w.pending.clear()  # as if each run had finished at once
        now += dt.timedelta(minutes=10)
    berlin = [f.astimezone(zoneinfo.ZoneInfo("Europe/Berlin")) for f in fired]
    assert [b.strftime("%m-%d %H:%M %Z") for b in berlin] == [
        "10-24 02:30 CEST",
        "10-25 02:30 CEST",  # 02:30 came twice that night: it fired once, at the first
        "10-26 02:30 CET",
        "10-27 02:30 CET",
    ]


class _Failing:
    """An engine whose runs raise what a capture raises when its slot or binlog is gone."""

    def __init__(self, loaded: Any) -> None:
        self.loaded = loaded
        self.calls = 0

    def run(self, name: str, kind: str, **kw: Any) -> Any:
        from mapsync import errors

        self.calls += 1
        raise errors.StateError(f"sync {name}: the replication slot is gone: run `mapsync seed` again")

    def redact_text(self, text: str) -> str:
        return text

    def close(self) -> None:
        return None


def test_a_source_side_state_error_is_a_failed_run_with_backoff_not_the_daemons_end(
    make: Callable[..., Daemon],
) -> None:
    d = make(a={"schedule": {"every": "1m"}})
    w = d.workers["a"]
    w.engine = _Failing(w.loaded)  # type: ignore[assignment]
    w.store = d.store
    w._run(Job("run", "schedule", T0, "run"))
    assert w.engine.calls == 1  # type: ignore[union-attr]
    assert d.failure is None and not d.stop.is_set()
    assert w.backoff.failures["a"] == 1 and w.backing_off()


def test_requests_a_stopping_worker_did_not_run_end_failed_not_taken_for_ever(
    make: Callable[..., Daemon],
) -> None:
    d = make(a={"schedule": {"every": "1h"}})
    w = d.workers["a"]
    asked = d.store.request_run("a", "run", "ops@host")
    d.tick(T0)
    assert w.busy()
    w._release_requests(d.store)
    (req,) = d.store.requests("a")
    assert (req.id, req.status) == (asked, "failed") and "stopped before running it" in (req.message or "")
    assert not w.busy()


def test_requests_taken_by_a_daemon_that_died_on_this_host_end_failed(make: Callable[..., Daemon]) -> None:
    import os
    import socket
    import subprocess
    import sys

    d = make(a={"schedule": {"every": "1h"}})
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = f"{socket.gethostname()}:{int(gone.stdout)}"
    orphan = d.store.request_run("a", "run", "ops@host")
    d.store.take_requests(["a"], dead)
    live = d.store.request_run("a", "overlap", "ops@host")
    d.store.take_requests(["a"], f"{socket.gethostname()}:{os.getpid()}")  # this process: alive
    elsewhere = d.store.request_run("a", "retry", "ops@host")
    d.store.take_requests(["a"], "another-host:1")
    assert release_orphaned_requests(d.store) == 1
    status = {r.id: r.status for r in d.store.requests("a")}
    assert status == {orphan: "failed", live: "taken", elsewhere: "taken"}


# ------------------------------------------------------------------ several workers (issue 14)


def _pair(tmp_path: Path, n: int = 4) -> tuple[Daemon, Daemon]:
    """Two daemons (workers host:1 and host:2) of one sheet on one in-memory state store."""
    specs = {f"s{i}": {"key": {"from": "id", "to": "id"}, "fields": {"nm": "name"}} for i in range(n)}
    for spec in specs.values():
        spec["schedule"] = {"every": "1m"}
    loaded = fakes.sheet(specs, tmp_path)
    store = MemoryStore()
    pair = []
    for worker in ("host:1", "host:2"):
        d = Daemon(loaded, store, list(specs), open_store=lambda: store, worker=worker)
        for name in specs:
            d._add(name, loaded, start=False)
        pair.append(d)
    return pair[0], pair[1]


def test_two_daemons_split_the_syncs_and_each_schedules_only_its_own(tmp_path: Path) -> None:
    one, two = _pair(tmp_path)
    one.tick(T0)  # alone: it claims all four
    assert one.owns == {"s0", "s1", "s2", "s3"}
    two.tick(T0)  # nothing free yet: its share waits for the first to hand over
    assert two.owns == set()
    one.beat(force=True)  # two live workers: a share of 2, the surplus idle syncs handed over
    two.beat(force=True)
    assert len(one.owns) == 2 and len(two.owns) == 2 and one.owns | two.owns == {"s0", "s1", "s2", "s3"}
    for d in (one, two):  # a sync that has never run a slot waits for its next one
        d.tick(T0 + dt.timedelta(minutes=1))
        for w in d.workers.values():
            _jobs(w)
            w.pending.clear()  # as if run
    for d in (one, two):
        d.tick(T0 + dt.timedelta(minutes=2))
    offered = {d.worker: {n for n, w in d.workers.items() if _jobs(w)} for d in (one, two)}
    assert offered == {"host:1": set(one.owns), "host:2": set(two.owns)}
    view = one.store.workers.overview()
    assert {w["id"]: sorted(w["owns"]) for w in view["workers"]} == {
        "host:1": sorted(one.owns),
        "host:2": sorted(two.owns),
    }


def test_a_busy_sync_is_not_handed_over(tmp_path: Path) -> None:
    one, two = _pair(tmp_path)
    one.tick(T0)
    for name in ("s0", "s1", "s2"):
        one.workers[name].pending["run"] = 1  # runs under way: stay where they are
    two.tick(T0)
    one.beat(force=True)
    two.beat(force=True)
    assert one.owns == {"s0", "s1", "s2"} and two.owns == {"s3"}


def test_a_worker_whose_beats_fail_for_a_whole_ttl_schedules_nothing(tmp_path: Path) -> None:
    from mapsync import errors
    from mapsync.state.clock import ManualClock

    one, _ = _pair(tmp_path, 2)
    one.clock = ManualClock()
    one.tick(T0)
    assert one.owns == {"s0", "s1"}

    def away(*_a: Any, **_k: Any) -> Any:
        raise errors.StateError("state store unreachable", reason="unreachable")

    one.store.workers.beat = away  # type: ignore[method-assign]
    one.clock.advance(one.ttl.total_seconds() / 2)  # a beat is due, fails: still within the TTL
    one.tick(T0 + dt.timedelta(minutes=1))
    assert one.owns == {"s0", "s1"}
    one.clock.advance(one.ttl.total_seconds())  # silent past the TTL: the others take over
    one.tick(T0 + dt.timedelta(minutes=2))
    assert one.owns == frozenset() and not any(w.owned for w in one.workers.values())
    for w in one.workers.values():
        _jobs(w)
    one.tick(T0 + dt.timedelta(minutes=3))
    assert all(_jobs(w) == [] for w in one.workers.values())


def test_a_slot_due_while_the_previous_one_still_waits_replaces_it(make: Callable[..., Daemon]) -> None:
    """A slot handed over and not started yet (no run slot free) is not a run: the next slot
    replaces it and stands for it, and nothing is recorded before a run starts (a daemon killed
    now leaves both slots to the next worker, which counts them from the last row)."""
    d = make(a={"schedule": {"every": "1m"}})
    w = d.workers["a"]
    d.tick(T0)  # the first look
    d.tick(T0 + dt.timedelta(minutes=1))
    d.tick(T0 + dt.timedelta(minutes=2))
    assert _jobs(w) == [Job("run", "schedule", T0 + dt.timedelta(minutes=2), "run", 1)]
    assert _runs(d, "a") == []


class _Gone:
    """An engine whose run could not start: its lease lapsed while the process stalled (SlotGone),
    so the run leaves no row, and no other worker took the sync over to count that slot."""

    def __init__(self, loaded: Any) -> None:
        self.loaded = loaded
        self.calls = 0

    def run(self, name: str, kind: str, **kw: Any) -> Any:
        from mapsync import errors

        self.calls += 1
        raise errors.SlotGone(name, kw["slot"], str(kw["scheduled_at"]))

    def redact_text(self, text: str) -> str:
        return text

    def close(self) -> None:
        return None


def test_a_slot_whose_run_left_no_row_is_counted_by_the_next_run(make: Callable[..., Daemon]) -> None:
    """A worker that stalled past its lease between taking the lease and writing the run row
    (SlotGone) and kept the sync: the slot is counted by the next run's `coalesced`, never lost."""
    d = make(a={"schedule": {"every": "1m"}})
    w = d.workers["a"]
    w.owned = True
    w.engine = _Gone(w.loaded)  # type: ignore[assignment]
    w.store = d.store
    d.store.record_skipped_run("a", "run", "schedule", T0, "run", "paused", "paused")  # the last row
    d.tick(T0 + dt.timedelta(seconds=1))  # the first look: 12:00 is the last row
    d.tick(T0 + dt.timedelta(minutes=1))  # 12:01 handed over
    assert w.queued("run")
    w._step(None)  # it runs and leaves no row
    assert w.engine.calls == 1 and not w.busy()  # type: ignore[union-attr]
    d.tick(T0 + dt.timedelta(minutes=5, seconds=1))
    (job,) = _jobs(w)
    assert (job.scheduled_at, job.coalesced) == (T0 + dt.timedelta(minutes=5), 4)  # 12:01 … 12:04 with it
    d.tick(T0 + dt.timedelta(minutes=5, seconds=30))
    assert _jobs(w) == []  # counted once


def test_a_slot_whose_run_left_its_row_is_not_counted_again(make: Callable[..., Daemon]) -> None:
    d = make(a={"schedule": {"every": "1m"}})
    w = d.workers["a"]
    w.owned = True
    w.engine = _Failing(w.loaded)  # type: ignore[assignment]
    w.store = d.store
    d.store.record_skipped_run("a", "run", "schedule", T0, "run", "paused", "paused")
    d.tick(T0 + dt.timedelta(seconds=1))
    d.tick(T0 + dt.timedelta(minutes=1))
    w._step(None)
    d.store.record_failed_run(
        "a", "run", "schedule", "source", "gone", T0 + dt.timedelta(minutes=1), slot="run"
    )
    w.backoff.until.pop("a", None)
    d.tick(T0 + dt.timedelta(minutes=3, seconds=1))
    (job,) = _jobs(w)
    assert (job.scheduled_at, job.coalesced) == (T0 + dt.timedelta(minutes=3), 1)  # 12:02 with it
