"""The port `History` of a SQL state store (`store.history`): the read-only views of runs,
record errors and cursor audit (`status`, `errors`, `runs`, `state show`), `reset` and the
retention purge. state/report.py and state/retention.py are the older module form, kept for their
callers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from mapsync.state import faults, rollups, run_records, schema
from mapsync.state.clock import stamp, utcnow
from mapsync.state.ledger import DELETED_HASH

BATCH = 5000  # rows per purge transaction: a big purge never holds its locks for long
PER_RUN = ("runs", "record_errors", "cursor_audit")
KEEP_ENDED = (
    "success",
    "partial",
    "failed",
)  # a sync's latest run of these is never purged  # what the engine purges after each run


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

    def runs(self, sync: str | None, limit: int, *, without: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Run rows, newest first (of one sync, or all; `without` these statuses)."""
        r = schema.runs
        query = sa.select(r).order_by(r.c.id.desc()).limit(limit)
        if sync:
            query = query.where(r.c.sync == sync)
        if without:
            query = query.where(r.c.status.not_in(list(without)))
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

    def run_records(self, run_id: int, limit: int) -> list[dict[str, Any]]:
        """The records run `run_id` touched: key (text), outcome, message (redacted), at."""
        a, e = schema.attempts, schema.record_errors
        with self.engine.connect() as conn:
            tried = conn.execute(
                sa.select(a.c.key, a.c.outcome, a.c.message, a.c.at)
                .where(a.c.run_id == run_id)
                .order_by(a.c.id)
                .limit(limit)
            ).mappings()
            attempts = [dict(row) for row in tried]
            failed = conn.execute(
                sa.select(e.c.key, e.c.message, e.c.last_seen).where(e.c.run_id == run_id).limit(limit)
            ).mappings()
            return run_records.merge(attempts, [dict(row) for row in failed], limit)

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

    def sync_gauges(self) -> dict[str, dict[str, Any]]:
        """Per sync (two grouped queries, for `/metrics`): `last_success`, when its latest
        successful run finished (a stamp, or absent), and `open_errors`, its open record errors."""
        r, e = schema.runs, schema.record_errors
        out: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for sync, finished in conn.execute(
                sa.select(r.c.sync, sa.func.max(r.c.finished_at))
                .where(r.c.status == "success")
                .group_by(r.c.sync)
            ):
                out.setdefault(sync, {})["last_success"] = finished
            for sync, n in conn.execute(
                sa.select(e.c.sync, sa.func.count()).where(e.c.resolved_at.is_(None)).group_by(e.c.sync)
            ):
                out.setdefault(sync, {})["open_errors"] = int(n)
        return out

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
        """Drop one sync's history older than `retention`: finished runs (rolled up first; the
        latest run is always kept), cursor audit rows and resolved record errors (the older form
        of `purge_tables`, under its older names)."""
        ages = dict.fromkeys(PER_RUN, retention)
        done = self.purge_tables(ages, syncs=[sync])
        return {"runs": done["runs"], "audit": done["cursor_audit"], "errors": done["record_errors"]}

    def purge_tables(
        self,
        ages: Mapping[str, dt.timedelta],
        *,
        syncs: Sequence[str] | None = None,
        late_ms: Mapping[str, int] | None = None,
        dry_run: bool = False,
        batch: int = BATCH,
    ) -> dict[str, int]:
        """Per table of `ages` (names of `RETENTION_TABLES`), delete what is finished and older
        than its age (of `syncs`, or every sync): table → rows deleted (or, `dry_run`, that would
        be). Each table goes in batches of `batch` rows, each batch its own short transaction; run
        rows are folded into the daily rollups in the transaction that deletes them."""
        now = utcnow()
        out: dict[str, int] = {}
        for table, age in ages.items():
            cutoff = cutoff_of(table, now, age)
            target = targets(table, cutoff, syncs)
            if dry_run:
                out[table] = faults.call(self.engine, functools.partial(self._count, target), "purge")
                continue
            total = 0
            while True:
                step = functools.partial(self._batch, target, batch, late_ms)
                done, more = faults.call(self.engine, step, "purge")
                total += done
                if not more:
                    break
            out[table] = total
        if "runs" in ages and not dry_run:  # the audit log goes with the run history (not counted)
            cutoff = stamp(now - ages["runs"])
            faults.call(self.engine, functools.partial(self._purge_web, cutoff, syncs), "purge")
        return out

    def _purge_web(self, cutoff: str, syncs: Sequence[str] | None) -> None:
        """Audit rows older than `cutoff` (of `syncs`, or all) and sessions ended before it."""
        a, w = schema.audit_log, schema.web_sessions
        with self.engine.begin() as conn:
            where = [a.c.at < cutoff] + ([a.c.sync.in_(list(syncs))] if syncs is not None else [])
            conn.execute(sa.delete(a).where(*where))
            if syncs is None:
                conn.execute(sa.delete(w).where(sa.or_(w.c.expires_at < cutoff, w.c.revoked_at < cutoff)))

    def _count(self, target: Target) -> int:
        query = sa.select(sa.func.count()).select_from(target.table).where(*target.where)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def _batch(self, target: Target, batch: int, late_ms: Mapping[str, int] | None) -> tuple[int, bool]:
        """One batch of `target` deleted in one transaction: how many rows, and whether it was a
        full batch (there may be more; fewer, as when another purger took some, ends the table)."""
        t = target.table
        pk = list(t.primary_key.columns)
        key = sa.tuple_(*pk) if len(pk) > 1 else pk[0]
        chosen = sa.select(*pk).where(*target.where).order_by(*pk).limit(batch)
        with self.engine.begin() as conn:
            if t is schema.runs:
                gone = (
                    conn.execute(
                        sa.delete(t).where(key.in_(chosen)).returning(*(t.c[name] for name in rollups.FOLDED))
                    )
                    .mappings()
                    .all()
                )
                rollups.add(conn, rollups.fold([dict(row) for row in gone], late_ms))
                return len(gone), len(gone) == batch
            if t is schema.incidents:  # their notifications go with them (none is pending)
                ids = list(conn.execute(chosen).scalars())
                if not ids:
                    return 0, False
                n = schema.notifications
                conn.execute(sa.delete(n).where(n.c.incident_id.in_(ids)))
                closed = int(conn.execute(sa.delete(t).where(t.c.id.in_(ids), *target.where)).rowcount)
                return closed, len(ids) == batch
            deleted = int(conn.execute(sa.delete(t).where(key.in_(chosen), *target.where)).rowcount)
            return deleted, deleted == batch


@dataclasses.dataclass(frozen=True)
class Target:
    """The rows of one retention table that may go: `table` where all of `where` hold."""

    table: sa.Table
    where: tuple[sa.ColumnElement[bool], ...]


def cutoff_of(table: str, now: dt.datetime, age: dt.timedelta) -> str:
    """The stamp (a day, for rollups) before which `table`'s rows may go. Runs: rounded down to a
    UTC midnight, so that a day's runs are rolled up together (they are kept up to a day longer)."""
    moment = now - age
    if table in ("runs", "rollups"):
        moment = moment.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.astimezone(dt.UTC).date().isoformat() if table == "rollups" else stamp(moment)


def targets(table: str, cutoff: str, syncs: Sequence[str] | None) -> Target:
    """What of `table` (a name of `RETENTION_TABLES`) is finished and older than `cutoff`."""
    s = schema
    where: list[sa.ColumnElement[bool]]
    if table == "runs":
        r, newest = s.runs, s.runs.alias("newest")
        # kept whatever their age: each sync's latest row, its latest run that ran to an end and its
        # latest success (what `status`, the monitors and `/metrics` say of it)
        kept = []
        for statuses in (None, KEEP_ENDED, ("success",)):
            latest = sa.select(sa.func.max(newest.c.id)).group_by(newest.c.sync)
            if statuses is not None:
                latest = latest.where(newest.c.status.in_(statuses))
            if syncs is not None:  # the engine's purge after a run: look at that sync's runs only
                latest = latest.where(newest.c.sync.in_(list(syncs)))
            kept.append(latest)
        where = [r.c.finished_at.is_not(None), r.c.finished_at < cutoff, r.c.id.not_in(sa.union(*kept))]
        t: sa.Table = r
    elif table == "record_errors":
        t = s.record_errors
        where = [t.c.resolved_at.is_not(None), t.c.resolved_at < cutoff]
    elif table == "cursor_audit":
        t = s.cursor_audit
        where = [t.c.committed_at < cutoff]
    elif table == "inbox":  # `new` waits for a run, `error` is an open problem: both stay
        t = s.inbox
        where = [t.c.status.in_(INBOX_DONE), t.c.processed_at < cutoff]
    elif table == "async_batches":
        t = s.async_batches
        where = [t.c.status.in_(BATCHES_SETTLED), t.c.updated_at < cutoff]
    elif table == "unmapped":
        t = s.unmapped
        where = [t.c.resolved_at.is_not(None), t.c.resolved_at < cutoff]
    elif table == "tombstones":
        t = s.ledger
        where = [sa.or_(t.c.deleted == sa.true(), t.c.hash == DELETED_HASH), t.c.updated_at < cutoff]
    elif table == "alerts":
        t, n = s.incidents, s.notifications
        pending = sa.select(n.c.id).where(n.c.incident_id == t.c.id, n.c.status == "pending").exists()
        where = [t.c.status == "resolved", t.c.resolved_at < cutoff, ~pending]
    elif table == "attempts":
        t = s.attempts
        where = [t.c.at < cutoff]
    elif table == "rollups":
        t = s.rollups
        where = [t.c.day < cutoff]
    elif table == "reconcile":  # each check's latest result stays (what the monitor judges)
        t, newest = s.reconcile_results, s.reconcile_results.alias("newest")
        latest = sa.select(sa.func.max(newest.c.id)).group_by(newest.c.check)
        where = [t.c.finished_at < cutoff, t.c.id.not_in(latest)]
    else:
        raise KeyError(table)
    if syncs is not None:
        where.append(t.c.sync.in_(list(syncs)))
    return Target(t, tuple(where))


INBOX_DONE = ("processed", "stale")
BATCHES_SETTLED = ("done", "failed")


# the tables `reset` empties of a sync, in this order
RESET = (schema.cursors, schema.ledger, schema.record_errors, schema.unmapped, schema.attempts, schema.leases)
