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
import hashlib
import logging
import queue
import random
import threading
from typing import Any, Protocol

from mapsync import errors, follow
from mapsync.engine import Engine, RunReport
from mapsync.records import RunStatus
from mapsync.sheet.loader import LoadedSheet
from mapsync.sheet.models import SyncConfig
from mapsync.state.clock import Clock
from mapsync.state.data import PauseInfo
from mapsync.state.meter import RUNS
from mapsync.state.ports import Store

log = logging.getLogger("mapsync.daemon")
RUN, RETRY = "run", "retry"  # the two kinds of slot a sync's schedules make
# the state store's faults that no retry fixes: the daemon stops (exit 2) instead of backing off
# (and a schema newer than this mapsync: it must not write into it)
STORE_BROKEN = frozenset({"corrupt", "readonly", "cantopen", "newer_schema"})


@dataclasses.dataclass(frozen=True)
class Job:
    """What a worker is asked to run."""

    kind: str  # run | overlap | retry
    trigger: str  # schedule | request | backoff
    scheduled_at: dt.datetime | None = None
    slot: str | None = None  # run | retry: the schedule that made it (None: nobody scheduled it)
    coalesced: int = 0  # missed slots (after downtime) this run stands for, beyond its own
    request_id: int | None = None
    epoch: int = 0  # the daemon's epoch when it was handed over (`Host.epoch`)


class Host(Protocol):
    """What a worker needs of its daemon."""

    stop: threading.Event
    clock: Clock
    worker: str  # host:pid, on every run row
    follow_all: dt.timedelta | None
    workers: dict[str, Worker]
    slots: threading.BoundedSemaphore  # runs under way at once, across the daemon's workers
    parallel: int

    epoch: int  # grows each time the daemon learns it was presumed dead: older jobs are void

    store: Store  # the scheduler's own connection (shared, thread-safe: one transaction a call)

    def open_store(self) -> Store: ...
    def claims_fresh(self) -> bool: ...
    def claim(self) -> tuple[str, str] | None: ...
    def poll_of(self, cfg: Any) -> dt.timedelta: ...
    def report(self, report: RunReport) -> None: ...
    def fatal(self, name: str, exc: BaseException) -> None: ...
    def redact(self, text: str) -> str: ...


def fingerprint(loaded: LoadedSheet) -> str:
    """A short hash of the sheet file as read (which sheet a run ran under)."""
    try:
        data = loaded.path.read_bytes()
    except OSError:
        data = loaded.sheet.model_dump_json().encode()
    return hashlib.sha256(data).hexdigest()[:16]


def jittered(delay: float) -> float:
    """Equal jitter: between half and all of `delay` (workers that failed together spread out)."""
    return delay / 2 + random.uniform(0, delay / 2)


class Worker:
    """One sync's thread: its own Engine and state store connection, one job at a time."""

    def __init__(self, daemon: Host, name: str, loaded: LoadedSheet) -> None:
        self.daemon = daemon
        self.name = name
        self.loaded = loaded  # the configuration it runs (replaced by an accepted reload)
        self.jobs: queue.Queue[Job] = queue.Queue()  # requests and backoff attempts, in order
        self.mailbox: dict[str, Job] = {}  # slot kind → the scheduled job waiting (see `offer`)
        self.inflight: dict[str, dt.datetime] = {}  # slot kind → the scheduled time under way
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
            if job.scheduled_at is not None:  # under way from now (seen by `Daemon._skip_reason`)
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
                store.record_skipped_run(
                    self.name,
                    job.kind,
                    job.trigger,
                    job.scheduled_at,
                    job.slot,
                    reason,
                    message,
                    coalesced=job.coalesced,
                )

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

    def _listen_urls(self, store: Store) -> list[str]:
        engine = self._engine(store)
        try:
            return follow.pg_listen_urls(engine, [self.name])
        except Exception as exc:  # the source is away: polling still works
            log.warning(
                "follow_listen_failed",
                extra={"action": "follow_listen_failed", "sync": self.name, "error": type(exc).__name__},
            )
            return []

    def _engine(self, store: Store) -> Engine:
        if self.engine is not None and self.engine.loaded is not self.loaded:
            self.engine.close()  # an accepted reload: built afresh from the new configuration
            self.engine = None
        if self.engine is None:
            self.engine = Engine(self.loaded, store, stop=self.daemon.stop, heartbeat=True, same_sync=True)
            store.set_identity(self.daemon.worker, fingerprint(self.loaded))  # on its run rows
            store.set_fence(self.daemon.claim)  # its slot rows only while the sync is its claim
        return self.engine

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

    def _run_now(self, store: Store, job: Job) -> None:
        engine = self._engine(store)

        def current() -> bool:  # may this job still record its slot (not woken from a freeze)?
            return self.daemon.claims_fresh() and self.owned and job.epoch == self.daemon.epoch

        engine.may_record_slot = current
        report: RunReport | None = None
        failed: BaseException | None = None
        self.running = True
        try:
            if job.kind == RETRY:
                retry = self.cfg.retry
                automatic = job.trigger != "request" and retry is not None
                report = engine.retry(
                    self.name,
                    trigger=job.trigger,
                    automatic=automatic,
                    max_attempts=retry.max_attempts if retry is not None else None,
                    scheduled_at=job.scheduled_at,
                    slot=job.slot,
                )
            else:
                report = engine.run(
                    self.name,
                    job.kind,
                    trigger=job.trigger,
                    scheduled_at=job.scheduled_at,
                    slot=job.slot,
                    coalesced=job.coalesced,
                    keep_empty=job.trigger != "follow",
                )
        except errors.SlotTaken as exc:  # another process ran this slot: nothing to do
            log.info(
                "daemon_slot_taken",
                extra={"action": "daemon_slot_taken", "sync": self.name, "error": str(exc)},
            )
        except errors.LeaseHeld as exc:  # a `mapsync run` of the sync, a worker it was taken from
            why = engine.redact_text(str(exc))
            log.info(
                "daemon_lease_held",
                extra={"action": "daemon_lease_held", "sync": self.name, "error": why},
            )
            if job.slot is not None and current():  # the slot is not lost in silence: skipped
                with contextlib.suppress(errors.StateError):
                    store.record_skipped_run(
                        self.name,
                        job.kind,
                        job.trigger,
                        job.scheduled_at,
                        job.slot,
                        "running",
                        f"the sync was running in another process: {why}",
                        coalesced=job.coalesced,
                    )
        except errors.IdentityChanged as exc:  # seeded as another sync meanwhile: held
            self.held = str(exc)
            failed = exc
        except errors.StateError as exc:
            if exc.reason in STORE_BROKEN:
                raise  # a store to fix first (corrupt, read-only, cannot open): the daemon stops
            failed = exc  # the store away, a sync not seeded, a capture's slot or binlog lost
        except errors.MapsyncError as exc:  # source, destination, config (a table renamed) …
            failed = exc
        except Exception as exc:  # a bug: recorded by the engine; logged, backed off, never fatal
            log.exception(
                "daemon_run_crashed",
                extra={
                    "action": "daemon_run_crashed",
                    "sync": self.name,
                    "error": engine.redact_text(str(exc)),
                },
            )
            failed = exc
        finally:
            self.running = False
        if report is not None:
            self.daemon.report(report)
            if report.status == RunStatus.FAILED:
                failed = errors.MapsyncError(report.message or "failed")
        if job.request_id is not None:
            status = "failed" if failed is not None else "done"
            message = engine.redact_text(str(failed)) if failed is not None else None
            run_id = report.run_id if report is not None else None
            try:
                store.finish_request(job.request_id, status, run_id, message)
            except errors.StateError:
                log.warning(
                    "daemon_request_unrecorded",
                    extra={"action": "daemon_request_unrecorded", "sync": self.name},
                )
        if failed is not None:
            delay = self.backoff.failed(self.name, self.daemon.clock.monotonic())
            log.error(
                "daemon_run_failed",
                extra={
                    "action": "daemon_run_failed",
                    "sync": self.name,
                    "failure_class": getattr(failed, "failure_class", None)
                    or (report.failure_class if report is not None else None),
                    "error": engine.redact_text(str(failed)),
                    "retry_in_s": round(delay, 3),
                },
            )
        elif report is not None and report.status != RunStatus.STOPPED:
            self.backoff.succeeded(self.name)
