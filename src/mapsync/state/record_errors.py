"""Record errors and unmapped values read or noted outside the batch commit: a mixin of
`StateStore` (port `RecordErrors`). An open error tried `max_attempts` times is buried (`bury`:
`dead_at` set, schema v5): automatic retries skip it; a delivery still resolves it (`dead_at`
stays as history), and a rejection while it is open keeps it dead. The SQL is in
`state.unmapped`; each method is one guarded transaction (a transient store failure is retried,
see `state.faults`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from mapsync import records
from mapsync.state import schema, unmapped, values
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
        "dead_at": None,
        "resolved_by": None,
        "resolved_note": None,
    }


def kept_dead(old: dict[str, Any] | None) -> str | None:
    """The `dead_at` a rejection leaves on a key's error: an open dead error stays dead (only an
    operator's retry clears it); a resolved one opens again alive."""
    return old["dead_at"] if old is not None and old["resolved_at"] is None else None


class RecordErrorsMixin:
    engine: sa.Engine

    @guarded
    def open_error_keys(
        self, sync: str, field: str | None = None, *, live_only: bool = False
    ) -> list[records.Key]:
        """Keys of the open record errors of `sync` (only those naming `field`, if given; without
        the dead ones, with `live_only`: what an automatic retry sends)."""
        with self.engine.connect() as conn:
            return unmapped.open_error_keys(conn, sync, field, live_only=live_only)

    @guarded
    def open_error_versions(self, sync: str) -> dict[str, str | None]:
        with self.engine.connect() as conn:
            return unmapped.open_error_versions(conn, sync)

    @guarded
    def bury(self, sync: str, max_attempts: int) -> int:
        """Open errors of `sync` tried `max_attempts` times or more become dead (`dead_at` now):
        no automatic retry sends them any more, only an operator's `mapsync retry`. Returns how
        many were buried now (the caller logs)."""
        e = schema.record_errors
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    sa.update(e)
                    .where(
                        e.c.sync == sync,
                        e.c.resolved_at.is_(None),
                        e.c.dead_at.is_(None),
                        e.c.attempts >= max_attempts,
                    )
                    .values(dead_at=stamp())
                ).rowcount
            )

    @guarded
    def resolve_errors(self, sync: str, keys: Sequence[str] | None, by: str, note: str) -> int:
        """Resolve open record errors of `sync` by key text (None: all its open ones) with `by`
        and `note`: no retry sends them again and they no longer count as open (a new rejection
        of the key opens it again). How many were resolved (0 for ones resolved already)."""
        e = schema.record_errors
        where = [e.c.sync == sync, e.c.resolved_at.is_(None)]
        change = {"resolved_at": stamp(), "resolved_by": by, "resolved_note": note}
        with self.engine.begin() as conn:
            if keys is None:
                return int(conn.execute(sa.update(e).where(*where).values(change)).rowcount)
            wanted = list(dict.fromkeys(keys))
            done = 0
            for i in range(0, len(wanted), 500):
                part = wanted[i : i + 500]
                done += int(
                    conn.execute(sa.update(e).where(*where, e.c.key.in_(part)).values(change)).rowcount
                )
            return done

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
