"""One sync's worker of `mapsync daemon` (`daemon.py`): a thread with its own Engine and state
store connection that runs one job at a time (a scheduled slot, a request, a backoff attempt, a
follow pass), backs off after a failure and reports each run to its daemon.

Its own Engine builds the sync's parts on the first run and reuses them; it stops between two
batches when the daemon stops (`Engine.stop`) and keeps its lease by a heartbeat while a run is
active. Only a state store that needs fixing first (corrupt, read-only, newer schema) ends the
thread, and with it the daemon (`Host.fatal`).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import logging
import queue
import threading

from mapsync import errors, follow
from mapsync.daemon_jobs import RETRY as RETRY
from mapsync.daemon_jobs import RUN as RUN
from mapsync.daemon_jobs import STORE_BROKEN as STORE_BROKEN
from mapsync.daemon_jobs import Host as Host
from mapsync.daemon_jobs import Job as Job
from mapsync.daemon_jobs import fingerprint as fingerprint
from mapsync.daemon_jobs import jittered
from mapsync.daemon_run import Running, skip_slot
from mapsync.engine import Engine
from mapsync.sheet.loader import LoadedSheet
from mapsync.sheet.models import SyncConfig
from mapsync.state.data import PauseInfo
from mapsync.state.meter import RUNS
from mapsync.state.ports import Store

log = logging.getLogger("mapsync.daemon")


class Worker(Running):
    """One sync's thread: its own Engine and state store connection, one job at a time."""

    def __init__(self, daemon: Host, name: str, loaded: LoadedSheet) -> None:
        self.daemon = daemon
        self.name = name
        self.loaded = loaded  # the configuration it runs (replaced by an accepted reload)
        self.jobs: queue.Queue[Job] = queue.Queue()  # requests and backoff attempts, in order
        self.mailbox: dict[str, Job] = {}  # slot kind → the scheduled job waiting (see `offer`)
        self.inflight: dict[str, dt.datetime] = {}  # slot kind → the scheduled time under way
        # slot kind → the scheduled time of the last job of it that ended here: the scheduler
        # checks that it left a row (`Slots._count_from`) before it counts the slots after it
        self.ended: dict[str, dt.datetime] = {}
        # jobs handed over and not finished, by what they are: "run" (run, overlap) or "retry"
        self.pending: collections.Counter[str] = collections.Counter()
        self.backoff = follow.Backoff(jitter=jittered)
        self.stopping = threading.Event()  # this worker alone (its sync left the sheet)
        self.paused: PauseInfo | None = None  # the pause the scheduler saw last
        self.held: str | None = None  # why the sync does not run (identity changed), or None
        self.running = False  # a run of it is under way (its `after:` dependents wait)
        self.owned = False  # this daemon runs it (its claim, state/workers.py); else another does
        self.wake = threading.Event()  # set when there is something to look at (`_await`)
        self.thread = threading.Thread(target=self._main, name=f"mapsync-sync-{name}", daemon=True)
        self._lock = threading.Lock()
        self.engine: Engine | None = None
        self.store: Store | None = None  # its own connection to the state store (see `_main`)

    # ------------------------------------------------------------- seen by the scheduler

    @property
    def cfg(self) -> SyncConfig:
        return self.loaded.sheet.syncs[self.name]

    @property
    def following(self) -> bool:
        return self.daemon.follow_all is not None or self.cfg.schedule.follow

    def busy(self, what: str | None = None) -> bool:
        """Whether a job (of `what`: "run" or "retry") is queued or running."""
        with self._lock:
            return self.pending[what] > 0 if what else sum(self.pending.values()) > 0

    def _taken(self, job: Job, n: int) -> None:
        with self._lock:
            self.pending[RETRY if job.kind == RETRY else RUN] += n

    def backing_off(self) -> bool:
        return not self.backoff.ready(self.name, self.daemon.clock.monotonic())

    def offer(self, job: Job) -> None:
        """Hand over a job. A scheduled slot waits in the mailbox of its slot kind until a run
        slot of the daemon is free: a newer slot due meanwhile replaces it and stands for it
        (`coalesced`), so no row is written for a slot before it runs, and a daemon that dies
        with slots waiting leaves them to the next worker, which counts them from the last row."""
        job = dataclasses.replace(job, epoch=self.daemon.epoch)
        slot = job.slot
        if job.trigger == "schedule" and slot is not None:
            with self._lock:
                old = self.mailbox.get(slot)
                if old is None:
                    self.pending[slot] += 1
                else:
                    job = dataclasses.replace(job, coalesced=job.coalesced + old.coalesced + 1)
                self.mailbox[slot] = job
        else:
            self._taken(job, 1)
            self.jobs.put(job)
        self.wake.set()

    def ended_at(self, slot: str) -> dt.datetime | None:
        """The scheduled time of the last job of this slot kind that ended and was not looked at."""
        with self._lock:
            return self.ended.get(slot)

    def looked_at(self, slot: str, at: dt.datetime) -> None:
        with self._lock:
            if self.ended.get(slot) == at:
                del self.ended[slot]

    def queued(self, slot: str) -> bool:
        """Whether a slot of this kind waits in the mailbox (not started)."""
        with self._lock:
            return slot in self.mailbox

    def _scheduled(self) -> Job | None:
        """Take the scheduled job that waits longest from the mailbox."""
        with self._lock:
            if not self.mailbox:
                return None
            first = dt.datetime.min.replace(tzinfo=dt.UTC)
            slot = min(self.mailbox, key=lambda k: self.mailbox[k].scheduled_at or first)
            job = self.mailbox.pop(slot)
            if job.scheduled_at is not None:  # under way from now (seen by `Slots._skip_reason`)
                self.inflight[slot] = job.scheduled_at
            return job

    # ------------------------------------------------------------- the thread

    def _main(self) -> None:
        """The thread: run jobs until the daemon stops. Its connection to the state store (and its
        Engine's to the sync's ends) is opened when a run of its sync starts here (after it got
        one of the daemon's `parallel` run slots), again and again while the store is away, and
        closed while another worker runs the sync; when the daemon has more syncs than
        `parallel`, also after each run (the parts kept: `Engine.release`), so the daemon holds
        about 3 × `parallel` connections however many syncs it runs. Nothing but a state store
        that needs fixing first stops the daemon: any other error is logged, and the worker
        waits a moment and goes on."""
        waker: follow.Waker | None = None
        try:
            while not self._stopped():
                if not self.owned and self.jobs.empty() and not self.mailbox:
                    self._idle(waker)
                    waker = None
                    self._await()
                    continue
                if not self.following and self.jobs.empty() and not self.mailbox and not self._retry_due():
                    self._await()  # nothing to run
                    continue
                try:
                    if self.following and waker is None:
                        store = self._store()
                        if store is None:
                            return
                        waker = follow.Waker(self._listen_urls(store), self.daemon.stop, self.daemon.clock)
                    self._step(waker)
                except errors.StateError as exc:
                    if exc.reason in STORE_BROKEN:
                        raise
                    self._trouble(exc)
                except Exception as exc:  # a source's LISTEN connection lost, say: listen afresh
                    self._trouble(exc)
                    if waker is not None:
                        waker.close()
                        waker = None
        except BaseException as exc:  # a store that needs fixing first: the daemon stops
            self.daemon.fatal(self.name, exc)
        finally:
            self._release_requests(self.store or self.daemon.store)
            self._idle(waker)

    def _store(self) -> Store | None:
        """The worker's state store connection, opened if need be (None: the daemon stopped)."""
        if self.store is None:
            self.store = self._open()
        return self.store

    def _await(self, seconds: float = 1.0) -> None:
        """Sleep until a job is offered, the sync is claimed, the daemon stops, or `seconds`
        (real time: a test's manual clock does not move). A thousand idle workers wake once a
        second each, not ten times."""
        self.wake.wait(seconds)
        self.wake.clear()

    def _retry_due(self) -> bool:
        """A failed sync whose backoff is over (tried again without a job)."""
        return bool(self.backoff.failures.get(self.name)) and self.backoff.ready(
            self.name, self.daemon.clock.monotonic()
        )

    def _idle(self, waker: follow.Waker | None) -> None:
        """Close what the worker holds open (its sync runs elsewhere, or the daemon stops)."""
        if waker is not None:
            waker.close()
        if self.engine is not None:
            self.engine.close()
            self.engine = None
        if self.store is not None:
            self.store.close()
            self.store = None

    def _open(self) -> Store | None:
        """This worker's connection to the state store, tried every few seconds while the store is
        away (None: the daemon stopped first, or the store needs fixing)."""
        delay = 1.0
        while not self._stopped():
            try:
                return self.daemon.open_store()
            except errors.StateError as exc:
                if exc.reason in STORE_BROKEN:
                    self.daemon.fatal(self.name, exc)
                    return None
                self._trouble(exc)
            except Exception as exc:  # the CLI's wrapper turns a StateError into its own exit
                self._trouble(exc)
            self.daemon.clock.wait(self.daemon.stop, delay)
            delay = min(delay * 2, 30.0)
        return None

    def _trouble(self, exc: BaseException) -> None:
        log.error(
            "daemon_worker_error",
            extra={
                "action": "daemon_worker_error",
                "sync": self.name,
                "error": self.daemon.redact(f"{type(exc).__name__}: {exc}"),
            },
        )
        self.daemon.clock.wait(self.daemon.stop, 1.0)

    def _forgo(self, job: Job, reason: str, message: str) -> None:
        """A job that will not run here. When the sync is still this daemon's (a stop), a
        scheduled slot is recorded as skipped, standing for the slots it stood for, if a later
        slot of the sync has a row already (this daemon wrote it while the slot waited: the next
        worker starts after that row and would never count this slot); otherwise the next worker
        counts it. When the sync moved (this daemon was presumed dead, or released it), the
        worker that runs it now counted this slot from the last row: nothing is written."""
        log.warning(
            "daemon_job_dropped",
            extra={"action": "daemon_job_dropped", "sync": self.name, "kind": job.kind, "error": message},
        )
        moved = job.epoch < self.daemon.epoch or not self.owned
        if moved or job.slot is None or job.scheduled_at is None:
            return
        store = self.store or self.daemon.store  # the scheduler's: no connection opened for this
        with contextlib.suppress(errors.StateError):
            later = store.last_slot(self.name, job.slot)
            if later is not None and later > job.scheduled_at:
                skip_slot(store, self.name, job, reason, message)

    def _release_requests(self, store: Store) -> None:
        """Requests handed to this worker and not run (the daemon stopped first) end `failed`
        with the reason, never `taken` for ever; scheduled slots are forgone (`_forgo`)."""
        while (waiting := self._scheduled()) is not None:
            self._taken(waiting, -1)
            self._forgo(waiting, "stopped", "the daemon stopped before this slot ran")
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                return
            self._taken(job, -1)
            if job.request_id is None:
                self._forgo(job, "stopped", "the daemon stopped before this slot ran")
            if job.request_id is not None:
                with contextlib.suppress(errors.StateError):
                    store.finish_request(
                        job.request_id, "failed", None, "the daemon stopped before running it: ask again"
                    )

    def _stopped(self) -> bool:
        return self.daemon.stop.is_set() or self.stopping.is_set()

    def _step(self, waker: follow.Waker | None) -> None:
        """Run one job if one is there; a follow sync runs a pass otherwise; a failed sync whose
        backoff is over is tried again. Nothing runs while the daemon's claims are stale (no beat
        has reached the store for a TTL: after a freeze the others may run the sync now), and a
        job of a sync that is no longer this daemon's is dropped (the one that runs it now
        runs the slot; a request it had taken went back to the queue)."""
        if not self.daemon.claims_fresh():
            self._await(0.2)
            return
        held = False
        job: Job | None = None
        if self.mailbox and self._slot():  # a run slot first, then the newest scheduled job
            held = True
            job = self._scheduled()
        if job is None:
            if held:
                self.daemon.slots.release()
                held = False
            try:
                job = self.jobs.get(timeout=0 if self.following or self.mailbox else 0.2)
            except queue.Empty:
                job = None
        if job is not None:
            if job.slot is not None and job.scheduled_at is not None:
                self.inflight[job.slot] = job.scheduled_at
            try:
                if job.epoch < self.daemon.epoch:  # handed over before the daemon was presumed dead
                    self._forgo(job, "moved", "handed over before this worker was presumed dead")
                elif self.owned:
                    mine, held = held, False  # `_run` owns the run slot now: it releases it, once
                    self._run(job, held=mine)
                else:
                    self._forgo(job, "moved", "the sync went to another worker before this slot ran")
            finally:
                with self._lock:  # together: the scheduler never sees the slot done but busy
                    if job.slot is not None:
                        self.inflight.pop(job.slot, None)
                        if job.scheduled_at is not None:
                            self.ended[job.slot] = job.scheduled_at
                    self.pending[RETRY if job.kind == RETRY else RUN] -= 1
                if held:
                    self.daemon.slots.release()
            return
        if self.held is not None or self.paused is not None or not self.owned:
            if self.following:
                self.daemon.clock.wait(self.daemon.stop, self.daemon.poll_of(self.cfg).total_seconds())
            return
        if self.following:
            if self.backoff.ready(self.name, self.daemon.clock.monotonic()):
                self._run(Job("run", "follow"))
            if waker is not None and not self._stopped():
                waker.wait(self.daemon.poll_of(self.cfg).total_seconds())
            return
        if self._retry_due():
            again = Job("run", "backoff")
            self._taken(again, 1)
            try:
                self._run(again)
            finally:
                self._taken(again, -1)

    def _wait_for_after(self) -> None:
        """A sync does not start while a sync it comes after is running."""
        deps = [w for d in self.cfg.after if (w := self.daemon.workers.get(d)) is not None]
        while not self._stopped() and any(d.running for d in deps):
            self.daemon.clock.wait(self.daemon.stop, 0.05)

    def _slot(self) -> bool:
        """Wait for one of the daemon's `parallel` run slots (False: the daemon stopped first)."""
        while not self._stopped():
            if self.daemon.slots.acquire(timeout=0.2):
                return True
        return False

    def _run(self, job: Job, held: bool = False) -> None:
        """Run `job` in a run slot of the daemon (`held`: taken already). The slot is released
        exactly once, here, however the run ends."""
        if not held and (self._stopped() or not self._slot()):
            return
        try:
            if self._stopped():
                return
            self._wait_for_after()
            if self._stopped():
                return
            store = self._store()
            if store is None:
                return
            with RUNS.timed("run"):
                self._run_now(store, job)
        finally:
            self.daemon.slots.release()
            if len(self.daemon.workers) > self.daemon.parallel:  # no connection held between runs
                if self.engine is not None:
                    self.engine.release()
                elif self.store is not None:
                    self.store.close()
