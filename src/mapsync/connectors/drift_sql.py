"""The drift form's SQL side (connectors/drift_form.py documents the form): each column's text
in PostgreSQL, MariaDB and SQLite, the framing and md5, and the constructs SQLAlchemy has no
function for (`TRIM(TRAILING … FROM …)`, `CONVERT(… USING utf8mb4)`, hex digits as an integer)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles

from mapsync.columns import ColumnInfo

NULL = "-"
SEP = ","


def lit(text: str) -> sa.ColumnElement[Any]:
    """A constant SQL string (our own, never user text), inline so GROUP BY sees one expression."""
    assert "'" not in text and "\\" not in text
    return sa.literal_column(f"'{text}'")


def text_sql(dialect: str, kind: str, info: ColumnInfo, c: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """The column's text form in SQL (NULL stays NULL)."""
    pg, my = dialect == "postgresql", dialect == "mysql"
    as_text: Callable[[sa.ColumnElement[Any]], sa.ColumnElement[Any]] = (
        (lambda e: sa.cast(e, sa.Text))
        if pg
        else (lambda e: sa.cast(e, sa.CHAR))
        if my
        else (lambda e: sa.cast(e, sa.Text))
    )
    if kind == "text":
        return as_text(c)
    if kind == "char":
        return sa.func.rtrim(as_text(c)) if my else sa.func.rtrim(as_text(c), lit(" "))
    if kind == "bool":
        if pg:
            return sa.case((c.is_(None), sa.null()), (c, lit("1")), else_=lit("0"))
        return as_text(sa.cast(c, sa.Integer))
    if kind == "int":
        return as_text(c)
    if kind == "decimal":
        scale = info.scale or 0
        if pg:
            return sa.cast(sa.func.trim_scale(c), sa.Text)
        if my:
            return _my_trim_decimal(c) if scale > 0 else as_text(c)
        if info.scale is None:  # NUMERIC without a scale: the stored number's own text
            text = sa.cast(c, sa.Text)
            return sa.case((sa.func.instr(text, lit(".")) > 0, _sqlite_trim_decimal(text)), else_=text)
        raw: sa.ColumnElement[Any] = sa.func.printf(lit(f"%.{scale}f"), c)
        raw = sa.case((c.is_(None), sa.null()), else_=raw)
        return _sqlite_trim_decimal(raw) if scale > 0 else raw
    if kind == "timestamp":
        if pg:
            inner = sa.func.timezone(lit("UTC"), c) if info.aware else c
            return sa.func.to_char(inner, lit("YYYY-MM-DD HH24:MI:SS.US"))
        if my:
            return sa.func.date_format(c, lit("%Y-%m-%d %H:%i:%s.%f"))
        return sa.func.substr(sa.cast(c, sa.Text), 1, 26)
    if kind == "date":
        if pg:
            return sa.func.to_char(c, lit("YYYY-MM-DD"))
        if my:
            return sa.func.date_format(c, lit("%Y-%m-%d"))
        return sa.func.substr(sa.cast(c, sa.Text), 1, 10)
    if kind == "time":
        if pg:
            return sa.func.to_char(sa.cast(c, sa.Interval), lit("HH24:MI:SS.US"))
        if my:
            return sa.func.time_format(c, lit("%H:%i:%s.%f"))
        return sa.cast(c, sa.Text)
    if kind == "binary":
        if pg:
            return sa.func.encode(c, lit("hex"))
        return sa.case(
            (c.is_(None), sa.null()), else_=sa.func.lower(sa.func.hex(c))
        )  # SQLite: hex(NULL) = ''
    return sa.func.lower(as_text(c))  # uuid


def _my_trim_decimal(c: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """MariaDB: `12.30` → `12.3`, `100.00` → `100` (the column has a scale: a `.` is always there)."""
    return _TrimTrailing(_TrimTrailing(sa.cast(c, sa.CHAR), lit("0")), lit("."))


def _sqlite_trim_decimal(text: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    stripped = sa.func.rtrim(sa.func.rtrim(text, lit("0")), lit("."))
    return sa.case((stripped == lit("-0"), lit("0")), else_=stripped)


def join(dialect: str, parts: Sequence[sa.ColumnElement[Any]]) -> sa.ColumnElement[Any]:
    """`<length>:<text>` per part (NULL: `-`), joined with `,`."""
    length = sa.func.char_length if dialect == "mysql" else sa.func.length
    pieces: list[sa.ColumnElement[Any]] = []
    for i, part in enumerate(parts):
        if i:
            pieces.append(lit(SEP))
        framed = (
            sa.func.concat(length(part), lit(":"), part)
            if dialect == "mysql"
            else (sa.cast(length(part), sa.Text) + lit(":") + part)
        )
        pieces.append(sa.func.coalesce(framed, lit(NULL)))
    if dialect == "mysql":
        return sa.func.concat(*pieces)
    out = pieces[0]
    for p in pieces[1:]:
        out = out + p
    return out


def md5(dialect: str, text: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    if dialect == "mysql":  # the bytes md5 sees: UTF-8, whatever the columns' character sets
        return sa.func.md5(_Utf8(text))
    return sa.func.md5(text)


class _TrimTrailing(sa.sql.functions.FunctionElement[Any]):
    """MariaDB `TRIM(TRAILING what FROM text)`."""

    inherit_cache = True
    type = sa.String()


@compiles(_TrimTrailing)
def _trim_trailing(element: _TrimTrailing, compiler: Any, **kw: Any) -> str:
    text, what = list(element.clauses)
    return f"TRIM(TRAILING {compiler.process(what, **kw)} FROM {compiler.process(text, **kw)})"


class _Utf8(sa.sql.functions.FunctionElement[Any]):
    """MariaDB `CONVERT(text USING utf8mb4)`: md5 of the UTF-8 bytes, as Python hashes them."""

    inherit_cache = True
    type = sa.String()


@compiles(_Utf8)
def _utf8(element: _Utf8, compiler: Any, **kw: Any) -> str:
    return f"CONVERT({compiler.process(next(iter(element.clauses)), **kw)} USING utf8mb4)"


class _HexInt(sa.sql.functions.FunctionElement[Any]):
    """The integer of the first `digits` hex digits of a text (digits <= 15: fits a BIGINT)."""

    inherit_cache = True
    type = sa.BigInteger()

    def __init__(self, text: sa.ColumnElement[Any], digits: int) -> None:
        self.digits = digits
        super().__init__(text)


@compiles(_HexInt, "postgresql")
def _hex_int_pg(element: _HexInt, compiler: Any, **kw: Any) -> str:
    text, n = compiler.process(next(iter(element.clauses)), **kw), element.digits
    return f"(('x' || substr({text}, 1, {n}))::bit({4 * n})::bigint)"


@compiles(_HexInt, "mysql")
def _hex_int_my(element: _HexInt, compiler: Any, **kw: Any) -> str:
    text, n = compiler.process(next(iter(element.clauses)), **kw), element.digits
    return f"CAST(CONV(SUBSTRING({text}, 1, {n}), 16, 10) AS UNSIGNED)"


def hex_int_sql(text: sa.ColumnElement[Any], digits: int) -> sa.ColumnElement[Any]:
    """Server-side `int(text[:digits], 16)` (PostgreSQL, MariaDB; digits <= 15), e.g. a bucket
    or a bucket's order-free checksum over md5 texts."""
    if not 1 <= digits <= 15:
        raise ValueError("digits: 1..15")
    return _HexInt(text, digits)
