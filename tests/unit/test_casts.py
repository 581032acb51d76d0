"""`casts.plain_decimal`: the one plain-decimal text of the drift digest and of reconcile groups."""

from __future__ import annotations

import decimal

import pytest

from mapsync.casts import plain_decimal
from mapsync.connectors import drift_form
from mapsync.sheet.reconcile_checks import group_text

D = decimal.Decimal


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("12.30", "12.3"),
        ("100.00", "100"),
        ("-0.00", "0"),
        ("0E-7", "0"),
        ("1E+3", "1000"),
        ("-5.050", "-5.05"),
    ],
)
def test_plain_decimal_and_its_two_users_agree(value: str, text: str) -> None:
    assert plain_decimal(D(value)) == text
    assert group_text(D(value)) == text
    assert drift_form._plain(D(value)) == text
