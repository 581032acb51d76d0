"""Retention: history older than `state.retention` is removed after each run."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from mapsync.state import schema
from mapsync.state.store import StateStore, stamp, utcnow


def purge(store: StateStore, sync: str, retention: dt.timedelta) -> dict[str, int]:
    """Drop history older than `retention`: finished runs (the latest run is always kept),
    cursor audit rows and resolved record errors. Open errors, cursors and the ledger stay."""
    cutoff = stamp(utcnow() - retention)
    r, a, e = schema.runs, schema.cursor_audit, schema.record_errors
    with store.engine.begin() as conn:
        latest = conn.execute(sa.select(sa.func.max(r.c.id)).where(r.c.sync == sync)).scalar()
        return {
            "runs": conn.execute(
                sa.delete(r).where(
                    r.c.sync == sync, r.c.finished_at.is_not(None), r.c.finished_at < cutoff, r.c.id != latest
                )
            ).rowcount,
            "audit": conn.execute(sa.delete(a).where(a.c.sync == sync, a.c.committed_at < cutoff)).rowcount,
            "errors": conn.execute(
                sa.delete(e).where(e.c.sync == sync, e.c.resolved_at.is_not(None), e.c.resolved_at < cutoff)
            ).rowcount,
        }
