"""The source side of the key walk (`capture.keywalk`): the per-row hash expression, the
streamed reads of keys (and hashes) and of full rows, and exact key lookups, all through the
driver's own cursor where that is safe (plain tuples, no per-row Row objects)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from hashlib import md5
from typing import Any

import sqlalchemy as sa

from mapsync import db_errors, records
from mapsync.connectors.sql_source import SqlSource

HASH_LABEL = "mapsync_row_hash"
_INT_KEY = re.compile(r"\[(-?[0-9]+)\]")


def hash_expression(source: SqlSource) -> tuple[sa.ColumnElement[Any], bool]:
    """A per-row content hash over the sync's source columns, and whether the client must still
    hash it (SQLite has no hash function: it builds the row text, Python hashes that).

    PostgreSQL `md5(ROW(…)::text)`, MariaDB `MD5(CONCAT_WS(',', QUOTE(…), …))` (QUOTE tells
    NULL from 'NULL'), SQLite `json_array(…)` (3x faster than `quote(…) || ',' || …`; columns
    the catalog calls BLOB go in as `hex(…)`, which JSON can hold)."""
    cols = [source.col(c) for c in source.columns]
    dialect = source.db.dialect
    if dialect == "postgresql":
        return sa.func.md5(sa.cast(sa.func.ROW(*cols), sa.Text)), False
    if dialect == "mysql":
        return sa.func.md5(sa.func.concat_ws(",", *[sa.func.quote(c) for c in cols])), False
    blobs = {n for n, i in source.info.items() if "BLOB" in i.type_name.upper()}
    parts = [sa.func.hex(source.col(c)) if c in blobs else source.col(c) for c in source.columns]
    return sa.func.json_array(*parts, type_=sa.String), True


def client_hash(text: str | None) -> str:
    return hashlib.md5((text or "").encode(), usedforsecurity=False).hexdigest()


def _streaming(source: SqlSource, batch: int) -> dict[str, Any]:
    return (
        {"stream_results": True, "max_row_buffer": batch}
        if source.db.engine.dialect.supports_server_side_cursors
        else {}
    )


def _conditions(source: SqlSource, extra_where: str | None = None) -> list[Any]:
    return [sa.text(f"({w})") for w in (source.filter, extra_where) if w]


@dataclasses.dataclass
class KeyPage:
    """One page of the key stream: the keys (for a one-column key, its bare values) and their
    row hashes (None unless hashed)."""

    heads: Sequence[Any]  # one-column key: the values; otherwise the key tuples
    hashes: Sequence[str | None]
    single: bool

    def __len__(self) -> int:
        return len(self.heads)

    def key(self, i: int) -> records.Key:
        return (self.heads[i],) if self.single else self.heads[i]

    def texts(self) -> list[str]:
        """`records.key_text` of every key (integers without a call per row)."""
        text = records.key_text
        if self.single:
            return [f"[{v}]" if type(v) is int else text((v,)) for v in self.heads]
        return [text(k) for k in self.heads]


def _utf8(conn: sa.Connection) -> bool:
    """Whether a SQLite database stores text as UTF-8 (then `CAST(text AS BLOB)` are the bytes
    Python's `str.encode()` would give, and the row text can skip the decode and encode)."""
    return str(conn.exec_driver_sql("PRAGMA encoding").scalar()).upper() == "UTF-8"


def stream_keys(source: SqlSource, page: int, *, hashed: bool) -> Iterator[KeyPage]:
    """Every source key (after `filter`) with its row hash (None unless `hashed`), in pages."""
    keys = [source.col(c) for c in source.key]
    expr, client = hash_expression(source) if hashed else (sa.null(), False)
    n = len(keys)
    try:
        streaming = _streaming(source, page)
        with source.db.engine.connect().execution_options(**streaming) as conn:
            raw = client and _utf8(conn)  # SQLite: the row text as its UTF-8 bytes
            if raw:
                expr = sa.cast(expr, sa.LargeBinary)
            query = sa.select(*keys, expr.label(HASH_LABEL)).where(*_conditions(source))
            result = conn.execute(query)
            # without a server-side cursor (SQLite), the driver's cursor itself: plain tuples,
            # no Row objects (the columns are untyped: no result processing is skipped). A
            # server-side cursor's result has already buffered its first row: read through it.
            fetch = result.fetchmany if streaming else result.cursor.fetchmany
            while rows := fetch(page):
                if raw:  # the hot path: SQLite sources
                    hashes = [md5(r[n]).hexdigest() for r in rows]
                elif client:
                    hashes = [client_hash(r[n]) for r in rows]
                else:
                    hashes = [r[n] for r in rows]
                heads = [r[0] for r in rows] if n == 1 else [tuple(r[:n]) for r in rows]
                yield KeyPage(heads, hashes, n == 1)
    except sa.exc.DBAPIError as exc:
        raise db_errors.transient(f"sync {source.sync}: reading the source failed", exc, "source") from None


def stream_rows(
    source: SqlSource, batch: int, after: Sequence[Any] | None, extra_where: str | None
) -> Iterator[list[tuple[records.Row, str]]]:
    """Full rows in key order, strictly after the key `after`, each with its row hash (the seed)."""
    keys = [source.col(c) for c in source.key]
    expr, client = hash_expression(source)
    conditions = _conditions(source, extra_where)
    if after is not None:
        conditions.append(sa.tuple_(*keys) > sa.tuple_(*[sa.literal(v) for v in after]))
    query = (
        sa.select(*[source.col(c) for c in source.columns], expr.label(HASH_LABEL))
        .where(*conditions)
        .order_by(*keys)
    )
    try:
        with source.db.engine.connect().execution_options(**_streaming(source, batch)) as conn:
            result = conn.execute(query)
            names = list(result.keys())[:-1]
            while rows := result.fetchmany(batch):
                out = []
                for r in rows:
                    value = r[-1]
                    out.append(
                        (dict(zip(names, r[:-1], strict=True)), client_hash(value) if client else value)
                    )
                yield out
    except sa.exc.DBAPIError as exc:
        raise db_errors.transient(f"sync {source.sync}: reading the source failed", exc, "source") from None


def fetch(conn: sa.Connection, sql: str, params: Any) -> list[Any]:
    """Rows of one statement through the driver's own cursor (tuples, no Row objects)."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, params)
        return list(cursor.fetchall())
    finally:
        cursor.close()


@dataclasses.dataclass(frozen=True)
class Compiled:
    """A statement compiled once for the driver: its SQL and how to order its parameters."""

    sql: str
    positions: Sequence[str] | None  # parameter names in order (qmark/format), None if named
    defaults: dict[str, Any]  # values bound in the statement itself (its LIMIT)

    @classmethod
    def of(cls, stmt: sa.Select[Any], engine: sa.Engine) -> Compiled:
        compiled = stmt.compile(dialect=engine.dialect)
        positions = compiled.positiontup if engine.dialect.positional else None
        defaults = {k: v for k, v in compiled.params.items() if v is not None}
        return cls(compiled.string, list(positions) if positions is not None else None, defaults)

    def params(self, values: dict[str, Any]) -> Any:
        merged = {**self.defaults, **values}
        return tuple(merged[n] for n in self.positions) if self.positions is not None else merged


def typed_key(source: SqlSource, text: str) -> records.Key:
    """A ledger key text as the source's values (JSON has no dates or decimals: those come
    back as text and are converted by the column's type, where the catalog tells it)."""
    if (number := _INT_KEY.fullmatch(text)) is not None:  # the common case, without json
        return (int(number.group(1)),)
    loaded = json.loads(text)
    out = []
    for name, value in zip(source.key, loaded, strict=True):
        info = source.info.get(name)
        py = info.python_type if info else None
        if isinstance(value, str) and py is not None and py is not str:
            try:
                if py is decimal.Decimal:
                    value = decimal.Decimal(value)
                elif py is dt.datetime:
                    value = dt.datetime.fromisoformat(value)
                elif py is dt.date:
                    value = dt.date.fromisoformat(value)
            except ValueError:
                pass
        out.append(value)
    return tuple(out)


def _keys_in(source: SqlSource, n: int) -> sa.Select[Any]:
    """`SELECT key… WHERE key IN (:k0_0, …)` for `n` keys, compiled once per run and length."""
    cols = [source.col(c) for c in source.key]
    width = len(cols)
    params: list[list[sa.BindParameter[Any]]] = [
        [sa.bindparam(f"k{i}_{j}") for j in range(width)] for i in range(n)
    ]
    cond = (
        sa.tuple_(*cols).in_([sa.tuple_(*p) for p in params])
        if width > 1
        else cols[0].in_([p[0] for p in params])
    )
    return sa.select(*cols).where(cond, *_conditions(source))


def existing(source: SqlSource, keys: Sequence[records.Key], statements: dict[int, Compiled]) -> set[str]:
    """Key texts of those `keys` the source holds (after `filter`), compared exactly
    (`statements`: the compiled lookups by number of keys, kept for the walk)."""
    found: set[str] = set()
    try:
        with source.db.engine.connect() as conn:
            for i in range(0, len(keys), 1000):
                chunk = keys[i : i + 1000]
                if len(chunk) not in statements:
                    statements[len(chunk)] = Compiled.of(_keys_in(source, len(chunk)), source.db.engine)
                stmt = statements[len(chunk)]
                params: dict[str, Any] = {
                    f"k{n}_{j}": v for n, k in enumerate(chunk) for j, v in enumerate(k)
                }
                for row in fetch(conn, stmt.sql, stmt.params(params)):
                    found.add(records.key_text(tuple(row)))
    except sa.exc.DBAPIError as exc:
        raise db_errors.transient(f"sync {source.sync}: reading the source failed", exc, "source") from None
    return found
