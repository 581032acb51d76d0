"""A daemon as one of several workers on its state store (`state/workers.py`): registration,
the heartbeat that claims its share of the syncs, the database's clock, and what it does when
its claims are stale (after a freeze or a partition). A mixin of `daemon.Daemon`."""

from __future__ import annotations

import datetime as dt
import logging

from mapsync import __version__, errors
from mapsync.daemon_worker import RETRY, RUN, STORE_BROKEN, Worker, fingerprint
from mapsync.sheet.loader import LoadedSheet
from mapsync.state import clock as clocks
from mapsync.state.clock import Clock
from mapsync.state.data import WorkerInfo
from mapsync.state.ports import Store

log = logging.getLogger("mapsync.daemon")


class Membership:
    """Registration, heartbeat and claims of a daemon (see the module's docstring)."""

    store: Store
    worker: str  # host:pid
    workers: dict[str, Worker]
    names: list[str]
    loaded: LoadedSheet
    clock: Clock
    handled: dict[tuple[str, str], dt.datetime | None]
    token: str | None  # its registration as a worker
    owns: frozenset[str]
    _last_beat: float | None
    epoch: int  # grows when a beat finds this daemon was presumed dead (`Job.epoch`)

    @property
    def ttl(self) -> dt.timedelta:
        """The worker's TTL: the sheet's `state.lease_ttl` (the run leases' too)."""
        return self.loaded.sheet.state.lease_ttl

    def me(self) -> WorkerInfo:
        host, _, pid = self.worker.rpartition(":")
        return WorkerInfo(
            id=self.worker,
            host=host,
            pid=int(pid) if pid.isdigit() else 0,
            syncs=tuple(self.workers) if self.workers else tuple(self.names),
            fingerprint=fingerprint(self.loaded),
            sheet=str(self.loaded.path),
            version=__version__,
        )

    def register(self) -> None:
        """Join the workers of the state store (a SQLite store refuses a second daemon)."""
        self.token = self.store.workers.register(self.me(), self.ttl, alone=self._alone())
        self.store.set_fence(self.claim)

    def claim(self) -> tuple[str, str] | None:
        """(worker id, token): the fence of the slot rows this daemon writes (`set_fence`)."""
        return (self.worker, self.token) if self.token is not None else None

    def _alone(self) -> bool:
        """A SQLite store allows one daemon (its lock is a file's, its clock this machine's)."""
        return getattr(self.store, "dialect", None) == "sqlite"

    def now(self) -> dt.datetime:
        """The time the slots are due by: the state store's clock (its offset to this machine's
        measured now; a store away keeps the last offset)."""
        try:
            self.store.workers.now()
        except errors.StateError as exc:
            if exc.reason in STORE_BROKEN:
                raise
        return self.clock.now() + dt.timedelta(seconds=clocks.offset())

    def beat(self, force: bool = False) -> None:
        """The worker's heartbeat (every `lease_ttl / 3`): renew its registration, claim its share
        of the syncs, release its surplus idle ones (state/workers.py)."""
        mono = self.clock.monotonic()
        every = self.ttl.total_seconds() / 3
        if not force and self._last_beat is not None and mono - self._last_beat < every:
            return
        if self.token is None:
            self.register()
        assert self.token is not None
        busy = {n for n, w in self.workers.items() if w.busy() or w.running}
        beat = self.store.workers.beat(self.me(), self.token, self.ttl, busy)
        self.token = beat.token
        if beat.rejoined:
            # everything handed over before is void: the others ran those syncs meanwhile
            self.epoch += 1
            self.handled.clear()
            log.error(
                "daemon_rejoined",
                extra={
                    "action": "daemon_rejoined",
                    "worker": self.worker,
                    "error": (
                        "the other workers found this one silent for longer than the lease "
                        f"({self.ttl.total_seconds():g} s: stopped, cut off or overloaded) and took its "
                        "syncs; it joined again"
                    ),
                },
            )
        for gone in beat.gone:
            log.warning("daemon_worker_gone", extra={"action": "daemon_worker_gone", "worker": gone})
        gained, lost = beat.owns - self.owns, self.owns - beat.owns
        if gained or lost:
            log.info(
                "daemon_claims",
                extra={
                    "action": "daemon_claims",
                    "worker": self.worker,
                    "claimed": ",".join(sorted(gained)),
                    "released": ",".join(sorted(lost)),
                    "workers": beat.live,
                },
            )
        for name in gained | lost:  # what ran meanwhile was run by another: read it again
            self.handled.pop((name, RUN), None)
            self.handled.pop((name, RETRY), None)
        self.owns = beat.owns
        for name, w in self.workers.items():
            if w.owned != (name in self.owns):
                w.owned = name in self.owns
                w.wake.set()
        self._last_beat = mono  # last: a worker runs nothing until its claim is known (`claims_fresh`)

    def claims_fresh(self) -> bool:
        """Whether this daemon's claims are current: a beat reached the store within the TTL
        (after a freeze or a partition they may have gone to another worker; the next beat says)."""
        last = self._last_beat
        return last is not None and self.clock.monotonic() - last <= self.ttl.total_seconds()

    def _leave(self) -> None:
        if self.token is None:
            return
        try:
            self.store.workers.leave(self.me(), self.token)
        except errors.StateError as exc:  # it expires by itself within its TTL
            log.warning("daemon_leave_failed", extra={"action": "daemon_leave_failed", "error": str(exc)})

    def _silent(self) -> None:
        """No beat has reached the store for a whole TTL: the other workers count this one as
        dead and run its syncs, so it schedules none of them (its runs under way are fenced by
        their leases) until a beat reaches the store again."""
        last = self._last_beat
        if last is None or not self.owns or self.clock.monotonic() - last <= self.ttl.total_seconds():
            return
        log.error(
            "daemon_claims_lost",
            extra={
                "action": "daemon_claims_lost",
                "worker": self.worker,
                "released": ",".join(sorted(self.owns)),
                "error": "no heartbeat reached the state store for longer than the lease",
            },
        )
        self.owns = frozenset()
        for w in self.workers.values():
            w.owned = False
