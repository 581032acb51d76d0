"""The daemons sharing one state store (`mapsync_workers`) and which of them runs which sync
(`mapsync_claims`): the port `Workers` of a SQL store (`store.workers`).

No coordinator of our own: the database is the referee. Each daemon **registers** (its id
host:pid, a fresh token, what it may run) and **beats** every `lease_ttl / 3`; a beat, in one
transaction:

1. refuses to go on when the store's schema is newer than this mapsync knows (`newer_schema`:
   the daemon stops without writing);
2. renews the worker's registration to the database's now + `lease_ttl`; when the row is gone
   (another worker found it expired: the process was stopped, cut off, or too slow), it
   registers again and owns nothing until it claims again;
3. removes the workers whose registration expired, with their claims (their syncs are free);
4. claims free syncs up to its fair share, ceil(syncs / live workers that may run them), and
   releases its surplus idle syncs to a worker that may run them (`plan`).

A claim lives as long as its worker's registration. Each scheduled slot still runs once by the
run rows' unique slot index, and each run is fenced by its lease token: a claim decides who
*schedules* a sync; the lease, who may *write* for it.

Every time here is the database's (`clock.utcnow`, corrected by the offset `now()` measures).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from mapsync import __version__, errors
from mapsync.state import clock, schema
from mapsync.state.claim_plan import plan
from mapsync.state.clock import stamp, unstamp
from mapsync.state.data import Beat, WorkerInfo
from mapsync.state.faults import call
from mapsync.state.meter import coordination
from mapsync.state.runs import alive as pid_alive

log = logging.getLogger("mapsync.state")


def newer_schema(found: int) -> errors.StateError:
    return errors.StateError(
        f"state store schema version {found} is newer than this mapsync ({schema.SCHEMA_VERSION}, "
        f"mapsync {__version__}): this worker stops without writing; upgrade mapsync on this host "
        '(docs/operations.md, "Upgrading")',
        reason="newer_schema",
    )


def gone(row: dict[str, Any], now: dt.datetime) -> bool:
    """Whether a registered worker is presumed dead: silent past its expiry (the database's
    clock), or a process of this host that no longer exists (found at once, as a lease is)."""
    if row["expires_at"] < stamp(now):
        return True
    return bool(row["host"] == socket.gethostname() and not pid_alive(int(row["pid"])))


def session_name(worker: str) -> str:
    """The `application_name` of a worker's PostgreSQL sessions (at most 63 bytes)."""
    host, _, pid = worker.rpartition(":")
    return f"mapsync {pid} {host}"[:63]  # the pid first: a long host name is what is cut


def worker_row(me: WorkerInfo, token: str, now: dt.datetime, ttl: dt.timedelta) -> dict[str, Any]:
    """A worker's registration row (without `started_at`): renewed to now + `ttl`."""
    return {
        "id": me.id,
        "token": token,
        "host": me.host,
        "pid": me.pid,
        "version": me.version,
        "schema_version": schema.SCHEMA_VERSION,
        "sheet": me.sheet,
        "sheet_fingerprint": me.fingerprint,
        "syncs": json.dumps(sorted(me.syncs)),
        "heartbeat_at": stamp(now),
        "expires_at": stamp(now + ttl),
    }


def age(now: str, then: str) -> float:
    """Seconds from stamp `then` to stamp `now`."""
    return max(0.0, round((unstamp(now) - unstamp(then)).total_seconds(), 3))


def one_daemon(row: dict[str, Any]) -> errors.StateError:
    return errors.StateError(
        f"a SQLite state store allows one daemon, and {row['id']} runs it (started "
        f"{row['started_at']}, last heartbeat {row['heartbeat_at']}): stop it first, or put the "
        "state store on PostgreSQL (`state.url`) to run several workers",
        reason="one_daemon",
    )


class SqlWorkers:
    """The `Workers` port of a SQL state store (tables `mapsync_workers`, `mapsync_claims`)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    # ------------------------------------------------------------- the database's clock

    @coordination("clock")
    def now(self) -> dt.datetime:
        """The state store's clock (PostgreSQL's `clock_timestamp()`); also sets the process's
        offset (`clock.set_offset`) so that every stamp it writes is on that clock. A SQLite
        store lives on this machine: its clock is this machine's."""
        return call(self.engine, self._now, "now")

    def _now(self, conn: sa.Connection | None = None) -> dt.datetime:
        if self.dialect != "postgresql":
            return clock.utcnow()
        if conn is None:
            with self.engine.connect() as own:
                return self._now(own)
        before = clock.SYSTEM.time()  # the clock `utcnow` corrects
        db = conn.execute(sa.text("SELECT clock_timestamp()")).scalar_one()
        after = clock.SYSTEM.time()
        db = db.astimezone(dt.UTC)
        clock.set_offset(db.timestamp() - (before + after) / 2)
        return db  # type: ignore[no-any-return]

    # ------------------------------------------------------------- register, beat, leave

    @coordination("worker_register")
    def register(self, me: WorkerInfo, ttl: dt.timedelta, *, alone: bool = False) -> str:
        """Register `me` (a fresh token; claims of an earlier process with its id are dropped) and
        return the token. `alone` (a SQLite store): refused, `one_daemon`, while another live
        daemon is registered."""
        return call(self.engine, lambda: self._register(me, ttl, alone), "register")

    def _register(self, me: WorkerInfo, ttl: dt.timedelta, alone: bool) -> str:
        token = uuid.uuid4().hex
        with self.engine.begin() as conn:
            self._bounded(conn, ttl)
            self._check_schema(conn)
            now = self._now(conn)
            w = schema.workers
            others = [dict(r) for r in conn.execute(sa.select(w).where(w.c.id != me.id)).mappings()]
            dead = [r["id"] for r in others if gone(r, now)]
            if alone:
                for row in others:
                    if row["id"] not in dead:
                        raise one_daemon(row)
            self._drop(conn, [me.id, *dead])
            conn.execute(sa.insert(w).values(**worker_row(me, token, now, ttl), started_at=stamp(now)))
        return token

    @coordination("worker_beat")
    def beat(self, me: WorkerInfo, token: str, ttl: dt.timedelta, busy: set[str]) -> Beat:
        """One heartbeat (see the module's docstring): renew, remove the expired, claim and release."""
        return call(self.engine, lambda: self._beat(me, token, ttl, busy), "beat")

    def _beat(self, me: WorkerInfo, token: str, ttl: dt.timedelta, busy: set[str]) -> Beat:
        w, c = schema.workers, schema.claims
        with self.engine.begin() as conn:
            self._bounded(conn, ttl)
            self._check_schema(conn)
            now = self._now(conn)
            row = worker_row(me, token, now, ttl)
            renewed = conn.execute(
                sa.update(w)
                .where(w.c.id == me.id, w.c.token == token)
                .values(
                    heartbeat_at=row["heartbeat_at"],
                    expires_at=row["expires_at"],
                    syncs=row["syncs"],
                    sheet=row["sheet"],
                    sheet_fingerprint=row["sheet_fingerprint"],
                )
            ).rowcount
            rejoined = renewed != 1
            if rejoined:  # presumed dead meanwhile (or replaced): its claims are gone; join again
                token = uuid.uuid4().hex
                self._drop(conn, [me.id])
                conn.execute(sa.insert(w).values(**worker_row(me, token, now, ttl), started_at=stamp(now)))
            rows = [
                dict(r)
                for r in conn.execute(
                    sa.select(w.c.id, w.c.host, w.c.pid, w.c.expires_at, w.c.syncs)
                ).mappings()
            ]
            expired = [r["id"] for r in rows if r["id"] != me.id and gone(r, now)]
            self._end_sessions(conn, expired)
            self._drop(conn, expired)
            live = {r["id"]: set(json.loads(r["syncs"])) for r in rows if r["id"] not in expired}
            live.setdefault(me.id, set(me.syncs))
            claims = {r[0]: r[1] for r in conn.execute(sa.select(c.c.sync, c.c.worker))}
            release, claim = plan(me.id, me.syncs, claims, live, busy)
            if release:
                conn.execute(sa.delete(c).where(c.c.worker == me.id, c.c.sync.in_(release)))
            if claim:
                ins: Any = (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(c)
                conn.execute(
                    ins.on_conflict_do_nothing(index_elements=["sync"]),
                    [{"sync": s, "worker": me.id, "token": token, "claimed_at": stamp(now)} for s in claim],
                )
            owns = frozenset(
                r[0] for r in conn.execute(sa.select(c.c.sync).where(c.c.worker == me.id, c.c.token == token))
            )
        return Beat(token, owns, len(live), now, rejoined, tuple(expired))

    @coordination("worker_leave")
    def leave(self, me: WorkerInfo, token: str) -> None:
        """A clean stop: the worker and its claims are gone at once (the others claim its syncs
        at their next beat instead of after its TTL)."""

        def go() -> None:
            w = schema.workers
            with self.engine.begin() as conn:
                mine = conn.execute(sa.select(w.c.id).where(w.c.id == me.id, w.c.token == token)).first()
                if mine is not None:
                    self._drop(conn, [me.id])  # claims freed, requests not finished back to the queue

        call(self.engine, go, "leave")

    def _end_sessions(self, conn: sa.Connection, ids: list[str]) -> None:
        """End the state-store sessions of workers presumed dead (PostgreSQL): a frozen process
        may hold row locks in an open transaction (a lease being taken, a batch being committed)
        that would block the takeover until it wakes. Needs the same role or `pg_signal_backend`;
        without, the sessions end by `idle_in_transaction_session_timeout` (set on every session
        of the store, at most half the lease)."""
        if self.dialect != "postgresql" or not ids:
            return
        try:
            with conn.begin_nested():
                pids = (
                    conn.execute(  # first the sessions, then end them (no reliance on AND's order)
                        sa.text(
                            "SELECT pid FROM pg_stat_activity WHERE application_name = ANY(:names) "
                            "AND pid <> pg_backend_pid()"
                        ),
                        {"names": [session_name(w) for w in ids]},
                    )
                    .scalars()
                    .all()
                )
                ended = sum(
                    1
                    for pid in pids
                    if conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
                )
        except sa.exc.DBAPIError as exc:
            log.warning(
                "worker_sessions_not_ended",
                extra={
                    "action": "worker_sessions_not_ended",
                    "workers": ",".join(ids),
                    "error": str(exc.orig),
                },
            )
            return
        if ended:
            log.warning(
                "worker_sessions_ended",
                extra={"action": "worker_sessions_ended", "workers": ",".join(ids), "sessions": ended},
            )

    def _drop(self, conn: sa.Connection, ids: list[str]) -> None:
        """Forget workers: their claims are free, and the run requests they took and did not
        finish go back to the queue (`new`) for the worker that runs the sync now."""
        if not ids:
            return
        w, c, q = schema.workers, schema.claims, schema.run_requests
        conn.execute(sa.delete(c).where(c.c.worker.in_(ids)))
        conn.execute(sa.delete(w).where(w.c.id.in_(ids)))
        conn.execute(
            sa.update(q)
            .where(q.c.status == "taken", q.c.taken_by.in_(ids))
            .values(status="new", taken_at=None, taken_by=None)
        )

    def _bounded(self, conn: sa.Connection, ttl: dt.timedelta) -> None:
        """A beat waits at most ttl/3 for a row lock (a peer frozen inside its own beat holds
        some): it fails, and the next beat tries again, after the peer's sessions were ended."""
        if self.dialect == "postgresql":
            ms = max(100, int(ttl.total_seconds() * 1000 / 3))
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {ms}")

    def _check_schema(self, conn: sa.Connection) -> None:
        found = conn.execute(
            sa.select(schema.meta.c.value).where(schema.meta.c.name == "schema_version")
        ).scalar()
        if found is not None and int(found) > schema.SCHEMA_VERSION:
            raise newer_schema(int(found))

    # ------------------------------------------------------------- the view (`mapsync workers`)

    def overview(self) -> dict[str, Any]:
        """Every registered worker (alive or expired), what it claims and what it runs now, and
        the database's now."""
        return call(self.engine, self._overview, "workers")

    def _overview(self) -> dict[str, Any]:
        w, c, r = schema.workers, schema.claims, schema.runs
        with self.engine.connect() as conn:
            now = stamp(self._now(conn))
            rows = [dict(x) for x in conn.execute(sa.select(w).order_by(w.c.started_at, w.c.id)).mappings()]
            claims = conn.execute(sa.select(c.c.sync, c.c.worker).order_by(c.c.sync)).all()
            running = conn.execute(
                sa.select(r.c.sync, r.c.id, r.c.started_at, r.c.worker)
                .where(r.c.status == "running")
                .order_by(r.c.id)
            ).all()
        out = []
        for row in rows:
            out.append(
                {
                    "id": row["id"],
                    "host": row["host"],
                    "pid": row["pid"],
                    "version": row["version"],
                    "schema_version": row["schema_version"],
                    "sheet": row["sheet"],
                    "sheet_fingerprint": row["sheet_fingerprint"],
                    "started_at": row["started_at"],
                    "heartbeat_at": row["heartbeat_at"],
                    "expires_at": row["expires_at"],
                    "heartbeat_age_s": round(
                        (unstamp(now) - unstamp(row["heartbeat_at"])).total_seconds(), 3
                    ),
                    "alive": row["expires_at"] >= now,
                    "syncs": json.loads(row["syncs"]),
                    "owns": [s for s, wid in claims if wid == row["id"]],
                    "running": [
                        {"sync": s, "run_id": i, "started_at": at}
                        for s, i, at, wid in running
                        if wid == row["id"]
                    ],
                }
            )
        return {"now": now, "workers": out, "claims": {s: wid for s, wid in claims}}
