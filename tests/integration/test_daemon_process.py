"""`mapsync daemon` as a real process: SIGTERM in the middle of a run stops it after the batch
being committed (exit 0, the run `stopped`), and the restart re-sends nothing committed; a
second signal exits at once, and the restart loses nothing."""

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
    schedule: {{every: 1s}}
"""


def _start(tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mapsync", "daemon", "sheet.yaml", "--poll", "200ms", "--json"],
        cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _runs(tmp_path: Path) -> list[tuple[str, str, int]]:
    return [
        (r[0], r[1], r[2])
        for r in h.query(
            f"sqlite:///{tmp_path / '.mapsync' / 'state.db'}",
            "SELECT trigger, status, written FROM mapsync_runs WHERE kind <> 'seed' ORDER BY id",
        )
    ]


def _slow_world(tmp_path: Path, src: str, dst: str, per_row: float, rows: int) -> Callable[[], int]:
    """A seeded sync of `rows` new source rows into a PostgreSQL table whose every row written
    takes `per_row` seconds (psycopg sends a batch row by row); returns the destination's count."""
    h.execute(src, "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50), last_modified TEXT)")
    h.execute(dst, "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50))")
    h.execute(
        dst,
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN PERFORM pg_sleep({per_row}); RETURN NULL; END $$",
    )
    h.execute(
        dst, "CREATE TRIGGER slow AFTER INSERT OR UPDATE ON items FOR EACH STATEMENT EXECUTE FUNCTION slow()"
    )
    (tmp_path / "sheet.yaml").write_text(SHEET.format(src=src, dst=dst))
    assert h.mapsync("seed", "sheet.yaml", cwd=tmp_path).returncode == 0
    ts = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")  # after the seed's watermark
    for i in range(rows):
        h.execute(src, "INSERT INTO items VALUES (:id, :n, :ts)", params={"id": i, "n": f"n{i}", "ts": ts})
    return lambda: int(h.query(dst, "SELECT COUNT(*) FROM items")[0][0])


@pytest.mark.slow
def test_sigterm_stops_after_the_batch_and_the_restart_resends_nothing(
    tmp_path: Path, sqlite_database: Callable[[], str], pg_database: Callable[[], str]
) -> None:
    src, dst = sqlite_database(), pg_database()
    count = _slow_world(tmp_path, src, dst, 0.04, 80)  # a run of 8 batches of 10: about 3 s

    proc = _start(tmp_path)
    try:
        assert h.wait_for(lambda: count() >= 10), proc.stderr
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    first = [r for r in _runs(tmp_path) if r[1] != "skipped"]  # slots due during the 3 s run: skipped
    assert first[-1][1] == "stopped", first
    assert 0 < count() < 80

    proc = _start(tmp_path)
    try:
        assert h.wait_for(lambda: count() == 80), proc.stderr
        # a SIGHUP with a broken sheet: refused, the daemon goes on with the sheet it has
        good = (tmp_path / "sheet.yaml").read_text()
        (tmp_path / "sheet.yaml").write_text(good.replace("key: {from: id, to: id}", "key: {from: id}"))
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert proc.poll() is None
        # and stop it again once its run has finished
        assert h.wait_for(lambda: all(r[1] != "running" for r in _runs(tmp_path)))
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "daemon_reload_refused" in stderr and "key" in stderr  # the log says why
    runs = _runs(tmp_path)
    assert sum(r[2] for r in runs) == 80, runs  # every row once: nothing committed was re-sent
    assert h.query(dst, "SELECT COUNT(DISTINCT name) FROM items")[0][0] == 80


@pytest.mark.slow
def test_a_second_signal_exits_at_once_and_the_restart_loses_nothing(
    tmp_path: Path, sqlite_database: Callable[[], str], pg_database: Callable[[], str]
) -> None:
    src, dst = sqlite_database(), pg_database()
    count = _slow_world(tmp_path, src, dst, 0.5, 5)  # one batch of 5 rows: 2.5 s
    proc = _start(tmp_path)
    try:
        assert h.wait_for(lambda: any(r[1] == "running" for r in _runs(tmp_path)))
        time.sleep(0.3)  # inside the batch's write
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        assert time.monotonic() - started < 2
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    h.execute(dst, "DROP TRIGGER slow ON items")
    proc = _start(tmp_path)
    try:
        assert h.wait_for(lambda: count() == 5), proc.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_a_sheet_without_schedules_is_refused_with_a_clear_message(
    tmp_path: Path, sqlite_database: Callable[[], str]
) -> None:
    src, dst = sqlite_database(), sqlite_database()
    (tmp_path / "sheet.yaml").write_text(
        SHEET.format(src=src, dst=dst).replace("    schedule: {every: 1s}\n", "")
    )
    result = h.mapsync("daemon", "sheet.yaml", cwd=tmp_path, process=False)
    assert result.returncode == 2
    assert "no sync to run" in result.stderr and "schedule:" in result.stderr
    assert "Traceback" not in result.stderr
