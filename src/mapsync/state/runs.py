"""The run history of the state store (`mapsync_runs`): a mixin of `StateStore`.

A run row is `running` from `start_run` to `finish_run`. A run that cannot record its end (its
process died, or the state store failed under it) is marked `failed` by whoever comes next:
the lease takeover (`fail_stale`), or at the latest the next `StateStore.open`
(`fail_abandoned`: a running run whose lease is gone, expired, or held by a dead process on
this host). A failure before a run row exists (an unreachable source, a dropped table, an
unseeded sync, a lease held elsewhere) is recorded by `record_failed_run`, so `status` never
shows an earlier `success` as the last word; a run that was not run (its slot overlapped a
running one, its sync paused) by `record_skipped_run`.

Schema v5: a run row names its worker and sheet fingerprint (`set_identity`), and a scheduled
run its `slot` (run | retry); the unique index on (sync, slot, scheduled_at) lets each slot run
once: a second row for it raises `errors.SlotTaken`.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import os
import socket
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from mapsync.errors import FailureClass, SlotGone, SlotTaken
from mapsync.state import schema
from mapsync.state.clock import stamp, unstamp, utcnow
from mapsync.state.faults import guarded
from mapsync.state.meter import coordination

# the run row the current call started (`start_run` sets it): lets the engine tell a failure
# before the run row (`run_failures`) from one the run records itself
started_run: contextvars.ContextVar[int | None] = contextvars.ContextVar("mapsync_started_run", default=None)


def default_worker() -> str:
    """This process as a worker: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def run_row(
    sync: str,
    kind: str,
    trigger: str,
    token: str,
    status: str,
    scheduled_at: dt.datetime | None,
    identity: tuple[str | None, str | None],
    *,
    slot: str | None = None,
    coalesced: int = 0,
    finished: bool = False,
) -> dict[str, Any]:
    """The columns of a new run row (not its id, counts, failure class or message): started now,
    `lateness_ms` the time since `scheduled_at`, `identity` the store's (worker, fingerprint)."""
    if slot is not None and scheduled_at is None:
        raise ValueError(f"sync {sync}: a run of the {slot} slot needs its scheduled time")
    if coalesced < 0:
        raise ValueError(f"sync {sync}: coalesced must be 0 or more, not {coalesced}")
    now = utcnow()
    late = None
    if scheduled_at is not None:  # a naive time is local time, as `stamp` takes it
        late = int((now - scheduled_at.astimezone(dt.UTC)) // dt.timedelta(milliseconds=1))
    return {
        "sync": sync,
        "kind": kind,
        "trigger": trigger,
        "lease_token": token,
        "status": status,
        "scheduled_at": stamp(scheduled_at) if scheduled_at else None,
        "started_at": stamp(now),
        "finished_at": stamp(now) if finished else None,
        "worker": identity[0],
        "sheet_fingerprint": identity[1],
        "slot": slot,
        "lateness_ms": late,
        "coalesced": coalesced,
    }


def ended_row(
    sync: str,
    kind: str,
    trigger: str,
    status: str,
    scheduled_at: dt.datetime | None,
    identity: tuple[str | None, str | None],
    slot: str | None,
    coalesced: int,
) -> dict[str, Any]:
    """A run row that ends as it is written (failed before its run, skipped): no lease token."""
    return run_row(
        sync, kind, trigger, "", status, scheduled_at, identity, slot=slot, coalesced=coalesced, finished=True
    )


def slot_taken(row: dict[str, Any], holder: tuple[int, str] | None) -> int:
    """After the slot index refused `row`: the id of the run holding the slot when it is this
    very row written by a first try whose success was not seen (same non-empty lease token), else
    raises SlotTaken."""
    if holder is not None and row["lease_token"] and holder[1] == row["lease_token"]:
        return holder[0]
    raise SlotTaken(row["sync"], str(row["slot"]), str(row["scheduled_at"]), holder[0] if holder else None)


def stale_slot_run(row: dict[str, Any]) -> SlotGone:
    """A scheduled run may only start under a live lease: a process frozen between taking its
    lease and writing its run row (a zombie) must not record a slot that the worker that took
    its syncs over has counted already (among the slots its first run coalesced)."""
    return SlotGone(row["sync"], str(row["slot"]), str(row["scheduled_at"]))


def skip_message(reason: str, message: str) -> str:
    """A skipped run's message: its reason (`overlap`, `paused` …) and what happened."""
    return f"{reason}: {message}"[:2000]


class RunsMixin:
    engine: sa.Engine
    worker: str | None = None  # set_identity; None until then (StateStore sets host:pid)
    fingerprint: str | None = None

    def set_identity(self, worker: str, fingerprint: str | None) -> None:
        """Who writes the run rows from now on (`worker`, e.g. host:pid) and under which sheet
        (`fingerprint`, a hash of it)."""
        self.worker, self.fingerprint = worker, fingerprint

    def _identity(self) -> tuple[str | None, str | None]:
        return self.worker, self.fingerprint

    fence: Callable[[], tuple[str, str] | None] | None = None

    def set_fence(self, fence: Callable[[], tuple[str, str] | None] | None) -> None:
        """A daemon's: its (worker id, token) now. A slot row written without a lease (skipped,
        failed before its run) is then inserted only while that worker's registration is alive
        and the sync is its claim (else SlotGone): a daemon frozen between its checks and its
        insert records nothing for a sync another worker took over and counted."""
        self.fence = fence

    def _claim(self) -> tuple[str, str] | None:
        return self.fence() if self.fence is not None else None

    def _insert_run(self, row: dict[str, Any]) -> int:
        """Insert a run row; a slot already taken raises SlotTaken (see `slot_taken`)."""
        r = schema.runs
        try:
            with self.engine.begin() as conn:
                run_id = int(conn.execute(sa.insert(r).values(**row)).inserted_primary_key[0])  # type: ignore[index]
                if row["slot"] is not None and row["lease_token"]:
                    lease = schema.leases
                    expiry = conn.execute(
                        sa.select(lease.c.expires_at).where(
                            lease.c.sync == row["sync"], lease.c.token == row["lease_token"]
                        )
                    ).scalar()
                    if expiry is None or expiry < stamp():  # the insert rolls back
                        raise stale_slot_run(row)
                elif row["slot"] is not None and (claim := self._claim()) is not None:
                    w, c = schema.workers, schema.claims
                    held = conn.execute(
                        sa.select(sa.literal(1))
                        .select_from(c.join(w, w.c.id == c.c.worker))
                        .where(
                            c.c.sync == row["sync"],
                            c.c.worker == claim[0],
                            c.c.token == claim[1],
                            w.c.token == claim[1],
                            w.c.expires_at >= stamp(),
                        )
                    ).first()
                    if held is None:  # a daemon presumed dead meanwhile: the new owner counts it
                        raise stale_slot_run(row)
                return run_id
        except sa.exc.IntegrityError:
            if row["slot"] is None:
                raise
        with self.engine.connect() as conn:
            holder = conn.execute(
                sa.select(r.c.id, r.c.lease_token).where(
                    r.c.sync == row["sync"], r.c.slot == row["slot"], r.c.scheduled_at == row["scheduled_at"]
                )
            ).first()
        return slot_taken(row, (int(holder[0]), str(holder[1])) if holder else None)

    @coordination("run_start")
    @guarded
    def start_run(
        self,
        sync: str,
        kind: str,
        trigger: str,
        token: str,
        scheduled_at: dt.datetime | None = None,
        *,
        slot: str | None = None,
        coalesced: int = 0,
    ) -> int:
        """A run row `running`. With a `slot` (run | retry) and its `scheduled_at`, the slot is
        taken: SlotTaken if another run has it already."""
        row = run_row(
            sync,
            kind,
            trigger,
            token,
            "running",
            scheduled_at,
            self._identity(),
            slot=slot,
            coalesced=coalesced,
        )
        run_id = self._insert_run(row)
        started_run.set(run_id)
        return run_id

    @coordination("run_finish")
    @guarded
    def finish_run(
        self,
        run_id: int,
        status: str,
        failure_class: str | None = None,
        message: str | None = None,
        *,
        reason: str | None = None,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(schema.runs)
                .where(schema.runs.c.id == run_id)
                .values(
                    status=status,
                    failure_class=failure_class,
                    message=message,
                    reason=reason,
                    finished_at=stamp(),
                )
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
        *,
        slot: str | None = None,
        coalesced: int = 0,
        reason: str | None = None,
    ) -> int:
        """A run that failed before it could start (no lease, so no lease token). With a `slot`,
        the failure takes it (SlotTaken if another run has it already)."""
        row = ended_row(sync, kind, trigger, "failed", scheduled_at, self._identity(), slot, coalesced)
        return self._insert_run(
            {**row, "failure_class": failure_class, "message": message[:2000], "reason": reason}
        )

    @guarded
    def record_skipped_run(
        self,
        sync: str,
        kind: str,
        trigger: str,
        scheduled_at: dt.datetime | None,
        slot: str | None,
        reason: str,
        message: str,
        coalesced: int = 0,
    ) -> int | None:
        """A run that did not happen (status `skipped`, message "<reason>: <message>"), taking
        its slot; None when the slot was taken already (never SlotTaken)."""
        row = ended_row(sync, kind, trigger, "skipped", scheduled_at, self._identity(), slot, coalesced)
        try:
            return self._insert_run({**row, "message": skip_message(reason, message)})
        except SlotTaken:
            return None

    @guarded
    def last_slot(self, sync: str, slot: str) -> dt.datetime | None:
        """The latest scheduled time recorded for this sync and slot (any status), or None."""
        r = schema.runs
        with self.engine.connect() as conn:
            latest = conn.execute(
                sa.select(sa.func.max(r.c.scheduled_at)).where(r.c.sync == sync, r.c.slot == slot)
            ).scalar()
        return unstamp(latest) if latest else None

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
