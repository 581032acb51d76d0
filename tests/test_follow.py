"""`mapsync run --follow`: a real process keeps delivering new rows until SIGTERM, stops
cleanly (exit 0, nothing half-committed), and idle polls leave no runs in the history."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

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


def _wait_for(check: Callable[[], bool], timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.05)
    return False


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
            assert _wait_for(lambda i=i: h.query(dst, "SELECT COUNT(*) FROM items")[0][0] == i), (
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
    proc = subprocess.Popen(
        [sys.executable, "-m", "mapsync", "run", "sheet.yaml", "--follow", "--poll", "60s"],
        cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(3)  # imports, the first pass, then asleep on the 60 s poll
        started = time.monotonic()
        h.execute(src, "INSERT INTO items VALUES (1, 'one'), (2, 'two'), (3, 'three')")
        arrived = _wait_for(lambda: h.query(dst, "SELECT COUNT(*) FROM items")[0][0] == 3, timeout=15)
        if not arrived:
            proc.kill()
            raise AssertionError(f"row never arrived; follower said: {proc.communicate()[1][-3000:]}")
        assert time.monotonic() - started < 15
        quick = time.monotonic()
        h.execute(src, "DELETE FROM items WHERE id = 1")
        # (one of three: under the mass-delete guard's default ratio)
        assert _wait_for(lambda: h.query(dst, "SELECT COUNT(*) FROM items")[0][0] == 2, timeout=15)
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
