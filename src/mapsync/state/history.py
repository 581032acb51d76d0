"""The port `History` of a SQL state store (`store.history`): the read-only views of runs,
record errors and cursor audit (`status`, `errors`, `runs`, `state show`), `reset` and the
retention purge. state/report.py and state/retention.py are the older module form, kept for their
callers."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from mapsync.state import schema
from mapsync.state.clock import stamp, utcnow


class SqlHistory:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def last_run(self, sync: str) -> dict[str, Any] | None:
        """The sync's latest run row, or None."""
        r = schema.runs
        with self.engine.connect() as conn:
            last = (
                conn.execute(sa.select(r).where(r.c.sync == sync).order_by(r.c.id.desc()).limit(1))
                .mappings()
                .first()
            )
        return dict(last) if last else None

    def runs(self, sync: str | None, limit: int) -> list[dict[str, Any]]:
        """Run rows, newest first (of one sync, or all)."""
        r = schema.runs
        query = sa.select(r).order_by(r.c.id.desc()).limit(limit)
        if sync:
            query = query.where(r.c.sync == sync)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def record_errors(self, sync: str | None, include_resolved: bool, limit: int) -> list[dict[str, Any]]:
        """Record error rows, last seen first (open ones, or all)."""
        e = schema.record_errors
        query = sa.select(e).order_by(e.c.last_seen.desc()).limit(limit)
        if sync:
            query = query.where(e.c.sync == sync)
        if not include_resolved:
            query = query.where(e.c.resolved_at.is_(None))
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def count_record_errors(self, sync: str | None, include_resolved: bool) -> int:
        """How many record errors `record_errors` would list without its limit."""
        e = schema.record_errors
        query = sa.select(sa.func.count()).select_from(e)
        if sync:
            query = query.where(e.c.sync == sync)
        if not include_resolved:
            query = query.where(e.c.resolved_at.is_(None))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def count_dead(self, sync: str | None) -> int:
        """How many open record errors are dead (buried after their max attempts)."""
        e = schema.record_errors
        query = (
            sa.select(sa.func.count())
            .select_from(e)
            .where(e.c.resolved_at.is_(None), e.c.dead_at.is_not(None))
        )
        if sync:
            query = query.where(e.c.sync == sync)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def audit(self, sync: str, limit: int) -> list[dict[str, Any]]:
        """Cursor audit rows, newest first (values as stored: typed JSON text)."""
        a = schema.cursor_audit
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(a).where(a.c.sync == sync).order_by(a.c.id.desc()).limit(limit)
            ).mappings()
            return [dict(row) for row in rows]

    def reset(self, sync: str) -> dict[str, int]:
        """Forget a sync's cursors, ledger, errors and delivery attempts (run history and audit are
        kept); the rows removed per table, and one audit row `reset`."""
        out = {}
        with self.engine.begin() as conn:
            for table in RESET:
                out[table.name] = conn.execute(sa.delete(table).where(table.c.sync == sync)).rowcount
            conn.execute(
                sa.insert(schema.cursor_audit).values(
                    sync=sync, run_id=None, name="*", old_value=None, new_value="reset", committed_at=stamp()
                )
            )
        return out

    def purge(self, sync: str, retention: dt.timedelta) -> dict[str, int]:
        """Drop history older than `retention`: finished runs (the latest run is always kept),
        cursor audit rows and resolved record errors. Open errors, cursors and the ledger stay."""
        cutoff = stamp(utcnow() - retention)
        r, a, e = schema.runs, schema.cursor_audit, schema.record_errors
        with self.engine.begin() as conn:
            latest = conn.execute(sa.select(sa.func.max(r.c.id)).where(r.c.sync == sync)).scalar()
            return {
                "runs": conn.execute(
                    sa.delete(r).where(
                        r.c.sync == sync,
                        r.c.finished_at.is_not(None),
                        r.c.finished_at < cutoff,
                        r.c.id != latest,
                    )
                ).rowcount,
                "audit": conn.execute(
                    sa.delete(a).where(a.c.sync == sync, a.c.committed_at < cutoff)
                ).rowcount,
                "errors": conn.execute(
                    sa.delete(e).where(
                        e.c.sync == sync, e.c.resolved_at.is_not(None), e.c.resolved_at < cutoff
                    )
                ).rowcount,
            }


# the tables `reset` empties of a sync, in this order
RESET = (schema.cursors, schema.ledger, schema.record_errors, schema.unmapped, schema.attempts, schema.leases)
