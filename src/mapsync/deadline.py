"""The lease deadline, enforced on the client: no database call of a run outlives its lease.

Server-side timeouts (db_timeouts.py) cannot help when the network itself stalls: a
blocked `recv` waits for bytes that never come. `Watchdog` knows when the run's lease runs out
(it is moved on each renewal); when that moment passes, it shuts down the socket of every
connection the run's engines have checked out, so the blocked call fails at once. The engine
then reports a transient failure instead of hanging, and never sends anything more under a lease
another run may already hold.

`track(engine)` keeps the checked-out DBAPI connections of an engine; `abort(engine)` cuts them
and marks the engine, `aborted(engine)` tells a retry loop not to try again.
"""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

# the lease is treated as gone this much before it actually expires (clock drift, latency)
MARGIN = 0.1

_live: weakref.WeakKeyDictionary[sa.Engine, weakref.WeakSet[Any]] = weakref.WeakKeyDictionary()
_aborted: weakref.WeakKeyDictionary[sa.Engine, str] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def track(engine: sa.Engine) -> None:
    """Remember the live DBAPI connections of `engine` (for `abort`): checked out or pooled, as a
    stalled pool ping blocks like a stalled statement."""
    if engine.dialect.name == "sqlite" or engine in _live:
        return
    live: weakref.WeakSet[Any] = weakref.WeakSet()
    _live[engine] = live

    def connect(dbapi_conn: Any, _record: Any) -> None:
        with _lock:
            live.add(dbapi_conn)

    def close(dbapi_conn: Any, _record: Any) -> None:
        with _lock:
            live.discard(dbapi_conn)

    sa.event.listen(engine, "connect", connect)
    sa.event.listen(engine, "close", close)
    sa.event.listen(engine, "close_detached", lambda dbapi_conn: close(dbapi_conn, None))


def abort(engine: sa.Engine, reason: str) -> int:
    """Shut down the sockets of `engine`'s connections; how many were cut."""
    with _lock:
        conns = list(_live.get(engine, ()))
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
    """Calls `on_expiry(reason)` once when an armed deadline passes without a renewal.

    Armed for `ttl` when a run starts (also before it takes its lease: a stalled pool ping must
    not hang it either), moved by each renewal, disarmed when the run ends."""

    def __init__(self, on_expiry: Callable[[str], None]) -> None:
        self.on_expiry = on_expiry
        self.ttl = 0.0
        self.fired: str | None = None
        self._deadline: float | None = None
        self._wake = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    def arm(self, ttl: dt.timedelta) -> None:
        with self._wake:
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, daemon=True, name="lease-watchdog")
                self._thread.start()
            self.ttl = ttl.total_seconds()
            self.fired = None
            self._deadline = time.monotonic() + self.ttl * (1 - MARGIN)
            self._wake.notify()

    @property
    def deadline(self) -> float | None:
        """The monotonic time the armed deadline passes (None: disarmed)."""
        with self._wake:
            return self._deadline

    def renewed(self, at: float) -> None:
        """The lease was renewed by a call that started at monotonic time `at`."""
        with self._wake:
            if self._deadline is not None:
                self._deadline = at + self.ttl * (1 - MARGIN)
                self.fired = None
                self._wake.notify()

    def disarm(self) -> None:
        with self._wake:
            self._deadline = None
            self._wake.notify()

    def stop(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _watch(self) -> None:
        with self._wake:
            while not self._stop:
                if self._deadline is None:
                    self._wake.wait()
                    continue
                left = self._deadline - time.monotonic()
                if left > 0:
                    self._wake.wait(left)
                    continue
                self._deadline = None
                self.fired = f"no answer within the lease ({self.ttl:g} s): the database calls were cut off"
                reason = self.fired
                self._wake.release()
                try:
                    self.on_expiry(reason)
                finally:
                    self._wake.acquire()
