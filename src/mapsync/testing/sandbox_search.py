"""The sandbox's searchstring parser and evaluator.

Documented: `searchlike~f~v`, `searchexact~f~v`, `searchbetween~f~a~b`,
`searchgreatherthanequal~f~v`, `|and|`, `|or|`, parentheses, `<<date>>`, `<<dateadd:days:-10>>`.
Inferred (marked): `searchlike` matches a substring, case-insensitively (SQL `LIKE '%v%'` on a
case-insensitive collation); `searchexact` is case-insensitive too; `|and|` binds tighter than
`|or|`; dates compare as dates (ISO or `M/D/YYYY`), numbers as numbers, the rest as text; values
are percent-decoded one by one (the escaping of `~|()/` in values is not documented).
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

from mapsync import errors
from mapsync.rest.source import to_time

Predicate = Callable[[dict[str, Any]], bool]
_SPLIT = re.compile(r"(\|and\||\|or\||\(|\))", re.IGNORECASE)
_DATEADD = re.compile(r"^<<dateadd:(days|hours|minutes):(-?\d+)>>$", re.IGNORECASE)
_ENCODED = re.compile(r"%7C|%28|%29", re.IGNORECASE)
_DATE_HEAD = re.compile(r"~\d{1,2}/\d{1,2}$")


def split_path(rest: list[str]) -> tuple[str, str]:
    """Split `{searchstring}/{page}`. The docs' own example puts `1/1/2021` in the searchstring,
    so slashes may belong to it (INFERRED): a last, numeric segment is the page unless it
    completes a `~M/D/YYYY` date."""
    if not rest:
        return "", ""
    if len(rest) == 1:
        return ("", rest[0]) if rest[0].isdigit() else (rest[0], "")
    head = "/".join(rest[:-1])
    if rest[-1].isdigit() and not _DATE_HEAD.search(head):
        return head, rest[-1]
    return "/".join(rest), ""


class SearchError(ValueError):
    """A searchstring the sandbox cannot read (answered with 400)."""


def parse(text: str) -> Predicate:
    """A predicate over records for a raw (still percent-encoded) searchstring. INFERRED: an
    encoded `|`, `(` or `)` (%7C, %28, %29, as a client's URL quoting makes them) counts as the
    plain character, so `|or|` and parentheses work either way."""
    text = _ENCODED.sub(lambda m: urllib.parse.unquote(m.group(0)), text)
    tokens = [t for t in _SPLIT.split(text) if t != ""]
    pos = 0

    def peek() -> str | None:
        return tokens[pos].lower() if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def expr() -> Predicate:
        parts = [conj()]
        while peek() == "|or|":
            take()
            parts.append(conj())
        return parts[0] if len(parts) == 1 else (lambda r: any(p(r) for p in parts))

    def conj() -> Predicate:
        parts = [atom()]
        while peek() == "|and|":
            take()
            parts.append(atom())
        return parts[0] if len(parts) == 1 else (lambda r: all(p(r) for p in parts))

    def atom() -> Predicate:
        token = peek()
        if token is None:
            raise SearchError("searchstring ends too early")
        if token == "(":
            take()
            inner = expr()
            if peek() != ")":
                raise SearchError("missing `)` in searchstring")
            take()
            return inner
        return term(take())

    result = expr()
    if pos != len(tokens):
        raise SearchError(f"unexpected {tokens[pos]!r} in searchstring")
    return result


def term(text: str) -> Predicate:
    parts = text.split("~")
    op = parts[0].lower()
    if op not in ("searchlike", "searchexact", "searchbetween", "searchgreatherthanequal") or len(parts) < 3:
        raise SearchError(f"unknown search term {text!r}")
    field = parts[1]
    values = [_value(urllib.parse.unquote(v)) for v in parts[2:]]
    if op == "searchbetween":
        if len(values) != 2:
            raise SearchError("searchbetween takes two values")
        low, high = values
        return lambda r: _cmp(r.get(field), low) >= 0 and _cmp(r.get(field), high) <= 0
    if len(values) != 1:
        raise SearchError(f"{op} takes one value")
    want = values[0]
    if op == "searchexact":
        return lambda r: _text(r.get(field)).lower() == want.lower()
    if op == "searchlike":
        return lambda r: want.lower() in _text(r.get(field)).lower()
    return lambda r: r.get(field) not in (None, "") and _cmp(r.get(field), want) >= 0


def _value(text: str) -> str:
    today = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    if text.lower() == "<<date>>":
        return today.replace(hour=0, minute=0, second=0, microsecond=0).isoformat()
    match = _DATEADD.match(text)
    if match:
        unit, n = match.group(1).lower(), int(match.group(2))
        moment = today + dt.timedelta(**{unit: n})
        return (
            moment.replace(hour=0, minute=0, second=0, microsecond=0) if unit == "days" else moment
        ).isoformat()
    return text


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _cmp(value: Any, other: str) -> int:
    a, b = _text(value), other
    ta, tb = _time(a), _time(b)
    if ta is not None and tb is not None:
        return (ta > tb) - (ta < tb)
    try:
        fa, fb = float(a), float(b)
        return (fa > fb) - (fa < fb)
    except ValueError:
        pass
    a, b = a.lower(), b.lower()
    return (a > b) - (a < b)


def _time(text: str) -> dt.datetime | None:
    if not text or not (("-" in text and text[:4].isdigit()) or "/" in text):
        return None
    try:
        return to_time(text)
    except errors.MapsyncError:
        return None


def query_page(
    rows: list[dict[str, Any]], key_field: str, query: dict[str, str], page_size: int
) -> tuple[int, Any]:
    """Not CIMcloud's (its reads carry no query string): the generic REST connector's
    dialect, so a `kind: rest` source can read the sandbox too: `?page=N&per_page=M` (page 1
    first) and `?keys=a,b` (user keys, comma-separated)."""
    try:
        size = int(query.get("per_page", page_size))
        page = int(query.get("page", 1))
    except ValueError:
        return 400, {"message": "page and per_page must be numbers"}
    if "keys" in query:
        wanted = {k.lower() for k in query["keys"].split(",")}
        rows = [r for r in rows if str(r.get(key_field, "")).lower() in wanted]
    return 200, rows[(max(1, page) - 1) * size : max(1, page) * size]
