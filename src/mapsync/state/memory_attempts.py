"""The in-memory store's delivery attempts and trace reads (port `DeliveryAttempts`): the
semantics of state/attempts.py over the tables of state/memory_tables.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mapsync import records
from mapsync.state import values
from mapsync.state.attempts import KEEP, attempt_of, row_of
from mapsync.state.clock import stamp
from mapsync.state.data import Attempt
from mapsync.state.memory_tables import Memory, Tables


def write(t: Tables, sync: str, run_id: int | None, attempts: Sequence[Attempt], now: str) -> None:
    """Add the attempts and keep the last `KEEP` of each of their keys (inside a transaction)."""
    touched = set()
    for a in attempts:
        aid = t.next_id("attempts")
        row = row_of(sync, run_id, a, now)
        t.attempts[aid] = {"id": aid, **row}
        touched.add(row["key"])
    for key in touched:
        ids = sorted(
            (i for i, r in t.attempts.items() if r["sync"] == sync and r["key"] == key), reverse=True
        )
        for old in ids[KEEP:]:
            del t.attempts[old]


class MemoryAttempts:
    def __init__(self, memory: Memory) -> None:
        self.memory = memory

    def record_attempts(self, sync: str, run_id: int | None, attempts: Sequence[Attempt]) -> None:
        with self.memory.tx() as t:
            write(t, sync, run_id, attempts, stamp())

    def attempts(self, sync: str, key: records.Key) -> list[Attempt]:
        text = records.key_text(key)
        with self.memory.read() as t:
            rows = [
                r
                for _, r in sorted(t.attempts.items(), reverse=True)
                if r["sync"] == sync and r["key"] == text
            ]
        return [attempt_of(r) for r in rows]

    def record_error(self, sync: str, key: records.Key) -> dict[str, Any] | None:
        with self.memory.read() as t:
            row = t.errors.get((sync, records.key_text(key)))
        return dict(row) if row is not None else None

    def ledger_row(self, sync: str, key: records.Key) -> dict[str, Any] | None:
        text = records.key_text(key)
        with self.memory.read() as t:
            entry = t.ledger.get((sync, text))
            dkey, digest = t.ledger_drift.get((sync, text), (None, None))
        if entry is None:
            return None
        version, hash_, dest_id, deleted = entry
        return {
            "sync": sync,
            "key": text,
            "version": values.decode(version),
            "hash": hash_,
            "dest_id": dest_id,
            "deleted": deleted,
            "updated_at": None,  # the memory ledger keeps no time
            "dkey": dkey,
            "digest": digest,
        }

    def inbox_items(self, sync: str, needle: str, *, scan: int, limit: int) -> list[dict[str, Any]]:
        with self.memory.read() as t:
            recent = [r for _, r in sorted(t.inbox.items(), reverse=True) if r["sync"] == sync][:scan]
        found = [r for r in recent if needle in r["payload"]][:limit]
        names = ("id", "event_id", "received_at", "status", "processed_at", "error", "payload")
        return [{n: r[n] for n in names} for r in found]
