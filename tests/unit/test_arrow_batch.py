"""A read batch made Arrow (arrow_batch.py): it is Arrow only when every value reads back as
exactly the driver's value (same type, same value); otherwise it stays rows (None)."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from mapsync import arrow_batch
from mapsync.connectors.sqlite_text import Undecodable

VALUES = st.one_of(
    st.none(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.booleans(),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.datetimes(timezones=st.one_of(st.none(), st.just(dt.UTC))),
    st.dates(),
    st.decimals(allow_nan=False, allow_infinity=False, places=2),
)


@given(st.lists(st.lists(VALUES, min_size=2, max_size=2), min_size=1, max_size=6))
def test_a_batch_is_arrow_only_where_it_reads_back_exactly(rows: list[list[Any]]) -> None:
    batch = arrow_batch.to_record_batch(["a", "b"], rows)
    if batch is None:
        return  # rows: always allowed
    back = batch.to_pylist()
    assert [[r["a"], r["b"]] for r in back] == rows
    assert [[type(r["a"]), type(r["b"])] for r in back] == [[type(v) for v in row] for row in rows]


def test_mixes_that_arrow_would_convert_stay_rows() -> None:
    for column in (
        [1, 2.5],  # float64: 1 would read back 1.0
        [1.5, True],  # float64: True would read back 1.0
        ["a", b"a"],  # binary: the text would read back as bytes
        [decimal.Decimal("1.5"), decimal.Decimal("1.50")],  # one scale for both
        [dt.datetime(2024, 1, 1, tzinfo=dt.UTC)],  # an aware time may come back in another zone
        [Undecodable(b"\xff")],  # SQLite text that is not UTF-8
        [2**63],  # beyond int64
    ):
        assert arrow_batch.to_record_batch(["c"], [(v,) for v in column]) is None, column


def test_plain_columns_are_arrow() -> None:
    batch = arrow_batch.to_record_batch(["i", "s", "n"], [(1, "a", None), (2, None, None)])
    assert batch is not None
    assert batch.schema.types == [pa.int64(), pa.string(), pa.null()]
