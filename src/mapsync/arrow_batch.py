"""A read batch held as an Apache Arrow record batch (the columnar seed, docs/performance.md).

`to_record_batch` turns the driver's row tuples into Arrow columns, one `pa.array` per column.
Its types are inferred from the values, not declared, so that every Arrow value reads back
(`to_pylist`) as exactly the Python value the per-record path would have had: a batch holding
anything that would not (an int among floats, an undecodable SQLite text, a value too large for
int64, a decimal whose exponents differ, an aware time, a type Arrow has no plain form for) is
not converted (None): it goes through the per-record path as it always did. A column that is
NULL in every row of the batch has Arrow's null type.

`ArrowChanges` is the batch's `Batch.changes`: a sequence whose `Change` for row i is built
from the Arrow row only when something asks for it (the per-record path's rows of a columnar
batch: the rows a vector rule marked, a fallback). pyarrow is imported by this module only:
callers import it lazily, never at CLI start-up.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, overload

import pyarrow as pa

from mapsync import records
from mapsync.columns import ColumnInfo


def _plain(array: pa.Array, values: Sequence[Any]) -> bool:
    """Whether every value of the column reads back from Arrow as exactly the same Python value."""
    kind = array.type
    if pa.types.is_null(kind) or pa.types.is_int64(kind) or pa.types.is_string(kind):
        return True  # (Arrow infers these from ints only, texts only; a mix raises or is binary)
    # inferred for mixes too: float64 for ints or bools among floats (1 would read back 1.0),
    # binary for texts among bytes (a text would read back as bytes)
    exact = {"double": float, "bool": bool, "binary": bytes}.get(str(kind))
    if exact is not None:
        return all(v is None or type(v) is exact for v in values)
    if pa.types.is_timestamp(kind):  # naive times only: an aware one may come back in another zone
        return kind.tz is None and all(v is None or type(v) is dt.datetime for v in values)
    if pa.types.is_date32(kind):
        return all(v is None or type(v) is dt.date for v in values)
    return False


_ARROW_OF = {
    int: pa.int64(),
    str: pa.string(),
    float: pa.float64(),
    bool: pa.bool_(),
    bytes: pa.binary(),
    dt.datetime: pa.timestamp("us"),
    dt.date: pa.date32(),
}


def types_of(info: Mapping[str, ColumnInfo], names: Sequence[str]) -> dict[str, pa.DataType] | None:
    """The Arrow types the catalog promises for columns `names` (what a batch of them most
    likely holds), None when one has no plain Arrow form (a decimal, an aware time, no type)."""
    out = {}
    for name in names:
        column = info.get(name)
        kind = _ARROW_OF.get(column.python_type) if column is not None and column.python_type else None
        if kind is None or (column is not None and column.aware):
            return None
        out[name] = kind
    return out


def to_record_batch(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> pa.RecordBatch | None:
    """The rows as one Arrow record batch, or None when a column would not read back exactly."""
    if not rows:
        return None
    arrays = []
    for values in zip(*rows, strict=True):
        try:
            array = pa.array(values)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            return None  # mixed types, undecodable text, ints beyond int64, …
        if not _plain(array, values):
            return None
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, names=list(names))


class ArrowChanges(Sequence[records.Change]):
    """The upserts of one Arrow record batch, built from the Arrow rows only when asked for:
    `pick` builds a few (the rows the columnar step hands to the per-record path), any other
    access builds them all at once (a batch given back whole to the per-record step)."""

    def __init__(self, rows: pa.RecordBatch, key: Sequence[str], version_column: str | None) -> None:
        self.rows, self.key, self.version_column = rows, list(key), version_column
        self._all: list[records.Change] | None = None

    def _changes(self, rows: list[records.Row]) -> list[records.Change]:
        key, version = self.key, self.version_column
        return [
            records.Change("upsert", tuple([row[k] for k in key]), row[version] if version else None, row)
            for row in rows
        ]

    def pick(self, indices: Sequence[int]) -> list[records.Change]:
        """The changes of rows `indices`, in that order."""
        if self._all is not None:
            return [self._all[i] for i in indices]
        if not indices:
            return []
        return self._changes(self.rows.take(pa.array(indices, pa.int64())).to_pylist())

    def all(self) -> list[records.Change]:
        if self._all is None:
            self._all = self._changes(self.rows.to_pylist())
        return self._all

    def __len__(self) -> int:
        return int(self.rows.num_rows)

    @overload
    def __getitem__(self, i: int) -> records.Change: ...

    @overload
    def __getitem__(self, i: slice) -> list[records.Change]: ...

    def __getitem__(self, i: int | slice) -> records.Change | list[records.Change]:
        return self.all()[i]

    def __iter__(self) -> Iterator[records.Change]:
        return iter(self.all())
