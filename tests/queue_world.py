"""The world of the trigger-queue tests: a source `items` table with queue triggers, a destination
`items` table that refuses the name `bad` (a real destination-side rejection), a sheet, runs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa

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
    changes: {{method: queue, {changes}}}
    deletes: {{policy: hard}}
    delivery: {{batch: {batch}}}
"""
QUEUE = "mapsync_changes"


def refuse_bad(dst: str) -> None:
    """The destination refuses name `bad` with a record-level error on every backend (PostgreSQL
    and SQLite by the CHECK constraint of the table)."""
    d = h.dialect(dst)
    if d == "mysql":  # a CHECK fails with errno 4025 (not a record error to PyMySQL): a trigger instead
        for event in ("INSERT", "UPDATE"):
            h.execute(
                dst,
                f"CREATE TRIGGER refuse_{event.lower()} BEFORE {event} ON items FOR EACH ROW "
                "IF NEW.name = 'bad' THEN SIGNAL SQLSTATE '23000' "
                "SET MESSAGE_TEXT = 'bad name refused', MYSQL_ERRNO = 1452; END IF",
            )


class World:
    def __init__(
        self, src: str, dst: str, folder: Path, changes: str = "backoff: 0s", batch: int = 10
    ) -> None:
        self.src, self.dst, self.folder = src, dst, folder
        self.dialect = h.dialect(src)
        check = "" if h.dialect(dst) == "mysql" else ", CONSTRAINT no_bad CHECK (name <> 'bad')"
        h.execute(src, "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50))")
        h.execute(dst, f"CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50){check})")
        refuse_bad(dst)
        h.install_write_counter(dst, "items")
        self._engine: tuple[Engine, StateStore] | None = None
        self.sheet(changes, batch)

    def sheet(self, changes: str, batch: int = 10) -> None:
        self.close()
        (self.folder / "sheet.yaml").write_text(
            SHEET.format(src=self.src, dst=self.dst, changes=changes, batch=batch)
        )

    def close(self) -> None:
        if self._engine is not None:
            engine, store = self._engine
            engine.close()
            store.close()
            self._engine = None

    # ----------------------------------------------------------------- commands

    def cli(self, *args: str, env: dict[str, str] | None = None) -> Any:
        return h.mapsync(*args, cwd=self.folder, env=env)

    def install(self) -> None:
        done = self.cli("triggers", "install", "sheet.yaml")
        assert done.returncode == 0, done.stdout + done.stderr

    def engine(self, kind: str = "run") -> dict[str, Any]:
        """One run in this process: its report as a dict (counts at the top level)."""
        if self._engine is None:
            loaded = loader.load(self.folder / "sheet.yaml")
            store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)
            self._engine = (Engine(loaded, store), store)
        report = self._engine[0].run("items", kind)
        out = dataclasses.asdict(report.counts)
        out["status"] = report.status
        out["message"] = report.message
        return out

    def seed(self) -> None:
        assert self.engine("seed")["status"] == "success"

    # ----------------------------------------------------------------- looking

    def add(self, *rows: tuple[int, str]) -> None:
        h.execute(
            self.src,
            "INSERT INTO items (id, name) VALUES (:i, :n)",
            params=[{"i": i, "n": n} for i, n in rows],
        )

    def source(self) -> dict[int, str]:
        return {int(i): n for i, n in h.query(self.src, "SELECT id, name FROM items")}

    def dest(self) -> dict[int, str]:
        return {int(i): n for i, n in h.query(self.dst, "SELECT id, name FROM items")}

    def writes(self) -> int:
        return h.writes(self.dst)

    def queue(self) -> list[dict[str, Any]]:
        eng = h.engine(self.src)
        try:
            with eng.connect() as conn:
                rows = conn.execute(sa.text(f"SELECT * FROM {QUEUE} ORDER BY id")).mappings()
                return [dict(r) for r in rows]
        finally:
            eng.dispose()

    def statuses(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.queue():
            out[row["sync_status"]] = out.get(row["sync_status"], 0) + 1
        return out

    def status_json(self) -> list[dict[str, Any]]:
        done = self.cli("triggers", "status", "sheet.yaml", "--json")
        assert done.returncode in (0, 1), done.stdout + done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]
