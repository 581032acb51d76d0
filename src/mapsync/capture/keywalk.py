"""The key walk: compare every source key (and, for snapshot diff, a content hash of its row)
with the key ledger, in bounded pages. One implementation for snapshot diff and for the
watermark's periodic delete check.

Why not a merge join: the ledger stores keys as `records.key_text` (JSON text), whose order is
neither the source's numeric order nor its collation (a MariaDB `_ci` column sorts `abc` and
`ABD` differently from Python). Instead of forcing both sides into one order:

1. the source is streamed (keys and row hash only) and each page of keys is compared with the
   ledger by its exact text inside the state store (one statement per page, `compare_page`,
   which returns only the keys to send): missing, deleted or different-hash keys are the
   inserts and updates. The walk counts the source rows and the pages' keys that the ledger
   holds live;
2. deleted keys = ledger-live keys that are not in the source. Their number is known after step
   1 without reading anything else (live count at the start − live keys seen), so the guard can
   judge the run before any delete is sent, and a run without deletes skips step 2. Otherwise
   the ledger's live keys are scanned twice (`live_scan`: to count them per bucket, then to
   pick the suspects); only those in buckets (a hash of
   the key text) where the ledger holds more live keys than step 1 met are looked up in the
   source. Keys the source does not return *exactly* (compared as key text, so a `_ci`
   collation matching `ABC` for `abc` does not hide the delete) are deleted.

Memory stays flat: one page of keys (and one delivery batch of rows) at a time, and two fixed
arrays of bucket counters.
"""

from __future__ import annotations

import array
import dataclasses
import json
from collections.abc import Iterator, Sequence
from typing import Any, cast

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


def _live(t: sa.Table, sync: str) -> list[Any]:
    """Live entries: not deleted, and not written as a delete by `disable` either."""
    return [t.c.sync == sync, t.c.deleted == sa.false(), t.c.hash != DELETED_HASH]


def _sqlite_live(store: StateStore, conn: sa.Connection, sync: str, cols: str) -> str:
    """SQLite: `SELECT cols` of the sync's live ledger entries. When the ledger holds no other
    sync, as a plain table scan (`NOT INDEXED`: about 40 % cheaper than the primary-key index
    plus a table lookup per row); otherwise through the index, which skips the other syncs."""
    q = store.engine.dialect.identifier_preparer.quote
    t, s = q(schema.ledger.name), q("sync")
    others = conn.exec_driver_sql(
        f"SELECT EXISTS (SELECT 1 FROM {t} WHERE {s} < ?) OR EXISTS (SELECT 1 FROM {t} WHERE {s} > ?)",  # noqa: S608
        (sync, sync),
    ).scalar()
    return (  # identifiers from our own schema, values as parameters
        f"SELECT {cols} FROM {t}{'' if others else ' NOT INDEXED'} WHERE {s} = ? "  # noqa: S608
        f"AND NOT {q('deleted')} AND {q('hash')} <> ?"
    )


def live_count(store: StateStore, sync: str) -> int:
    """Keys the ledger holds as present at the destination (deletes not yet delivered)."""
    t = schema.ledger
    with store.engine.connect() as conn:
        if store.dialect == "sqlite":
            sql = _sqlite_live(store, conn, sync, "count(*)")
            return int(conn.exec_driver_sql(sql, (sync, DELETED_HASH)).scalar_one())
        return int(conn.execute(sa.select(sa.func.count()).where(*_live(t, sync))).scalar_one())


def live_scan(store: StateStore, sync: str, page: int, *, versions: bool) -> Iterator[list[Any]]:
    """The ledger's live (key text, version text) — (key text,) without `versions` — in pages of
    one streamed statement (one snapshot), in no particular order (on SQLite usually a plain
    table scan: see `_sqlite_live`; cheaper than key-ordered pages through the index)."""
    t = schema.ledger
    streaming = store.engine.dialect.supports_server_side_cursors
    options = {"stream_results": True, "max_row_buffer": page} if streaming else {}
    with store.engine.connect().execution_options(**options) as conn:
        if store.dialect == "sqlite":
            q = store.engine.dialect.identifier_preparer.quote
            sql = _sqlite_live(store, conn, sync, f"{q('key')}, {q('version')}" if versions else q("key"))
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(sql, (sync, DELETED_HASH))
                while rows := cursor.fetchmany(page):
                    yield rows
            finally:
                cursor.close()
            return
        query = sa.select(t.c.key, *([t.c.version] if versions else [])).where(*_live(t, sync))
        result = conn.execute(query)
        while rows := result.fetchmany(page):
            yield list(rows)


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


HEX = 32  # the width of a row hash (MD5 in hex, from whichever side computed it)


def _compare_sql(store: StateStore, hashed: bool) -> str:
    """The page comparison inside the state store: the page's key texts (and hashes) joined with
    the ledger by primary key; returns (position, live) of the keys to send only (new or gone:
    `live` false; when `hashed`, also live keys whose version is not the page's hash)."""
    q = store.engine.dialect.identifier_preparer.quote
    t, k, v, d, h = q(schema.ledger.name), q("key"), q("version"), q("deleted"), q("hash")
    gone = f"l.{d} OR l.{h} = '{DELETED_HASH}'"
    if store.dialect == "postgresql":  # %s: key texts, hashes (arrays), sync
        source = "unnest(%s::text[], %s::text[]) WITH ORDINALITY AS p(k, h, pos)"
        pos, key, row_hash, sync = "p.pos - 1", "p.k", "p.h", "%s"
        differs = "IS DISTINCT FROM"
    else:  # SQLite, ?: a JSON array of key texts, each after its hash when `hashed`; sync.
        # (One text per key, no quotes to escape: json_each reads it about 3x faster.)
        source = "json_each(?) AS p"
        pos, sync, differs = "p.key", "?", "IS NOT"
        key = f"substr(p.value, {HEX + 1})" if hashed else "p.value"
        row_hash = f"substr(p.value, 1, {HEX})"
    changed = f" OR l.{v} {differs} ('\"' || {row_hash} || '\"')" if hashed else ""
    return (  # identifiers from our own schema, values as parameters
        f"SELECT {pos}, NOT (l.{k} IS NULL OR {gone}) FROM {source} "  # noqa: S608
        f"LEFT JOIN {t} AS l ON l.{q('sync')} = {sync} AND l.{k} = {key} "
        f"WHERE l.{k} IS NULL OR {gone}{changed}"
    )


def _all_hex(hashes: Sequence[str | None]) -> bool:
    """Whether every hash is a text `HEX` wide (MD5 hashes always are)."""
    try:
        return set(map(len, cast("Sequence[str]", hashes))) == {HEX}
    except TypeError:  # a None
        return False


def compare_page(
    store: StateStore, sync: str, texts: list[str], hashes: Sequence[str | None], *, hashed: bool
) -> list[tuple[int, bool]]:
    """(position in `texts`, live in the ledger) of the keys to send, in position order: not in
    the ledger or gone (`live` false) and — when `hashed` — live with another version than the
    JSON string of its hash. SQLite and PostgreSQL stores compare in the store (one statement,
    only the keys to send come back); other stores, and hashes that are not all `HEX` wide,
    fetch the page's ledger entries (`ledger_page`) and compare here."""
    if not texts:
        return []
    if store.dialect not in ("sqlite", "postgresql") or (hashed and not _all_hex(hashes)):
        found = ledger_page(store, sync, texts)
        out = []
        for i, (text, row_hash) in enumerate(zip(texts, hashes, strict=True)):
            entry = found.get(text)
            if entry is None or entry[1]:
                out.append((i, False))
            elif hashed and entry[0] != f'"{row_hash}"':  # = version_text(row_hash)
                out.append((i, True))
        return out
    sql = _compare_sql(store, hashed)
    with store.engine.connect() as conn:
        if store.dialect == "postgresql":  # without `hashed`, the texts stand in for the hashes
            rows = fetch(conn, sql, (texts, list(hashes) if hashed else texts, sync))
        else:
            if hashed:  # all `HEX` wide (above): the key text starts at HEX + 1
                values = [h + t for t, h in zip(texts, cast("Sequence[str]", hashes), strict=True)]
            else:
                values = texts
            rows = fetch(conn, sql, (json.dumps(values), sync))
    return sorted((int(i), bool(live)) for i, live in rows)


def changed_keys(
    store: StateStore, sync: str, source: SqlSource, page: int, tally: Tally, *, hashed: bool
) -> Iterator[list[tuple[records.Key, str | None]]]:
    """Per source page: the keys to send (not in the ledger, deleted there, or — when `hashed` —
    with another row hash) with their hashes. Counts into `tally` as it goes: every source key
    into its bucket, then the keys the ledger does not hold live out again."""
    seen, mask = tally.seen, BUCKETS - 1
    for chunk in stream_keys(source, page, hashed=hashed):
        texts = chunk.texts()
        for text in texts:  # per row: kept lean
            seen[hash(text) & mask] += 1  # = bucket(text)
        tally.source_rows += len(chunk)
        tally.live_seen += len(chunk)
        send = []
        for i, live in compare_page(store, sync, texts, chunk.hashes, hashed=hashed):
            if not live:
                tally.live_seen -= 1
                seen[hash(texts[i]) & mask] -= 1
            send.append((chunk.key(i), chunk.hashes[i]))
        yield send


def deleted_keys(
    store: StateStore,
    sync: str,
    source: SqlSource,
    page: int,
    seen: array.array[int],
) -> Iterator[list[records.Change]]:
    """Delete changes for the ledger's live keys that the source no longer has, per page. A
    delete carries the key columns as its data (the ledger keeps no row images) and the
    ledger's version (the last row hash).

    Only keys of *suspect* buckets are looked up in the source: a first pass over the ledger
    counts its live keys per bucket; where that equals `seen` (the live keys the source walk
    met there, a subset of them) nothing in the bucket was deleted."""
    live, mask = _buckets(), BUCKETS - 1
    for chunk in live_scan(store, sync, page, versions=False):
        for (text,) in chunk:
            live[hash(text) & mask] += 1  # = bucket(text), inlined: a million times
    suspect = bytes(a != b for a, b in zip(live, seen, strict=True))
    del live
    statements: dict[int, Compiled] = {}
    for chunk in live_scan(store, sync, page, versions=True):
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
