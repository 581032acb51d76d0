"""A run's lease, watched: renewed before each destination write, enforced on every database call.

`LeaseWatch` couples the lease (state/lease.py) with the client-side deadline (deadline.py): the
engine renews the lease right before each destination write (`LeaseLost` if another run holds
it now), every batch commit moves the deadline, and when the deadline passes without a renewal
the sockets of every engine of the run (state store, source, destination) are shut down, so a
stalled call ends in a transient failure instead of writing later under a lease it lost.

`Heartbeat` (the daemon's engines) renews the lease from a thread of its own every `ttl / 3`
while a run is active, so another worker never takes over a healthy run whose batches are slow.
It never moves the watchdog's deadline: only the engine's own renewals (before a write, at a
commit) do, so a stalled call is still cut at its lease deadline.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa

from mapsync import deadline, errors
from mapsync.connectors.sql import SqlDatabase
from mapsync.state import lease as leases
from mapsync.state.ports import Store
from mapsync.state.store import StateStore

log = logging.getLogger("mapsync.engine")
P = ParamSpec("P")
R = TypeVar("R")


class LeaseWatch:
    def __init__(self, store: Store, handles: Callable[[], Iterable[object]]) -> None:
        self.store = store
        self._handles = handles  # the state store and the run's connection handles
        self.dog = deadline.Watchdog(self._abort)
        self.enabled = True  # off: the run is not cut at its lease deadline

    def engines(self) -> list[sa.Engine]:
        """The SQLAlchemy engines of the run: the state store's and each SQL connection's (an
        engine handed in as such counts too; any other handle, e.g. HTTP, is left alone)."""
        return [engine for item in self._handles() if (engine := engine_of(item)) is not None]

    @property
    def fired(self) -> str | None:
        """Why the run's calls were cut (the deadline passed), or None."""
        return self.dog.fired

    def start(self, ttl: dt.timedelta, *, sql: bool) -> None:
        """A run starts (its catalog reads first). Only a sync into a SQL destination is cut at its
        lease deadline: an HTTP destination's long waits (asynchronous jobs, call budgets) have
        their own timeouts and would be cut while the run is healthy."""
        self.enabled = sql
        self.arm(ttl)

    def cut_error(self, sync: str, exc: BaseException) -> errors.TransientError | None:
        """The transient failure a database error stands for when the deadline cut it (else None)."""
        if isinstance(exc, sa.exc.DBAPIError) and self.fired is not None:
            return errors.TransientError(f"sync {sync}: {self.fired}", reason=errors.REASON_DEADLINE)
        return None

    def arm(self, ttl: dt.timedelta) -> None:
        """A run starts: its calls may wait at most `ttl` (less a margin) without a renewal."""
        for engine in self.engines():
            deadline.clear(engine)
        if self.enabled:
            self.dog.arm(ttl)

    @contextlib.contextmanager
    def watching(self, lease: leases.Lease) -> Iterator[None]:
        self.arm(lease.ttl)
        try:
            yield
        finally:
            self.dog.disarm()

    def renew(self, lease: leases.Lease) -> None:
        """Right before a destination write: the lease is still ours, for a full TTL from now."""
        started = time.monotonic()
        leases.renew_retried(self.store, lease)
        self.renewed(started)

    def renewed(self, started: float) -> None:
        """A call that began at monotonic `started` renewed the lease (a batch commit)."""
        if self.dog.fired is None:
            self.dog.renewed(started)

    def close(self) -> None:
        self.dog.stop()

    def _abort(self, reason: str) -> None:
        for engine in self.engines():
            deadline.abort(engine, reason)
        log.error("lease_deadline", extra={"action": "lease_deadline", "error": reason})


def engine_of(handle: object) -> sa.Engine | None:
    """The SQLAlchemy engine of a run's handle: the state store's, a SQL connection's, or the
    engine itself; None for a handle without one (HTTP)."""
    if isinstance(handle, sa.Engine):
        return handle
    if isinstance(handle, StateStore | SqlDatabase):
        return handle.engine
    return None


def settled(method: Callable[Concatenate[Any, P], R]) -> Callable[Concatenate[Any, P], R]:
    """An engine method after which no deadline stays armed, however it ended (a run refused
    before it took its lease must not have its idle connections cut later)."""

    @functools.wraps(method)
    def wrapper(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        finally:
            self.watch.dog.disarm()

    return wrapper


class Heartbeat:
    """Renews a run's lease every `ttl / 3` from a daemon thread, fenced by the lease's token.

    A renewal that finds the lease gone (another run holds it) sets `lost`, which `check()` (the
    engine, before each batch and each write) turns into `LeaseLost`. A renewal that fails for
    another reason (the state store is briefly away) is logged and tried again at the next beat.
    The watchdog's deadline is not moved (see the module's docstring)."""

    def __init__(self, store: Store, lease: leases.Lease) -> None:
        self.store = store
        self.lease = lease
        self.every = lease.ttl.total_seconds() / 3
        self.beats = 0  # renewals that went through
        self.lost = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"lease-heartbeat-{lease.sync}")

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """No renewal after this returns (the lease may be released next)."""
        self._done.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def check(self) -> None:
        """Raise `LeaseLost` when a renewal found the lease taken."""
        if self.lost:
            raise leases.lost(self.lease)

    def _beat(self) -> None:
        while not self._done.wait(self.every):
            try:
                leases.renew(self.store, self.lease)
            except errors.LeaseLost:
                self.lost = True
                log.error(
                    "lease_lost",
                    extra={"action": "lease_lost", "sync": self.lease.sync, "error": "taken (heartbeat)"},
                )
                return
            except Exception as exc:  # a store hiccup: the next beat (or the engine's renewal) tries again
                log.warning(
                    "lease_heartbeat_failed",
                    extra={"action": "lease_heartbeat_failed", "sync": self.lease.sync, "error": str(exc)},
                )
            else:
                self.beats += 1


@contextlib.contextmanager
def heartbeat(store: Store, lease: leases.Lease, on: bool) -> Iterator[Heartbeat | None]:
    """A heartbeat for the `with` block when `on`, else None."""
    if not on:
        yield None
        return
    with Heartbeat(store, lease) as beat:
        yield beat
