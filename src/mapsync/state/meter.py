"""Where a daemon's time goes: coordination (worker beats and claims, lease acquire, renew and
release, run rows, batch state commits) against the wall time of its runs.

Process-wide sums, thread-safe; the daemon logs them when it stops (`daemon_stopped`:
`coordination_ms`, `run_ms`) and `bench/workers.py` reads them as the share of run time spent
coordinating.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class Meter:
    """Seconds spent, summed by name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sums: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self._sums[name] = self._sums.get(name, 0.0) + seconds

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def total(self) -> float:
        with self._lock:
            return sum(self._sums.values())

    def sums(self) -> dict[str, float]:
        with self._lock:
            return dict(self._sums)

    def reset(self) -> None:
        with self._lock:
            self._sums.clear()


COORDINATION = Meter()  # the state store's share of a daemon's work (see the module's docstring)
RUNS = Meter()  # the wall time of the daemon's runs


def coordination(name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Count a call's time as coordination under `name`."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def timed(*args: P.args, **kwargs: P.kwargs) -> R:
            with COORDINATION.timed(name):
                return fn(*args, **kwargs)

        return timed

    return wrap
