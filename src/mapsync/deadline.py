"""The lease deadline, enforced on the client: no database call of a run outlives its lease.

Server-side timeouts (connectors/timeouts.py) cannot help when the network itself stalls: a
blocked `recv` waits for bytes that never come. `Watchdog` knows when the run's lease runs out
(it is moved on each renewal); when that moment passes, it shuts down the socket of every
connection the run's engines have checked out, so the blocked call fails at once. The engine
then reports a transient failure instead of hanging, and never sends anything more under a lease
another run may already hold.

`track(engine)` keeps the checked-out DBAPI connections of an engine; `abort(engine)` cuts them
and marks the engine, `aborted(engine)` tells a retry loop not to try again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa

# the lease is treated as gone this much before it actually expires (clock drift, latency)
MARGIN = 0.1

_checked_out: weakref.WeakKeyDictionary[sa.Engine, set[Any]] = weakref.WeakKeyDictionary()
_aborted: weakref.WeakKeyDictionary[sa.Engine, str] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def track(engine: sa.Engine) -> None:
    """Remember the DBAPI connections `engine` has checked out (for `abort`)."""
    if engine.dialect.name == "sqlite" or engine in _checked_out:
        return
    held: set[Any] = set()
    _checked_out[engine] = held

    def checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        with _lock:
            held.add(dbapi_conn)

    def checkin(dbapi_conn: Any, _record: Any) -> None:
        with _lock:
            held.discard(dbapi_conn)

    sa.event.listen(engine, "checkout", checkout)
    sa.event.listen(engine, "checkin", checkin)
    sa.event.listen(engine, "close", checkin)


def abort(engine: sa.Engine, reason: str) -> int:
    """Shut down the sockets of `engine`'s checked-out connections; how many were cut."""
    with _lock:
        conns = list(_checked_out.get(engine, ()))
        _aborted[engine] = reason
    cut = 0
    for conn in conns:
        fd = _fileno(conn)
        if fd is None or fd < 0:
            continue
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            continue
        try:
            sock.shutdown(socket.SHUT_RDWR)  # the blocked recv/send of the other thread returns
            cut += 1
        except OSError:
            pass
        finally:
            sock.detach()  # the driver still owns the descriptor
    return cut


def aborted(engine: sa.Engine) -> str | None:
    """Why `engine`'s connections were cut by the lease deadline (None: they were not)."""
    return _aborted.get(engine)


def clear(engine: sa.Engine) -> None:
    _aborted.pop(engine, None)


def _fileno(conn: Any) -> int | None:
    pgconn = getattr(conn, "pgconn", None)  # psycopg 3
    if pgconn is not None:
        try:
            return int(pgconn.socket)
        except Exception:  # a closed connection has no socket
            return None
    sock = getattr(conn, "_sock", None)  # PyMySQL
    return sock.fileno() if sock is not None else None


class Watchdog:
    """Calls `on_expiry(reason)` once when the lease's deadline passes without a renewal."""

    def __init__(self, ttl: dt.timedelta, on_expiry: Callable[[str], None]) -> None:
        self.ttl = ttl.total_seconds()
        self.on_expiry = on_expiry
        self.fired: str | None = None
        self._deadline = time.monotonic() + self.ttl * (1 - MARGIN)
        self._wake = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._watch, daemon=True, name="lease-watchdog")

    def renewed(self, at: float) -> None:
        """The lease was renewed by a call that started at monotonic time `at`."""
        with self._wake:
            self._deadline = at + self.ttl * (1 - MARGIN)
            self.fired = None
            self._wake.notify()

    def remaining(self) -> float:
        return max(0.0, self._deadline - time.monotonic())

    def _watch(self) -> None:
        with self._wake:
            while not self._stop:
                left = self._deadline - time.monotonic()
                if left <= 0 and self.fired is None:
                    self.fired = f"the lease ({self.ttl:g} s) ran out while waiting on a database"
                    self._wake.release()
                    try:
                        self.on_expiry(self.fired)
                    finally:
                        self._wake.acquire()
                    continue
                self._wake.wait(left if left > 0 else None)

    @contextlib.contextmanager
    def running(self) -> Iterator[Watchdog]:
        self._thread.start()
        try:
            yield self
        finally:
            with self._wake:
                self._stop = True
                self._wake.notify()
            self._thread.join(5)
