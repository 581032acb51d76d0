"""Values as the strings a REST API that wants strings expects (writes and read-back compares)."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any


def as_text(value: Any) -> str:
    """A value as the string an API that wants strings expects; NULL is `""` (clears it)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return str(value)
