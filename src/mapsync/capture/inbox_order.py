"""Which of two inbox events of one key is newer: the order value of an event is the sheet's
`changes.version_field` (numbers, or timestamps as ISO text) or, without one, the signed Unix
timestamp of its webhook. Values that cannot be compared (missing, of different kinds) never
make an event older: it is applied, as before ordering existed."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

_KINDS = (int, float, decimal.Decimal)


def _number(value: str) -> decimal.Decimal | None:
    try:
        number = decimal.Decimal(value.strip())
    except decimal.InvalidOperation:
        return None
    return number if number.is_finite() else None


def _time(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def older(a: Any, b: Any) -> bool:
    """Whether order value `a` is strictly older than `b` (False when they cannot be compared)."""
    if a is None or b is None or isinstance(a, bool) or isinstance(b, bool):
        return False
    if isinstance(a, _KINDS) and isinstance(b, _KINDS):
        da, db = decimal.Decimal(str(a)), decimal.Decimal(str(b))
        return not (da.is_nan() or db.is_nan()) and da < db  # JSON may carry NaN
    if isinstance(a, str) and isinstance(b, str):
        na, nb = _number(a), _number(b)
        if na is not None and nb is not None:
            return na < nb
    ta, tb = _time(a), _time(b)
    if ta is not None and tb is not None:
        return ta < tb
    return False


def order_of(data: dict[str, Any] | None, version: Any, field: str | None, signed_at: int | None) -> Any:
    """An event's order value: `field` of its record (else the payload's `version`) when the
    sheet names one, else the signed timestamp."""
    if field is None:
        return signed_at
    if data is not None and data.get(field) is not None:
        return data[field]
    return version
