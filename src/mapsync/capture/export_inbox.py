"""Transaction export from an API whose GET marks what it returns (`changes: {method:
export_flag}` on CIMcloud's `OnlineOrders`, or a REST resource marked `destructive: true`).

Nothing the GET returned may be lost, so the answer goes into the state store's inbox before
anything reads it, and everything after works from there:

1. A run first finishes what an earlier one left in the inbox (a page not split yet, orders
   not delivered), then asks for the first page again and again until a short page (each GET
   marks what it returns, so the first page is always the next one), at most `MAX_PAGES` times.
2. Each GET is sent once (`HttpClient.request(once=True)`): a lost answer, a timeout or a 5xx is
   not repeated, since the orders it marked would not come back. A `lost:` item is written
   before each GET and closed with its stored page: one left `new` (a failed GET, a process
   killed before the answer was stored) means a sweep is due (`mapsync sweep`, the daemon's
   `sweep.every`): it finds orders marked exported that are in neither the ledger nor the inbox
   and sets them pending again.
3. The raw page is stored (`page:<uuid>`), then split, in one state transaction, into one item
   per order (`order:<key>:<page item id>`: a re-exported order is a new item, never a
   replay), its lines with it. A page that is no list of records stays in the inbox as `error`.
4. Orders go to the destination like any batch, forced past the key ledger; several items of
   one key in a batch collapse into the newest.
5. The capture's acknowledge (after the destination committed, before the state commit) writes
   the status back to the API (`write_back`: delivered ones first, then refused ones; at most
   10 per call, in the call budget). Once the state committed the batch (its record errors
   with it: `committed`) the items are marked processed or error. A crash before that leaves
   the items `new`: the next run sends them again, the destination's upsert by key (or
   `on_exists`) absorbs it (a refused one is refused again and its record error kept then), and
   the status is written then.
6. A retry or a re-export reads the order as last received from the inbox, never by a GET.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from mapsync import crash, errors, records
from mapsync.capture import export_writeback as wb
from mapsync.capture.base import Context
from mapsync.capture.export_base import CURSOR as CURSOR
from mapsync.capture.export_base import LOST as LOST
from mapsync.capture.export_base import ExportBase
from mapsync.capture.export_sweep import OrderSweep
from mapsync.cimcloud.order_status import CimcloudStatusWriter
from mapsync.cimcloud.orders import CimcloudOrdersSource
from mapsync.ports import Capabilities, Cursors, Source
from mapsync.rest.destructive_source import ORDER, PAGE, BadPage, DestructiveSource
from mapsync.rest.status_writer import StatusWriter
from mapsync.sheet.export_models import ExportFlagChanges
from mapsync.sheet.export_rest_models import ExportWriteBack

log = logging.getLogger("mapsync.capture.export")

MAX_PAGES = 200  # destructive GETs per run (10,000 CIMcloud orders); the next run goes on


@dataclasses.dataclass(frozen=True)
class _Plan:
    """A batch's acknowledgement: key text → its inbox items, newest last; what its
    acknowledge decided for them (processed, refused with the message), applied once the
    state committed the batch."""

    items: dict[str, list[int]]
    processed: list[int] = dataclasses.field(default_factory=list)
    failed: dict[int, str] = dataclasses.field(default_factory=dict)


class InboxExportCapture(ExportBase):
    capabilities = Capabilities(destructive_read=True)
    fold_case = True  # CIMcloud's user keys match whatever the case: `find` gives its spelling

    def __init__(self, source: DestructiveSource, cfg: ExportFlagChanges, batch: int, ctx: Context) -> None:
        if not isinstance(source, DestructiveSource):
            raise errors.ConfigError(
                f"sync {ctx.sync}: an export from an API reads its order export (a destructive resource)"
            )
        if len(source.key) != 1:
            raise errors.ConfigError(
                f"sync {ctx.sync}: key: an export from an API names its orders by one field"
            )
        self.source, self.cfg, self.batch, self.ctx = source, cfg, batch, ctx
        self.target = cfg.write_back or ExportWriteBack()
        self.key_field = self.target.key or source.key[0]
        cimcloud = isinstance(source, CimcloudOrdersSource)
        kind = CimcloudStatusWriter if cimcloud else StatusWriter
        self.writer = kind(source.db, ctx.sync, self.target, self.key_field, min(source.write_batch, 10))

    @staticmethod
    def version_column(cfg: ExportFlagChanges) -> None:
        return None

    @staticmethod
    def emits_deletes(cfg: ExportFlagChanges) -> bool:
        return False

    # ----------------------------------------------------------------- seed: nothing destructive

    def start_seed(self) -> Cursors:
        """The moment the export starts (the sweep never looks before it: orders exported
        before mapsync are someone else's). A seed `--again` keeps the first."""
        kept = self.ctx.store.cursors(self.ctx.sync).get(CURSOR)
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(timespec="seconds")
        return {CURSOR: kept if kept is not None else {"since": now}}

    def seed_batches(
        self, source: Source, cursors: Cursors, batch: int, where: str | None, version_column: str | None
    ) -> Iterator[records.Batch]:
        return iter(())  # a GET would mark orders exported: the first run exports them

    def finish(self) -> Cursors:
        return {}

    # ----------------------------------------------------------------- a run

    def read(self, mode: str, cursors: Cursors) -> Iterator[records.Batch]:
        yield from self.drain()
        previous: set[str] = set()
        for _ in range(MAX_PAGES):
            keys = self.take()
            count = len(keys)
            yield from self.drain()
            if count < self.source.page_size:
                return
            if set(keys) == previous:  # a GET that does not mark what it returns would loop: stop
                raise errors.TransientError(
                    f"sync {self.ctx.sync}: GET {self.source.resource} returned the same {count} records "
                    "twice: it does not mark what it returns (is it the order export?)",
                    failure_class="source",
                )
            previous = set(keys)

    def take(self) -> list[str]:
        """One destructive GET, stored, then split: the key texts of the records its page held.

        A `lost:` item is written before the GET and closed in the transaction that stores its
        page: one left `new` (the GET failed, or the process died before its answer was stored)
        says that orders may be marked exported at the API and nowhere here: a sweep is due."""
        inbox, sync = self.ctx.store.inbox, self.ctx.sync
        at = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(timespec="seconds")
        note = records.canonical_json({"get": self.source.resource, "at": at})
        marker = inbox.append(sync, f"{LOST}{uuid.uuid4().hex}", note, "get")
        assert marker is not None  # a fresh uuid is never a replay
        try:
            raw = self.source.take()
        except (errors.TransientError, errors.PermanentError) as exc:
            if exc.reason in (errors.REASON_AUTH, errors.REASON_BUDGET):
                inbox.finish([marker], {})
                raise  # refused before it ran (credentials, rate limit): nothing was marked
            raise type(exc)(
                f"{exc}. Orders it marked exported are found by `mapsync sweep SHEET --sync {sync}` "
                "(the daemon's `sweep`)",
                failure_class="source",
                reason=exc.reason,
            ) from None
        crash.point("after_get")
        name = f"{PAGE}{uuid.uuid4().hex}"
        inbox.split(sync, marker, [(name, raw)], f"GET {self.source.resource}")  # stored, marker closed
        page = inbox.latest(sync, [name])[name][0].id
        crash.point("after_page_stored")
        return self.split(page, raw)

    def split(self, page: int, raw: str) -> list[str]:
        """A stored page as one inbox item per order (all or none); their key texts."""
        count = self.split_or_bad(page, raw)
        if isinstance(count, BadPage):
            raise errors.TransientError(
                f"sync {self.ctx.sync}: GET {self.source.resource}: {count}; the orders it held are marked "
                f"exported at the API: `mapsync sweep SHEET --sync {self.ctx.sync}` sets them pending again",
                failure_class="source",
            )
        return count

    def split_or_bad(self, page: int, raw: str) -> list[str] | BadPage:
        """`split`, or why a page is no list of orders: it is kept as `error`, and a `lost:` item
        asks for a sweep (its orders are marked exported at the API)."""
        inbox, sync = self.ctx.store.inbox, self.ctx.sync
        try:
            pairs = self.source.split(raw)
        except BadPage as exc:
            note = records.canonical_json({"page": page, "error": str(exc)[:500]})
            inbox.append(sync, f"{LOST}{uuid.uuid4().hex}", note, "bad page")
            inbox.finish([], {page: f"page not readable: {exc}"})
            log.error("export_page_unreadable", extra={"action": "export_page_unreadable", "sync": sync})
            return exc
        texts = [records.key_text(key) for key, _ in pairs]
        items = [(f"{ORDER}{text}:{page}", payload) for text, (_, payload) in zip(texts, pairs, strict=True)]
        inbox.split(self.ctx.sync, page, items, f"GET {self.source.resource}")
        return texts

    def drain(self) -> Iterator[records.Batch]:
        """Batches of the orders waiting in the inbox (pages left unsplit are split first)."""
        after = 0
        while True:
            items = self.ctx.store.inbox.new_items(self.ctx.sync, after, self.batch)
            if not items:
                return
            after = items[-1].id
            for item in items:
                if item.event_id.startswith(PAGE):
                    self.split(item.id, item.payload)
            orders = [i for i in items if i.event_id.startswith(ORDER)]
            if orders:
                batch = self._batch(orders)
                if batch is not None:
                    yield batch

    def _batch(self, items: Sequence[Any]) -> records.Batch | None:
        newest: dict[str, tuple[records.Change, list[int]]] = {}
        bad: dict[int, str] = {}
        for item in items:
            try:
                row, kids = self.source.row_and_children(item.payload)
            except (ValueError, KeyError, TypeError, errors.PermanentError) as exc:
                bad[item.id] = f"inbox item {item.event_id[:80]}: not an order: {exc}"
                continue
            change = self._change(row, kids)
            text = records.key_text(change.key)
            ids = newest[text][1] if text in newest else []
            newest[text] = (change, [*ids, item.id])
        if bad:
            self.ctx.store.inbox.finish([], bad)
        if not newest:
            return None
        plan = _Plan({k: ids for k, (_, ids) in newest.items()})
        return records.Batch([c for c, _ in newest.values()], ack=plan, force=True)

    def _change(self, row: records.Row, kids: dict[str, list[records.Row]]) -> records.Change:
        key = self.source.key_of(row)
        return records.Change("upsert", key, records.content_hash(row, kids), row, kids)

    def by_key(
        self, source: Source, rows: list[records.Row], version_column: str | None
    ) -> list[records.Change]:
        """Orders as last received (a retry): from the inbox, with their lines."""
        children = self.source.attach_children(rows)
        return [self._change(r, children.get(self.source.key_of(r), {})) for r in rows]

    # ----------------------------------------------------------------- after delivery

    def acknowledge(self, batch: records.Batch, result: records.WriteResult) -> None:
        changes = {records.key_text(c.key): c for c in batch.changes}
        refused: dict[str, str] = {}
        for r in result.rejected:
            refused.setdefault(records.key_text(r.key), r.message)
        delivered = {records.key_text(d.key): d for d in result.delivered}
        done = [k for k in changes if k in delivered and k not in refused]
        numbers = wb.documents(self.ctx, self.cfg, [delivered[k] for k in done])
        self._write([self._success(changes[k], delivered[k], numbers.get(k)) for k in done])
        crash.point("during_writeback")
        self._write([self._failure(changes[k], refused[k]) for k in changes if k in refused])
        if isinstance(batch.ack, _Plan):
            plan = batch.ack.items
            batch.ack.processed[:] = [i for ids in plan.values() for i in ids]
            batch.ack.failed.update({ids[-1]: refused[k] for k, ids in plan.items() if k in refused and ids})

    def committed(self, batch: records.Batch) -> None:
        """The inbox items of a batch the state committed: processed, or `error` for the refused
        ones. Not in acknowledge: a crash between it and the state commit would leave a refused
        order `error` in the inbox with no record error to retry it; this way a crash leaves the
        items `new` and the next run sends them again (the destination's upsert absorbs it)."""
        if isinstance(batch.ack, _Plan) and (batch.ack.processed or batch.ack.failed):
            self.ctx.store.inbox.finish(batch.ack.processed, batch.ack.failed)

    def _write(self, updates: list[dict[str, Any] | None]) -> None:
        """Status records with more than the flag (the GET set `exported` already: a flag alone
        is not worth a call)."""
        wanted = [u for u in updates if u is not None and len(u) > 2]
        if wanted:
            self.writer.write(wanted)

    def _success(self, change: records.Change, d: records.Delivered, number: Any) -> dict[str, Any]:
        cfg = self.cfg
        kept = d.note == records.KEPT
        out: dict[str, Any] = {self.key_field: change.key[0], cfg.flag: cfg.done}
        if cfg.status:
            out[cfg.status] = cfg.statuses.skipped if kept else cfg.statuses.success
        if cfg.error:
            out[cfg.error] = f"{wb.ALREADY} (on_exists: skip): left alone" if kept else ""
        if cfg.document is not None and number is not None:
            out[cfg.document.to] = number
        return out

    def _failure(self, change: records.Change, message: str) -> dict[str, Any] | None:
        cfg = self.cfg
        if not cfg.status and not cfg.error:
            return None
        out: dict[str, Any] = {self.key_field: change.key[0], cfg.flag: cfg.done}
        if cfg.status:
            out[cfg.status] = cfg.statuses.failed
        if cfg.error:
            out[cfg.error] = message[:1000]
        return out

    # ----------------------------------------------------------------- mapsync reexport

    def typed_key(self, text: tuple[str, ...]) -> records.Key:
        return tuple(text)  # an API's keys are text

    def find(self, keys: list[records.Key] | None) -> list[records.Key]:
        """The orders to export again: these (only those the API holds: a POST of an unknown
        order number would create one; spelt as the API does, so `w0005` typed for `W0005`
        neither renames the order there nor makes a second one at the destination), or every
        one with an open record error."""
        if keys is None:
            return self.ctx.store.open_error_keys(self.ctx.sync)
        held = self.writer.existing([str(k[0]) for k in keys])
        return [(held[str(k[0]).lower()],) for k in keys if str(k[0]).lower() in held]

    def reset(self, keys: list[records.Key]) -> None:
        """The documented way to fetch orders again: `exported = 0` on the Orders resource."""
        cfg = self.cfg
        updates = []
        for key in keys:
            out: dict[str, Any] = {self.key_field: key[0], cfg.flag: cfg.pending[0]}
            if cfg.status:
                out[cfg.status] = cfg.statuses.pending
            if cfg.error:
                out[cfg.error] = ""
            updates.append(out)
        self.writer.write(updates)

    # ----------------------------------------------------------------- mapsync sweep

    def sweeper(self) -> OrderSweep:
        """The lost-order sweep's reader (CIMcloud's searchstrings: a generic REST API has none)."""
        if not isinstance(self.source, CimcloudOrdersSource):
            raise errors.ConfigError(
                f"sync {self.ctx.sync}: the lost-order sweep reads CIMcloud's Orders resource by "
                "searchstring: a generic REST API documents no such read"
            )
        return OrderSweep(self.source.db, self.ctx.sync, self.cfg, self.target, self.key_field)

    def sweep_prepare(self) -> list[int]:
        """Before a sweep: pages stored but not split yet are split (their orders are received),
        and the ids of the `lost:` markers waiting (a sweep that covers its window ends them)."""
        lost: list[int] = []
        after = 0
        while items := self.ctx.store.inbox.new_items(self.ctx.sync, after, 500):
            after = items[-1].id
            for item in items:
                if item.event_id.startswith(LOST):
                    lost.append(item.id)
                elif item.event_id.startswith(PAGE):
                    # an unreadable page is kept as `error` (its orders are lost ones, its new
                    # `lost:` item is seen further on); any other failure (its lines' resource
                    # away) ends the sweep: its orders are not lost, only not split yet
                    self.split_or_bad(item.id, item.payload)
        return lost

    def reexport_batches(self, keys: list[records.Key], batch: int) -> Iterator[records.Batch]:
        """After the reset, the orders come back through the GET like new ones."""
        return self.read("run", {})
