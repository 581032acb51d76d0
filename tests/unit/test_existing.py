"""`existing._same`: whether the destination holds a value as mapsync would write it, across the
forms drivers return (the test `on_exists: skip|fail` relies on: equal is rewritten, changed is
left alone or refused)."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import pytest

from mapsync.existing import _same, _same_row

UTC = dt.UTC


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param(decimal.Decimal("1.50"), 1.5, id="decimal-float"),
        pytest.param(3, decimal.Decimal("3.000"), id="int-decimal"),
        pytest.param(1, True, id="int-bool"),
        pytest.param("AB", "AB   ", id="char-padding"),
        pytest.param(
            dt.datetime(2026, 1, 2, 3, 4),  # noqa: DTZ001 (a naive time is the point)
            dt.datetime(2026, 1, 2, 3, 4, tzinfo=UTC),
            id="naive-aware",
        ),
        pytest.param(12345, "12345", id="number-as-text"),
        pytest.param(None, None, id="both-null"),
    ],
)
def test_the_same_value_in_another_form(a: Any, b: Any) -> None:
    assert _same(a, b) and _same(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param("new", "picked", id="text"),
        pytest.param(None, "", id="null-empty"),
        pytest.param(0, None, id="zero-null"),
        pytest.param(decimal.Decimal("1.5"), 1.51, id="decimal"),
        pytest.param(
            dt.datetime(2026, 1, 2, 3, 4),  # noqa: DTZ001
            dt.datetime(2026, 1, 2, 3, 5, tzinfo=UTC),
            id="time",
        ),
        pytest.param(" x", "x", id="leading-space"),
        pytest.param(decimal.Decimal("NaN"), decimal.Decimal("NaN"), id="nan"),
    ],
)
def test_a_changed_value(a: Any, b: Any) -> None:
    assert not _same(a, b) and not _same(b, a)


def test_a_row_is_the_same_when_every_written_column_is() -> None:
    held = {"portal_ref": 7, "customer": "ACME  ", "status": "new", "doc_no": 5003}  # doc_no: the ERP's own
    assert _same_row({"portal_ref": 7, "customer": "ACME", "status": "new"}, held)
    assert not _same_row({"portal_ref": 7, "customer": "ACME", "status": "new", "zip": "12345"}, held)
    assert not _same_row({"portal_ref": 7, "customer": "ACME", "status": "picked"}, held)
