"""The drift digest of a whole Arrow batch at once: `DriftForm.of_written` of every row, column-wise.

The ledger stores, per written row, `(dkey, digest)`: md5 hex of the drift form's text
(connectors/drift_form.py, FORM_VERSION 1) over the key columns in key order and over the
owned columns in sorted order. The columnar path (issue 20) computes the very same text, but a
column at a time with pyarrow.compute — each column's text by its kind, framed
`<char length>:<text>` (NULL `-`), the columns joined with `,` — then one md5 per row over the
joined buffer. The form stays the documented v1, the one PostgreSQL and MariaDB compute
server-side, so a drift check compares the destination with entries written by either path,
and nothing stored needs to change.

Vectorised, where the Arrow type is the kind's natural one:

- text: string columns as they are; char (PAD SPACE): trailing spaces removed
- int and bool kinds: integer columns as decimal digits, boolean columns `1`/`0`
- decimal: decimal columns of a scale of 0 to 6, not above the column's, whose rounding to
  the column's scale cannot pass the decimal context's precision: plain digits without
  trailing fractional zeros (Arrow's text, trimmed)
- date: date32 columns `YYYY-MM-DD`
- timestamp: timestamp columns (s, ms, us; naive, or any zone: shown in UTC) as
  `YYYY-MM-DD HH:MM:SS.ffffff`, only where the column's `time_fitter` is the identity (a
  naive column with 6 fraction digits and no zone for naive times: `ColumnForm.fitted` false)

Every other (kind, type) pair — decimals to be rounded, binary, uuid, time, a fitted timestamp column,
date64, an int column of text, … — takes the form's own converter per value, on the value
`to_pylist` gives. A row holding a value the converter cannot read (what `of_written` catches)
gets None, as `of_written` returns; so does every row when the batch lacks a digested column,
and a row holding a value Python cannot hold at all (a time outside years 1–9999).
"""

from __future__ import annotations

import decimal
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mapsync.connectors.drift_form import MD5, UNREADABLE, ColumnForm, DriftForm
from mapsync.connectors.drift_sql import NULL, SEP

_TEXT = pa.large_string()
_EMPTY = pa.scalar("", _TEXT)
_COLON = pa.scalar(":", _TEXT)
_NULL = pa.scalar(NULL, _TEXT)
_SEP = pa.scalar(SEP, _TEXT)
_MIN_US, _MAX_US = -62_135_596_800_000_000, 253_402_300_799_999_999  # years 1 and 9999, in µs
_MIN_DAY, _MAX_DAY = -719_162, 2_932_896
# `12.30` → `12.3`, `100.00` → `100`, `0.00` → `0` (casts.plain_decimal; Arrow has no `-0`)
_TRAILING_ZEROS = r"(\.[0-9]*[1-9])0+$|\.0+$"

Pairs = list[tuple[str, str] | None]


def drift_pairs(form: DriftForm, table: pa.Table | pa.RecordBatch) -> Pairs:
    """`form.of_written(row)` of every row (as `table.to_pylist()` gives it), in row order."""
    batches = table.to_batches() if isinstance(table, pa.Table) else [table]
    out: Pairs = []
    for batch in batches:
        if batch.num_rows:
            out.extend(_batch_pairs(form, batch))
    return out


def _batch_pairs(form: DriftForm, batch: pa.RecordBatch) -> Pairs:
    index = {
        name: i for i, name in enumerate(batch.schema.names)
    }  # the last of a repeated name, as to_pylist
    names = list(dict.fromkeys([*form.key, *form.owned]))
    if any(n not in index for n in names):  # of_written: KeyError for every row
        return [None] * batch.num_rows
    bad: list[int] = []
    framed = {n: _framed(form.column_form(n), batch.column(index[n]), bad) for n in names}
    dkeys = _md5s(_joined([framed[n] for n in form.key], batch.num_rows))
    digests = _md5s(_joined([framed[n] for n in form.owned], batch.num_rows))
    pairs: Pairs = list(zip(dkeys, digests, strict=True))
    for row in bad:
        pairs[row] = None
    return pairs


def _framed(column: ColumnForm, array: pa.Array, bad: list[int]) -> pa.Array:
    """`<length>:<text>` of every value (NULL `-`), as large_string; appends to `bad` the rows
    whose value the form cannot read."""
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    texts = _vector_texts(column, array)
    if texts is None:
        return _per_value(column.convert, array, bad)
    lengths = pc.cast(pc.utf8_length(texts), _TEXT)
    framed = pc.binary_join_element_wise(lengths, _COLON, texts, _EMPTY)
    return pc.fill_null(framed, _NULL) if framed.null_count else framed


def _vector_texts(column: ColumnForm, array: pa.Array) -> pa.Array | None:
    """The texts of a column whose Arrow type is its kind's natural one (nulls stay null), or
    None: the form's converter takes it per value."""
    kind, arrow = column.kind, array.type
    if kind in ("text", "char") and (
        pa.types.is_string(arrow) or pa.types.is_large_string(arrow) or pa.types.is_string_view(arrow)
    ):
        texts = pc.cast(array, _TEXT)
        return pc.utf8_rtrim(texts, characters=" ") if kind == "char" else texts
    if kind in ("int", "bool"):
        if pa.types.is_integer(arrow):
            return pc.cast(array, _TEXT)
        if pa.types.is_boolean(arrow):
            return pc.if_else(array, pa.scalar("1", _TEXT), pa.scalar("0", _TEXT))
    if kind == "decimal" and pa.types.is_decimal(arrow) and _unrounded(arrow, column.scale):
        # Arrow's text is plain at a scale of 0 to 6; the trailing fractional zeros and `.` go
        return pc.replace_substring_regex(pc.cast(array, _TEXT), pattern=_TRAILING_ZEROS, replacement=r"\1")
    if kind == "date" and pa.types.is_date32(arrow) and _within(array.view(pa.int32()), _MIN_DAY, _MAX_DAY):
        return pc.cast(array, _TEXT)
    # a fitted column's fit leaves a naive time as it is unless it cuts fraction digits
    unfitted = not column.fitted or (pa.types.is_timestamp(arrow) and arrow.tz is None and not column.cuts)
    if kind == "timestamp" and pa.types.is_timestamp(arrow) and arrow.unit != "ns" and unfitted:
        return _timestamps(array)
    return None


def _unrounded(arrow: pa.DataType, scale: int | None) -> bool:
    """Whether the form's decimal text of every value of a decimal column is its plain digits:
    Arrow writes them without an exponent (a scale of 0 to 6), rounding to the column's scale
    changes nothing (the Arrow scale is not above it) and `quantize` cannot overflow the
    context's precision (it raises InvalidOperation there: the row is unreadable)."""
    if not 0 <= arrow.scale <= 6:
        return False
    if scale is None:
        return True
    return bool(arrow.scale <= scale and arrow.precision - arrow.scale + scale <= decimal.getcontext().prec)


def _timestamps(array: pa.Array) -> pa.Array | None:
    """`YYYY-MM-DD HH:MM:SS.ffffff` of the UTC (or naive) values: Arrow's own text of a naive
    microsecond timestamp. None when a value is outside Python's calendar."""
    micros = array.view(pa.int64())
    if array.type.unit != "us":
        try:
            micros = pc.multiply_checked(micros, 1_000_000 if array.type.unit == "s" else 1_000)
        except pa.ArrowInvalid:
            return None
    if not _within(micros, _MIN_US, _MAX_US):
        return None
    return pc.cast(micros.view(pa.timestamp("us")), _TEXT)


def _within(values: pa.Array, low: int, high: int) -> bool:
    bounds = pc.min_max(values)
    least, most = bounds["min"].as_py(), bounds["max"].as_py()
    return least is None or (least >= low and most <= high)


def _per_value(convert: Callable[[Any], str], array: pa.Array, bad: list[int]) -> pa.Array:
    """The framed text of each value by the form's converter (as `DriftForm.of` frames it)."""
    try:
        values = array.to_pylist()
    except (ValueError, OverflowError):  # a value Python cannot hold: read one by one
        values = [_as_py(scalar) for scalar in array]
    out: list[str] = []
    for row, value in enumerate(values):
        if value is None:
            out.append(NULL)
            continue
        try:
            if type(value) is _Unreadable:
                raise ValueError("a value Python cannot hold")
            text = convert(value)
        except UNREADABLE:
            bad.append(row)
            out.append(NULL)
            continue
        out.append(f"{len(text)}:{text}")
    return pa.array(out, _TEXT)


class _Unreadable:
    """A value `as_py` could not make: its row's pair is None."""


def _as_py(scalar: pa.Scalar) -> Any:
    try:
        return scalar.as_py()
    except (ValueError, OverflowError):
        return _Unreadable()


def _joined(columns: Sequence[pa.Array], rows: int) -> pa.Array:
    if not columns:
        return pa.array([""] * rows, _TEXT)
    return pc.binary_join_element_wise(*columns, _SEP)


def _md5s(texts: pa.Array) -> list[str]:
    """md5 hex of every text: one loop over the joined buffer."""
    _, offsets, data = texts.buffers()
    bounds = memoryview(offsets).cast("q")[texts.offset : texts.offset + len(texts) + 1].tolist()
    view = memoryview(data if data is not None else b"")
    md5 = MD5
    return [md5(view[a:b], usedforsecurity=False).hexdigest() for a, b in itertools.pairwise(bounds)]
