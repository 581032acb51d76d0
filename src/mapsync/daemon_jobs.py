"""What a daemon hands its sync workers (`Job`), what a worker needs of its daemon (`Host`), the
kinds of slot, the store faults that stop the daemon, and two small helpers of the workers (the
sheet's fingerprint, the backoff's jitter)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import random
import threading
from collections.abc import Mapping
from typing import Any, Protocol

from mapsync.engine import RunReport
from mapsync.sheet.loader import LoadedSheet
from mapsync.state.clock import Clock
from mapsync.state.ports import Store

RUN, RETRY = "run", "retry"  # the two kinds of slot a sync's schedules make
# the state store's faults that no retry fixes: the daemon stops (exit 2) instead of backing off
# (and a schema newer than this mapsync: it must not write into it)
STORE_BROKEN = frozenset({"corrupt", "readonly", "cantopen", "newer_schema"})


@dataclasses.dataclass(frozen=True)
class Job:
    """What a worker is asked to run."""

    kind: str  # run | overlap | retry
    trigger: str  # schedule | request | backoff
    scheduled_at: dt.datetime | None = None
    slot: str | None = None  # run | retry: the schedule that made it (None: nobody scheduled it)
    coalesced: int = 0  # missed slots (after downtime) this run stands for, beyond its own
    request_id: int | None = None
    epoch: int = 0  # the daemon's epoch when it was handed over (`Host.epoch`)


def fingerprint(loaded: LoadedSheet) -> str:
    """A short hash of the sheet file as read (which sheet a run ran under)."""
    try:
        data = loaded.path.read_bytes()
    except OSError:
        data = loaded.sheet.model_dump_json().encode()
    return hashlib.sha256(data).hexdigest()[:16]


def jittered(delay: float) -> float:
    """Equal jitter: between half and all of `delay` (workers that failed together spread out)."""
    return delay / 2 + random.uniform(0, delay / 2)


class Peer(Protocol):
    """Another sync's worker, as one that comes after it sees it."""

    running: bool


class Host(Protocol):
    """What a worker needs of its daemon."""

    stop: threading.Event
    clock: Clock
    worker: str  # host:pid, on every run row
    follow_all: dt.timedelta | None
    slots: threading.BoundedSemaphore  # runs under way at once, across the daemon's workers
    parallel: int

    epoch: int  # grows each time the daemon learns it was presumed dead: older jobs are void

    store: Store  # the scheduler's own connection (shared, thread-safe: one transaction a call)

    @property
    def workers(self) -> Mapping[str, Peer]: ...  # the daemon's sync workers (`after:` waits)
    def open_store(self) -> Store: ...
    def claims_fresh(self) -> bool: ...
    def claim(self) -> tuple[str, str] | None: ...
    def poll_of(self, cfg: Any) -> dt.timedelta: ...
    def report(self, report: RunReport) -> None: ...
    def after_run(
        self, store: Store, loaded: LoadedSheet, name: str, report: RunReport | None = None
    ) -> None: ...
    def fatal(self, name: str, exc: BaseException) -> None: ...
    def redact(self, text: str) -> str: ...
