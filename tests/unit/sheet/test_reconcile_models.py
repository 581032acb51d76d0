"""The `reconcile:` models: business and drift checks, sides, exact tolerances."""

from __future__ import annotations

import decimal
from typing import Any

import pytest
from pydantic import ValidationError

from mapsync.sheet.reconcile_models import ReconcileCheck, Side, Tolerance

D = decimal.Decimal
ERP = {"connection": "erp", "table": "invoices", "group": "customer_no", "sum": "balance"}
PORTAL = {"connection": "portal", "table": "accounts", "group": "ref_id", "sum": "open_balance"}


def test_a_business_check_and_a_drift_check() -> None:
    check = ReconcileCheck.model_validate({"sync": "invoices", "source": ERP, "dest": PORTAL})
    assert check.kind == "business" and check.source is not None and check.source.group == ["customer_no"]
    assert check.missing == "zero" and check.tolerance is None and check.max_calls == 20
    drift = ReconcileCheck.model_validate({"drift": "invoices", "schedule": {"every": "1h"}})
    assert drift.kind == "drift" and drift.schedule is not None and drift.schedule.every is not None


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"source": ERP}, "both `source` and `dest`"),
        ({"source": ERP, "dest": PORTAL, "drift": "invoices"}, "or a drift check"),
        ({}, "give `source` and `dest`"),
        ({"drift": "invoices", "sync": "invoices"}, "names its sync in `drift`"),
        ({"source": ERP, "dest": {**PORTAL, "group": ["a", "b"]}}, "as many columns"),
        ({"drift": "x", "schedule": {}}, "give one of"),
    ],
)
def test_a_check_of_neither_or_both_kinds_is_refused(data: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        ReconcileCheck.model_validate(data)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"connection": "erp", "group": "c", "sum": "b"}, "exactly one of `table`"),
        (
            {"connection": "erp", "table": "t", "resource": "R", "group": "c", "sum": "b"},
            "exactly one of `table`",
        ),
        ({"connection": "erp", "table": "t", "group": "c"}, "`sum: COLUMN` or `count: true`"),
        ({"connection": "erp", "table": "t", "group": "c", "sum": "b", "count": True}, "`sum: COLUMN`"),
        ({"connection": "erp", "query": "SELECT 1", "group": "c", "sum": "b"}, "computes its own value"),
        (
            {"connection": "erp", "table": "t", "group": "c", "count": True, "where": {"a": 1}},
            "SQL condition",
        ),
        (
            {"connection": "api", "resource": "R", "group": "c", "count": True, "where": "a = 1"},
            "field: value",
        ),
        ({"connection": "erp", "table": "t", "group": [], "count": True}, "at least one"),
    ],
)
def test_a_side_names_one_source_and_one_value(data: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        Side.model_validate(data)


def test_tolerances_are_exact_decimals() -> None:
    absolute = Tolerance.model_validate({"absolute": 0.01})  # a YAML float, read as its text
    assert absolute.absolute == D("0.01")
    assert absolute.matches(D("100.00"), D("100.01")) and not absolute.matches(D("100.00"), D("100.011"))
    relative = Tolerance.model_validate({"relative": "0.001"})
    assert relative.matches(D("1000"), D("1001")) and not relative.matches(D("1000"), D("1001.01"))
    assert relative.matches(D("-1000"), D("-999"))
    with pytest.raises(ValidationError, match="one of `absolute` or `relative`"):
        Tolerance.model_validate({"absolute": 1, "relative": "0.1"})
