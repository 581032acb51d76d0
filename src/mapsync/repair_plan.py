"""`mapsync reconcile --repair`: a run of kind `repair` that mends what a reconcile check found
(issue 18, docs/reconcile.md).

Under the sync's lease:

1. Each key (a ledger key text: a drift check's changed or missing row, a business check's
   group member) is read afresh at the source by key (`Capture.by_key`, as a retry reads). A row
   found is sent **forced**: past the key ledger's "unchanged", since the destination is what
   differs, not the source.
2. A key the source no longer holds becomes a delete `Change`, exactly as a capture emits one
   (the source key and its key columns as the old image): the sync's delete policy makes it a
   delete, a disabling update or nothing (`deletes.py`), as for any run.
3. An **extra** (a destination row the ledger does not hold live) is mapsync's to delete only
   when the ledger knows its key (mapsync delivered it once: `ledger_key`) or the sync says
   `owns_table: true` (its destination key is turned back into a source key through the key
   rule, `key.to` → `key.from`, a rename). It is read at the source like a key (a source that
   holds it again gets it sent). Any other extra is someone else's: left, counted and reported
   as "not ours".
4. The mass-delete guard (`guard.py`) judges all the repair's deletes before anything is
   written: the deletes of keys the ledger holds live, more than `deletes.max_delete_ratio` of
   the ledger's live keys, and the repair fails with the guard's message, nothing sent; the
   deletes of other rows (extras) are judged apart under the same ratio, with a message of their
   own (`force_deletes` lets one repair through). The reads
   are held in memory until then: a repair's keys are a check's differences, not a table.
5. The keys to read are capped (`max_keys`, default `MAX_KEYS`): above it the repair is refused
   before anything is read or written. A mass drift (a column's type or scale changed, so every
   digest differs) is a definition to fix, not thousands of rows to force-send.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

from mapsync import casts, errors, records
from mapsync.capture import keysource
from mapsync.connectors.sql_source import SqlSource
from mapsync.guard import Guard, GuardTripped
from mapsync.keys import from_text
from mapsync.ports import Source
from mapsync.records import RunKind
from mapsync.run_scope import RunScope
from mapsync.run_types import Parts
from mapsync.sheet import models
from mapsync.state.ports import Store

SHOWN = 10  # keys named in a note
_KINDS: dict[type, str] = {int: "int", decimal.Decimal: "decimal", str: "str"}  # for casts.convert
MAX_KEYS = 10_000  # keys one repair reads and sends at most (`Engine.repair(max_keys=...)`)


class RepairTooLarge(errors.PermanentError):
    """A repair's keys exceed its cap: refused, nothing read or written."""

    def __init__(self, message: str) -> None:
        super().__init__(message, failure_class="guard")


class ExtraRow(Protocol):
    """A destination row the ledger does not hold live (`reconcile.results.Extra`)."""

    @property
    def dest_key(self) -> tuple[Any, ...]: ...

    @property
    def ledger_key(self) -> str | None: ...


class RepairPlan:
    """repair: `keys` (ledger key texts) and `extras` of one sync."""

    purge = False

    def __init__(
        self,
        store: Store,
        name: str,
        cfg: models.SyncConfig,
        parts: Parts,
        keys: Sequence[str],
        extras: Sequence[ExtraRow],
        guard: Guard,
        max_keys: int | None = MAX_KEYS,
    ) -> None:
        self.store, self.name, self.cfg, self.parts = store, name, cfg, parts
        self.keys, self.extras, self.guard = list(keys), list(extras), guard
        self.max_keys = max_keys  # None: no cap
        self.sent: list[records.Key] = []  # found at the source: sent forced
        self.gone: list[records.Key] = []  # not at the source: deletes through the policy
        self.left: list[tuple[Any, ...]] = []  # extras not ours: destination keys left alone

    def decide(self, cursors: dict[str, Any]) -> RunKind:
        return RunKind.REPAIR

    def start(self, scope: RunScope) -> tuple[Iterable[records.Batch], int | None]:
        wanted = self._wanted()
        if self.max_keys is not None and len(wanted) > self.max_keys:
            raise RepairTooLarge(
                f"sync {self.name}: repair refused: {len(wanted)} key(s) to re-send, more than "
                f"max_keys {self.max_keys}; nothing was read or written. So many differences "
                "usually mean the destination's definition changed (a column's type or scale makes "
                "every row's digest differ): check the table first, then repair with a higher "
                "--max-keys if the rows really differ"
            )
        changes = self._read(wanted)
        self._guard()  # all the deletes, before anything is written
        scope.forced = frozenset(records.key_text(k) for k in self.sent)
        report = scope.report
        report.notes.append(
            f"repair: {len(wanted)} key(s) read at the source: {len(self.sent)} sent, "
            f"{len(self.gone)} gone there (through the delete policy `{self.cfg.deletes.policy}`)"
        )
        if self.left:
            shown = ", ".join(_show(k) for k in self.left[:SHOWN])
            more = f" (+{len(self.left) - SHOWN} more)" if len(self.left) > SHOWN else ""
            report.notes.append(
                f"repair: {len(self.left)} extra destination row(s) not ours: left ({shown}{more}); "
                "mapsync never delivered them (`owns_table: true` lets a repair delete them)"
            )
        return self._batches(changes), len(changes)

    def _guard(self) -> None:
        """The mass-delete guard on this repair's deletes (the keys gone at the source): those
        the ledger holds live count against `max_delete_ratio` of the live keys, as any run's;
        the others (extras mapsync delivered once and deleted since, or never saw under
        `owns_table`) are rows the ratio does not describe: judged apart, under the same ratio."""
        guard = self.guard
        if not guard.active or not self.gone:
            return
        live = guard.live_among(self.gone)
        guard.check_batch(live)
        other = len(self.gone) - live
        limit = guard.ratio * guard.live_keys()
        if other > limit:
            raise GuardTripped(
                f"sync {self.name}: mass-delete guard: the repair would delete {other} destination "
                f"row(s) the key ledger does not hold live (extras delivered once and deleted since, "
                f"or never delivered under owns_table), more than max_delete_ratio {guard.ratio:g} of "
                f"its {guard.live_keys()} live row(s); nothing was deleted. Check the destination, then "
                "repair with --force-deletes if these deletes are meant"
            )

    def _wanted(self) -> list[records.Key]:
        """The source keys to read: the keys, then the extras that are ours (each once)."""
        out: dict[str, records.Key] = {}
        for text in self.keys:
            out.setdefault(text, self._from_text(text))
        for extra in self.extras:
            if extra.ledger_key is not None:
                out.setdefault(extra.ledger_key, self._from_text(extra.ledger_key))
            elif self.cfg.owns_table:
                key = self._from_dest(extra.dest_key)
                out.setdefault(records.key_text(key), key)
            else:
                self.left.append(tuple(extra.dest_key))
        return list(out.values())

    def _read(self, wanted: list[records.Key]) -> list[records.Change]:
        """The rows found as the capture makes them, and a delete for each key gone."""
        parts, size = self.parts, max(1, self.cfg.delivery.batch)
        columns = list(parts.source.key)
        out: list[records.Change] = []
        for i in range(0, len(wanted), size):
            chunk = wanted[i : i + size]
            rows = parts.source.read_keys(chunk)
            changes = parts.capture.by_key(parts.source, rows, parts.version_column)
            out.extend(changes)
            self.sent.extend(c.key for c in changes)
            # a row the capture leaves out (an export's held order) is there, not gone
            found = {records.key_text(c.key) for c in changes}
            found |= {records.key_text(parts.source.key_of(r)) for r in rows}
            for key in chunk:
                if records.key_text(key) not in found:
                    self.gone.append(key)
                    # as a capture emits a delete: the key columns are its old image
                    out.append(records.Change("delete", key, None, dict(zip(columns, key, strict=True))))
        return out

    def _batches(self, changes: list[records.Change]) -> Iterator[records.Batch]:
        size = max(1, self.cfg.delivery.batch)
        for i in range(0, len(changes), size):
            yield records.Batch(changes[i : i + size])

    def end(self, scope: RunScope) -> None:
        return None

    def _from_text(self, text: str) -> records.Key:
        """A ledger key text in the source's types."""
        source = self.parts.source
        if isinstance(source, SqlSource):
            return keysource.typed_key(source, text)
        return from_text(text)

    def _from_dest(self, dest_key: Sequence[Any]) -> records.Key:
        return source_key(self.parts.source, self.cfg, dest_key)


def source_key(source: Source, cfg: models.SyncConfig, dest_key: Sequence[Any]) -> records.Key:
    """A destination key as the source key it came from: the key rule is a rename (`key.to` →
    `key.from`, position by position); each value in the source column's type."""
    info = source.info if isinstance(source, SqlSource) else {}
    out: list[Any] = []
    for column, value in zip(cfg.key.from_, dest_key, strict=True):
        kind = info[column].python_type if column in info else None
        out.append(as_type(kind, value))
    return tuple(out)


def as_type(kind: type | None, value: Any) -> Any:
    """A value in a column's Python type (a destination's int key stored as text at the source,
    a group's text for an int column, and the other way round), converted as the mapping's
    `cast` converts (`casts.convert`); left as is when there is no such type or it does not
    convert."""
    name = _KINDS.get(kind) if kind is not None else None
    if value is None or kind is None or name is None or isinstance(value, kind):
        return value
    try:
        return casts.convert(value, name)
    except (ValueError, ArithmeticError):
        return value


def _show(key: tuple[Any, ...]) -> str:
    return ",".join(str(v) for v in key)
