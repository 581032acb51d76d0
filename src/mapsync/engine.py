"""Run one sync: read → map → write → acknowledge at the source → commit state.

Progress moves only after the destination confirmed, so a crash anywhere means a re-send that
the destination absorbs (upsert by natural key), never a loss. Crash points sit between the
steps (`CRASH_POINTS`, triggered by `MAPSYNC_CRASH_AT=<point>[:<nth>]`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable

from mapsync import (
    breaker,
    capture,
    collisions,
    crash,
    errors,
    guard,
    logs,
    records,
    run_columnar,
    run_ends,
    run_failures,
    run_steps,
    transforms,
)
from mapsync.connectors.catalog_mark import Mark
from mapsync.engine_kinds import KindRuns
from mapsync.lease_watch import Heartbeat, LeaseWatch, heartbeat, settled
from mapsync.ports import Handle
from mapsync.records import RunKind, RunStatus
from mapsync.redact import redact
from mapsync.run_scope import CapturePlan, Plan, Request, RunScope
from mapsync.run_types import ColumnarWrite, Quiet, counted
from mapsync.run_types import Observer as Observer
from mapsync.run_types import Parts as Parts
from mapsync.run_types import RunReport as RunReport
from mapsync.sheet import identity as identities
from mapsync.sheet.loader import LoadedSheet
from mapsync.state import attempts
from mapsync.state import lease as leases
from mapsync.state.data import Attempt
from mapsync.state.ports import Store
from mapsync.state.retention import purge_after_run
from mapsync.state.store import Counts

CRASH_POINTS = crash.POINTS
# failures that stop a run with one message and the cursor kept (anything else is a bug)
_STOPS = (errors.PermanentError, errors.TransientError, errors.LeaseLost, errors.StateError)
log = logging.getLogger("mapsync.engine")


class Engine(KindRuns):
    """Runs the syncs of one sheet against one state store (its other run kinds, retry |
    reexport | sweep | repair, in engine_kinds.py).

    `stop`: a graceful stop (the daemon's SIGTERM): once set, a run ends after the batch it is
    in is committed, as `stopped` (see `_scoped`). `heartbeat`: renew a run's lease from a
    thread every `lease_ttl / 3` while it is active (the daemon; one-off CLI runs renew only
    before writes and at commits)."""

    def __init__(
        self,
        loaded: LoadedSheet,
        store: Store,
        observer: Observer | None = None,
        *,
        stop: threading.Event | None = None,
        heartbeat: bool = False,
        same_sync: bool = False,
    ) -> None:
        self.loaded = loaded
        self.stop = stop
        self.heartbeat = heartbeat
        # the daemon's: refuse a run (IdentityChanged) whose state a seed stored under another
        # identity of the sync (sheet/identity.py), checked under the lease
        self.same_sync = same_sync
        self._beat: Heartbeat | None = None  # the active run's heartbeat
        self._breaker = breaker.Breaker(None)  # the active run's destination breaker
        self._breakers: dict[str, breaker.Breaker] = {}  # per sync, across its runs
        self.sheet = loaded.sheet
        self.store = store
        self.observer = observer or Quiet()
        self._dbs: dict[str, Handle] = {}
        self._marks: dict[str, Mark] = {}  # per connection: its catalog mark at its first build
        self._built: dict[str, Parts] = {}  # per sync: its parts, reused across runs
        self._contexts: dict[str, capture.Context] = {}  # per sync: the context its capture was given
        logs.add_secrets(loaded.secrets)  # also when used as a library, not through the CLI
        self.watch = LeaseWatch(store, lambda: [store, *self._dbs.values()])

    # the daemon's: whether a failed scheduled run may still record its slot (run_failures)
    may_record_slot: Callable[[], bool] | None = None

    def release(self) -> None:
        """Close the pooled connections of the run's SQL ends and of the state store, keeping
        the parts (built, reflected): the next run connects again. A daemon with more syncs than
        runs at once holds no connection between a sync's runs."""
        for engine in self.watch.engines():
            engine.dispose()

    def close(self) -> None:
        self.watch.close()
        self._built.clear()
        for db in self._dbs.values():
            db.close()
        self._dbs.clear()
        self._marks.clear()

    # ----------------------------------------------------------------- one run

    @counted
    @run_failures.recorded
    @settled
    def run(
        self,
        name: str,
        kind: str = "run",
        *,
        trigger: str = "cli",
        scheduled_at: dt.datetime | None = None,
        slot: str | None = None,
        coalesced: int = 0,
        again: bool = False,
        window: dt.timedelta | None = None,
        keep_empty: bool = True,
        deletes: bool = False,
        force_deletes: bool = False,
    ) -> RunReport:
        """One pass of one sync. `kind`: seed | run | overlap. Raises LeaseHeld, ConfigError, and
        SlotTaken when `slot` (the daemon's schedule that made the run) at `scheduled_at` ran
        already; `coalesced`: how many missed slots the run stands for beyond its own.
        `keep_empty=False` (follow mode) leaves no run in the history when it changed nothing: no
        write, delete or rejection, and the cursors ended where they started."""
        cfg = self.sheet.syncs[name]
        parts = self.parts(name)

        def scoped() -> RunReport:
            # `deletes`: a key-set delete check (run --deletes); `force_deletes`: pass the guard once
            run_guard, check = guard.prepare(
                parts.capture, self.store, name, cfg, deletes=deletes, force=force_deletes
            )
            given = capture.RunInput(run_guard, check, window)
            plan = CapturePlan(self.store, self.sheet, name, parts, RunKind(kind), again)
            request = Request(
                RunKind(kind), trigger, scheduled_at, keep_empty, run_guard, given, slot, coalesced
            )
            return self._scoped(name, parts, plan, request)

        return self._kept(name, scoped)

    def _kept(self, name: str, scoped: Callable[[], RunReport]) -> RunReport:
        """A run whose sync's cached parts survive only if it did not fail or crash (a held
        lease is no run: the parts stay)."""
        try:
            report = scoped()
        except (errors.LeaseHeld, errors.SlotTaken):  # no run: the parts stay
            raise
        except BaseException:
            self._built.pop(name, None)
            raise
        if report.status == RunStatus.FAILED:
            self._built.pop(name, None)
        return report

    def _scoped(self, name: str, parts: Parts, plan: Plan, request: Request) -> RunReport:
        """A run of any kind: lease, run row, the plan's batches through `_step`, the run's end."""
        with (
            leases.held(self.store, name, self.sheet.state.lease_ttl) as lease,
            self.watch.watching(lease),
            heartbeat(self.store, lease, self.heartbeat) as beat,
        ):
            # the breaker lives across the runs of this Engine (a daemon's worker): a destination
            # that refused the last batches of one run meets the next run's first batch open
            self._beat = beat
            # a retry re-sends records refused before: refused again, they say nothing of a
            # destination refusing everything, and a tripped retry would never count their
            # attempts (never buried by `max_attempts`): it runs without one, the sync's untouched
            self._breaker = (
                breaker.Breaker(None)
                if request.kind == RunKind.RETRY
                else self._breakers.setdefault(name, breaker.Breaker(self.sheet.syncs[name].delivery.breaker))
            )
            cursors = self.store.cursors(name)
            if self.same_sync and request.kind != RunKind.SEED:
                identities.check(self.sheet, name, cursors, self.loaded.where("syncs", name))
            kind = plan.decide(cursors)
            run_id = self.store.start_run(
                name,
                kind,
                request.trigger,
                lease.token,
                request.scheduled_at,
                slot=request.slot,
                coalesced=request.coalesced,
            )
            report = RunReport(name, kind, run_id, RunStatus.RUNNING, Counts())
            scope = RunScope(name, kind, lease, report, request.guard, request.capture_input)
            if (context := self._contexts.get(name)) is not None:
                context.run = scope.capture_input  # the capture's input for this run, and no other
            log.info(
                "run_started", extra={"action": "run_started", "sync": name, "run_id": run_id, "kind": kind}
            )
            done = 0  # batches committed
            try:
                parts.capture.begin()  # the parts live across runs: what the last run left goes
                parts.dest.begin(kind)
                if self._stopping():  # a stop before the first read: nothing is read
                    return run_ends.stopped(self.store, report, done, not request.keep_empty)
                batches, total = plan.start(scope)
                self.observer.started(name, kind, total)
                for batch in batches:
                    crash.point("after_read")
                    self._step(scope, parts, batch)
                    done += 1
                    if self._stopping():
                        run_ends.close_batches(batches)
                        # follow mode: a pass that changed nothing leaves no trace, stopped or
                        # not: its cursors go back to where they were (rows read again, never
                        # missed) and its row goes, as an idle pass's does
                        idle = not request.keep_empty and not report.counts.changed
                        if idle:
                            run_ends.cursors_back(self.store, name, cursors, report.run_id)
                        return run_ends.stopped(self.store, report, done, idle)
                if beat is not None:
                    beat.check()
                plan.end(scope)
            except _STOPS as exc:
                return run_ends.failed(self.store, report, self.redact_text, exc)
            except BaseException as exc:
                if crash.dead():  # an in-process crash point: the run stays `running`, as after SIGKILL
                    raise
                if (cut := self.watch.cut_error(name, exc)) is not None:
                    return run_ends.failed(self.store, report, self.redact_text, cut)
                run_ends.crashed(self.store, report, self.redact_text, exc)
                raise
            partial = report.counts.rejected or report.gone
            report.status = RunStatus.PARTIAL if partial else RunStatus.SUCCESS
            if not request.keep_empty and not report.counts.changed and self.store.cursors(name) == cursors:
                self.store.discard_run(run_id)
                report.run_id = None
                return report
            message = run_ends.message(report)
            self.store.finish_run(run_id, report.status, None, message)
            if plan.purge:
                purge_after_run(self.store, self.sheet, name)
            counts = dataclasses.asdict(report.counts)
            log.info(
                "run_finished", extra={"action": "run_finished", "sync": name, "run_id": run_id, **counts}
            )
            return report

    def _stopping(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def _step(self, scope: RunScope, parts: Parts, batch: records.Batch) -> None:
        """One batch: map → ledger → collisions → guard → write → breaker → acknowledge → commit.
        A batch held as Arrow columns takes the columnar step where the sync has a plan for it
        (run_columnar.py); it gives the batch back to this path when it cannot take it."""
        if self._beat is not None:
            self._beat.check()  # a heartbeat found the lease taken: nothing more of this run
        if (
            batch.arrow is not None
            and parts.columnar is not None
            and run_columnar.step(self, scope, parts, batch)
        ):
            return
        counts = Counts(read=len(batch.changes))
        mapped, rejected, tally = run_steps.map_batch(parts.mapping, batch, scope.reads, scope.report, counts)
        send, seen, collided = self.sort_out(scope, parts, mapped, counts, force=batch.force)
        guard.before_send(scope.guard, batch.changes, send)  # the mass-delete guard
        self.finish_batch(scope, parts, batch, send, seen, rejected + collided, tally, counts)

    def sort_out(
        self, scope: RunScope, parts: Parts, mapped: list[records.Mapped], counts: Counts, *, force: bool
    ) -> tuple[list[records.Mapped], list[records.Delivered], list[records.Rejection]]:
        """Mapped records against the key ledger and the destination's keys: (to send, seen
        again unchanged under a newer version, rejected as colliding)."""
        # a fresh seed writes into an empty destination: every row must go, whatever the ledger
        # says (it holds at most this run's earlier, disjoint keys), so it is not read. A resumed
        # seed or `--again` is never fresh and looks up as usual.
        name = scope.sync
        ledger = {} if scope.fresh else self.store.ledger(name, [m.key for m in mapped])
        zone = parts.capture.zone
        low = parts.capture.low()
        forced = scope.forced | {records.key_text(m.key) for m in mapped} if force else scope.forced
        send, seen = run_steps.against_ledger(scope.kind, mapped, ledger, low, zone, counts, forced)
        send, collided = collisions.collisions(parts.dest, send, ledger, self.store, name)
        return send, seen, collided

    def finish_batch(
        self,
        scope: RunScope,
        parts: Parts,
        batch: records.Batch,
        send: list[records.Mapped],
        seen: list[records.Delivered],
        rejected: list[records.Rejection],
        tally: transforms.Tally,
        counts: Counts,
        columnar: ColumnarWrite | None = None,
    ) -> None:
        """A sorted batch's write, breaker, acknowledgement and state commit. `columnar` writes a
        columnar batch's rows inside the same breaker window: it returns how many rows it sent,
        what it delivered as columns, and the outcome of the rows it wrote per record instead."""
        name, report = scope.sync, scope.report
        columns: records.DeliveredColumns | None = None
        sent = len(send)
        with self._breaker.writing():  # open: a refused call is not split
            result = self._write(scope, parts, send)
            if columnar is not None:
                more_sent, columns, more, fell_back = columnar()
                send = send + fell_back  # (their attempts carry what was sent)
                sent += more_sent
                result.delivered += more.delivered
                result.rejected += more.rejected
            crash.point("after_write")  # every write of the batch done, none committed
        # tripped: the run fails before this batch is acknowledged or committed
        # (an export's `already imported` is no refused write: the destination holds the record)
        refused = sum(1 for r in result.rejected if r.rule != records.ON_EXISTS)
        self._breaker.record(name, sent, refused)
        # record errors are stored and shown: no form of a secret goes into them
        all_rejected = [self._redact_rejection(r) for r in rejected + result.rejected]
        parts.capture.acknowledge(batch, records.WriteResult(result.delivered, all_rejected))
        crash.point("after_ack")
        run_steps.count_outcome(counts, result, all_rejected, tally, report.gone_at_source)
        counts.written += len(columns) if columns else 0
        # the batch's delivery attempts (`mapsync trace`), in the same state transaction; a seed
        # records its rejections only (state/attempts.py: a seed must not write every key twice)
        tried = attempts.of_batch(
            result.delivered,
            all_rejected,
            send,
            deliveries=scope.kind != RunKind.SEED,
            redact=self.redact_text,
        )
        if columns and scope.kind != RunKind.SEED:
            tried += attempts.of_columns(columns)
        self._commit(scope, batch, seen + result.delivered, all_rejected, counts, tried, columns)
        parts.capture.committed(batch)
        run_steps.add_batch(report, counts, tally, all_rejected)
        self.observer.batch(name, report.counts)
        log.debug(
            "batch_committed", extra={"action": "batch_committed", "sync": name, **dataclasses.asdict(counts)}
        )

    def _write(self, scope: RunScope, parts: Parts, send: list[records.Mapped]) -> records.WriteResult:
        """The destination write: nothing goes out under a lost lease, and the write ends before
        it would run out."""
        if send:
            self.watch.renew(scope.lease)
        result = parts.dest.write(send, fresh=scope.fresh) if send else records.WriteResult()
        scope.report.fell_back = parts.dest.fell_back  # the destination's count this run
        return result

    def _commit(
        self,
        scope: RunScope,
        batch: records.Batch,
        delivered: list[records.Delivered],
        rejected: list[records.Rejection],
        counts: Counts,
        tried: list[Attempt],
        columns: records.DeliveredColumns | None = None,
    ) -> None:
        """The batch's state commit (ledger, record errors, attempts, cursor position, counts),
        fenced."""
        started = time.monotonic()
        new_values = self.store.commit(
            sync=scope.sync,
            token=scope.lease.token,
            run_id=scope.run_id,
            delivered=delivered,
            rejected=rejected,
            cursors=batch.position or {},
            counts=counts,
            lease_ttl=scope.lease.ttl,
            attempts=tried,
            columns=columns,
        )
        self.watch.renewed(started)  # the commit renewed the lease
        crash.point("after_commit")
        for v in new_values:  # alerting channels hook in here later
            alert = {k: v[k] for k in ("field", "rule", "value")}
            log.warning(
                "unmapped_value_new", extra={"action": "unmapped_value_new", "sync": scope.sync, **alert}
            )

    def redact_text(self, text: str) -> str:
        return redact(text, self.loaded.secrets)

    def _redact_rejection(self, r: records.Rejection) -> records.Rejection:
        message = self.redact_text(r.message)
        return r if message == r.message else dataclasses.replace(r, message=message)
