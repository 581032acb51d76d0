"""The state store's narrow ports: what each part of mapsync may ask of the state store.

A caller that needs only the ledger takes a `Ledger`, the call budget a `Budget`, and so on; the
SQL behind each port lives in `state/` (one module per table group, SQLite and PostgreSQL in one
place). `StateStore` implements `Ledger`, `Cursors`, `Runs`, `RecordErrors` and `Budget` as
methods (mixins: state/ledger.py, state/runs.py, state/record_errors.py, state/budget.py). The
lease, inbox and async-job ports are today implemented by the modules state/lease.py,
state/inbox.py and state/async_batches.py as functions over a `StateStore` (each port's methods
take the store first); they become store methods with the in-memory store. mypy checks every
implementation (`_implements` below). The empty ports name what is coming, so later work extends
them instead of reaching for `store.engine`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from mapsync import records
from mapsync.state.budget import BudgetRow, Recent
from mapsync.state.ledger import LedgerEntry

if TYPE_CHECKING:
    from mapsync.state.inbox import Item
    from mapsync.state.lease import Lease
    from mapsync.state.store import Counts, StateStore


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
    ) -> list[dict[str, Any]]: ...


class Cursors(Protocol):
    """A sync's capture cursors (watermark, seed position, log position …)."""

    def cursor(self, sync: str, name: str) -> Any: ...
    def cursors(self, sync: str) -> dict[str, Any]: ...
    def set_cursors(self, sync: str, new: dict[str, Any], run_id: int | None = None) -> None: ...


class Runs(Protocol):
    """The run history."""

    def start_run(
        self, sync: str, kind: str, trigger: str, token: str, scheduled_at: dt.datetime | None = None
    ) -> int: ...
    def finish_run(
        self, run_id: int, status: str, failure_class: str | None = None, message: str | None = None
    ) -> None: ...
    def record_failed_run(
        self,
        sync: str,
        kind: str,
        trigger: str,
        failure_class: str,
        message: str,
        scheduled_at: dt.datetime | None = None,
    ) -> int: ...
    def discard_run(self, run_id: int) -> None: ...
    def run(self, run_id: int) -> dict[str, Any]: ...


class RecordErrors(Protocol):
    """Open record errors and unmapped values, outside the batch commit."""

    def open_error_keys(self, sync: str, field: str | None = None) -> list[records.Key]: ...
    def note_gone(self, sync: str, keys: Sequence[records.Key]) -> None: ...
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
    ) -> int: ...
    def budget_tighten(
        self, credential: str, blocked: int | None, server: tuple[int, int | None] | None
    ) -> None: ...
    def budget_read(self, credential: str, after: int) -> tuple[list[int], BudgetRow | None]: ...


class Leases(Protocol):
    """One run of a sync at a time (state/lease.py: functions over the store)."""

    def acquire(self, store: StateStore, sync: str, ttl: dt.timedelta) -> Lease: ...
    def release(self, store: StateStore, lease: Lease) -> None: ...
    def renew(self, store: StateStore, lease: Lease) -> None: ...
    def renew_retried(self, store: StateStore, lease: Lease) -> None: ...


class Inbox(Protocol):
    """Pushed events waiting for a run (state/inbox.py: functions over the store)."""

    def append(
        self,
        store: StateStore,
        sync: str,
        event_id: str,
        payload: str,
        source: str | None = None,
        *,
        signature: str | None = None,
        signed_at: int | None = None,
    ) -> int | None: ...
    def new_items(self, store: StateStore, sync: str, after: int, limit: int) -> list[Item]: ...
    def finish(
        self,
        store: StateStore,
        processed: Iterable[int],
        failed: dict[int, str],
        stale: dict[int, str] | None = None,
    ) -> None: ...
    def counts(self, store: StateStore, sync: str | None = None) -> dict[str, int]: ...


class Jobs(Protocol):
    """Batches handed to an asynchronous destination (state/async_batches.py: functions over the store)."""

    def record(
        self,
        store: StateStore,
        sync: str,
        keys: Sequence[records.Key],
        batch_id: str | None = None,
        sent: dict[str, str] | None = None,
    ) -> str: ...
    def submitted(self, store: StateStore, batch_id: str, job_id: str | None) -> None: ...
    def finish(self, store: StateStore, batch_id: str, status: str, results: Any = None) -> None: ...
    def unfinished(self, store: StateStore, sync: str) -> list[dict[str, Any]]: ...
    def get(self, store: StateStore, batch_id: str) -> dict[str, Any] | None: ...


# ---------------------------------------------------------------------- coming (empty for now)


class RunRequests(Protocol):
    """Runs asked for by an operator or a schedule, waiting for a worker (the daemon)."""


class Workers(Protocol):
    """Worker processes and their heartbeats (the daemon)."""


class Incidents(Protocol):
    """Open and closed incidents raised by monitors (alerts)."""


class Rollups(Protocol):
    """Per-period counts of runs and records (dashboard, monitors)."""


class DeliveryAttempts(Protocol):
    """Each attempt to deliver a record, with its outcome (monitors, repair)."""


class Reconciliation(Protocol):
    """Results of comparing source and destination (reconcile)."""


class Users(Protocol):
    """Operators of the web app."""


class Sessions(Protocol):
    """Operators' sessions in the web app."""


class Audit(Protocol):
    """What operators did (operator audit)."""


if TYPE_CHECKING:
    from mapsync.state import async_batches
    from mapsync.state import inbox as inbox_module
    from mapsync.state import lease as lease_module

    def _implements(store: StateStore) -> None:
        """mypy checks that the store and the modules implement their ports (never called)."""
        ports: tuple[Ledger, Cursors, Runs, RecordErrors, Budget] = (store, store, store, store, store)
        modules: tuple[Leases, Inbox, Jobs] = (lease_module, inbox_module, async_batches)
        del ports, modules
