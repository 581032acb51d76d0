"""A run's lease, watched: renewed before each destination write, enforced on every database call.

`LeaseWatch` couples the lease (state/lease.py) with the client-side deadline (deadline.py): the
engine renews the lease right before each destination write (`LeaseLost` if another run holds
it now), every batch commit moves the deadline, and when the deadline passes without a renewal
the sockets of every engine of the run (state store, source, destination) are shut down, so a
stalled call ends in a transient failure instead of writing later under a lease it lost.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
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
            return errors.TransientError(f"sync {sync}: {self.fired}")
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
