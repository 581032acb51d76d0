"""Watching: the monitors (`mapsync.monitors`) evaluated over facts gathered from the state store
(and, through `watch_sources`, from the syncs' ends), and their findings turned into incidents.

`evaluate` gathers one `SyncFacts` per sync (its recent runs, its lease, paused, seeded, its
thresholds: the sync's `monitors:` over the sheet's) and the sheet's `SheetFacts`, runs the
monitors, then **reconciles** each monitor's answer with the open incidents:

- a list of findings: each finding raises its incident (`Incidents.raise_incident`, idempotent by
  key: opened once, refreshed after), routed to its channels (`alerts.routing.channels_for`); the
  monitor's open incidents of that sync that no finding names any more are resolved;
- None (the monitor cannot tell: a fact it needs is unknown): its incidents stay as they are;
- a monitor the sync's thresholds disable: its open incidents are resolved, nothing is raised;
- incidents of syncs no longer in the sheet are resolved.

Every opening and resolution is logged (`incident_opened` warning, `incident_resolved` info, names
and counts only): without `alerts:` in the sheet that log is all there is. Findings are redacted
(`loaded.secrets`) before they reach the store or the log.

Who calls it: the daemon's `monitors` chore (every minute, in one daemon at a time), a daemon's
worker right after each run (`only=AFTER_RUN`: the monitors a run's end decides), `mapsync monitor`
and, after a one-off run, `mapsync run` (both then `alerts.sender.flush`)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Collection, Iterable, Iterator
from typing import Any

from mapsync import errors, watch_export, watch_sources
from mapsync.alerts.routing import channels_for
from mapsync.monitors import REGISTRY, evaluate_sheet, evaluate_sync
from mapsync.monitors.facts import SheetFacts, SyncFacts
from mapsync.redact import redact
from mapsync.sheet.loader import LoadedSheet
from mapsync.sheet.monitor_models import Thresholds, resolve
from mapsync.state.clock import utcnow
from mapsync.state.data import Finding, Incident
from mapsync.state.ports import Store

log = logging.getLogger("mapsync.watch")

RUNS = 100  # the recent runs a sync's monitors look at, newest first
DAEMON_LEASE = dt.timedelta(seconds=60)  # a daemon's `lease_ttl` unless the sheet sets one (daemon_process)
# the monitors a run's end decides at once (evaluated right after each run): over the run
# history, `unmapped_new` over the state store's unmapped values and `export_failed` over its record
# errors (no source is asked then)
EVENTS = ("failed_run", "guard_tripped", "auth_refused", "budget_exhausted", "unmapped_new", "export_failed")
WATCH_PREFIX = "mapsync:watch:"  # the per-sync watch lease (`_alone`), beside the syncs' own
WATCH_LEASE = dt.timedelta(seconds=30)  # a watcher that dies holding it is passed after this
WATCH_WAIT = 5.0  # seconds a watcher waits for another one's evaluation of the same sync

# what a run's end decides, from the state store alone: its events, its counts, and the timing
# monitors a timely, short or successful run clears (late start, overran, no success)
AFTER_RUN = (
    *EVENTS,
    "counts_mismatch",
    "success_with_rejections",
    "rejection_rate",
    "late_start",
    "overran",
    "no_success",
)


@dataclasses.dataclass
class Report:
    """What one evaluation found and changed."""

    findings: dict[str | None, list[Finding]] = dataclasses.field(default_factory=dict)  # per sync
    unknown: dict[str | None, list[str]] = dataclasses.field(default_factory=dict)  # could not tell
    opened: list[Incident] = dataclasses.field(default_factory=list)
    resolved: list[Incident] = dataclasses.field(default_factory=list)
    refreshed: int = 0
    recorded: bool = True  # False: a dry run (nothing raised or resolved)

    @property
    def changed(self) -> bool:
        """Whether an incident opened or resolved (the alert sender has news)."""
        return bool(self.opened or self.resolved)

    def firing(self) -> list[Finding]:
        return [f for found in self.findings.values() for f in found]


def thresholds(loaded: LoadedSheet, sync: str) -> Thresholds:
    """A sync's thresholds: its own `monitors:` over the sheet's, over the defaults."""
    sheet = loaded.sheet
    return resolve(sheet.monitors, sheet.syncs[sync].monitors)


def lease_ttl(loaded: LoadedSheet, runs: list[dict[str, Any]]) -> dt.timedelta:
    """The lease TTL of the sync's running run: the sheet's `state.lease_ttl`, except that a daemon
    (any trigger but `cli`) runs with at least 60 s unless the sheet sets it
    (`daemon_process.with_daemon_lease`): `mapsync monitor` judging a daemon's run must not take
    its lease for 10 minutes long (60 s errs on the late side: never a false alarm)."""
    state = loaded.sheet.state
    running = next((r for r in runs if r.get("status") == "running"), None)
    if "lease_ttl" in state.model_fields_set or running is None or running.get("trigger") == "cli":
        return state.lease_ttl
    return min(state.lease_ttl, DAEMON_LEASE)


def sync_facts(
    loaded: LoadedSheet,
    store: Store,
    sync: str,
    *,
    paused: Collection[str] = (),
    handles: dict[str, Any] | None = None,
    extra: bool = True,
    record: bool = True,
) -> SyncFacts:
    """The facts of one sync, from the state store (and `watch_sources` when `extra`; without it,
    only what the state store holds: the unmapped values)."""
    sheet = loaded.sheet
    cfg = sheet.syncs[sync]
    seed = store.cursors(sync).get("seed") or {}
    more: dict[str, Any] = {}
    if not extra:
        # the store's alone: cheap after every run
        more = {**watch_sources.unmapped_facts(store, sync), **watch_export.failures(loaded, store, sync)}
    else:
        try:
            own: dict[str, Any] = handles if handles is not None else {}
            try:
                more = watch_sources.sync_extra(loaded, store, sync, own, observe=record)
            finally:
                if handles is None:
                    watch_sources.release(own)
        except Exception as exc:  # a source away: its monitors cannot tell (None)
            log.warning(
                "watch_facts_failed",
                extra={
                    "action": "watch_facts_failed",
                    "sync": sync,
                    "error": redact(f"{type(exc).__name__}: {exc}", loaded.secrets, cap=300),
                },
            )
    # the newest rows of any kind (slots, skips) and, so that a run of backoff or busy skips
    # never pushes the sync's last real runs out of sight, the newest that are not skips
    merged = {r["id"]: r for r in store.history.runs(sync, RUNS)}
    merged.update((r["id"], r) for r in store.history.runs(sync, RUNS, without=("skipped",)))
    runs = [merged[i] for i in sorted(merged, reverse=True)]
    return SyncFacts(
        sync=sync,
        cfg=cfg,
        thresholds=thresholds(loaded, sync),
        now=utcnow(),
        runs=runs,
        lease_ttl=lease_ttl(loaded, runs),
        lease=store.leases.holder(sync),
        paused=sync in paused,
        seeded=isinstance(seed, dict) and seed.get("status") == "done",
        include_values=bool(sheet.alerts and sheet.alerts.include_values),
        extra=more,
    )


def _clean(finding: Finding, secrets: tuple[str, ...]) -> Finding:
    """A finding with every secret redacted from its text (message, subject, runbook, numbers)."""

    def text(value: str) -> str:
        return redact(value, secrets)

    numbers = {k: text(v) if isinstance(v, str) else v for k, v in finding.numbers.items()}
    return dataclasses.replace(
        finding,
        message=text(finding.message),
        subject=text(finding.subject),
        runbook=text(finding.runbook),
        numbers=numbers,
    )


def _log_opened(incident: Incident, level: int) -> None:
    log.log(
        level,
        "incident_opened",
        extra={
            "action": "incident_opened",
            "incident_id": incident.id,
            "monitor": incident.monitor,
            "sync": incident.sync,
            "subject": incident.subject,
            "severity": incident.severity,
            "failure_class": incident.failure_class,
            "channels": len(incident.channels),
            "error": incident.message,
        },
    )


def _log_resolved(incident: Incident) -> None:
    log.info(
        "incident_resolved",
        extra={
            "action": "incident_resolved",
            "incident_id": incident.id,
            "monitor": incident.monitor,
            "sync": incident.sync,
            "subject": incident.subject,
        },
    )


class _Reconciler:
    def __init__(self, loaded: LoadedSheet, store: Store, report: Report, record: bool, level: int) -> None:
        self.loaded = loaded
        self.store = store
        self.report = report
        self.record = record
        self.level = level  # of `incident_opened`
        self.open: dict[tuple[str | None, str], list[Incident]] = {}
        for incident in store.incidents.open_incidents():
            self.open.setdefault((incident.sync, incident.monitor), []).append(incident)

    def reload(self, sync: str | None) -> None:
        """The open incidents of `sync` read again, under its watch lease (`_alone`): what another
        watcher opened or resolved meanwhile is seen, so a stale view never resolves a newer one."""
        self.open = {k: v for k, v in self.open.items() if k[0] != sync}
        for incident in self.store.incidents.open_incidents(sync):
            if incident.sync == sync:
                self.open.setdefault((incident.sync, incident.monitor), []).append(incident)

    def resolve(self, incidents: Iterable[Incident]) -> None:
        for incident in incidents:
            if not self.record:
                continue
            done = self.store.incidents.clear_incident(incident.key)
            if done is not None:
                self.report.resolved.append(done)
                _log_resolved(done)

    def apply(self, sync: str | None, results: dict[str, list[Finding] | None]) -> None:
        alerts = self.loaded.sheet.alerts
        for name, found in results.items():
            if found is None:
                self.report.unknown.setdefault(sync, []).append(name)
                continue
            found = [_clean(f, self.loaded.secrets) for f in found]
            self.report.findings.setdefault(sync, []).extend(found)
            keys = {f.key for f in found}
            if self.record:
                for f in found:
                    incident, opened = self.store.incidents.raise_incident(f, channels_for(f, alerts))
                    if opened:
                        self.report.opened.append(incident)
                        _log_opened(incident, self.level)
                    else:
                        self.report.refreshed += 1
            self.resolve(i for i in self.open.get((sync, name), []) if i.key not in keys)

    def disabled(self, sync: str | None, off: Collection[str], only: Collection[str] | None) -> None:
        """Resolve the open incidents of monitors turned off for this sync."""
        for (at, name), incidents in self.open.items():
            if at == sync and name in off and (only is None or name in only):
                self.resolve(incidents)

    def gone(self) -> None:
        """Resolve the incidents of syncs no longer in the sheet."""
        syncs = self.loaded.sheet.syncs
        for (at, _), incidents in self.open.items():
            if at is not None and at not in syncs:
                self.resolve(incidents)


@contextlib.contextmanager
def _alone(store: Store, sync: str | None, record: bool, wait: float = WATCH_WAIT) -> Iterator[bool]:
    """One watcher at a time per sync (the daemons' after-run evaluations, the monitors chore,
    `mapsync monitor`): the state store lease `mapsync:watch:<sync>` is held while its facts are read
    and its incidents reconciled, so no watcher raises or resolves from a view another one has
    already acted on. Waits up to `wait` seconds; False when another watcher still holds it. A dry
    run takes no lease (it changes nothing)."""
    if not record:
        yield True
        return
    name = f"{WATCH_PREFIX}{sync or '*'}"
    deadline = time.monotonic() + wait
    while True:
        try:
            lease = store.leases.acquire(name, WATCH_LEASE)
            break
        except errors.LeaseHeld:
            if time.monotonic() >= deadline:
                yield False
                return
            time.sleep(0.05)
    try:
        yield True
    finally:
        with contextlib.suppress(errors.MapsyncError):  # else it expires on its own
            store.leases.release(lease)


def _only(results: dict[str, list[Finding] | None], only: Collection[str] | None) -> dict[str, Any]:
    return results if only is None else {k: v for k, v in results.items() if k in only}


def evaluate(
    loaded: LoadedSheet,
    store: Store,
    names: Iterable[str],
    *,
    handles: dict[str, Any] | None = None,
    only: Collection[str] | None = None,
    record: bool = True,
    quiet: bool = False,
) -> Report:
    """Evaluate the monitors of the syncs `names` (and the sheet-wide ones unless `only` leaves
    them out) and reconcile the incidents (see the module's docstring). `only`: just these
    monitors (the after-run path: `AFTER_RUN`); `record=False`: a dry run, nothing raised or
    resolved; `quiet`: `incident_opened` at info, not warning (a one-off command whose own report
    says it already). State store failures raise (`errors.StateError`)."""
    report = Report(recorded=record)
    rec = _Reconciler(loaded, store, report, record, logging.INFO if quiet else logging.WARNING)
    paused = set(store.paused())
    wanted = set(only) if only is not None else None
    need_extra = wanted is None or any(
        REGISTRY[n].scope == "sync" and n not in AFTER_RUN for n in wanted if n in REGISTRY
    )
    shared: dict[str, Any] = handles if handles is not None else {}  # one connection per end
    try:
        for sync in names:
            if sync not in loaded.sheet.syncs:
                continue
            with _alone(store, sync, record) as alone:
                if not alone:
                    report.unknown.setdefault(sync, []).append("*")  # another watcher has it now
                    continue
                rec.reload(sync)
                facts = sync_facts(
                    loaded, store, sync, paused=paused, handles=shared, extra=need_extra, record=record
                )
                rec.apply(sync, _only(evaluate_sync(facts), wanted))
                rec.disabled(sync, facts.thresholds.disabled, wanted)
        if wanted is None or any(REGISTRY[n].scope == "sheet" for n in wanted if n in REGISTRY):
            try:
                extra = watch_sources.sheet_extra(loaded, store, shared)
            except Exception as exc:  # what could not be read stays unknown
                log.warning(
                    "watch_facts_failed",
                    extra={
                        "action": "watch_facts_failed",
                        "error": redact(f"{type(exc).__name__}: {exc}", loaded.secrets, cap=300),
                    },
                )
                extra = {}
            values = bool(loaded.sheet.alerts and loaded.sheet.alerts.include_values)
            whole = SheetFacts(utcnow(), resolve(loaded.sheet.monitors), extra, include_values=values)
            with _alone(store, None, record) as alone:
                if alone:
                    rec.reload(None)
                    rec.apply(None, _only(evaluate_sheet(whole), wanted))
                    rec.disabled(None, whole.thresholds.disabled, wanted)
        if wanted is None:
            rec.gone()
    finally:
        if handles is None:  # a caller that gives `handles` keeps them open across evaluations
            watch_sources.release(shared)  # and releases them itself (`watch_sources.release`)
    return report


def uneventful(loaded: LoadedSheet, sync: str, status: str, counts: Any) -> bool:
    """A run's end that no `AFTER_RUN` monitor could raise on: a success without rejections whose
    counts add up, of a sync without `start_within` or `finish_within` (a late or long run is
    judged from its row). With no open incident of the sync, the after-run evaluation can be
    skipped (it would only confirm all is well)."""
    schedule = loaded.sheet.syncs[sync].schedule if sync in loaded.sheet.syncs else None
    if schedule is None or schedule.start_within is not None or schedule.finish_within is not None:
        return False
    outcomes = counts.written + counts.skipped + counts.rejected + counts.deleted
    return bool(
        status == "success"
        and counts.rejected == 0
        and outcomes <= counts.read
        and counts.missed <= counts.read
    )


def after_run(loaded: LoadedSheet, store: Store, sync: str, *, quiet: bool = False) -> Report | None:
    """The monitors a run's end decides (`AFTER_RUN`), for `sync`, at once; never raises (a watch
    failure must not break a run): a failure is logged and None returned."""
    try:
        return evaluate(loaded, store, [sync], only=AFTER_RUN, quiet=quiet)
    except Exception as exc:  # (quiet: the command has told of its own failure)
        log.log(
            logging.INFO if quiet else logging.WARNING,
            "watch_failed",
            extra={
                "action": "watch_failed",
                "sync": sync,
                "error": redact(f"{type(exc).__name__}: {exc}", loaded.secrets, cap=300),
            },
        )
        return None
