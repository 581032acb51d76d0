"""`sql_exists.same`: whether the destination holds a value as mapsync would write it, across the
forms drivers return (the test `on_exists: skip|fail` relies on: equal is rewritten, changed is
left alone or refused)."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import pytest

from mapsync.connectors.sql_exists import _started, same

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
    assert same(a, b) and same(b, a)


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
    assert not same(a, b) and not same(b, a)


def test_a_row_is_started_only_when_it_differs_from_what_mapsync_writes() -> None:
    """Without `started`, any difference; with it, a differing row that matches the condition. A
    row identical to mapsync's write is its own delivery (a rerun after a crash): never started."""
    held = {"portal_ref": 7, "customer": "ACME  ", "status": "new", "doc_no": 5003}  # doc_no: the ERP's own
    assert not _started(held, {"portal_ref": 7, "customer": "ACME", "status": "new"}, None)
    assert _started(held, {"portal_ref": 7, "customer": "ACME", "status": "new", "zip": "12345"}, None)
    assert _started(held, {"portal_ref": 7, "customer": "ACME", "status": "picked"}, None)
    flagged = {**held, "mapsync__started": 1}
    assert not _started(flagged, {"portal_ref": 7, "customer": "ACME", "status": "new"}, "status <> 'new'")
    assert _started(flagged, {"portal_ref": 7, "customer": "ACMX", "status": "new"}, "status <> 'new'")
    assert not _started({**held, "mapsync__started": 0}, {"portal_ref": 7, "customer": "ACMX"}, "x")
