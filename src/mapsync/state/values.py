"""Typed, exact text encoding of cursor and version values (never rounded)."""

from __future__ import annotations

import datetime as dt
import decimal
import json
from typing import Any

_ENCODER = json.JSONEncoder(separators=(",", ":"))  # reused: json.dumps(**options) builds one per call


def encode(value: Any) -> str:
    return _ENCODER.encode(_tag(value))


def _tag(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return {"float": repr(value)}
    if isinstance(value, dt.datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"date": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        return {"decimal": str(value)}
    if isinstance(value, list | tuple):
        return [_tag(v) for v in value]
    if isinstance(value, dict):
        return {"object": {k: _tag(v) for k, v in value.items()}}
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    return str(value)


def decode(text: str | None) -> Any:
    if text is None:
        return None
    return _untag(json.loads(text))


def _untag(value: Any) -> Any:
    if isinstance(value, list):
        return [_untag(v) for v in value]
    if isinstance(value, dict):
        ((kind, raw),) = value.items()
        if kind == "datetime":
            return dt.datetime.fromisoformat(raw)
        if kind == "date":
            return dt.date.fromisoformat(raw)
        if kind == "decimal":
            return decimal.Decimal(raw)
        if kind == "float":
            return float(raw)
        if kind == "bytes":
            return bytes.fromhex(raw)
        if kind == "object":
            return {k: _untag(v) for k, v in raw.items()}
    return value
