"""A reconciliation check run (`mapsync reconcile`, the daemon's scheduled checks): which checks a
command names, one check run under its lease with its run row and stored result, and the repair
followed by the check again.

A check run is a run of kind `reconcile` whose sync is `reconcile:<check>`: it takes the lease of
that name (one process runs a check at a time; another gets LeaseHeld naming the holder), writes
the run row (`success` when the check found nothing, `partial` when it found differences,
`failed` when it could not run) and records the result (`store.reconciliation`), which the monitor
`reconcile_mismatch` judges. A check that cannot run (a connection away, a table missing) is a
result with `error` set (redacted), never a traceback; a bug still raises after its run row and
result say it failed.

`--sync S` names the checks of S and S's drift check: the sheet's `drift: S` check, or the implicit
one named `drift:S` when the sheet declares none and S writes to a SQL connection (a drift check
compares a SQL table with the ledger: a sync writing to an API has none).

The result is recorded before the run row is finished: a crash between the two leaves a run row
still `running` (its lease expires; `mapsync runs` shows it) rather than a finished run whose
result the monitor never sees. The run row's message holds counts and the error's kind, never a
record's values (the stored result's `error` keeps the whole redacted text).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
from collections.abc import Callable

from mapsync import errors, run_failures
from mapsync.engine import Engine
from mapsync.lease_watch import heartbeat
from mapsync.reconcile import compute, repair
from mapsync.reconcile.results import CheckResult
from mapsync.records import RunKind, RunStatus
from mapsync.sheet import models
from mapsync.sheet.reconcile_models import ReconcileCheck
from mapsync.state.clock import utcnow

log = logging.getLogger("mapsync.reconcile")
PREFIX = "reconcile:"  # a check's lease and run rows: `reconcile:<check>`
IMPLICIT = "drift:"  # `--sync S` without a declared drift check of S: the check `drift:S`
SLOT = "reconcile"  # the daemon's slot of a scheduled check (its run rows' `slot`)

Compute = Callable[[Engine, str, ReconcileCheck], CheckResult]


def run_sync(check: str) -> str:
    """The lease and run-row name of a check."""
    return PREFIX + check


def check_of(sheet: models.Sheet, name: str) -> ReconcileCheck:
    """The check `name`: the sheet's, or the implicit drift check `drift:SYNC` (ConfigError else)."""
    if name in sheet.reconcile:
        return sheet.reconcile[name]
    if name.startswith(IMPLICIT) and name[len(IMPLICIT) :] in sheet.syncs:
        sync = name[len(IMPLICIT) :]
        if not writes_sql(sheet, sync):
            raise errors.ConfigError(
                f"check {name}: sync {sync} writes to {sheet.syncs[sync].to.connection}, not a SQL "
                "connection: it has no drift check"
            )
        return ReconcileCheck(drift=sync)
    known = ", ".join(sheet.reconcile) or "none"
    raise errors.ConfigError(f"unknown check {name!r} (the sheet's reconcile: checks: {known})")


def writes_sql(sheet: models.Sheet, sync: str) -> bool:
    """Whether the sync writes to a SQL connection (it can have a drift check)."""
    conn = sheet.connections.get(sheet.syncs[sync].to.connection)
    return isinstance(conn, models.SqlConnection)


def checks_for(sheet: models.Sheet, check: str | None = None, sync: str | None = None) -> list[str]:
    """The checks `mapsync reconcile --check/--sync` names: `check` alone, the checks of `sync`
    (business checks naming it, its drift check; `drift:SYNC` when the sheet declares none and
    the sync writes to SQL), both:
    `check` if it is one of `sync`'s; neither: every check of the sheet."""
    if sync is not None and sync not in sheet.syncs:
        raise errors.ConfigError(f"unknown sync {sync!r} (known: {', '.join(sheet.syncs)})")
    if check is not None:
        found = check_of(sheet, check)
        if sync is not None and sync not in (found.sync, found.drift):
            raise errors.ConfigError(f"check {check} is not a check of sync {sync}")
        return [check]
    if sync is None:
        return list(sheet.reconcile)
    names = [n for n, c in sheet.reconcile.items() if sync in (c.sync, c.drift)]
    if not any(sheet.reconcile[n].drift == sync for n in names) and writes_sql(sheet, sync):
        names.append(IMPLICIT + sync)
    return names


def run_check(
    engine: Engine,
    name: str,
    *,
    trigger: str = "cli",
    scheduled_at: dt.datetime | None = None,
    slot: str | None = None,
    compute_with: Compute | None = None,
    repaired: bool = False,
) -> CheckResult:
    """Run check `name` once under its lease (see the module's docstring) and return its result.
    `repaired`: the check after a repair (a clean result is stored as `repaired`, not `ok`).
    Raises LeaseHeld (another process runs it), SlotTaken (the daemon's `slot` at `scheduled_at`
    ran already) and ConfigError for a check the sheet does not have."""
    check = check_of(engine.sheet, name)
    store, lease_name = engine.store, run_sync(name)
    ttl = engine.sheet.state.lease_ttl
    try:
        lease = store.leases.acquire(lease_name, ttl)
    except errors.LeaseHeld as exc:
        raise errors.LeaseHeld(str(exc).replace(f"sync {lease_name}", f"check {name}", 1)) from None
    try:
        with heartbeat(store, lease, True):  # a long check keeps its lease
            run_id = store.start_run(
                lease_name, RunKind.RECONCILE, trigger, lease.token, scheduled_at, slot=slot
            )
            return _run(engine, name, check, run_id, compute_with or compute.compute, repaired)
    finally:
        with contextlib.suppress(errors.MapsyncError):  # else it expires on its own
            store.leases.release(lease)


def _run(
    engine: Engine, name: str, check: ReconcileCheck, run_id: int, fn: Compute, repaired: bool
) -> CheckResult:
    store, started = engine.store, utcnow()
    log.info("reconcile_started", extra={"action": "reconcile_started", "check": name, "run_id": run_id})
    failure: str | None = None
    bug: BaseException | None = None
    try:
        result = fn(engine, name, check)
    except errors.MapsyncError as exc:
        result = _failed(name, check, engine.redact_text(str(exc)))
        failure = run_failures.failure_class(exc)
    except Exception as exc:  # a bug: recorded as failed, then raised
        result = _failed(name, check, engine.redact_text(f"{type(exc).__name__}: {exc}"))
        failure, bug = "tool", exc
    if result.error is not None and failure is None:
        failure = "source"
    status = RunStatus.FAILED if result.error else RunStatus.SUCCESS if result.ok else RunStatus.PARTIAL
    stored = result.to_json()
    if repaired and result.ok:
        stored["status"] = "repaired"  # clean, after `--repair` fixed what the check before found
    # the result first: the monitor judges it; a crash before finish_run leaves the run `running`
    store.reconciliation.record_result(stored, run_id=run_id, started_at=started, finished_at=utcnow())
    store.finish_run(run_id, status, failure, summary(result, failure))
    log.info(
        "reconcile_finished",
        extra={
            "action": "reconcile_finished",
            "check": name,
            "run_id": run_id,
            "status": result.status,
            "compared": result.compared,
            "differences": result.differences(),
        },
    )
    if bug is not None:
        raise bug
    return result


def _failed(name: str, check: ReconcileCheck, error: str) -> CheckResult:
    sync = check.drift if check.drift is not None else check.sync
    return CheckResult(name, check.kind, sync=sync, error=error)


def summary(result: CheckResult, failure: str | None = None) -> str:
    """The run row's message: one line of counts, or that the check could not run and the kind of
    failure. Never the error's text: an API side's or a database's error may quote a record's
    values (run rows have no `include_values` gate); the stored result keeps it
    (`mapsync reconcile --check NAME`)."""
    if result.error is not None:
        kind = f" ({failure} failure)" if failure else ""
        return (
            f"check {result.check} could not run{kind}: the stored result says why "
            f"(`mapsync reconcile SHEET --check {result.check}`)"
        )
    what = "groups" if result.kind == "business" else "rows"
    found = ", ".join(f"{result.count(n)} {n.replace('_', ' ')}" for n in result.LISTS if result.count(n))
    if result.undigested:
        found += (", " if found else "") + f"{result.undigested} undigested (not compared)"
    return f"{result.compared} {what} compared, {result.matched} matched" + (f"; {found}" if found else "")


@dataclasses.dataclass
class Repaired:
    """`mapsync reconcile --repair`: the check before, what the repair did, the check after."""

    before: CheckResult
    outcome: repair.RepairOutcome | None = None  # None: nothing to repair (clean, or no run)
    after: CheckResult | None = None

    @property
    def final(self) -> CheckResult:
        return self.after if self.after is not None else self.before


def repair_check(
    engine: Engine,
    name: str,
    before: CheckResult,
    *,
    trigger: str = "cli",
    force_deletes: bool = False,
    max_keys: int | None = repair.MAX_KEYS,
) -> Repaired:
    """`--repair`: when `before` found differences, re-send what differs (`reconcile.repair`, a
    run of kind `repair` of the check's sync; `force_deletes`: past the mass-delete guard), then
    run the check again."""
    if before.error is not None or not before.differences():  # (`incomplete`: nothing to re-send)
        return Repaired(before)
    outcome = repair.repair(
        engine, engine.sheet, before, trigger=trigger, force_deletes=force_deletes, max_keys=max_keys
    )
    after = run_check(engine, name, trigger=trigger, repaired=True)
    return Repaired(before, outcome, after)
