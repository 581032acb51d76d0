"""Record errors and unmapped values read or noted outside the batch commit: a mixin of
`StateStore` (port `RecordErrors`). The SQL is in `state.unmapped`; each method is one guarded
transaction (a transient store failure is retried, see `state.faults`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from mapsync import records
from mapsync.state import unmapped, values
from mapsync.state.clock import stamp
from mapsync.state.faults import guarded


def error_row(
    sync: str, key: str, r: records.Rejection, attempts: int, run_id: int, now: str
) -> dict[str, Any]:
    """The record error a rejection leaves (its `first_seen` is kept when the key has one)."""
    return {
        "sync": sync,
        "key": key,
        "version": values.encode(r.version),
        "field": r.field,
        "rule": r.rule,
        "message": r.message[:2000],
        "attempts": attempts,
        "first_seen": now,
        "last_seen": now,
        "resolved_at": None,
        "run_id": run_id,
        "value": unmapped.value_text(r.value) if unmapped.is_unmapped(r) else None,
    }


class RecordErrorsMixin:
    engine: sa.Engine

    @guarded
    def open_error_keys(self, sync: str, field: str | None = None) -> list[records.Key]:
        """Keys of the open record errors of `sync` (only those naming `field`, if given)."""
        with self.engine.connect() as conn:
            return unmapped.open_error_keys(conn, sync, field)

    @guarded
    def note_gone(self, sync: str, keys: Sequence[records.Key]) -> None:
        """Leave these errors open, saying why a retry could not send them (the source row is gone)."""
        with self.engine.begin() as conn:
            unmapped.note_gone(conn, sync, keys, stamp())

    @guarded
    def unmapped_values(self, sync: str | None, include_resolved: bool = False) -> list[dict[str, Any]]:
        """The unmapped values (open ones, or all), of one sync or of every sync."""
        with self.engine.connect() as conn:
            return unmapped.listing(conn, sync, include_resolved)
