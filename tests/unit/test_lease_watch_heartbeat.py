"""The lease heartbeat (`Engine(heartbeat=True)`, the daemon): with a 1 s lease and batches
slower than it, the lease's expiry keeps moving, another worker cannot take the sync over, the
watchdog's deadline is not moved by it, and nothing beats after the run. A renewal that finds the
lease taken makes the engine stop with LeaseLost. Real StateStore on SQLite."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mapsync import errors, lease_watch, records
from mapsync.state import schema
from mapsync.state.store import StateStore
from mapsync.testing import fakes

TTL = dt.timedelta(seconds=1)
SLOW = 1.3  # one batch's write: longer than the lease


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    s = fakes.state_store(tmp_path)
    yield s
    s.close()


def _engine(store: StateStore, tmp_path: Path, n: int, *, beat: bool) -> tuple[fakes.MemoryEngine, Any]:
    loaded = fakes.sheet(
        {"c": {"key": {"from": "id", "to": "ref"}, "fields": {"nm": "name"}, "delivery": {"batch": 2}}},
        tmp_path,
    )
    state = loaded.sheet.state.model_copy(update={"lease_ttl": TTL})
    loaded = dataclasses.replace(loaded, sheet=loaded.sheet.model_copy(update={"state": state}))
    source = fakes.MemorySource([{"id": i, "name": f"n{i}", "version": i} for i in range(1, n + 1)])
    dest = fakes.MemoryDestination()
    engine = fakes.MemoryEngine(loaded, store, {"c": (source, dest)})
    engine.heartbeat = beat
    return engine, dest


def _expires(store: StateStore) -> str | None:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(schema.leases.c.expires_at)).scalar()


def _beats() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("lease-heartbeat")]


def test_the_heartbeat_keeps_a_slow_run_s_lease_and_leaves_the_deadline_alone(
    store: StateStore, tmp_path: Path
) -> None:
    engine, dest = _engine(store, tmp_path, 2, beat=True)
    seen: dict[str, Any] = {}

    def slow(recs: list[records.Mapped]) -> None:
        seen["expires"] = [_expires(store)]
        for _ in range(3):
            time.sleep(0.4)
            seen["expires"].append(_expires(store))
        with pytest.raises(errors.LeaseHeld):  # the lease would have expired without the heartbeat
            store.leases.acquire("c", TTL)
        seen["fired"] = engine.watch.fired

    dest.on_call = slow
    try:
        report = engine.run("c", "seed")
    finally:
        engine.close()
    assert report.ok and report.counts.written == 2
    expires = seen["expires"]
    assert expires == sorted(expires) and len(set(expires)) >= 2  # moved while the write was slow
    # the heartbeat never moves the write deadline: a write stalled past it is still cut
    assert seen["fired"] is not None and "no answer within the lease" in seen["fired"]
    assert _expires(store) is None and not _beats()  # released, and nothing beats after the run
    time.sleep(0.4)
    assert _expires(store) is None


def test_without_the_heartbeat_a_slow_run_loses_its_lease(store: StateStore, tmp_path: Path) -> None:
    engine, dest = _engine(store, tmp_path, 2, beat=False)
    taken: list[object] = []

    def slow(recs: list[records.Mapped]) -> None:
        time.sleep(SLOW)
        taken.append(store.leases.acquire("c", TTL))  # expired: another worker takes it over
        assert not _beats()

    dest.on_call = slow
    try:
        report = engine.run("c", "seed")
    finally:
        engine.close()
    assert taken and report.status == "failed" and "lease lost" in (report.message or "")


def test_a_renewal_that_finds_the_lease_taken_sets_lost(store: StateStore) -> None:
    lease = store.leases.acquire("c", dt.timedelta(seconds=0.3))
    watch = lease_watch.LeaseWatch(store, lambda: [store])
    watch.arm(dt.timedelta(seconds=30))
    armed = watch.dog.deadline
    with lease_watch.Heartbeat(store, lease) as beat:
        time.sleep(0.25)
        assert beat.beats >= 1 and not beat.lost
        assert watch.dog.deadline == armed  # beats never move the watchdog's deadline
        beat.check()
        with store.engine.begin() as conn:  # another worker's lease now
            conn.execute(sa.update(schema.leases).values(token="someone else"))
        time.sleep(0.25)
        assert beat.lost
        with pytest.raises(errors.LeaseLost):
            beat.check()
    assert not _beats()
    watch.close()
