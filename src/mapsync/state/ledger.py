"""The key ledger's reads: a mixin of `StateStore` (port `Ledger`; the batch commit that writes
the ledger stays in state/store.py).

`ledger`/`ledger_count` serve the engine's dedupe and the guard; the key walk
(capture/keywalk.py) compares pages of source keys with the ledger (`compare_page`) and scans its
live keys (`live_scan`); the collision check (collisions.py) names the source key that owns a
destination row (`ledger_owners`). The SQL for SQLite and PostgreSQL stores is here, in one
place; the walk's bookkeeping stays with the walk. One-statement reads are `guarded` (a
transient store failure is retried); `live_scan` streams one statement and is not (a failure
ends the walk with the store's StateError, as every store error does: `faults.install`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, cast

import sqlalchemy as sa

from mapsync import errors, records
from mapsync.state import faults, schema, values
from mapsync.state.data import LedgerEntry as LedgerEntry
from mapsync.state.faults import guarded

DELETED_HASH = "deleted"  # the ledger hash of a record whose delete was delivered (any policy)
HEX = 32  # the width of a row hash (MD5 in hex, from whichever side computed it)


LOOKUP_CHUNK = 5000  # keys per ledger lookup statement (SQLite allows 32,766 parameters since 3.32)


def _fetch(conn: sa.Connection, sql: str, params: Any) -> list[Any]:
    """Rows of one statement in the driver's own SQL (no compilation, no bind processing), through
    SQLAlchemy's execution all the same: a failure of the driver is a `DBAPIError` that the
    store's fault handling names and retries, and a dead connection is dropped from the pool (a
    raw driver cursor let a cut PostgreSQL connection's `psycopg.OperationalError` through, and
    the run crashed with a traceback)."""
    return list(conn.exec_driver_sql(sql, params))


def _live(t: sa.Table, sync: str) -> list[Any]:
    """Live entries: not deleted, and not written as a delete by `disable` either."""
    return [t.c.sync == sync, t.c.deleted == sa.false(), t.c.hash != DELETED_HASH]


def _all_hex(hashes: Sequence[str | None]) -> bool:
    """Whether every hash is a text `HEX` wide (MD5 hashes always are)."""
    try:
        return set(map(len, cast("Sequence[str]", hashes))) == {HEX}
    except TypeError:  # a None
        return False


def compare_found(
    found: dict[str, tuple[str | None, bool]], texts: list[str], hashes: Sequence[str | None], *, hashed: bool
) -> list[tuple[int, bool]]:
    """`compare_page` over a page's ledger entries already fetched (`ledger_page`): (position,
    live) of the keys to send, in position order."""
    out = []
    for i, (text, row_hash) in enumerate(zip(texts, hashes, strict=True)):
        entry = found.get(text)
        if entry is None or entry[1]:
            out.append((i, False))
        elif hashed and entry[0] != f'"{row_hash}"':  # = values.encode(row_hash)
            out.append((i, True))
    return out


Buckets = tuple[int, Collection[int]]  # (n, wanted buckets) of a `drift_scan`


def drift_suffixes(n: int, wanted: Collection[int]) -> tuple[int, list[str]] | None:
    """When n is a power of 16 (up to 16**8): (w, the w-digit hex texts) such that `bucket(dkey, n)`
    is wanted exactly when dkey[8 - w : 8] is one of them (lowercase, as md5 hex is); else None."""
    width = next((w for w in range(1, 9) if 16**w == n), None)
    if width is None:
        return None
    return width, sorted(format(b, f"0{width}x") for b in set(wanted) if 0 <= b < n)


def bucket_test(buckets: Buckets) -> Callable[[str | None], bool]:
    """Whether a dkey is in one of the wanted buckets (= `drift_form.bucket`; a None is not)."""
    n, wanted = buckets[0], frozenset(buckets[1])
    return lambda dkey: dkey is not None and int(dkey[:8], 16) % n in wanted


class LedgerMixin:
    engine: sa.Engine
    dialect: str

    @guarded
    def ledger(self, sync: str, keys: Iterable[records.Key]) -> dict[records.Key, LedgerEntry]:
        """Ledger entries of these keys (`_by_keys`: a batch's lookup ran at about 30 µs a key
        as SQLAlchemy `IN` queries of 500 keys)."""
        wanted = {records.key_text(k): k for k in keys}
        found: dict[records.Key, LedgerEntry] = {}
        with self.engine.connect() as conn:
            for key, version, hash_, dest_id, deleted in self._by_keys(
                conn, ("key", "version", "hash", "dest_id", "deleted"), sync, list(wanted)
            ):
                found[wanted[key]] = LedgerEntry(values.decode(version), hash_, dest_id, bool(deleted))
        return found

    def _by_keys(self, conn: sa.Connection, cols: Sequence[str], sync: str, texts: list[str]) -> list[Any]:
        """`cols` of the sync's ledger entries among the key `texts`, in the driver's SQL: one
        statement per `LOOKUP_CHUNK` keys (PostgreSQL: the keys as one array parameter)."""
        q = self.engine.dialect.identifier_preparer.quote
        mark = self._mark()
        names = ", ".join(q(c) for c in cols)
        head = f"SELECT {names} FROM {q(schema.ledger.name)} WHERE {q('sync')} = {mark} AND {q('key')}"  # noqa: S608
        rows: list[Any] = []
        for i in range(0, len(texts), LOOKUP_CHUNK):
            chunk = texts[i : i + LOOKUP_CHUNK]
            if self.dialect == "postgresql":
                rows += _fetch(conn, f"{head} = ANY(%s)", (sync, chunk))
            else:  # identifiers from our own schema, every value a parameter
                rows += _fetch(conn, f"{head} IN ({', '.join(mark for _ in chunk)})", (sync, *chunk))
        return rows

    @guarded
    def ledger_count(self, sync: str) -> int:
        t = schema.ledger
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).where(t.c.sync == sync, t.c.deleted == sa.false())
                ).scalar_one()
            )

    def _mark(self) -> str:
        return "?" if self.engine.dialect.paramstyle == "qmark" else "%s"

    @guarded
    def ledger_page(self, sync: str, texts: list[str]) -> dict[str, tuple[str | None, bool]]:
        """key text → (version text, gone) for the ledger entries among `texts` (`_by_keys`).

        `gone`: the delete was delivered (`deleted`, or written as an update by `disable`)."""
        if not texts:
            return {}
        with self.engine.connect() as conn:
            rows = self._by_keys(conn, ("key", "version", "deleted", "hash"), sync, texts)
        return {k: (v, bool(d) or h == DELETED_HASH) for k, v, d, h in rows}

    def _sqlite_live(self, conn: sa.Connection, sync: str, cols: str) -> str:
        """SQLite: `SELECT cols` of the sync's live ledger entries. When the ledger holds no other
        sync, as a plain table scan (`NOT INDEXED`: about 40 % cheaper than the primary-key index
        plus a table lookup per row); otherwise through the index, which skips the other syncs."""
        q = self.engine.dialect.identifier_preparer.quote
        t, s = q(schema.ledger.name), q("sync")
        return (  # identifiers from our own schema, values as parameters
            f"SELECT {cols} FROM {t}{self._sqlite_hint(conn, sync)} WHERE {s} = ? "  # noqa: S608
            f"AND NOT {q('deleted')} AND {q('hash')} <> ?"
        )

    def _sqlite_hint(self, conn: sa.Connection, sync: str) -> str:
        """` NOT INDEXED` when the SQLite ledger holds no other sync than `sync` (see `_sqlite_live`)."""
        q = self.engine.dialect.identifier_preparer.quote
        t, s = q(schema.ledger.name), q("sync")
        others = conn.exec_driver_sql(
            f"SELECT EXISTS (SELECT 1 FROM {t} WHERE {s} < ?) OR EXISTS (SELECT 1 FROM {t} WHERE {s} > ?)",  # noqa: S608
            (sync, sync),
        ).scalar()
        return "" if others else " NOT INDEXED"

    @guarded
    def live_count(self, sync: str) -> int:
        """Keys the ledger holds as present at the destination (deletes not yet delivered)."""
        t = schema.ledger
        with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                sql = self._sqlite_live(conn, sync, "count(*)")
                return int(conn.exec_driver_sql(sql, (sync, DELETED_HASH)).scalar_one())
            return int(conn.execute(sa.select(sa.func.count()).where(*_live(t, sync))).scalar_one())

    def live_scan(self, sync: str, page: int, *, versions: bool) -> Iterator[list[Any]]:
        """The ledger's live (key text, version text) — (key text,) without `versions` — in pages of
        one streamed statement (one snapshot), in no particular order (on SQLite usually a plain
        table scan: see `_sqlite_live`; cheaper than key-ordered pages through the index)."""
        t = schema.ledger
        streaming = self.engine.dialect.supports_server_side_cursors
        options = {"stream_results": True, "max_row_buffer": page} if streaming else {}
        with self.engine.connect().execution_options(**options) as conn:
            if self.dialect == "sqlite":
                q = self.engine.dialect.identifier_preparer.quote
                sql = self._sqlite_live(conn, sync, f"{q('key')}, {q('version')}" if versions else q("key"))
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

    def _compare_sql(self, hashed: bool) -> str:
        """The page comparison inside the state store: the page's key texts (and hashes) joined with
        the ledger by primary key; returns (position, live) of the keys to send only (new or gone:
        `live` false; when `hashed`, also live keys whose version is not the page's hash)."""
        q = self.engine.dialect.identifier_preparer.quote
        t, k, v, d, h = q(schema.ledger.name), q("key"), q("version"), q("deleted"), q("hash")
        gone = f"l.{d} OR l.{h} = '{DELETED_HASH}'"
        if self.dialect == "postgresql":  # %s: key texts, hashes (arrays), sync
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

    def compare_page(
        self, sync: str, texts: list[str], hashes: Sequence[str | None], *, hashed: bool
    ) -> list[tuple[int, bool]]:
        """(position in `texts`, live in the ledger) of the keys to send, in position order: not in
        the ledger or gone (`live` false) and — when `hashed` — live with another version than the
        JSON string of its hash. SQLite and PostgreSQL stores compare in the store (one statement,
        only the keys to send come back); other stores, and hashes that are not all `HEX` wide,
        fetch the page's ledger entries (`ledger_page`) and compare here."""
        if not texts:
            return []
        if self.dialect not in ("sqlite", "postgresql") or (hashed and not _all_hex(hashes)):
            return compare_found(self.ledger_page(sync, texts), texts, hashes, hashed=hashed)
        return self._compare_in_store(sync, texts, hashes, hashed)

    @guarded
    def _compare_in_store(
        self, sync: str, texts: list[str], hashes: Sequence[str | None], hashed: bool
    ) -> list[tuple[int, bool]]:
        sql = self._compare_sql(hashed)
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":  # without `hashed`, the texts stand in for the hashes
                rows = _fetch(conn, sql, (texts, list(hashes) if hashed else texts, sync))
            else:
                if hashed:  # all `HEX` wide (above): the key text starts at HEX + 1
                    page = [h + t for t, h in zip(texts, cast("Sequence[str]", hashes), strict=True)]
                else:
                    page = texts
                rows = _fetch(conn, sql, (json.dumps(page), sync))
        return sorted((int(i), bool(live)) for i, live in rows)

    def drift_scan(
        self, sync: str, page: int, buckets: Buckets | None = None
    ) -> Iterator[list[tuple[str, str | None, str | None, bool]]]:
        """(key text, dkey, digest, gone) of every ledger entry of the sync — `gone`: its delete was
        delivered (deleted, or written by `disable`) —, in pages of one streamed statement (one
        snapshot), in no particular order (the drift walk buckets them itself). `buckets` = (n,
        wanted): only the entries with a dkey whose `bucket(dkey, n)` is wanted; when n is a power
        of 16 the store selects them (the last hex digits of dkey[:8]: `drift_suffixes`).

        Plain tuples from the driver's cursor (no Row objects): the walk reads every entry."""
        q = self.engine.dialect.identifier_preparer.quote
        mark = self._mark()
        # identifiers from our own schema, values as parameters
        cols = ", ".join(map(q, ("key", "dkey", "digest"))) + f", ({q('deleted')} OR {q('hash')} = {mark})"
        where = f"{q('sync')} = {mark}"
        params: list[Any] = [DELETED_HASH, sync]
        suffixes = drift_suffixes(*buckets) if buckets is not None else None
        if suffixes is not None:
            width, wanted = suffixes
            part = f"substr({q('dkey')}, {9 - width}, {width})"
            if self.dialect == "postgresql":
                where += f" AND {part} = ANY(%s)"
                params.append(wanted)
            else:  # SQLite: one JSON text, however many buckets
                where += f" AND {part} IN (SELECT value FROM json_each({mark}))"  # noqa: S608
                params.append(json.dumps(wanted))
        keep = bucket_test(buckets) if buckets is not None and suffixes is None else None
        dbapi_error: type[Exception] = self.engine.dialect.loaded_dbapi.Error
        head, tail = f"SELECT {cols} FROM {q(schema.ledger.name)}", f" WHERE {where}"  # noqa: S608
        try:
            with self.engine.connect() as conn:
                driver: Any = conn.connection.driver_connection
                if self.dialect == "sqlite":  # SQLite's cursor steps the statement: it streams
                    hint, cursor = self._sqlite_hint(conn, sync), driver.cursor()
                else:  # PostgreSQL: a named (server-side) cursor streams
                    hint, cursor = "", driver.cursor("mapsync_drift_scan")
                try:
                    cursor.execute(head + hint + tail, params)
                    while rows := cursor.fetchmany(page):
                        if keep is not None and not (rows := [r for r in rows if keep(r[1])]):
                            continue  # (pages after the filter: at most `page` entries, none empty)
                        yield [(k, dk, dg, bool(g)) for k, dk, dg, g in rows]
                finally:
                    with contextlib.suppress(dbapi_error):  # (a broken connection's cursor)
                        cursor.close()
        except (dbapi_error, sa.exc.DBAPIError) as exc:  # the driver's own cursor: SQLAlchemy never saw it
            raise _scan_fault(self.engine, sync, head + tail, exc) from None

    @guarded
    def set_drift(self, sync: str, entries: Mapping[str, tuple[str, str, str]]) -> int:
        """Store (dkey, digest) of these ledger entries (key text → (dkey, digest, hash): the
        backfill); returns the entries set. Only an entry still undigested and still at `hash`
        is set: one a run delivered meanwhile (its own pair, a newer hash) keeps what the run
        stored; keys the ledger does not hold are skipped."""
        if not entries:
            return 0
        q = self.engine.dialect.identifier_preparer.quote
        mark = self._mark()
        sql = (  # identifiers from our own schema, values as parameters
            f"UPDATE {q(schema.ledger.name)} SET {q('dkey')} = {mark}, {q('digest')} = {mark} "  # noqa: S608
            f"WHERE {q('sync')} = {mark} AND {q('key')} = {mark} AND {q('digest')} IS NULL "
            f"AND {q('hash')} = {mark}"
        )
        rows = [(dkey, digest, sync, key, hash_) for key, (dkey, digest, hash_) in entries.items()]
        done = 0
        with self.engine.begin() as conn:
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                for i in range(0, len(rows), 1000):
                    cursor.executemany(sql, rows[i : i + 1000])
                    done += max(cursor.rowcount, 0)  # the statements' rows together
            finally:
                cursor.close()
        return done

    @guarded
    def ledger_owners(self, sync: str, dest_ids: Sequence[str]) -> dict[str, records.Key]:
        """Source keys in the ledger, live, by the destination id they were written to (one query)."""
        t = schema.ledger
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.c.key, t.c.dest_id).where(
                    t.c.sync == sync, t.c.dest_id.in_(list(dest_ids)), t.c.deleted == sa.false()
                )
            )
            return {dest_id: tuple(values.decode(key)) for key, dest_id in rows}


def _scan_fault(engine: sa.Engine, sync: str, sql: str, exc: Exception) -> errors.StateError:
    """A driver error of the drift scan as the store's other reads name theirs (`faults`): a
    classified StoreFault (the reason, the store, what to do), else a StateError in one line. The
    scan streams one statement and is not retried (as `live_scan`)."""
    wrapped: sa.exc.StatementError = (
        exc if isinstance(exc, sa.exc.DBAPIError) else sa.exc.DBAPIError.instance(sql, None, exc, type(exc))
    )
    orig = wrapped.orig or exc
    reason = faults.classify(wrapped)
    if reason is not None:
        return faults.error(engine, reason, wrapped)
    first = (str(orig).strip().splitlines() or [type(orig).__name__])[0][:300]
    return errors.StateError(f"{faults.where(engine)}: the drift scan of sync {sync} failed: {first}")
