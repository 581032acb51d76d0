"""Shared world of the change-log tests (PostgreSQL slot, MariaDB binlog): a source table with a
child table, a SQLite destination with a write counter, a sheet, and the oracles."""

from __future__ import annotations

import decimal
import json
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from mapsync.state import values
from tests import helpers as h

SYNC = "items"
BATCH = 10
N = 25  # rows before the seed
# crash points tested in the 2nd batch of a run; REACHED: the batch was at the destination when
# the process died; REPLAYED: it was, and its position was not committed, so it is sent again
CRASH_POINTS = [
    "after_read",
    "during_write",
    "after_write",
    "after_ack",
    "during_state_write",
    "after_commit",
]
REACHED = {"after_write", "after_ack", "during_state_write", "after_commit"}
REPLAYED = REACHED - {"after_commit"}


def expected_writes(point: str, changes: int) -> tuple[int, int, int]:
    """Destination writes (before the rerun, by the rerun, in all) when the run of `changes`
    single-row transactions dies at `point` in its 2nd batch."""
    crashed = BATCH * (2 if point in REACHED else 1)
    committed = BATCH * (2 if point == "after_commit" else 1)
    return crashed, changes - committed, changes + (BATCH if point in REPLAYED else 0)


def build(src: str, dst: str) -> None:
    h.execute(
        src,
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(60) NOT NULL, "
        "amount NUMERIC(10,2), note VARCHAR(40))",
        "CREATE TABLE item_tags (item_id INTEGER NOT NULL, tag VARCHAR(20) NOT NULL, "
        "PRIMARY KEY (item_id, tag))",
        "CREATE TABLE other (id INTEGER PRIMARY KEY, v VARCHAR(10))",
    )
    h.execute(
        src,
        "INSERT INTO items (id, name, amount, note) VALUES (:id, :name, :amount, :note)",
        params=[
            {"id": i, "name": f"item {i} Müller", "amount": str(decimal.Decimal(i * 137) / 100), "note": None}
            for i in range(1, N + 1)
        ],
    )
    h.execute(
        dst,
        "CREATE TABLE items_dst (item_id INTEGER PRIMARY KEY, title VARCHAR(60) NOT NULL, "
        "amount NUMERIC(10,2), note VARCHAR(40), tags TEXT)",
        "CREATE TABLE tags_dst (item_id INTEGER NOT NULL, tag VARCHAR(20) NOT NULL, "
        "PRIMARY KEY (item_id, tag))",
    )
    h.install_write_counter(dst, "items_dst")


def sheet(folder: Path, src: str, dst: str, changes: dict[str, Any], children: bool = True) -> Path:
    sync: dict[str, Any] = {
        "from": {"connection": "erp", "table": "items"},
        "to": {"connection": "shop", "table": "items_dst"},
        "key": {"from": "id", "to": "item_id"},
        "fields": {"title": "name", "amount": "amount", "note": "note"},
        "changes": {"method": "log", **changes},
        "deletes": {"policy": "hard"},
        "delivery": {"batch": BATCH},
    }
    if children:
        sync["children"] = {
            "tags": {
                "from": {"connection": "erp", "table": "item_tags"},
                "to": {"connection": "shop", "table": "tags_dst"},
                "parent": {"from": "item_id", "to": "item_id"},
                "key": {"from": ["item_id", "tag"], "to": ["item_id", "tag"]},
                "fields": {"tag": "tag"},
            }
        }
    doc = {
        "version": 1,
        "connections": {"erp": {"url": src, "timezone": "UTC"}, "shop": {"url": dst, "timezone": "UTC"}},
        "syncs": {SYNC: sync},
    }
    path = folder / "sheet.yaml"
    path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return path


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def crashed(proc: subprocess.CompletedProcess[str], marker: Path, point: str) -> None:
    assert proc.returncode == -signal.SIGKILL, f"expected SIGKILL at {point}: {proc.returncode} {proc.stderr}"
    assert marker.read_text(encoding="utf-8").startswith(point)


def _money(v: Any) -> Any:
    return None if v is None else decimal.Decimal(str(v)).quantize(decimal.Decimal("0.01"))


def source_rows(src: str) -> dict[int, tuple[Any, ...]]:
    return {
        r[0]: (r[1], _money(r[2]), r[3]) for r in h.query(src, "SELECT id, name, amount, note FROM items")
    }


def dest_rows(dst: str) -> dict[int, tuple[Any, ...]]:
    return {
        r[0]: (r[1], _money(r[2]), r[3])
        for r in h.query(dst, "SELECT item_id, title, amount, note FROM items_dst")
    }


def source_tags(src: str) -> set[tuple[Any, ...]]:
    return {tuple(r) for r in h.query(src, "SELECT item_id, tag FROM item_tags")}


def dest_tags(dst: str) -> set[tuple[Any, ...]]:
    return {tuple(r) for r in h.query(dst, "SELECT item_id, tag FROM tags_dst")}


def cursor(folder: Path) -> Any:
    conn = sqlite3.connect(folder / ".mapsync" / "state.db")
    try:
        row = conn.execute(
            "SELECT value FROM mapsync_cursors WHERE sync = ? AND name = 'log'", (SYNC,)
        ).fetchone()
    finally:
        conn.close()
    return None if row is None else values.decode(row[0])


def update_each(src: str, ids: list[int], tag: str) -> None:
    """One transaction per row: `name` gets `tag`."""
    for i in ids:
        h.execute(src, "UPDATE items SET name = :n WHERE id = :id", params={"n": f"item {i} {tag}", "id": i})
