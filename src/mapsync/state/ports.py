"""The state store's narrow ports: what each part of mapsync may ask of the state store.

A caller takes the port it needs (`Ledger`, `Budget` …); `Store` is all of them. Two stores
implement every port alike, held to it by one contract suite (tests/contract/): `StateStore`
(state/store.py, SQLite or PostgreSQL: `Ledger`, `Cursors`, `Runs`, `RecordErrors`, `Budget`,
`Controls` as its methods; the others as its objects `store.leases`, `inbox`, `jobs`, `history`,
`workers`, `incidents`, `observations`, `rollups`, `attempts`, `reconciliation`, `sessions`,
`audit`: state/lease.py, inbox.py, async_batches.py, history.py, workers.py, incidents.py,
observations.py, rollups.py, attempts.py, reconciliation.py, sessions.py) and `MemoryStore`
(state/memory.py, dicts under a lock, for tests).

The module functions of state/lease.py, inbox.py, async_batches.py, report.py and retention.py
are the older form of these ports and ask them. mypy checks both stores against `Store`
(state/conformance.py). The web app's ports (`Sessions`, `Audit`) are in state/ports_web.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from mapsync import records
from mapsync.state.data import (
    Attempt,
    Beat,
    BudgetRow,
    Counts,
    Finding,
    Incident,
    Item,
    Lease,
    LedgerEntry,
    Notification,
    PauseInfo,
    Recent,
    RunRequest,
    WorkerInfo,
)
from mapsync.state.ports_web import Audit as Audit
from mapsync.state.ports_web import Sessions as Sessions


class Ledger(Protocol):
    """The key ledger: what was delivered, per sync and source key (and the batch commit)."""

    def ledger(self, sync: str, keys: Iterable[records.Key]) -> dict[records.Key, LedgerEntry]: ...
    def ledger_count(self, sync: str) -> int: ...
    def ledger_page(self, sync: str, texts: list[str]) -> dict[str, tuple[str | None, bool]]: ...
    def live_count(self, sync: str) -> int: ...
    def live_scan(self, sync: str, page: int, *, versions: bool) -> Iterator[list[Any]]: ...
    def compare_page(
        self, sync: str, texts: list[str], hashes: Sequence[str | None], *, hashed: bool
    ) -> list[tuple[int, bool]]: ...
    def ledger_owners(self, sync: str, dest_ids: Sequence[str]) -> dict[str, records.Key]: ...
    def drift_scan(
        self, sync: str, page: int, buckets: tuple[int, Collection[int]] | None = None
    ) -> Iterator[list[tuple[str, str | None, str | None, bool]]]: ...
    def set_drift(self, sync: str, entries: Mapping[str, tuple[str, str, str]]) -> int: ...
    def commit(
        self,
        *,
        sync: str,
        token: str,
        run_id: int,
        delivered: Sequence[records.Delivered],
        rejected: Sequence[records.Rejection],
        cursors: dict[str, Any],
        counts: Counts,
        lease_ttl: dt.timedelta,
        attempts: Sequence[Attempt] = (),
        columns: records.DeliveredColumns | None = None,
    ) -> list[dict[str, Any]]: ...


class Cursors(Protocol):
    """A sync's capture cursors (watermark, seed position, log position …)."""

    def cursor(self, sync: str, name: str) -> Any: ...
    def cursors(self, sync: str) -> dict[str, Any]: ...
    def set_cursors(self, sync: str, new: dict[str, Any], run_id: int | None = None) -> None: ...


class Runs(Protocol):
    """The run history. A run of a scheduled `slot` (run | retry) takes it: each slot runs once
    (SlotTaken for a second start or failure of it, None for a second skip)."""

    def set_identity(self, worker: str, fingerprint: str | None) -> None: ...
    def set_fence(self, fence: Callable[[], tuple[str, str] | None] | None) -> None: ...
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
    ) -> int: ...
    def finish_run(
        self,
        run_id: int,
        status: str,
        failure_class: str | None = None,
        message: str | None = None,
        *,
        reason: str | None = None,
    ) -> None: ...
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
    ) -> int: ...
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
    ) -> int | None: ...
    def last_slot(self, sync: str, slot: str) -> dt.datetime | None: ...
    def discard_run(self, run_id: int) -> None: ...
    def run(self, run_id: int) -> dict[str, Any]: ...


class RecordErrors(Protocol):
    """Open record errors and unmapped values, outside the batch commit. An open error tried
    `max_attempts` times is buried by `bury` (dead: `live_only` leaves it out) until delivered."""

    def open_error_keys(
        self, sync: str, field: str | None = None, *, live_only: bool = False
    ) -> list[records.Key]: ...
    def open_error_versions(self, sync: str) -> dict[str, str | None]:
        """Open record errors of `sync`: key text (`records.key_text`) → the version it failed at
        (`values.encode`d, as stored)."""

    def bury(self, sync: str, max_attempts: int) -> int: ...
    def note_gone(self, sync: str, keys: Sequence[records.Key]) -> None: ...
    def resolve_errors(self, sync: str, keys: Sequence[str] | None, by: str, note: str) -> int:
        """Resolve open record errors by key text (None: all of the sync's open ones) with a
        note; returns how many were resolved. A resolved error is not retried."""

    def unmapped_values(self, sync: str | None, include_resolved: bool = False) -> list[dict[str, Any]]: ...


class Budget(Protocol):
    """The call budgets shared by every process (rest/budget.py decides, this stores)."""

    def budget_ensure(self, credential: str) -> None: ...
    def budget_take(
        self,
        credential: str,
        now: Callable[[], int],
        decide: Callable[[int, BudgetRow, Recent], int],
        keep_us: int,
    ) -> tuple[int, int]: ...
    def budget_settle(self, credential: str, call: int, now: Callable[[], int]) -> None: ...
    def budget_tighten(
        self, credential: str, blocked: int | None, server: tuple[int, int | None] | None
    ) -> None: ...
    def budget_read(self, credential: str, after: int) -> tuple[list[int], BudgetRow | None]: ...


class Controls(Protocol):
    """Operator controls every process sees: paused syncs, and runs asked for by an operator that
    one worker takes (`FOR UPDATE SKIP LOCKED` on PostgreSQL): new → taken → done | failed."""

    def pause(self, sync: str, by: str, note: str | None = None) -> None: ...
    def resume(self, sync: str) -> bool: ...
    def paused(self) -> dict[str, PauseInfo]: ...
    def request_run(
        self, sync: str, kind: str, by: str, keys: Sequence[str] | None = None, note: str | None = None
    ) -> int:
        """retry/reexport of `keys` (command-line form; None: all open errors / the failed ones)."""

    def take_requests(self, syncs: list[str], worker: str) -> list[RunRequest]: ...
    def finish_request(
        self, request_id: int, status: str, run_id: int | None = None, message: str | None = None
    ) -> None: ...
    def requests(
        self, sync: str | None = None, limit: int = 100, *, pending: bool = False
    ) -> list[RunRequest]: ...


class Leases(Protocol):
    """One run of a sync at a time (`store.leases`). A lease expired, or held by a process of this
    host that is gone, is taken over (the holder's running runs are marked failed); every batch
    commit is fenced by the token (`Ledger.commit` raises LeaseLost)."""

    def acquire(self, sync: str, ttl: dt.timedelta) -> Lease: ...
    def release(self, lease: Lease) -> None: ...
    def held(self, sync: str, ttl: dt.timedelta) -> contextlib.AbstractContextManager[Lease]: ...
    def renew(self, lease: Lease) -> None: ...
    def renew_retried(self, lease: Lease) -> None: ...
    def holder(self, sync: str) -> dict[str, Any] | None: ...


class Inbox(Protocol):
    """Pushed events waiting for a run (`store.inbox`): `new` → `processed` | `stale` | `error`."""

    def append(
        self,
        sync: str,
        event_id: str,
        payload: str,
        source: str | None = None,
        *,
        signature: str | None = None,
        signed_at: int | None = None,
    ) -> int | None: ...
    def new_items(self, sync: str, after: int, limit: int) -> list[Item]: ...
    def finish(
        self, processed: Iterable[int], failed: dict[int, str], stale: dict[int, str] | None = None
    ) -> None: ...
    def counts(self, sync: str | None = None) -> dict[str, int]: ...
    def split(  # append `items` (event id, payload), mark `done` processed: one transaction
        self, sync: str, done: int, items: Sequence[tuple[str, str]], source: str | None = None
    ) -> None: ...
    def latest(  # the newest item (and its status) per event-id prefix (only in `status`)
        self, sync: str, prefixes: Sequence[str], status: str | None = None
    ) -> dict[str, tuple[Item, str]]: ...


class Jobs(Protocol):
    """Batches handed to an asynchronous destination (`store.jobs`): pending → submitted → done |
    failed."""

    def record(
        self,
        sync: str,
        keys: Sequence[records.Key],
        batch_id: str | None = None,
        sent: dict[str, str] | None = None,
    ) -> str: ...
    def submitted(self, batch_id: str, job_id: str | None) -> None: ...
    def finish(self, batch_id: str, status: str, results: Any = None) -> None: ...
    def unfinished(self, sync: str) -> list[dict[str, Any]]: ...
    def get(self, batch_id: str) -> dict[str, Any] | None: ...


class History(Protocol):
    """What `status`, `errors`, `runs` and `state show` read, `reset`, and the retention purge
    (`store.history`). Rows are dicts of the columns in docs/design.md's table of the store.

    `purge_tables(ages)`: per table of `ages` (names of `sheet.models.RETENTION_TABLES`), what is
    finished and older than its age goes (of `syncs`, or all): runs are folded into the daily
    rollups in the transaction that deletes them; a sync's latest run, open record errors, `new`
    and `error` inbox items, unsettled batches, live ledger entries, open incidents and incidents
    with a pending notice stay. Table → rows deleted (or, `dry_run`, that would be). `purge` is
    the older per-sync form (runs, cursor audit, resolved errors under one age)."""

    def last_run(self, sync: str) -> dict[str, Any] | None: ...
    def runs(self, sync: str | None, limit: int, *, without: Sequence[str] = ()) -> list[dict[str, Any]]: ...
    def record_errors(self, sync: str | None, include_resolved: bool, limit: int) -> list[dict[str, Any]]: ...
    def run_records(self, run_id: int, limit: int) -> list[dict[str, Any]]:
        """The records a run touched, from the delivery attempts and record errors: dicts with
        key (text), outcome, message (redacted), at."""

    def count_record_errors(self, sync: str | None, include_resolved: bool) -> int: ...
    def count_dead(self, sync: str | None) -> int: ...
    def sync_gauges(self) -> dict[str, dict[str, Any]]: ...
    def audit(self, sync: str, limit: int) -> list[dict[str, Any]]: ...
    def reset(self, sync: str) -> dict[str, int]: ...
    def purge(self, sync: str, retention: dt.timedelta) -> dict[str, int]: ...
    def purge_tables(
        self,
        ages: Mapping[str, dt.timedelta],
        *,
        syncs: Sequence[str] | None = None,
        late_ms: Mapping[str, int] | None = None,
        dry_run: bool = False,
        batch: int = ...,
    ) -> dict[str, int]: ...


class Workers(Protocol):
    """The daemons sharing the store and the syncs each one runs (state/workers.py): a worker
    silent past its TTL is presumed dead and its syncs go to the others. Times are the
    database's."""

    def now(self) -> dt.datetime: ...
    def register(self, me: WorkerInfo, ttl: dt.timedelta, *, alone: bool = False) -> str: ...
    def beat(self, me: WorkerInfo, token: str, ttl: dt.timedelta, busy: set[str]) -> Beat: ...
    def leave(self, me: WorkerInfo, token: str) -> None: ...
    def overview(self) -> dict[str, Any]: ...


class Incidents(Protocol):
    """Incidents and their alert outbox (state/incidents.py, schema v7): one open incident per
    `Finding.key` (monitor, sync, subject), opened and refreshed by `raise_incident`, resolved by
    `clear_incident`; each opening, reminder and resolution queues one notification per channel in
    the same transaction, which a sender claims, sends and marks (`claim_notifications`,
    `notification_sent`, `notification_failed`). Times are the store's clock."""

    def raise_incident(self, finding: Finding, channels: Sequence[str]) -> tuple[Incident, bool]: ...
    def clear_incident(self, key: str) -> Incident | None: ...
    def open_incidents(self, sync: str | None = None) -> list[Incident]: ...
    def incidents(
        self, *, sync: str | None = None, limit: int = 100, include_resolved: bool = True
    ) -> list[Incident]: ...
    def incident(self, incident_id: int) -> Incident | None: ...
    def ack(self, incident_id: int, by: str) -> bool: ...
    def silence(self, incident_id: int, until: dt.datetime, by: str) -> bool: ...
    def queue_reminders(self, every: dt.timedelta) -> list[int]: ...
    def claim_notifications(self, claimer: str, hold: dt.timedelta, limit: int) -> list[Notification]: ...
    def notification_sent(self, notification_id: int, claimer: str) -> bool: ...
    def notification_failed(
        self, notification_id: int, claimer: str, error: str, retry_at: dt.datetime | None
    ) -> bool: ...
    def notifications(self, incident_id: int | None = None, limit: int = 100) -> list[Notification]: ...


class Observations(Protocol):
    """What monitors measured last, per sync (`*`: the whole sheet) and name
    (state/observations.py): `observe` keeps the new values and returns the ones it replaced."""

    def observe(self, sync: str, measured: dict[str, Any]) -> dict[str, tuple[Any, dt.datetime]]: ...
    def observations(self, sync: str | None = None) -> dict[tuple[str, str], tuple[Any, dt.datetime]]: ...


class DeliveryAttempts(Protocol):
    """Delivery attempts per record and the other per-key reads of `mapsync trace`
    (`store.attempts`, state/attempts.py). The batch commit writes a batch's attempts in its own
    transaction (`Ledger.commit(attempts=…)`); `record_attempts` writes some outside a commit.
    Either way the last `attempts.KEEP` (3) per (sync, key) are kept, older ones deleted in the
    same transaction, and the payload is kept only for `rejected` and `failed` attempts."""

    def record_attempts(self, sync: str, run_id: int | None, attempts: Sequence[Attempt]) -> None: ...
    def attempts(self, sync: str, key: records.Key) -> list[Attempt]: ...
    def record_error(self, sync: str, key: records.Key) -> dict[str, Any] | None: ...
    def ledger_row(self, sync: str, key: records.Key) -> dict[str, Any] | None: ...
    def inbox_items(self, sync: str, needle: str, *, scan: int, limit: int) -> list[dict[str, Any]]: ...


class Rollups(Protocol):
    """Daily rollups of the runs per sync and UTC day (state/rollups.py), kept longer than runs."""

    def rollups(self, sync: str | None, since: dt.datetime | dt.date) -> list[dict[str, Any]]: ...


class Reconciliation(Protocol):
    """Results of reconciliation checks (state/reconciliation.py): rows of id, check, kind, sync,
    run_id, started_at, finished_at, status, compared, differences and `detail` (the result dict)."""

    def record_result(
        self, result: dict[str, Any], *, run_id: int | None, started_at: dt.datetime, finished_at: dt.datetime
    ) -> int: ...
    def results(self, check: str, limit: int = 100) -> list[dict[str, Any]]: ...
    def latest(self, checks: Sequence[str] | None = None) -> dict[str, dict[str, Any]]: ...


class Store(Ledger, Cursors, Runs, RecordErrors, Budget, Controls, Protocol):
    """A whole state store: every port the engine, the captures and the views use."""

    @property
    def leases(self) -> Leases: ...
    @property
    def inbox(self) -> Inbox: ...
    @property
    def jobs(self) -> Jobs: ...
    @property
    def history(self) -> History: ...
    @property
    def workers(self) -> Workers: ...
    @property
    def incidents(self) -> Incidents: ...
    @property
    def observations(self) -> Observations: ...
    @property
    def attempts(self) -> DeliveryAttempts: ...
    @property
    def rollups(self) -> Rollups: ...
    @property
    def reconciliation(self) -> Reconciliation: ...
    @property
    def sessions(self) -> Sessions: ...
    @property
    def audit(self) -> Audit: ...
    def close(self) -> None: ...
