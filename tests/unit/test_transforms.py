"""Field rules as the sheet compiles them (mapping.py over transforms.py), and the
destination's own limits folded in from its catalog. Every rejection names field and rule."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mapsync import mapping as compile_
from mapsync import records, transforms
from mapsync.connectors.sql import ColumnInfo
from mapsync.sheet import models

D = decimal.Decimal
UTC = dt.UTC


def _mapping(fields: dict[str, Any], columns: dict[str, ColumnInfo] | None = None) -> compile_.Mapping:
    cfg = models.SyncConfig.model_validate(
        {
            "from": {"connection": "erp", "table": "customers"},
            "to": {"connection": "portal", "table": "accounts"},
            "key": {"from": "id", "to": "ref"},
            "fields": fields,
            "changes": {"method": "full"},
        }
    )
    return compile_.Mapping(cfg, columns or {}, {})


def _apply(
    fields: dict[str, Any], row: dict[str, Any], columns: dict[str, ColumnInfo] | None = None
) -> tuple[records.Mapped | records.Rejection, transforms.Tally]:
    mapping = _mapping(fields, columns)
    tally = transforms.Tally()
    change = records.Change("upsert", (row.get("id", 1),), 7, {"id": 1, **row})
    out = mapping.apply(change, mapping.prepare([change]), tally)
    assert out is not None
    return out, tally


def _value(rule: Any, value: Any, field: str = "f") -> Any:
    out, _ = _apply({field: rule}, {"x": value})
    assert isinstance(out, records.Mapped), out
    return out.values[field]


def _rejection(rule: Any, value: Any, field: str = "f") -> records.Rejection:
    out, _ = _apply({field: rule}, {"x": value})
    assert isinstance(out, records.Rejection), out
    return out


def col(
    name: str,
    py: type | None = str,
    *,
    length: int | None = None,
    nullable: bool = True,
    type_name: str = "VARCHAR",
    precision: int | None = None,
    scale: int | None = None,
    nul: bool = False,
) -> ColumnInfo:
    return ColumnInfo(name, py, length, nullable, False, False, type_name, precision, scale, nul)


# --------------------------------------------------------------------------- table of simple rules

CASES = yaml.safe_load(
    r"""
# rule (as in the sheet) · source value `x` · expected destination value
- {id: copy,              rule: x,                                     in: "Ada",   out: "Ada"}
- {id: copy-keeps-type,   rule: x,                                     in: 42,      out: 42}
- {id: constant,          rule: {value: 1},                            in: "any",   out: 1}
- {id: constant-text,     rule: {value: "web"},                        in: null,    out: "web"}
- {id: default-on-null,   rule: {from: x, default: "n/a"},             in: null,    out: "n/a"}
- {id: default-on-empty,  rule: {from: x, default: "n/a"},             in: "",      out: "n/a"}
- {id: default-unused,    rule: {from: x, default: "n/a"},             in: "set",   out: "set"}
- {id: truncate,          rule: {from: x, truncate: 5},                in: "abcdefgh", out: "abcde"}
- {id: truncate-short,    rule: {from: x, truncate: 5},                in: "abc",   out: "abc"}
- {id: map,               rule: {from: x, map: {A: 1, I: 0}},          in: "I",     out: 0}
- {id: map-as-text,       rule: {from: x, map: {"1": "one"}},          in: 1,       out: "one"}
- {id: map-null,          rule: {from: x, map: {A: 1}},                in: null,    out: null}
- {id: map-default,       rule: {from: x, map: {A: 1}, on_unknown: default, map_default: 9}, in: "Q", out: 9}
- {id: map-keep,          rule: {from: x, map: {A: 1}, on_unknown: keep}, in: "Q",  out: "Q"}
- {id: default-then-map,  rule: {from: x, default: "A", map: {A: 1}},  in: null,    out: 1}
- {id: map-then-truncate, rule: {from: x, map: {A: "active"}, truncate: 3}, in: "A", out: "act"}
"""
)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_simple_rules(case: dict[str, Any]) -> None:
    assert _value(case["rule"], case["in"]) == case["out"]


def test_rename_copies_under_the_destination_name_and_fills_the_key() -> None:
    out, _ = _apply({"nm": "name", "nm_again": "name"}, {"id": 5, "name": "Ada"})
    assert isinstance(out, records.Mapped)
    assert out.values == {"nm": "Ada", "nm_again": "Ada", "ref": 5}
    assert out.dest_key == (5,)
    assert out.hash == records.content_hash(out.values)


def test_truncate_is_counted_per_field() -> None:
    mapping = _mapping({"nm": {"from": "name", "truncate": 3}})
    tally = transforms.Tally()
    for i, name in enumerate(["abcdef", "ab", "xyzw"]):
        change = records.Change("upsert", (i,), i, {"id": i, "name": name})
        mapping.apply(change, mapping.prepare([change]), tally)
    assert tally.truncated == {"nm": 2}
    assert not tally.defaulted and not tally.kept


@pytest.mark.parametrize(
    ("on_unknown", "counter"), [("default", "defaulted"), ("keep", "kept")], ids=["default", "keep"]
)
def test_unmapped_values_kept_or_defaulted_are_counted(on_unknown: str, counter: str) -> None:
    rule: dict[str, Any] = {"from": "x", "map": {"A": 1}, "on_unknown": on_unknown}
    if on_unknown == "default":
        rule["map_default"] = 0
    _, tally = _apply({"st": rule}, {"x": "Z"})
    assert getattr(tally, counter) == {"st": 1}
    _, tally = _apply({"st": rule}, {"x": "A"})
    assert getattr(tally, counter) == {}


def test_default_is_counted() -> None:
    _, tally = _apply({"f": {"from": "x", "default": 0}}, {"x": None})
    assert tally.defaulted == {"f": 1}


def test_an_unknown_value_is_rejected_naming_field_rule_and_value() -> None:
    r = _rejection({"from": "x", "map": {"A": 1, "I": 0}}, "X", field="status")
    assert (r.field, r.rule) == ("status", "map")
    assert r.message == "value 'X' of `status` is not in the map {A, I}"
    assert (r.key, r.version) == ((1,), 7)


# --------------------------------------------------------------------------- casts


@pytest.mark.parametrize(
    ("rule", "value", "expected"),
    [
        ({"cast": "decimal"}, "1.10", D("1.10")),
        ({"cast": "decimal"}, D("1.10"), D("1.10")),
        ({"cast": "decimal"}, " 3.5 ", D("3.5")),
        ({"cast": "decimal"}, 7, D("7")),
        ({"cast": "decimal"}, 0.1, D("0.1")),  # the float's shortest text, not 0.1000000000000000055…
        ({"cast": "decimal"}, 0.1 + 0.2, D("0.30000000000000004")),
        ({"cast": "decimal", "scale": 2}, 0.1 + 0.2, D("0.30")),
        ({"cast": "decimal", "scale": 2}, 2.675, D("2.68")),  # binary 2.67499… would round down
        ({"cast": "decimal", "scale": 2}, "2.345", D("2.35")),  # half-up
        ({"cast": "decimal", "scale": 2}, "-2.345", D("-2.35")),  # half away from zero
        ({"cast": "decimal", "scale": 2}, "2.344", D("2.34")),
        ({"cast": "decimal", "scale": 2}, 1, D("1.00")),
        ({"cast": "decimal", "scale": 0}, "0.5", D("1")),
        ({"cast": "int"}, "42", 42),
        ({"cast": "int"}, " -7 ", -7),
        ({"cast": "int"}, D("3.000"), 3),
        ({"cast": "int"}, True, 1),
        ({"cast": "float"}, "2.5", 2.5),
        ({"cast": "str"}, 12, "12"),
        ({"cast": "str"}, D("1.10"), "1.10"),
        ({"cast": "bool"}, "yes", True),
        ({"cast": "bool"}, "Y", True),
        ({"cast": "bool"}, 1, True),
        ({"cast": "bool"}, "off", False),
        ({"cast": "bool"}, "0", False),
        ({"cast": "bool"}, False, False),
        ({"cast": "date"}, "2024-03-01", dt.date(2024, 3, 1)),
        ({"cast": "date"}, "2024-03-01T23:30:00", dt.date(2024, 3, 1)),
        ({"cast": "date"}, dt.datetime(2024, 3, 1, 10, tzinfo=UTC), dt.date(2024, 3, 1)),
        ({"cast": "datetime"}, "2024-03-01T10:00:00Z", dt.datetime(2024, 3, 1, 10, tzinfo=UTC)),
        ({"cast": "datetime"}, "2024-03-01 10:00:00+01:00", dt.datetime(2024, 3, 1, 9, tzinfo=UTC)),
        ({"cast": "datetime"}, "2024-03-01 10:00:00", dt.datetime(2024, 3, 1, 10)),  # noqa: DTZ001  naive stays naive
        ({"cast": "datetime"}, dt.date(2024, 3, 1), dt.datetime(2024, 3, 1)),  # noqa: DTZ001
        ({"cast": "int"}, None, None),
    ],
)
def test_casts_are_exact(rule: dict[str, Any], value: Any, expected: Any) -> None:
    out = _value({"from": "x", **rule}, value)
    assert out == expected
    assert type(out) is type(expected)
    if isinstance(expected, D):
        assert out.as_tuple() == expected.as_tuple()  # same digits and exponent: 1.10 is not 1.1


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("int", "1.5"),
        ("int", 2.5),
        ("int", "abc"),
        ("int", "NaN"),
        ("int", "Infinity"),
        ("int", ""),
        ("decimal", "abc"),
        ("decimal", "NaN"),
        ("decimal", float("inf")),
        ("decimal", "1,5"),
        ("bool", "maybe"),
        ("bool", 2),
        ("date", "2024-02-30"),
        ("date", "01/03/2024"),
        ("datetime", "yesterday"),
        ("float", "abc"),
    ],
)
def test_a_value_that_does_not_convert_is_rejected(kind: str, value: Any) -> None:
    r = _rejection({"from": "x", "cast": kind}, value, field="amount")
    assert (r.field, r.rule) == ("amount", "cast")
    assert r.message == f"value {value!r} of `amount` is not a valid {kind}"


# --------------------------------------------------------------------------- countries


@pytest.mark.parametrize(
    ("text", "iso3"),
    [
        ("US", "USA"),
        ("U.S.A.", "USA"),
        ("usa", "USA"),
        ("United States of America", "USA"),
        ("United States", "USA"),
        ("Deutschland", "DEU"),
        ("  germany ", "DEU"),
        ("UK", "GBR"),
        ("Great Britain", "GBR"),
        ("GB", "GBR"),
        ("de", "DEU"),
        ("FRA", "FRA"),
        ("France", "FRA"),
        ("Côte d'Ivoire", "CIV"),
        ("Österreich", "AUT"),
        ("The Netherlands", "NLD"),
    ],
)
def test_countries_are_placed(text: str, iso3: str) -> None:
    assert _value({"from": "x", "country": "iso3"}, text) == iso3


@pytest.mark.parametrize(("form", "expected"), [("iso2", "DE"), ("iso3", "DEU"), ("name", "Germany")])
def test_country_forms(form: str, expected: str) -> None:
    assert _value({"from": "x", "country": form}, "Deutschland") == expected


@pytest.mark.parametrize("text", [None, "", "   "])
def test_no_country_is_none_not_a_rejection(text: Any) -> None:
    assert _value({"from": "x", "country": "iso2"}, text) is None


@pytest.mark.parametrize("text", ["Atlantis", "XX", "Unitd Stats", "123"])
def test_an_unknown_country_is_rejected(text: str) -> None:
    r = _rejection({"from": "x", "country": "iso3"}, text, field="country")
    assert (r.field, r.rule) == ("country", "country")
    assert r.message == f"country {text!r} of `country` is not a country it can place"


# --------------------------------------------------------------------------- destination limits

REF = col("ref", int, nullable=False, type_name="INTEGER")


def _checked(column: ColumnInfo, value: Any, rule: Any = "x") -> records.Mapped | records.Rejection:
    out, _ = _apply({column.name: rule}, {"x": value}, {"ref": REF, column.name: column})
    return out


def test_a_value_longer_than_the_column_is_rejected_with_its_length() -> None:
    out = _checked(col("nm", length=150), "x" * 212)
    assert isinstance(out, records.Rejection)
    assert out.message.startswith("field `nm` length 212 > 150")
    assert "truncate: 150" in out.message
    assert (out.field, out.rule) == ("nm", "length")


def test_truncate_to_the_column_length_passes_and_is_counted() -> None:
    out, tally = _apply(
        {"nm": {"from": "x", "truncate": 150}}, {"x": "x" * 212}, {"ref": REF, "nm": col("nm", length=150)}
    )
    assert isinstance(out, records.Mapped)
    assert len(out.values["nm"]) == 150
    assert tally.truncated == {"nm": 1}


def test_length_counts_characters_not_bytes() -> None:
    assert isinstance(_checked(col("nm", length=5), "Zürich"[:5]), records.Mapped)
    assert isinstance(_checked(col("nm", length=5), "ÄÖÜäö"), records.Mapped)


def test_null_into_a_not_null_column_is_rejected() -> None:
    out = _checked(col("nm", nullable=False), None)
    assert isinstance(out, records.Rejection)
    assert out.message == "field `nm` is NULL but the destination column is NOT NULL"
    assert (out.field, out.rule) == ("nm", "not_null")
    assert _checked(col("nm", nullable=False), None, {"from": "x", "default": "-"}) == _checked(
        col("nm", nullable=False), "-"
    )


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        (col("qty", int, type_name="INTEGER"), "12", 12),
        (col("qty", int, type_name="INTEGER"), D("12"), 12),
        (col("amt", D, type_name="NUMERIC(10, 2)", precision=10, scale=2), "1.5", D("1.5")),
        (col("amt", D, type_name="NUMERIC(10, 2)", precision=10, scale=2), 0.1, D("0.1")),
        (col("on", dt.date, type_name="DATE"), "2024-03-01", dt.date(2024, 3, 1)),
        (col("nm", str, length=5), 12345, "12345"),
        (col("flag", bool, type_name="BOOLEAN"), "yes", True),
    ],
)
def test_values_are_coerced_to_the_column_type(column: ColumnInfo, value: Any, expected: Any) -> None:
    out = _checked(column, value)
    assert isinstance(out, records.Mapped), out
    assert out.values[column.name] == expected
    assert type(out.values[column.name]) is type(expected)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        (col("qty", int, type_name="INTEGER"), "abc", "field `qty`: 'abc' is not a valid INTEGER"),
        (col("qty", int, type_name="INTEGER"), "1.5", "field `qty`: '1.5' is not a valid INTEGER"),
        (col("on", dt.date, type_name="DATE"), "2024-13-01", "field `on`: '2024-13-01' is not a valid DATE"),
        (col("flag", bool, type_name="BOOLEAN"), "perhaps", "field `flag`: 'perhaps' is not a valid BOOLEAN"),
    ],
)
def test_a_value_of_the_wrong_type_is_rejected(column: ColumnInfo, value: Any, message: str) -> None:
    out = _checked(column, value)
    assert isinstance(out, records.Rejection)
    assert out.message == message
    assert (out.field, out.rule) == (column.name, "type")


AMOUNT = col("amt", D, type_name="NUMERIC(5, 2)", precision=5, scale=2)


@pytest.mark.parametrize("value", [D("123.45"), D("-999.99"), D("123.450"), D("0"), "1.5"])
def test_numeric_values_that_fit_pass(value: Any) -> None:
    assert isinstance(_checked(AMOUNT, value), records.Mapped)


def test_numeric_scale_overflow_is_rejected() -> None:
    out = _checked(AMOUNT, D("123.456"))
    assert isinstance(out, records.Rejection)
    assert (out.field, out.rule) == ("amt", "scale")
    assert out.message.startswith("field `amt`: 123.456 has more than 2 decimals")
    rounded = _checked(AMOUNT, D("123.456"), {"from": "x", "cast": "decimal", "scale": 2})
    assert isinstance(rounded, records.Mapped) and rounded.values["amt"] == D("123.46")


@pytest.mark.parametrize("value", [D("1234.5"), D("-1000"), D("999.995")])
def test_numeric_precision_overflow_is_rejected(value: D) -> None:
    out = _checked(AMOUNT, value, {"from": "x", "cast": "decimal", "scale": 2})
    assert isinstance(out, records.Rejection)
    assert (out.field, out.rule) == ("amt", "precision")
    assert out.message.endswith("does not fit numeric(5,2)")


@pytest.mark.parametrize("value", [D("1E+25"), D("1E+1000"), D("Infinity"), D("-Infinity"), D("NaN")])
def test_huge_or_non_finite_numbers_are_a_precision_rejection_not_a_crash(value: D) -> None:
    out = _checked(AMOUNT, value)
    assert isinstance(out, records.Rejection)
    assert (out.field, out.rule) == ("amt", "precision")


def test_wide_numeric_columns_hold_more_digits_than_the_default_decimal_context() -> None:
    wide = col("amt", D, type_name="NUMERIC(40, 10)", precision=40, scale=10)
    value = D("123456789012345678901234567890.0123456789")  # 40 digits
    out = _checked(wide, value)
    assert isinstance(out, records.Mapped) and out.values["amt"] == value
    too_many = _checked(wide, D("1234567890123456789012345678901.0123456789"))
    assert isinstance(too_many, records.Rejection) and too_many.rule == "precision"


def test_nul_is_rejected_only_where_the_destination_cannot_store_it() -> None:
    pg = _checked(col("nm", nul=True), "a\x00b")
    assert isinstance(pg, records.Rejection)
    assert (pg.field, pg.rule) == ("nm", "nul")
    assert "NUL" in pg.message and "PostgreSQL" in pg.message
    assert isinstance(_checked(col("nm", nul=False), "a\x00b"), records.Mapped)


def test_the_destination_key_is_checked_too() -> None:
    out, _ = _apply({}, {"id": 123}, {"ref": col("ref", length=3)})
    assert isinstance(out, records.Mapped) and out.dest_key == ("123",)  # text for a VARCHAR key
    r, _ = _apply({}, {"id": "ABCD"}, {"ref": col("ref", length=3)})
    assert isinstance(r, records.Rejection)
    assert (r.key, r.field, r.rule) == (("ABCD",), "ref", "length")


def test_a_field_missing_from_the_destination_fails_at_compile_time() -> None:
    with pytest.raises(KeyError, match="nm"):
        _mapping({"nm": "name"}, {"ref": REF})


# --------------------------------------------------------------------------- property: never raises

TEXT = st.text(max_size=300)
SCALARS = st.one_of(
    st.none(),
    TEXT,
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    # signalling NaN is left out: no database driver returns one, and it raises on comparison
    st.decimals(allow_nan=True, allow_infinity=True).filter(lambda d: not d.is_snan()),
    st.dates(),
    st.datetimes(timezones=st.sampled_from([None, UTC])),
    st.sampled_from(["US", "Deutschland", "Atlantis", "A", "I", "1.5", "2024-03-01", "yes", "", "\x00"]),
)

FIELDS: dict[str, Any] = {
    "nm": {"from": "x", "truncate": 20},
    "nm2": {"from": "x", "default": "none"},
    "st": {"from": "x", "map": {"A": 1, "I": 0}},
    "st2": {"from": "x", "map": {"A": 1}, "on_unknown": "keep"},
    "st3": {"from": "x", "map": {"A": 1}, "on_unknown": "default", "map_default": 0},
    "ctry": {"from": "x", "country": "iso2"},
    "amt": {"from": "x", "cast": "decimal", "scale": 2},
    "qty": {"from": "x", "cast": "int"},
    "flag": {"from": "x", "cast": "bool"},
    "on": {"from": "x", "cast": "date"},
    "at": {"from": "x", "cast": "datetime"},
    "ratio": {"from": "x", "cast": "float"},
    "txt": {"from": "x", "cast": "str"},
    "raw_int": "x",
    "raw_num": "x",
    "raw_date": "x",
    "raw_at": "x",
    "raw_flag": "x",
    "raw_text": "x",
    "const": {"value": "web"},
}
COLUMNS = {
    "nm": col("nm", length=10, nul=True),
    "nm2": col("nm2", length=300, nullable=False, nul=True),
    "st": col("st", int, type_name="INTEGER"),
    "st2": col("st2", length=5),
    "st3": col("st3", int, nullable=False, type_name="INTEGER"),
    "ctry": col("ctry", length=2),
    "amt": col("amt", D, type_name="NUMERIC(8, 2)", precision=8, scale=2),
    "qty": col("qty", int, type_name="INTEGER"),
    "flag": col("flag", bool, type_name="BOOLEAN"),
    "on": col("on", dt.date, type_name="DATE"),
    "at": col("at", dt.datetime, type_name="TIMESTAMP"),
    "ratio": col("ratio", float, type_name="FLOAT"),
    "txt": col("txt", length=12, nul=True),
    "raw_int": col("raw_int", int, type_name="INTEGER"),
    "raw_num": col("raw_num", D, type_name="NUMERIC(6, 3)", precision=6, scale=3),
    "raw_date": col("raw_date", dt.date, type_name="DATE"),
    "raw_at": col("raw_at", dt.datetime, type_name="TIMESTAMP"),
    "raw_flag": col("raw_flag", bool, nullable=False, type_name="BOOLEAN"),
    "raw_text": col("raw_text", str),
    "const": col("const", length=3),
}
KEY_COLUMNS = {"ref": col("ref", length=40, nullable=False)}
# one mapping per field, with and without the destination's limits, so no field hides another
MAPPINGS = [
    (name, _mapping({name: rule}, {**KEY_COLUMNS, name: COLUMNS[name]} if limits else None))
    for name, rule in FIELDS.items()
    for limits in (True, False)
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=SCALARS, value=SCALARS)
def test_any_input_ends_as_mapped_or_a_named_rejection(key: Any, value: Any) -> None:
    row = {"id": key, "x": value}
    for name, mapping in MAPPINGS:
        change = records.Change("upsert", (key,), 1, row)
        out = mapping.apply(change, mapping.prepare([change]), transforms.Tally())
        if isinstance(out, records.Rejection):
            assert out.message
            # no rule crashed: every rejection is one a rule raised on purpose, naming field and rule
            assert out.field in (name, "ref"), out
            assert out.rule not in (None, "mapping"), out
            assert f"`{out.field}`" in out.message, out
        else:
            assert isinstance(out, records.Mapped), out
            assert set(out.values) == {name, "ref"}
            assert out.hash == records.content_hash(out.values)
            if name == "const":
                assert out.values[name] == "web"


def test_the_map_keep_country_recipe_counts_only_values_that_stay_unplaced() -> None:
    """`map: {…}, on_unknown: keep` in front of `country` (the recipe the docs and `unmapped`
    give): a value the country rule places is not "kept unmapped"; one it rejects is."""
    recipe = {"from": "x", "map": {"Untied States": "USA"}, "on_unknown": "keep", "country": "iso3"}
    tally = transforms.Tally()
    mapping = _mapping({"country": recipe})
    changes = [
        records.Change("upsert", (i,), 1, {"id": i, "x": v})
        for i, v in enumerate(["Untied States", "Germany", "DE", "France", "Narnia"])
    ]
    ctx = mapping.prepare(changes)
    out = [mapping.apply(c, ctx, tally) for c in changes]
    assert [o.values["country"] for o in out[:4] if isinstance(o, records.Mapped)] == [
        "USA",
        "DEU",
        "DEU",
        "FRA",
    ]
    assert isinstance(out[4], records.Rejection)
    assert tally.kept == {"country": 1}  # only Narnia: kept by the map, then refused by `country`
    assert not tally.defaulted
    # without a later rule, every value the map keeps goes out unmapped and is counted
    _, alone = _apply({"st": {"from": "x", "map": {"A": 1}, "on_unknown": "keep"}}, {"x": "Z"})
    assert alone.kept == {"st": 1}
