"""Time: the `Clock` seam, the state store's UTC now, and stamps as fixed-width text (text order is
time order).

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


def utcnow() -> dt.datetime:
    return SYSTEM.now()


def stamp(moment: dt.datetime | None = None) -> str:
    """ISO UTC text with fixed width, so that text order is time order."""
    return (moment or utcnow()).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def unstamp(text: str) -> dt.datetime:
    """The aware UTC datetime of a stamp (`stamp`'s inverse)."""
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
