"""The scope of one run, and the kinds of run that fill it.

`RunScope` is everything that lives from the lease to the end of one run: the sync, the kind,
the lease, the run's id and report, the keys of the read's previous batch, the mass-delete guard,
whether a fresh seed skips the ledger, and the **forced keys** that are written even where the
key ledger holds them unchanged (retry today; re-export and repair later). The parts of a sync
(source, destination, mapping, capture) carry none of it: the engine builds them once and reuses
them across runs, and at the start of each run `capture.begin()` and `dest.begin(kind)` drop
what the previous run left there (read bounds, a claim token, the fallback count).

The engine sets a scope up and closes it in one place (`Engine._scoped`: lease, run row,
`run_started`/`run_finished`, a stop or a crash, the run's end and the retention purge). What
differs between kinds is a `Plan`: which kind the request becomes under the lease, the batches,
and what is committed after the last one. `CapturePlan` is seed | run | overlap (batches from
the capture), `RetryPlan` is retry (batches read by key from the open record errors' keys,
every one of them forced).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

from mapsync import capture, collisions, records, run_steps
from mapsync import keys as key_forms
from mapsync.guard import Guard
from mapsync.records import RunKind
from mapsync.run_types import Parts, RunReport
from mapsync.sheet import identity as identities
from mapsync.sheet import models
from mapsync.state import lease as leases
from mapsync.state.ports import Store
from mapsync.state.store import Counts, stamp


@dataclasses.dataclass
class Request:
    """What a run was asked for; the kind may still change under the lease (a due overlap)."""

    kind: RunKind
    trigger: str = "cli"
    scheduled_at: dt.datetime | None = None
    # False (follow mode): a run that changed nothing leaves no row in the history
    keep_empty: bool = True
    guard: Guard | None = None  # the run's mass-delete guard (None: the run sends no delete)
    # what the capture gets for this run (guard, --deletes, --window; it counts ignored deletes)
    capture_input: capture.RunInput = dataclasses.field(default_factory=capture.RunInput)
    slot: str | None = None  # the daemon's schedule that made the run (run | retry), if any
    coalesced: int = 0  # missed slots (after downtime) this run stands for, beyond its own


@dataclasses.dataclass
class RunScope:
    """One run's own state, from the lease to the run's end."""

    sync: str
    kind: RunKind
    lease: leases.Lease
    report: RunReport
    guard: Guard | None = None
    capture_input: capture.RunInput = dataclasses.field(default_factory=capture.RunInput)
    fresh: bool = False  # a fresh seed into an empty destination: the ledger is not read
    forced: frozenset[str] = frozenset()  # key texts written even when the ledger holds them unchanged
    reads: collisions.ReadKeys = dataclasses.field(default_factory=collisions.ReadKeys)

    @property
    def run_id(self) -> int:
        return self.report.run_id or 0


class Plan(Protocol):
    """One kind of run, inside a scope."""

    purge: bool  # purge history older than `state.retention` after the run

    def decide(self, cursors: dict[str, Any]) -> RunKind:
        """The kind the request becomes, under the lease and before the run row (may refuse)."""

    def start(self, scope: RunScope) -> tuple[Iterable[records.Batch], int | None]:
        """The run's batches, and how many records they hold where that is known up front."""

    def end(self, scope: RunScope) -> None:
        """After the last batch was committed (the final cursors)."""


class CapturePlan:
    """seed | run | overlap: the batches come from the capture (or the seed read)."""

    purge = True

    def __init__(
        self, store: Store, sheet: models.Sheet, name: str, parts: Parts, kind: RunKind, again: bool
    ) -> None:
        self.store, self.sheet, self.name, self.parts = store, sheet, name, parts
        self.cfg = sheet.syncs[name]
        self.kind, self.again = kind, again
        self.cursors: dict[str, Any] = {}

    def decide(self, cursors: dict[str, Any]) -> RunKind:
        self.cursors = cursors
        return RunKind(run_steps.effective_kind(self.sheet, self.name, self.kind, cursors, self.again))

    def start(self, scope: RunScope) -> tuple[Iterable[records.Batch], int | None]:
        parts, kind = self.parts, scope.kind
        if kind != RunKind.SEED:
            return parts.capture.read(kind, self.cursors), None
        return self._seed(scope), parts.source.count(self.cfg.seed.where)

    def _seed(self, scope: RunScope) -> Iterator[records.Batch]:
        cursors, parts = self.cursors, self.parts
        seed = cursors.get("seed") or {}
        resuming = seed.get("status") == "running"
        if not resuming:
            # a re-seed keeps the watermark it had: changes since the last run (outside
            # `seed.where`, say) are still read by the next run
            again = self.again and cursors.get("watermark") is not None
            start = {} if again else parts.capture.start_seed()
            first = {**start, "seed": {"status": "running", "after": None}, "position": None}
            # the state is now a record of this sync as the sheet has it (the daemon refuses to
            # run it under a sheet that makes it another sync: sheet/identity.py)
            first[identities.CURSOR] = identities.identity(self.sheet, self.name)
            self.store.set_cursors(self.name, first, scope.run_id)
            cursors = self.store.cursors(self.name)
        scope.fresh = not resuming and not self.again and parts.dest.is_empty()
        seeder = parts.capture.seed_batches  # snapshot: hashes
        return seeder(
            parts.source, cursors, self.cfg.delivery.batch, self.cfg.seed.where, parts.version_column
        )

    def end(self, scope: RunScope) -> None:
        seeded: dict[str, Any] = {"seed": {"status": "done", "at": stamp()}}
        final = self.parts.capture.finish() if scope.kind != RunKind.SEED else seeded
        scope.report.note_ignored(scope.capture_input.ignored_deletes)
        if scope.kind == RunKind.OVERLAP:
            final["overlap_at"] = stamp()
        self.store.commit(
            sync=self.name,
            token=scope.lease.token,
            run_id=scope.run_id,
            delivered=[],
            rejected=[],
            cursors=final,
            counts=Counts(),
            lease_ttl=scope.lease.ttl,
        )


class RetryPlan:
    """retry: the rows of open record errors (only those naming `field`, or of the `wanted` keys
    as written on the command line), read
    afresh by key and written even where the ledger holds them unchanged; the capture's cursors
    are left alone, and source rows that are gone are noted as such.

    An `automatic` retry (the daemon's retry schedule) leaves out the dead errors and, after its
    batches, buries the open errors tried `max_attempts` times (`RunReport.buried`); a manual one
    (`mapsync retry`) sends dead ones too: that is how an operator clears them."""

    purge = False

    def __init__(
        self,
        store: Store,
        name: str,
        parts: Parts,
        batch: int,
        field: str | None,
        wanted: Sequence[tuple[str, ...]] | None,
        *,
        automatic: bool = False,
        max_attempts: int | None = None,
    ) -> None:
        self.store, self.name, self.parts, self.batch = store, name, parts, batch
        self.field, self.wanted = field, wanted
        self.automatic, self.max_attempts = automatic, max_attempts
        self.keys: list[records.Key] = []

    def decide(self, cursors: dict[str, Any]) -> RunKind:
        keys = self.store.open_error_keys(self.name, self.field, live_only=self.automatic)
        if self.wanted is not None:
            keys = [k for k in keys if any(key_forms.matches(k, w) for w in self.wanted)]
        self.keys = keys
        return RunKind.RETRY

    def start(self, scope: RunScope) -> tuple[Iterable[records.Batch], int | None]:
        scope.forced = frozenset(records.key_text(k) for k in self.keys)
        return self._batches(scope), len(self.keys)

    def _batches(self, scope: RunScope) -> Iterator[records.Batch]:
        parts = self.parts
        for i in range(0, len(self.keys), self.batch):
            chunk = self.keys[i : i + self.batch]
            rows = parts.source.read_keys(chunk)
            changes = parts.capture.by_key(parts.source, rows, parts.version_column)
            # a row the capture leaves out (an export's held order) is there, not gone
            found = {records.key_text(c.key) for c in changes}
            found |= {records.key_text(parts.source.key_of(r)) for r in rows}
            gone = [k for k in chunk if records.key_text(k) not in found]
            if gone:
                self.store.note_gone(self.name, gone)
                scope.report.gone.extend(gone)
            if changes:
                yield records.Batch(changes)

    def end(self, scope: RunScope) -> None:
        if self.automatic and self.max_attempts is not None:
            scope.report.buried = self.store.bury(self.name, self.max_attempts)
