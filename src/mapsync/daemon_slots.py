"""The scheduled slots of a daemon's syncs: which slot falls due, how many it stands for (the
missed ones since the last row: `coalesced`), and which are recorded as skipped and why (held,
paused, still running, backing off). A mixin of `daemon.Daemon`; the worker runs what it offers
(`daemon_worker.Worker.offer`)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from mapsync import schedules
from mapsync.daemon_worker import RETRY, RUN, Job, Worker
from mapsync.state.ports import Store

log = logging.getLogger("mapsync.daemon")
DEFER = ("defer", "")  # a slot decided at a later tick (`Slots._skip_reason`)


class Slots:
    """The slot scheduling of a daemon (see the module's docstring)."""

    store: Store
    handled: dict[tuple[str, str], dt.datetime | None]  # (sync, slot kind) → latest slot handled
    claims_fresh: Callable[[], bool]  # the daemon's (`Membership.claims_fresh`)

    def _schedules(self, w: Worker) -> dict[str, schedules.Schedule]:
        found: dict[str, schedules.Schedule] = {}
        main = schedules.of(w.cfg.schedule)
        if main is not None:
            found[RUN] = main
        if w.cfg.retry is not None and (again := schedules.of(w.cfg.retry)) is not None:
            found[RETRY] = again
        return found

    def _due(self, w: Worker, slot: str, sched: schedules.Schedule, now: dt.datetime) -> None:
        due = sched.slot_at_or_before(now)
        if due is None or not self.claims_fresh():
            return  # a scheduler frozen after its beat writes nothing for syncs it may have lost
        key = (w.name, slot)
        if key not in self.handled:  # first look: what ran before (this or an earlier daemon)
            last = self.store.last_slot(w.name, slot)
            self.handled[key] = last if last is not None else due  # never ran: wait for the next
        last = self.handled[key]
        if last is not None and due <= last:
            return
        reason = self._skip_reason(w, slot)
        if reason == DEFER:
            return  # looked at again next tick (see `_skip_reason`)
        if (counted := self._count_from(w, slot, sched)) is not None:
            last = self.handled[key] = counted
            if due <= last:
                return
        missed = len(schedules.slots_between(sched, last, due)) - 1 if last is not None else 0
        kind = RETRY if slot == RETRY else RUN
        if reason is not None:
            # recorded before the slot counts as handled: a store away now (the tick ends) means
            # the next tick records it, never a slot that passed in silence
            # the slots missed since the last one handled are skipped with it: counted, never lost
            self.store.record_skipped_run(
                w.name, kind, "schedule", due, slot, reason[0], reason[1], coalesced=max(0, missed)
            )
            self.handled[key] = due
            log.warning(
                "daemon_slot_skipped",
                extra={"action": "daemon_slot_skipped", "sync": w.name, "slot": slot, "reason": reason[1]},
            )
            return
        self.handled[key] = due
        if missed:
            log.info(
                "daemon_slots_coalesced",
                extra={"action": "daemon_slots_coalesced", "sync": w.name, "slot": slot, "missed": missed},
            )
        w.offer(Job(kind, "schedule", due, slot, max(0, missed)))

    def _count_from(self, w: Worker, slot: str, sched: schedules.Schedule) -> dt.datetime | None:
        """When the last job of this slot kind that ended here left no row, the slot to count the
        missed ones from (the last row's; with none, the one before that job's); else None. A job ends
        without a row when its run could not start (its lease lapsed while the process stalled:
        SlotGone) or its failure could not be recorded (claims stale, the store away). Another
        worker that took the sync over meanwhile counted that slot, but the sync is still this
        daemon's claim here: counted from the handled slot, it would be lost in silence."""
        ended = w.ended_at(slot)
        if ended is None:
            return None
        last = self.store.last_slot(w.name, slot)  # a store away: asked again at the next tick
        w.looked_at(slot, ended)
        if last is not None and last >= ended:
            return None  # its row (or a later one) is there
        # older than `ended`: the slots the job stood for (its `coalesced`) count again too
        return last if last is not None else sched.slot_at_or_before(ended - dt.timedelta(microseconds=1))

    def _skip_reason(self, w: Worker, slot: str) -> tuple[str, str] | None:
        if w.held is not None:
            return "held", w.held
        if w.paused is not None:
            p = w.paused
            note = f": {p.note}" if p.note else ""
            return "paused", f"paused by {p.by} at {p.at}{note}"
        if w.busy(slot) and not w.queued(slot):  # a slot still waiting is replaced (`Worker.offer`)
            at = w.inflight.get(slot)
            if at is not None and not self._recorded(w.name, slot, at):
                # the slot under way has no run row yet: a skip row now would be the last row,
                # and a daemon killed before that row lost the slot for good (the next worker
                # counts from the last row); decided at a later tick instead
                return DEFER
            return "running", "the previous run was still running"
        if w.backing_off():
            n = w.backoff.failures.get(w.name, 0)
            return "backoff", f"backing off after {n} failed run(s) in a row"
        return None

    def _recorded(self, name: str, slot: str, at: dt.datetime) -> bool:
        last = self.store.last_slot(name, slot)
        return last is not None and last >= at
