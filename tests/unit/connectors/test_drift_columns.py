"""drift_pairs equals DriftForm.of_written of `to_pylist()`'s row, for every row of random tables
against forms of varchar, char(n), bigint, integer, boolean, numeric(10,2), timestamp (6 and 0
fraction digits, and with a zone for naive times), timestamptz, date and bytea columns: natural
Arrow types (vectorised) and mismatched ones (per value, unreadable values → None), nulls
anywhere, sliced and chunked tables, a missing column."""

from __future__ import annotations

import datetime as dt
import decimal
import zoneinfo
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mapsync.columns import ColumnInfo
from mapsync.connectors.drift_columns import drift_pairs
from mapsync.connectors.drift_form import DriftForm

D = decimal.Decimal
UTC = dt.UTC


def col(name: str, py: type | None, type_name: str, **kw: Any) -> ColumnInfo:
    return ColumnInfo(name, py, None, True, False, kw.pop("aware", False), type_name, **kw)


COLUMNS = {
    "id": col("id", int, "BIGINT"),
    "n": col("n", int, "INTEGER"),
    "name": col("name", str, "VARCHAR(20)"),
    "code": col("code", str, "CHAR(6)"),
    "flag": col("flag", bool, "BOOLEAN"),
    "amount": col("amount", D, "NUMERIC(10, 2)", precision=10, scale=2),
    "num": col("num", D, "NUMERIC"),  # no scale: not rounded
    "big": col("big", D, "NUMERIC(38, 0)", precision=38, scale=0),
    "at": col("at", dt.datetime, "TIMESTAMP"),  # 6 digits, no zone: not fitted
    "at0": col("at0", dt.datetime, "TIMESTAMP(0)", fraction=0),
    "atz": col("atz", dt.datetime, "TIMESTAMP", time_zone=zoneinfo.ZoneInfo("Europe/Berlin")),
    "tz": col("tz", dt.datetime, "TIMESTAMP WITH TIME ZONE", aware=True),
    "day": col("day", dt.date, "DATE"),
    "blob": col("blob", bytes, "BYTEA"),
}
HOSTILE = ["", " ", "a  ", "  a", "é😀 ", "\x00", '"\\', "1,2:3", "-", "0:", "\t "]
STRINGS = st.one_of(st.text(), st.sampled_from(HOSTILE))
# years 2 to 9998: a fitted column's zone shift stays in Python's calendar (else the fitter
# raises RecordRejected, which of_written lets through)
NAIVE = st.datetimes(min_value=dt.datetime(2, 1, 1), max_value=dt.datetime(9998, 12, 31))  # noqa: DTZ001
AWARE = st.datetimes(
    min_value=dt.datetime(2, 1, 1),  # noqa: DTZ001
    max_value=dt.datetime(9998, 12, 31),  # noqa: DTZ001
    timezones=st.just(UTC),
)


def _whole(value: dt.datetime) -> dt.datetime:
    return value.replace(microsecond=0)


def _ms(value: dt.datetime) -> dt.datetime:
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


TIMES: list[tuple[pa.DataType, st.SearchStrategy[Any]]] = [
    (pa.timestamp("us"), st.one_of(NAIVE, NAIVE.map(_whole))),
    (pa.timestamp("us", tz="UTC"), st.one_of(AWARE, AWARE.map(_whole))),
    (pa.timestamp("ms"), NAIVE.map(_ms)),
    (pa.timestamp("s", tz="UTC"), AWARE.map(_whole)),
    (pa.timestamp("us", tz="America/New_York"), AWARE),
    (pa.date32(), st.dates()),  # not a datetime: unreadable
    (pa.string(), st.sampled_from(["2026-01-02 03:04:05", "junk"])),  # unreadable
]
# per column: (Arrow type, values) — natural types first, then mismatched ones
TYPES: dict[str, list[tuple[pa.DataType, st.SearchStrategy[Any]]]] = {
    "id": [
        (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
        (pa.uint64(), st.integers(0, 2**64 - 1)),
        (pa.bool_(), st.booleans()),
        (pa.float64(), st.floats()),  # NaN, inf: unreadable
        (pa.string(), st.sampled_from(["12", " 7 ", "x", "1.5", ""])),
    ],
    "n": [(pa.int32(), st.integers(-(2**31), 2**31 - 1)), (pa.int8(), st.integers(-128, 127))],
    "name": [
        (pa.string(), STRINGS),
        (pa.large_string(), STRINGS),
        (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
        (pa.decimal128(10, 2), st.decimals(-1000, 1000, places=2)),
    ],
    "code": [(pa.string(), STRINGS), (pa.string_view(), STRINGS), (pa.bool_(), st.booleans())],
    "flag": [(pa.bool_(), st.booleans()), (pa.int64(), st.integers(-5, 5)), (pa.string(), STRINGS)],
    "amount": [
        (pa.decimal128(10, 2), st.decimals(D("-99999999.99"), D("99999999.99"), places=2)),
        (pa.decimal128(38, 10), st.decimals(-(10**6), 10**6, places=10)),
        (
            pa.decimal128(38, 2),
            st.integers(-(10**32), 10**32).map(lambda n: D(f"{n}E-2")),
        ),  # quantize overflows past 28 digits
        (pa.decimal128(12, 0), st.integers(-(10**12) + 1, 10**12 - 1).map(D)),
        (pa.decimal128(12, 4), st.decimals(-(10**7), 10**7, places=4)),  # rounded half up: per value
        (pa.float64(), st.floats()),
        (pa.string(), st.sampled_from(["1.005", "x", "-0.00", "1e3"])),
        (pa.int64(), st.integers(-(10**9), 10**9)),
    ],
    "num": [
        (pa.decimal128(12, 4), st.decimals(-(10**7), 10**7, places=4)),
        (pa.decimal128(38, 10), st.decimals(-(10**6), 10**6, places=10)),
        (pa.decimal128(5, -2), st.integers(-99999, 99999).map(lambda n: D(n).scaleb(2))),
    ],
    "big": [
        (
            pa.decimal128(38, 0),
            st.one_of(st.integers(-(10**38) + 1, 10**38 - 1), st.integers(-100, 100)).map(D),
        ),
        (pa.decimal128(20, 0), st.integers(-(10**20) + 1, 10**20 - 1).map(D)),
        (
            pa.decimal128(38, 2),
            st.integers(-(10**32), 10**32).map(lambda n: D(f"{n}E-2")),
        ),  # rounded: per value
    ],
    "at": TIMES,
    "at0": TIMES,
    "atz": TIMES,
    "tz": TIMES,
    "day": [
        (pa.date32(), st.dates()),
        (pa.date64(), st.dates()),
        (pa.timestamp("us"), NAIVE),
        (pa.string(), st.sampled_from(["2026-01-02", "x"])),
    ],
    "blob": [(pa.binary(), st.binary()), (pa.large_binary(), st.binary()), (pa.string(), STRINGS)],
}


@st.composite
def cases(draw: st.DrawFn) -> tuple[DriftForm, pa.Table]:
    names = list(COLUMNS)
    key = draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True))
    owned = draw(st.lists(st.sampled_from(names), max_size=8, unique=True))
    form = DriftForm(key, owned, COLUMNS)
    rows = draw(st.integers(0, 10))
    present = [n for n in dict.fromkeys([*key, *owned]) if draw(st.integers(0, 30))]  # rarely one missing
    columns = {}
    for name in present:
        kind, values = draw(st.sampled_from(TYPES[name]))
        cells = draw(st.lists(st.one_of(st.none(), values), min_size=rows, max_size=rows))
        columns[name] = pa.array(cells, kind)
    if draw(st.booleans()):  # a column the form does not read
        columns["extra"] = pa.array(["x"] * rows)
    table = pa.table(columns) if columns else pa.table({"x": pa.nulls(rows)})
    cut = draw(st.integers(0, rows))
    shape = draw(st.sampled_from(["whole", "chunks", "slice"]))
    if shape == "chunks":
        return form, pa.concat_tables([table.slice(0, cut), table.slice(cut)])
    if shape == "slice":
        return form, table.slice(cut)
    return form, table


def expected(form: DriftForm, table: pa.Table | pa.RecordBatch) -> list[tuple[str, str] | None]:
    return [form.of_written(row) for row in table.to_pylist()]


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(case=cases())
def test_every_row_digests_as_of_written(case: tuple[DriftForm, pa.Table]) -> None:
    form, table = case
    assert drift_pairs(form, table) == expected(form, table)
    for batch in table.to_batches():
        assert drift_pairs(form, batch) == expected(form, batch)


def naive(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0) -> dt.datetime:
    return dt.datetime(y, mo, d, h, mi, s, us)  # noqa: DTZ001


def test_explicit_rows() -> None:
    form = DriftForm(
        ["id"], ["name", "code", "flag", "amount", "at", "at0", "tz", "day", "blob", "n"], COLUMNS
    )
    table = pa.table(
        {
            "id": pa.array([1, 2, -(2**63)], pa.int64()),
            "n": pa.array([None, 5, 0], pa.int32()),
            "name": pa.array(["a b  ", "", None]),
            "code": pa.array(["ab  ", "   ", "é😀 "]),
            "flag": pa.array([True, False, None]),
            "amount": pa.array([D("12.30"), D("100.00"), D("-0.00")], pa.decimal128(10, 2)),
            "at": pa.array(
                [naive(2026, 1, 2, 3, 4, 5), naive(2026, 1, 2, 3, 4, 5, 7), None], pa.timestamp("us")
            ),
            "at0": pa.array([naive(2026, 1, 2, 3, 4, 5, 999999), None, naive(1, 1, 1)], pa.timestamp("us")),
            "tz": pa.array(
                [dt.datetime(2026, 7, 1, 12, tzinfo=UTC), None, dt.datetime(1970, 1, 1, tzinfo=UTC)],
                pa.timestamp("us", tz="Asia/Tokyo"),
            ),
            "day": pa.array([dt.date(2026, 1, 2), dt.date(1, 1, 1), None], pa.date32()),
            "blob": pa.array([b"\x00\xff", b"", None], pa.binary()),
        }
    )
    assert drift_pairs(form, table) == expected(form, table)
    # the documented form, spelled out for the first row's digest columns
    texts = form.texts(table.to_pylist()[0], ["code", "at", "flag"])
    assert texts == ["ab", "2026-01-02 03:04:05.000000", "1"]


def test_unreadable_values_and_missing_columns_give_none() -> None:
    form = DriftForm(["id"], ["amount", "at"], COLUMNS)
    table = pa.table(
        {
            "id": pa.array(["1", "x", "3"]),  # int("x"): ValueError
            "amount": pa.array(["1.5", "2", "nope"]),  # InvalidOperation (ArithmeticError)
            "at": pa.array([naive(2026, 1, 1)] * 3, pa.timestamp("us")),
        }
    )
    pairs = drift_pairs(form, table)
    assert pairs == expected(form, table)
    assert pairs[0] is not None and pairs[1] is None and pairs[2] is None
    assert drift_pairs(form, table.drop_columns(["at"])) == [None, None, None]
    # numeric(10, 2) from decimal128(38, 2): a value of more than 28 digits cannot be quantized
    # (InvalidOperation), a smaller one can
    wide = table.set_column(
        1,
        "amount",
        pa.array([D("123456789012345678901234567890.12"), D("-1.50"), None], pa.decimal128(38, 2)),
    ).set_column(0, "id", pa.array([1, 2, 3]))
    assert drift_pairs(form, wide) == expected(form, wide)
    assert [p is None for p in drift_pairs(form, wide)] == [True, False, False]
    assert drift_pairs(form, table.slice(3)) == []


@pytest.mark.parametrize(
    "array",
    [
        pa.array([-(10**15) * 100, 0], pa.timestamp("us")),  # before year 1
        pa.array([10**15 * 300, 0], pa.timestamp("us", tz="UTC")),  # after 9999
        pa.array([2**62, 0], pa.timestamp("s")),  # overflows microseconds
    ],
)
def test_times_outside_pythons_calendar_give_none(array: pa.Array) -> None:
    form = DriftForm(["id"], ["at"], COLUMNS)
    table = pa.table({"id": pa.array([1, 2]), "at": array})
    pairs = drift_pairs(form, table)
    assert pairs[0] is None
    assert pairs[1] == form.of_written({"id": 2, "at": naive(1970, 1, 1)})


def test_dictionary_columns_digest_as_their_values() -> None:
    form = DriftForm(["code"], ["name"], COLUMNS)
    table = pa.table(
        {
            "code": pa.array(["a ", "b", None, "a "]).dictionary_encode(),
            "name": pa.array(["x", None, "y", "z"]),
        }
    )
    assert drift_pairs(form, table) == expected(form, table)
