"""Snapshot diff capture on SQLite, PostgreSQL and MariaDB: a run finds exactly the planted
inserts, updates and deletes (destination writes counted by triggers), the seed records the row
hashes, compound and string keys whose database order differs from Python's (a MariaDB `_ci`
collation, a key renamed only in case), and kill -9 at crash points mid-run, then a rerun that
converges with at most one batch sent again.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from mapsync.engine import Engine, RunReport
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
    key: {{from: {key}, to: {key}}}
    fields: {{name: name, qty: qty}}
    changes: {changes}
    deletes: {{{deletes}, max_delete_ratio: {ratio}}}
    delivery: {{batch: {batch}}}
{state}"""
SNAPSHOT = "{method: snapshot, page: 100}"
WATERMARK = "{method: watermark, column: last_modified, lag: 0s}"


class Sync:
    """A source and a destination table `items`, a sheet, and an in-process engine."""

    def __init__(
        self,
        src: str,
        dst: str,
        folder: Path,
        *,
        key: Sequence[str] = ("id",),
        key_ddl: str = "id INTEGER",
        changes: str = SNAPSHOT,
        ratio: float = 0.5,
        batch: int = 3,
        state: str | None = None,
        deletes: str = "policy: hard",
    ) -> None:
        self.src, self.dst, self.folder, self.key = src, dst, folder, list(key)
        self.state = f'state: {{url: "{state}"}}\n' if state else ""
        self.changes, self.ratio, self.batch, self.deletes = changes, ratio, batch, deletes
        self._engine: tuple[Engine, StateStore] | None = None
        ts = h.TS[h.dialect(src)]
        pk = ", ".join(self.key)
        h.execute(
            src,
            f"CREATE TABLE items ({key_ddl}, name VARCHAR(50), qty INTEGER, last_modified {ts}, "
            f"PRIMARY KEY ({pk}))",
        )
        dst_key = key_ddl.replace("COLLATE utf8mb4_general_ci", "") if h.dialect(dst) != "mysql" else key_ddl
        h.execute(dst, f"CREATE TABLE items ({dst_key}, name VARCHAR(50), qty INTEGER, PRIMARY KEY ({pk}))")
        h.install_write_counter(dst, "items")
        self.write_sheet()

    def write_sheet(self) -> None:
        key = json.dumps(self.key)
        text = SHEET.format(
            src=self.src,
            dst=self.dst,
            key=key,
            changes=self.changes,
            ratio=self.ratio,
            batch=self.batch,
            state=self.state,
            deletes=self.deletes,
        )
        (self.folder / "sheet.yaml").write_text(text)

    def close(self) -> None:
        if self._engine is not None:
            engine, store = self._engine
            engine.close()
            store.close()
            self._engine = None

    def report(self, kind: str = "run", **kwargs: Any) -> RunReport:
        if self._engine is None:
            loaded = loader.load(self.folder / "sheet.yaml")
            store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=kind == "seed")
            self._engine = (Engine(loaded, store), store)
        return self._engine[0].run("items", kind, **kwargs)

    def engine(self, kind: str = "run", **kwargs: Any) -> dict[str, int]:
        report = self.report(kind, **kwargs)
        assert report.status == "success", report
        return dataclasses.asdict(report.counts)

    def killed(self, at: str, *args: str) -> None:
        self.close()
        marker = self.folder / "crash.marker"
        marker.unlink(missing_ok=True)
        done = h.mapsync(
            "run",
            "sheet.yaml",
            *args,
            cwd=self.folder,
            env={"MAPSYNC_CRASH_AT": at, "MAPSYNC_CRASH_MARKER": str(marker)},
            process=False,  # the crash point in-process (mapsync.crash); the crash matrix kills for real
        )
        assert done.returncode == -9, (done.returncode, done.stdout + done.stderr)
        assert marker.read_text().split() == [at]

    def cli(self, *args: str) -> tuple[int, list[dict[str, Any]]]:
        self.close()
        done = h.mapsync("run", "sheet.yaml", *args, "--json", cwd=self.folder)
        return done.returncode, json.loads(done.stdout)

    def add(self, rows: Sequence[tuple[Any, ...]]) -> None:
        cols = [*self.key, "name", "qty", "last_modified"]
        h.execute(
            self.src,
            f"INSERT INTO items ({', '.join(cols)}) VALUES ({', '.join(f':c{i}' for i in range(len(cols)))})",
            params=[{f"c{i}": v for i, v in enumerate((*r, "2026-01-01 10:00:00"))} for r in rows],
        )

    def writes(self) -> int:
        return int(h.query(self.dst, "SELECT COUNT(*) FROM mapsync_write_log")[0][0])

    def rows(self, url: str) -> list[tuple[Any, ...]]:
        cols = ", ".join([*self.key, "name", "qty"])
        return sorted(h.query(url, f"SELECT {cols} FROM items"), key=repr)

    def converged(self) -> None:
        assert self.rows(self.dst) == self.rows(self.src)


@pytest.fixture
def sync(database: Callable[[], str], tmp_path: Path) -> Any:
    made: list[Sync] = []

    def make(**kwargs: Any) -> Sync:
        s = Sync(database(), database(), tmp_path, **kwargs)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def _plant(s: Sync) -> None:
    """3 inserts, 4 updates (one only of `qty`, one to NULL), 2 deletes, spread over the keys."""
    s.add([(101, "new-a", 1), (102, "new-b", None), (55, "new-c", 3)])
    h.execute(
        s.src,
        "UPDATE items SET name = 'changed' WHERE id IN (2, 9)",
        "UPDATE items SET qty = 999 WHERE id = 14",
        "UPDATE items SET name = NULL WHERE id = 20",
        "DELETE FROM items WHERE id IN (5, 17)",
    )


def test_diff_sends_exactly_the_planted_changes(sync: Any) -> None:
    s = sync()
    s.add([(i, f"name-{i}", i) for i in range(1, 31)])
    seeded = s.engine("seed")
    assert seeded["written"] == 30
    base = s.writes()
    # the seed recorded every row's hash: a run right after it reads nothing at all
    idle = s.engine()
    assert (idle["read"], idle["written"], idle["deleted"]) == (0, 0, 0)
    _plant(s)
    counts = s.engine()
    assert (counts["read"], counts["written"], counts["deleted"], counts["skipped"]) == (9, 7, 2, 0)
    assert s.writes() - base == 7  # destination writes: the 3 inserts and 4 updates, nothing else
    s.converged()
    again = s.engine()
    assert (again["read"], again["written"], again["deleted"]) == (0, 0, 0)
    assert s.writes() - base == 7


def test_update_back_and_forth_and_reinsert(sync: Any) -> None:
    s = sync()
    s.add([(i, f"n{i}", i) for i in range(1, 11)])
    s.engine("seed")
    h.execute(s.src, "DELETE FROM items WHERE id = 4")
    assert s.engine()["deleted"] == 1
    s.add([(4, "n4", 4)])  # the same content again: still a new row at the destination
    h.execute(s.src, "UPDATE items SET name = 'x' WHERE id = 6")
    counts = s.engine()
    assert (counts["written"], counts["deleted"]) == (2, 0)
    # a change and its undo between two runs: the hash is the old one, nothing is read
    h.execute(s.src, "UPDATE items SET name = 'y' WHERE id = 7", "UPDATE items SET name = 'n7' WHERE id = 7")
    assert s.engine()["read"] == 0
    s.converged()


def test_compound_string_keys_in_collation_order(
    database: Callable[[], str], sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    """Keys whose database order (a `_ci` collation on MariaDB) is not Python's order, some only
    differing from a deleted key in case. The destination is SQLite (binary keys), so a key
    renamed only in case must end as exactly the new spelling."""
    src = database()
    collate = " COLLATE utf8mb4_general_ci" if h.dialect(src) == "mysql" else ""
    s = Sync(
        src,
        sqlite_database(),
        tmp_path,
        key=("region", "code"),
        key_ddl=f"region VARCHAR(20){collate}, code VARCHAR(20){collate}",
    )
    try:
        names = ["abc", "ABD", "Äpfel", "apfelx", "b", "a b", "Zed", "zee", "_x", "ß"]
        s.add([(r, c, f"{r}/{c}", i) for i, (r, c) in enumerate((r, c) for r in ("eu", "US") for c in names)])
        s.engine("seed")
        base = s.writes()
        h.execute(
            src,
            "UPDATE items SET code = 'ABC' WHERE region = 'eu' AND code = 'abc'",  # a case-only rename
            "UPDATE items SET qty = -1 WHERE region = 'US' AND code = 'ß'",
            "DELETE FROM items WHERE region = 'US' AND code IN ('zee', 'a b')",
        )
        s.add([("eu", "Ab", "new", 7), ("US", "aa", "new", 8)])
        counts = s.engine()
        assert (counts["written"], counts["deleted"]) == (4, 3)  # ABC, ß, Ab, aa; abc, zee, a b
        assert s.writes() - base == 4
        s.converged()
        assert ("eu", "abc") not in {(r, c) for r, c, *_ in s.rows(s.dst)}
        assert s.engine()["read"] == 0
    finally:
        s.close()


def test_disable_policy_is_not_sent_again(sync: Any) -> None:
    """A delete written as `disable` (an update) counts as delivered: the next run does not send
    it again; the row's return is an insert."""
    s = sync(deletes="policy: disable, field: qty, value: -1")
    s.add([(i, f"n{i}", i) for i in range(1, 11)])
    s.engine("seed")
    h.execute(s.src, "DELETE FROM items WHERE id = 3")
    assert s.engine()["read"] == 1
    assert h.query(s.dst, "SELECT qty FROM items WHERE id = 3") == [(-1,)]
    base = s.writes()
    assert s.engine()["read"] == 0  # not found again
    s.add([(3, "back", 3)])
    assert s.engine()["written"] == 1
    assert s.writes() - base == 1
    s.converged()


@pytest.mark.parametrize(
    "point",
    ["after_write:1", "after_commit:2", "after_write:3", "during_state_write:4"],
)
def test_crash_mid_run_then_rerun_converges(sync: Any, point: str) -> None:
    """Batches of 3: [3 upserts] [3 upserts] [1 upsert] then [2 deletes] [1 delete] … the crash
    hits an upsert batch or a delete batch; the rerun converges and re-sends at most one batch."""
    s = sync()
    s.add([(i, f"n{i}", i) for i in range(1, 41)])
    s.engine("seed")
    base = s.writes()
    s.add([(41, "a", 1), (42, "b", 2), (43, "c", 3)])
    h.execute(s.src, "UPDATE items SET qty = qty + 100 WHERE id IN (1, 2, 3, 4)")
    h.execute(s.src, "DELETE FROM items WHERE id IN (30, 31, 32, 33, 34)")
    s.killed(point)
    counts = s.engine()
    s.converged()
    assert counts["read"] <= 7 + 5
    assert 7 <= s.writes() - base <= 7 + 3  # every upsert once, at most one batch again
    assert s.engine()["read"] == 0


@pytest.mark.postgres
def test_postgresql_state_store(
    sqlite_database: Callable[[], str], pg_database: Callable[[], str], tmp_path: Path
) -> None:
    """The ledger lookups and pages in a PostgreSQL state store (`= ANY(%s)`, named parameters)."""
    s = Sync(sqlite_database(), sqlite_database(), tmp_path, state=pg_database(), batch=4)
    try:
        s.add([(i, f"name-{i}", i) for i in range(1, 31)])
        s.engine("seed")
        assert s.engine()["read"] == 0
        base = s.writes()
        _plant(s)
        counts = s.engine()
        assert (counts["read"], counts["written"], counts["deleted"]) == (9, 7, 2)
        assert s.writes() - base == 7
        s.converged()
        assert s.engine()["read"] == 0
    finally:
        s.close()
