"""`mapsync daemon SHEET`: every sync on its schedule, until SIGTERM; `run --follow` is the same.

One scheduler (the thread that calls `Daemon.run`) and one worker thread per sync
(`daemon_worker.py`). Each worker has its own `Engine` (its parts are built on the first run and
reused, see `Engine.parts`) and its own connection to the state store, so a sync whose run is
slow or stuck never holds up another sync's start, and the lease deadline that cuts one run's
sockets cuts no other run's.

Every `tick` (at most `poll` apart, and at each due time) the scheduler reads the operator's
controls (`mapsync pause|resume|request`, kept in the state store) and hands each sync what is
due:

- **scheduled slots** (`schedule.every` anchored at the epoch, or `schedule.cron` in its time
  zone: `schedules.py`) and the sync's **retry** slots (`retry:`). A slot runs once: the run row
  carries `slot` and `scheduled_at`, unique per sync in the state store. A slot that falls due
  while the sync's previous run still runs, while it backs off after a failure, or while it is
  paused, is recorded as a `skipped` run with the reason; after downtime the latest missed slot
  runs once and records how many it stands for (`coalesced`). A sync that has never run a slot
  waits for its next one (`mapsync request` runs it at once).
- **follow** syncs (`schedule.follow: true`, or every sync of `run --follow`) run a pass after
  another, waiting up to `poll` between passes or until a PostgreSQL source's NOTIFY; idle passes
  leave no run.
- **requests** (`mapsync request`) queue behind the sync's current run.

A sync that names others in `after:` does not start while one of them is running (it waits, and
its lateness shows it); in one pass of `mapsync run` the order is the sheet's, as before.

**Failures never stop the daemon.** A run that fails (the source or destination away, a table
renamed, the breaker tripped, the state store briefly unreachable) is recorded with its class;
the sync is tried again after a capped exponential backoff with jitter (1 s, 2 s, 4 s … at most
5 minutes, each delay between half and all of that), while the other syncs keep their pace; the
first success ends it. Only a state store that needs fixing first (corrupt, read-only, from a newer
mapsync) stops the daemon, with exit code 2.

**Reload** (SIGHUP): the sheet is read again; an invalid sheet is refused whole (the old one stays,
the log says why). A sync whose identity (source, destination, key, the fields' source columns:
`sheet/identity.py`) changed keeps running its old configuration, and is refused the new one until
`mapsync seed --again` stores the new identity or `mapsync state reset` forgets the old state. The
same holds at start: a sync whose stored identity differs from the sheet's does not run.

**Stop** (SIGTERM, SIGINT): no new run starts; each running run ends after its current batch's
state commit (`stopped`: the next run goes on from there), within `grace` (30 s). What is still
running then, or at a second signal, is cut as by a crash: the next start re-sends at most its last
batch, which the destination absorbs.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from typing import Any

from mapsync import errors
from mapsync.alerts import sender as alert_sender
from mapsync.daemon_chores import Chores
from mapsync.daemon_membership import Membership
from mapsync.daemon_process import release_orphaned_requests, worker_id
from mapsync.daemon_reload import Reloading
from mapsync.daemon_slots import Slots
from mapsync.daemon_watching import Watching
from mapsync.daemon_worker import RUN, STORE_BROKEN, Job, Worker, fingerprint
from mapsync.engine import RunReport
from mapsync.monitors.environment import store_trouble
from mapsync.records import RunStatus
from mapsync.redact import redact
from mapsync.sheet.loader import LoadedSheet
from mapsync.state import faults
from mapsync.state.clock import SYSTEM, Clock
from mapsync.state.meter import COORDINATION, RUNS
from mapsync.state.ports import Store

log = logging.getLogger("mapsync.daemon")
GRACE = dt.timedelta(seconds=30)
POLL = dt.timedelta(seconds=1)
PARALLEL = 16  # runs at once per daemon (`--parallel`)


class Daemon(Membership, Reloading, Watching, Slots):
    """The scheduler of one sheet's syncs (see the module's docstring)."""

    def __init__(
        self,
        loaded: LoadedSheet,
        store: Store,
        names: list[str],
        *,
        open_store: Callable[[], Store],
        stop: threading.Event | None = None,
        clock: Clock = SYSTEM,
        poll: dt.timedelta = POLL,
        follow_all: dt.timedelta | None = None,
        on_report: Callable[[RunReport], None] | None = None,
        worker: str | None = None,
        named: bool = False,
        parallel: int = PARALLEL,
    ) -> None:
        """`names`: the syncs to run; `named`: they were named (`--sync`), so a reload adds no
        other. `follow_all`: `run --follow`, every
        named sync follows with this poll. `open_store` opens another connection to the same state
        store (one per worker)."""
        self.loaded = loaded
        self.store = store
        self.names = names
        self.open_store = open_store
        self.stop = stop or threading.Event()
        self.clock = clock
        self.poll = poll
        self.follow_all = follow_all
        self.on_report = on_report or (lambda r: None)
        self.worker = worker or worker_id()
        self.workers: dict[str, Worker] = {}
        self.handled: dict[tuple[str, str], dt.datetime | None] = {}
        self.reload_requested = threading.Event()
        self.failure: BaseException | None = None
        self.passes = 0
        self._named = named
        self.refused: dict[str, LoadedSheet] = {}  # syncs whose reload was refused: the new sheet
        self.retired: list[Worker] = []  # workers of syncs a reload removed (joined at the stop)
        # several daemons on one store (state/workers.py): this one runs the syncs it claims
        self.parallel = max(1, parallel)
        self.slots = threading.BoundedSemaphore(self.parallel)  # runs under way at once
        self.token: str | None = None  # its registration as a worker
        self.owns: frozenset[str] = frozenset()
        self._last_beat: float | None = None
        self.epoch = 0  # grows when a beat finds this daemon was presumed dead (`Job.epoch`)
        # work beside the syncs on a thread of its own (daemon_chores.py)
        self.chores = Chores(open_store, self.stop, lambda: self.ttl, self.redact)
        self.store_away = alert_sender.StoreAway()  # the direct alert when the store stays away
        self._watch_handles: dict[str, Any] = {}  # the monitors chore's source connections
        self._watched: LoadedSheet | None = None

    # ------------------------------------------------------------- life

    def run(self) -> int:
        """Schedules until `stop`; returns the exit code (0 clean, 1 runs cut at the grace's end, 2
        the state store needs fixing)."""
        self._set_identity(self.loaded)
        self.register()
        release_orphaned_requests(self.store)
        for name in self.names:
            self._add(name, self.loaded)
        for chore in self._chores():
            self.chores.add(chore)
        self.chores.start()
        log.info(
            "daemon_started",
            extra={"action": "daemon_started", "worker": self.worker, "syncs": ",".join(self.names)},
        )
        try:
            while not self.stop.is_set():
                if self.reload_requested.is_set():
                    self.reload_requested.clear()
                    self._reload_or_later()
                wait = self.tick(self.now())
                self.passes += 1
                self.clock.wait(self.stop, wait)
        finally:
            code = self._shutdown()
        return 2 if self.failure is not None else code

    def _reload_or_later(self) -> None:
        """A reload; with the state store briefly away, again at the next tick."""
        try:
            self.reload()
        except errors.StateError as exc:
            if exc.reason in STORE_BROKEN:
                raise
            log.warning(
                "daemon_reload_later", extra={"action": "daemon_reload_later", "error": self.redact(str(exc))}
            )
            self.reload_requested.set()

    def _add(self, name: str, loaded: LoadedSheet, start: bool = True) -> Worker:
        """A worker for sync `name` (its thread started unless `start` is False: a test of the
        scheduler alone)."""
        w = self.workers[name] = Worker(self, name, loaded)
        w.owned = name in self.owns
        w.held = self._identity_hold(name, loaded)
        if start:
            w.thread.start()
        return w

    def _shutdown(self, grace: dt.timedelta = GRACE) -> int:
        self.stop.set()
        end = self.clock.monotonic() + grace.total_seconds()
        every = [*self.workers.values(), *self.retired]
        for w in every:
            w.wake.set()
        for w in every:
            if w.thread.ident is not None:
                w.thread.join(timeout=max(0.0, end - self.clock.monotonic()))
        self.chores.join(max(0.0, end - self.clock.monotonic()))
        if not self.chores.busy():  # a chore that outlasted the grace keeps its connections
            self._release_watching()
        left = [w.name for w in every if w.thread.is_alive()]
        if not left:
            self._leave()
        if left:
            log.error(
                "daemon_grace_expired",
                extra={
                    "action": "daemon_grace_expired",
                    "syncs": ",".join(left),
                    "grace_s": grace.total_seconds(),
                },
            )
            return 1
        log.info(
            "daemon_stopped",
            extra={
                "action": "daemon_stopped",
                "worker": self.worker,
                "coordination_ms": round(COORDINATION.total() * 1000, 3),
                "run_ms": round(RUNS.total() * 1000, 3),
            },
        )
        return 0

    def fatal(self, name: str, exc: BaseException) -> None:
        """A worker met a failure no retry fixes (a state store to repair): the daemon stops."""
        if self.failure is None:
            self.failure = exc
        log.error(
            "daemon_fatal",
            extra={
                "action": "daemon_fatal",
                "sync": name,
                "error": self.redact(f"{type(exc).__name__}: {exc}"),
            },
        )
        self.stop.set()

    def report(self, report: RunReport) -> None:
        """Hand on a run that changed something or did not succeed (a run stopped by the shutdown
        before it changed anything, or a skipped one, is no news)."""
        if report.counts.changed or report.status in (RunStatus.FAILED, RunStatus.PARTIAL):
            self.on_report(report)

    def poll_of(self, cfg: Any) -> dt.timedelta:
        if self.follow_all is not None:
            return self.follow_all
        return cfg.schedule.poll_interval() if cfg.schedule.poll is not None else self.poll

    def redact(self, text: str) -> str:
        return redact(text, self.loaded.secrets)

    def _set_identity(self, loaded: LoadedSheet) -> None:
        self.store.set_identity(self.worker, fingerprint(loaded))

    # ------------------------------------------------------------- one tick

    def tick(self, now: dt.datetime) -> float:
        """Hand every sync what is due at `now`; returns the seconds until the next due time (at
        most `poll`). A state store that is briefly away skips the tick (the slots it missed are
        handed over at the next one)."""
        try:
            self.beat()
            wait = self._tick(now)
        except errors.StateError as exc:
            if exc.reason in STORE_BROKEN:
                self.fatal("*", exc)
                return 0.0
            if exc.reason not in faults.TRANSIENT:
                raise
            log.warning(
                "daemon_store_away", extra={"action": "daemon_store_away", "error": self.redact(str(exc))}
            )
            self._silent()
            # away longer than twice the lease TTL: the alert channels are told directly, once
            trouble = store_trouble(exc)
            self.store_away.failed(self.loaded, trouble, self.clock.monotonic(), 2 * self.ttl)
            return self.poll.total_seconds()
        self.store_away.ok(self.loaded, self.store)  # after an alerted outage: its incident recorded
        return wait

    def _tick(self, now: dt.datetime) -> float:
        paused = self.store.paused()
        wait = self.poll.total_seconds()
        for name, w in list(self.workers.items()):
            if not w.owned:
                continue  # another worker runs it
            w.paused = paused.get(name)
            if w.held is not None:
                w.held = self._identity_hold(name, w.loaded, quiet=True, previous=w.held)
            if name in self.refused and self._reseeded(name, self.refused[name]):
                w.loaded = self.refused.pop(name)  # seeded again (or reset) under the new sheet
                log.info("daemon_sync_accepted", extra={"action": "daemon_sync_accepted", "sync": name})
            for slot, sched in self._schedules(w).items():
                if slot == RUN and w.following:
                    continue  # it runs pass after pass; its retry slots still come from here
                self._due(w, slot, sched, now)
                upcoming = sched.next_after(now)
                wait = min(wait, max(0.0, (upcoming - now).total_seconds()))
        self._requests(
            [n for n, w in self.workers.items() if w.owned and w.paused is None and w.held is None]
        )
        return max(wait, 0.001)

    def _requests(self, names: list[str]) -> None:
        if not names:
            return
        try:
            taken = self.store.take_requests(names, self.worker)
        except errors.StateError as exc:
            if exc.reason not in faults.TRANSIENT:
                raise
            return
        for req in taken:
            self.workers[req.sync].offer(Job(req.kind, "request", request_id=req.id, keys=req.keys))
            log.info(
                "daemon_request_taken",
                extra={
                    "action": "daemon_request_taken",
                    "sync": req.sync,
                    "kind": req.kind,
                    "request": req.id,
                },
            )
