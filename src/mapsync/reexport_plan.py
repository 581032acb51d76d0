"""`mapsync reexport`: a run of kind `reexport` that sets transactions pending again at the source
(`changes: {method: export_flag}`) and sends them at once, past the key ledger's "unchanged".

Under the sync's lease: each named key (or every failed transaction) gets an open record error
"re-export requested" (unless it has one), its flag is reset, then those rows are read by key
and go through the usual map → write (on_exists) → write-back → commit, which resolves the
error. Keys the source does not hold are reported gone. The destination looks each one up by
its natural key first (`connectors/sql_exists.py`): a transaction it holds is updated, or by
`on_exists` left alone, and never inserted twice; one deleted there by hand is written again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from mapsync import errors, records
from mapsync.capture.export_base import ExportBase
from mapsync.records import RunKind
from mapsync.run_scope import RunScope
from mapsync.run_types import Parts
from mapsync.state.ports import Store
from mapsync.state.store import Counts

REQUESTED = (
    "re-export requested and not sent yet (the run that was to send it ended first): "
    "`mapsync reexport SHEET --sync NAME --failed` sends it"
)


class ReexportPlan:
    """reexport: `wanted` keys as written on the command line (None: every failed transaction)."""

    purge = False

    def __init__(
        self, store: Store, name: str, parts: Parts, batch: int, wanted: list[tuple[str, ...]] | None
    ):
        if not isinstance(parts.capture, ExportBase):
            raise errors.UsageError(
                f"sync {name} is no export: `mapsync reexport` needs `changes: {{method: export_flag}}`"
            )
        self.store, self.name, self.parts, self.batch = store, name, parts, batch
        self.capture: ExportBase = parts.capture
        self.wanted = wanted
        self.keys: list[records.Key] = []

    def decide(self, cursors: dict[str, Any]) -> RunKind:
        seed = cursors.get("seed") or {}
        if seed.get("status") != "done":
            raise errors.StateError(
                f"sync {self.name} has not been seeded: run `mapsync seed` first", reason="unseeded"
            )
        return RunKind.REEXPORT

    def start(self, scope: RunScope) -> tuple[Iterable[records.Batch], int | None]:
        typed = None if self.wanted is None else [self.capture.typed_key(k) for k in self.wanted]
        self.keys = self.capture.find(typed)
        # first an open record error for each (unless it has one): should this run end before it
        # sent them (a crash, the ERP away), they are listed (`mapsync errors`) and sent by
        # `mapsync reexport --failed` (a reset row older than the seed's starting point is
        # picked up by no run); each is resolved when the row is delivered
        have = self.store.open_error_versions(self.name)
        asked = [
            records.Rejection(k, REQUESTED, None, "reexport")
            for k in self.keys
            if records.key_text(k) not in have
        ]
        if asked:
            self.store.commit(
                sync=self.name,
                token=scope.lease.token,
                run_id=scope.run_id,
                delivered=[],
                rejected=asked,
                cursors={},
                counts=Counts(),
                lease_ttl=scope.lease.ttl,
            )
        self.capture.reset(self.keys)
        if typed is not None:
            fold = str.lower if self.capture.fold_case else str
            found = {fold(records.key_text(k)) for k in self.keys}
            gone = [k for k in typed if fold(records.key_text(k)) not in found]
            if gone:
                self.store.note_gone(self.name, gone)
                scope.report.gone.extend(gone)
        scope.forced = frozenset(records.key_text(k) for k in self.keys)
        return self._batches(), len(self.keys)

    def _batches(self) -> Iterator[records.Batch]:
        # every row named, held ones too (`by_key`, a retry's read, leaves held orders out)
        return self.capture.reexport_batches(self.keys, self.batch)

    def end(self, scope: RunScope) -> None:
        return None
