"""A SQLite seed read straight into Arrow record batches through the ADBC SQLite driver (C), with
no Python object per value (docs/performance.md, "The columnar seed").

ADBC infers each column's Arrow type from the values of the first batch of a query, converts
what it can and fails the stream on what it cannot (a column NULL in the whole first batch and
text later; text that is not UTF-8). So that every batch reads back exactly as the driver's
rows would (`arrow_batch.to_record_batch`'s promise):

- the query adds one column, `mapsync_mixed`, that SQLite computes per row: 1 when a value's
  storage class is not the one its declared column type promises (text in an INTEGER column,
  a number in a column without affinity). A batch with such a row is read again as rows, by
  key range, through the ordinary driver;
- an error in the stream (a type the first batch did not foresee, undecodable text) ends that
  query: the next batch is read as rows (where `sqlite_text` isolates an undecodable value into
  a record error), and a new query starts after it;
- a column of NULLs only takes the Arrow type the catalog promises; any other type than the
  promised one makes the batch rows.

`read` yields Arrow batches (without the flag column) and lists of row tuples, in key order,
each batch strictly after the last; the caller keeps no position of its own. Only the lower-level
calls of `adbc_driver_manager` are used (its DBAPI module loads much more).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import adbc_driver_manager
import adbc_driver_sqlite
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

MIXED = "mapsync_mixed"
_STORAGE = {int: "integer", str: "text", float: "real", bytes: "blob"}  # a column's promised class

Rows = tuple[list[str], Sequence[Sequence[Any]]]


def promised(types: Mapping[str, type | None], names: Sequence[str]) -> dict[str, str] | None:
    """The storage class each column promises, None when one promises none we read this way."""
    out = {}
    for name in names:
        kind = types.get(name)
        storage = _STORAGE.get(kind) if kind is not None else None
        if storage is None:
            return None
        out[name] = storage
    return out


def mixed_flag(
    columns: Mapping[str, sa.ColumnElement[Any]], storage: Mapping[str, str]
) -> sa.ColumnElement[Any]:
    """1 for a row holding a value of another storage class than its column promises."""
    tests = [sa.func.typeof(col).not_in(["null", storage[name]]) for name, col in columns.items()]
    return sa.case((sa.or_(*tests), 1), else_=0).label(MIXED)


def read(
    path: str,
    query: Callable[[Sequence[Any] | None], sa.Select[Any]],
    rows_after: Callable[[Sequence[Any] | None, Sequence[Any] | None], Rows],
    rest: Callable[[Sequence[Any] | None], Iterator[Rows]],
    key: Sequence[str],
    arrow_types: Mapping[str, pa.DataType],
    dialect: sa.Dialect,
    batch: int,
    after: Sequence[Any] | None,
) -> Iterator[pa.RecordBatch | Rows]:
    """The read: `query(after)` is the keyset select (with the `MIXED` column) strictly after
    `after`; `rows_after(after, upto)` reads the rows after `after` up to `upto` (None: one batch)
    through the driver; `rest(after)` every row after `after` through one driver cursor (where a
    new query cannot start after a key: the driver's own read never binds it again)."""
    try:
        database = adbc_driver_sqlite.connect(path)
    except (adbc_driver_manager.Error, OSError):  # the driver's read says what is wrong
        yield from rest(after)
        return
    try:
        connection = adbc_driver_manager.AdbcConnection(database)
        try:
            while True:
                failed = False
                for item in _query(connection, query(after), dialect, batch):
                    if item is None:  # the stream broke: the next batch as rows, then a new query
                        failed = True
                        break
                    last = _last_key(item, key)
                    typed = None if _mixed(item) else _typed(item.drop_columns([MIXED]), arrow_types)
                    yield typed if typed is not None else rows_after(after, last)
                    after = last
                if not failed:
                    return
                names, rows = rows_after(after, None)
                if not rows:
                    return
                last = [rows[-1][names.index(k)] for k in key]
                if not all(type(v) in _BINDABLE for v in last):
                    # a key a new query cannot start after (undecodable text binds as a blob,
                    # which sorts after every text): the rest through one driver cursor
                    yield from rest(after)
                    return
                yield names, rows
                after = last
        finally:
            connection.close()
    finally:
        database.close()


_BINDABLE = (int, str, float, bytes)


def _mixed(batch: pa.RecordBatch) -> bool:
    """Whether a row of the batch holds a value of another storage class than promised."""
    return bool(pc.max(batch.column(MIXED)).as_py())


def _last_key(batch: pa.RecordBatch, key: Sequence[str]) -> list[Any]:
    return [batch.column(k)[batch.num_rows - 1].as_py() for k in key]


def _typed(batch: pa.RecordBatch, arrow_types: Mapping[str, pa.DataType]) -> pa.RecordBatch | None:
    """The batch in the promised types (a column of NULLs cast), None when a column has another."""
    arrays = []
    for name, array in zip(batch.schema.names, batch.columns, strict=True):
        want = arrow_types[name]
        if array.type != want:
            if array.null_count != len(array):
                return None
            array = pa.nulls(len(array), want)
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _query(
    connection: adbc_driver_manager.AdbcConnection, select: sa.Select[Any], dialect: sa.Dialect, batch: int
) -> Iterator[pa.RecordBatch | None]:
    """The select's batches; None after the stream failed (nothing more comes of it)."""
    compiled = select.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    params = [compiled.params[name] for name in compiled.positiontup or []]
    statement = adbc_driver_manager.AdbcStatement(connection)
    try:
        if not all(type(p) in _BINDABLE for p in params):
            yield None  # a parameter Arrow cannot bind: that batch is read as rows
            return
        try:
            statement.set_options(**{"adbc.sqlite.query.batch_rows": str(batch)})
            statement.set_sql_query(str(compiled))
            if params:
                names = [str(i) for i in range(len(params))]
                statement.bind(pa.record_batch([pa.array([p]) for p in params], names=names))
            stream, _ = statement.execute_query()
        except (adbc_driver_manager.Error, OSError, pa.ArrowException):
            # a locked database, an error of the query: the driver's read (its busy timeout,
            # its classified errors) takes that batch
            yield None
            return
        reader = pa.RecordBatchReader._import_from_c(stream.address)
        ahead = _ReadAhead(reader)
        try:
            while True:
                try:
                    item = ahead.next()
                except StopIteration:
                    return
                except (OSError, UnicodeDecodeError, pa.ArrowException):
                    yield None
                    return
                yield item
        finally:
            ahead.close()
            reader.close()
    finally:
        statement.close()


class _ReadAhead:
    """The reader's next batch read (and validated) in a thread while the caller works on the
    one before: the driver's C read releases the GIL, so it runs on the second core. One batch
    ahead at most; the reader is used by one thread at a time, and `close` waits for a read
    under way before the reader may be closed."""

    def __init__(self, reader: pa.RecordBatchReader) -> None:
        self.reader = reader
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mapsync-read-ahead")
        self.pending: concurrent.futures.Future[pa.RecordBatch] | None = self.pool.submit(self._read)

    def _read(self) -> pa.RecordBatch:
        item = self.reader.read_next_batch()
        item.validate(full=True)  # UTF-8 of every text, offsets
        return item

    def next(self) -> pa.RecordBatch:
        """The next batch; raises what its read raised (StopIteration at the end)."""
        if self.pending is None:
            raise StopIteration
        try:
            item = self.pending.result()
        except BaseException:
            self.pending = None  # the stream is over
            raise
        self.pending = self.pool.submit(self._read)
        return item

    def close(self) -> None:
        self.pending = None
        self.pool.shutdown(wait=True)  # (waits for a read under way)
