"""The drift form in Python: the documented per-kind texts (NULL vs '', PAD SPACE, decimals
without trailing zeros or exponent, 6-digit fractions, UTC for timestamptz), the framing that
keeps column boundaries unambiguous, and the bucket of a dkey."""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
from typing import Any

import pytest

from mapsync.columns import ColumnInfo
from mapsync.connectors.drift_form import FORM_VERSION, DriftForm, bucket, frame, kind_of, owned_columns
from mapsync.sheet import models

D = decimal.Decimal


def col(name: str, py: type | None, type_name: str, **kw: Any) -> ColumnInfo:
    return ColumnInfo(name, py, None, True, False, kw.pop("aware", False), type_name, **kw)


COLUMNS = {
    "id": col("id", int, "INTEGER"),
    "name": col("name", str, "VARCHAR(20)"),
    "code": col("code", str, "CHAR(6)"),
    "amount": col("amount", decimal.Decimal, "NUMERIC(12, 2)", precision=12, scale=2),
    "at": col("at", dt.datetime, "TIMESTAMP(3)", fraction=3),
    "tz": col("tz", dt.datetime, "TIMESTAMP WITH TIME ZONE", aware=True),
    "day": col("day", dt.date, "DATE"),
    "flag": col("flag", bool, "BOOLEAN"),
    "blob": col("blob", bytes, "BYTEA"),
    "ratio": col("ratio", float, "DOUBLE PRECISION"),
    "doc": col("doc", dict, "JSONB"),
}


def texts(name: str, *values: Any) -> list[str | None]:
    form = DriftForm(["id"], [name], COLUMNS)
    return [form.texts({name: v}, [name])[0] for v in values]


def test_each_kind_has_its_documented_text() -> None:
    assert FORM_VERSION == 1
    assert texts("name", None, "", "a b  ") == [None, "", "a b  "]  # varchar keeps trailing spaces
    assert texts("code", "ab  ", "   ") == ["ab", ""]  # CHAR(n): PAD SPACE
    assert texts("amount", D("12.30"), D("100.00"), D("-0.00"), D("1E+3"), D("0.1"), 7) == [
        "12.3",
        "100",
        "0",
        "1000",
        "0.1",
        "7",
    ]
    assert texts("at", dt.datetime(2026, 1, 2, 3, 4, 5, 123456), dt.datetime(2026, 1, 2, 3, 4, 5)) == [  # noqa: DTZ001
        "2026-01-02 03:04:05.123000",  # the column keeps 3 digits: cut, as the write cuts it
        "2026-01-02 03:04:05.000000",
    ]
    plus2 = dt.timezone(dt.timedelta(hours=2))
    assert texts("tz", dt.datetime(2026, 1, 2, 1, 0, tzinfo=plus2)) == ["2026-01-01 23:00:00.000000"]
    assert texts("day", dt.date(2026, 3, 1)) == ["2026-03-01"]
    assert texts("flag", True, False, 1, 0) == ["1", "0", "1", "0"]
    assert texts("blob", b"\x00\xffA", b"") == ["00ff41", ""]


def test_frame_keeps_null_empty_and_separators_apart() -> None:
    assert frame([None, "", "a,b", "1:"]) == "-,0:,3:a,b,2:1:"
    assert frame([None]) != frame([""])
    assert frame(["a,1:b"]) != frame(["a", "b"])


def test_of_hashes_the_owned_columns_in_name_order_and_the_key_in_key_order() -> None:
    form = DriftForm(["id"], ["name", "amount", "ratio", "doc"], COLUMNS)
    assert form.owned == ["amount", "id", "name"]
    assert form.notes == [
        "column ratio (DOUBLE PRECISION) is not digested (drift not compared)",
        "column doc (JSONB) is not digested (drift not compared)",
    ]
    row = {"id": 5, "name": "Ann", "amount": D("3.50"), "ratio": 0.1, "doc": {}}
    dkey, digest = form.of(row)
    assert dkey == hashlib.md5(b"1:5").hexdigest()
    assert digest == hashlib.md5(b"3:3.5,1:5,3:Ann").hexdigest()
    assert form.of({**row, "ratio": 9.9})[1] == digest  # not digested
    assert form.of({**row, "amount": D("3.5")}) == (dkey, digest)  # the same stored value
    assert form.of({**row, "name": ""})[1] != form.of({**row, "name": None})[1]
    assert form.covers(row) and not form.covers({"id": 5, "name": "Ann"})


def test_the_digest_holds_the_key_even_when_the_owned_columns_leave_it_out() -> None:
    # the drift walk's bucket number is the digest's first 15 hex digits (no md5 of dkey||digest):
    # rows with other keys and the same other columns must have other digests
    form = DriftForm(["id", "code"], ["name"], COLUMNS)
    assert form.owned == ["code", "id", "name"]
    digests = {form.of({"id": i, "code": c, "name": "Ann"})[1] for i in (1, 2) for c in ("a", "b")}
    assert len(digests) == 4


def test_a_key_that_cannot_be_digested_is_refused() -> None:
    with pytest.raises(ValueError, match=r"key column 'ratio' \(DOUBLE PRECISION\) cannot be digested"):
        DriftForm(["ratio"], [], COLUMNS)


def test_kinds_from_the_catalog() -> None:
    assert kind_of(col("c", str, "CHAR(3)")) == "char"
    assert kind_of(col("c", str, "CHARACTER VARYING(3)")) == "text"
    assert kind_of(col("c", int, "TINYINT")) == "int"
    assert kind_of(col("c", None, "GEOMETRY")) is None


def test_bucket_is_the_first_eight_hex_digits_modulo() -> None:
    assert bucket("0000000a" + "f" * 24, 4) == 2
    assert bucket("ffffffff" + "0" * 24, 4096) == 0xFFFFFFFF % 4096


def test_owned_columns_are_the_key_and_the_fields() -> None:
    cfg = models.SyncConfig.model_validate(
        {
            "from": {"connection": "a", "table": "t"},
            "to": {"connection": "b", "table": "u"},
            "key": {"from": "id", "to": "ref"},
            "fields": {"name": "nm", "ref": "id"},
            "changes": {"method": "full"},
        }
    )
    assert owned_columns(cfg) == ["ref", "name"]
