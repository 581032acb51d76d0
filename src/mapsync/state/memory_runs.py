"""The in-memory store's run history (port `Runs`): the semantics of state/runs.py (slots unique
per sync, skipped runs, the worker and sheet fingerprint on each row) over the tables of
state/memory_tables.py."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

from mapsync import errors
from mapsync.state.clock import stamp, unstamp
from mapsync.state.data import Counts
from mapsync.state.memory_tables import Memory
from mapsync.state.runs import ended_row, run_row, skip_message, slot_taken, stale_slot_run, started_run

COUNTS = tuple(f.name for f in dataclasses.fields(Counts))


class MemoryRunsMixin:
    memory: Memory
    worker: str | None
    fingerprint: str | None

    def set_identity(self, worker: str, fingerprint: str | None) -> None:
        self.worker, self.fingerprint = worker, fingerprint

    fence: Callable[[], tuple[str, str] | None] | None = None

    def set_fence(self, fence: Callable[[], tuple[str, str] | None] | None) -> None:
        """As `RunsMixin.set_fence`."""
        self.fence = fence

    def _claim(self) -> tuple[str, str] | None:
        return self.fence() if self.fence is not None else None

    def _insert_run(self, row: dict[str, Any]) -> int:
        """A run row (id and counts added); a slot taken already raises SlotTaken (runs.slot_taken)."""
        with self.memory.tx() as t:
            if row["slot"] is not None:
                holder = next(
                    (
                        (i, str(r["lease_token"]))
                        for i, r in t.runs.items()
                        if (r["sync"], r["slot"], r["scheduled_at"])
                        == (row["sync"], row["slot"], row["scheduled_at"])
                    ),
                    None,
                )
                if holder is not None:
                    return slot_taken(row, holder)  # raises unless it is ours
                lease = t.leases.get(row["sync"])
                if row["lease_token"] and (
                    lease is None or lease["token"] != row["lease_token"] or lease["expires_at"] < stamp()
                ):
                    raise stale_slot_run(row)
                claim = self._claim() if not row["lease_token"] else None
                if claim is not None:
                    mine = t.claims.get(row["sync"])
                    me = t.workers.get(claim[0])
                    if (
                        mine is None
                        or (mine["worker"], mine["token"]) != claim
                        or me is None
                        or me["token"] != claim[1]
                        or me["expires_at"] < stamp()
                    ):
                        raise stale_slot_run(row)
            run_id = t.next_id("runs")
            t.runs[run_id] = {
                "id": run_id,
                "failure_class": None,
                "message": None,
                "reason": None,
                **row,
                **dict.fromkeys(COUNTS, 0),
            }
        return run_id

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

    def _identity(self) -> tuple[str | None, str | None]:
        return self.worker, self.fingerprint

    def finish_run(
        self,
        run_id: int,
        status: str,
        failure_class: str | None = None,
        message: str | None = None,
        *,
        reason: str | None = None,
    ) -> None:
        with self.memory.tx() as t:
            run = t.runs.get(run_id)
            if run is not None:
                change = {"status": status, "failure_class": failure_class, "message": message}
                change["reason"] = reason
                t.runs[run_id] = {**run, **change, "finished_at": stamp()}

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
        row = ended_row(sync, kind, trigger, "failed", scheduled_at, self._identity(), slot, coalesced)
        return self._insert_run(
            {**row, "failure_class": failure_class, "message": message[:2000], "reason": reason}
        )

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
        row = ended_row(sync, kind, trigger, "skipped", scheduled_at, self._identity(), slot, coalesced)
        try:
            return self._insert_run({**row, "message": skip_message(reason, message)})
        except errors.SlotTaken:
            return None

    def last_slot(self, sync: str, slot: str) -> dt.datetime | None:
        with self.memory.read() as t:
            latest = max(
                (r["scheduled_at"] for r in t.runs.values() if r["sync"] == sync and r["slot"] == slot),
                default=None,
            )
        return unstamp(latest) if latest else None

    def discard_run(self, run_id: int) -> None:
        with self.memory.tx() as t:
            for audit_id in [i for i, a in t.audit.items() if a["run_id"] == run_id]:
                del t.audit[audit_id]
            t.runs.pop(run_id, None)

    def run(self, run_id: int) -> dict[str, Any]:
        with self.memory.read() as t:
            if run_id not in t.runs:
                raise LookupError(f"no run {run_id}")
            return dict(t.runs[run_id])
