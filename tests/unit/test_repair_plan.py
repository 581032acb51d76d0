"""repair_plan's pure parts: a destination's key value in the source column's type."""

from __future__ import annotations

import decimal

from mapsync.repair_plan import as_type


def test_values_take_the_source_columns_type() -> None:
    assert as_type(int, "42") == 42
    assert as_type(str, 42) == "42"
    assert as_type(decimal.Decimal, "12.30") == decimal.Decimal("12.30")


def test_values_that_do_not_convert_stay_as_they_are() -> None:
    assert as_type(int, "C10013") == "C10013"
    assert as_type(decimal.Decimal, "n/a") == "n/a"
    assert as_type(None, "7") == "7"
    assert as_type(int, None) is None
