"""What a daemon watches beside its syncs: the chores (monitors every minute under a lease,
alerts every few seconds, the daily purge; `daemon_chores.py` runs each on a thread of its own)
and the monitors a run's end decides, evaluated right after the run on its worker's thread. A
mixin of `daemon.Daemon`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from mapsync import errors, watch, watch_sources
from mapsync.alerts import sender as alert_sender
from mapsync.daemon_chores import Chore, Chores
from mapsync.daemon_reconcile import EVERY as CHECKS_EVERY
from mapsync.daemon_reconcile import FIRST as CHECKS_FIRST
from mapsync.daemon_reconcile import ScheduledChecks
from mapsync.engine import RunReport
from mapsync.sheet.loader import LoadedSheet
from mapsync.state import retention
from mapsync.state.ports import Store

ALERTS_EVERY = dt.timedelta(seconds=5)  # the `alerts` chore: due notices sent, reminders queued
MONITORS_FIRST = 5.0  # seconds after the start: the first evaluation of every sync
MONITORS_EVERY = dt.timedelta(minutes=1)  # the `monitors` chore (mapsync.watch)


class Watching:
    """The chores and the after-run watch of a daemon (see the module's docstring)."""

    loaded: LoadedSheet
    worker: str
    chores: Chores
    _watch_handles: dict[str, Any]  # the monitors chore's source connections
    _watched: LoadedSheet | None
    _checks: ScheduledChecks | None = None  # the reconcile chore's (its engine's connections)
    redact: Callable[[str], str]  # the daemon's

    def _chores(self) -> list[Chore]:
        """The chores of this daemon (monitors, alerts, purge), each from its own module."""

        def send_alerts(store: Store) -> None:
            alert_sender.tick(self.loaded, store, self.worker)

        def evaluate_monitors(store: Store) -> None:  # (self read only when it runs)
            self._monitors(store)

        def judged(store: Store) -> None:  # after scheduled checks: their monitor, then the alerts
            if watch.evaluate(self.loaded, store, [], only=("reconcile_mismatch",)).changed:
                self.chores.wake("alerts")

        checks = self._checks = ScheduledChecks(lambda: self.loaded, lambda text: self.redact(text), judged)

        return [
            # every sync's monitors, in one daemon at a time (mapsync.watch)
            # (first a few seconds, a minute after the start: the daemon's first slots come first)
            Chore("monitors", MONITORS_EVERY, evaluate_monitors, lease=True, first=MONITORS_FIRST),
            Chore(
                "purge", retention.DAILY, retention.daily(lambda: self.loaded.sheet), lease=True, first=60.0
            ),
            # due notices sent, due reminders queued: in every daemon (no lease: the outbox's
            # claim makes each notice go once)
            Chore("alerts", ALERTS_EVERY, send_alerts, lease=False),
            # scheduled reconciliation checks: in every daemon, each check's slot under its own
            # lease and slot row, so one daemon runs it (daemon_reconcile.py)
            Chore("reconcile", CHECKS_EVERY, checks, lease=False, first=CHECKS_FIRST),
        ]

    def _release_watching(self) -> None:
        """At the daemon's stop, once no chore runs: the monitors' source connections and the
        scheduled checks' engine (its SQL connections) closed."""
        watch_sources.release(self._watch_handles)
        if self._checks is not None:
            self._checks.close()

    def _monitors(self, store: Store) -> None:
        """The monitors of every sync of the sheet (one daemon evaluates for all, under the
        chore's lease: each incident is raised once however many workers there are)."""
        loaded = self.loaded
        if loaded is not self._watched:  # first, or reloaded: the sources' connections anew
            watch_sources.release(self._watch_handles)
            self._watched = loaded
        # the sources' connections (reflected tables, server zones) kept from minute to minute
        report = watch.evaluate(loaded, store, list(loaded.sheet.syncs), handles=self._watch_handles)
        if report.changed:
            self.chores.wake("alerts")

    def after_run(
        self, store: Store, loaded: LoadedSheet, name: str, report: RunReport | None = None
    ) -> None:
        """Right after a run of `name` (on its worker's thread, with its store): the monitors its
        end decides (a failure, a guard trip, rejections), at once rather than at the next minute.
        `raise_incident` is idempotent by key, so every worker may do this for its own runs. A
        watch failure is logged and never touches the run. A run that ended cleanly (`report`:
        success, no rejection, counts that add up, no timing window to judge) of a sync with no
        open incident decides nothing: one read, not an evaluation."""
        if report is not None and watch.uneventful(loaded, name, report.status, report.counts):
            try:
                if not store.incidents.open_incidents(name):
                    return
            except errors.MapsyncError:
                return  # the store is away: the minute's evaluation will tell
        found = watch.after_run(loaded, store, name)
        if found is not None and found.changed:
            self.chores.wake("alerts")
