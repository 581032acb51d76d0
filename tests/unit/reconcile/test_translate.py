"""Group translation of business checks: renames, the key, one-to-one maps and `cast` translate
(forwards and back); every rule that merges or invents values is refused with a ConfigError."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import pytest

from mapsync.errors import ConfigError
from mapsync.reconcile.translate import NULL_TEXT, Translator, group_text
from mapsync.sheet import models
from mapsync.sheet.reconcile_models import ReconcileCheck

D = decimal.Decimal


def _sheet(fields: dict[str, Any]) -> models.Sheet:
    return models.Sheet.model_validate(
        {
            "version": 1,
            "connections": {"erp": {"url": "sqlite:///e.db"}, "portal": {"url": "sqlite:///p.db"}},
            "syncs": {
                "inv": {
                    "from": {"connection": "erp", "table": "invoices"},
                    "to": {"connection": "portal", "table": "invoices"},
                    "key": {"from": ["company", "invoice_no"], "to": ["company_code", "ref"]},
                    "fields": fields,
                    "changes": {"method": "full"},
                }
            },
        }
    )


def _check(src: list[str], dst: list[str], sync: str | None = "inv") -> ReconcileCheck:
    return ReconcileCheck.model_validate(
        {
            "sync": sync,
            "source": {"connection": "erp", "table": "invoices", "group": src, "sum": "b"},
            "dest": {"connection": "portal", "table": "invoices", "group": dst, "sum": "b"},
        }
    )


def test_group_text_is_one_form_for_equal_values() -> None:
    assert group_text(7) == group_text(D("7.00")) == group_text(7.0) == "7"
    assert group_text(D("12.30")) == "12.3" and group_text(D("1E+3")) == "1000" and group_text(0.1) == "0.1"
    assert group_text(D("-0.00")) == "0"
    assert group_text(True) == "1" and group_text(False) == "0"
    assert group_text("C001   ") == "C001" and group_text("  C001") == "  C001"
    assert group_text(None) == NULL_TEXT and group_text("") == ""
    assert group_text(dt.date(2026, 1, 2)) == "2026-01-02" and group_text(b"\x01\xff") == "01ff"


def test_without_a_sync_groups_pass_as_they_are() -> None:
    t = Translator.for_check(_sheet({"x": "y"}), _check(["a"], ["b"], sync=None))
    assert t(("C001",)) == ("C001",) and t.inverse(("C001",)) == ("C001",)


def test_key_rename_and_one_to_one_map_with_cast() -> None:
    sheet = _sheet(
        {
            "account": {"from": "customer_no", "map": {"C001": 1, "C002": "02"}, "cast": "int"},
            "region_name": "region",
        }
    )
    t = Translator.for_check(
        sheet, _check(["company", "customer_no", "region"], ["company_code", "account", "region_name"])
    )
    assert t(("10", "C001", "North")) == ("10", "1", "North")
    assert t(("10", "C002", "North")) == ("10", "2", "North")  # cast: int after the map
    assert t.inverse(("10", "2", "North")) == ("10", "C002", "North")
    assert t(("10", NULL_TEXT, "x")) == ("10", NULL_TEXT, "x")
    assert t(("10", "C999", "x")) == ("10", "C999", "x")  # unlisted: compared as it is, and said
    assert t.notes() == ["1 source group value(s) not in the map of field account: compared untranslated"]


def test_a_cast_int_rename_drops_leading_zeros() -> None:
    t = Translator.for_check(_sheet({"n": {"from": "no", "cast": "int"}}), _check(["no"], ["n"]))
    assert t(("007",)) == ("7",)


@pytest.mark.parametrize(
    ("rule", "says"),
    [
        ({"from": "customer_no", "truncate": 3}, "field account uses truncate (not invertible)"),
        ({"from": "customer_no", "case": "upper"}, "uses case"),
        ({"from": "customer_no", "trim": True}, "uses trim"),
        ({"from": "customer_no", "country": "iso3"}, "uses country"),
        ({"from": "customer_no", "python": "m:f"}, "uses python"),
        ({"from": "customer_no", "cast": "decimal"}, "uses cast: decimal"),
        ({"from": "customer_no", "default": "X"}, "uses default"),
        ({"template": "{customer_no}"}, "field account is written not from a source column"),
        ({"from": "other"}, "field account is written from other"),
        ({"from": "customer_no", "map": {"A": 1, "B": "1"}}, "maps both 'A' and 'B' to '1' (not invertible)"),
        (
            {"from": "customer_no", "map": {"A": 1}, "on_unknown": "default", "map_default": 0},
            "maps unlisted values to `map_default`",
        ),
        ({"from": "customer_no", "map_from": {"file": "m.csv"}}, "uses map_from"),
    ],
)
def test_rules_that_merge_or_invent_values_are_refused(rule: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as info:
        Translator.for_check(_sheet({"account": rule}), _check(["customer_no"], ["account"]), "open_ar")
    assert str(info.value).startswith(
        "check open_ar: group customer_no cannot be translated through sync inv: "
    )
    assert says in str(info.value)
