"""StateStore: all SQL of mapsync's own state (SQLite by default, or PostgreSQL)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from mapsync import crash, deadline, errors, records
from mapsync.db_timeouts import connect_args as timeout_args
from mapsync.db_timeouts import resolved
from mapsync.sheet.timeout_models import Timeouts
from mapsync.state import attempts as attempt_rows
from mapsync.state import faults, schema, unmapped, values
from mapsync.state.async_batches import SqlJobs
from mapsync.state.budget import BudgetMixin
from mapsync.state.clock import stamp as stamp
from mapsync.state.clock import utcnow as utcnow
from mapsync.state.controls import ControlsMixin
from mapsync.state.cursors import CursorsMixin
from mapsync.state.data import Attempt
from mapsync.state.data import Counts as Counts
from mapsync.state.history import SqlHistory
from mapsync.state.inbox import SqlInbox
from mapsync.state.incidents import SqlIncidents
from mapsync.state.lease import SqlLeases
from mapsync.state.ledger import LedgerEntry as LedgerEntry
from mapsync.state.ledger import LedgerMixin
from mapsync.state.meter import coordination
from mapsync.state.observations import SqlObservations
from mapsync.state.reconciliation import SqlReconciliation
from mapsync.state.record_errors import RecordErrorsMixin, error_row
from mapsync.state.rollups import SqlRollups
from mapsync.state.runs import RunsMixin, default_worker
from mapsync.state.sessions import SqlAudit, SqlSessions
from mapsync.state.workers import SqlWorkers, newer_schema, session_name


def resolve_url(url: str, folder: Path) -> str:
    """Make a relative SQLite path relative to the sheet's folder, not the working directory."""
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):  # never quote it: a password is in there
        raise errors.StateError(
            "state.url is not a valid SQLAlchemy URL (a password holding `@ : / # %` must be "
            "percent-encoded; written as `${VAR}` inside `user:password@`, mapsync encodes it)"
        ) from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database)
        if not path.is_absolute():
            parsed = parsed.set(database=str((folder / path).resolve()))
    return parsed.render_as_string(hide_password=False)


class StateStore(RunsMixin, LedgerMixin, RecordErrorsMixin, BudgetMixin, ControlsMixin, CursorsMixin):
    """One state store; every method is one short transaction (`guarded`: a failure of the
    store itself is retried when transient, else a StateError naming it; see `state.faults`).
    Implements the port `Store` (state/ports.py): leases, inbox, async jobs and the history
    views are its objects `leases`, `inbox`, `jobs`, `history`."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.set_identity(default_worker(), None)  # the worker and sheet of its run rows
        faults.install(engine)  # its failures: one StateError naming the store (state/faults.py)
        self.leases = SqlLeases(engine)
        self.inbox = SqlInbox(engine)
        self.jobs = SqlJobs(engine)
        self.history = SqlHistory(engine)
        self.workers = SqlWorkers(engine)
        self.incidents = SqlIncidents(engine)
        self.observations = SqlObservations(engine)
        self.attempts = attempt_rows.SqlAttempts(engine)
        self.rollups = SqlRollups(engine)
        self.reconciliation = SqlReconciliation(engine)
        self.sessions = SqlSessions(engine)
        self.audit = SqlAudit(engine)

    # ----------------------------------------------------------------- opening

    @classmethod
    def open(
        cls,
        url: str,
        folder: Path,
        *,
        create: bool,
        timeouts: Timeouts | None = None,
        repair: bool = True,
        lock_timeout: dt.timedelta | None = None,
    ) -> StateStore:
        """Open the store. Without `create`, a missing store is an error, never a fresh start.
        `timeouts` (`state.timeouts`, resolved for the lease) bound a PostgreSQL store's waits;
        `repair` marks runs whose process is gone as failed (`check`, which changes nothing, not);
        `lock_timeout` (`state.lock_timeout`) is how long SQLite waits for another's write lock."""
        full = resolve_url(url, folder)
        parsed = sa.make_url(full)
        safe = parsed.render_as_string(hide_password=True)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            path = Path(parsed.database)
            if not path.exists():
                if not create:
                    raise errors.StateError(
                        f"state store {path} does not exist: run `mapsync seed` first "
                        "(a missing state never means 'start from zero')"
                    )
                path.parent.mkdir(parents=True, exist_ok=True)
        backend = parsed.get_backend_name()
        args = timeout_args(backend, resolved(timeouts)) if backend == "postgresql" else {}
        if backend == "postgresql":
            # a session that names its process (a worker that finds it expired ends its sessions,
            # SqlWorkers), and whose transaction the server ends when its client stops between two
            # statements (a frozen process must not hold the locks a takeover needs)
            statement = resolved(timeouts).statement or dt.timedelta(minutes=5)
            idle = math.ceil(statement.total_seconds() * 1000)
            args["options"] += f" -c idle_in_transaction_session_timeout={idle}"
            args["application_name"] = session_name(default_worker())
        engine = sa.create_engine(full, pool_pre_ping=True, **({"connect_args": args} if args else {}))
        deadline.track(engine)
        if engine.dialect.name == "sqlite":
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        store = cls(engine)
        try:
            faults.call(engine, lambda: store._migrate(create=create), "open")
            if backend == "postgresql":
                store.workers.now()  # from now on every stamp is on the database's clock
            if repair:
                store._fail_abandoned()
            if lock_timeout is not None:  # after the upgrade and repair, which keep the 30 s wait
                faults.set_lock_timeout(engine, lock_timeout.total_seconds())
        except errors.StateError:
            engine.dispose()
            raise
        except sa.exc.DatabaseError as exc:  # the store's own messages (state/faults.py classifies the rest)
            engine.dispose()
            raise errors.StateError(f"state store {safe} is unreadable: {exc.orig}") from None
        except sa.exc.SQLAlchemyError as exc:
            engine.dispose()
            raise errors.StateError(f"state store {safe}: {type(exc).__name__}: {exc}") from None
        return store

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        """One round trip to the store, not retried (a health probe answers at once)."""
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def _fail_abandoned(self) -> None:
        """Runs left `running` by a dead process or a store cut become failed (best effort: a
        read-only store is still opened for viewing)."""
        try:
            with self.engine.begin() as conn:
                self.fail_abandoned(conn)
        except errors.StateError:
            pass

    def _migrate(self, *, create: bool) -> None:
        """Bring the schema to this mapsync's version, or refuse a newer one before writing
        anything. The upgrade is applied by one process at a time, under a lock (PostgreSQL: an
        advisory lock; SQLite: the database's write lock, `BEGIN IMMEDIATE`), and the version is
        read again under it: a second process waits, then finds the work done."""
        with self.engine.connect() as conn:
            current = self._version(conn)
        self._check_version(current, create)
        if current == schema.SCHEMA_VERSION:
            return
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # two processes opening a fresh store at once must not both create its tables
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(7234511, 1)"))
            elif self.dialect == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            current = self._version(conn)
            self._check_version(current, create)
            for version in range(current, schema.SCHEMA_VERSION):
                schema.MIGRATIONS[version](conn)
            if current != schema.SCHEMA_VERSION:
                conn.execute(sa.delete(schema.meta).where(schema.meta.c.name == "schema_version"))
                conn.execute(
                    sa.insert(schema.meta).values(name="schema_version", value=str(schema.SCHEMA_VERSION))
                )
            if 0 < current < schema.SCHEMA_VERSION:
                # a run of an older mapsync still under way writes nothing more: its next renewal
                # or batch commit finds its lease gone (its last batch is sent again by a worker
                # of this version, which the destination absorbs)
                conn.execute(sa.delete(schema.leases))

    @staticmethod
    def _version(conn: sa.Connection) -> int:
        if not sa.inspect(conn).has_table(schema.meta.name):
            return 0
        row = conn.execute(
            sa.select(schema.meta.c.value).where(schema.meta.c.name == "schema_version")
        ).scalar()
        return int(row or 0)

    @staticmethod
    def _check_version(current: int, create: bool) -> None:
        if current == 0 and not create:
            raise errors.StateError(
                "state store has no mapsync tables: run `mapsync seed` first "
                "(a missing state never means 'start from zero')"
            )
        if current > schema.SCHEMA_VERSION:
            raise newer_schema(current)

    def _ledger_upsert_sql(self) -> str:
        """The ledger upsert as driver SQL, positional parameters in the order of `cols`."""
        q = self.engine.dialect.identifier_preparer.quote
        t = schema.ledger
        cols = ["sync", "key", "version", "hash", "dest_id", "deleted", "updated_at", "dkey", "digest"]
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        # a delivery without a drift pair keeps the stored one when its row's `keep` parameter
        # (after the values: one per drift column) is 1 (seen unchanged), else stores its own
        # (NULL for a row written without a digest: `_drift`)
        kept = ("dkey", "digest")
        return (  # identifiers from our own schema, values as parameters
            f"INSERT INTO {q(t.name)} ({', '.join(q(c) for c in cols)}) "  # noqa: S608
            f"VALUES ({', '.join(mark for _ in cols)}) ON CONFLICT ({q('sync')}, {q('key')}) DO UPDATE SET "
            + ", ".join(
                f"{q(c)} = CASE WHEN {mark} = 1 THEN COALESCE(excluded.{q(c)}, {q(t.name)}.{q(c)}) "
                f"ELSE excluded.{q(c)} END"
                if c in kept
                else f"{q(c)} = excluded.{q(c)}"
                for c in cols
                if c not in ("sync", "key")
            )
        )

    # ----------------------------------------------------------------- the commit

    @coordination("state_commit")
    def commit(
        self,
        *,
        sync: str,
        token: str,
        run_id: int,
        delivered: Sequence[records.Delivered],
        rejected: Sequence[records.Rejection],
        cursors: dict[str, Any],
        counts: Counts,
        lease_ttl: dt.timedelta,
        attempts: Sequence[Attempt] = (),
        columns: records.DeliveredColumns | None = None,
    ) -> list[dict[str, Any]]:
        """Record one batch's outcome in one transaction, fenced by the lease token: the ledger,
        record errors, unmapped values, the batch's delivery attempts (state/attempts.py), the
        cursors and the run's counts.

        Returns the unmapped values seen for the first time (see `state.unmapped`). Retried on a
        transient store failure (`state.faults`); the lease's new expiry marks the transaction,
        so a retry whose first try did commit (a cut after COMMIT) is not applied twice."""
        renew_to = stamp(utcnow() + lease_ttl)
        return faults.call(
            self.engine,
            lambda: self._commit(
                sync, token, run_id, delivered, rejected, cursors, counts, renew_to, attempts, columns
            ),
            "commit",
        )

    def _commit(
        self,
        sync: str,
        token: str,
        run_id: int,
        delivered: Sequence[records.Delivered],
        rejected: Sequence[records.Rejection],
        cursors: dict[str, Any],
        counts: Counts,
        renew_to: str,
        attempts: Sequence[Attempt] = (),
        columns: records.DeliveredColumns | None = None,
    ) -> list[dict[str, Any]]:
        now = stamp()
        new_values: list[dict[str, Any]] = []
        with self.engine.begin() as conn:
            lease = schema.leases
            renewed = conn.execute(
                sa.update(lease)
                .where(lease.c.sync == sync, lease.c.token == token, lease.c.expires_at != renew_to)
                .values(expires_at=renew_to)
            ).rowcount
            if renewed != 1:
                mark = conn.execute(
                    sa.select(lease.c.expires_at).where(lease.c.sync == sync, lease.c.token == token)
                ).scalar()
                if mark == renew_to:
                    return []  # a retry: the first try committed before its connection broke
                raise errors.LeaseLost(f"sync {sync}: lease lost to another process; batch result discarded")
            rows: list[tuple[Any, ...]] = []
            keys: list[str] = []
            if delivered:
                latest = {records.key_text(d.key): d for d in delivered}  # last wins
                rows = [
                    (
                        sync,
                        key,
                        values.encode(d.version),
                        d.hash,
                        d.dest_id,
                        d.op == "delete",
                        now,
                        *_drift(d),
                    )
                    for key, d in latest.items()
                ]
                keys = list(latest)
            if columns:  # a columnar batch's upserts: disjoint from `delivered`, each key once
                rows += _column_rows(sync, columns, now)
                keys += columns.keys
            if rows:
                # one prepared upsert through the driver's executemany: SQLAlchemy's per-row
                # parameter processing cost more than the insert itself on large batches
                conn.exec_driver_sql(self._ledger_upsert_sql(), rows)
                e = schema.record_errors
                has_open = conn.execute(
                    sa.select(sa.literal(1)).where(e.c.sync == sync, e.c.resolved_at.is_(None)).limit(1)
                ).first()
                for i in range(0, len(keys) if has_open else 0, 500):
                    conn.execute(
                        sa.update(e)
                        .where(e.c.sync == sync, e.c.key.in_(keys[i : i + 500]), e.c.resolved_at.is_(None))
                        .values(resolved_at=now)
                    )
            if rejected:
                new_values = unmapped.record(conn, sync, rejected, now)  # before the errors: see there
                self._record_errors(conn, sync, run_id, rejected, now)
            if rows:
                unmapped.resolve(conn, sync, now)
            attempt_rows.write(conn, sync, run_id, attempts, now)
            self._set_cursors(conn, sync, run_id, cursors)
            self._add_counts(conn, run_id, counts)
            crash.point("during_state_write")
        return new_values

    def _record_errors(
        self, conn: sa.Connection, sync: str, run_id: int, rejected: Sequence[records.Rejection], now: str
    ) -> None:
        e = schema.record_errors
        by_key = {records.key_text(r.key): r for r in rejected}
        attempts = dict(
            conn.execute(
                sa.select(e.c.key, e.c.attempts).where(e.c.sync == sync, e.c.key.in_(list(by_key)))
            ).all()
        )
        rows = [error_row(sync, key, r, attempts.get(key, 0) + 1, run_id, now) for key, r in by_key.items()]
        crash.point("during_error_record")
        ins: Any = (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(e)
        keep_first = {
            c.name: ins.excluded[c.name]
            for c in e.columns
            if c.name not in ("sync", "key", "first_seen", "dead_at")
        }
        keep_first["dead_at"] = sa.case((e.c.resolved_at.is_(None), e.c.dead_at), else_=None)  # kept_dead
        conn.execute(ins.on_conflict_do_update(index_elements=["sync", "key"], set_=keep_first), rows)

    def _add_counts(self, conn: sa.Connection, run_id: int, counts: Counts) -> None:
        r = schema.runs
        conn.execute(
            sa.update(r)
            .where(r.c.id == run_id)
            .values({f.name: r.c[f.name] + getattr(counts, f.name) for f in dataclasses.fields(counts)})
        )


def _column_rows(sync: str, columns: records.DeliveredColumns, now: str) -> list[tuple[Any, ...]]:
    """The ledger rows of a columnar batch's upserts (their drift pairs stored as `_drift`
    stores a written row's)."""
    texts = columns.version_texts
    if texts is None:
        texts = [values.encode(v) for v in columns.versions]
    return [
        (sync, key, version, hash_, dest_id, False, now, *_pair(pair))
        for key, version, hash_, dest_id, pair in zip(
            columns.keys, texts, columns.hashes, columns.dest_ids, columns.drift, strict=True
        )
    ]


def _pair(pair: tuple[str, str] | None) -> tuple[str | None, str | None, int, int]:
    """A written row's (dkey, digest, keep flags) in the ledger upsert (see `_drift`)."""
    if pair is None:
        return None, None, 1, 1
    if pair == records.NO_DRIFT:
        return None, None, 0, 0
    return pair[0], pair[1], 0, 0


def _drift(d: records.Delivered) -> tuple[str | None, str | None, int, int]:
    """The ledger's (dkey, digest) of a delivery, then the upsert's `keep` flags (1: an existing
    entry keeps its stored pair). A delete and a delivery without a pair (seen unchanged)
    keep it; a row written without a digest (`records.NO_DRIFT`) stores NULL."""
    return _pair(None if d.op == "delete" else d.drift)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
