"""`python:` rules used by tests/mappings/python.yaml and tests/unit/test_mapping.py."""

from __future__ import annotations

from typing import Any


def initials(value: Any, row: dict[str, Any]) -> str:
    """First letters of `first` and `last`."""
    return f"{str(row['first'])[:1]}{str(row['last'])[:1]}".upper()


def even(value: Any, row: dict[str, Any]) -> Any:
    if value is None:
        return None
    if int(value) % 2:
        raise ValueError(f"{value} is odd")
    return value


def crash(value: Any, row: dict[str, Any]) -> Any:
    return row["no such column"]


def count_calls(value: Any, row: dict[str, Any]) -> Any:
    return value.upper()


def fussy(value: Any, row: dict[str, Any]) -> Any:
    """Fails in every way a hook can: ValueError, other exceptions, or returns the value."""
    if isinstance(value, str) and value.startswith("v"):
        raise ValueError("starts with v")
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        return 1 // 0
    return value


NOT_A_FUNCTION = 42
