"""CIMcloud searchstrings: `searchexact~field~value`, `|and|`, `|or|`, parentheses.

Operators as documented (help.cimcloud.com, "searchgreatherthanequal" misspelled like that):
`searchlike`, `searchexact`, `searchbetween`, `searchgreatherthanequal`. How a value holding `~`,
`|`, `(`, `)` or `/` is escaped is NOT documented: values are percent-encoded here (operators stay
literal in the URL), which the sandbox decodes per value. An inference, marked in docs/rest.md.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from typing import Any

OPERATORS = ("searchlike", "searchexact", "searchbetween", "searchgreatherthanequal")


def escape(value: Any) -> str:
    """One value, percent-encoded so it cannot end a term (`~`, `|`, `(`, `)`, `/`)."""
    return urllib.parse.quote(str(value), safe="").replace("~", "%7E")


def term(op: str, field: str, *values: Any) -> str:
    if op not in OPERATORS:
        raise ValueError(f"unknown searchstring operator {op!r} (known: {', '.join(OPERATORS)})")
    if not field or any(c in field for c in "~|()/ "):
        raise ValueError(f"{field!r} is not a field name")
    need = 2 if op == "searchbetween" else 1
    if len(values) != need:
        raise ValueError(f"{op} takes {need} value(s)")
    return "~".join([op, field, *(escape(v) for v in values)])


def exact(field: str, value: Any) -> str:
    return term("searchexact", field, value)


def at_least(field: str, value: Any) -> str:
    return term("searchgreatherthanequal", field, value)


def all_of(*terms: str) -> str:
    return "|and|".join(_group(t) for t in terms if t)


def any_of(*terms: str) -> str:
    return "|or|".join(_group(t) for t in terms if t)


def _group(text: str) -> str:
    """Parenthesised when it holds a logic operator, so `|and|`/`|or|` mix safely."""
    return f"({text})" if "|and|" in text or "|or|" in text else text


def keys(fields: Sequence[str], values: Sequence[Sequence[Any]]) -> str:
    """Records with one of these (compound) keys: `(exact…|and|exact…)|or|(…)`."""
    return any_of(*(all_of(*(exact(f, v) for f, v in zip(fields, key, strict=True))) for key in values))
