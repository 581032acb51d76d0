"""Run one sync: read → map → write → acknowledge at the source → commit state.

Progress moves only after the destination confirmed, so a crash anywhere means a re-send that
the destination absorbs (upsert by natural key), never a loss. Crash points sit between the
steps (`CRASH_POINTS`, triggered by `MAPSYNC_CRASH_AT=<point>[:<nth>]`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Iterator
from typing import Any

from mapsync import (
    capture,
    collisions,
    connectors,
    crash,
    errors,
    guard,
    logs,
    records,
    run_failures,
    run_steps,
    transforms,
)
from mapsync import keys as key_forms
from mapsync import mapping as compile_
from mapsync.connectors import sqlite_text
from mapsync.lease_watch import LeaseWatch, settled
from mapsync.redact import redact
from mapsync.run_types import Observer as Observer
from mapsync.run_types import Parts as Parts
from mapsync.run_types import RunReport as RunReport
from mapsync.run_types import _Quiet
from mapsync.sheet import models
from mapsync.sheet.loader import LoadedSheet
from mapsync.state import lease as leases
from mapsync.state.retention import purge
from mapsync.state.store import Counts, StateStore, stamp

CRASH_POINTS = crash.POINTS
# failures that stop a run with one message and the cursor kept (anything else is a bug)
_STOPS = (errors.PermanentError, errors.TransientError, errors.LeaseLost, errors.StateError)
log = logging.getLogger("mapsync.engine")


class Engine:
    """Runs the syncs of one sheet against one state store."""

    def __init__(self, loaded: LoadedSheet, store: StateStore, observer: Observer | None = None) -> None:
        self.loaded = loaded
        self.sheet = loaded.sheet
        self.store = store
        self.observer = observer or _Quiet()
        self._dbs: dict[str, Any] = {}
        logs.add_secrets(loaded.secrets)  # also when used as a library, not through the CLI
        self._reads: dict[str, collisions.ReadKeys] = {}  # per sync: keys of the read's last batch
        self.watch = LeaseWatch(store, lambda: [store, *self._dbs.values()])

    def close(self) -> None:
        self.watch.close()
        for db in self._dbs.values():
            db.close()
        self._dbs.clear()

    def database(self, name: str) -> Any:
        """The open handle of a connection (one per connection for the engine's life)."""
        if name not in self._dbs:
            conn = self.sheet.connections[name]
            if isinstance(conn, models.SqlConnection):  # timeout defaults below the lease
                timeouts = conn.timeouts.for_lease(self.sheet.state.lease_ttl)
                conn = conn.model_copy(update={"timeouts": timeouts})
            self._dbs[name] = connectors.REGISTRY[conn.kind].connect(
                name, conn, self.loaded.folder, self.store
            )
        return self._dbs[name]

    def parts(self, name: str) -> Parts:
        """Connect and check one sync against both catalogs (ConfigError on a mismatch)."""
        to = self.sheet.connections[self.sheet.syncs[name].to.connection]
        self.watch.start(self.sheet.state.lease_ttl, sql=isinstance(to, models.SqlConnection))
        try:
            return self._parts(name)
        except BaseException as exc:
            self.watch.dog.disarm()
            if (cut := self.watch.cut_error(name, exc)) is not None:
                raise cut from None
            raise

    def _parts(self, name: str) -> Parts:
        cfg = self.sheet.syncs[name]
        method = capture.REGISTRY[cfg.changes.method]
        version_column = method.version_column(cfg.changes)
        src_kind = self.sheet.connections[cfg.from_.connection].kind
        dst_kind = self.sheet.connections[cfg.to.connection].kind
        with run_failures.stage(errors.FailureClass.SOURCE):
            source = connectors.REGISTRY[src_kind].source(
                self.database(cfg.from_.connection), name, cfg, version_column
            )
        with run_failures.stage(errors.FailureClass.DESTINATION):
            dest = connectors.REGISTRY[dst_kind].destination(
                self.database(cfg.to.connection), name, cfg, self.loaded.secrets
            )
        mapping = compile_.Mapping(
            cfg, dest.columns, dest.child_columns(), connect=self.database, folder=self.loaded.folder
        )
        ctx = capture.Context(name, cfg, self.store, self.database)
        return Parts(
            source, dest, mapping, method(source, cfg.changes, cfg.delivery.batch, ctx), version_column
        )

    # ----------------------------------------------------------------- one run

    @run_failures.recorded
    @settled
    def run(
        self,
        name: str,
        kind: str = "run",
        *,
        trigger: str = "cli",
        scheduled_at: dt.datetime | None = None,
        again: bool = False,
        window: dt.timedelta | None = None,
        keep_empty: bool = True,
        deletes: bool = False,
        force_deletes: bool = False,
    ) -> RunReport:
        """One pass of one sync. `kind`: seed | run | overlap. Raises LeaseHeld, ConfigError.
        `keep_empty=False` (follow mode) leaves no run in the history when it changed nothing: no
        write, delete or rejection, and the cursors ended where they started."""
        cfg = self.sheet.syncs[name]
        parts = self.parts(name)
        # `deletes`: a key-set delete check (run --deletes); `force_deletes`: pass the guard once
        guard.prepare(parts, self.store, name, cfg, deletes=deletes, force=force_deletes)
        if window is not None and isinstance(cfg.changes, models.WatermarkChanges):
            overlap = cfg.changes.overlap.model_copy(update={"window": window})
            parts.capture.cfg = cfg.changes.model_copy(update={"overlap": overlap})  # type: ignore[attr-defined]
        with leases.held(self.store, name, self.sheet.state.lease_ttl) as lease, self.watch.watching(lease):
            cursors = self.store.cursors(name)
            kind = run_steps.effective_kind(self.sheet, name, kind, cursors, again)
            run_id = self.store.start_run(name, kind, trigger, lease.token, scheduled_at)
            report = RunReport(name, kind, run_id, "running", Counts())
            log.info(
                "run_started", extra={"action": "run_started", "sync": name, "run_id": run_id, "kind": kind}
            )
            try:
                if parts.dest.capabilities.async_jobs:  # async delivery: its mode, settle a crash's rest
                    parts.dest.begin(kind)
                batches, fresh = self._batches(name, kind, parts, cursors, run_id, again)
                self._reads[name] = collisions.ReadKeys()
                self.observer.started(name, kind, self._total(parts, cfg, kind))
                for batch in batches:
                    crash.point("after_read")
                    fresh = self._deliver(name, kind, parts, batch, report, lease, fresh)
                final: dict[str, Any] = (
                    parts.capture.finish() if kind != "seed" else {"seed": {"status": "done", "at": stamp()}}
                )
                report.note_ignored(getattr(parts.capture, "ctx", None))
                if kind == "overlap":
                    final["overlap_at"] = stamp()
                self.store.commit(
                    sync=name,
                    token=lease.token,
                    run_id=run_id,
                    delivered=[],
                    rejected=[],
                    cursors=final,
                    counts=Counts(),
                    lease_ttl=lease.ttl,
                )
            except _STOPS as exc:
                return self._failed(report, exc)
            except BaseException as exc:
                if (cut := self.watch.cut_error(name, exc)) is not None:
                    return self._failed(report, cut)
                self._crashed(report, exc)
                raise
            report.status = "partial" if report.counts.rejected else "success"
            if not keep_empty and not report.counts.changed and self.store.cursors(name) == cursors:
                self.store.discard_run(run_id)
                report.run_id = None
                return report
            self.store.finish_run(run_id, report.status)
            purge(self.store, name, self.sheet.state.retention)
            log.info(
                "run_finished",
                extra={
                    "action": "run_finished",
                    "sync": name,
                    "run_id": run_id,
                    **dataclasses.asdict(report.counts),
                },
            )
            return report

    @run_failures.recorded
    @settled
    def retry(
        self, name: str, field: str | None = None, *, trigger: str = "cli", key: tuple[str, ...] | None = None
    ) -> RunReport:
        """Re-send the records of open record errors (only those naming `field`, or of the one
        `key` as written on the command line, if given), read afresh from the source by key,
        through the usual map → write → commit; a run of kind `retry` under the sync's lease
        that leaves the capture cursors alone."""
        parts = self.parts(name)
        batch_size = self.sheet.syncs[name].delivery.batch
        with leases.held(self.store, name, self.sheet.state.lease_ttl) as lease, self.watch.watching(lease):
            keys = self.store.open_error_keys(name, field)
            if key is not None:
                keys = [k for k in keys if key_forms.matches(k, key)]
            run_id = self.store.start_run(name, "retry", trigger, lease.token)
            report = RunReport(name, "retry", run_id, "running", Counts())
            log.info(
                "run_started",
                extra={"action": "run_started", "sync": name, "run_id": run_id, "kind": "retry"},
            )
            self.observer.started(name, "retry", len(keys))
            try:
                for i in range(0, len(keys), batch_size):
                    chunk = keys[i : i + batch_size]
                    rows = parts.source.read_keys(chunk)
                    changes = capture.to_changes(parts.source, rows, parts.version_column)
                    found = {records.key_text(c.key) for c in changes}
                    gone = [k for k in chunk if records.key_text(k) not in found]
                    if gone:
                        self.store.note_gone(name, gone)
                        report.gone.extend(gone)
                    if changes:
                        self._deliver(name, "retry", parts, records.Batch(changes), report, lease, False)
            except _STOPS as exc:
                return self._failed(report, exc)
            except BaseException as exc:
                if (cut := self.watch.cut_error(name, exc)) is not None:
                    return self._failed(report, cut)
                self._crashed(report, exc)
                raise
            report.status = "partial" if report.counts.rejected or report.gone else "success"
            message = f"{len(report.gone)} source row(s) gone" if report.gone else None
            self.store.finish_run(run_id, report.status, None, message)
            log.info("run_finished", extra={"action": "run_finished", "sync": name, "run_id": run_id})
            return report

    def _batches(
        self, name: str, kind: str, parts: Parts, cursors: dict[str, Any], run_id: int, again: bool
    ) -> tuple[Iterator[records.Batch], bool]:
        cfg = self.sheet.syncs[name]
        if kind != "seed":
            return parts.capture.read(kind, cursors), False
        seed = cursors.get("seed") or {}
        resuming = seed.get("status") == "running"
        if not resuming:
            # a re-seed keeps the watermark it had: changes since the last run (outside
            # `seed.where`, say) are still read by the next run
            start = {} if again and cursors.get("watermark") is not None else parts.capture.start_seed()
            first = {
                **start,
                "seed": {"status": "running", "after": None},
                "position": None,
            }
            self.store.set_cursors(name, first, run_id)
            cursors = self.store.cursors(name)
        fresh = not resuming and not again and parts.dest.is_empty()
        seeder = parts.capture.seed_batches  # snapshot: hashes
        return seeder(parts.source, cursors, cfg.delivery.batch, cfg.seed.where, parts.version_column), fresh

    def _total(self, parts: Parts, cfg: Any, kind: str) -> int | None:
        return None if kind != "seed" else parts.source.count(cfg.seed.where)

    def _deliver(
        self,
        name: str,
        kind: str,
        parts: Parts,
        batch: records.Batch,
        report: RunReport,
        lease: leases.Lease,
        fresh: bool,
    ) -> bool:
        counts = Counts(read=len(batch.changes))
        changes, rejected = collisions.duplicates(batch, self._reads.get(name))
        changes, undecodable = sqlite_text.reject(changes)
        rejected += undecodable
        ctx = parts.mapping.prepare(changes)
        tally = transforms.Tally()
        mapped: list[records.Mapped] = []
        gone = report.gone_at_source  # keys deleted at the source: what their policy made of them
        for change in changes:
            out = parts.mapping.apply(change, ctx, tally)
            if change.op == "delete":
                gone["found"] = gone.get("found", 0) + 1
                gone["ignored"] = gone.get("ignored", 0) + (out is None)
            if out is None:
                counts.skipped += change.op != "delete"  # an ignored delete is no unchanged row
            elif isinstance(out, records.Rejection):
                rejected.append(out)
            else:
                mapped.append(out)
        # a fresh seed writes into an empty destination: every row must go, whatever the ledger
        # says (it holds at most this run's earlier, disjoint keys), so it is not read. A resumed
        # seed or `--again` is never fresh and looks up as usual.
        ledger = {} if fresh else self.store.ledger(name, [m.key for m in mapped])
        zone = parts.capture.zone
        send, seen = run_steps.against_ledger(kind, mapped, ledger, parts.capture.low(), zone, counts)
        send, collided = collisions.collisions(parts.dest, send, ledger, self.store, name)
        rejected += collided
        guard.before_send(parts.capture, batch.changes, send)  # the mass-delete guard
        if send:  # nothing goes out under a lost lease, and the write ends before it would run out
            self.watch.renew(lease)
        result = parts.dest.write(send, fresh=fresh) if send else records.WriteResult()
        report.fell_back = parts.dest.fell_back  # the destination's count this run
        crash.point("after_write")
        # record errors are stored and shown: no form of a secret goes into them
        all_rejected = [self._redact_rejection(r) for r in rejected + result.rejected]
        parts.capture.acknowledge(batch, records.WriteResult(result.delivered, all_rejected))
        crash.point("after_ack")
        counts.written = sum(1 for d in result.delivered if d.op != "delete")
        if gone:  # a disabling delete is written as an update of the row (in `written` above)
            gone["disabled"] = gone.get("disabled", 0) + sum(1 for d in result.delivered if d.op == "update")
        counts.deleted = sum(1 for d in result.delivered if d.op == "delete")
        counts.rejected = len(all_rejected)
        counts.truncated = sum(tally.truncated.values())
        counts.defaulted = sum(tally.defaulted.values())  # (kept values are reported as `kept`)
        started = time.monotonic()
        new_values = self.store.commit(
            sync=name,
            token=lease.token,
            run_id=report.run_id or 0,
            delivered=seen + result.delivered,
            rejected=all_rejected,
            cursors=batch.position or {},
            counts=counts,
            lease_ttl=lease.ttl,
        )
        self.watch.renewed(started)  # the commit renewed the lease
        crash.point("after_commit")
        for v in new_values:  # alerting channels hook in here later
            alert = {k: v[k] for k in ("field", "rule", "value")}
            log.warning("unmapped_value_new", extra={"action": "unmapped_value_new", "sync": name, **alert})
        report.counts.add(counts)
        run_steps.add_tallies(report, tally)
        report.samples.extend(all_rejected[: max(0, 20 - len(report.samples))])
        self.observer.batch(name, report.counts)
        log.debug(
            "batch_committed", extra={"action": "batch_committed", "sync": name, **dataclasses.asdict(counts)}
        )
        return fresh

    def _failed(self, report: RunReport, exc: Exception) -> RunReport:
        """A run stopped on purpose (systemic failure, lost lease): one message, cursor kept."""
        report.status, report.message = "failed", self._redact(str(exc))
        report.failure_class = getattr(exc, "failure_class", "tool")
        self.store.finish_run(report.run_id or 0, "failed", report.failure_class, report.message)
        log.error(
            "run_failed",
            extra={
                "action": "run_failed",
                "sync": report.sync,
                "run_id": report.run_id,
                "error": report.message,
            },
        )
        return report

    def _crashed(self, report: RunReport, exc: BaseException) -> None:
        """An unexpected error (a bug, or Ctrl-C): record it; the caller re-raises."""
        message = self._redact(f"{type(exc).__name__}: {exc}")
        self.store.finish_run(report.run_id or 0, "failed", "tool", message)

    def _redact(self, text: str) -> str:
        return redact(text, self.loaded.secrets)

    def _redact_rejection(self, r: records.Rejection) -> records.Rejection:
        message = self._redact(r.message)
        return r if message == r.message else dataclasses.replace(r, message=message)
