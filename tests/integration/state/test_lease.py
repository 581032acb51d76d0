"""Run leases (RELIABILITY.md §3.2 D1, D5, A10): one run of a sync at a time.

A second concurrent run is refused (exit 1, naming the holder's pid and host) and leaves no
trace; a holder that died on this host is taken over at once; one on another host only once its
lease expired; and a holder whose lease was taken over can no longer commit (fencing token).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mapsync import errors
from mapsync.engine import Engine
from mapsync.sheet import loader
from mapsync.state import lease as leases
from mapsync.state import schema
from mapsync.state.store import Counts, StateStore, stamp, utcnow
from tests import helpers as h

SYNC = "items"
N = 30
BATCH = 10
CHANGED = range(1, N + 1, 2)  # 15 rows changed after the seed
BASE = dt.datetime(2024, 3, 1, 12, 0, 0)  # noqa: DTZ001  (naive UTC, like the columns)
OTHER_HOST = "elsewhere.invalid"


# --------------------------------------------------------------------------- the world


def _ts(d: str, moment: dt.datetime) -> Any:
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f") if d == "sqlite" else moment


def _build(src: str, dst: str) -> None:
    d = h.dialect(src)
    h.execute(
        src,
        f"CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(60) NOT NULL, updated_at {h.TS[d]} NOT NULL)",
    )
    h.execute(
        src,
        "INSERT INTO items (id, name, updated_at) VALUES (:id, :name, :ts)",
        params=[
            {"id": i, "name": f"item {i}", "ts": _ts(d, BASE + dt.timedelta(seconds=i))}
            for i in range(1, N + 1)
        ],
    )
    h.execute(
        dst,
        "CREATE TABLE items_dst (item_id INTEGER PRIMARY KEY, title VARCHAR(60) NOT NULL, "
        f"changed_at {h.TS[h.dialect(dst)]} NOT NULL)",
    )
    h.install_write_counter(dst, "items_dst")


def _change_rows(src: str) -> None:
    d = h.dialect(src)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    h.execute(
        src,
        "UPDATE items SET name = :name, updated_at = :ts WHERE id = :id",
        params=[
            {"id": i, "name": f"item {i} v2", "ts": _ts(d, now + dt.timedelta(microseconds=n))}
            for n, i in enumerate(CHANGED)
        ],
    )


def _sheet(folder: Path, src: str, dst: str) -> Path:
    sheet = {
        "version": 1,
        "connections": {"erp": {"url": src, "timezone": "UTC"}, "shop": {"url": dst, "timezone": "UTC"}},
        "syncs": {
            SYNC: {
                "from": {"connection": "erp", "table": "items"},
                "to": {"connection": "shop", "table": "items_dst"},
                "key": {"from": "id", "to": "item_id"},
                "fields": {"title": "name", "changed_at": "updated_at"},
                "changes": {"method": "watermark", "column": "updated_at", "lag": "0s"},
                "delivery": {"batch": BATCH},
            }
        },
    }
    path = folder / "sheet.yaml"
    path.write_text(json.dumps(sheet, indent=2), encoding="utf-8")  # JSON is YAML
    return path


@contextmanager
def _store(sheet: Path, create: bool = False) -> Iterator[StateStore]:
    loaded = loader.load(sheet)
    store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=create)
    try:
        yield store
    finally:
        store.close()


def _clean_seed(sheet: Path) -> None:
    """Seed in this process (setup), then change rows so that the next run has work to do."""
    loaded = loader.load(sheet)
    with _store(sheet, create=True) as store:
        engine = Engine(loaded, store)
        try:
            assert engine.run(SYNC, "seed").status == "success"
        finally:
            engine.close()


def _setup(make: Callable[[], str], folder: Path) -> tuple[str, str, Path]:
    src, dst = make(), make()
    _build(src, dst)
    sheet = _sheet(folder, src, dst)
    _clean_seed(sheet)
    assert h.writes(dst) == N
    _change_rows(src)
    return src, dst, sheet


def _converged(src: str, dst: str) -> bool:
    return sorted(h.query(src, "SELECT id, name, updated_at FROM items")) == sorted(
        h.query(dst, "SELECT item_id, title, changed_at FROM items_dst")
    )


def _state(folder: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(folder / ".mapsync" / "state.db")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _runs(folder: Path) -> list[tuple[Any, ...]]:
    return _state(folder, "SELECT id, kind, status FROM mapsync_runs ORDER BY id")


def _lease_row(folder: Path) -> list[tuple[Any, ...]]:
    return _state(folder, "SELECT token, host, pid, expires_at FROM mapsync_leases")


def _spawn(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`python -m mapsync ARGS` in the background (as `h.mapsync`, but we need its pid)."""
    full_env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "mapsync", *args],
        cwd=cwd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def _refused_by(proc: subprocess.CompletedProcess[str], pid: int, host: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    message = _one_line(proc.stderr)
    assert f"sync {SYNC} is running in pid {pid} on {host}" in message, message


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --------------------------------------------------------------------------- D1: one run at a time


@contextmanager
def _write_lock(url: str, table: str) -> Iterator[None]:
    """Block writes to `table` (reads still pass) until the block ends."""
    d = h.dialect(url)
    if d == "sqlite":
        lite = sqlite3.connect(sa.make_url(url).database or "", isolation_level=None)
        lite.execute("BEGIN IMMEDIATE")  # the RESERVED lock: readers pass, writers wait
        try:
            yield
        finally:
            lite.execute("ROLLBACK")
            lite.close()
        return
    engine = h.engine(url)
    try:
        with engine.connect() as conn:
            if d == "postgresql":
                conn.execute(sa.text(f"LOCK TABLE {table} IN EXCLUSIVE MODE"))  # ACCESS SHARE passes
                try:
                    yield
                finally:
                    conn.rollback()
            else:
                conn.execute(sa.text(f"LOCK TABLES {table} READ"))
                try:
                    yield
                finally:
                    conn.execute(sa.text("UNLOCK TABLES"))
    finally:
        engine.dispose()


def test_second_concurrent_run_is_refused_while_the_first_holds_the_lease(
    database: Callable[[], str], tmp_path: Path
) -> None:
    src, dst, sheet = _setup(database, tmp_path)
    with _write_lock(dst, "items_dst"):
        first = _spawn("run", str(sheet), "--sync", SYNC, cwd=tmp_path)
        try:
            # wait (bounded) until the first run holds the lease; it cannot finish: its write waits
            deadline = time.monotonic() + 60
            while not any(row[2] == first.pid for row in _lease_row(tmp_path)):
                assert first.poll() is None, first.communicate()
                assert time.monotonic() < deadline, "the first run never took the lease"
                time.sleep(0.05)
            ((token, host, pid, _),) = _lease_row(tmp_path)
            assert (host, pid) == (socket.gethostname(), first.pid)

            second = h.mapsync("run", str(sheet), "--sync", SYNC, cwd=tmp_path)
            _refused_by(second, first.pid, socket.gethostname())
            assert first.poll() is None, "the first run must still have held the lease"
            assert _lease_row(tmp_path)[0][0] == token, "the refused run must not touch the lease"
        except BaseException:
            first.kill()
            first.wait()
            raise
    out, err = first.communicate(timeout=180)
    assert first.returncode == 0, (out, err)
    assert _converged(src, dst)
    # the refused run wrote nothing and is recorded as failed, class `lease`; the lease is free again
    assert _runs(tmp_path) == [(1, "seed", "success"), (2, "run", "success"), (3, "run", "failed")]
    assert _state(tmp_path, "SELECT failure_class FROM mapsync_runs WHERE id = 3") == [("lease",)]
    assert h.writes(dst) == N + len(CHANGED)
    assert _lease_row(tmp_path) == []


def test_run_is_refused_while_a_live_process_of_this_host_holds_the_lease(
    sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    src, dst, sheet = _setup(sqlite_database, tmp_path)
    with _store(sheet) as store:
        mine = leases.acquire(store, SYNC, dt.timedelta(minutes=10))  # held by this (live) test process
        try:
            refused = h.mapsync("run", str(sheet), "--sync", SYNC, cwd=tmp_path)
            _refused_by(refused, os.getpid(), socket.gethostname())
            assert _lease_row(tmp_path)[0][0] == mine.token
            assert h.writes(dst) == N and not _converged(src, dst)
            assert _runs(tmp_path) == [(1, "seed", "success"), (2, "run", "failed")]  # class lease
        finally:
            leases.release(store, mine)
    done = h.mapsync("run", str(sheet), "--sync", SYNC, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert _converged(src, dst)
    assert _runs(tmp_path) == [(1, "seed", "success"), (2, "run", "failed"), (3, "run", "success")]


# --------------------------------------------------------------------------- takeovers


def test_lease_of_a_crashed_process_of_this_host_is_taken_over_at_once(
    sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    src, dst, sheet = _setup(sqlite_database, tmp_path)
    marker = tmp_path / "crash.marker"
    crashed = _spawn(
        "run",
        str(sheet),
        "--sync",
        SYNC,
        cwd=tmp_path,
        env={"MAPSYNC_CRASH_AT": "after_write:1", "MAPSYNC_CRASH_MARKER": str(marker)},
    )
    crashed.communicate(timeout=120)
    assert crashed.returncode == -9 and marker.read_text(encoding="utf-8") == "after_write:1\n"
    ((_, host, pid, expires_at),) = _lease_row(tmp_path)
    assert (host, pid) == (socket.gethostname(), crashed.pid)
    assert expires_at > stamp(), "not expired: only the dead pid allows the takeover"
    assert _runs(tmp_path) == [(1, "seed", "success"), (2, "run", "running")]

    rerun = h.mapsync("run", str(sheet), "--sync", SYNC, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert _converged(src, dst)
    assert _runs(tmp_path) == [(1, "seed", "success"), (2, "run", "failed"), (3, "run", "success")]
    ((message,),) = _state(tmp_path, "SELECT message FROM mapsync_runs WHERE id = 2")
    assert "died" in message
    assert _lease_row(tmp_path) == []


def _plant_lease(sheet: Path, host: str, pid: int, expires: dt.datetime) -> tuple[str, int]:
    """A lease row of another process, and the run it was doing."""
    with _store(sheet) as store, store.engine.begin() as conn:
        conn.execute(
            sa.insert(schema.leases).values(
                sync=SYNC,
                token="planted",
                host=host,
                pid=pid,
                acquired_at=stamp(expires - dt.timedelta(minutes=10)),
                expires_at=stamp(expires),
            )
        )
    with _store(sheet) as store:
        run_id = store.start_run(SYNC, "run", "cli", "planted")
    return "planted", run_id


def test_expired_lease_of_another_host_is_taken_over(
    sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    src, dst, sheet = _setup(sqlite_database, tmp_path)
    # pid: this test process, alive here; irrelevant for another host: only the expiry counts
    _, stale_run = _plant_lease(sheet, OTHER_HOST, os.getpid(), utcnow() - dt.timedelta(seconds=1))
    done = h.mapsync("run", str(sheet), "--sync", SYNC, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert _converged(src, dst)
    assert _runs(tmp_path) == [
        (1, "seed", "success"),
        (stale_run, "run", "failed"),
        (stale_run + 1, "run", "success"),
    ]
    assert _lease_row(tmp_path) == []


def test_unexpired_lease_of_another_host_is_respected_even_if_its_pid_is_not_running_here(
    sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    src, dst, sheet = _setup(sqlite_database, tmp_path)
    pid = _dead_pid()  # a pid no process here has: another host's pids mean nothing here
    _, run_id = _plant_lease(sheet, OTHER_HOST, pid, utcnow() + dt.timedelta(minutes=5))
    refused = h.mapsync("run", str(sheet), "--sync", SYNC, cwd=tmp_path)
    _refused_by(refused, pid, OTHER_HOST)
    assert [r[:3] for r in _lease_row(tmp_path)] == [("planted", OTHER_HOST, pid)]
    assert _runs(tmp_path) == [
        (1, "seed", "success"),
        (run_id, "run", "running"),
        (run_id + 1, "run", "failed"),
    ]
    assert h.writes(dst) == N and not _converged(src, dst)


# --------------------------------------------------------------------------- A10: fencing


def test_a_holder_whose_lease_was_taken_over_can_neither_commit_nor_release_it(
    sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    _src, _dst, sheet = _setup(sqlite_database, tmp_path)
    ttl = dt.timedelta(minutes=10)
    with _store(sheet) as store:
        old = leases.acquire(store, SYNC, ttl)
        old_run = store.start_run(SYNC, "run", "cli", old.token)
        with pytest.raises(errors.LeaseHeld):
            leases.acquire(store, SYNC, ttl)  # held by a live local pid, not expired
        # the old holder pauses past its TTL (SIGSTOP), and another worker takes over
        with store.engine.begin() as conn:
            conn.execute(
                sa.update(schema.leases).values(expires_at=stamp(utcnow() - dt.timedelta(seconds=1)))
            )
        new = leases.acquire(store, SYNC, ttl)
        assert new.token != old.token
        assert store.run(old_run)["status"] == "failed"

        before = store.cursors(SYNC)
        with pytest.raises(errors.LeaseLost):
            store.commit(
                sync=SYNC,
                token=old.token,
                run_id=old_run,
                delivered=[],
                rejected=[],
                cursors={"watermark": "2999-01-01 00:00:00.000000"},
                counts=Counts(read=1),
                lease_ttl=ttl,
            )
        assert store.cursors(SYNC) == before, "a fenced commit must change nothing"
        leases.release(store, old)  # the zombie's release must not free the new holder's lease
        assert [r[0] for r in _lease_row(tmp_path)] == [new.token]
        leases.release(store, new)
    assert _lease_row(tmp_path) == []
