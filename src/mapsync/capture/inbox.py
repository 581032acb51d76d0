"""Inbox capture: events pushed into the state store's inbox (webhooks through `mapsync serve`)
become changes, processed like queue changes.

- A run takes `new` items of its sync in arrival order, a batch at a time, up to `max_items`.
  The run holds the sync's lease, so no other run takes the same items; an item stays `new`
  until the state committed the batch that carried it, then becomes `processed` (or `error` with
  the destination's or the mapping's message, kept as a record error in that commit). A crash
  in between leaves it `new`: the next run sends it again, which the destination's upsert and
  the key ledger absorb.
- Payloads: `{"op": "upsert"|"delete", "key": {...}, "data": {...}, "version": ...}` or the
  whole source record (an upsert; the key columns are read from it). An upsert without `data`
  reads the row from the source by key: present → an upsert of the row as it is now, gone → a
  delete. `key` may also be a list in key-column order, or a scalar for a one-column key.
- Several items of one key in a batch collapse into the newest; the older ones are `processed`.
  "Newest" is by order value (`inbox_order`: `changes.version_field`, or the signed timestamp),
  ties by arrival. The order value is the change's version, so the ledger keeps the last one
  delivered per key; an event older than that is never applied: its items become `stale`
  (a replayed or late event cannot move the destination back).
- A payload that cannot be read (not JSON, no key) becomes `error` at once with the reason.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from typing import Any

from mapsync import records
from mapsync.capture.base import CaptureBase, Context, register, to_changes
from mapsync.capture.inbox_order import older, order_of
from mapsync.capture.queue import same_key
from mapsync.ports import Capabilities
from mapsync.sheet.webhook_models import InboxChanges
from mapsync.state import inbox

log = logging.getLogger("mapsync.capture")


@dataclasses.dataclass
class _Event:
    item: int
    op: str
    key: records.Key
    data: records.Row | None
    version: Any
    order: Any = None
    event_id: str = ""


@dataclasses.dataclass(frozen=True)
class _Plan:
    """A batch's acknowledgement (`Batch.ack`): key text → its inbox items, newest last; what its
    acknowledge decided for them, applied once the state committed the batch (`committed`)."""

    items: dict[str, list[int]]
    processed: list[int] = dataclasses.field(default_factory=list)
    failed: dict[int, str] = dataclasses.field(default_factory=dict)


class BadPayload(ValueError):
    """An inbox item that cannot become a change."""


def decode(payload: str, key_columns: list[str]) -> tuple[str, records.Key, records.Row | None, Any]:
    """(op, key, data or None, version) of one payload, or BadPayload naming what is wrong."""
    try:
        body = json.loads(payload)
    except ValueError:
        raise BadPayload("payload is not JSON") from None
    if not isinstance(body, dict):
        raise BadPayload("payload is not a JSON object")
    if "op" in body or "key" in body:
        op = body.get("op", "upsert")
        if op not in ("upsert", "delete"):
            raise BadPayload(f"unknown op {str(op)[:40]!r} (expected upsert or delete)")
        raw = body.get("key")
        data = body.get("data")
        if data is not None and not isinstance(data, dict):
            raise BadPayload("`data` is not a JSON object")
        if raw is None and isinstance(data, dict):
            raw = data
        if isinstance(raw, dict):
            missing = [c for c in key_columns if c not in raw]
            if missing:
                raise BadPayload(f"`key` lacks {', '.join(missing)}")
            key = tuple(raw[c] for c in key_columns)
        elif isinstance(raw, list):
            if len(raw) != len(key_columns):
                raise BadPayload(f"`key` needs {len(key_columns)} value(s): {', '.join(key_columns)}")
            key = tuple(raw)
        elif raw is not None and len(key_columns) == 1 and not isinstance(raw, bool):
            key = (raw,)
        else:
            raise BadPayload(f"no `key` ({', '.join(key_columns)})")
        if any(v is None or isinstance(v, dict | list) for v in key):
            raise BadPayload("a key value is null or not a plain value")
        row = {**data, **dict(zip(key_columns, key, strict=True))} if data is not None else None
        return op, key, row, body.get("version")
    missing = [c for c in key_columns if body.get(c) is None]
    if missing:
        raise BadPayload(f"the record lacks its key {', '.join(missing)}")
    return "upsert", tuple(body[c] for c in key_columns), body, None


@register("inbox")
class InboxCapture(CaptureBase):
    capabilities = Capabilities(emits_deletes=True, columnar_read=True)

    def __init__(self, source: Any, cfg: InboxChanges, batch: int, ctx: Context) -> None:
        self.source = source
        self.cfg = cfg
        self.batch = batch
        self.ctx = ctx
        self.key_columns = list(ctx.config.key.from_)

    @staticmethod
    def version_column(cfg: InboxChanges) -> None:
        return None

    @staticmethod
    def emits_deletes(cfg: InboxChanges) -> bool:
        return True

    def start_seed(self) -> dict[str, Any]:
        return {}  # items pushed during the seed are processed by the next run

    def low(self) -> Any:
        return None

    def finish(self) -> dict[str, Any]:
        return {}

    def read(self, mode: str, cursors: dict[str, Any]) -> Iterator[records.Batch]:
        after, taken = 0, 0
        while taken < self.cfg.max_items:
            items = inbox.new_items(
                self.ctx.store, self.ctx.sync, after, min(self.batch, self.cfg.max_items - taken)
            )
            if not items:
                return
            after, taken = items[-1].id, taken + len(items)
            changes, plan = self._changes(items)
            if not changes:
                inbox.finish(self.ctx.store, [i for ids in plan.values() for i in ids], {})
                continue
            yield records.Batch(changes, ack=_Plan(plan))

    def _changes(self, items: list[inbox.Item]) -> tuple[list[records.Change], dict[str, list[int]]]:
        field = self.cfg.version_field
        events: dict[str, list[_Event]] = {}
        bad: dict[int, str] = {}
        for item in items:
            try:
                op, key, data, version = decode(item.payload, self.key_columns)
            except BadPayload as exc:
                bad[item.id] = f"inbox item {item.event_id[:80]}: {exc}"
                continue
            order = order_of(data, version, field, item.signed_at)
            events.setdefault(same_key(key), []).append(
                _Event(item.id, op, key, data, version, order, item.event_id)
            )
        newest = {k: _newest(group) for k, group in events.items()}
        fetch = [e.key for e in newest.values() if e.op == "upsert" and e.data is None]
        current: dict[str, records.Row] = {}
        if fetch:
            current = {same_key(self.source.key_of(r)): r for r in self.source.read_keys(fetch)}
        for k, event in newest.items():
            if event.op == "upsert" and event.data is None and field is not None and event.order is None:
                event.order = (current.get(k) or {}).get(field)
        delivered = self.ctx.store.ledger(self.ctx.sync, [e.key for e in newest.values()])
        stale: dict[int, str] = {}
        changes: list[records.Change] = []
        plan: dict[str, list[int]] = {}
        for k, group in events.items():
            event = newest[k]
            ids = [e.item for e in group]
            entry = delivered.get(event.key)
            if entry is not None and older(event.order, entry.version):
                what = field or "signed timestamp"
                for e in group:
                    stale[e.item] = (
                        f"not applied: older than the event last delivered for key "
                        f"{records.key_text(event.key)[:200]} ({what} {e.order!r} < {entry.version!r})"
                    )
                log.warning(
                    "inbox_stale_event",
                    extra={
                        "action": "inbox_stale_event",
                        "sync": self.ctx.sync,
                        "event_id": event.event_id[:80],
                        "items": len(group),
                    },
                )
                continue
            if event.op == "upsert":
                row = event.data if event.data is not None else current.get(k)
                if row is not None:
                    (change,) = to_changes(self.source, [row], None)
                    change = dataclasses.replace(change, version=event.order)
                else:  # asked to read the row, and the source no longer has it
                    change = records.Change("delete", event.key, event.order, {})
            else:
                change = records.Change("delete", event.key, event.order, event.data or {})
            changes.append(change)
            plan[records.key_text(change.key)] = ids
        if bad or stale:
            inbox.finish(self.ctx.store, [], bad, stale)
        return changes, plan

    def acknowledge(self, batch: records.Batch, result: records.WriteResult) -> None:
        if not isinstance(batch.ack, _Plan):
            return
        rejected = {records.key_text(r.key): r.message for r in result.rejected}
        for key, ids in batch.ack.items.items():
            batch.ack.processed.extend(ids)
            if key in rejected:
                batch.ack.failed[ids[-1]] = rejected[key]  # the older items of the key were superseded by it

    def committed(self, batch: records.Batch) -> None:
        """The items of a batch the state committed: processed, or `error` for a refused one. Not
        in acknowledge: a crash before the state commit would leave a refused item `error` with no
        record error to retry it; this way it stays `new` and the next run sends it again."""
        if isinstance(batch.ack, _Plan) and (batch.ack.processed or batch.ack.failed):
            inbox.finish(self.ctx.store, batch.ack.processed, batch.ack.failed)


def _newest(group: list[_Event]) -> _Event:
    """The event of a key's group that wins: the latest by order value, ties (and values that
    cannot be compared) by arrival."""
    best = group[0]
    for event in group[1:]:
        if not older(event.order, best.order):
            best = event
    return best
