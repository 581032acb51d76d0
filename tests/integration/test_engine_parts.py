"""One Engine builds a sync's parts (connections, column info, compiled mapping, capture) once and
reuses them across runs: every run still sees what a fresh process would (a dropped column is the
same `config` failure, a new lookup value, a changed map file or map table, the capture's
per-run state), a failed run drops them, and `run --follow` builds them once for all passes."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mapsync import errors
from mapsync import follow as follow_mod
from mapsync.engine import Engine, Parts
from mapsync.ports import DestinationBase
from mapsync.sheet import loader
from mapsync.state import report as history
from mapsync.state.store import StateStore
from tests import helpers as h
from tests.queue_world import World as QueueWorld

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
    fields:
{fields}
    changes: {{method: watermark, column: last_modified, lag: 0s}}
    delivery: {{batch: 10}}
"""
PLAIN = "      name: name"


def _now() -> str:
    """A version after every run so far (a watermark seed starts at the source's clock)."""
    time.sleep(0.002)
    return dt.datetime.now(dt.UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


class World:
    """A source and a destination `items` table, a sheet, one long-lived Engine (`engine`) and
    fresh ones on demand (`fresh`)."""

    def __init__(self, src: str, dst: str, folder: Path, fields: str = PLAIN, dst_extra: str = "") -> None:
        self.src, self.dst, self.folder = src, dst, folder
        folder.mkdir(parents=True, exist_ok=True)
        ts = h.TS[h.dialect(src)]
        h.execute(src, f"CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50), last_modified {ts})")
        h.execute(dst, f"CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50){dst_extra})")
        (folder / "sheet.yaml").write_text(SHEET.format(src=src, dst=dst, fields=fields))
        self.store = StateStore.open("sqlite:///state.db", folder, create=True)
        self.engine = self.new_engine()
        self.builds: list[Parts] = spy(self.engine)

    def new_engine(self) -> Engine:
        return Engine(loader.load(self.folder / "sheet.yaml", env={}), self.store)

    def fresh(self) -> Iterator[Engine]:
        engine = self.new_engine()
        try:
            yield engine
        finally:
            engine.close()

    def put(self, i: int, name: str, stamp: str | None = None) -> None:
        h.execute(self.src, "DELETE FROM items WHERE id = :i", params={"i": i})
        h.execute(
            self.src,
            "INSERT INTO items VALUES (:i, :n, :t)",
            params={"i": i, "n": name, "t": stamp or _now()},
        )

    def dest(self) -> dict[int, Any]:
        return {int(r[0]): tuple(r[1:]) for r in h.query(self.dst, "SELECT * FROM items")}

    def close(self) -> None:
        self.engine.close()
        self.store.close()


def spy(engine: Engine) -> list[Parts]:
    """Every parts build of `engine` (the engine's own `_parts`), in order."""
    built: list[Parts] = []
    real = engine._parts

    def counted(name: str) -> Parts:
        parts = real(name)
        built.append(parts)
        return parts

    engine._parts = counted  # type: ignore[method-assign]
    return built


@pytest.fixture
def world(database: Callable[[], str], tmp_path: Path) -> Iterator[World]:
    w = World(database(), database(), tmp_path)
    yield w
    w.close()


def test_consecutive_runs_build_the_parts_once(world: World) -> None:
    world.put(1, "one")
    assert world.engine.run("items", "seed").ok
    for n in range(2, 5):
        world.put(n, f"n{n}")
        report = world.engine.run("items")
        assert report.ok and report.counts.written == 1, report.message
    assert len(world.builds) == 1
    assert world.dest() == {1: ("one",), 2: ("n2",), 3: ("n3",), 4: ("n4",)}
    world.engine.close()  # closes what the parts hold: the next run builds them again
    assert world.engine.run("items").ok and len(world.builds) == 2


def test_a_failed_run_drops_the_parts(world: World) -> None:
    assert world.engine.run("items", "seed").ok
    dest = world.builds[0].dest

    def down(*args: Any, **kwargs: Any) -> Any:
        raise errors.TransientError("destination down")

    dest.write = down  # type: ignore[method-assign]
    dest.write_arrow = down  # type: ignore[attr-defined]  # (a columnar batch)
    world.put(1, "one")
    failed = world.engine.run("items")
    assert failed.status == "failed" and failed.failure_class == "destination"
    assert world.engine.run("items").ok  # built again: a new destination, not the broken one
    assert len(world.builds) == 2 and world.dest() == {1: ("one",)}


def test_a_dropped_destination_column_is_the_config_failure_a_fresh_engine_gives(
    database: Callable[[], str], tmp_path: Path
) -> None:
    w = World(database(), database(), tmp_path, "      name: name\n      note: name", ", note VARCHAR(50)")
    try:
        w.put(1, "one")
        assert w.engine.run("items", "seed").ok
        h.execute(w.dst, "ALTER TABLE items DROP COLUMN note")
        w.put(2, "two")
        with pytest.raises(errors.ConfigError) as reused:
            w.engine.run("items")
        first = history.runs(w.store, "items", 1)[0]
        for engine in w.fresh():
            with pytest.raises(errors.ConfigError) as fresh:
                engine.run("items")
        assert str(reused.value) == str(fresh.value) and "note" in str(fresh.value)
        again = history.runs(w.store, "items", 1)[0]
        assert (first["failure_class"], first["status"]) == (again["failure_class"], again["status"])
        assert first["failure_class"] == "config"
        # put back: the same Engine builds its parts afresh and delivers
        h.execute(w.dst, "ALTER TABLE items ADD COLUMN note VARCHAR(50)")
        assert w.engine.run("items").ok
        assert w.dest()[2] == ("two", "two")
    finally:
        w.close()


def test_a_value_added_to_a_lookup_table_is_seen_by_the_next_run(
    sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    src = sqlite_database()
    h.execute(
        src,
        "CREATE TABLE labels (code VARCHAR(10), label VARCHAR(50))",
        "INSERT INTO labels VALUES ('a', 'A1')",
    )
    fields = "      name: {from: name, lookup: {connection: src, table: labels, key: code, value: label}}"
    w = World(src, sqlite_database(), tmp_path, fields)
    try:
        w.put(1, "a")
        w.put(2, "b")  # not in the table yet: a record error
        seed = w.engine.run("items", "seed")
        assert seed.counts.rejected == 1
        h.execute(
            src, "INSERT INTO labels VALUES ('b', 'B1')", "UPDATE labels SET label = 'A2' WHERE code = 'a'"
        )
        w.put(1, "a")
        w.put(2, "b")
        report = w.engine.run("items")
        assert report.ok, report.message
        assert w.dest() == {1: ("A2",), 2: ("B1",)} and len(w.builds) == 1
    finally:
        w.close()


def test_a_changed_map_file_is_seen_by_the_next_run(
    sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    (tmp_path / "names.csv").write_text("source,destination\na,first\n")
    w = World(
        sqlite_database(),
        sqlite_database(),
        tmp_path,
        "      name: {from: name, map_from: {file: names.csv}}",
    )
    try:
        w.put(1, "a")
        assert w.engine.run("items", "seed").ok
        w.put(2, "a")
        assert w.engine.run("items").ok and len(w.builds) == 1  # unchanged: reused
        (tmp_path / "names.csv").write_text("source,destination\na,second value\n")
        w.put(3, "a")
        assert w.engine.run("items").ok
        # row 2 is read again (its version is the watermark, read inclusively) and now maps anew
        assert w.dest() == {1: ("first",), 2: ("second value",), 3: ("second value",)}
    finally:
        w.close()


def test_a_changed_map_table_is_seen_by_the_next_run(
    sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    src = sqlite_database()
    h.execute(
        src, "CREATE TABLE names (s VARCHAR(10), d VARCHAR(50))", "INSERT INTO names VALUES ('a', 'first')"
    )
    fields = "      name: {from: name, map_from: {connection: src, table: names, from: s, to: d}}"
    w = World(src, sqlite_database(), tmp_path, fields)
    try:
        w.put(1, "a")
        assert w.engine.run("items", "seed").ok
        h.execute(src, "UPDATE names SET d = 'second' WHERE s = 'a'")
        w.put(2, "a")
        assert w.engine.run("items").ok
        assert w.dest() == {1: ("first",), 2: ("second",)}
    finally:
        w.close()


def test_a_reused_watermark_capture_runs_as_fresh_ones_do(
    database: Callable[[], str], tmp_path: Path
) -> None:
    """Three runs through one Engine and through a fresh Engine each: the same rows and cursors;
    the first run's key-set delete check (`--deletes`) is that run's only."""
    reused = World(database(), database(), tmp_path / "reused")
    fresh = World(database(), database(), tmp_path / "fresh")
    steps: list[Callable[[World, str], object]] = [
        lambda w, ts: (w.put(1, "one", ts), w.put(2, "two", ts)),
        lambda w, ts: (h.execute(w.src, "DELETE FROM items WHERE id = 2"), w.put(3, "three", ts)),
        lambda w, ts: (w.put(4, "four", ts), w.put(1, "uno", ts)),
        lambda w, ts: w.put(5, "five", ts),
    ]
    seen: dict[str, list[tuple[Any, ...]]] = {"reused": [], "fresh": []}
    try:
        for n, step in enumerate(steps):
            kind, deletes = ("seed", False) if n == 0 else ("run", n == 1)
            ts = _now()  # the same versions in both worlds, after both worlds' last runs
            for label, w in (("reused", reused), ("fresh", fresh)):
                step(w, ts)
                if label == "reused":
                    report = w.engine.run("items", kind, deletes=deletes)
                else:
                    for engine in w.fresh():
                        report = engine.run("items", kind, deletes=deletes)
                assert report.ok, report.message
                cursors = w.store.cursors("items")
                stamp = cursors.pop("deletes_at", None)
                cursors.get("seed", {}).pop("at", None)  # each world's clock
                cursors.pop("identity", None)  # each world's databases (sheet/identity.py)
                if n == 0:  # the seed's watermark is each world's clock at its seed
                    cursors.pop("watermark", None)
                seen[label].append((w.dest(), cursors, stamp, report.counts))
        assert [s[:2] for s in seen["reused"]] == [s[:2] for s in seen["fresh"]]
        assert [s[3] for s in seen["reused"]] == [s[3] for s in seen["fresh"]]
        for label in seen:  # the check's stamp is written by run 1 only
            stamps = [s[2] for s in seen[label]]
            assert stamps[0] is None and stamps[1] is not None and stamps[1] == stamps[2] == stamps[3], label
        assert len(reused.builds) == 1
    finally:
        reused.close()
        fresh.close()


def test_a_reused_queue_capture_runs_as_fresh_ones_do(database: Callable[[], str], tmp_path: Path) -> None:
    """Three runs through one Engine (the queue world's) and through a fresh Engine each: the same
    rows delivered, the same queue statuses, and each run claims with a token of its own."""
    worlds = {}
    for label in ("reused", "fresh"):
        (tmp_path / label).mkdir()
        worlds[label] = w = QueueWorld(database(), database(), tmp_path / label)
        w.install()
        w.seed()
    tokens: dict[str, list[set[str]]] = {"reused": [], "fresh": []}
    try:
        for n in range(3):
            for label, w in worlds.items():
                w.add((10 * n + 1, f"a{n}"), (10 * n + 2, "bad" if n == 1 else f"b{n}"))
                if n == 2:
                    h.execute(w.src, "DELETE FROM items WHERE id = 1")
                if label == "fresh":
                    w.close()  # the next run builds a new Engine
                out = w.engine()
                assert out["status"] in ("success", "partial"), out["message"]
                done = {r["claim_token"] for r in w.queue() if r["sync_status"] == "completed"}
                tokens[label].append(done - set().union(*tokens[label]))
        reused, fresh = worlds["reused"], worlds["fresh"]
        assert reused.dest() == fresh.dest() and 1 not in reused.dest()
        assert reused.statuses() == fresh.statuses()
        assert [len(t) for t in tokens["reused"]] == [len(t) for t in tokens["fresh"]] == [1, 1, 1]
    finally:
        for w in worlds.values():
            w.close()


def test_follow_builds_the_parts_once_for_all_passes(
    sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    w = World(sqlite_database(), sqlite_database(), tmp_path)
    w.put(1, "one")
    assert w.engine.run("items", "seed").ok
    calls: list[str] = []
    real = w.engine.parts

    def counted(name: str) -> Parts:
        calls.append(name)
        return real(name)

    w.engine.parts = counted  # type: ignore[method-assign]
    stop = threading.Event()
    worker = threading.Thread(
        target=follow_mod.follow,
        args=(w.engine, ["items"]),
        kwargs={"poll": dt.timedelta(milliseconds=20), "stop": stop, "on_report": lambda r: None},
    )
    try:
        worker.start()
        end = time.monotonic() + 10
        while len(calls) < 3 and time.monotonic() < end:
            time.sleep(0.02)
        w.put(2, "two")
        while w.dest() != {1: ("one",), 2: ("two",)} and time.monotonic() < end:
            time.sleep(0.02)
        while len(calls) < 8 and time.monotonic() < end:
            time.sleep(0.02)
    finally:
        stop.set()
        worker.join(timeout=10)
        w.close()
    assert w.dest() == {1: ("one",), 2: ("two",)}
    assert len(calls) >= 8 and len(w.builds) == 1


def test_the_destination_counts_fallbacks_per_run(world: World) -> None:
    """`fell_back` is the run's count: a reused destination starts each run at 0."""
    assert world.engine.run("items", "seed").ok
    dest = world.builds[0].dest
    assert isinstance(dest, DestinationBase)
    dest.fell_back = 2  # as if the last run had written two refused deletes as `disable`
    world.put(1, "one")
    report = world.engine.run("items")
    assert report.ok and report.fell_back == 0 and len(world.builds) == 1


def test_a_column_added_after_a_config_failure_is_seen_by_the_same_engine(
    database: Callable[[], str], tmp_path: Path
) -> None:
    """The first build fails (the destination lacks a mapped column); once the column is there,
    the same Engine (a follower) builds from a fresh reflection, as a new process would."""
    w = World(database(), database(), tmp_path, "      name: name\n      note: name")
    try:
        w.put(1, "one")
        with pytest.raises(errors.ConfigError, match="note"):
            w.engine.run("items", "seed")
        h.execute(w.dst, "ALTER TABLE items ADD COLUMN note VARCHAR(50)")
        assert w.engine.run("items", "seed").ok
        assert w.dest() == {1: ("one", "one")}
    finally:
        w.close()
