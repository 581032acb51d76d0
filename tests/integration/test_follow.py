"""`mapsync run --follow`: a real process keeps delivering new rows until SIGTERM, stops
cleanly (exit 0, nothing half-committed), and idle polls leave no runs in the history."""

from __future__ import annotations

import datetime as dt
import itertools
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

SHEET = """
version: 1
connections:
  src: {{url: "{src}"}}
  dst: {{url: "{dst}"}}
syncs:
  items:
    from: {{connection: src, table: items}}
    to: {{connection: dst, table: items}}
    key: {{from: id, to: id}}
    fields: {{name: name}}
    changes: {{method: watermark, column: last_modified, lag: 0s}}
    delivery: {{batch: 10}}
"""


def _stamp(delta: dt.timedelta = dt.timedelta(0)) -> str:
    return (dt.datetime.now(dt.UTC).replace(tzinfo=None) + delta).strftime("%Y-%m-%d %H:%M:%S.%f")


@pytest.mark.slow
def test_follow_delivers_until_sigterm(database: Callable[[], str], tmp_path: Path) -> None:
    src, dst = database(), database()
    ts = h.TS[h.dialect(src)]
    h.execute(src, f"CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50), last_modified {ts})")
    h.execute(dst, "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50))")
    (tmp_path / "sheet.yaml").write_text(SHEET.format(src=src, dst=dst))
    assert h.mapsync("seed", "sheet.yaml", cwd=tmp_path).returncode == 0

    proc = subprocess.Popen(
        [sys.executable, "-m", "mapsync", "run", "sheet.yaml", "--follow", "--poll", "100ms", "--json"],
        cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # the source's clock is the machine's; the rows are stamped a little in the past so the
        # watermark's upper bound (now - lag) has passed them when the next poll comes
        for i in range(1, 4):
            h.execute(
                src,
                "INSERT INTO items VALUES (:id, :name, :ts)",
                params={"id": i, "name": f"n{i}", "ts": _stamp(dt.timedelta(milliseconds=-10))},
            )
            assert h.wait_for(lambda i=i: h.query(dst, "SELECT COUNT(*) FROM items")[0][0] == i), (
                f"row {i} never arrived"
            )
        time.sleep(0.5)  # a few idle polls
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "stopped after" in stderr
    assert sorted(r[0] for r in h.query(dst, "SELECT name FROM items")) == ["n1", "n2", "n3"]
    # every printed report read something; idle passes left nothing in the run history
    reports = [line for line in stdout.splitlines() if line.startswith("{")]
    assert 1 <= len(reports) <= 3
    runs = h.query(
        f"sqlite:///{tmp_path / '.mapsync' / 'state.db'}",
        "SELECT kind, status, written FROM mapsync_runs WHERE kind <> 'seed' ORDER BY id",
    )
    assert len(runs) == len(reports)
    assert all(r[1] == "success" and r[2] > 0 for r in runs)
    written = h.query(
        f"sqlite:///{tmp_path / '.mapsync' / 'state.db'}",
        "SELECT SUM(written) FROM mapsync_runs WHERE kind <> 'seed'",
    )
    assert written[0][0] == 3


def test_follow_rejects_bad_poll(tmp_path: Path, sqlite_database: Callable[[], str]) -> None:
    src, dst = sqlite_database(), sqlite_database()
    (tmp_path / "sheet.yaml").write_text(SHEET.format(src=src, dst=dst))
    result = h.mapsync("run", "sheet.yaml", "--follow", "--poll", "soon", cwd=tmp_path)
    assert result.returncode == 2
    assert "--poll" in result.stderr
    assert "Traceback" not in result.stderr


QUEUE_SHEET = """
version: 1
connections:
  src: {{url: "{src}"}}
  dst: {{url: "{dst}"}}
syncs:
  items:
    from: {{connection: src, table: items}}
    to: {{connection: dst, table: items}}
    key: {{from: id, to: id}}
    fields: {{name: name}}
    changes: {{method: queue}}
    deletes: {{policy: hard}}
"""


@pytest.mark.slow
def test_follow_wakes_on_postgres_notify(pg_database: Callable[[], str], tmp_path: Path) -> None:
    """With a 60 s poll, only the queue trigger's NOTIFY can bring a change over in seconds."""
    src, dst = pg_database(), pg_database()
    h.execute(src, "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50))")
    h.execute(dst, "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50))")
    (tmp_path / "sheet.yaml").write_text(QUEUE_SHEET.format(src=src, dst=dst))
    for command in ("triggers install", "seed"):
        result = h.mapsync(*command.split(), "sheet.yaml", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    h.execute(src, "INSERT INTO items VALUES (0, 'zero')")  # for the first pass
    proc = subprocess.Popen(
        [sys.executable, "-m", "mapsync", "run", "sheet.yaml", "--follow", "--poll", "60s"],
        cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # the first pass delivered row 0 (it claims no row queued after its start): from now on
        # only a notification (LISTEN began before the first pass) ends the 60 s poll early
        first = h.wait_for(lambda: h.query(dst, "SELECT COUNT(*) FROM items")[0][0] == 1, timeout=30)
        assert first, "the first pass never delivered"
        started = time.monotonic()
        h.execute(src, "INSERT INTO items VALUES (1, 'one'), (2, 'two'), (3, 'three')")
        arrived = h.wait_for(lambda: h.query(dst, "SELECT COUNT(*) FROM items")[0][0] == 4, timeout=15)
        if not arrived:
            proc.kill()
            raise AssertionError(f"row never arrived; follower said: {proc.communicate()[1][-3000:]}")
        assert time.monotonic() - started < 15
        quick = time.monotonic()
        h.execute(src, "DELETE FROM items WHERE id = 1")
        # (one of four: under the mass-delete guard's default ratio)
        assert h.wait_for(lambda: h.query(dst, "SELECT COUNT(*) FROM items")[0][0] == 3, timeout=15)
        assert time.monotonic() - quick < 15
        proc.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert time.monotonic() - stopping < 10, "SIGTERM must not wait for the 60 s poll to end"


def test_follow_backs_off_after_failed_runs(
    sqlite_database: Callable[[], str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every run refused by the mass-delete guard (the source emptied): the follower runs the
    failing sync again after 0.2 s, 0.4 s, 0.8 s … (not at every 20 ms poll, which wrote 142
    failed runs in 15 s), and at full pace again once a run succeeds. The follower's clock is a
    ManualClock: each poll moves it 20 ms, so 1.3 s of following takes no real waiting."""
    import logging
    import threading

    from mapsync import follow as follow_mod
    from mapsync.engine import Engine
    from mapsync.sheet import loader
    from mapsync.state.clock import ManualClock
    from mapsync.state.store import StateStore

    src, dst = sqlite_database(), sqlite_database()
    ts = h.TS[h.dialect(src)]
    h.execute(src, f"CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50), last_modified {ts})")
    h.execute(dst, "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50))")
    sheet = SHEET.format(src=src, dst=dst).replace("lag: 0s}", "lag: 0s, deletes_every: 0s}")
    (tmp_path / "sheet.yaml").write_text(sheet + "    deletes: {policy: hard}\n")
    h.execute(
        src, "INSERT INTO items VALUES (1, 'one', :ts)", params={"ts": _stamp(dt.timedelta(seconds=-1))}
    )
    assert h.mapsync("seed", "sheet.yaml", cwd=tmp_path).returncode == 0
    h.execute(src, "DELETE FROM items")

    loaded = loader.load(tmp_path / "sheet.yaml")
    store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=False)
    engine = Engine(loaded, store)
    clock = ManualClock()
    backoff = follow_mod.Backoff(dt.timedelta(milliseconds=200), dt.timedelta(seconds=1))
    state = f"sqlite:///{tmp_path / '.mapsync' / 'state.db'}"
    runs: list[str] = []
    real_run, called = engine.run, []

    def run(name: str, *args: Any, **kwargs: Any) -> Any:
        called.append(clock.monotonic())
        return real_run(name, *args, **kwargs)

    engine.run = run  # type: ignore[method-assign]

    def failed_runs() -> int:
        return int(h.query(state, "SELECT COUNT(*) FROM mapsync_runs WHERE status = 'failed'")[0][0])

    def follow(passes: int) -> int:
        return follow_mod.follow(
            engine,
            ["items"],
            poll=dt.timedelta(milliseconds=20),
            stop=threading.Event(),
            on_report=lambda r: runs.append(r.status),
            max_passes=passes,
            backoff=backoff,
            clock=clock,
        )

    try:
        with caplog.at_level(logging.INFO, logger="mapsync.follow"):
            start = clock.monotonic()
            # passes at 0, 0.02, …, 1.30 s: runs at 0, 0.2, 0.6 (each at the first pass at or after
            # its time; the next one ≥ 1.4 s): three failures
            assert follow(66) == 66
            assert clock.monotonic() - start == pytest.approx(1.3, abs=1e-4)
            assert clock.slept == pytest.approx([0.02] * 65)  # the poll between passes, nothing more
            assert failed_runs() == 3 and runs == ["failed"] * 3 and len(called) == 3
            gaps = [b - a for a, b in itertools.pairwise(called)]
            for gap, delay in zip(gaps, [0.2, 0.4], strict=True):
                assert delay - 1e-4 <= gap < delay + 0.02 + 1e-4, gaps  # the delay, then the next poll
            delays = [r.retry_in_s for r in caplog.records if r.getMessage() == "follow_backoff"]  # type: ignore[attr-defined]
            assert delays == [0.2, 0.4, 0.8]
            h.execute(src, "INSERT INTO items VALUES (1, 'one', :ts)", params={"ts": _stamp()})
            follow(15)  # to 1.58 s: the run due at 1.4 s succeeds, then one run at every pass
            assert "items" not in backoff.failures and failed_runs() == 3
            assert "failed" not in runs[3:] and h.query(dst, "SELECT COUNT(*) FROM items") == [(1,)]
            assert any(r.getMessage() == "follow_recovered" for r in caplog.records)
            before = len(called)
            follow(5)  # at full pace again: a run at every pass
            assert len(called) == before + 5
    finally:
        engine.close()
        store.close()


def test_follow_backs_off_after_an_outage_raised_before_the_run(
    sqlite_database: Callable[[], str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A source that is briefly away raises before the run can report (reading the catalog):
    the follower logs it, backs off and goes on; it delivers once the source is back."""
    import logging
    import threading

    from mapsync import errors
    from mapsync import follow as follow_mod
    from mapsync.engine import Engine
    from mapsync.sheet import loader
    from mapsync.state.clock import ManualClock
    from mapsync.state.store import StateStore

    src, dst = sqlite_database(), sqlite_database()
    ts = h.TS[h.dialect(src)]
    h.execute(src, f"CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50), last_modified {ts})")
    h.execute(dst, "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50))")
    (tmp_path / "sheet.yaml").write_text(SHEET.format(src=src, dst=dst))
    assert h.mapsync("seed", "sheet.yaml", cwd=tmp_path).returncode == 0
    h.execute(src, "INSERT INTO items VALUES (1, 'one', :ts)", params={"ts": _stamp()})

    loaded = loader.load(tmp_path / "sheet.yaml")
    store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=False)
    engine = Engine(loaded, store)
    real, outages = engine.parts, [2]

    def parts(name: str) -> Any:
        if outages[0]:
            outages[0] -= 1
            raise errors.TransientError("source erp: cannot connect: connection refused")
        return real(name)

    engine.parts = parts  # type: ignore[method-assign]
    clock = ManualClock()  # each poll moves it 20 ms: the backoff takes no real waiting
    backoff = follow_mod.Backoff(dt.timedelta(milliseconds=50), dt.timedelta(seconds=1))
    try:
        with caplog.at_level(logging.INFO, logger="mapsync.follow"):
            # passes every 20 ms: fails at 0 and ~0.06 s, delivers at ~0.16 s (the 50 + 100 ms backoff)
            passes = follow_mod.follow(
                engine,
                ["items"],
                poll=dt.timedelta(milliseconds=20),
                stop=threading.Event(),
                on_report=lambda r: None,
                max_passes=15,
                backoff=backoff,
                clock=clock,
            )
            assert passes == 15  # the outage did not end the follower
            assert h.query(dst, "SELECT COUNT(*) FROM items") == [(1,)]
            failures = [r for r in caplog.records if r.getMessage() == "follow_run_failed"]
            assert len(failures) == 2 and "connection refused" in failures[0].error  # type: ignore[attr-defined]
            assert [r.retry_in_s for r in caplog.records if r.getMessage() == "follow_backoff"] == [0.05, 0.1]  # type: ignore[attr-defined]
            assert "items" not in backoff.failures
    finally:
        engine.close()
        store.close()
