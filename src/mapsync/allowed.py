"""Allowed values as text: the one-column list CHECK a catalog holds, parsed, and the check of a
value against a column's allowed values (pure helpers below the connectors, which read the
catalog, and the mapping compiler, which checks values before sending).

The CHECK forms understood: `col IN ('A', 'B')` (MariaDB, SQLite) or PostgreSQL's rewrite of it,
`col = ANY (ARRAY['A'::text, 'B'::text])`. Any other CHECK (with AND/OR, ranges, functions) is
left to the database.
"""

from __future__ import annotations

import decimal
import re
from typing import Any

_IDENT = r"""[`"]?(?P<col>[^`"\s():]+)[`"]?"""
_CAST = r"(?:::[a-z ]+(?:\(\d+\))?(?:\[\])?)?"
_IN = re.compile(rf"^\(*\s*\(?{_IDENT}\)?{_CAST}\s+in\s*\((?P<items>.*?)\)\s*\)*$", re.I | re.S)
_ANY = re.compile(
    rf"^\(*\s*\(?{_IDENT}\)?{_CAST}\s*=\s*any\s*\(\s*\(?\s*array\s*\[(?P<items>.*?)\]\s*\)?{_CAST}\s*\)\s*\)*$",
    re.I | re.S,
)
_ITEM = re.compile(rf"\s*(?:'(?P<text>(?:[^'\\]|''|\\.)*)'|(?P<num>-?\d+(?:\.\d+)?)){_CAST}\s*(?:,|$)", re.I)


def parse_check(sqltext: str) -> tuple[str, tuple[str, ...]] | None:
    """(column, allowed values as text) of a one-column list CHECK, or None for any other."""
    text = sqltext.strip()
    match = _IN.match(text) or _ANY.match(text)
    if match is None:
        return None
    items, values, pos = match.group("items"), [], 0
    while pos < len(items):
        item = _ITEM.match(items, pos)
        if item is None or item.end() == pos:
            return None  # something other than plain literals: not ours to judge
        literal = item.group("text")
        values.append(_unquote(literal) if literal is not None else item.group("num"))
        pos = item.end()
    return (match.group("col"), tuple(values)) if values else None


def _unquote(text: str) -> str:
    """A SQL literal's content: `''` (standard) and `\\'` (MariaDB's catalog) are one quote."""
    return re.sub(r"''|\\(.)", lambda m: m.group(1) or "'", text)


def is_allowed(value: Any, allowed: frozenset[str]) -> bool:
    """Whether `value`, as text (a number also by its numeric value), is one of `allowed`."""
    if str(value) in allowed:
        return True
    if isinstance(value, int | float | decimal.Decimal) and not isinstance(value, bool):
        try:
            number = decimal.Decimal(str(value))
            return any(number == decimal.Decimal(a) for a in allowed if _is_number(a))
        except decimal.InvalidOperation:
            return False
    return False


def _is_number(text: str) -> bool:
    return re.fullmatch(r"-?\d+(?:\.\d+)?", text) is not None
