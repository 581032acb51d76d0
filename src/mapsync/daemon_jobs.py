"""What a daemon hands its sync workers (`Job`), what a worker needs of its daemon (`Host`), the
kinds of slot, the store faults that stop the daemon, two small helpers of the workers (the
sheet's fingerprint, the backoff's jitter), and what a worker checks of an operator's request.

A `retry` or `reexport` request may name keys (in their command-line form, as `mapsync retry --key`
and `mapsync reexport KEY…` take them, `mapsync.keys`), parsed with the sync's key columns (`asked`). A
request that cannot run (a bad key, no open record error for any named key, a re-export of a
sync that is no export) is refused with a message and runs nothing: the operator's mistake, not
the sync's, so it never backs the sync off. One whose run could not reach every named key
finishes `failed` naming the keys not found (`shortfall`)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import random
import threading
from collections.abc import Mapping
from typing import Any, Protocol

from mapsync import keys as key_forms
from mapsync import records
from mapsync.engine import RunReport
from mapsync.sheet.loader import LoadedSheet
from mapsync.sheet.models import ExportFlagChanges
from mapsync.state.clock import Clock
from mapsync.state.ports import Store

RUN, RETRY = "run", "retry"  # the two kinds of slot a sync's schedules make
REEXPORT = "reexport"  # a job only an operator's request makes (an export's transactions again)
# the state store's faults that no retry fixes: the daemon stops (exit 2) instead of backing off
# (and a schema newer than this mapsync: it must not write into it)
STORE_BROKEN = frozenset({"corrupt", "readonly", "cantopen", "newer_schema"})


@dataclasses.dataclass(frozen=True)
class Job:
    """What a worker is asked to run."""

    kind: str  # run | overlap | retry | reexport
    trigger: str  # schedule | request | backoff
    scheduled_at: dt.datetime | None = None
    slot: str | None = None  # run | retry: the schedule that made it (None: nobody scheduled it)
    coalesced: int = 0  # missed slots (after downtime) this run stands for, beyond its own
    request_id: int | None = None
    epoch: int = 0  # the daemon's epoch when it was handed over (`Host.epoch`)
    keys: tuple[str, ...] | None = None  # a request's retry | reexport of only these keys (command-line form)


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


Wanted = list[tuple[str, ...]]


@dataclasses.dataclass(frozen=True)
class Asked:
    """A request as its worker will run it."""

    keys: Wanted | None = None  # the named keys in key-column order (None: all)
    missing: tuple[str, ...] = ()  # named keys (as written) with no open record error (retry)
    refused: str | None = None  # why it does not run at all


def asked(loaded: LoadedSheet, store: Store, name: str, job: Job) -> Asked:
    """The keys `job` names, parsed; or why it is refused. Only `retry` and `reexport` take keys."""
    cfg = loaded.sheet.syncs[name]
    if job.kind == REEXPORT and not isinstance(cfg.changes, ExportFlagChanges):
        return Asked(
            refused=f"sync {name} is no export: a re-export needs `changes: {{method: export_flag}}`"
        )
    if job.keys is None:
        return Asked()
    if job.kind not in (RETRY, REEXPORT):
        return Asked(refused=f"a {job.kind} request takes no keys (only retry and reexport do)")
    if not job.keys:
        return Asked(refused="no keys named (ask without keys for all of them)")
    columns = key_forms.columns_of(loaded.sheet, name)
    wanted: Wanted = []
    for text in job.keys:
        try:
            wanted.append(key_forms.parse_arg(text, columns))
        except ValueError as exc:
            return Asked(refused=str(exc))
    if job.kind != RETRY:
        return Asked(keys=wanted)
    hits = key_forms.find(
        store.open_error_keys(name), wanted
    )  # dead ones too: an operator's retry sends them
    missing = tuple(text for text, hit in zip(job.keys, hits, strict=True) if hit is None)
    if len(missing) == len(wanted):
        return Asked(refused=_not_found(missing, "no open record error"))
    return Asked(keys=wanted, missing=missing)


def shortfall(ask: Asked, report: RunReport, columns: list[str]) -> str | None:
    """Why a request whose run ended well did not get all it asked for (None: it did): named
    keys with no open record error (retry), or not at the source (reexport)."""
    if ask.missing:
        return _not_found(ask.missing, "no open record error")
    if ask.keys is not None and report.kind == records.RunKind.REEXPORT and report.gone:
        return _not_found([key_forms.to_arg(k, columns) for k in report.gone], "not at the source")
    return None


def _not_found(texts: tuple[str, ...] | list[str], why: str) -> str:
    return f"not found ({why}): {', '.join(texts)}"
