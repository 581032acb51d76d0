"""The run kinds beyond a sync's own runs: the public methods of `Engine` (engine.py) that each
build a `Plan` and hand it to the engine's one run loop (`Engine._scoped`): retry, reexport,
sweep and repair. A mixin: what they share (lease, run row, batches, the run's end) stays in
engine.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from mapsync import guard, run_failures
from mapsync.engine_parts import PartsCache
from mapsync.lease_watch import settled
from mapsync.records import RunKind
from mapsync.reexport_plan import ReexportPlan
from mapsync.repair_plan import MAX_KEYS, ExtraRow, RepairPlan
from mapsync.run_scope import Plan, Request, RetryPlan
from mapsync.run_types import Parts, RunReport, counted
from mapsync.sweep_plan import SweepPlan


class KindRuns(PartsCache):
    """retry | reexport | sweep | repair (the engine's `_kept` and `_scoped` run them)."""

    def _kept(self, name: str, scoped: Callable[[], RunReport]) -> RunReport:
        raise NotImplementedError  # Engine's

    def _scoped(self, name: str, parts: Parts, plan: Plan, request: Request) -> RunReport:
        raise NotImplementedError  # Engine's

    def redact_text(self, text: str) -> str:
        raise NotImplementedError  # Engine's

    @counted
    @run_failures.recorded
    @settled
    def retry(
        self,
        name: str,
        field: str | None = None,
        *,
        trigger: str = "cli",
        key: tuple[str, ...] | None = None,
        keys: Sequence[tuple[str, ...]] | None = None,
        automatic: bool = False,
        max_attempts: int | None = None,
        scheduled_at: dt.datetime | None = None,
        slot: str | None = None,
    ) -> RunReport:
        """Re-send the records of open record errors (only those naming `field`, or of the one
        `key` as written on the command line, or of these `keys` (a daemon's request), if given),
        read afresh from the source by key, through the usual map → write → commit; a run of
        kind `retry` under the sync's lease that leaves the capture cursors alone. `automatic`
        (the daemon): dead errors are left out, and errors tried `max_attempts` times are buried
        after it (`RunReport.buried`); `scheduled_at` and `slot`: the daemon's retry slot
        (SlotTaken if it ran already)."""
        parts = self.parts(name)
        batch = self.sheet.syncs[name].delivery.batch
        wanted = None if key is None and keys is None else [*([] if key is None else [key]), *(keys or [])]
        plan = RetryPlan(
            self.store, name, parts, batch, field, wanted, automatic=automatic, max_attempts=max_attempts
        )
        request = Request(RunKind.RETRY, trigger, scheduled_at, slot=slot)
        return self._kept(name, lambda: self._scoped(name, parts, plan, request))

    @counted
    @run_failures.recorded
    @settled
    def reexport(
        self, name: str, keys: list[tuple[str, ...]] | None = None, *, trigger: str = "cli"
    ) -> RunReport:
        """Set these transactions (keys as written on the command line; None: every failed one)
        pending again at the source and send them now (`reexport_plan`)."""
        parts = self.parts(name)
        plan = ReexportPlan(self.store, name, parts, self.sheet.syncs[name].delivery.batch, keys)
        return self._kept(name, lambda: self._scoped(name, parts, plan, Request(RunKind.REEXPORT, trigger)))

    @counted
    @run_failures.recorded
    @settled
    def sweep(self, name: str, *, trigger: str = "cli") -> RunReport:
        """The lost-order sweep of an export from an API (`sweep_plan`)."""
        plan = SweepPlan(self.store, name, parts := self.parts(name))
        return self._kept(name, lambda: self._scoped(name, parts, plan, Request(RunKind.SWEEP, trigger)))

    @counted
    @run_failures.recorded
    @settled
    def repair(
        self,
        name: str,
        keys: list[str],
        extras: Sequence[ExtraRow],
        *,
        trigger: str = "cli",
        force_deletes: bool = False,
        max_keys: int | None = MAX_KEYS,
    ) -> RunReport:
        """Repair what a reconcile check found (`repair_plan`): `keys` (ledger key texts) read
        afresh at the source and sent past the ledger's "unchanged", or deleted through the
        delete policy where the source no longer holds them; `extras` (destination rows the
        ledger does not hold live) deleted the same way when mapsync delivered them or the sync
        `owns_table`, else left. The mass-delete guard judges the deletes before anything is
        written (`force_deletes`: let this repair through). More than `max_keys` keys to read
        (the keys and the extras that are ours; None: no cap) and the repair is refused before
        anything is read: a failed run whose message says so (`repair_plan.RepairTooLarge`)."""
        cfg = self.sheet.syncs[name]
        parts = self.parts(name)
        run_guard = guard.Guard(name, self.store, cfg.deletes, force=force_deletes)
        plan = RepairPlan(self.store, name, cfg, parts, keys, extras, run_guard, max_keys)
        return self._kept(name, lambda: self._scoped(name, parts, plan, Request(RunKind.REPAIR, trigger)))
