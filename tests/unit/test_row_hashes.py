"""content_hashes equals records.content_hash of `to_pylist()`'s row, for every row of random
tables of every supported type (nulls anywhere, hostile strings, -0.0/NaN/inf, timestamps with
and without a fraction, naive and UTC, decimals at scale 2 and 10), sliced and in several
chunks; unsupported types raise TypeError naming the column."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mapsync import records, row_hashes
from mapsync.row_hashes import content_hashes
from mapsync.state import values

D = decimal.Decimal
UTC = dt.UTC
HOSTILE = ['"', "\\", '\\"', "\x00", "\x1f", "\x7f", "\n\t", "é", "😀", "\u2028", "", " ", "a/b", "<&>", "'"]


def naive(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0) -> dt.datetime:
    return dt.datetime(y, mo, d, h, mi, s, us)  # noqa: DTZ001


def _micro0(value: dt.datetime) -> dt.datetime:
    return value.replace(microsecond=0)


def _datetimes(zone: dt.tzinfo | None = None) -> st.SearchStrategy[dt.datetime]:
    base = st.datetimes(timezones=st.just(zone)) if zone is not None else st.datetimes()
    return st.one_of(base, base.map(_micro0))


STRINGS = st.one_of(
    st.text(), st.sampled_from(HOSTILE), st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126))
)


def _scaled(digits: int, places: int) -> st.SearchStrategy[decimal.Decimal]:
    """Decimals of up to `digits` digits, `places` of them fractional, built exactly from
    integers (st.decimals' bounds and Decimal.scaleb round to the context's 28 digits)."""
    return st.integers(-(10**digits) + 1, 10**digits - 1).map(lambda n: D(f"{n}E-{places}"))


DEC_10_2 = _scaled(10, 2)
DEC_38_10 = st.one_of(
    _scaled(38, 10),
    _scaled(5, 10),  # below 1e-5: str() in exponent form
)

# (Arrow type, strategy of its non-null values)
KINDS: list[tuple[pa.DataType, st.SearchStrategy[Any]]] = [
    (pa.int64(), st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-1000, 1000))),
    (pa.int32(), st.integers(-(2**31), 2**31 - 1)),
    (pa.uint64(), st.integers(0, 2**64 - 1)),
    (pa.string(), STRINGS),
    (pa.large_string(), STRINGS),
    (pa.string_view(), STRINGS),
    (pa.bool_(), st.booleans()),
    (
        pa.float64(),
        st.one_of(st.floats(), st.sampled_from([-0.0, 0.0, float("nan"), float("inf"), -float("inf")])),
    ),
    (pa.float32(), st.floats(width=32)),
    (pa.timestamp("us"), _datetimes()),
    (pa.timestamp("us", tz="UTC"), _datetimes(UTC)),
    (pa.timestamp("ms"), _datetimes().map(lambda v: v.replace(microsecond=v.microsecond // 1000 * 1000))),
    (pa.timestamp("s", tz="UTC"), _datetimes(UTC).map(_micro0)),
    (pa.timestamp("us", tz="+02:00"), _datetimes(UTC)),  # per value: the wall time in +02:00
    (pa.date32(), st.dates()),
    (pa.date64(), st.dates()),
    (pa.decimal128(10, 2), DEC_10_2),
    (pa.decimal128(38, 10), DEC_38_10),
    (pa.decimal256(40, 12), DEC_38_10),
    (pa.decimal128(5, -2), st.integers(-99999, 99999).map(lambda n: D(n).scaleb(2))),
    (pa.binary(), st.binary()),
    (pa.large_binary(), st.binary()),
    (pa.binary(3), st.binary(min_size=3, max_size=3)),
    (pa.time64("us"), st.times()),
]


@st.composite
def tables(draw: st.DrawFn) -> pa.Table:
    rows = draw(st.integers(0, 12))
    names = draw(st.lists(st.one_of(st.text(max_size=4), st.sampled_from(HOSTILE)), max_size=6, unique=True))
    columns = {}
    for name in names:
        kind, values = draw(st.sampled_from(KINDS))
        cells = draw(st.lists(st.one_of(st.none(), values), min_size=rows, max_size=rows))
        columns[name] = pa.array(cells, kind)
    table = pa.table(columns) if columns else pa.table({"x": pa.nulls(rows)}).drop_columns(["x"])
    cut = draw(st.integers(0, rows))
    shape = draw(st.sampled_from(["whole", "chunks", "slice"]))
    if shape == "chunks":  # several batches
        return pa.concat_tables([table.slice(0, cut), table.slice(cut)])
    if shape == "slice":  # arrays with an offset
        return table.slice(cut)
    return table


def expected(table: pa.Table | pa.RecordBatch) -> list[str]:
    return [records.content_hash(row) for row in table.to_pylist()]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(table=tables())
def test_every_row_hashes_as_the_per_record_path_does(table: pa.Table) -> None:
    assert content_hashes(table) == expected(table)
    for batch in table.to_batches():
        assert content_hashes(batch) == expected(batch)


def test_explicit_values() -> None:
    table = pa.table(
        {
            "b": pa.array([1, None, -(2**63), 2**63 - 1], pa.int64()),
            "a": pa.array(['x"y', None, "plain", "\x00é😀\\"], pa.string()),
            "é": pa.array([True, False, None, True]),
            "f": pa.array([1.0, float("nan"), -0.0, float("-inf")]),
            "ts": pa.array(
                [
                    naive(2026, 1, 2, 3, 4, 5),
                    None,
                    naive(1, 1, 1, 0, 0, 0, 1),
                    naive(9999, 12, 31, 23, 59, 59, 999999),
                ],
                pa.timestamp("us"),
            ),
            "tz": pa.array(
                [
                    dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                    None,
                    dt.datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=UTC),
                    dt.datetime(1970, 1, 1, tzinfo=UTC),
                ],
                pa.timestamp("us", tz="UTC"),
            ),
            "d": pa.array([dt.date(2026, 1, 2), None, dt.date(1, 1, 1), dt.date(9999, 12, 31)], pa.date32()),
            "m": pa.array([D("12.30"), None, D("0"), D("-0.5")], pa.decimal128(10, 2)),
            "m2": pa.array([D("1E-7"), None, D("0"), D("0.000001")], pa.decimal128(38, 10)),
            "bin": pa.array([b"\x00\xff", None, b"", b"ab"], pa.binary()),
            "nothing": pa.nulls(4),
        }
    )
    assert content_hashes(table) == expected(table)
    # the documented texts, spelled out for one row
    row = {"a": 'x"y', "b": 1, "m": D("12.30"), "ts": naive(2026, 1, 2, 3, 4, 5)}
    one = pa.table(
        {
            "ts": pa.array([row["ts"]], pa.timestamp("us")),
            "m": pa.array([row["m"]], pa.decimal128(10, 2)),
            "b": pa.array([1], pa.int64()),
            "a": pa.array([row["a"]]),
        }
    )
    assert (
        records.canonical_json([row, {}]) == '[{"a":"x\\"y","b":1,"m":"12.30","ts":"2026-01-02T03:04:05"},{}]'
    )
    assert content_hashes(one) == [records.content_hash(row)]


@pytest.mark.parametrize("zone", ["UTC", "Etc/UTC", "+00:00", "GMT", "+05:30", "America/New_York"])
def test_timestamps_of_any_zone(zone: str) -> None:
    moments = [
        dt.datetime(2026, 7, 1, 12, 0, tzinfo=UTC),
        dt.datetime(2026, 1, 1, 0, 0, 0, 500, tzinfo=UTC),
        None,
    ]
    table = pa.table({"t": pa.array(moments, pa.timestamp("us", tz=zone))})
    assert content_hashes(table) == expected(table)


def test_dictionary_columns_hash_as_their_values() -> None:
    table = pa.table({"s": pa.array(["a", 'b"', None, "a"]).dictionary_encode()})
    assert content_hashes(table) == expected(table)


def test_no_rows_and_no_columns() -> None:
    assert content_hashes(pa.table({"a": pa.array([], pa.int64())})) == []
    batch = pa.RecordBatch.from_pydict({"a": [1, 2]}).drop_columns(["a"])
    assert content_hashes(batch) == expected(batch) == [records.content_hash({})] * 2


@pytest.mark.parametrize(
    "array",
    [
        pa.array([[1, 2]], pa.list_(pa.int64())),
        pa.array([{"x": 1}], pa.struct([("x", pa.int64())])),
        pa.array([dt.datetime(2026, 1, 1)], pa.timestamp("ns")),  # noqa: DTZ001
        pa.array([dt.timedelta(1)], pa.duration("us")),
    ],
    ids=["list", "struct", "timestamp_ns", "duration"],
)
def test_unsupported_types_raise_naming_the_column(array: pa.Array) -> None:
    with pytest.raises(TypeError, match="'odd'"):
        content_hashes(pa.table({"ok": pa.array([1]), "odd": array}))


@pytest.mark.parametrize(
    "array",
    [
        pa.array([-(10**15) * 100], pa.timestamp("us")),  # before year 1
        pa.array([10**15 * 300], pa.timestamp("us", tz="UTC")),  # after 9999
        pa.array([2**62], pa.timestamp("s")),  # overflows microseconds
        pa.array([3_000_000], pa.date32()),  # after 9999
    ],
)
def test_times_outside_pythons_calendar_raise(array: pa.Array) -> None:
    with pytest.raises(TypeError, match="'t'"):
        content_hashes(pa.table({"t": array}))


def test_duplicate_column_names_raise() -> None:
    table = pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["a", "a"])
    with pytest.raises(TypeError, match="duplicate"):
        content_hashes(table)


KEY_VALUES = st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.text())


@given(st.lists(st.tuples(KEY_VALUES, st.integers(min_value=-(2**63), max_value=2**63 - 1)), max_size=30))
def test_key_texts_are_the_ledgers_key_texts(keys: list[tuple[Any, int]]) -> None:
    """One column (int or text) and two columns: `records.key_text` of each key."""
    first = [k[0] for k in keys]
    if all(type(v) is int for v in first) or all(type(v) is str for v in first):
        column = pa.array(first, pa.int64() if first and type(first[0]) is int else pa.string())
        assert row_hashes.key_texts([column]) == [records.key_text((v,)) for v in first]
    second = pa.array([k[1] for k in keys], pa.int64())
    assert row_hashes.key_texts([second, second]) == [records.key_text((k[1], k[1])) for k in keys]


@given(
    st.lists(st.one_of(st.none(), st.text()), max_size=30),
    st.lists(st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1)), max_size=30),
)
def test_json_texts_of_text_and_ints_are_the_ledgers_version_texts(
    texts: list[str | None], ints: list[int | None]
) -> None:
    """The columnar seed stores a text or int version's `json_texts` where the per-record commit
    stores `state.values.encode(version)`."""
    assert row_hashes.json_texts(pa.array(texts, pa.string()), "v").to_pylist() == [
        values.encode(v) for v in texts
    ]
    assert row_hashes.json_texts(pa.array(ints, pa.int64()), "v").to_pylist() == [
        values.encode(v) for v in ints
    ]


def test_key_texts_of_a_tables_chunked_columns() -> None:
    """A table's columns are chunked: text needing escapes in several chunks is patched too."""
    table = pa.Table.from_batches(
        [pa.record_batch({"k": pa.array(["Müller", 'say "hi"'])}), pa.record_batch({"k": pa.array(["o'k"])})]
    )
    assert row_hashes.key_texts([table.column("k")]) == [
        records.key_text(("Müller",)),
        records.key_text(('say "hi"',)),
        records.key_text(("o'k",)),
    ]


def test_repeated_values_that_need_escapes_are_encoded_once_each_and_placed_right() -> None:
    """A column whose escaped values repeat (names and cities with accents): each distinct value
    is encoded once and put back at every row holding it, nulls and plain values around it."""
    column = ["Müller", None, "plain", "Zoë", "Müller", '"q"', "Zoë", "plain", "😀", "Müller", None, "é"]
    other = list(range(len(column)))
    table = pa.table({"name": pa.array(column, pa.string()), "n": pa.array(other, pa.int64())})
    expected = [records.content_hash(row) for row in table.to_pylist()]
    assert content_hashes(table) == expected
    assert content_hashes(table.slice(3, 7)) == expected[3:10]
    assert len(set(expected)) == len(expected)  # every row its own hash: nothing was shifted
