"""The daemon's scheduled reconciliation checks (`reconcile.NAME.schedule`): the `reconcile`
chore (daemon_chores.py, a thread of its own, so a long check never delays a sync's slot).

A check's slots are its schedule's (`every` counted from the epoch, or `cron` in its zone:
`mapsync.schedules`, as a sync's). At each due slot the chore runs the check
(`reconcile.runner.run_check`, trigger `schedule`, slot `reconcile`): under the lease
`reconcile:<check>` and with the slot on its run row, so among several daemons sharing the store
exactly one runs each slot (the others meet the held lease or the taken slot and pass). As for a
sync, a check that never ran a slot waits for its next one (`mapsync reconcile` runs it now), and
after downtime only the latest missed slot runs. A check that fails is logged (redacted) and
recorded as a failed result; it never stops the daemon or a sync. After the checks that ran, the
monitor `reconcile_mismatch` is evaluated at once (`after`)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from mapsync import errors, schedules
from mapsync.engine import Engine
from mapsync.reconcile import runner
from mapsync.sheet.loader import LoadedSheet
from mapsync.state.clock import utcnow
from mapsync.state.ports import Store

log = logging.getLogger("mapsync.daemon")
EVERY = dt.timedelta(seconds=15)  # how often the chore looks for due slots
FIRST = 10.0  # seconds after the daemon's start: its first look


class ScheduledChecks:
    """The `reconcile` chore's work (see the module's docstring): callable with the chores'
    state store. `loaded()`: the sheet the daemon runs now (after a reload, the new one)."""

    def __init__(
        self,
        loaded: Callable[[], LoadedSheet],
        redact: Callable[[str], str],
        after: Callable[[Store], None] = lambda store: None,
        now: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.loaded = loaded
        self.redact = redact
        self.after = after
        self.now = now
        self.handled: dict[str, dt.datetime] = {}  # check → its latest slot handled
        self._engine: Engine | None = None

    def __call__(self, store: Store) -> None:
        loaded = self.loaded()
        due = self.due(loaded, store, self.now())
        if not due:
            return
        engine = self._engine_for(loaded, store)
        ran = 0
        for name, at in due:
            ran += self.run(engine, name, at)
        if ran:
            self.after(store)

    def due(self, loaded: LoadedSheet, store: Store, now: dt.datetime) -> list[tuple[str, dt.datetime]]:
        """The checks whose slot fell due since the last one handled: (check, slot); each slot
        counts as handled once it is returned."""
        found = []
        for name, check in loaded.sheet.reconcile.items():
            sched = schedules.of(check.schedule) if check.schedule is not None else None
            slot = sched.slot_at_or_before(now) if sched is not None else None
            if slot is None:
                continue
            if name not in self.handled:  # first look: what ran before (this or another daemon)
                last = store.last_slot(runner.run_sync(name), runner.SLOT)
                self.handled[name] = last if last is not None else slot  # never ran: the next one
            if slot <= self.handled[name]:
                continue
            self.handled[name] = slot
            found.append((name, slot))
        return found

    def run(self, engine: Engine, name: str, slot: dt.datetime) -> int:
        """Run one check's slot; 1 if it ran here."""
        try:
            result = runner.run_check(engine, name, trigger="schedule", scheduled_at=slot, slot=runner.SLOT)
        except (errors.LeaseHeld, errors.SlotTaken):  # another daemon runs it, or ran it
            return 0
        except Exception as exc:  # never stops the daemon: logged, tried at its next slot
            log.warning(
                "reconcile_check_failed",
                extra={
                    "action": "reconcile_check_failed",
                    "check": name,
                    "error": self.redact(f"{type(exc).__name__}: {exc}"),
                },
            )
            return 1
        log.info(
            "reconcile_check_ran",
            extra={"action": "reconcile_check_ran", "check": name, "status": result.status},
        )
        return 1

    def _engine_for(self, loaded: LoadedSheet, store: Store) -> Engine:
        """One engine for the checks (its connections kept between slots), anew after a reload."""
        engine = self._engine
        if engine is not None and (engine.loaded is not loaded or engine.store is not store):
            engine.close()
            engine = None
        if engine is None:
            engine = self._engine = Engine(loaded, store)
        return engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None
