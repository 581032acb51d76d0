"""The exact conversion of a value to a kind (`cast`, the bounds of `min`/`max`, lookups' keys):
below the layers, so the sheet's checks and the mapping rules convert alike."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}


def plain_decimal(value: decimal.Decimal) -> str:
    """A finite decimal as plain digits: no exponent, no trailing fractional zeros, no trailing
    `.`, zero as `0` (`12.30` → `12.3`, `100.00` → `100`, `-0.00` → `0`): the drift digest's
    decimal form and a reconcile group's, one text."""
    if value == 0:
        return "0"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def convert(value: Any, kind: str, scale: int | None = None) -> Any:
    """Exact conversion; raises ValueError for a value that does not convert."""
    if kind == "str":
        return value if isinstance(value, str) else str(value)
    if kind == "decimal":
        if isinstance(value, float):
            value = repr(value)  # the shortest text of the float, not its binary expansion
        result = decimal.Decimal(str(value).strip())
        if not result.is_finite():
            raise ValueError("not finite")
        if scale is not None:
            result = result.quantize(decimal.Decimal(1).scaleb(-scale), rounding=decimal.ROUND_HALF_UP)
        return result
    if kind == "int":
        if isinstance(value, bool):
            return int(value)
        number = decimal.Decimal(str(value).strip())
        if number != number.to_integral_value():
            raise ValueError("has a fraction")
        return int(number)
    if kind == "float":
        return float(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError("not a boolean")
    if kind == "datetime":
        if isinstance(value, dt.datetime):
            return value
        if isinstance(value, dt.date):
            return dt.datetime(value.year, value.month, value.day)  # noqa: DTZ001
        return dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    if kind == "date":
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        return dt.date.fromisoformat(str(value).strip()[:10])
    raise ValueError(kind)
