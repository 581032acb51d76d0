"""The values the state ports hand across (state/ports.py): plain data, no SQL, so that the
ports, the SQL store and the in-memory store all import them from here, never from each other."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(frozen=True)
class LedgerEntry:
    """What the key ledger holds of one source key."""

    version: Any
    hash: str
    dest_id: str | None
    deleted: bool


@dataclasses.dataclass
class Counts:
    read: int = 0
    written: int = 0
    skipped: int = 0
    rejected: int = 0
    deleted: int = 0
    missed: int = 0
    truncated: int = 0
    defaulted: int = 0

    @property
    def changed(self) -> int:
        """Records whose outcome changed something (written, deleted or rejected)."""
        return self.written + self.deleted + self.rejected

    def add(self, other: Counts) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclasses.dataclass(frozen=True)
class Lease:
    """A held lease: one run of `sync`, fenced by `token`."""

    sync: str
    token: str
    ttl: dt.timedelta


@dataclasses.dataclass(frozen=True)
class Item:
    """One inbox item (a pushed event waiting for a run)."""

    id: int
    event_id: str
    received_at: str
    payload: str
    signed_at: int | None = None


# (at most n, after µs) → the call times after that moment, newest first, at most n of them
Recent = Callable[[int, int], list[int]]


@dataclasses.dataclass(frozen=True)
class BudgetRow:
    """What the server said about one credential (µs since the epoch)."""

    blocked_until_us: int | None = None
    server_remaining: int | None = None
    server_reset_us: int | None = None


@dataclasses.dataclass(frozen=True)
class PauseInfo:
    """A paused sync: who paused it, when, and why (`mapsync pause --note`)."""

    by: str
    at: dt.datetime
    note: str | None = None


REQUEST_KINDS = ("run", "overlap", "retry", "reexport")
REQUEST_STATUSES = ("new", "taken", "done", "failed")


@dataclasses.dataclass(frozen=True)
class RunRequest:
    """A run asked for by an operator (`mapsync request`): new → taken (by one worker) → done |
    failed."""

    id: int
    sync: str
    kind: str  # run | overlap | retry | reexport
    requested_by: str
    requested_at: dt.datetime
    status: str  # new | taken | done | failed
    taken_at: dt.datetime | None = None
    taken_by: str | None = None
    run_id: int | None = None
    message: str | None = None
    keys: tuple[str, ...] | None = None  # keys (command-line form) to retry or re-export (None: all / failed)
    note: str | None = None


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """A daemon as a worker."""

    id: str  # host:pid
    host: str
    pid: int
    syncs: tuple[str, ...]  # the syncs it may run (its sheet's, or those named by --sync)
    fingerprint: str | None = None
    sheet: str | None = None
    version: str = ""  # mapsync's (the daemon sets it)


@dataclasses.dataclass(frozen=True)
class Beat:
    """What a beat found."""

    token: str  # the worker's token (a new one when it had to register again)
    owns: frozenset[str]  # the syncs it runs now
    live: int  # live workers, itself included
    now: dt.datetime  # the database's clock
    rejoined: bool = False  # its registration had expired and was removed: it registered again
    gone: tuple[str, ...] = ()  # workers this beat found expired and removed


# --------------------------------------------------------------------------- watching (v7)

SEVERITIES = ("critical", "warning", "info")
NOTICES = ("opened", "reminder", "resolved")


@dataclasses.dataclass(frozen=True)
class Finding:
    """What a monitor found (mapsync.monitors): one condition of one sync (or of the whole sheet,
    `sync` None) and, within it, one `subject` (a credential's name, a channel, a field). The same
    monitor, sync and subject are the same incident (`key`). `message` holds names and counts only
    (record values only when the sheet's alerts say `include_values`), never a secret."""

    monitor: str
    sync: str | None
    severity: str  # critical | warning | info
    failure_class: str  # source | destination | tool | config | state | lease | unseeded | alerts
    message: str
    numbers: dict[str, Any] = dataclasses.field(default_factory=dict)
    runbook: str = ""
    subject: str = ""

    @property
    def key(self) -> str:
        return incident_key(self.monitor, self.sync, self.subject)


def incident_key(monitor: str, sync: str | None, subject: str = "") -> str:
    """The incident a finding belongs to: `monitor|sync|subject`, cut to fit the column."""
    return f"{monitor}|{sync or '*'}|{subject}"[:400]


@dataclasses.dataclass(frozen=True)
class Incident:
    """One incident (port `Incidents`): open from its first finding until it clears."""

    id: int
    key: str
    monitor: str
    sync: str | None
    subject: str
    severity: str
    failure_class: str
    message: str
    numbers: dict[str, Any]
    runbook: str
    channels: tuple[str, ...]
    status: str  # open | resolved
    opened_at: dt.datetime
    last_seen_at: dt.datetime
    resolved_at: dt.datetime | None = None
    reminded_at: dt.datetime | None = None
    acked_by: str | None = None
    acked_at: dt.datetime | None = None
    silenced_by: str | None = None
    silenced_until: dt.datetime | None = None


@dataclasses.dataclass(frozen=True)
class Notification:
    """One notice of an incident to one channel (the alert outbox)."""

    id: int
    incident_id: int
    kind: str  # opened | reminder | resolved
    channel: str
    status: str  # pending | sent | failed
    attempts: int
    next_at: dt.datetime
    created_at: dt.datetime
    last_error: str | None = None
    sent_at: dt.datetime | None = None


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One attempt to deliver one record (schema v7 `mapsync_attempts`, port `DeliveryAttempts`;
    `mapsync trace`). `outcome`: delivered | deleted | rejected | failed. `payload` (the mapped
    record as JSON) is kept for rejected and failed attempts only, `hash` otherwise; `message` is
    the destination's (or the mapping's) answer, redacted. `run_id`, `at` and `id` are the
    store's, filled when read back."""

    key: tuple[Any, ...]
    outcome: str
    version: Any = None
    hash: str | None = None
    dest_id: str | None = None
    message: str | None = None
    payload: str | None = None
    run_id: int | None = None
    at: str | None = None
    id: int | None = None
