"""One run of a sync's worker (`daemon_worker.Worker`): its Engine, built once and reused, the
run itself and what its outcome means for the worker (a slot taken elsewhere, a lease held by
another process, a sync held by its identity, a failure and its backoff, a request answered).
A mixin of `Worker`."""

from __future__ import annotations

import contextlib
import logging

from mapsync import daemon_jobs, errors, follow, sweep_plan
from mapsync import keys as key_forms
from mapsync.daemon_jobs import REEXPORT, RETRY, STORE_BROKEN, Host, Job, fingerprint
from mapsync.engine import Engine, RunReport
from mapsync.records import RunStatus
from mapsync.sheet.loader import LoadedSheet
from mapsync.sheet.models import ExportFlagChanges
from mapsync.state.ports import Store

log = logging.getLogger("mapsync.daemon")


def skip_slot(store: Store, name: str, job: Job, reason: str, message: str) -> None:
    """Record `job`'s slot as skipped, standing for the slots it stood for (a store away: the
    next worker counts it from the last row)."""
    if job.slot is None:
        return
    with contextlib.suppress(errors.StateError):
        store.record_skipped_run(
            name, job.kind, job.trigger, job.scheduled_at, job.slot, reason, message, coalesced=job.coalesced
        )


class Running:
    """The run of a job (see the module's docstring)."""

    daemon: Host
    name: str
    loaded: LoadedSheet
    engine: Engine | None
    backoff: follow.Backoff
    held: str | None  # why the sync does not run (identity changed), or None
    running: bool
    owned: bool

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

    def _sweep_first(self, engine: Engine, store: Store) -> None:
        """An API export's lost-order sweep, when one is due (`sweep_plan.due`), before the
        pass's run. Its failure is logged and leaves the run alone (a new `lost:` marker asks
        again at the next pass)."""
        if not isinstance(self.loaded.sheet.syncs[self.name].changes, ExportFlagChanges):
            return
        try:
            why = sweep_plan.due(store, self.name, engine.parts(self.name))
            if why is None:
                return
            report = engine.sweep(self.name, trigger=why)
        except (errors.LeaseHeld, errors.SlotTaken):
            return
        except errors.StateError as exc:
            if exc.reason in STORE_BROKEN:
                raise
            log.warning("daemon_sweep_failed", extra={"action": "daemon_sweep_failed", "sync": self.name})
            return
        except Exception as exc:  # the run after it says what is wrong with the sync
            log.warning(
                "daemon_sweep_failed",
                extra={
                    "action": "daemon_sweep_failed",
                    "sync": self.name,
                    "error": engine.redact_text(str(exc)),
                },
            )
            return
        self.daemon.report(report)

    def offer(self, job: Job) -> None:
        raise NotImplementedError  # Worker's

    def _answer(
        self, store: Store, engine: Engine, job: Job, status: str, run_id: int | None, message: str | None
    ) -> None:
        """Finish the job's request (`done` or `failed` with the redacted message)."""
        if job.request_id is None:
            return
        text = engine.redact_text(message) if message is not None else None
        try:
            store.finish_request(job.request_id, status, run_id, text)
        except errors.StateError:
            log.warning(
                "daemon_request_unrecorded",
                extra={"action": "daemon_request_unrecorded", "sync": self.name},
            )

    def _run_now(self, store: Store, job: Job) -> None:
        engine = self._engine(store)
        ask = daemon_jobs.Asked()
        if job.request_id is not None:
            try:
                ask = daemon_jobs.asked(self.loaded, store, self.name, job)
            except errors.StateError as exc:
                if exc.reason in STORE_BROKEN:
                    raise
                ask = daemon_jobs.Asked(refused=f"the state store could not be read: {exc}")
            if ask.refused is not None:  # the operator's mistake: answered, nothing run, no backoff
                self._answer(store, engine, job, "failed", None, ask.refused)
                return

        def current() -> bool:  # may this job still record its slot (not woken from a freeze)?
            return self.daemon.claims_fresh() and self.owned and job.epoch == self.daemon.epoch

        engine.may_record_slot = current
        report: RunReport | None = None
        failed: BaseException | None = None
        self.running = True
        try:
            if job.kind not in (RETRY, REEXPORT):
                self._sweep_first(engine, store)
            if job.kind == REEXPORT:
                report = engine.reexport(self.name, ask.keys, trigger=job.trigger)
            elif job.kind == RETRY:
                retry = self.loaded.sheet.syncs[self.name].retry
                automatic = job.trigger != "request" and retry is not None
                report = engine.retry(
                    self.name,
                    trigger=job.trigger,
                    automatic=automatic,
                    max_attempts=retry.max_attempts if retry is not None else None,
                    keys=ask.keys,
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
                skip_slot(store, self.name, job, "running", f"the sync was running in another process: {why}")
            if job.request_id is not None and current():  # a request waits for that run to end
                self.daemon.clock.wait(self.daemon.stop, 1.0)
                self.offer(job)  # tried again (a daemon that stops first answers it `failed`)
                return
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
            message = str(failed) if failed is not None else None
            if message is None and report is not None:  # ran well, but not for every key asked
                columns = key_forms.columns_of(self.loaded.sheet, self.name)
                message = daemon_jobs.shortfall(ask, report, columns)
            status = "failed" if message is not None else "done"
            self._answer(store, engine, job, status, report.run_id if report is not None else None, message)
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
        if failed is not None or (report is not None and report.run_id is not None):
            # its monitors, at once (never raises); a clean run with nothing open costs one read
            self.daemon.after_run(store, self.loaded, self.name, report if failed is None else None)
