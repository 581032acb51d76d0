"""Allowed values a destination declares, read from its catalog so they are checked before sending.

Two sources: a column type that lists its values (MariaDB/MySQL `ENUM(...)`, PostgreSQL enum
types), and CHECK constraints of the one-column list form: `col IN ('A', 'B')` (MariaDB, SQLite)
or PostgreSQL's rewrite of it, `col = ANY (ARRAY['A'::text, 'B'::text])`. Any other CHECK (with
AND/OR, ranges, functions) is left to the database.
"""

from __future__ import annotations

import decimal
import re
from typing import Any

import sqlalchemy as sa

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


def _check_texts(conn: sa.Connection, table: sa.Table) -> list[str]:
    """The CHECK clauses of `table`. MariaDB keeps column-level ones where SQLAlchemy's
    reflection does not look, so its catalog is asked directly."""
    if conn.dialect.name == "mysql":
        try:
            rows = conn.execute(
                sa.text(
                    "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
                    "WHERE CONSTRAINT_SCHEMA = COALESCE(:schema, DATABASE()) AND TABLE_NAME = :table"
                ),
                {"schema": table.schema, "table": table.name},
            )
            return [str(r[0]) for r in rows]
        except sa.exc.DBAPIError:  # MySQL's CHECK_CONSTRAINTS has no TABLE_NAME
            conn.rollback()
    try:
        found = sa.inspect(conn).get_check_constraints(table.name, schema=table.schema)
    except NotImplementedError:
        return []
    return [str(c.get("sqltext") or "") for c in found]


def allowed_values(conn: sa.Connection, table: sa.Table) -> dict[str, tuple[str, ...]]:
    """Column → allowed values, from enum types and list CHECK constraints of `table`."""
    out: dict[str, tuple[str, ...]] = {}
    for col in table.columns:
        enums = getattr(col.type, "enums", None)
        if enums:
            out[col.name] = tuple(str(e) for e in enums)
    for text in _check_texts(conn, table):
        parsed = parse_check(text)
        if parsed is None or parsed[0] not in table.columns:
            continue
        column, values = parsed
        if column in out:  # two lists: only what both allow
            values = tuple(v for v in out[column] if v in set(values))
        out[column] = values
    return out


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
