"""The plain types around a run: what it is made of (`Parts`), who hears about its progress
(`Observer`) and what it reports (`RunReport`)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from mapsync import errors, records
from mapsync import mapping as compile_
from mapsync.ports import Capture, Destination, Source
from mapsync.records import RunKind, RunStatus
from mapsync.state.store import Counts

log = logging.getLogger("mapsync.engine")


class Observer(Protocol):
    """Hears about progress (the CLI draws a progress bar from it)."""

    def started(self, sync: str, kind: str, total: int | None) -> None: ...

    def batch(self, sync: str, counts: Counts) -> None: ...


class Quiet:
    def started(self, sync: str, kind: str, total: int | None) -> None:
        return None

    def batch(self, sync: str, counts: Counts) -> None:
        return None


@dataclasses.dataclass
class RunReport:
    sync: str
    kind: RunKind
    run_id: int | None
    status: RunStatus
    counts: Counts
    message: str | None = None
    failure_class: str | None = None
    reason: str | None = None  # a failure's reason (`errors.REASONS`: guard, auth, budget …)
    truncated: dict[str, int] = dataclasses.field(default_factory=dict)
    defaulted: dict[str, int] = dataclasses.field(default_factory=dict)
    kept: dict[str, int] = dataclasses.field(default_factory=dict)
    corrected: dict[str, int] = dataclasses.field(default_factory=dict)  # country autocorrect
    dst_ambiguous: dict[str, int] = dataclasses.field(default_factory=dict)  # repeated local times
    expired: dict[str, int] = dataclasses.field(default_factory=dict)  # updates written disabled
    fell_back: int = 0  # hard deletes the destination refused, written as `disable` instead
    samples: list[records.Rejection] = dataclasses.field(default_factory=list)
    gone: list[records.Key] = dataclasses.field(default_factory=list)  # retry: source rows gone
    # deletes found at the source: `found`, and of them `ignored` (policy) and `disabled`
    # (written as an update, so also in counts.written); deleted ones are counts.deleted
    gone_at_source: dict[str, int] = dataclasses.field(default_factory=dict)
    buried: int = 0  # an automatic retry: record errors buried as dead after max attempts
    notes: list[str] = dataclasses.field(default_factory=list)  # a sweep's plan and outcome

    @property
    def ok(self) -> bool:
        return self.status == RunStatus.SUCCESS

    def note_ignored(self, n: int) -> None:
        """Deletes a key walk found but did not send (policy `ignore`, counted by the capture in
        the run's `capture.RunInput`)."""
        if n:
            self.gone_at_source["found"] = self.gone_at_source.get("found", 0) + n
            self.gone_at_source["ignored"] = self.gone_at_source.get("ignored", 0) + n


# a columnar batch's write inside `Engine.finish_batch` (run_columnar.py): rows sent, what was
# delivered as columns, and the outcome of the rows it wrote per record instead, with them
ColumnarWrite = Callable[
    [], tuple[int, records.DeliveredColumns | None, records.WriteResult, list[records.Mapped]]
]


@dataclasses.dataclass
class Parts:
    """What one sync is made of: built once per sync by the Engine and reused across its runs
    (each run's state lives in the run scope). Tests may hand the engine their own (see
    mapsync.testing)."""

    source: Source
    dest: Destination
    mapping: compile_.Mapping
    capture: Capture
    version_column: str | None
    # the sync's columnar plan (run_columnar.Plan), None: every batch takes the per-record path
    columnar: Any = None


@dataclasses.dataclass(frozen=True)
class Finished:
    """One call of `Engine.run` or `Engine.retry` that ended (what `mapsync.metrics` counts).

    `report` is None when the call raised (a failure before the run row, or a crash): `status`
    is then `failed`. `seconds` is the call's wall time; `lateness` how long after its scheduled
    slot the call began (None when it had no slot)."""

    sync: str
    kind: str
    status: str
    seconds: float
    lateness: float | None
    report: RunReport | None


_listeners: list[Callable[[Finished], None]] = []


def listen(listener: Callable[[Finished], None]) -> Callable[[], None]:
    """Hear about every run that ends in this process (every Engine); returns the undo."""
    _listeners.append(listener)

    def undo() -> None:
        if listener in _listeners:
            _listeners.remove(listener)

    return undo


def finished(done: Finished) -> None:
    """Tell the listeners; a listener that fails is logged, never the run's problem."""
    for listener in list(_listeners):
        try:
            listener(done)
        except Exception as exc:
            log.warning(
                "run_listener_failed", extra={"action": "run_listener_failed", "error": type(exc).__name__}
            )


# no run at all: another process holds the sync or ran the slot, or a seed of a seeded sync
_NO_RUN = (errors.LeaseHeld, errors.SlotTaken, errors.UsageError)
P = ParamSpec("P")
E = TypeVar("E")


def counted(
    method: Callable[Concatenate[E, P], RunReport],
) -> Callable[Concatenate[E, P], RunReport]:
    """Tell `run_types.finished` about every run and retry that ends (the one place every
    RunReport of the process passes: the metrics count there, once per run). A call that
    raises is a failed run unless it was no run (`_NO_RUN`)."""
    signature = inspect.signature(method)

    def wrapper(engine: E, /, *args: P.args, **kwargs: P.kwargs) -> RunReport:
        began, wall = time.monotonic(), dt.datetime.now(dt.UTC)
        call = signature.bind(engine, *args, **kwargs)
        call.apply_defaults()
        options = call.arguments
        name = str(options["name"])
        kind = str(options.get("kind", method.__name__))  # retry | reexport: the method is the kind
        at = options.get("scheduled_at")
        late = (wall - at).total_seconds() if isinstance(at, dt.datetime) and at.tzinfo else None
        try:
            report = method(engine, *args, **kwargs)
        except _NO_RUN:
            raise
        except Exception:
            finished(Finished(name, kind, RunStatus.FAILED, time.monotonic() - began, late, None))
            raise
        done = Finished(name, report.kind, report.status, time.monotonic() - began, late, report)
        finished(done)
        return report

    return functools.wraps(method)(wrapper)
