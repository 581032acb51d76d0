"""Time: the `Clock` seam, the state store's UTC now (`utcnow`: the database's clock), and stamps
as fixed-width text (text order is time order).

Code that waits (backoff, budgets, polling) or reads the time takes a `Clock` (default `SYSTEM`,
the machine's clock) instead of calling `time.sleep` / `time.monotonic` itself, so that a test can
pass a `ManualClock` and move time forward instead of sleeping. Waits that are about a real
process or a real server (a socket deadline, a database's own clock) stay on real time.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Reads the time and waits."""

    def now(self) -> dt.datetime:
        """The wall clock as an aware UTC datetime."""
        ...

    def time(self) -> float:
        """The wall clock in seconds since the epoch (`time.time`)."""
        ...

    def monotonic(self) -> float:
        """Seconds of a clock that never goes back, for intervals (`time.monotonic`)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""
        ...

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait `seconds` or until `event` is set, whichever is first; True if it is set."""
        ...


class SystemClock:
    """The machine's clock: real time, real waits."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(max(0.0, seconds))


SYSTEM: Clock = SystemClock()


class ManualClock:
    """A clock that moves only when told (`advance`, `set`) or when someone sleeps on it: a sleep
    of `s` returns at once, the clock `s` later. A test of a 5-minute backoff takes no real time.
    Every sleep is noted in `slept`. (Sleepers in several threads each move it: it suits one
    sleeping thread.)"""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._lock = threading.Lock()
        self._now = float(start)  # epoch seconds; `monotonic` is the same number
        self.slept: list[float] = []

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.time(), dt.UTC)

    def time(self) -> float:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        return self.time()

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += max(0.0, seconds)

    def set(self, moment: float) -> None:
        """Move to epoch second `moment` (never back)."""
        with self._lock:
            self._now = max(self._now, float(moment))

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            self._now += max(0.0, seconds)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        if event.is_set():
            return True
        self.sleep(seconds)
        return event.is_set()


# seconds to add to this machine's clock to read the state store's (`set_offset`): measured by a
# PostgreSQL store when it opens and at every daemon tick, so that every stamp written, every
# lease and worker expiry and every due time is on the database's clock, the one all workers
# share (a worker whose clock is minutes off neither runs early nor takes a live lease)
_offset = 0.0


def set_offset(seconds: float) -> None:
    """The state store's clock minus this machine's, in seconds."""
    global _offset
    _offset = float(seconds)


def offset() -> float:
    """The state store's clock minus this machine's, in seconds (0 until a store measures it)."""
    return _offset


def utcnow() -> dt.datetime:
    """Now, on the state store's clock (this machine's, corrected by `offset`)."""
    now = SYSTEM.now()
    return now + dt.timedelta(seconds=_offset) if _offset else now


def stamp(moment: dt.datetime | None = None) -> str:
    """ISO UTC text with fixed width, so that text order is time order."""
    return (moment or utcnow()).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def unstamp(text: str) -> dt.datetime:
    """The aware UTC datetime of a stamp (`stamp`'s inverse)."""
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
