"""Several `mapsync daemon` processes on one PostgreSQL state store, as real processes against
real PostgreSQL (tests/workers_world.py builds the world: 12 syncs, each its own table pair,
watermark capture, a slot every second, a 3 s lease, a writer changing the source meanwhile).

What they prove:
- two daemons split the syncs (disjoint claims that cover them all), both run, and every
  scheduled slot runs once across both: one run row per (sync, slot, scheduled_at), no slot
  missing; after they stop, one `mapsync run` leaves every destination table equal to its source;
- a daemon frozen (SIGSTOP) between its destination write and its state commit has its syncs
  taken over within 2 x lease_ttl, and once resumed its late commit is refused (its run ends
  failed, its counts unchanged): nothing lost, doubled or wrong, every slot once;
- three daemons split the syncs, and those of one SIGKILLed are run by the others within
  2 x lease_ttl;
- a daemon whose clock is two minutes ahead (libfaketime) neither runs slots early nor takes
  the live daemon's syncs, and stamps nothing in the future: times are the database's;
- a store whose schema is newer than this mapsync is refused by `daemon` and `run` (exit 2)
  with nothing written, and a running daemon that sees one stops with exit 2;
- on the SQLite state store a second daemon is refused (exit 1) while the first goes on.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import helpers as h
from tests import workers_world as ww

# one after the other on one xdist worker: two or three daemons of 12 syncs hold up to ~60
# PostgreSQL connections (measured), and the server allows 100
pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.xdist_group("workers_process")]
# The four that hold two or three daemons on a 1 s schedule and a 3 s lease judge timing: alone
# they pass (58-75 s in all, about or over the minute a default-tier group may take); beside the
# whole default tier on 2 cores (issue 15 made it heavier) a daemon starved past its TTL fails
# them. They run in CI's campaign step, on their own. (Issue 15 was suspected of making them
# flaky alone too: see docs/design.md, "Several workers", for what was found and fixed.)
CAMPAIGN = pytest.mark.campaign

SLACK = dt.timedelta(seconds=1)  # the polling (200 ms) and the process's start, around 2 x lease_ttl
# how a run that lost its sync ends: its own late commit refused ("lease lost"), or failed by the
# worker that took the sync over ("taken over"; the core writes "abandoned: its lease expired at …")
TAKEN_OVER = ("lease lost", "taken over", "its lease expired")
# Resumed past its lease, the zombie's lease watch cuts its run's sockets at once: sometimes the
# run's own read of the source sees the cut first and the run ends failed with that read error
# instead (the attribution race is known and left open, docs/design.md "Several workers"); the
# run still ends failed with its counts unchanged, which is what this test proves.
CUT = ("server closed the connection unexpectedly", "the database calls were cut off")
# the clock and how long a 0.3 s timed wait and a 0.2 s sleep take (monotonic), under libfaketime
PROBE = (
    "import threading, time; m = time.monotonic(); threading.Event().wait(0.3); "
    "w = time.monotonic() - m; m = time.monotonic(); time.sleep(0.2); "
    "print(time.time(), w, time.monotonic() - m)"
)
# libfaketime 0.9.10 fails every time.sleep with EINVAL when the monotonic clock is left alone:
# tests/faketime/sitecustomize.py makes a sleep a timed wait in the processes under it
FAKETIME_SHIM = Path(__file__).resolve().parents[2] / "faketime"


def _stopped_cleanly(daemon: ww.Daemon) -> dict[str, Any]:
    """SIGTERM: exit 0, no traceback; its `daemon_stopped` log line (with the time it spent)."""
    code = daemon.terminate()
    err = daemon.stderr()
    assert code == 0, err[-3000:]
    assert "Traceback" not in err, err[max(0, err.find("Traceback") - 1500) :][:5000]
    stopped = [line for line in daemon.logs() if line.get("action") == "daemon_stopped"]
    assert len(stopped) == 1, err[-3000:]
    for field in ("coordination_ms", "run_ms"):
        assert isinstance(stopped[0].get(field), int | float), stopped[0]
    return stopped[0]


def _settle(world: ww.World, daemons: list[ww.Daemon], timeout: float = 30.0) -> dict[str, list[str]]:
    """Wait until `daemons` are the alive workers, their claims disjoint and covering every sync."""
    seen: list[Any] = []

    def split() -> bool:
        seen[:] = [world.split(len(daemons))]
        return seen[0] is not None

    assert h.wait_for(split, timeout=timeout), _why(world, world.syncs, daemons)
    assert set(seen[0]) == {d.worker for d in daemons}, seen[0]
    found: dict[str, list[str]] = seen[0]
    return found


def _ran_since(
    world: ww.World, syncs: list[str], workers: set[str], since: dt.datetime
) -> dict[str, dt.datetime]:
    """Per sync of `syncs`: when a run by one of `workers` that held the sync's lease (not a
    skipped slot, nor one refused because the lease was still held: `failure_class` 'lease')
    first started after `since` (database clock). A frozen daemon's registration can expire up
    to a beat before the lease of the run it froze in (the run renewed it after the last beat):
    the new owner's first try then meets the lease still held, and a test that resumed the frozen
    daemon on that try would wake a run whose lease is still its own, which goes on writing."""
    first: dict[str, dt.datetime] = {}
    for r in world.runs("status <> 'skipped' AND COALESCE(failure_class, '') <> 'lease'"):
        started = ww.parse(r["started_at"])
        if r["sync"] in syncs and r["worker"] in workers and started > since:
            first.setdefault(r["sync"], started)
    return first


def _why(world: ww.World, syncs: list[str], daemons: list[ww.Daemon]) -> str:
    """What the workers, the first of `syncs` and the daemons' coordination logs say (for a
    failed wait)."""
    lines = [json.dumps(world.workers()), *world.timeline(syncs[0]), *world.sessions()]
    for d in daemons:
        lines += [
            f"{d.worker}: {json.dumps(line)}"
            for line in d.logs()
            if line.get("action") not in ("run_started", "run_finished", "daemon_slot_skipped")
        ]
    return "\n".join(lines)


def _finish(world: ww.World, writer: ww.Writer) -> None:
    """After the daemons stopped: the writer stops, one `mapsync run` catches up, and every
    destination table equals its source; no run is left `running`."""
    writer.stop()
    world.catch_up()
    assert world.differences() == {}
    assert [r for r in world.runs() if r["status"] == "running"] == []


@CAMPAIGN
def test_two_daemons_run_every_slot_once(tmp_path: Path, pg_database: Callable[[], str]) -> None:
    # a 5 s lease: at 3 s a loaded CI machine (12 syncs, two daemons, a second test beside it)
    # had commits wait past the lease deadline, runs cut and claims churn for longer than the
    # settle wait; this test is about every slot run once, not about how soon a lease expires
    world = ww.build(tmp_path, pg_database(), pg_database(), pg_database(), lease_ttl="5s")
    writer = ww.Writer(world)
    writer.start()
    try:
        with ww.fleet(world) as fleet:
            started = time.monotonic()
            a, b = fleet.start("a"), fleet.start("b")
            _settle(world, [a, b])
            time.sleep(max(0.0, 10 - (time.monotonic() - started)))
            stops = [_stopped_cleanly(a), _stopped_cleanly(b)]
    finally:
        writer.done.set()
    ran = {r["worker"] for r in world.runs() if r["slot"] is not None and r["status"] != "skipped"}
    assert ran == {a.worker, b.worker}
    world.assert_every_slot_once()
    _finish(world, writer)
    print("daemon_stopped:", [{k: s[k] for k in ("coordination_ms", "run_ms")} for s in stops])


@CAMPAIGN
def test_stopped_worker_is_taken_over_and_its_late_commit_rejected(
    tmp_path: Path, pg_database: Callable[[], str]
) -> None:
    world = ww.build(tmp_path, pg_database(), pg_database(), pg_database())
    marker = tmp_path / "crash.marker"
    freeze = {
        "MAPSYNC_CRASH_AT": "after_write",
        "MAPSYNC_CRASH_SIGNAL": "STOP",
        "MAPSYNC_CRASH_MARKER": str(marker),
    }
    writer = ww.Writer(world)
    writer.start()
    try:
        with ww.fleet(world) as fleet:
            healthy = fleet.start("healthy")
            _settle(world, [healthy])  # it owns every sync; the frozen one takes its share next
            frozen = fleet.start("frozen", freeze)
            # its first batch written to a destination stops it before the state commit
            assert h.wait_for(marker.exists, timeout=15), frozen.stderr()[-3000:]
            froze_at = world.db_now()
            owned = next(w["owns"] for w in world.workers()["workers"] if w["id"] == frozen.worker)
            zombies = {r["id"]: r for r in world.runs(f"worker = '{frozen.worker}' AND status = 'running'")}
            assert owned and zombies, (owned, zombies)
            assert frozen.proc.poll() is None  # stopped, not dead

            # its syncs are run by the healthy daemon within 2 x lease_ttl
            deadline = 2 * world.lease_ttl + SLACK
            assert h.wait_for(
                lambda: len(_ran_since(world, owned, {healthy.worker}, froze_at)) == len(owned),
                timeout=deadline.total_seconds() + 10,
            ), _why(world, owned, [healthy, frozen])
            taken = _ran_since(world, owned, {healthy.worker}, froze_at)
            slowest = max(at - froze_at for at in taken.values())
            print(f"taken over after {slowest.total_seconds():.2f} s (at most {deadline.total_seconds()} s)")
            assert slowest <= deadline, taken

            # resumed: its late state commit is refused, its in-flight runs end failed
            frozen.proc.send_signal(signal.SIGCONT)
            ids = ", ".join(str(i) for i in zombies)
            assert h.wait_for(
                lambda: all(r["status"] != "running" for r in world.runs(f"id IN ({ids})")), timeout=15
            ), world.runs(f"id IN ({ids})")
            for r in world.runs(f"id IN ({ids})"):
                assert r["status"] == "failed", str(r)
                assert any(m in (r["message"] or "") for m in (*TAKEN_OVER, *CUT)), str(r)
                assert r["written"] == zombies[r["id"]]["written"], (r, zombies[r["id"]])
            time.sleep(3)  # both running side by side again
            _stopped_cleanly(healthy)
            _stopped_cleanly(frozen)
    finally:
        writer.done.set()
    world.assert_every_slot_once()
    _finish(world, writer)


@CAMPAIGN
def test_three_daemons_split_and_survive_a_kill(tmp_path: Path, pg_database: Callable[[], str]) -> None:
    world = ww.build(tmp_path, pg_database(), pg_database(), pg_database())
    writer = ww.Writer(world)
    writer.start()
    try:
        with ww.fleet(world) as fleet:
            started = time.monotonic()
            daemons = [fleet.start(n) for n in ("a", "b", "c")]
            _settle(world, daemons)
            time.sleep(max(0.0, 4 - (time.monotonic() - started)))
            victim = daemons[0]
            owned = world.alive()[victim.worker]
            killed_at = world.db_now()
            victim.kill()
            others = [d for d in daemons if d is not victim]
            deadline = 2 * world.lease_ttl + SLACK
            assert h.wait_for(
                lambda: len(_ran_since(world, owned, {d.worker for d in others}, killed_at)) == len(owned),
                timeout=deadline.total_seconds() + 10,
            ), _why(world, owned, daemons)
            taken = _ran_since(world, owned, {d.worker for d in others}, killed_at)
            slowest = max(at - killed_at for at in taken.values())
            print(f"taken over after {slowest.total_seconds():.2f} s (at most {deadline.total_seconds()} s)")
            assert slowest <= deadline, taken
            _settle(world, others)  # the two left split every sync between them
            time.sleep(1)
            for d in others:
                _stopped_cleanly(d)
    finally:
        writer.done.set()
    world.assert_every_slot_once()
    _finish(world, writer)


@CAMPAIGN
def test_clock_two_minutes_ahead_neither_steals_nor_runs_early(
    tmp_path: Path, pg_database: Callable[[], str], faketime_lib: str
) -> None:
    # the wall clock two minutes ahead, the monotonic clock left alone (as on a host whose clock
    # is off): libfaketime 0.9.10 fakes CLOCK_MONOTONIC too by default, and then every timed
    # wait of Python's (threading.Event.wait(0.3)) lasts two minutes, the kernel's clock being real
    ahead = {
        "LD_PRELOAD": faketime_lib,
        "FAKETIME": "+2m",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(FAKETIME_SHIM), os.environ.get("PYTHONPATH")])),
    }
    probe = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**os.environ, **ahead},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    clock, waited, slept = (float(v) for v in probe.stdout.split())
    assert 110 < clock - time.time() < 130, probe.stdout  # the fake works
    assert 0.25 < waited < 2, probe.stdout  # and so do timed waits
    assert 0.15 < slept < 2, probe.stdout  # and sleeps (the shim)

    # a 6 s lease: this test is about the clock, not the takeover's speed; a process under
    # libfaketime (every clock read wrapped) on a loaded CI machine stalled past a 3 s lease once
    world = ww.build(tmp_path, pg_database(), pg_database(), pg_database(), lease_ttl="6s")
    writer = ww.Writer(world)
    writer.start()
    try:
        with ww.fleet(world) as fleet:
            normal = fleet.start("normal")
            _settle(world, [normal])
            fast = fleet.start("fast", ahead)
            _settle(world, [normal, fast])
            time.sleep(6)
            view = world.workers()
            now = ww.parse(view["now"])
            alive = {w["id"]: w for w in view["workers"] if w["alive"]}
            why = json.dumps(view) + "\n" + _why(world, world.syncs, [normal, fast])
            assert set(alive) == {normal.worker, fast.worker}, why
            assert len(alive[normal.worker]["owns"]) >= 5, why  # it keeps its share (6 of 12)
            assert sorted(s for w in alive.values() for s in w["owns"]) == world.syncs, why
            for w in alive.values():  # stamped on the database's clock, not two minutes ahead
                assert ww.parse(w["heartbeat_at"]) <= now + SLACK, why
                assert ww.parse(w["expires_at"]) <= now + world.lease_ttl + SLACK, why
            _stopped_cleanly(fast)
            _stopped_cleanly(normal)
            end = world.db_now()
    finally:
        writer.done.set()
    runs = world.runs()
    scheduled = [r for r in runs if r["slot"] is not None]
    assert {r["worker"] for r in scheduled if r["status"] != "skipped"} == {normal.worker, fast.worker}
    for r in scheduled:  # never early
        early = ww.parse(r["scheduled_at"]) - ww.parse(r["started_at"])
        assert early <= dt.timedelta(milliseconds=200), r
        assert r["lateness_ms"] is None or r["lateness_ms"] >= -200, r
    for r in runs:  # nothing stamped in the future
        assert ww.parse(r["started_at"]) <= end + dt.timedelta(seconds=2), r
        assert not any(m in (r["message"] or "") for m in TAKEN_OVER), r
    world.assert_every_slot_once()
    _finish(world, writer)


def _snapshot(url: str) -> dict[str, list[str]]:
    """Every mapsync_* table: its rows (as text, sorted)."""
    tables = [
        t
        for (t,) in h.query(
            url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE 'mapsync%'"
        )
    ]
    return {t: sorted(repr(r) for r in h.query(url, f'SELECT * FROM "{t}"')) for t in sorted(tables)}


def test_newer_schema_refused_and_nothing_written(tmp_path: Path, pg_database: Callable[[], str]) -> None:
    world = ww.build(tmp_path, pg_database(), pg_database(), pg_database(), syncs=2)
    assert world.state is not None
    h.execute(world.state, "UPDATE mapsync_meta SET value = '99' WHERE name = 'schema_version'")
    before = _snapshot(world.state)
    assert before["mapsync_runs"], before  # the seed's rows: there is something to change

    daemon = h.mapsync("daemon", "sheet.yaml", cwd=tmp_path, timeout=60)
    assert daemon.returncode == 2, daemon.stderr
    assert "newer than this mapsync" in daemon.stderr
    assert "Traceback" not in daemon.stderr
    assert _snapshot(world.state) == before

    run = h.mapsync("run", "sheet.yaml", cwd=tmp_path, process=True)
    assert run.returncode == 2, run.stderr
    assert "newer than this mapsync" in run.stderr
    assert "Traceback" not in run.stderr
    assert _snapshot(world.state) == before


def test_sqlite_allows_one_daemon(tmp_path: Path, pg_database: Callable[[], str]) -> None:
    world = ww.build(tmp_path, pg_database(), pg_database(), None, syncs=2)
    with ww.fleet(world) as fleet:
        first = fleet.start("first")

        def ran(d: ww.Daemon) -> int:
            return len([r for r in world.runs("status <> 'skipped'") if r["worker"] == d.worker])

        assert h.wait_for(lambda: ran(first) > 0, timeout=15), first.stderr()[-3000:]
        started = time.monotonic()
        second = fleet.start("second")
        code = second.proc.wait(timeout=15)
        print(f"the second daemon exited after {time.monotonic() - started:.2f} s")
        assert code == 1, second.stderr()
        assert "allows one daemon" in second.stderr()
        assert "Traceback" not in second.stderr()
        assert first.proc.poll() is None
        count = ran(first)
        assert h.wait_for(lambda: ran(first) >= count + 2, timeout=10), first.stderr()[-3000:]
        _stopped_cleanly(first)

        third = fleet.start("third")
        assert h.wait_for(lambda: ran(third) > 0, timeout=15), third.stderr()[-3000:]
        _stopped_cleanly(third)


def test_running_daemon_stops_on_newer_schema(tmp_path: Path, pg_database: Callable[[], str]) -> None:
    world = ww.build(tmp_path, pg_database(), pg_database(), pg_database(), syncs=2)
    assert world.state is not None
    with ww.fleet(world) as fleet:
        daemon = fleet.start("daemon")
        assert h.wait_for(lambda: any(r["worker"] == daemon.worker for r in world.runs()), timeout=15), (
            daemon.stderr()[-3000:]
        )
        bumped = time.monotonic()
        h.execute(world.state, "UPDATE mapsync_meta SET value = '99' WHERE name = 'schema_version'")
        limit = (2 * world.lease_ttl + SLACK).total_seconds()
        code = daemon.proc.wait(timeout=limit + 10)
        took = time.monotonic() - bumped
        print(f"the daemon stopped {took:.2f} s after the schema bump (at most {limit} s)")
        err = daemon.stderr()
        assert code == 2, err[-3000:]
        assert "newer than this mapsync" in err
        assert "Traceback" not in err
        assert took <= limit
