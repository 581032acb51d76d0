"""The run history of the state store (`mapsync_runs`): a mixin of `StateStore`.

A run row is `running` from `start_run` to `finish_run`. A run that cannot record its end (its
process died, or the state store failed under it) is marked `failed` by whoever comes next:
the lease takeover (`fail_stale`), or at the latest the next `StateStore.open`
(`fail_abandoned`: a running run whose lease is gone, expired, or held by a dead process on
this host). A failure before a run row exists (an unreachable source, a dropped table, an
unseeded sync, a lease held elsewhere) is recorded by `record_failed_run`, so `status` never
shows an earlier `success` as the last word.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import os
import socket
from typing import Any

import sqlalchemy as sa

from mapsync.errors import FailureClass
from mapsync.state import schema
from mapsync.state.clock import stamp
from mapsync.state.faults import guarded

# the run row the current call started (`start_run` sets it): lets the engine tell a failure
# before the run row (`run_failures`) from one the run records itself
started_run: contextvars.ContextVar[int | None] = contextvars.ContextVar("mapsync_started_run", default=None)


class RunsMixin:
    engine: sa.Engine

    @guarded
    def start_run(
        self, sync: str, kind: str, trigger: str, token: str, scheduled_at: dt.datetime | None = None
    ) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.insert(schema.runs).values(  # the counts: their column default, 0
                    sync=sync,
                    kind=kind,
                    trigger=trigger,
                    lease_token=token,
                    status="running",
                    scheduled_at=stamp(scheduled_at) if scheduled_at else None,
                    started_at=stamp(),
                )
            )
            run_id = int(result.inserted_primary_key[0])  # type: ignore[index]
        started_run.set(run_id)
        return run_id

    @guarded
    def finish_run(
        self, run_id: int, status: str, failure_class: str | None = None, message: str | None = None
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(schema.runs)
                .where(schema.runs.c.id == run_id)
                .values(status=status, failure_class=failure_class, message=message, finished_at=stamp())
            )

    @guarded
    def record_failed_run(
        self,
        sync: str,
        kind: str,
        trigger: str,
        failure_class: str,
        message: str,
        scheduled_at: dt.datetime | None = None,
    ) -> int:
        """A run that failed before it could start (no lease, so no lease token)."""
        now = stamp()
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.insert(schema.runs).values(
                    sync=sync,
                    kind=kind,
                    trigger=trigger,
                    lease_token="",
                    status="failed",
                    failure_class=failure_class,
                    message=message[:2000],
                    scheduled_at=stamp(scheduled_at) if scheduled_at else None,
                    started_at=now,
                    finished_at=now,
                )
            )
            return int(result.inserted_primary_key[0])  # type: ignore[index]

    @guarded
    def discard_run(self, run_id: int) -> None:
        """Forget a run that changed nothing (follow mode's idle polls) with its cursor audit
        rows, which can only be moves that the run itself undid."""
        with self.engine.begin() as conn:
            conn.execute(sa.delete(schema.cursor_audit).where(schema.cursor_audit.c.run_id == run_id))
            conn.execute(sa.delete(schema.runs).where(schema.runs.c.id == run_id))

    @guarded
    def run(self, run_id: int) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(schema.runs).where(schema.runs.c.id == run_id)).mappings().one()
        return dict(row)

    def fail_abandoned(self, conn: sa.Connection) -> int:
        """Mark failed the running runs nobody runs any more: their lease is gone or expired, or
        its holder was a process on this host that no longer exists. Returns how many."""
        r, t = schema.runs, schema.leases
        now, host = stamp(), socket.gethostname()
        running = conn.execute(
            sa.select(r.c.id, t.c.host, t.c.pid, t.c.expires_at)
            .select_from(r.outerjoin(t, sa.and_(t.c.sync == r.c.sync, t.c.token == r.c.lease_token)))
            .where(r.c.status == "running")
        ).all()
        done = 0
        for run_id, holder, pid, expires in running:
            cls = FailureClass.STATE
            if holder is None:
                why = "abandoned: its lease is gone and it never recorded its end (the state store failed)"
            elif holder == host and not alive(int(pid)):
                why = f"the process running it died or lost the state store (pid {pid} on this host is gone)"
                cls = FailureClass.TOOL
            elif expires < now:
                why = (
                    f"abandoned: its lease expired at {expires} and it never recorded its end "
                    "(the process died or stalled, or the state store was cut)"
                )
            else:
                continue
            done += conn.execute(
                sa.update(r)
                .where(r.c.id == run_id, r.c.status == "running")
                .values(status="failed", failure_class=cls, finished_at=now, message=why)
            ).rowcount
        return done


STALE = "the process running it died (its lease was taken over)"


def fail_stale(conn: sa.Connection, sync: str, token: str) -> None:
    """The running runs under a lease token taken over: failed (class `tool`)."""
    conn.execute(
        sa.update(schema.runs)
        .where(
            schema.runs.c.sync == sync,
            schema.runs.c.lease_token == token,
            schema.runs.c.status == "running",
        )
        .values(status="failed", failure_class="tool", finished_at=stamp(), message=STALE)
    )


def alive(pid: int) -> bool:
    """Whether a process of this host has this pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
