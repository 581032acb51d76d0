"""Durations written the way operators write them: 5s, 10m, 24h, 1d, 1h30m."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> dt.timedelta:
    if isinstance(value, dt.timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration like 5s, 10m, 24h")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return _span(value, value)
    if not isinstance(value, str):
        raise ValueError("expected a duration like 5s, 10m, 24h")
    text = value.strip().replace(" ", "")
    pos, seconds = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        seconds += float(match.group(1)) * _UNIT[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"'{value}' is not a duration (write e.g. 5s, 10m, 24h, 1h30m)")
    return _span(seconds, value)


MAX_SILENCE = dt.timedelta(days=366)


def parse_silence(value: Any) -> dt.timedelta:
    """How long an alert is silenced (`mapsync alerts silence --for`, the dashboard's Silence):
    a duration more than 0 and at most a year (ValueError otherwise)."""
    span = parse_duration(value)
    if span <= dt.timedelta(0):
        raise ValueError("silence for more than 0 (e.g. 2h)")
    if span > MAX_SILENCE:
        raise ValueError("silence for at most 366d (acknowledge it, or turn the monitor off)")
    return span


def _span(seconds: float, written: Any) -> dt.timedelta:
    try:
        return dt.timedelta(seconds=seconds)
    except (OverflowError, ValueError):  # beyond timedelta's range, or not a number (.nan)
        raise ValueError(f"{written!r} is not a usable duration") from None


def format_duration(value: dt.timedelta) -> str:
    seconds = value.total_seconds()
    for unit in ("d", "h", "m", "s"):
        size = _UNIT[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds}s"


Duration = Annotated[
    dt.timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]
