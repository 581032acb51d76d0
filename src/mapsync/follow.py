"""`mapsync run --follow`: keep capturing until told to stop, for low-latency syncs.

Each pass runs every sync once (the same `Engine.run` as a one-off `mapsync run`, lease and
all); between passes the follower sleeps for the poll interval or until a PostgreSQL source
sends a notification on the change channel (the trigger queue's triggers `NOTIFY mapsync`
after each change), whichever comes first. Passes that changed nothing leave no run in the
history (the run table would otherwise grow by one row per poll). SIGTERM or SIGINT ends the
loop after the pass in progress: every batch of it is committed, nothing is cut in half.
All passes share one Engine, which builds each sync's parts (connections, column info, compiled
mapping, capture) on its first pass and reuses them: a pass costs one catalog-mark query per
connection, not a reflection of every table (see `Engine.parts`).

A sync whose run fails is not run again at once: it waits 1 s, then 2 s, 4 s, … up to 5 minutes
after each further failure (`follow_backoff` in the log, with the delay), and runs at every pass
again after its next success (`follow_recovered`). The other syncs keep their pace.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import select
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

from mapsync import errors
from mapsync.engine import Engine, RunReport
from mapsync.state import faults
from mapsync.state.clock import SYSTEM, Clock

log = logging.getLogger("mapsync.follow")
CHANNEL = "mapsync"
BACKOFF_FIRST = dt.timedelta(seconds=1)
BACKOFF_MAX = dt.timedelta(minutes=5)


class Backoff:
    """Per sync: after n failures in a row, wait first·2^(n-1) (at most `cap`) before the next run."""

    def __init__(
        self,
        first: dt.timedelta = BACKOFF_FIRST,
        cap: dt.timedelta = BACKOFF_MAX,
        jitter: Callable[[float], float] | None = None,
    ) -> None:
        self.first = first.total_seconds()
        self.cap = cap.total_seconds()
        self.jitter = jitter  # the delay actually waited, given the nominal one (the daemon: 1/2 to 1)
        self.failures: dict[str, int] = {}
        self.until: dict[str, float] = {}

    def ready(self, name: str, now: float) -> bool:
        return now >= self.until.get(name, 0.0)

    def failed(self, name: str, now: float) -> float:
        """Count a failure; the delay before the sync's next run, in seconds."""
        n = self.failures[name] = self.failures.get(name, 0) + 1
        delay = min(self.cap, self.first * 2.0 ** min(n - 1, 40))
        if self.jitter is not None:
            delay = self.jitter(delay)
        self.until[name] = now + delay
        log.warning(
            "follow_backoff",
            extra={"action": "follow_backoff", "sync": name, "failures": n, "retry_in_s": round(delay, 3)},
        )
        return delay

    def succeeded(self, name: str) -> None:
        self.until.pop(name, None)
        if self.failures.pop(name, 0):
            log.info("follow_recovered", extra={"action": "follow_recovered", "sync": name})


class Waker:
    """Sleeps up to the poll interval, waking early on a PostgreSQL NOTIFY or a stop request."""

    def __init__(self, urls: list[str], stop: threading.Event, clock: Clock = SYSTEM) -> None:
        self.stop = stop
        self.clock = clock
        self._conns: list[Any] = []
        for url in urls:
            try:
                import psycopg

                conn = psycopg.connect(url, autocommit=True)
                conn.execute(f"LISTEN {CHANNEL}")
                self._conns.append(conn)
            except Exception as exc:  # a wake-up is an optimisation: polling still works
                log.warning(
                    "follow_listen_failed",
                    extra={"action": "follow_listen_failed", "error": type(exc).__name__},
                )

    def wait(self, timeout: float) -> bool:
        """True when woken by a notification, False on timeout or stop."""
        if self.stop.is_set():
            return False
        if not self._conns:
            self.clock.wait(self.stop, timeout)
            return False
        end = self.clock.monotonic() + timeout
        while not self.stop.is_set():
            left = end - self.clock.monotonic()
            if left <= 0:
                return False
            # short slices: a signal handler sets `stop`, but select() resumes after it (PEP 475)
            ready, _, _ = select.select([c.fileno() for c in self._conns], [], [], min(left, 0.25))
            woken = False
            for conn in self._conns:
                if conn.fileno() in ready:
                    # drain every pending notification so one burst of changes wakes us once
                    for _ in conn.notifies(timeout=0):
                        woken = True
            if woken:
                return True
        return False

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(Exception):
                conn.close()
        self._conns.clear()


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM / SIGINT set `stop` instead of killing the process mid-batch."""

    def handler(signum: int, _frame: Any) -> None:
        log.info("follow_stopping", extra={"action": "follow_stopping", "signal": signum})
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def pg_listen_urls(engine: Engine, names: list[str]) -> list[str]:
    """libpq URLs of the PostgreSQL sources of `names` (each once)."""
    urls: list[str] = []
    for name in names:
        conn_name = engine.sheet.syncs[name].from_.connection
        handle = engine.database(conn_name)
        if handle.engine is not None and handle.dialect == "postgresql":
            url = handle.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
            if url not in urls:
                urls.append(url)
    return urls


def follow(
    engine: Engine,
    names: list[str],
    *,
    poll: dt.timedelta,
    stop: threading.Event,
    on_report: Callable[[RunReport], None],
    max_passes: int | None = None,
    backoff: Backoff | None = None,
    clock: Clock = SYSTEM,
) -> int:
    """Run passes until `stop` is set; returns the number of passes. A sync whose run fails is
    reported and tried again after its backoff delay (a lease held elsewhere is skipped quietly).
    `clock` times the backoff and the wait between passes (a test passes a `ManualClock`)."""
    waker = Waker(pg_listen_urls(engine, names), stop, clock)
    backoff = backoff or Backoff()
    passes = 0
    try:
        while not stop.is_set():
            passes += 1
            for name in names:
                if stop.is_set():
                    break
                if not backoff.ready(name, clock.monotonic()):
                    continue
                try:
                    report = engine.run(name, "run", trigger="follow", keep_empty=False)
                except errors.LeaseHeld as exc:
                    log.debug("follow_lease_held", extra={"action": "follow_lease_held", "sync": name})
                    del exc
                    continue
                except (errors.TransientError, errors.PermanentError, errors.StateError) as exc:
                    # an outage raised before the run could report (a source or destination
                    # restarting, the store briefly away): recorded as a failed run by the engine,
                    # tried again after the backoff; a store problem to fix first ends the loop
                    if isinstance(exc, errors.StateError) and exc.reason not in faults.TRANSIENT:
                        raise
                    log.error(
                        "follow_run_failed",
                        extra={
                            "action": "follow_run_failed",
                            "sync": name,
                            "error": engine.redact_text(str(exc)),
                        },
                    )
                    backoff.failed(name, clock.monotonic())
                    continue
                if report.counts.changed or not report.ok:
                    on_report(report)
                if report.status == "failed":  # not `partial`: record errors are no outage
                    backoff.failed(name, clock.monotonic())
                else:
                    backoff.succeeded(name)
            if max_passes is not None and passes >= max_passes:
                break
            waker.wait(poll.total_seconds())
    finally:
        waker.close()
    return passes
