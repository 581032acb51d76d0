"""The daemon's chores: work beside the syncs, each on a thread of its own so that it never delays
a slot nor another chore (monitor evaluation, sending alerts, the daily purge: a long first purge
or a slow monitors pass does not hold up the alerts).

A `Chore` runs every `every` and, when it says `lease`, only in one daemon of those sharing the
state store at a time: it holds the state store lease `mapsync:<name>` (kept between its runs and
while one runs, renewed every third of the lease TTL, so the same daemon keeps doing it and a run
longer than the TTL is not started again beside it by another daemon; when that daemon dies or
freezes, the lease expires within a TTL and another one takes the chore over). `wake(name)` runs
a chore at once (an event already known: a failed run, a new incident to send). A chore's failure
is logged (`daemon_chore_failed`, redacted) and the chore runs again at its next time: it never
stops the daemon or a sync."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator

from mapsync import errors
from mapsync.state.data import Lease
from mapsync.state.ports import Store

log = logging.getLogger("mapsync.daemon")
PREFIX = "mapsync:"  # chore leases live beside the syncs' leases, under names no sync may take


@dataclasses.dataclass
class Chore:
    name: str
    every: dt.timedelta
    do: Callable[[Store], None]  # gets the chores' state store (one engine, shared by the threads)
    lease: bool = True  # one daemon at a time
    first: float = 0.0  # seconds after the start of its first run (spares the daemon's first slots)
    due: float = 0.0  # monotonic time of its next run (0: at once)
    held: Lease | None = None
    wake: threading.Event = dataclasses.field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class Chores:
    def __init__(
        self,
        open_store: Callable[[], Store],
        stop: threading.Event,
        ttl: Callable[[], dt.timedelta],
        redact: Callable[[str], str],
    ) -> None:
        self.open_store = open_store
        self.stop = stop
        self.ttl = ttl  # the lease TTL of a chore (the daemon's `lease_ttl`)
        self.redact = redact
        self.chores: dict[str, Chore] = {}
        self._store: Store | None = None
        self._lock = threading.Lock()

    def add(self, chore: Chore) -> None:
        with self._lock:
            self.chores[chore.name] = chore

    def wake(self, name: str) -> None:
        """Run chore `name` at once (no-op for an unknown one)."""
        with self._lock:
            chore = self.chores.get(name)
        if chore is not None:
            chore.due = 0.0
            chore.wake.set()

    def start(self) -> None:
        with self._lock:
            waiting = [c for c in self.chores.values() if c.thread is None]
        for chore in waiting:
            if chore.first and not chore.due:
                chore.due = time.monotonic() + chore.first
            chore.thread = threading.Thread(
                target=self._loop, args=(chore,), name=f"mapsync-chore-{chore.name}", daemon=True
            )
            chore.thread.start()

    def join(self, timeout: float) -> None:
        """After `stop` is set: wait (up to `timeout` in all) for the chores under way, then give up
        their leases and close the store, unless a chore still runs (it keeps what it uses; the
        leases expire on their own)."""
        end = time.monotonic() + timeout
        for chore in self.chores.values():
            chore.wake.set()
        for chore in self.chores.values():
            if chore.thread is not None:
                chore.thread.join(max(0.0, end - time.monotonic()))
        if self.busy():
            return
        store = self._store
        if store is None:
            return
        for chore in self.chores.values():
            if chore.held is not None:
                with contextlib.suppress(errors.MapsyncError):  # else it expires on its own
                    store.leases.release(chore.held)
                chore.held = None
        store.close()
        self._store = None

    def busy(self) -> bool:
        """Whether a chore's thread still runs (after `join`: one that outlasted the grace)."""
        return any(c.thread is not None and c.thread.is_alive() for c in self.chores.values())

    def _loop(self, chore: Chore) -> None:
        renewed = time.monotonic()
        while not self.stop.is_set():
            if chore.due <= time.monotonic():
                self.run(chore)
                renewed = time.monotonic()
            elif chore.held is not None and time.monotonic() - renewed >= self.ttl().total_seconds() / 3:
                self._renew(chore)  # a daily chore keeps its lease between runs, a TTL at a time
                renewed = time.monotonic()
            pause = min(chore.due - time.monotonic(), self.ttl().total_seconds() / 3)
            chore.wake.wait(max(0.0, pause))
            chore.wake.clear()

    def _connected(self) -> Store:
        with self._lock:
            if self._store is None:
                self._store = self.open_store()
            return self._store

    def _renew(self, chore: Chore) -> None:
        """Renew the lease of a chore this daemon holds (a lost one is dropped: another daemon took
        the chore over while this one was frozen or cut off)."""
        if chore.held is None or self._store is None:
            return
        try:
            self._store.leases.renew(chore.held)
        except errors.LeaseLost:
            chore.held = None
        except errors.MapsyncError:
            pass  # the store is away: tried again at the next renewal or run

    def run(self, chore: Chore) -> bool:
        """Run one chore now (if its lease allows); whether it ran."""
        chore.due = time.monotonic() + chore.every.total_seconds()
        try:
            store = self._connected()
            if chore.lease and not self._hold(store, chore):
                return False
            with self._kept(chore):
                chore.do(store)
            return True
        except Exception as exc:  # a chore never stops the daemon: logged, run again later
            log.warning(
                "daemon_chore_failed",
                extra={
                    "action": "daemon_chore_failed",
                    "chore": chore.name,
                    "error": self.redact(f"{type(exc).__name__}: {exc}"),
                },
            )
            return False

    @contextlib.contextmanager
    def _kept(self, chore: Chore) -> Iterator[None]:
        """While a leased chore runs: its lease renewed every third of the TTL on a thread of its
        own (`_loop` renews only between runs, and a monitors pass on a loaded machine can outlast
        a short TTL: another daemon would then take the lease and run the same chore beside it)."""
        if chore.held is None:
            yield
            return
        done = threading.Event()

        def keep() -> None:
            while not done.wait(self.ttl().total_seconds() / 3) and chore.held is not None:
                self._renew(chore)

        keeper = threading.Thread(target=keep, name=f"mapsync-chore-{chore.name}-lease", daemon=True)
        keeper.start()
        try:
            yield
        finally:
            done.set()
            keeper.join()

    def _hold(self, store: Store, chore: Chore) -> bool:
        """Keep (renew) or take the chore's lease; False when another daemon holds it."""
        ttl = self.ttl()  # renewed every third of it while this daemon lives (`_renew`)
        if chore.held is not None:
            try:
                store.leases.renew(chore.held)
                return True
            except errors.LeaseLost:
                chore.held = None
        try:
            chore.held = store.leases.acquire(PREFIX + chore.name, ttl)
            return True
        except errors.LeaseHeld:
            return False
