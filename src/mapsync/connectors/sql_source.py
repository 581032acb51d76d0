"""SqlSource: reads a table or query in keyset order, streamed with a server-side cursor."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Generator, Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from mapsync import db_errors, errors, records
from mapsync.connectors.sql import ColumnInfo, SqlDatabase, chunked, key_in, quoted
from mapsync.ports import Capabilities
from mapsync.sheet import models
from mapsync.sql_time import parse_time as parse_time  # its home is sql_time
from mapsync.sql_time import text_floor, utc_exact, utc_floor, utc_text, zone_name


class SqlSource:
    """The source side of one sync (and of its child tables)."""

    # the snapshot's row hash is computed by PostgreSQL and MariaDB (SQLite: by Python, over
    # the row text the database builds)
    capabilities = Capabilities(children=True, read_back=True, server_side_hashing=True, columnar_read=True)

    def __init__(
        self, db: SqlDatabase, sync_name: str, cfg: models.SyncConfig, ts_column: str | None
    ) -> None:
        self.db = db
        self.sync = sync_name
        self.columnar = False  # set by the engine (run_columnar.plan): the seed then reads Arrow
        self.key = list(cfg.key.from_)
        self.ts_column = ts_column
        self.filter = cfg.filter
        where = f"sync {sync_name}: from"
        needed = set(self.key) | {f.from_ for f in cfg.fields.values() if f.from_}
        if ts_column:
            needed.add(ts_column)
        self.relation, self.info = self._relation(cfg.from_, needed, where)
        self.columns = sorted(needed, key=lambda c: (c not in self.key, c))
        self.children = {name: _Child(db, sync_name, name, child) for name, child in cfg.children.items()}

    def _relation(
        self, ref: models.SourceRef, needed: set[str], where: str
    ) -> tuple[sa.FromClause, dict[str, ColumnInfo]]:
        if ref.table is not None:
            table = self.db.table(ref.table, f"{where}.table")
            info = self.db.columns(table)
            available = list(info)
            relation: sa.FromClause = sa.table(
                table.name, *[sa.column(quoted(c)) for c in available], schema=table.schema
            )
        else:
            assert ref.query is not None
            available = self.db.query_columns(ref.query, f"{where}.query")
            info = {}
            relation = sa.text(ref.query).columns(*[sa.column(quoted(c)) for c in available]).subquery("src")
        missing = sorted(needed - set(available))
        if missing:
            raise errors.ConfigError(
                f"sync {self.sync}: source has no column(s) {', '.join(repr(m) for m in missing)} "
                f"(available: {', '.join(available)})"
            )
        return relation, info

    # ----------------------------------------------------------------- reading

    def col(self, name: str) -> sa.ColumnElement[Any]:
        return self.relation.c[name]

    def stream(
        self,
        order: Sequence[str | sa.ColumnElement[Any]],
        where: Sequence[sa.ColumnElement[bool] | sa.TextClause],
        after: Sequence[Any] | None,
        batch: int,
        extra_where: str | None = None,
    ) -> Iterator[list[records.Row]]:
        """Rows in `order`, strictly after the keyset `after`, in lists of `batch` rows.

        The tie-break is compared in SQL (`(a, b) > (:a, :b)`), so it follows the column's
        collation exactly as ORDER BY does. One server-side cursor streams the whole read.
        """
        with contextlib.closing(self._fetch(self._select(order, where, after, extra_where), batch)) as read:
            for names, rows in read:  # closed with this generator: the cursor goes at once
                yield [dict(zip(names, r, strict=False)) for r in rows]  # same length: no check

    def stream_tuples(
        self, order: Sequence[str], after: Sequence[Any] | None, batch: int, extra_where: str | None = None
    ) -> Iterator[tuple[list[str], Sequence[Sequence[Any]]]]:
        """`stream` as the driver returns the rows: (column names, row tuples) per batch, no dict
        per row (the columnar seed turns each batch into Arrow columns)."""
        with contextlib.closing(self._fetch(self._select(order, [], after, extra_where), batch)) as read:
            yield from read

    def stream_arrow(
        self, after: Sequence[Any] | None, batch: int, extra_where: str | None = None
    ) -> Iterator[Any] | None:
        """The seed read in key order as Arrow record batches read by the ADBC SQLite driver, or
        as (names, row tuples) where a batch has no exact Arrow form (connectors/sqlite_arrow.py);
        None where this source is not read so (not a SQLite file, no driver, a column whose
        declared type promises no plain storage class)."""
        path = self.db.engine.url.database
        if self.db.dialect != "sqlite" or not path or path == ":memory:" or self.db.engine.url.query:
            return None
        try:
            from mapsync.connectors import sqlite_arrow
        except ImportError:  # the ADBC driver is not installed: the driver's rows, made Arrow
            return None
        from mapsync import arrow_batch

        storage = sqlite_arrow.promised(
            {c: self.info[c].python_type for c in self.columns if c in self.info}, self.columns
        )
        arrow_types = arrow_batch.types_of(self.info, self.columns)
        if storage is None or arrow_types is None:
            return None
        flag = sqlite_arrow.mixed_flag({c: self.col(c) for c in self.columns}, storage)
        ordered = [self.col(c) for c in self.key]

        def query(after: Sequence[Any] | None) -> sa.Select[Any]:
            return self._select(self.key, [], after, extra_where).add_columns(flag)

        def rows_after(
            after: Sequence[Any] | None, upto: Sequence[Any] | None
        ) -> tuple[list[str], list[Any]]:
            select = self._select(self.key, [], after, extra_where)
            if upto is None:
                select = select.limit(batch)
            else:
                select = select.where(sa.tuple_(*ordered) <= sa.tuple_(*[sa.literal(v) for v in upto]))
            rows: list[Any] = []
            with contextlib.closing(self._fetch(select, batch)) as read:
                for _, part in read:  # the columns in `self.columns` order
                    rows += part
            return list(self.columns), rows

        def rest(after: Sequence[Any] | None) -> Iterator[tuple[list[str], Sequence[Sequence[Any]]]]:
            return self.stream_tuples(self.key, after, batch, extra_where)

        return sqlite_arrow.read(
            path, query, rows_after, rest, self.key, arrow_types, self.db.engine.dialect, batch, after
        )

    def _select(
        self,
        order: Sequence[str | sa.ColumnElement[Any]],
        where: Sequence[sa.ColumnElement[bool] | sa.TextClause],
        after: Sequence[Any] | None,
        extra_where: str | None,
    ) -> sa.Select[Any]:
        conditions: list[Any] = list(where)
        ordered = [self.col(c) if isinstance(c, str) else c for c in order]  # names or expressions
        if self.filter:
            conditions.append(sa.text(f"({self.filter})"))
        if extra_where:
            conditions.append(sa.text(f"({extra_where})"))
        if after is not None:
            conditions.append(sa.tuple_(*ordered) > sa.tuple_(*[sa.literal(v) for v in after]))
        return sa.select(*[self.col(c) for c in self.columns]).where(*conditions).order_by(*ordered)

    def _fetch(
        self, query: sa.Select[Any], batch: int
    ) -> Generator[tuple[list[str], Sequence[Sequence[Any]]]]:
        """One server-side cursor over `query`: (names, rows) per `batch` rows; a driver error
        becomes the source's transient failure. SQLite's cursor steps lazily by itself, and
        stream_results there would only add SQLAlchemy's row-by-row buffer."""
        streaming: dict[str, Any] = (
            {"stream_results": True, "max_row_buffer": batch}
            if self.db.engine.dialect.supports_server_side_cursors
            else {}
        )
        abandoned = False
        try:
            with self.db.engine.connect().execution_options(**streaming) as conn:
                result = conn.execute(query)
                names = list(result.keys())
                while True:
                    rows = result.fetchmany(batch)
                    if not rows:
                        break
                    try:
                        yield names, rows
                    except GeneratorExit:
                        abandoned = True
                        raise
        except sa.exc.DBAPIError as exc:
            if abandoned:  # the run already failed (e.g. its calls were cut): nothing more to say
                return
            raise db_errors.transient(f"sync {self.sync}: reading the source failed", exc, "source") from None

    def count(self, extra_where: str | None = None, where: Sequence[sa.ColumnElement[bool]] = ()) -> int:
        conditions: list[Any] = [sa.text(f"({w})") for w in (self.filter, extra_where) if w] + list(where)
        with self.db.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(self.relation).where(*conditions)
                ).scalar_one()
            )

    def key_of(self, row: records.Row) -> records.Key:
        key = self.key
        return (row[key[0]],) if len(key) == 1 else tuple([row[k] for k in key])

    def read_keys(self, keys: Sequence[records.Key]) -> list[records.Row]:
        """Current rows for these keys (one query per 500 keys); missing keys are absent."""
        return list(self.rows_by_key(keys))

    def rows_by_key(
        self,
        keys: Sequence[records.Key],
        *,
        select: Sequence[Any] | None = None,
        where: Sequence[Any] = (),
        locked: sa.Connection | None = None,
    ) -> Iterator[records.Row]:
        """Rows for these keys, one query per 500 keys: the sync's columns (or `select`), with
        any extra `where` conditions (the capture methods add the sync's `filter`). `locked`:
        read on this connection's transaction, `FOR UPDATE` where the database has it."""
        cols = [self.col(c) for c in self.key]
        chosen = list(select) if select is not None else [self.col(c) for c in self.columns]
        with _on(self.db, locked) as conn:
            for chunk in chunked(keys):
                query = sa.select(*chosen).where(key_in(cols, chunk), *where)
                for row in conn.execute(_locking(query, locked)).mappings():
                    yield dict(row)

    def attach_children(
        self, rows: list[records.Row], locked: sa.Connection | None = None
    ) -> dict[records.Key, dict[str, list[records.Row]]]:
        """Child rows of these parents, one query per child table (`locked`: read on this
        connection's transaction, `FOR UPDATE` where the database has it)."""
        out: dict[records.Key, dict[str, list[records.Row]]] = {self.key_of(r): {} for r in rows}
        for name, child in self.children.items():
            for parent_key, child_rows in child.fetch(list(out), locked).items():
                out[parent_key][name] = child_rows
            for parent in out.values():
                parent.setdefault(name, [])
        return out

    # ----------------------------------------------------------------- time bounds

    def ts_info(self) -> ColumnInfo | None:
        return self.info.get(self.ts_column) if self.ts_column else None

    def ts_expr(self, zone: dt.tzinfo) -> sa.ColumnElement[Any]:
        """The cursor column as the watermark compares and orders it. SQLite keeps time as text
        in mixed forms (`T` or space, fractions, `Z`, `+02:00`, none): there every value is
        turned into fixed-width UTC text first (naive ones read in `zone`), see sql_time."""
        assert self.ts_column is not None
        col = self.col(self.ts_column)
        if self.db.dialect == "sqlite":
            return sa.func.mapsync_utc(col, sa.literal(zone_name(zone)), type_=sa.String)
        return col

    def ts_since(self, bound: Any, zone: dt.tzinfo) -> list[sa.ColumnElement[bool]]:
        """Index-friendly conditions implied by `ts_expr(zone) >= bound`, to add to it, so a
        read runs `mapsync_utc` only over the rows near or after the bound (see `since_text`)."""
        if self.db.dialect != "sqlite" or bound is None:
            return []
        assert self.ts_column is not None
        return [since_text(self.col(self.ts_column), bound, utc_naive=zone_name(zone) == "UTC")]

    def ts_value(self, value: Any, zone: dt.tzinfo) -> Any:
        """A row's cursor value in the form `ts_expr` compares (for positions and watermarks)."""
        if self.db.dialect == "sqlite" and value is not None:
            return utc_text(value, zone)
        return value

    def ts_bound(self, moment: Any, zone: dt.tzinfo, *, lower: bool, sample: Any = None) -> Any:
        """A bound for the cursor column, in the form `ts_expr` compares (on SQLite fixed-width
        UTC text, so `…:02`, `…:02.000000` and `…:02Z` compare as the same instant)."""
        if isinstance(moment, str):
            moment = parse_time(moment)
        if self.db.dialect == "sqlite":
            return utc_text(moment, zone)
        info = self.ts_info()
        aware = info.aware if info else isinstance(sample, dt.datetime) and sample.tzinfo is not None
        if moment.tzinfo is not None and not aware:
            moment = moment.astimezone(zone).replace(tzinfo=None)
        elif moment.tzinfo is None and aware:
            moment = moment.replace(tzinfo=zone).astimezone(dt.UTC)
        if self.db.dialect == "mysql" and moment.tzinfo is not None:
            moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
        return moment


def since_text(col: sa.ColumnElement[Any], bound: Any, *, utc_naive: bool) -> sa.ColumnElement[bool]:
    """A condition on SQLite's stored time text that every row at or after the instant `bound`
    meets (`mapsync_utc(col) >= bound` implies it), and that an index on the column can use.

    Every form `mapsync_utc` reads begins with its local date and time (`T` or space between
    them, and `T` sorts after the space), and no offset reaches 24 hours: so the text of such a
    row is at or after `text_floor(bound)` (the bound minus 24 hours). Text in UTC, with `Z` or
    naive in a column whose zone is UTC, is at or after the bound itself cut to the second
    (`utc_floor`), and in the space form with a `.` fraction at or after the bound's own text
    (`utc_exact`), and so is text with a `+` offset (its local time is ahead of UTC): only rows
    with a `-` offset or in another zone need the 24 hours, so the rows changed since the day
    before, or earlier in the bound's second (busy tables stamp thousands in one), are not all
    converted on every read. Text that begins with whitespace (which the parse skips) always
    passes."""
    raw = sa.type_coerce(col, sa.String)
    near = raw >= text_floor(bound)
    if utc_naive:
        utc = raw >= (second := utc_floor(bound))
        if (exact := utc_exact(bound)) is not None:
            # within the bound's own second: the space form with a `.` fraction only from the
            # bound's fraction on (`utc_exact`), the second's other spellings (no fraction, a
            # comma, a zone name; `T` sorts after them all) as before
            utc = sa.or_(raw >= exact, sa.and_(utc, raw < second + "."))
        # a `-HH:MM` offset (a third `-` after the date's two): its local text is up to a day
        # behind its UTC time. A `+` offset's local text is ahead of it: `utc` holds for it.
        # (GLOB on the whole text costs a quarter of `substr(…) GLOB '*[+-]*'` a row, and it
        # runs for every row the index range of the day before holds.)
        near = sa.and_(near, sa.or_(utc, raw.op("GLOB")("*-*-*-*")))
    return sa.or_(near, raw < "0")


class _Child:
    def __init__(self, db: SqlDatabase, sync: str, name: str, cfg: models.ChildSync) -> None:
        assert cfg.from_.table is not None or cfg.from_.query is not None
        self.db = db
        self.parent = list(cfg.parent.from_)
        self.key = list(cfg.key.from_)
        needed = set(self.parent) | set(self.key) | {f.from_ for f in cfg.fields.values() if f.from_}
        where = f"sync {sync}: children.{name}.from"
        if cfg.from_.table is None:
            raise errors.ConfigError(f"{where}: child rows must come from a `table`")
        table = db.table(cfg.from_.table, f"{where}.table")
        missing = sorted(needed - {c.name for c in table.columns})
        if missing:
            raise errors.ConfigError(f"{where}: child table has no column(s) {', '.join(missing)}")
        self.relation = sa.table(
            table.name, *[sa.column(quoted(c)) for c in sorted(needed)], schema=table.schema
        )
        self.columns = sorted(needed)

    def fetch(
        self, parents: list[records.Key], locked: sa.Connection | None = None
    ) -> dict[records.Key, list[records.Row]]:
        out: dict[records.Key, list[records.Row]] = {}
        cols = [self.relation.c[c] for c in self.parent]
        with _on(self.db, locked) as conn:
            for chunk in chunked(parents):
                query = (
                    sa.select(*[self.relation.c[c] for c in self.columns])
                    .where(key_in(cols, chunk))
                    .order_by(*[self.relation.c[c] for c in self.key])
                )
                for row in conn.execute(_locking(query, locked)).mappings():
                    out.setdefault(tuple(row[c] for c in self.parent), []).append(dict(row))
        return out


def _on(db: SqlDatabase, locked: sa.Connection | None) -> contextlib.AbstractContextManager[sa.Connection]:
    """The given connection (its transaction goes on), or a new one closed after the read."""
    return contextlib.nullcontext(locked) if locked is not None else db.engine.connect()


def _locking(query: sa.Select[Any], locked: sa.Connection | None) -> sa.Select[Any]:
    """`FOR UPDATE` on a read in a locking transaction (SQLite's is `BEGIN IMMEDIATE`)."""
    return query.with_for_update() if locked is not None and locked.dialect.name != "sqlite" else query
