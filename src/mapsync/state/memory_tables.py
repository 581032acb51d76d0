"""The tables of the in-memory state store (state/memory.py): plain dicts under one lock.

Values are kept as the SQL store keeps them (versions and cursors as typed JSON text, keys as
key text, times as stamps), so what a test reads back is what the SQL store would give. A write
is a transaction: `Memory.tx()` hands out a copy of the tables and puts it in place only when the
block ends without an exception (rows are replaced, never changed in place), so a failed commit
leaves nothing behind, as a rolled-back SQL transaction does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

from mapsync.state.runs import STALE

Row = dict[str, Any]


@dataclasses.dataclass
class Tables:
    # (sync, name) → typed JSON text (None: a cursor set to None)
    cursors: dict[tuple[str, str], str | None] = dataclasses.field(default_factory=dict)
    audit: dict[int, Row] = dataclasses.field(default_factory=dict)  # id → cursor audit row
    # (sync, key text) → (version text, hash, dest id, deleted)
    ledger: dict[tuple[str, str], tuple[str | None, str, str | None, bool]] = dataclasses.field(
        default_factory=dict
    )
    # (sync, key text) → the drift pair (dkey, digest) of what was delivered (drift_form.py)
    ledger_drift: dict[tuple[str, str], tuple[str, str]] = dataclasses.field(default_factory=dict)
    # (sync, key text) → when the entry was last written (a tombstone's age)
    ledger_at: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)
    runs: dict[int, Row] = dataclasses.field(default_factory=dict)  # id → run row
    errors: dict[tuple[str, str], Row] = dataclasses.field(default_factory=dict)  # (sync, key text)
    unmapped: dict[tuple[str, str, str, str], Row] = dataclasses.field(default_factory=dict)
    leases: dict[str, Row] = dataclasses.field(default_factory=dict)  # sync → lease row
    budgets: dict[str, Row] = dataclasses.field(default_factory=dict)  # credential → row
    # credential → (call id, µs) per call
    calls: dict[str, tuple[tuple[int, int], ...]] = dataclasses.field(default_factory=dict)
    inbox: dict[int, Row] = dataclasses.field(default_factory=dict)  # id → inbox row
    jobs: dict[str, Row] = dataclasses.field(default_factory=dict)  # batch id → async batch row
    controls: dict[str, Row] = dataclasses.field(default_factory=dict)  # sync → controls row
    requests: dict[int, Row] = dataclasses.field(default_factory=dict)  # id → run request row
    workers: dict[str, Row] = dataclasses.field(default_factory=dict)  # id → worker row
    claims: dict[str, Row] = dataclasses.field(default_factory=dict)  # sync → claim row
    incidents: dict[int, Row] = dataclasses.field(default_factory=dict)  # id → incident row
    notifications: dict[int, Row] = dataclasses.field(default_factory=dict)  # id → notification row
    # (sync, name) → (typed JSON value, stamp)
    observations: dict[tuple[str, str], tuple[str, str]] = dataclasses.field(default_factory=dict)
    attempts: dict[int, Row] = dataclasses.field(default_factory=dict)  # id → delivery attempt row
    rollups: dict[tuple[str, str], Row] = dataclasses.field(default_factory=dict)  # (sync, day) → row
    reconcile_results: dict[int, Row] = dataclasses.field(default_factory=dict)  # id → check result row
    web_sessions: dict[str, Row] = dataclasses.field(default_factory=dict)  # token hash → session row
    actions: dict[int, Row] = dataclasses.field(default_factory=dict)  # id → operator audit row
    ids: dict[str, int] = dataclasses.field(default_factory=dict)  # table → last id given

    def copy(self) -> Tables:
        return Tables(**{f.name: dict(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def next_id(self, table: str) -> int:
        """The next id of an autoincrement table (ids are never given twice)."""
        self.ids[table] = self.ids.get(table, 0) + 1
        return self.ids[table]


class Memory:
    """The tables and their lock, shared by the in-memory store and its port objects."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.tables = Tables()

    @contextlib.contextmanager
    def tx(self) -> Iterator[Tables]:
        """A write transaction: the changed copy replaces the tables when the block succeeds."""
        with self.lock:
            work = self.tables.copy()
            yield work
            self.tables = work

    @contextlib.contextmanager
    def read(self) -> Iterator[Tables]:
        with self.lock:
            yield self.tables


def fail_stale(t: Tables, sync: str, token: str, now: str) -> None:
    """The running runs under a lease token taken over: failed (class `tool`), as runs.fail_stale."""
    for run_id, row in list(t.runs.items()):
        if row["sync"] == sync and row["lease_token"] == token and row["status"] == "running":
            t.runs[run_id] = {
                **row,
                "status": "failed",
                "failure_class": "tool",
                "finished_at": now,
                "message": STALE,
            }
