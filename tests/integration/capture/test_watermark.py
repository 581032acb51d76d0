"""Watermark capture: a tie group larger than a batch, kill -9 between batches, rows at the
stored timestamp, on every backend; string keys under a MariaDB `_ci` collation; SQLite text
timestamps with and without fractional seconds.

Each scenario seeds an empty source with a large `lag`, so the seed's cursor (source clock
minus lag) lies before the fixed past timestamp `T` the rows are then written at; later runs use
`lag: 0s`. After a run the stored watermark is `T`, the largest timestamp read.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from mapsync.connectors.sql_source import parse_time
from mapsync.engine import Engine
from mapsync.sheet import loader
from mapsync.state.store import StateStore
from tests import helpers as h

T = "2026-01-01 10:00:00"
T_TIME = dt.datetime(2026, 1, 1, 10, 0, 0)  # noqa: DTZ001  (naive, as the columns are)

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


class Sync:
    """One source table, one destination table, one sheet and its state.

    Runs go through an in-process engine kept for the test (reflection cached, no interpreter
    start-up); a killed run, and some resumes after one, run `python -m mapsync` as a real
    process, SIGKILLed at a named crash point.
    """

    def __init__(self, src: str, dst: str, folder: Path, key_type: str = "INTEGER") -> None:
        self.src, self.dst, self.folder = src, dst, folder
        self._engine: tuple[Engine, StateStore] | None = None
        ts = h.TS[h.dialect(src)]
        h.execute(
            src, f"CREATE TABLE items (id {key_type} PRIMARY KEY, name VARCHAR(50), last_modified {ts})"
        )
        h.execute(dst, f"CREATE TABLE items (id {key_type} PRIMARY KEY, name VARCHAR(50))")
        h.install_write_counter(dst, "items")
        # seed the empty table with a cursor far before T, then run with no lag
        self.sheet(lag="400d")
        self.engine("seed")
        self.close()
        self.sheet(lag="0s")

    def sheet(self, lag: str) -> None:
        (self.folder / "sheet.yaml").write_text(SHEET.format(src=self.src, dst=self.dst, lag=lag))

    def close(self) -> None:
        if self._engine is not None:
            engine, store = self._engine
            engine.close()
            store.close()
            self._engine = None

    def cli(self, command: str, *args: str) -> dict[str, Any]:
        """`mapsync COMMAND sheet.yaml ARGS --json` as a real process; its one report."""
        done = h.mapsync(command, "sheet.yaml", *args, "--json", cwd=self.folder)
        assert done.returncode == 0, done.stdout + done.stderr
        (report,) = json.loads(done.stdout)
        assert report["status"] == "success", report
        return report  # type: ignore[no-any-return]

    def engine(self, kind: str, **kwargs: Any) -> dict[str, int]:
        """The same run in this process: its counts."""
        if self._engine is None:
            loaded = loader.load(self.folder / "sheet.yaml")
            store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=kind == "seed")
            self._engine = (Engine(loaded, store), store)
        report = self._engine[0].run("items", kind, **kwargs)
        assert report.status == "success", report
        return dataclasses.asdict(report.counts)

    def run(self, cli: bool = False) -> dict[str, int]:
        return self.cli("run")["counts"] if cli else self.engine("run")

    def killed_run(self, at: str) -> None:
        marker = self.folder / "crash.marker"
        marker.unlink(missing_ok=True)
        done = h.mapsync(
            "run",
            "sheet.yaml",
            cwd=self.folder,
            env={"MAPSYNC_CRASH_AT": at, "MAPSYNC_CRASH_MARKER": str(marker)},
            process=False,  # the crash point in-process (mapsync.crash); the crash matrix kills for real
        )
        assert done.returncode == -9, (done.returncode, done.stdout + done.stderr)
        assert marker.read_text().split() == [at]  # the crash fired where it was asked to

    def add(self, rows: Sequence[tuple[Any, str, str]]) -> None:
        h.execute(
            self.src,
            "INSERT INTO items (id, name, last_modified) VALUES (:i, :n, :t)",
            params=[{"i": i, "n": n, "t": t} for i, n, t in rows],
        )

    def cursors(self) -> dict[str, Any]:
        store = StateStore.open("sqlite:///.mapsync/state.db", self.folder, create=False)
        try:
            return store.cursors("items")
        finally:
            store.close()

    def ledger_keys(self) -> int:
        store = StateStore.open("sqlite:///.mapsync/state.db", self.folder, create=False)
        try:
            return store.ledger_count("items")
        finally:
            store.close()

    def source(self) -> dict[Any, str]:
        return {i: n for i, n in h.query(self.src, "SELECT id, name FROM items")}

    def dest(self) -> dict[Any, str]:
        return {i: n for i, n in h.query(self.dst, "SELECT id, name FROM items")}

    def writes(self) -> int:
        return h.writes(self.dst)


@pytest.fixture
def make_sync(tmp_path: Path) -> Iterator[Callable[..., Sync]]:
    made: list[Sync] = []

    def make(src: str, dst: str, key_type: str = "INTEGER") -> Sync:
        made.append(Sync(src, dst, tmp_path, key_type))
        return made[-1]

    yield make
    for sync in made:
        sync.close()


def the_same_instant(a: Any, b: Any) -> bool:
    return parse_time(a).replace(tzinfo=None) == parse_time(b).replace(tzinfo=None)


# --------------------------------------------------------------------------- every backend


@pytest.mark.parametrize("crash", ["after_commit:1", "after_write:2"])
def test_tie_group_larger_than_a_batch_survives_kill_9(
    database: Callable[[], str], make_sync: Callable[..., Sync], crash: str
) -> None:
    sync = make_sync(database(), database())
    assert sync.cursors()["watermark"] is not None
    assert parse_time(sync.cursors()["watermark"]).replace(tzinfo=None) < T_TIME
    ids = list(range(1, 26))
    sync.add([(i, f"n{i}", T) for i in reversed(ids)])  # 25 rows, one last_modified, batch 10

    sync.killed_run(crash)
    # the first batch (ids 1..10 in keyset order) is committed with its position in the tie group
    position = sync.cursors()["position"]
    assert position is not None
    assert the_same_instant(position["after"][0], T) and position["after"][1:] == [10]
    assert sync.ledger_keys() == 10
    assert len(sync.dest()) == (10 if crash == "after_commit:1" else 20)

    counts = sync.run()
    assert sync.dest() == sync.source() == {i: f"n{i}" for i in ids}
    assert counts["read"] == 15 and counts["written"] == 15
    # after_commit: nothing re-sent; after_write: the one batch written but not committed is re-sent
    assert sync.writes() == (25 if crash == "after_commit:1" else 35)
    assert sync.ledger_keys() == 25
    cursors = sync.cursors()
    assert the_same_instant(cursors["watermark"], T)
    assert cursors.get("position") is None

    before = sync.writes()
    again = sync.run()
    assert again["written"] == 0 and again["read"] == 25 and again["skipped"] == 25
    assert sync.writes() == before


def test_rows_at_the_stored_timestamp_are_delivered(
    database: Callable[[], str], make_sync: Callable[..., Sync]
) -> None:
    sync = make_sync(database(), database())
    ids = list(range(10, 35))
    sync.add([(i, f"n{i}", T) for i in ids])

    counts = sync.run()
    assert counts["read"] == 25 and counts["written"] == 25
    assert sync.writes() == 25  # every row written exactly once
    assert sync.dest() == sync.source()
    assert the_same_instant(sync.cursors()["watermark"], T)

    assert sync.run()["written"] == 0  # no source change: nothing written
    assert sync.writes() == 25

    # at exactly the stored watermark: a new row with a lower key, and an update keeping its time
    sync.add([(1, "lower key", T)])
    h.execute(sync.src, "UPDATE items SET name = 'changed' WHERE id = 20")
    counts = sync.run()
    assert counts["written"] == 2
    assert sync.writes() == 27
    assert sync.dest() == sync.source()
    assert sync.dest()[1] == "lower key" and sync.dest()[20] == "changed"
    assert the_same_instant(sync.cursors()["watermark"], T)

    # and a later row moves the watermark on; the old tie group is not re-sent
    sync.add([(2, "later", "2026-01-01 10:00:05")])
    assert sync.run()["written"] == 1
    assert sync.writes() == 28
    assert the_same_instant(sync.cursors()["watermark"], "2026-01-01 10:00:05")
    assert sync.run()["written"] == 0
    assert sync.writes() == 28


# --------------------------------------------------------------------------- MariaDB `_ci` keys

# distinct under their collation; Python's code-point order differs from the collation's
CI_KEYS = {
    # case- and accent-insensitive: one letter each, decorated
    "utf8mb4_unicode_ci": (list("BcDÉfGhÎjKlMñÖpQrStÜvWxYz"), "äa"),
    # case-insensitive, accent-sensitive: 'a' ≠ 'ä', 'e' ≠ 'É' ≠ 'è'
    "utf8mb4_uca1400_as_ci": (list("aäBcÇdeÉèfGhiÎjKlMnñOöpQr"), "Àb"),
}


@pytest.mark.mariadb
@pytest.mark.parametrize("collation", list(CI_KEYS))
def test_mariadb_ci_string_keys_tie_break_in_sql(
    mariadb_database: Callable[[], str], make_sync: Callable[..., Sync], collation: str
) -> None:
    keys, lower = CI_KEYS[collation]
    assert len(keys) == 25
    key_type = f"VARCHAR(20) CHARACTER SET utf8mb4 COLLATE {collation}"
    sync = make_sync(mariadb_database(), mariadb_database(), key_type)
    sync.add([(k, f"n-{k}", T) for k in keys])
    db_order = [r[0] for r in h.query(sync.src, "SELECT id FROM items ORDER BY id")]
    assert db_order == keys != sorted(keys)  # the test means something only if the orders differ

    sync.killed_run("after_commit:1")
    position = sync.cursors()["position"]
    assert position["after"][1:] == [keys[9]]  # the 10th key in the collation's order
    assert set(sync.dest()) == set(keys[:10])

    counts = sync.run(cli=True)
    assert counts["read"] == 15 and counts["written"] == 15
    assert sync.dest() == sync.source() == {k: f"n-{k}" for k in keys}
    assert sync.writes() == 25  # each row exactly once, despite the kill
    assert the_same_instant(sync.cursors()["watermark"], T)
    assert sync.run()["written"] == 0
    assert sync.writes() == 25

    # a key lower in the collation (higher in Python) and an update, both at the watermark
    db_lower = h.query(sync.src, f"SELECT :a COLLATE {collation} < :b", {"a": lower, "b": keys[-1]})[0][0]
    assert db_lower == 1 and lower > keys[-1]
    sync.add([(lower, "lower key", T)])
    h.execute(sync.src, "UPDATE items SET name = 'changed' WHERE id = :k", params={"k": keys[7]})
    assert sync.run()["written"] == 2
    assert sync.writes() == 27
    assert sync.dest() == sync.source()
    assert sync.dest()[lower] == "lower key" and sync.dest()[keys[7]] == "changed"
    assert sync.run()["written"] == 0


# --------------------------------------------------------------------------- SQLite text timestamps

SHORT, LONG = "2026-01-01 10:00:02", "2026-01-01 10:00:02.000000"


@pytest.mark.parametrize("first", ["mixed", "long", "short"])
def test_sqlite_fractional_seconds_are_the_same_instant(
    sqlite_database: Callable[[], str], make_sync: Callable[..., Sync], first: str
) -> None:
    sync = make_sync(sqlite_database(), sqlite_database())
    ids = list(range(10, 35))

    def text(i: int) -> str:  # odd ids short, even ids long in the mixed case
        return {"mixed": SHORT if i % 2 else LONG, "long": LONG, "short": SHORT}[first]

    sync.add([(i, f"n{i}", text(i)) for i in ids])

    if first == "mixed":
        sync.killed_run("after_commit:1")
        assert sync.ledger_keys() == 10
    counts = sync.run(cli=first == "mixed")
    assert sync.dest() == sync.source()
    assert sync.writes() == 25  # each row once, whichever text its timestamp has
    assert counts["written"] == (15 if first == "mixed" else 25)
    stored = sync.cursors()["watermark"]
    assert the_same_instant(stored, SHORT)
    assert sync.run()["written"] == 0
    assert sync.writes() == 25

    # rows at the same instant written both ways, a lower key each, and updates keeping the text
    sync.add([(1, "short", SHORT), (2, "long", LONG)])
    h.execute(sync.src, "UPDATE items SET name = 'changed' WHERE id IN (10, 11)")
    counts = sync.run()
    assert counts["written"] == 4
    assert sync.writes() == 29
    assert sync.dest() == sync.source()
    assert the_same_instant(sync.cursors()["watermark"], SHORT)
    assert sync.run()["written"] == 0
    assert sync.writes() == 29
