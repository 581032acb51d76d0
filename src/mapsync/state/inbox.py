"""The durable inbox in the state store: pushed events (webhooks) wait here until a run of their
sync processes them. Statuses: `new` → `processed` | `stale` | `error`. One row per (sync, event
id) and per (sync, verified signature): both are kept as SHA-256 hashes (ids of any length).

`SqlInbox` is the port `Inbox` of a `StateStore` (`store.inbox`); the module functions are the
older form, kept for their callers: each asks `store.inbox`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from mapsync.state import schema
from mapsync.state.clock import stamp
from mapsync.state.data import Item as Item
from mapsync.state.ports import Store


class SqlInbox:
    """The `Inbox` port of a SQL state store (table `mapsync_inbox`)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    def append(
        self,
        sync: str,
        event_id: str,
        payload: str,
        source: str | None = None,
        *,
        signature: str | None = None,
        signed_at: int | None = None,
    ) -> int | None:
        """Store one event; its id, or None when this (sync, event id) or this (sync, signature) is
        already there (a replay). Returns only after the insert committed."""
        stmt = self._insert(sync, event_id, payload, source, stamp(), signature, signed_at).returning(
            schema.inbox.c.id
        )
        with self.engine.begin() as conn:
            row = conn.execute(stmt).first()
        return int(row[0]) if row is not None else None

    def _insert(
        self,
        sync: str,
        event_id: str,
        payload: str,
        source: str | None,
        now: str,
        signature: str | None = None,
        signed_at: int | None = None,
    ) -> Any:
        """The INSERT of one `new` item that skips a replay (either unique key: the event id or
        the signature)."""
        dialect: Any = postgresql if self.dialect == "postgresql" else sqlite
        return (
            dialect.insert(schema.inbox)
            .values(
                sync=sync,
                source=source,
                event_id=event_id[:255],
                event_hash=schema.digest(event_id),
                signature_hash=schema.digest(signature) if signature is not None else None,
                signed_at=signed_at,
                received_at=now,
                payload=payload,
                status="new",
            )
            .on_conflict_do_nothing()
        )

    def new_items(self, sync: str, after: int, limit: int) -> list[Item]:
        """`new` items of a sync after id `after`, in arrival order."""
        t = schema.inbox
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.c.id, t.c.event_id, t.c.received_at, t.c.payload, t.c.signed_at)
                .where(t.c.sync == sync, t.c.status == "new", t.c.id > after)
                .order_by(t.c.id)
                .limit(limit)
            ).all()
        return [Item(int(r[0]), r[1], r[2], r[3], None if r[4] is None else int(r[4])) for r in rows]

    def finish(
        self,
        processed: Iterable[int],
        failed: dict[int, str],
        stale: dict[int, str] | None = None,
    ) -> None:
        """Mark items processed, error or stale (not applied: older than what was delivered) with
        their message (capped), in one transaction."""
        t = schema.inbox
        now = stamp()
        stale = stale or {}
        done = sorted(set(processed) - set(failed) - set(stale))
        with self.engine.begin() as conn:
            for i in range(0, len(done), 500):
                conn.execute(
                    sa.update(t)
                    .where(t.c.id.in_(done[i : i + 500]), t.c.status == "new")
                    .values(status="processed", processed_at=now, error=None)
                )
            for status, messages in (("error", failed), ("stale", stale)):
                for item_id, message in messages.items():
                    conn.execute(
                        sa.update(t)
                        .where(t.c.id == item_id, t.c.status == "new")
                        .values(status=status, processed_at=now, error=message[:2000])
                    )

    def split(
        self, sync: str, done: int, items: Sequence[tuple[str, str]], source: str | None = None
    ) -> None:
        """Append `items` (event id, payload; a replayed id is skipped) and mark item `done`
        processed, in one transaction: a stored page becomes its records, all or nothing."""
        t = schema.inbox
        now = stamp()
        with self.engine.begin() as conn:
            for event_id, payload in items:
                conn.execute(self._insert(sync, event_id, payload, source, now))
            conn.execute(
                sa.update(t)
                .where(t.c.id == done, t.c.status == "new")
                .values(status="processed", processed_at=now, error=None)
            )

    def latest(
        self, sync: str, prefixes: Sequence[str], status: str | None = None
    ) -> dict[str, tuple[Item, str]]:
        """The newest item (and its status) whose event id starts with each of `prefixes` (and
        whose status is `status`, if given)."""
        t = schema.inbox
        out: dict[str, tuple[Item, str]] = {}
        wanted = list(dict.fromkeys(prefixes))
        with self.engine.connect() as conn:
            for i in range(0, len(wanted), 100):
                chunk = wanted[i : i + 100]
                likes = [t.c.event_id.like(_like(p) + "%", escape="\\") for p in chunk]
                rows = conn.execute(
                    sa.select(t.c.id, t.c.event_id, t.c.received_at, t.c.payload, t.c.signed_at, t.c.status)
                    .where(t.c.sync == sync, sa.or_(*likes), *([t.c.status == status] if status else []))
                    .order_by(t.c.id)
                ).all()
                for r in rows:
                    item = Item(int(r[0]), r[1], r[2], r[3], None if r[4] is None else int(r[4]))
                    for p in chunk:
                        if item.event_id.startswith(p):
                            out[p] = (item, str(r[5]))  # ordered by id: the newest stays
        return out

    def counts(self, sync: str | None = None) -> dict[str, int]:
        """How many items per status (of one sync, or all)."""
        t = schema.inbox
        query = sa.select(t.c.status, sa.func.count()).group_by(t.c.status)
        if sync is not None:
            query = query.where(t.c.sync == sync)
        with self.engine.connect() as conn:
            return {str(status): int(n) for status, n in conn.execute(query).all()}


def _like(text: str) -> str:
    """`text` as a LIKE pattern that matches itself only (`%`, `_` and the escape escaped)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# ------------------------------------------------------------ the module form (store.inbox)


def append(
    store: Store,
    sync: str,
    event_id: str,
    payload: str,
    source: str | None = None,
    *,
    signature: str | None = None,
    signed_at: int | None = None,
) -> int | None:
    """`Inbox.append`: the new item's id, or None for a replay."""
    return store.inbox.append(sync, event_id, payload, source, signature=signature, signed_at=signed_at)


def new_items(store: Store, sync: str, after: int, limit: int) -> list[Item]:
    return store.inbox.new_items(sync, after, limit)


def finish(
    store: Store, processed: Iterable[int], failed: dict[int, str], stale: dict[int, str] | None = None
) -> None:
    store.inbox.finish(processed, failed, stale)


def counts(store: Store, sync: str | None = None) -> dict[str, int]:
    return store.inbox.counts(sync)
