"""The worlds of the Capture contract: a source table `things` (id, name, updated_at) on SQLite (on
PostgreSQL or MariaDB for the change log) and a SQLite destination that refuses a NULL name (NOT
NULL), with a sheet whose `changes:` is the capture method under test; or the in-memory
MemorySource/MemoryDestination for MemoryCapture.

Runs go through the Engine (the only honest way to get the state a method keeps: the ledger of a
snapshot, the claimed queue rows, the committed cursors). `capture()` builds a fresh capture the
way a new run does, so a test reads and acknowledges on the capture itself and then asserts what
it does, with the store's committed cursors (`cursors()`) standing for what survived a crash.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mapsync import capture, connectors, records
from mapsync.capture import log_setup, triggers
from mapsync.connectors.sql import SqlDatabase
from mapsync.engine import Engine
from mapsync.ports import Capture, Source
from mapsync.run_types import RunReport as Report
from mapsync.sheet import loader
from mapsync.state.store import StateStore
from mapsync.testing import fakes
from tests.conftest import REQUIRED
from tests.contract.ends import sql_execute, sql_query, sql_url

SHEET = """
version: 1
connections:
  src: {{url: "{src}", timezone: UTC}}
  dst: {{url: "sqlite:///{folder}/dst.db"}}
syncs:
  things:
    from: {{connection: src, table: {table}}}
    to: {{connection: dst, table: things}}
    key: {{from: id, to: ref_id}}
    fields: {{nm: name}}
    changes: {changes}
    delivery: {{batch: {batch}}}
"""

CHANGES = {
    "full": "{method: full}",
    "watermark": "{method: watermark, column: updated_at, lag: 0s}",
    # the key-set check at every run: the watermark's deletes
    "watermark_deletes": "{method: watermark, column: updated_at, lag: 0s, deletes_every: 1ms}"
    "\n    deletes: {policy: hard}",
    "snapshot": "{method: snapshot}\n    deletes: {policy: hard}",
    "queue": "{method: queue, backoff: 0s, lease: 300ms}\n    deletes: {policy: hard}",
    "inbox": "{method: inbox}\n    deletes: {policy: hard}",
    # the change log: a slot (PostgreSQL) or a replica id (MariaDB) of the world's own
    "pg_logical": "{{method: log, slot: {slot}}}\n    deletes: {{policy: hard}}",
    "binlog": "{{method: log, server_id: {server_id}}}\n    deletes: {{policy: hard}}",
}
SERVICE = {"pg_logical": "postgres", "binlog": "mariadb"}  # the log methods' servers
BATCH = 4


class SqlWorld:
    """A capture method over a SQL source, run by the real Engine: SQLite for every method but
    the change log, whose source is the test module's PostgreSQL (`pg_logical`) or MariaDB
    (`binlog`) database, with a table of the world's own (`src`: that database's URL)."""

    def __init__(self, name: str, folder: Path, src: str | None = None) -> None:
        self.name, self.folder = name, folder
        self.method = {"watermark_deletes": "watermark"}.get(name, "log" if name in SERVICE else name)
        self.table = f"things_{uuid.uuid4().hex[:8]}" if src else "things"
        self.src, self.dst = src or f"sqlite:///{folder}/src.db", f"sqlite:///{folder}/dst.db"
        self.raw = sql_url(self.src)  # with its driver, for the world's own statements
        self.src_engine = sa.create_engine(self.raw)
        self.events = 0
        self.clock = dt.datetime.min  # noqa: DTZ901 (naive UTC, as the column holds it)
        sql_execute(
            self.raw,
            f"CREATE TABLE {self.table} (id INTEGER PRIMARY KEY, name VARCHAR(50), updated_at VARCHAR(40))",
        )
        sql_execute(self.dst, "CREATE TABLE things (ref_id INTEGER PRIMARY KEY, nm VARCHAR(50) NOT NULL)")
        if name == "queue":
            target = triggers.Target("things", ("id",), ("id", "name", "updated_at"))
            sql_execute(self.raw, *triggers.install_statements("sqlite", "mapsync_changes", [target], False))
        changes = CHANGES[name]
        if name in SERVICE:  # a slot and a replica id of the world's own (tests may run side by side)
            slot, server_id = f"mapsync_t_{uuid.uuid4().hex[:12]}", random.randint(1_000_000, 1_999_999_999)
            changes = changes.format(slot=slot, server_id=server_id)
        (folder / "sheet.yaml").write_text(
            SHEET.format(folder=folder, src=self.src, table=self.table, changes=changes, batch=BATCH)
        )
        self.loaded = loader.load(folder / "sheet.yaml")
        self.store = StateStore.open(self.loaded.sheet.state.url, folder, create=True)
        self.engine = Engine(self.loaded, self.store)
        self.cfg = self.loaded.sheet.syncs["things"]
        self.version_column = capture.REGISTRY[self.method].version_column(self.cfg.changes)
        self.installed = False
        if self.method == "log":  # `mapsync changelog install`, as before a first seed
            plan = log_setup.plan(self.database(), "things", self.cfg, "install")
            if plan.problems:
                self.close()
                reason = f"{name}: the server is not set up for the change log: {'; '.join(plan.problems)}"
                if SERVICE[name] in REQUIRED:
                    pytest.fail(f"{reason} (required by MAPSYNC_REQUIRE_SERVICES)")
                pytest.skip(reason)
            log_setup.apply(self.database(), plan)
            self.installed = True

    def database(self) -> SqlDatabase:
        db = self.engine.database("src")
        assert isinstance(db, SqlDatabase)
        return db

    def _tick(self) -> str:
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)  # naive UTC, as the column holds it
        self.clock = max(now, self.clock + dt.timedelta(microseconds=1))
        return self.clock.isoformat(sep=" ")

    def put(self, *rows: tuple[int, str | None]) -> None:
        """Insert or change rows (each at a later `updated_at`, each in a transaction of its own)."""
        for i, name in rows:
            values = {"i": i, "n": name, "t": self._tick()}
            with self.src_engine.begin() as conn:
                changed = conn.execute(
                    sa.text(f"UPDATE {self.table} SET name = :n, updated_at = :t WHERE id = :i"), values
                ).rowcount
                if not changed:
                    conn.execute(sa.text(f"INSERT INTO {self.table} VALUES (:i, :n, :t)"), values)
            if self.method == "inbox":  # the webhook that tells of it (`mapsync serve` appends it)
                self.events += 1
                self.store.inbox.append(
                    "things", f"e{self.events}", json.dumps({"op": "upsert", "key": {"id": i}})
                )

    def remove(self, i: int) -> None:
        sql_execute(self.raw, f"DELETE FROM {self.table} WHERE id = :i", params=[{"i": i}])
        if self.method == "inbox":
            self.events += 1
            self.store.inbox.append(
                "things", f"e{self.events}", json.dumps({"op": "delete", "key": {"id": i}})
            )

    def emits_deletes(self) -> bool:
        method = capture.REGISTRY[self.method]
        return method.capabilities.emits_deletes and method.emits_deletes(self.cfg.changes)

    def run(self, kind: str = "run") -> Report:
        return self.engine.run("things", kind)

    def source(self) -> Source:
        handle = self.engine.database("src")
        return connectors.REGISTRY["sql"].source(handle, "things", self.cfg, self.version_column)

    def capture(self) -> Capture:
        """A fresh capture, as the next run (or a restarted process) builds it."""
        ctx = capture.Context("things", self.cfg, self.store, self.engine.database)
        return capture.REGISTRY[self.method](self.source(), self.cfg.changes, BATCH, ctx)

    def cursors(self) -> dict[str, Any]:
        return self.store.cursors("things")

    def delivered(self) -> dict[int, str]:
        return {int(r["ref_id"]): r["nm"] for r in sql_query(self.dst, "SELECT ref_id, nm FROM things")}

    def acknowledged(self) -> list[tuple[records.Batch, records.WriteResult]] | None:
        return None  # what a SQL method acknowledged shows in its own tables (the queue's statuses)

    def close(self) -> None:
        try:
            if self.installed:  # `mapsync changelog remove`: a PostgreSQL slot holds WAL until dropped
                log_setup.apply(
                    self.database(), log_setup.plan(self.database(), "things", self.cfg, "remove")
                )
        finally:
            self.engine.close()
            self.store.close()
            self.src_engine.dispose()


class MemoryWorld:
    """MemoryCapture over a MemorySource, run by fakes.MemoryEngine."""

    name = method = "memory"

    def __init__(self, folder: Path) -> None:
        self.version = 0
        self.src = fakes.MemorySource([], version="version")
        self.dest = fakes.MemoryDestination()
        self.dest.on_call = self._refuse_null
        loaded = fakes.sheet(
            {
                "things": {
                    "key": {"from": "id", "to": "ref_id"},
                    "fields": {"nm": "name"},
                    "delivery": {"batch": BATCH},
                }
            },
            folder,
        )
        self.store = fakes.state_store(folder)
        self.engine = fakes.MemoryEngine(loaded, self.store, {"things": (self.src, self.dest)})
        self.version_column = "version"

    def _refuse_null(self, recs: list[records.Mapped]) -> None:
        """Like the SQL destination's NOT NULL: a record without a name is refused."""
        self.dest.rejecting.clear()
        self.dest.reject(*(r.dest_key for r in recs if r.values.get("nm") is None))

    def put(self, *rows: tuple[int, str | None]) -> None:
        for i, name in rows:
            self.version += 1
            self.src.upsert({"id": i, "name": name, "version": self.version})

    def remove(self, i: int) -> None:
        self.version += 1
        self.src.delete(i, self.version)

    def emits_deletes(self) -> bool:
        return fakes.MemoryCapture.capabilities.emits_deletes

    def run(self, kind: str = "run") -> Report:
        return self.engine.run("things", kind)

    def source(self) -> Source:
        return self.src

    def capture(self) -> Capture:
        return fakes.MemoryCapture(self.src, BATCH)

    def cursors(self) -> dict[str, Any]:
        return self.store.cursors("things")

    def delivered(self) -> dict[int, str]:
        return {int(k[0]): r["nm"] for k, r in self.dest.rows.items()}

    def acknowledged(self) -> list[tuple[records.Batch, records.WriteResult]] | None:
        return self.src.acknowledged

    def close(self) -> None:
        self.engine.close()
        self.store.close()


World = SqlWorld | MemoryWorld


def changes_of(batches: list[records.Batch]) -> list[records.Change]:
    return [c for b in batches for c in b.changes]


def keys_of(batches: list[records.Batch]) -> list[int]:
    return [int(c.key[0]) for c in changes_of(batches)]


@dataclasses.dataclass(frozen=True)
class Expect:
    """What a method documents about reading again (None: the method does not promise either)."""

    rejected_read_again: bool  # a rejected change is read again by the next run (else: record error)
    delivered_read_again: bool | None  # a delivered change is read again by the next run


EXPECT = {
    "memory": Expect(False, None),  # inclusive watermark: the newest one may be read again
    "full": Expect(True, True),  # everything, every run
    "watermark": Expect(False, None),
    "watermark_deletes": Expect(False, None),
    "snapshot": Expect(True, False),  # the ledger holds the rejected one's old hash
    "queue": Expect(True, False),  # `error` rows are retried after `backoff`; completed ones are done
    "inbox": Expect(False, False),  # an item becomes `processed` or `error` (a record error) once
    # the position moves past a delivered batch, its rejections become record errors
    "pg_logical": Expect(False, False),
    "binlog": Expect(False, False),
}
