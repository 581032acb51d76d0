"""Content hashes of a whole Arrow batch at once: `records.content_hash` of every row, column-wise.

The key ledger stores, per key, `content_hash(values)`: blake2b (16 bytes, hex) of
`canonical_json([values, {}])` — JSON with sorted keys, no spaces, ASCII only, datetimes as
`isoformat()`, decimals as `str()`, bytes as hex, each of the last three quoted. The columnar
path (issue 20) keeps that hash, v1, exactly: it builds the same JSON text, byte for byte, but
a column at a time with pyarrow.compute, then runs one blake2b per row over the joined buffer.
Ledger entries written by either path therefore compare equal — a key seeded columnar and
later changed through the per-record path (or the reverse) is seen unchanged when it is, and
no ledger migration, no re-send of every row, is needed. (A faster hash, "v2", would have
meant exactly that migration.)

Sorted keys make the text a fixed frame: `[{"a":` value `,"b":` value … `},{}]`, the keys
JSON-encoded once. Each column becomes an array of JSON texts, nulls `null`:

- integers (signed, unsigned): cast to text; booleans `true`/`false` — vectorised
- strings: the common value (printable ASCII without `"` or `\\`) is quoted as it is,
  vectorised; every other value (escapes, control characters, non-ASCII, which
  `ensure_ascii` writes as `\\uXXXX`) is encoded per value by `records.canonical_json`
- timestamps (s, ms, us; naive, or a UTC zone): `isoformat()` — `T`, no fraction when the
  microsecond is 0 and 6 digits otherwise, `+00:00` for UTC — vectorised; another zone's
  values per value (`to_pylist`'s datetime in that zone, `isoformat()`)
- dates: date32 `YYYY-MM-DD`, vectorised; date64 per value
- decimals (128, 256): `str(Decimal)` of the value `to_pylist` gives (`Decimal('12.30')`: the
  column's scale kept; `0E-10`, `1.000E-7` below 1e-6 at scale 10; `1.230E+5` at a negative
  scale): Arrow's decimal text follows the same rule, vectorised
- binary (binary, large_binary, fixed_size_binary): lowercase hex of the data buffer at once
- floats: per value (`float.__repr__`, `NaN`, `Infinity`: Arrow's float text differs,
  `1` for `1.0`)
- time32/time64[us]: per value (`isoformat()`); an all-null column: `null`

Every other type (nanosecond timestamps and times, durations, lists, structs, maps,
dictionaries of those, extension types, values outside Python's calendar) raises TypeError
naming the column: the caller hands that batch to the per-record path. Duplicate column names
raise too (`to_pylist` would keep the last one).

Base layer: imports only `mapsync.records` and pyarrow.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
from collections.abc import Callable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from mapsync import records

_TEXT = pa.large_string()  # every piece is large_string: a joined batch may pass 2 GiB
_NULL = pa.scalar("null", _TEXT)
_QUOTE = pa.scalar('"', _TEXT)
# a value that needs no escape: printable ASCII without `"` and `\` (RE2 class of the rest)
_NEEDS_ESCAPE = r"[^ !#-\[\]-~]"
# zones whose offset is always 0: `isoformat()` ends in `+00:00`
_UTC_NAMES = frozenset({"UTC", "Etc/UTC", "+00:00", "GMT", "Etc/GMT", "UCT", "Etc/UCT", "Universal", "Zulu"})
# Python's datetime range in microseconds since the epoch
_MIN_US = (dt.datetime(1, 1, 1) - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1)  # noqa: DTZ001
_MAX_US = (dt.datetime(9999, 12, 31, 23, 59, 59, 999999) - dt.datetime(1970, 1, 1)) // dt.timedelta(  # noqa: DTZ001
    microseconds=1
)
_MIN_DAY, _MAX_DAY = _MIN_US // 86_400_000_000, _MAX_US // 86_400_000_000


def content_hashes(table: pa.Table | pa.RecordBatch) -> list[str]:
    """`records.content_hash(row)` of every row (as `table.to_pylist()` gives it, no children),
    in row order. Raises TypeError naming a column whose type is not supported."""
    names = table.schema.names
    if len(set(names)) != len(names):
        raise TypeError(
            f"content_hashes: duplicate column names {sorted(n for n in names if names.count(n) > 1)}"
        )
    batches = table.to_batches() if isinstance(table, pa.Table) else [table]
    out: list[str] = []
    for batch in batches:
        if batch.num_rows:
            out.extend(_hash_texts(row_texts(batch)))
    return out


def key_texts(columns: Sequence[pa.Array]) -> list[str]:
    """`records.key_text(key)` of every row of the key columns (`canonical_json(list(key))`):
    the key ledger's and the record errors' key text. Raises TypeError as `content_hashes`."""
    parts: list[pa.Array | pa.Scalar] = [pa.scalar("[", _TEXT)]
    for n, column in enumerate(columns):
        if n:
            parts.append(pa.scalar(",", _TEXT))
        parts.append(json_texts(column, f"key {n}"))
    parts.append(pa.scalar("]", _TEXT))
    texts: list[str] = pc.binary_join_element_wise(*parts, pa.scalar("", _TEXT)).to_pylist()
    return texts


def row_texts(batch: pa.RecordBatch) -> pa.Array:
    """`canonical_json([row, {}])` of every row of `batch`, as one large_string array."""
    order = sorted(range(batch.num_columns), key=lambda i: batch.schema.names[i])
    if not order:
        return pa.array(["[{},{}]"] * batch.num_rows, _TEXT)
    parts: list[pa.Array | pa.Scalar] = []
    for n, i in enumerate(order):
        name = batch.schema.names[i]
        prefix = ("[{" if n == 0 else ",") + records.canonical_json(name) + ":"
        parts.extend((pa.scalar(prefix, _TEXT), json_texts(batch.column(i), name)))
    parts.append(pa.scalar("},{}]", _TEXT))
    return pc.binary_join_element_wise(*parts, pa.scalar("", _TEXT))


def json_texts(array: pa.Array, name: str) -> pa.Array:
    """The JSON text of every value of one column (large_string, no nulls: `null`)."""
    if isinstance(array, pa.ChunkedArray):  # a table's column
        array = array.combine_chunks()
    kind = array.type
    if pa.types.is_dictionary(kind):
        array, kind = array.dictionary_decode(), kind.value_type
    encode = _encoder(kind)
    if encode is None:
        raise TypeError(f"content_hashes: column {name!r} has type {kind}, which is not supported")
    texts = encode(array, name)
    return pc.fill_null(texts, _NULL) if texts.null_count else texts


def _encoder(kind: pa.DataType) -> Callable[[pa.Array, str], pa.Array] | None:
    if pa.types.is_integer(kind):
        return _cast_text
    if pa.types.is_boolean(kind):
        return _bool
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return _string
    if pa.types.is_timestamp(kind) and kind.unit != "ns":
        return _timestamp
    if pa.types.is_date(kind):
        return _date
    if pa.types.is_decimal(kind):
        return _decimal
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
        return _binary
    if pa.types.is_floating(kind):
        return _float
    if pa.types.is_time(kind) and kind.unit != "ns":
        return _per_value
    if pa.types.is_null(kind):
        return lambda array, _: pa.nulls(len(array), _TEXT)
    return None


def _cast_text(array: pa.Array, _: str) -> pa.Array:
    return pc.cast(array, _TEXT)


def _bool(array: pa.Array, _: str) -> pa.Array:
    return pc.if_else(array, pa.scalar("true", _TEXT), pa.scalar("false", _TEXT))


def _per_value(array: pa.Array, name: str) -> pa.Array:
    """`canonical_json` of each value as `to_pylist` gives it (the reference, value by value)."""
    try:
        values = array.to_pylist()
    except (ValueError, OverflowError) as exc:  # a value outside Python's range
        raise TypeError(f"content_hashes: column {name!r} holds a value Python cannot read ({exc})") from None
    return pa.array([None if v is None else records.canonical_json(v) for v in values], _TEXT)


# the JSON encoder's texts of the non-finite floats (`float.__repr__` of every other one)
_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _float(array: pa.Array, _: str) -> pa.Array:
    """`float.__repr__` of each value, as the JSON encoder writes a float (per value: Arrow's
    shortest text differs, `1` for `1.0`, `1e-7` for `1e-07`)."""
    texts = [None if v is None else repr(v) for v in array.to_pylist()]
    if not pc.all(pc.is_finite(array)).as_py():  # a NaN or an infinity (all-null: None)
        texts = [_NON_FINITE.get(t, t) if t is not None else None for t in texts]
    return pa.array(texts, _TEXT)


def _quoted(texts: pa.Array) -> pa.Array:
    if texts.type != _TEXT:
        texts = pc.cast(texts, _TEXT)
    return pc.binary_join_element_wise(_QUOTE, texts, _QUOTE, pa.scalar("", _TEXT))


def _patched(texts: pa.Array, slow: pa.Array, source: pa.Array, name: str) -> pa.Array:
    """`texts` with the rows where `slow` is true encoded per value from `source`."""
    slow = pc.fill_null(slow, False)
    if not pc.any(slow).as_py():
        return texts
    picked = pc.filter(source, slow)
    distinct = pc.unique(picked)
    if len(distinct) == len(picked):
        return pc.replace_with_mask(texts, slow, _per_value(picked, name))
    # repeated values (names, cities with accents): each distinct one encoded once
    encoded = _per_value(distinct, name).take(pc.index_in(picked, value_set=distinct))
    return pc.replace_with_mask(texts, slow, encoded)


def _string(array: pa.Array, name: str) -> pa.Array:
    texts = pc.cast(array, _TEXT)  # string_view has no regex kernel
    return _patched(_quoted(texts), pc.match_substring_regex(texts, _NEEDS_ESCAPE), texts, name)


def _timestamp(array: pa.Array, name: str) -> pa.Array:
    kind = array.type
    if kind.tz is not None and kind.tz not in _UTC_NAMES:
        return _per_value(array, name)
    micros = array.view(pa.int64())
    if kind.unit != "us":  # s, ms: exact in microseconds (checked for overflow)
        scale = {"s": 1_000_000, "ms": 1_000}[kind.unit]
        try:
            micros = pc.multiply_checked(micros, scale)
        except pa.ArrowInvalid:
            raise TypeError(f"content_hashes: column {name!r} holds a time outside Python's range") from None
    _check_range(micros, _MIN_US, _MAX_US, name)
    naive = micros.view(pa.timestamp("us"))
    text = pc.cast(naive, _TEXT)  # `YYYY-MM-DD HH:MM:SS.ffffff`
    whole = pc.equal(pc.utf8_slice_codeunits(text, 20, 26), pa.scalar("000000", _TEXT))
    text = pc.if_else(whole, pc.utf8_slice_codeunits(text, 0, 19), text)
    text = pc.utf8_replace_slice(text, 10, 11, "T")
    parts = [_QUOTE, text, pa.scalar('+00:00"' if kind.tz is not None else '"', _TEXT)]
    return pc.binary_join_element_wise(*parts, pa.scalar("", _TEXT))


def _check_range(values: pa.Array, low: int, high: int, name: str) -> None:
    bounds = pc.min_max(values)
    least, most = bounds["min"].as_py(), bounds["max"].as_py()
    if least is not None and (least < low or most > high):
        raise TypeError(f"content_hashes: column {name!r} holds a time outside Python's range")


def _date(array: pa.Array, name: str) -> pa.Array:
    if pa.types.is_date64(array.type):  # milliseconds: a value may hold a time of day
        return _per_value(array, name)
    _check_range(array.view(pa.int32()), _MIN_DAY, _MAX_DAY, name)
    return _quoted(pc.cast(array, _TEXT))


def _decimal(array: pa.Array, _: str) -> pa.Array:
    # Arrow's decimal text is str(Decimal)'s, exponent form included (an adjusted exponent
    # below -6: `0E-10`, `1.000E-7`; a negative scale: `1.230E+5`); the tests hold them to it
    return _quoted(pc.cast(array, _TEXT))


def _binary(array: pa.Array, _: str) -> pa.Array:
    """Lowercase hex of every value, quoted: the data buffer hexed at once (the hex of joined
    bytes is the joined hexes; each offset doubles)."""
    if not pa.types.is_large_binary(array.type):
        array = pc.cast(array, pa.large_binary())
    validity, offset_buffer, data = array.buffers()
    # offsets from the buffer's start, so the array's own offset and validity bitmap still apply
    count = array.offset + len(array) + 1
    offsets = pa.Array.from_buffers(pa.int64(), count, [None, offset_buffer])
    start, end = offsets[0].as_py(), offsets[count - 1].as_py()
    hexed = pa.py_buffer(data[start:end].to_pybytes().hex().encode() if data is not None else b"")
    doubled = pc.multiply(pc.subtract(offsets, start), 2)
    texts = pa.Array.from_buffers(
        _TEXT, len(array), [validity, doubled.buffers()[1], hexed], offset=array.offset
    )
    return _quoted(texts)


def _hash_texts(texts: pa.Array) -> list[str]:
    """blake2b (16 bytes, hex) of every text: one loop over the joined buffer."""
    _, offsets, data = texts.buffers()
    bounds = memoryview(offsets).cast("q")[texts.offset : texts.offset + len(texts) + 1].tolist()
    view = memoryview(data if data is not None else b"")
    blake2b = hashlib.blake2b
    return [blake2b(view[a:b], digest_size=16).hexdigest() for a, b in itertools.pairwise(bounds)]
