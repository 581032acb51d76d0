"""A transaction that commits late writes rows older than the stored watermark: the incremental
run passes them by (by design, with `lag: 0s`), and `mapsync run --overlap` finds, reports and
delivers them; a second overlap finds nothing."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mapsync.connectors.sql_source import parse_time
from mapsync.engine import Engine
from mapsync.sheet import loader
from mapsync.state.store import StateStore
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
    delivery: {{batch: 4}}
"""


def ago(**delta: float) -> str:
    """A naive UTC timestamp in the past (the test servers run in UTC, as SQLite's default does)."""
    moment = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(**delta)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


class Overlap:
    def __init__(self, src: str, dst: str, folder: Path) -> None:
        self.src, self.dst, self.folder = src, dst, folder
        ts = h.TS[h.dialect(src)]
        h.execute(src, f"CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50), last_modified {ts})")
        h.execute(dst, "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50))")
        h.install_write_counter(dst, "items")
        (folder / "sheet.yaml").write_text(SHEET.format(src=src, dst=dst))
        self.loaded = loader.load(folder / "sheet.yaml")
        self.store = StateStore.open(self.loaded.sheet.state.url, folder, create=True)
        self.engine = Engine(self.loaded, self.store)

    def close(self) -> None:
        self.engine.close()
        self.store.close()

    def add(self, rows: list[tuple[int, str, str]]) -> None:
        h.execute(
            self.src,
            "INSERT INTO items (id, name, last_modified) VALUES (:i, :n, :t)",
            params=[{"i": i, "n": n, "t": t} for i, n, t in rows],
        )

    def run(self, kind: str = "run", window: dt.timedelta | None = None) -> dict[str, int]:
        report = self.engine.run("items", kind, window=window)
        assert report.status == "success", report
        return dataclasses.asdict(report.counts)

    def cli(self, *args: str) -> dict[str, Any]:
        done = h.mapsync(*args, "--json", cwd=self.folder)
        assert done.returncode == 0, done.stdout + done.stderr
        (report,) = json.loads(done.stdout)
        assert report["status"] == "success", report
        return report  # type: ignore[no-any-return]

    def watermark(self) -> dt.datetime:
        return parse_time(self.store.cursor("items", "watermark")).replace(tzinfo=None)

    def dest(self) -> dict[int, str]:
        return {int(i): n for i, n in h.query(self.dst, "SELECT id, name FROM items")}

    def source(self) -> dict[int, str]:
        return {int(i): n for i, n in h.query(self.src, "SELECT id, name FROM items")}


@pytest.fixture
def overlap(database: Callable[[], str], tmp_path: Path) -> Iterator[Overlap]:
    o = Overlap(database(), database(), tmp_path)
    yield o
    o.close()


def test_late_commit_is_missed_by_the_run_and_found_by_overlap(overlap: Overlap) -> None:
    o = overlap
    o.add([(i, f"early{i}", ago(hours=2)) for i in range(1, 6)])
    seeded = o.run("seed")
    assert seeded["written"] == 5
    stored = o.watermark()  # the source's clock at the seed (lag 0s)
    assert stored > parse_time(ago(minutes=10))

    # a transaction that began an hour ago commits now: its rows are older than the watermark
    late = [(10, "late-a", ago(hours=1)), (11, "late-b", ago(hours=1)), (12, "late-c", ago(minutes=30))]
    o.add(late)
    o.add([(20, "too old for the window", ago(hours=48))])
    counts = o.run()
    assert counts["read"] == 0 and counts["written"] == 0  # 0 of the 3 planted rows
    assert set(o.dest()) == {1, 2, 3, 4, 5}
    assert h.writes(o.dst) == 5
    assert o.watermark() == stored

    report = o.cli("run", "sheet.yaml", "--overlap", "--window", "24h")
    assert report["kind"] == "overlap"
    counts = report["counts"]
    assert counts["missed"] == 3
    assert counts["written"] == 3
    assert counts["read"] == 8 and counts["skipped"] == 5  # the seeded rows in the window: not missed
    assert o.dest() == {**{i: f"early{i}" for i in range(1, 6)}, **{i: n for i, n, _ in late}}
    assert h.writes(o.dst) == 8
    assert o.watermark() == stored  # an overlap never moves the watermark back (or forward)

    again = o.run("overlap", window=dt.timedelta(hours=24))
    assert again["missed"] == 0 and again["written"] == 0 and again["read"] == 8
    assert h.writes(o.dst) == 8
    assert o.run()["written"] == 0

    # a wider window reaches the 48 h old row
    wide = o.cli("run", "sheet.yaml", "--overlap", "--window", "3d")["counts"]
    assert wide["missed"] == 1 and wide["written"] == 1
    assert o.dest() == o.source()
    assert h.writes(o.dst) == 9


def test_late_committed_update_of_a_delivered_row_counts_as_missed(overlap: Overlap) -> None:
    o = overlap
    o.add([(i, f"v{i}", ago(hours=3)) for i in range(1, 4)])
    o.run("seed")
    h.execute(
        o.src,
        "UPDATE items SET name = 'late edit', last_modified = :t WHERE id = 2",
        params={"t": ago(hours=1)},
    )
    assert o.run()["written"] == 0
    assert o.dest()[2] == "v2"
    counts = o.run("overlap", window=dt.timedelta(hours=24))
    assert counts["missed"] == 1 and counts["written"] == 1 and counts["skipped"] == 2
    assert o.dest() == o.source()
    assert h.writes(o.dst) == 4
    again = o.run("overlap", window=dt.timedelta(hours=24))
    assert again["missed"] == 0 and again["written"] == 0
