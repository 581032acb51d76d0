"""A run's lease, watched: renewed before each destination write, enforced on every database call.

`LeaseWatch` couples the lease (state/lease.py) with the client-side deadline (deadline.py): the
engine renews the lease right before each destination write (`LeaseLost` if another run holds
it now), every batch commit moves the deadline, and when the deadline passes without a renewal
the sockets of every engine of the run (state store, source, destination) are shut down, so a
stalled call ends in a transient failure instead of writing later under a lease it lost.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa

from mapsync import deadline
from mapsync.state import lease as leases
from mapsync.state.store import StateStore

log = logging.getLogger("mapsync.engine")


class LeaseWatch:
    def __init__(self, store: StateStore, engines: Callable[[], list[Any]]) -> None:
        self.store = store
        self._engines = engines  # the state store's engine and the run's handles, asked when needed
        self.dog: deadline.Watchdog | None = None

    def engines(self) -> list[Any]:
        """The SQLAlchemy engines of the run (a handle without one, e.g. HTTP, is left alone)."""
        out = []
        for item in self._engines():
            engine = item if isinstance(item, sa.Engine) else getattr(item, "engine", None)
            if isinstance(engine, sa.Engine):
                out.append(engine)
        return out

    @property
    def fired(self) -> str | None:
        """Why the run's calls were cut (the lease ran out), or None."""
        return self.dog.fired if self.dog is not None else None

    @contextlib.contextmanager
    def watching(self, lease: leases.Lease) -> Iterator[None]:
        self.dog = deadline.Watchdog(lease.ttl, self._abort)
        try:
            with self.dog.running():
                yield
        finally:
            self.dog = None
            for engine in self.engines():
                deadline.clear(engine)

    def renew(self, lease: leases.Lease) -> None:
        """Right before a destination write: the lease is still ours, for a full TTL from now."""
        started = time.monotonic()
        leases.renew(self.store, lease)
        self.renewed(started)

    def renewed(self, started: float) -> None:
        """A call that began at monotonic `started` renewed the lease (a batch commit)."""
        if self.dog is not None:
            self.dog.renewed(started)
            for engine in self.engines():
                deadline.clear(engine)

    def _abort(self, reason: str) -> None:
        for engine in self.engines():
            deadline.abort(engine, reason)
        log.error("lease_deadline", extra={"action": "lease_deadline", "error": reason})
