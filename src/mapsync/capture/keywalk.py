"""The key walk: compare every source key (and, for snapshot diff, a content hash of its row)
with the key ledger, in bounded pages. One implementation for snapshot diff and for the
watermark's periodic delete check.

Why not a merge join: the ledger stores keys as `records.key_text` (JSON text), whose order is
neither the source's numeric order nor its collation (a MariaDB `_ci` column sorts `abc` and
`ABD` differently from Python). Instead of forcing both sides into one order:

1. the source is streamed (keys and row hash only) and each page of keys is looked up in the
   ledger by its exact text (one query per page): missing, deleted or different-hash keys are
   the inserts and updates. The walk counts the source rows and the pages' keys that the ledger
   holds live;
2. deleted keys = ledger-live keys that are not in the source. Their number is known after step
   1 without reading anything else (live count at the start − live keys seen), so the guard can
   judge the run before any delete is sent, and a run without deletes skips step 2. Otherwise
   the ledger's live keys are paged in their own (text) order; only those in buckets (a hash of
   the key text) where the ledger holds more live keys than step 1 met are looked up in the
   source. Keys the source does not return *exactly* (compared as key text, so a `_ci`
   collation matching `ABC` for `abc` does not hide the delete) are deleted.

Memory stays flat: one page of keys (and one delivery batch of rows) at a time, and two fixed
arrays of bucket counters.
"""

from __future__ import annotations

import array
import dataclasses
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from mapsync import records
from mapsync.capture.keysource import Compiled, existing, fetch, stream_keys, typed_key
from mapsync.connectors.sql_source import SqlSource
from mapsync.state import schema, values
from mapsync.state.store import StateStore

DELETED_HASH = "deleted"  # the ledger hash of a record whose delete was delivered (any policy)


def _mark(store: StateStore) -> str:
    return "?" if store.engine.dialect.paramstyle == "qmark" else "%s"


def ledger_page(store: StateStore, sync: str, texts: list[str]) -> dict[str, tuple[str | None, bool]]:
    """key text → (version text, gone) for the ledger entries among `texts` (one query).

    `gone`: the delete was delivered (`deleted`, or written as an update by `disable`)."""
    if not texts:
        return {}
    q = store.engine.dialect.identifier_preparer.quote
    mark = _mark(store)
    t = schema.ledger.name
    with store.engine.connect() as conn:
        if store.dialect == "postgresql":
            sql = (  # identifiers from our own schema, values as parameters
                f"SELECT {q('key')}, {q('version')}, {q('deleted')}, {q('hash')} FROM {q(t)} "  # noqa: S608
                f"WHERE {q('sync')} = %s AND {q('key')} = ANY(%s)"
            )
            rows = fetch(conn, sql, (sync, texts))
        else:
            sql = (
                f"SELECT {q('key')}, {q('version')}, {q('deleted')}, {q('hash')} FROM {q(t)} "  # noqa: S608
                f"WHERE {q('sync')} = {mark} AND {q('key')} IN ({', '.join(mark for _ in texts)})"
            )
            rows = fetch(conn, sql, (sync, *texts))
    return {k: (v, bool(d) or h == DELETED_HASH) for k, v, d, h in rows}


def _live(t: sa.Table, sync: str | None = None) -> list[Any]:
    """Live entries: not deleted, and not written as a delete by `disable` either. Without
    `sync`, with bind parameters `sync`, `no` and `gone` (see `_live_params`)."""
    if sync is not None:
        return [t.c.sync == sync, t.c.deleted == sa.false(), t.c.hash != DELETED_HASH]
    return [
        t.c.sync == sa.bindparam("sync"),
        t.c.deleted == sa.bindparam("no"),
        t.c.hash != sa.bindparam("gone"),
    ]


def _live_params(sync: str) -> dict[str, Any]:
    return {"sync": sync, "no": False, "gone": DELETED_HASH}


def live_count(store: StateStore, sync: str) -> int:
    """Keys the ledger holds as present at the destination (deletes not yet delivered)."""
    t = schema.ledger
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).where(*_live(t, sync))).scalar_one())


def live_pages(store: StateStore, sync: str, page: int) -> Iterator[list[tuple[str, str | None]]]:
    """The ledger's live (key text, version text), in key-text pages (keyset, one query each)."""
    t = schema.ledger
    query = sa.select(t.c.key, t.c.version).order_by(t.c.key).limit(page)
    first = Compiled.of(query.where(*_live(t)), store.engine)
    more = Compiled.of(query.where(*_live(t), t.c.key > sa.bindparam("after")), store.engine)
    after: str | None = None
    while True:
        with store.engine.connect() as conn:
            if after is None:
                rows = fetch(conn, first.sql, first.params(_live_params(sync)))
            else:
                rows = fetch(conn, more.sql, more.params({**_live_params(sync), "after": after}))
        if not rows:
            return
        yield rows  # the driver's (key, version) tuples
        after = rows[-1][0]


# --------------------------------------------------------------------------- the walk


@dataclasses.dataclass
class Tally:
    """What the source side of a walk found; `seen` counts the live keys met per bucket."""

    source_rows: int = 0
    live_seen: int = 0  # source keys that the ledger holds live
    live_at_start: int = 0
    seen: array.array[int] = dataclasses.field(default_factory=lambda: _buckets())

    @property
    def deletes(self) -> int:
        return max(0, self.live_at_start - self.live_seen)


BUCKETS = 1 << 18  # 1 MB of counters per side; about 4 keys per bucket at a million rows


def _buckets() -> array.array[int]:
    return array.array("I", bytes(4 * BUCKETS))


def bucket(text: str) -> int:
    """A key text's bucket. Python's string hash differs between processes, never within one:
    both counts of a walk are made in the same process, so it is enough (and cheaper than a
    CRC of the encoded text)."""
    return hash(text) & (BUCKETS - 1)


def version_text(row_hash: str) -> str:
    """`state.values.encode` of a hex hash (a plain JSON string), without the encoder per row."""
    return f'"{row_hash}"'


def changed_keys(
    store: StateStore, sync: str, source: SqlSource, page: int, tally: Tally, *, hashed: bool
) -> Iterator[list[tuple[records.Key, str | None]]]:
    """Per source page: the keys to send (not in the ledger, deleted there, or — when `hashed` —
    with another row hash) with their hashes. Counts into `tally` as it goes."""
    key_text, seen, mask = records.key_text, tally.seen, BUCKETS - 1
    for chunk in stream_keys(source, page, hashed=hashed):
        texts = [key_text(k) for k, _ in chunk]
        found = ledger_page(store, sync, texts)
        tally.source_rows += len(chunk)
        send = []
        live = 0
        for (key, row_hash), text in zip(chunk, texts, strict=True):  # per row: kept lean
            entry = found.get(text)
            if entry is None or entry[1]:
                send.append((key, row_hash))
                continue
            live += 1
            seen[hash(text) & mask] += 1  # = bucket(text)
            if hashed and entry[0] != f'"{row_hash}"':  # = version_text(row_hash)
                send.append((key, row_hash))
        tally.live_seen += live
        yield send


def deleted_keys(
    store: StateStore, sync: str, source: SqlSource, page: int, seen: array.array[int]
) -> Iterator[list[records.Change]]:
    """Delete changes for the ledger's live keys that the source no longer has, per page. A
    delete carries the key columns as its data (the ledger keeps no row images) and the
    ledger's version (the last row hash).

    Only keys of *suspect* buckets are looked up in the source: a first pass over the ledger
    counts its live keys per bucket; where that equals `seen` (the live keys the source walk
    met there, a subset of them) nothing in the bucket was deleted."""
    live, mask = _buckets(), BUCKETS - 1
    for chunk in live_pages(store, sync, page):
        for text, _ in chunk:
            live[hash(text) & mask] += 1  # = bucket(text), inlined: a million times
    suspect = bytes(a != b for a, b in zip(live, seen, strict=True))
    del live
    statements: dict[int, Compiled] = {}
    for chunk in live_pages(store, sync, page):
        chunk = [(text, version) for text, version in chunk if suspect[hash(text) & mask]]
        keys = [typed_key(source, text) for text, _ in chunk]
        present = existing(source, keys, statements)
        out = []
        for (text, version), key in zip(chunk, keys, strict=True):
            if text in present:
                continue
            out.append(
                records.Change(
                    "delete",
                    key,
                    values.decode(version),
                    dict(zip(source.key, key, strict=True)),
                )
            )
        if out:
            yield out
