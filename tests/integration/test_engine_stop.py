"""A graceful stop between batches (`Engine(stop=…)`, the daemon's SIGTERM): a seed and a
watermark run of 5 batches into SQLite and PostgreSQL destinations, the stop asked for after
batch 2. The run ends `stopped` with 2 batches committed, the plan's end not run (the seed stays
`running`, the watermark is not moved past what was committed), the lease released; the next run
delivers the rest and nothing is written twice."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mapsync.engine import Engine
from mapsync.records import RunStatus
from mapsync.sheet import loader
from mapsync.state.store import Counts, StateStore
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
    changes: {{method: watermark, column: last_modified, lag: {lag}}}
    delivery: {{batch: 10}}
"""
N = 50  # 5 batches of 10


class StopAfter:
    """An observer that asks for the stop once `n` batches were committed."""

    def __init__(self, stop: threading.Event, n: int) -> None:
        self.stop, self.n, self.batches = stop, n, 0

    def started(self, sync: str, kind: str, total: int | None) -> None:
        return None

    def batch(self, sync: str, counts: Counts) -> None:
        self.batches += 1
        if self.batches == self.n:
            self.stop.set()


@pytest.fixture(params=["sqlite", "postgresql"])
def dst(request: pytest.FixtureRequest) -> str:
    factory: Callable[[], str] = request.getfixturevalue(
        f"{'pg' if request.param == 'postgresql' else 'sqlite'}_database"
    )
    return factory()


def _world(src: str, dst: str, folder: Path, lag: str) -> None:
    (folder / "sheet.yaml").write_text(SHEET.format(src=src, dst=dst, lag=lag))


def _rows(src: str, ids: range) -> None:
    h.execute(
        src,
        "INSERT INTO items (id, name, last_modified) VALUES (:i, :n, :t)",
        params=[{"i": i, "n": f"n{i}", "t": f"2026-01-01 10:{i // 60:02d}:{i % 60:02d}"} for i in ids],
    )


def _engine(
    folder: Path, stop: threading.Event | None = None, observer: Any = None
) -> tuple[Engine, StateStore]:
    loaded = loader.load(folder / "sheet.yaml")
    store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)
    return Engine(loaded, store, observer, stop=stop), store


def _setup(sqlite_database: Callable[[], str], dst: str, tmp_path: Path) -> str:
    src = sqlite_database()
    h.execute(
        src, f"CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50), last_modified {h.TS['sqlite']})"
    )
    h.execute(dst, "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50))")
    h.install_write_counter(dst, "items")
    return src


def test_a_stopped_seed_resumes_where_it_stopped(
    sqlite_database: Callable[[], str], dst: str, tmp_path: Path
) -> None:
    src = _setup(sqlite_database, dst, tmp_path)
    _rows(src, range(1, N + 1))
    _world(src, dst, tmp_path, "0s")
    stop = threading.Event()
    engine, store = _engine(tmp_path, stop, StopAfter(stop, 2))
    try:
        report = engine.run("items", "seed")
        assert report.status == RunStatus.STOPPED and not report.ok
        assert (
            report.message
            == "stopped by a shutdown request after 2 batch(es); the next run goes on from there"
        )
        (row,) = store.history.runs("items", 1)
        assert (row["status"], row["message"], row["written"]) == ("stopped", report.message, 20)
        assert store.cursors("items")["seed"]["status"] == "running"  # the plan's end did not run
        assert store.ledger_count("items") == 20 and h.writes(dst) == 20
        assert store.history.last_run("items")["status"] == "stopped"
        # the lease is released: another worker takes it at once
        store.leases.release(store.leases.acquire("items", engine.sheet.state.lease_ttl))
        stop.clear()
        rest = engine.run("items", "seed")  # resumes the seed after its last committed batch
        assert rest.status == RunStatus.SUCCESS and rest.counts.written == N - 20
        assert store.cursors("items")["seed"]["status"] == "done"
        assert store.ledger_count("items") == N and h.writes(dst) == N  # nothing written twice
        assert len(h.query(dst, "SELECT id FROM items")) == N
    finally:
        engine.close()
        store.close()


def test_a_stopped_watermark_run_goes_on_from_its_last_batch(
    sqlite_database: Callable[[], str], dst: str, tmp_path: Path
) -> None:
    src = _setup(sqlite_database, dst, tmp_path)
    _world(src, dst, tmp_path, "400d")  # seed the empty table: the watermark lies before the rows
    engine, store = _engine(tmp_path)
    assert engine.run("items", "seed").ok
    engine.close()
    store.close()
    _world(src, dst, tmp_path, "0s")
    _rows(src, range(1, N + 1))
    stop = threading.Event()
    engine, store = _engine(tmp_path, stop, StopAfter(stop, 2))
    try:
        before = store.cursors("items")["watermark"]
        report = engine.run("items", "run")
        assert report.status == RunStatus.STOPPED and report.counts.written == 20
        cursors = store.cursors("items")
        assert cursors["watermark"] == before and cursors["position"]  # resumed from `position`
        assert store.ledger_count("items") == 20 and h.writes(dst) == 20
        stop.clear()
        rest = engine.run("items", "run")
        assert rest.status == RunStatus.SUCCESS and rest.counts.written == N - 20
        assert store.ledger_count("items") == N and h.writes(dst) == N  # nothing written twice
        assert store.cursors("items")["watermark"] != before
    finally:
        engine.close()
        store.close()


def test_a_stop_before_the_first_batch_reads_nothing(
    sqlite_database: Callable[[], str], dst: str, tmp_path: Path
) -> None:
    src = _setup(sqlite_database, dst, tmp_path)
    _rows(src, range(1, 11))
    _world(src, dst, tmp_path, "0s")
    stop = threading.Event()
    stop.set()
    engine, store = _engine(tmp_path, stop)
    try:
        report = engine.run("items", "seed")
        assert report.status == RunStatus.STOPPED and report.counts.read == 0
        assert "after 0 batch(es)" in (report.message or "")
        assert store.cursors("items") == {} and h.writes(dst) == 0
    finally:
        engine.close()
        store.close()


def test_a_stopped_follow_pass_that_changed_nothing_leaves_no_trace(
    sqlite_database: Callable[[], str], dst: str, tmp_path: Path
) -> None:
    """Follow mode (keep_empty=False): a pass stopped after batches that only re-read unchanged
    rows leaves no run and puts its cursors back; the next pass reads them again and skips them."""
    src = _setup(sqlite_database, dst, tmp_path)
    _world(src, dst, tmp_path, "400d")
    engine, store = _engine(tmp_path)
    assert engine.run("items", "seed").ok
    engine.close()
    store.close()
    _world(src, dst, tmp_path, "0s")
    _rows(src, range(1, N + 1))
    engine, store = _engine(tmp_path)
    try:
        assert engine.run("items", "overlap", window=dt.timedelta(days=400)).counts.written == N
    finally:
        engine.close()
        store.close()
    stop = threading.Event()
    engine, store = _engine(tmp_path, stop, StopAfter(stop, 2))
    try:
        before, runs = store.cursors("items"), len(store.history.runs("items", 100))
        report = engine.run("items", "overlap", window=dt.timedelta(days=400), keep_empty=False)
        assert report.status == RunStatus.STOPPED and report.counts.skipped == 20
        assert report.run_id is None and len(store.history.runs("items", 100)) == runs
        assert store.cursors("items") == before  # `position` went back
        assert h.writes(dst) == N  # nothing written again
    finally:
        engine.close()
        store.close()
