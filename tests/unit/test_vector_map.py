"""vector_map: every row the columnar path marks ok equals the per-record path's values (same
Python types), every row the per-record path rejects is not ok, counters over ok rows equal;
syncs with a rule that has no vector form compile to None."""

from __future__ import annotations

import datetime as dt
import decimal
import sys
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mapsync import mapping, transforms, vector_map
from mapsync.columns import ColumnInfo
from mapsync.errors import RecordRejected
from mapsync.sheet import models

_PY = {"str": str, "int": int, "float": float, "bool": bool, "datetime": dt.datetime, "date": dt.date}


def col(
    kind: str | None = "str",
    length: int | None = None,
    *,
    nullable: bool = True,
    nul: bool = False,
    allowed: tuple[str, ...] | None = None,
    zone: dt.tzinfo | None = None,
    fraction: int | None = None,
    precision: int | None = None,
    scale: int | None = None,
) -> ColumnInfo:
    py = decimal.Decimal if kind == "decimal" else _PY.get(kind or "")
    return ColumnInfo(
        "c",
        py,
        length,
        nullable,
        False,
        False,
        (kind or "json").upper(),
        precision,
        scale,
        nul,
        allowed,
        zone,
        fraction,
    )


def sync(fields: dict[str, Any], on_null: str = "send", **more: Any) -> models.SyncConfig:
    return models.SyncConfig.model_validate(
        {
            "from": {"connection": "erp", "table": "src"},
            "to": {"connection": "portal", "table": "dst"},
            "key": {"from": "id", "to": "ref"},
            "fields": fields,
            "changes": {"method": "full"},
            "on_null": on_null,
            **more,
        }
    )


KEY = {"ref": col("int", nullable=False)}


def same(got: dict[str, Any], want: dict[str, Any]) -> bool:
    """Equal names in the same order, equal values of identical types (repr: int vs bool,
    Decimal exponents, naive vs aware)."""
    shown = lambda row: [(k, type(v), repr(v)) for k, v in row.items()]  # noqa: E731
    return shown(got) == shown(want)


def check(
    cfg: models.SyncConfig, columns: dict[str, ColumnInfo], rb: pa.RecordBatch, *, whole: bool = False
) -> vector_map.VectorOut:
    """The contract, row by row, against mapping.RowMapping; returns the vector output.
    `whole`: also every row the per-record path maps is ok (no needless fallback)."""
    source = {f.name: f.type for f in rb.schema}
    vm = vector_map.compile_vector(cfg, columns, source)
    assert vm is not None
    out = vm.apply(rb)
    assert out.ok.null_count == 0 and len(out.ok) == rb.num_rows == out.table.num_rows
    rows = mapping.RowMapping(cfg.fields, cfg.key, columns, cfg.on_null)
    total = transforms.Tally()
    ok = out.ok.to_pylist()
    for i in range(rb.num_rows):
        row = rb.slice(i, 1).to_pylist()[0]
        tally = transforms.Tally()
        try:
            want = rows.values(row, tally)
        except RecordRejected:
            assert not ok[i], f"row {i} {row!r}: rejected per record, ok in the vector form"
            continue
        if not ok[i]:
            assert not whole, f"row {i} {row!r}: mapped per record, not ok in the vector form"
            continue
        got = out.table.slice(i, 1).to_pylist()[0]
        assert same(got, want), f"row {i} {row!r}: {got!r} != {want!r}"
        for counter in ("truncated", "defaulted", "kept"):
            getattr(total, counter).update(getattr(tally, counter))
    assert out.truncated == dict(+total.truncated)
    assert out.defaulted == dict(+total.defaulted)
    assert out.kept == dict(+total.kept)
    return out


def batch(columns: dict[str, tuple[pa.DataType, list[Any]]]) -> pa.RecordBatch:
    n = len(next(iter(columns.values()))[1])
    arrays = {"id": pa.array(range(n), pa.int64())}
    arrays.update({name: pa.array(values, kind) for name, (kind, values) in columns.items()})
    return pa.RecordBatch.from_pydict(arrays)


# --------------------------------------------------------------------------- strategies

_HOSTILE = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "a\x00b",
        "ß",
        "ǆ",
        "İ",
        "\u00a0",
        "\u3000",
        "\x1c",
        "\t",
        "é",
        "😀",
        "A",
        "I",
        "1",
        "-7",
    ]
)
TEXT = st.one_of(
    st.none(),
    _HOSTILE,
    st.text(st.characters(codec="utf-8"), max_size=12),
    st.lists(_HOSTILE | st.sampled_from("abcAZ 09"), max_size=12).map("".join),
)
INTS = st.one_of(st.none(), st.integers(-3, 12), st.integers(-(2**63), 2**63 - 1))
INT64_EDGES = ["9223372036854775807", "9223372036854775808", "-9223372036854775808", "-9223372036854775809"]
DIGITS = st.integers(-(10**19), 10**19).map(str) | st.sampled_from([*INT64_EDGES, "0" * 19, "-0", "007"])


@st.composite
def time_texts(draw: st.DrawFn) -> str | None:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.none() | st.text(max_size=25))
    y = draw(st.integers(0, 9999) | st.sampled_from([0, 1, 1970, 2024, 9999]))
    parts = [draw(st.integers(0, 13)), draw(st.integers(0, 32)), draw(st.integers(0, 25))]
    m, s = draw(st.integers(0, 61)), draw(st.integers(0, 61))
    sep = draw(st.sampled_from(["T", " ", "T", " ", "t", "_"]))
    text = f"{y:04d}-{parts[0]:02d}-{parts[1]:02d}{sep}{parts[2]:02d}:{m:02d}:{s:02d}"
    if draw(st.booleans()):
        text += "." + draw(st.text("0123456789", min_size=0, max_size=9))
    return text + draw(st.sampled_from(["", "", "", "Z", "+02:00", "-0530", " ", "x"]))


@st.composite
def plausible_times(draw: st.DrawFn) -> str:
    """Valid texts, so that most rows are ok."""
    moment = draw(st.datetimes(dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59)))  # noqa: DTZ001
    text = moment.isoformat(sep=draw(st.sampled_from(["T", " "])), timespec="seconds")
    digits = draw(st.integers(0, 6))
    return text + ("." + f"{moment.microsecond:06d}"[:digits] if digits else "")


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- properties


@SETTINGS
@given(st.lists(st.tuples(TEXT, INTS, DIGITS | TEXT), min_size=1, max_size=30), st.booleans())
def test_copies_and_the_destination_check(rows: list[tuple[Any, ...]], nul: bool) -> None:
    cfg = sync(
        {
            "name": "name",
            "loose": "name",
            "n": "n",
            "n_text": "n",
            "parsed": "digits",
            "flag": "flag",
            "n_dflt": {"from": "n", "default": 5},
            "absent": {"from": "missing", "default": "x"},
            "absent_too": "missing",
        }
    )
    columns = {
        "name": col("str", 8, nullable=False, nul=nul),
        "loose": col(None),
        "n": col("int"),
        "n_text": col("str", 5),
        "parsed": col("int"),
        "flag": col("int"),
        "n_dflt": col("int", nullable=False),
        "absent": col("str"),
        "absent_too": col("date"),
        **KEY,
    }
    rb = batch(
        {
            "name": (pa.string(), [r[0] for r in rows]),
            "n": (pa.int64(), [r[1] for r in rows]),
            "digits": (pa.large_string(), [r[2] for r in rows]),
            "flag": (pa.bool_(), [None if r[1] is None else r[1] % 2 == 0 for r in rows]),
        }
    )
    check(cfg, columns, rb)


@SETTINGS
@given(
    st.lists(st.tuples(TEXT | st.sampled_from(["A", "I", "S", "1"]), INTS), min_size=1, max_size=30),
    st.sampled_from(["reject", "default", "keep"]),
)
def test_value_maps(rows: list[tuple[Any, ...]], unknown: str) -> None:
    text_map = {"A": "active", "I": "inactive", "S": "suspended-long", "1": None}
    int_map = {"1": 10, "2": 20, "-3": 30}
    extra = {"map_default": "?"} if unknown == "default" else {}
    cfg = sync(
        {
            "status": {"from": "st", "map": text_map, "on_unknown": unknown, **extra},
            "code": {"from": "n", "map": int_map, "on_unknown": unknown}
            | ({"map_default": -1} if unknown == "default" else {}),
            "short": {"from": "st", "map": text_map, "on_unknown": unknown, "truncate": 3, **extra},
        }
    )
    columns = {"status": col("str", 10, nul=True), "code": col("int"), "short": col("str"), **KEY}
    rb = batch({"st": (pa.string(), [r[0] for r in rows]), "n": (pa.int64(), [r[1] for r in rows])})
    check(cfg, columns, rb)


TEXT_RULES = [
    ({"truncate": 3}, col("str", nul=True), True),
    ({"truncate": 2}, col("str", nullable=False), True),
    ({"truncate": "auto"}, col("str", 4), True),
    ({"trim": True}, col("str", 6), True),
    ({"trim": True, "truncate": 1}, col("str", 1, nullable=False), True),
    ({"case": "upper"}, col("str"), False),  # text beyond ASCII: left to the per-record path
    ({"case": "lower", "trim": True}, col("str", 4), False),
    ({"required": True}, col("str"), True),
    ({"required": True, "trim": True}, col("str"), True),
    ({"default": "none"}, col("str", 5), True),
    ({"on_null": "default", "default": ""}, col(None), True),
    ({"on_null": "reject"}, col("str"), True),
    ({}, col("str", allowed=("A", "é", "", "ß", "\x00")), True),
    ({}, col(None, 3, nul=True), True),
    ({}, None, True),
]


@pytest.mark.parametrize(("rule", "column", "whole"), TEXT_RULES)
@SETTINGS
@given(values=st.lists(TEXT, min_size=1, max_size=30))
def test_text_rules(values: list[Any], rule: dict[str, Any], column: ColumnInfo | None, whole: bool) -> None:
    cfg = sync({"f": {"from": "t", **rule}})
    columns = {"f": column, **KEY} if column is not None else {}
    check(cfg, columns, batch({"t": (pa.string(), values)}), whole=whole)


@pytest.mark.parametrize("on_null", ["default", "reject"])
@SETTINGS
@given(values=st.lists(TEXT, min_size=1, max_size=30))
def test_the_syncs_on_null(values: list[Any], on_null: str) -> None:
    cfg = sync({"f": "t", "g": {"from": "t", "on_null": "send"}, "h": {"from": "t", "default": "d"}}, on_null)
    check(cfg, {}, batch({"t": (pa.string(), values)}), whole=True)


@SETTINGS
@given(
    st.lists(time_texts() | plausible_times(), min_size=1, max_size=30),
    st.sampled_from([None, 0, 3, 6]),
    st.sampled_from([None, dt.UTC, dt.timezone(dt.timedelta(hours=2))]),
)
def test_text_into_timestamps(values: list[Any], fraction: int | None, zone: dt.tzinfo | None) -> None:
    cfg = sync({"at": "t", "when": "stamp"})
    columns = {
        "at": col("datetime", fraction=fraction, zone=zone),
        "when": col("datetime", fraction=fraction),
        **KEY,
    }
    stamps = [
        None if v is None or len(v) % 5 == 0 else dt.datetime(2024, 1, 2, 3, 4, 5, len(v) * 12345 % 10**6)  # noqa: DTZ001
        for v in values
    ]
    check(cfg, columns, batch({"t": (pa.string(), values), "stamp": (pa.timestamp("us"), stamps)}))


@SETTINGS
@given(st.lists(INTS, min_size=1, max_size=30), st.integers(1, 20), st.integers(0, 4))
def test_ints_into_numeric_and_float_columns(values: list[Any], precision: int, scale: int) -> None:
    cfg = sync({"amount": "n", "ratio": "n", "kind": "n"})
    if precision <= scale:
        precision = scale + 1
    columns = {
        "amount": col("decimal", precision=precision, scale=scale),
        "ratio": col("float"),
        "kind": col("str", allowed=("1", "2", "x")),
        **KEY,
    }
    check(
        cfg,
        columns,
        batch({"n": (pa.int32(), [v if v is None or -(2**31) <= v < 2**31 else 7 for v in values])}),
    )
    check(cfg, columns, batch({"n": (pa.int64(), values)}))


@SETTINGS
@given(
    st.lists(
        st.tuples(st.none() | st.floats(), st.none() | st.booleans(), st.none() | st.dates()), max_size=20
    )
)
def test_other_source_types(rows: list[tuple[Any, ...]]) -> None:
    cfg = sync({"x": "x", "x32": "x32", "b": "b", "d": "d", "at": "at", "at_s": "at"})
    columns = {
        "x": col("float"),
        "x32": col(None),
        "b": col("bool", nullable=False),
        "d": col("date"),
        "at": col("datetime", fraction=2),
        "at_s": col("datetime", fraction=0),
        **KEY,
    }
    stamps = [None if d is None else dt.datetime(d.year, d.month, d.day, 1, 2, 3, 45678) for _, _, d in rows]  # noqa: DTZ001
    rb = batch(
        {
            "x": (pa.float64(), [r[0] for r in rows]),
            "x32": (pa.float32(), [r[0] if r[0] is None or abs(r[0]) < 1e30 else 1.5 for r in rows]),
            "b": (pa.bool_(), [r[1] for r in rows]),
            "d": (pa.date32(), [r[2] for r in rows]),
            "at": (pa.timestamp("ms"), stamps),
        }
    )
    check(cfg, columns, rb, whole=True)


@SETTINGS
@given(st.lists(st.none() | st.integers(-(10**18) + 1, 10**18 - 1).map(str), max_size=20))
def test_digit_text_into_an_int_column_is_vectorised_whole(values: list[Any]) -> None:
    cfg = sync({"n": "t", "m": {"from": "t", "map": {"1": "one"}, "on_unknown": "keep"}})
    check(cfg, {"n": col("int"), "m": col("str"), **KEY}, batch({"t": (pa.string(), values)}), whole=True)


def test_time_texts_at_the_edges() -> None:
    """Each text is mapped per record or rejected; the vector form takes only the exact forms."""
    texts = {
        "2024-01-02T03:04:05": True,
        "2024-01-02 03:04:05.5": True,
        "0001-01-01 00:00:00.000001": True,
        "0999-12-31 23:59:59.999999": True,
        "9999-12-31T23:59:59": True,
        "0000-01-01T00:00:00": False,  # Python has no year 0
        "2024-02-30 01:02:03": False,
        "2023-02-29 01:02:03": False,
        "2024-01-02T24:00:00": False,
        "2024-01-02T03:04:60": False,
        "2024-01-02T03:04:05.": False,
        "2024-01-02T03:04:05.1234567": False,  # mapped per record (cut to 6 digits): not ours
        "2024-01-02t03:04:05": False,
        " 2024-01-02T03:04:05": False,
        "2024-01-02T03:04:05Z": False,
        "2024-01-02T03:04:05+02:00": False,
        "２０２４-01-02T03:04:05": False,
        "2024-01-02": False,
    }
    cfg = sync({"at": "t"})
    out = check(cfg, {"at": col("datetime", fraction=3), **KEY}, batch({"t": (pa.string(), list(texts))}))
    assert dict(zip(texts, out.ok.to_pylist(), strict=True)) == texts


def test_mixed_types_after_a_map_are_not_ok() -> None:
    """`keep` hands an unmapped text on where the map gives ints: such rows are left to the
    per-record path (one field's column holds one type)."""
    cfg = sync({"code": {"from": "t", "map": {"A": 1, "B": 2}, "on_unknown": "keep"}})
    out = check(cfg, {}, batch({"t": (pa.string(), ["A", "x", None, "B"])}))
    assert out.ok.to_pylist() == [True, False, True, True]
    assert [out.table.column("code")[i].as_py() for i in (0, 2, 3)] == [1, None, 2]
    assert out.kept == {}  # the kept row is counted by the per-record path


def test_constants_and_defaults() -> None:
    cfg = sync(
        {
            "system": {"value": "erp-system"},
            "cut": {"value": "erp-system", "truncate": 3},
            "number": {"value": 7},
            "flag": {"value": True},
            "fallback": {"default": "x"},
            "nothing": {"value": None},
            "when": {"value": "2024-01-02 03:04:05.123456"},
        }
    )
    columns = {
        "system": col("str"),
        "cut": col("str"),
        "number": col("int"),
        "flag": col("bool"),
        "fallback": col("str"),
        "nothing": col("int"),
        "when": col("datetime", fraction=3),
        **KEY,
    }
    out = check(cfg, columns, batch({"x": (pa.int64(), [1, 2, 3])}))
    assert out.ok.to_pylist() == [True] * 3
    # a constant without rules is checked once, without a tally: its fraction cut is not counted
    assert out.truncated == {"cut": 3} and out.defaulted == {"fallback": 3}
    assert out.table.schema.field("nothing").type == pa.int64()
    # a constant the destination refuses: every row goes to the per-record path, which names it
    refused = check(
        sync({"system": {"value": "too long"}}),
        {"system": col("str", 3), **KEY},
        batch({"x": (pa.int64(), [1])}),
    )
    assert refused.ok.to_pylist() == [False]
    empty = check(cfg, columns, batch({"x": (pa.int64(), [])}))
    assert empty.table.num_rows == 0 and empty.truncated == {} and empty.defaulted == {}


def test_a_batch_of_other_types_than_compiled_for_is_an_error() -> None:
    vm = vector_map.compile_vector(sync({"f": "t"}), {}, {"t": pa.string(), "id": pa.int64()})
    assert vm is not None
    with pytest.raises(ValueError, match="source column `t`: compiled for string, the batch has int64"):
        vm.apply(batch({"t": (pa.int64(), [1])}))
    with pytest.raises(ValueError, match="`t`: compiled for string, the batch has no column"):
        vm.apply(batch({"u": (pa.string(), ["x"])}))
    # a source column the batch never holds reads as NULL, as row.get does
    absent = vector_map.compile_vector(sync({"f": {"from": "t", "default": "d"}}), {}, {"id": pa.int64()})
    assert absent is not None
    assert absent.apply(batch({"u": (pa.string(), ["x"])})).table.column("f").to_pylist() == ["d"]


def test_key_columns_are_checked_and_set() -> None:
    cfg = models.SyncConfig.model_validate(
        {
            "from": {"connection": "erp", "table": "src"},
            "to": {"connection": "portal", "table": "dst"},
            "key": {"from": ["id", "code"], "to": ["ref", "code_out"]},
            "fields": {"code_out": "other", "name": "name"},
            "changes": {"method": "full"},
        }
    )
    columns = {
        "ref": col("int", nullable=False),
        "code_out": col("str", 3, nullable=False),
        "name": col("str"),
    }
    rb = batch(
        {
            "code": (pa.string(), ["abc", None, "abcd", "é"]),
            "other": (pa.string(), list("wxyz")),
            "name": (pa.string(), list("abcd")),
        }
    )
    out = check(cfg, columns, rb)
    assert out.table.column_names == ["code_out", "name", "ref"]
    assert out.ok.to_pylist() == [True, False, False, True]
    assert out.table.column("code_out").to_pylist()[0] == "abc"


# --------------------------------------------------------------------------- the realistic sheet


def bench_like(n: int) -> tuple[models.SyncConfig, dict[str, ColumnInfo], pa.RecordBatch]:
    """bench/common.py's sheet and destination: 11 renames, a value map, a truncation to 80,
    a constant, text into two TIMESTAMP(6) columns."""
    renames = {
        "first_name": "first_name", "last_name": "last_name", "email_address": "email", "phone": "phone",
        "street": "street", "city": "city", "postcode": "postcode", "country_code": "country",
        "credit_limit": "credit_limit", "created_at": "created_at", "updated_at": "last_modified",
    }  # fmt: skip
    fields: dict[str, Any] = dict(renames)
    fields["status"] = {
        "from": "status",
        "map": {"A": "active", "I": "inactive", "S": "suspended", "P": "prospect"},
    }
    fields["notes"] = {"from": "notes", "truncate": 80}
    fields["source_system"] = {"value": "erp"}
    cfg = sync(fields)
    lengths = {
        "first_name": 60,
        "last_name": 60,
        "email_address": 120,
        "phone": 40,
        "street": 120,
        "city": 80,
    }
    lengths |= {"postcode": 16, "country_code": 2, "status": 16, "notes": 80, "source_system": 16}
    columns = {name: col("str", length, nul=True) for name, length in lengths.items()}
    columns |= {
        "credit_limit": col("int"),
        "created_at": col("datetime", nullable=False, zone=dt.UTC, fraction=6),
        "updated_at": col("datetime", nullable=False, zone=dt.UTC, fraction=6),
        "ref": col("int", nullable=False),
    }
    text = lambda fmt: pa.array([fmt.format(i) for i in range(n)], pa.string())  # noqa: E731
    rb = pa.RecordBatch.from_pydict(
        {
            "id": pa.array(range(n), pa.int64()),
            "first_name": text("Zoë{}"),
            "last_name": text("Müller-{}"),
            "email": text("user{}@example.com"),
            "phone": text("+49 30 {}"),
            "street": text("Hauptstraße {}"),
            "city": text("Berlin"),
            "postcode": text("{:05d}"),
            "country": text("DE"),
            "status": pa.array(["AISP"[i % 4] for i in range(n)]),
            "notes": pa.array(["note " * (i % 30) for i in range(n)]),
            "credit_limit": pa.array([i * 100 for i in range(n)], pa.int64()),
            "created_at": text("2024-01-02 03:04:05.{:06d}"),
            "last_modified": text("2025-06-07T08:09:10"),
        }
    )
    return cfg, columns, rb


def test_the_realistic_sheet_is_vectorised_whole() -> None:
    cfg, columns, rb = bench_like(200)
    out = check(cfg, columns, rb)
    assert all(out.ok.to_pylist())
    assert out.truncated == {"notes": sum(1 for i in range(200) if len("note " * (i % 30)) > 80)}
    assert out.table.schema.field("created_at").type == pa.timestamp("us")


# --------------------------------------------------------------------------- no vector form


@pytest.mark.parametrize(
    "rule",
    [
        {"template": "{a} {b}"},
        {"from": "a", "python": "os.path:basename"},
        {"from": "a", "split": {"sep": ","}},
        {"from": "a", "lookup": {"connection": "erp", "table": "t", "key": "k", "value": "v"}},
        {"from": "a", "on_null": "omit"},
        {"from": "a", "case": "title"},
        {"from": "a", "cast": "int"},
        {"from": "a", "pattern": "x+"},
        {"from": "a", "country": "iso2"},
        {"from": "a", "map": {"x": 1, "y": "z"}},
        {"from": "a", "default": 5},
        {"value": decimal.Decimal("1.50")},
    ],
)
def test_rules_without_a_vector_form(rule: dict[str, Any]) -> None:
    assert (
        vector_map.compile_vector(
            sync({"f": rule}), {}, {"a": pa.string(), "b": pa.string(), "id": pa.int64()}
        )
        is None
    )


def test_syncs_without_a_vector_form() -> None:
    source = {"a": pa.string(), "id": pa.int64()}
    assert vector_map.compile_vector(sync({"f": "a"}, on_null="omit"), {}, source) is None
    by_reason = {
        "policy": "by_reason", "field": "f", "value": "x", "expired": {"date": "a"}, "otherwise": "hard",
    }  # fmt: skip
    assert vector_map.compile_vector(sync({"f": "a"}, deletes=by_reason), {}, source) is None
    child = {
        "from": {"connection": "erp", "table": "lines"},
        "to": {"connection": "portal", "table": "lines"},
        "parent": {"from": "order_id", "to": "order_ref"},
        "key": {"from": ["order_id", "n"], "to": ["order_ref", "n"]},
        "fields": {"n": "n"},
    }
    assert vector_map.compile_vector(sync({"f": "a"}, children={"lines": child}), {}, source) is None
    # a source type without an exact form, and text into a column it would need a parse for
    assert vector_map.compile_vector(sync({"f": "a"}), {}, {"a": pa.binary(), "id": pa.int64()}) is None
    assert vector_map.compile_vector(sync({"f": "a"}), {"f": col("float"), **KEY}, source) is None
    assert vector_map.compile_vector(sync({"f": "a"}), {}, source) is not None


# --------------------------------------------------------------------------- any sheet

_SOURCES = {
    "s": (pa.string(), TEXT),
    "i": (pa.int64(), INTS),
    "b": (pa.bool_(), st.none() | st.booleans()),
    "t": (pa.string(), time_texts() | plausible_times()),
    "z": (pa.null(), st.none()),
}
_RULES = st.fixed_dictionaries(
    {},
    optional={
        "trim": st.booleans(),
        "case": st.sampled_from(["upper", "lower"]),
        "required": st.booleans(),
        "truncate": st.integers(1, 4),
        "map": st.sampled_from([{"a": "x", "1": "y", "": "e"}, {"A": 1, "2": 2}, {"a": None, "b": True}]),
        "on_unknown": st.sampled_from(["reject", "keep"]),
        "on_null": st.sampled_from(["send", "reject"]),
        "default": st.sampled_from(["d", 3, None]),
    },
)
_COLUMNS = st.none() | st.builds(
    col,
    st.sampled_from(["str", "int", "float", "bool", "datetime", "decimal", None]),
    st.none() | st.integers(1, 5),
    nullable=st.booleans(),
    nul=st.booleans(),
    allowed=st.none() | st.just(("x", "y", "1", "A")),
    fraction=st.none() | st.integers(0, 6),
    precision=st.none() | st.integers(3, 20),
    scale=st.none() | st.integers(0, 2),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_sheet_of_these_rules_compiles_to_none_or_holds_the_contract(data: st.DataObject) -> None:
    fields: dict[str, Any] = {}
    columns: dict[str, ColumnInfo] = {}
    for n in range(data.draw(st.integers(1, 3))):
        rule = data.draw(_RULES)
        source = data.draw(st.sampled_from(sorted(_SOURCES)))
        if rule.get("default") is None:
            rule.pop("default", None)
        fields[f"f{n}"] = {"from": source, **rule} if data.draw(st.integers(0, 5)) else {"value": "c", **rule}
        columns[f"f{n}"] = data.draw(_COLUMNS) or col(None)
    try:
        cfg = sync(fields, data.draw(st.sampled_from(["send", "default", "reject"])))
        mapping.RowMapping(cfg.fields, cfg.key, {**columns, **KEY}, cfg.on_null)
    except Exception:
        return  # a sheet the per-record compile refuses is no test of this one
    size = data.draw(st.integers(0, 12))
    rb = batch(
        {
            name: (kind, data.draw(st.lists(values, min_size=size, max_size=size)))
            for name, (kind, values) in _SOURCES.items()
        }
    )
    if vector_map.compile_vector(cfg, {**columns, **KEY}, {f.name: f.type for f in rb.schema}) is not None:
        check(cfg, {**columns, **KEY}, rb)


def test_the_white_space_list_is_pythons() -> None:
    assert tuple(c for c in range(sys.maxunicode + 1) if chr(c).isspace()) == vector_map.WHITESPACE
