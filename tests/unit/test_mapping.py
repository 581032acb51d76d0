"""Data-driven field rules: every case in tests/mappings/*.yaml (one file per rule family).

A case gives the destination field's rule (`field`, as in the sheet, for field `f`), the source
row (`row`), optionally the destination column (`column`) and the sync's `on_null` (`sync`), and
one expectation: `out` (the written value), `omitted: true` (left out of the write), `reject`
(`rule` and a `message` fragment) or `config_error` (a fragment of the compile-time error).
`tally` checks the counters. Tags: `!decimal "1.50"` is a Decimal.
"""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mapsync import errors, records, transforms
from mapsync import mapping as compile_
from mapsync.connectors.sql import ColumnInfo
from mapsync.sheet import loader, models

FOLDER = Path(__file__).parents[1] / "mappings"
D = decimal.Decimal


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!decimal", lambda loader, node: D(loader.construct_scalar(node)))  # type: ignore[arg-type]

_TYPES: dict[str, type] = {
    "str": str,
    "int": int,
    "decimal": D,
    "float": float,
    "bool": bool,
    "date": dt.date,
    "datetime": dt.datetime,
}


def _cases() -> list[Any]:
    out = []
    for path in sorted(FOLDER.glob("*.yaml")):
        for case in yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)["cases"]:
            out.append(pytest.param(case, id=f"{path.stem}:{case['id']}"))
    return out


CASES = _cases()


def column(spec: dict[str, Any] | None) -> ColumnInfo | None:
    if spec is None:
        return None
    kind = spec.get("type", "str")
    return ColumnInfo(
        "f",
        _TYPES[kind],
        spec.get("length"),
        spec.get("nullable", True),
        False,
        False,
        spec.get("type_name", kind.upper()),
        spec.get("precision"),
        spec.get("scale"),
        False,
        tuple(str(v) for v in spec["allowed"]) if "allowed" in spec else None,
    )


def mapping(field: Any, col: ColumnInfo | None = None, on_null: str = "send") -> compile_.Mapping:
    cfg = models.SyncConfig.model_validate(
        {
            "from": {"connection": "erp", "table": "src"},
            "to": {"connection": "portal", "table": "dst"},
            "key": {"from": "id", "to": "ref"},
            "fields": {"f": field},
            "changes": {"method": "full"},
            "on_null": on_null,
        }
    )
    key = column({"type": "int"})
    assert key is not None
    columns = {"f": col, "ref": key} if col is not None else {}
    return compile_.Mapping(cfg, columns, {})


def run(
    m: compile_.Mapping, row: dict[str, Any]
) -> tuple[records.Mapped | records.Rejection, transforms.Tally]:
    tally = transforms.Tally()
    change = records.Change("upsert", (1,), 1, {"id": 1, **row})
    out = m.apply(change, m.prepare([change]), tally)
    assert out is not None
    return out, tally


@pytest.mark.parametrize("case", CASES)
def test_mapping_case(case: dict[str, Any]) -> None:
    col = column(case.get("column"))
    on_null = case.get("sync", {}).get("on_null", "send")
    if "config_error" in case:
        with pytest.raises((errors.ConfigError, pydantic.ValidationError)) as caught:
            mapping(case["field"], col, on_null)
        assert case["config_error"] in str(caught.value)
        assert isinstance(caught.value, pydantic.ValidationError) or "`f`" in str(caught.value)
        return
    out, tally = run(mapping(case["field"], col, on_null), case.get("row", {}))
    if "reject" in case:
        assert isinstance(out, records.Rejection), out
        assert (out.field, out.rule) == ("f", case["reject"]["rule"]), out
        assert case["reject"]["message"] in out.message, out.message
        return
    assert isinstance(out, records.Mapped), out
    if case.get("omitted"):
        assert "f" not in out.values
        assert set(out.values) == {"ref"}
    else:
        assert out.values["f"] == case["out"]
        assert type(out.values["f"]) is type(case["out"]), out.values["f"]
    for counter, expected in case.get("tally", {}).items():
        assert getattr(tally, counter)["f"] == expected, (counter, tally)


def test_every_rule_has_cases() -> None:
    """Each registered rule (and each key of FieldRule) appears in some case's `field`."""
    used: set[str] = set()
    for param in CASES:
        field = param.values[0]["field"]
        used.update(field if isinstance(field, dict) else {"from"})
    keys = {f.alias or name for name, f in models.FieldRule.model_fields.items()}
    elsewhere = {"lookup", "map_from"}  # tested with their tables in tests/integration/test_lookups.py
    assert keys - elsewhere - used == set()


def test_rules_apply_in_the_documented_order() -> None:
    doc = models.FieldRule.__doc__ or ""
    positions = [doc.index(f"`{name}`") for name in transforms.ORDER]
    assert positions == sorted(positions)
    assert list(transforms.RULES) == [r for r in transforms.ORDER if r in transforms.RULES]


def test_a_rule_outside_the_order_cannot_register() -> None:
    with pytest.raises(ValueError, match="ORDER"):
        transforms.rule("nonsense")


def test_the_python_hook_is_imported_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import mapping_hooks

    m = mapping({"from": "x", "python": "tests.mapping_hooks:count_calls"})
    monkeypatch.setattr(mapping_hooks, "count_calls", lambda v, row: "replaced")
    out, _ = run(m, {"x": "a"})
    assert isinstance(out, records.Mapped) and out.values["f"] == "A"  # the function compiled in


# --------------------------------------------------------------------------- property

SCALARS = (
    st.none()
    | st.text(max_size=30)
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.decimals(allow_nan=True, allow_infinity=True)
    | st.floats()
    | st.booleans()
    | st.dates()
    | st.datetimes()
    | st.datetimes(timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=5))]))
)
NEW_RULES: dict[str, Any] = {
    "trimmed": {"from": "x", "trim": True, "case": "upper"},
    "title": {"from": "x", "case": "title", "on_null": "reject"},
    "part": {"from": "x", "split": {"sep": "-", "index": -1}},
    "tmpl": {"template": "{x}/{y}"},
    "day": {"from": "x", "cast": "date", "format": "%d.%m.%Y"},
    "zoned": {"from": "x", "cast": "datetime", "timezone": {"source": "Europe/Berlin"}},
    "aware": {"from": "x", "timezone": {"source": "America/New_York", "target": "aware"}},
    "hook": {"from": "x", "python": "tests.mapping_hooks:fussy"},
    "needed": {"from": "x", "required": True, "pattern": "[A-Z][a-z]*"},
    "ranged": {"from": "x", "min": 0, "max": "100.5"},
    "dated": {"from": "x", "min": "2000-01-01", "max": dt.date(2030, 12, 31)},
    "listed": {"from": "x", "enum": ["a", 1, True]},
    "omitted": {"from": "x", "on_null": "omit", "truncate": "auto"},
    "defaulted": {"from": "x", "on_null": "default", "default": "n/a", "truncate": 3},
    "corrected": {"from": "x", "country": {"to": "iso2", "autocorrect": True}},
    "allowed": {"from": "x", "trim": True},
    "dst": {"from": "x", "cast": "datetime", "timezone": {"source": "America/New_York"}},
}
NEW_COLUMNS = {
    "omitted": {"length": 4},
    "defaulted": {"length": 3, "nullable": False},
    "allowed": {"allowed": ["A", "1", "2.5"]},
}
NEW_MAPPINGS = [(name, mapping(rule, column(NEW_COLUMNS.get(name)))) for name, rule in NEW_RULES.items()]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=SCALARS, other=SCALARS)
def test_any_input_to_the_new_rules_ends_mapped_or_as_a_named_rejection(value: Any, other: Any) -> None:
    for name, m in NEW_MAPPINGS:
        out, _ = run(m, {"x": value, "y": other})
        if isinstance(out, records.Rejection):
            assert out.message and out.field == "f", (name, out)
            assert out.rule not in (None, "mapping"), (name, out)
            assert "`f`" in out.message, (name, out)
        else:
            assert isinstance(out, records.Mapped), (name, out)
            assert set(out.values) <= {"f", "ref"}
            assert "f" in out.values or (name == "omitted" and value is None)


def test_validate_finds_rules_that_would_not_compile(tmp_path: Path) -> None:
    """`mapsync validate` (loader.load) reports them without connecting, with their path."""
    sheet = tmp_path / "sheet.yaml"
    sheet.write_text(
        """version: 1
connections:
  erp: {url: "sqlite:///erp.db"}
syncs:
  c:
    from: {connection: erp, table: src}
    to: {connection: erp, table: dst}
    key: {from: id, to: ref}
    changes: {method: full}
    fields:
      a: {from: x, pattern: "(["}
      b: {from: x, timezone: {source: Mars/Olympus}}
      c: {from: x, python: "tests.no_such_module:f"}
      d: {template: "{x"}
      e: {from: x, min: lots}
      ok: {from: x, pattern: "\\\\d+", timezone: {source: UTC}, min: 1}
"""
    )
    with pytest.raises(errors.ConfigError) as caught:
        loader.load(sheet)
    text = str(caught.value)
    for path in (
        "fields.a.pattern",
        "fields.b.timezone",
        "fields.c.python",
        "fields.d.template",
        "fields.e.min",
    ):
        assert path in text, text
    assert "fields.ok" not in text
