"""The drift digest (issue 18): a documented text form of a destination row's owned columns,
hashed with md5, that Python computes from the values mapsync writes and PostgreSQL/MariaDB
compute server-side from the stored row — so a drift check compares the destination with the
ledger without downloading it.

Text form, FORM_VERSION 1. Each column's value becomes a text by its kind (from the catalog's
`ColumnInfo`), then `<char length>:<text>`; NULL is `-` (so NULL and '' (`0:`) differ); the
columns are joined with `,`:

- text/varchar: as stored; CHAR(n) (PAD SPACE): trailing spaces removed
- integers: decimal digits; booleans (PostgreSQL boolean, MariaDB tinyint(1)): `1`/`0`
- decimals: rounded to the column's scale (half away from zero, as the databases store them),
  then plain digits without trailing fractional zeros or a trailing `.` (`12.30` → `12.3`,
  `100.00` → `100`, `-0.0` → `0`), never an exponent
- date `YYYY-MM-DD`; timestamp `YYYY-MM-DD HH:MM:SS.ffffff` (always 6 fraction digits, after the
  column's own fitting: sql_time.time_fitter; timestamptz in UTC); time `HH:MM:SS.ffffff`
- binary: lowercase hex; UUID: the lowercase hyphenated form
- float/double, JSON and kinds without a Python type: NOT digested (a float's text differs
  between servers and Python); such columns are left out and named in `DriftForm.notes`

`digest` = md5 hex of the form over the digested owned columns in sorted name order; `dkey` =
md5 hex of the form over the destination key columns in key order. SQLite has no md5: `sql()`
returns the joined text there and the client hashes it (`client_hash`).
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles

from mapsync.columns import ColumnInfo
from mapsync.sheet import models
from mapsync.sql_time import time_fitter

FORM_VERSION = 1
NULL = "-"
SEP = ","

Col = Callable[[str], sa.ColumnElement[Any]]

_INT_TYPES = ("INT", "SERIAL")


def kind_of(info: ColumnInfo) -> str | None:
    """The form's kind of a column, None when it is not digested."""
    py, name = info.python_type, info.type_name.upper()
    if py is bool:
        return "bool"
    if py is int or (py is None and any(t in name for t in _INT_TYPES)):
        return "int"
    if py is decimal.Decimal:
        return None if name.startswith(("FLOAT", "DOUBLE", "REAL")) else "decimal"
    if py is str:
        return "char" if name.startswith(("CHAR", "NCHAR", "BPCHAR")) and "VARYING" not in name else "text"
    if py is dt.datetime:
        return "timestamp"
    if py is dt.date:
        return "date"
    if py is dt.time:
        return "time"
    if py is bytes:
        return "binary"
    if py is uuid.UUID:
        return "uuid"
    return None


def _plain(value: decimal.Decimal) -> str:
    """A decimal as plain digits: no exponent, no trailing fractional zeros, no trailing `.`."""
    if value == 0:
        return "0"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


class _Column:
    """One column's Python text form (the stored value's, as the form documents it)."""

    def __init__(self, info: ColumnInfo, kind: str) -> None:
        self.info, self.kind = info, kind
        self.quantum = (
            decimal.Decimal(1).scaleb(-info.scale) if kind == "decimal" and info.scale is not None else None
        )
        self.fit = (
            time_fitter(info.name, zone=info.time_zone, fraction=info.fraction)
            if kind == "timestamp"
            else None
        )

    def text(self, value: Any) -> str | None:
        if value is None:
            return None
        kind = self.kind
        if kind in ("text", "char"):
            text = value if isinstance(value, str) else str(value)
            return text.rstrip(" ") if kind == "char" else text
        if kind in ("int", "bool"):
            return str(int(value))
        if kind == "decimal":
            number = value if isinstance(value, decimal.Decimal) else decimal.Decimal(str(value))
            if self.quantum is not None:
                number = number.quantize(self.quantum, rounding=decimal.ROUND_HALF_UP)
            return _plain(number)
        if kind == "timestamp":
            return self._timestamp(value)
        if kind == "date":
            return (value.date() if isinstance(value, dt.datetime) else value).isoformat()
        if kind == "time":
            return str(value.strftime("%H:%M:%S.%f"))
        if kind == "binary":
            return bytes(value).hex()
        return str(value).lower()  # uuid

    def _timestamp(self, value: dt.datetime) -> str:
        if self.fit is not None:
            value, _ = self.fit(value)
        if value.tzinfo is not None:  # a timestamptz column keeps the instant: shown in UTC
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")


def _lit(text: str) -> sa.ColumnElement[Any]:
    """A constant SQL string (our own, never user text), inline so GROUP BY sees one expression."""
    assert "'" not in text and "\\" not in text
    return sa.literal_column(f"'{text}'")


def _text_sql(dialect: str, kind: str, info: ColumnInfo, c: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
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
        return sa.func.rtrim(as_text(c)) if my else sa.func.rtrim(as_text(c), _lit(" "))
    if kind == "bool":
        if pg:
            return sa.case((c.is_(None), sa.null()), (c, _lit("1")), else_=_lit("0"))
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
            return sa.case((sa.func.instr(text, _lit(".")) > 0, _sqlite_trim_decimal(text)), else_=text)
        raw: sa.ColumnElement[Any] = sa.func.printf(_lit(f"%.{scale}f"), c)
        raw = sa.case((c.is_(None), sa.null()), else_=raw)
        return _sqlite_trim_decimal(raw) if scale > 0 else raw
    if kind == "timestamp":
        if pg:
            inner = sa.func.timezone(_lit("UTC"), c) if info.aware else c
            return sa.func.to_char(inner, _lit("YYYY-MM-DD HH24:MI:SS.US"))
        if my:
            return sa.func.date_format(c, _lit("%Y-%m-%d %H:%i:%s.%f"))
        return sa.func.substr(sa.cast(c, sa.Text), 1, 26)
    if kind == "date":
        if pg:
            return sa.func.to_char(c, _lit("YYYY-MM-DD"))
        if my:
            return sa.func.date_format(c, _lit("%Y-%m-%d"))
        return sa.func.substr(sa.cast(c, sa.Text), 1, 10)
    if kind == "time":
        if pg:
            return sa.func.to_char(sa.cast(c, sa.Interval), _lit("HH24:MI:SS.US"))
        if my:
            return sa.func.time_format(c, _lit("%H:%i:%s.%f"))
        return sa.cast(c, sa.Text)
    if kind == "binary":
        if pg:
            return sa.func.encode(c, _lit("hex"))
        return sa.case(
            (c.is_(None), sa.null()), else_=sa.func.lower(sa.func.hex(c))
        )  # SQLite: hex(NULL) = ''
    return sa.func.lower(as_text(c))  # uuid


def _my_trim_decimal(c: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """MariaDB: `12.30` → `12.3`, `100.00` → `100` (the column has a scale: a `.` is always there)."""
    return _TrimTrailing(_TrimTrailing(sa.cast(c, sa.CHAR), _lit("0")), _lit("."))


def _sqlite_trim_decimal(text: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    stripped = sa.func.rtrim(sa.func.rtrim(text, _lit("0")), _lit("."))
    return sa.case((stripped == _lit("-0"), _lit("0")), else_=stripped)


def _join(dialect: str, parts: Sequence[sa.ColumnElement[Any]]) -> sa.ColumnElement[Any]:
    """`<length>:<text>` per part (NULL: `-`), joined with `,`."""
    length = sa.func.char_length if dialect == "mysql" else sa.func.length
    pieces: list[sa.ColumnElement[Any]] = []
    for i, part in enumerate(parts):
        if i:
            pieces.append(_lit(SEP))
        framed = (
            sa.func.concat(length(part), _lit(":"), part)
            if dialect == "mysql"
            else (sa.cast(length(part), sa.Text) + _lit(":") + part)
        )
        pieces.append(sa.func.coalesce(framed, _lit(NULL)))
    if dialect == "mysql":
        return sa.func.concat(*pieces)
    out = pieces[0]
    for p in pieces[1:]:
        out = out + p
    return out


def _md5(dialect: str, text: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    if dialect == "mysql":  # the bytes md5 sees: UTF-8, whatever the columns' character sets
        return sa.func.md5(_Utf8(text))
    return sa.func.md5(text)


def frame(texts: Sequence[str | None]) -> str:
    """The joined form of column texts (None: NULL)."""
    return SEP.join(NULL if t is None else f"{len(t)}:{t}" for t in texts)


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def bucket(dkey: str, buckets: int) -> int:
    """The bucket of a row by its dkey, as `DriftForm.bucket_sql` computes it."""
    return int(dkey[:8], 16) % buckets


def owned_columns(cfg: models.SyncConfig) -> list[str]:
    """The columns a sync owns in its destination's main table: the key and every `fields:`
    column. (`deletes.field` is left out: upserts do not write it, so the destination's value
    is not what mapsync delivered; child tables are not compared.)"""
    return list(dict.fromkeys([*cfg.key.to, *cfg.fields]))


def for_sync(cfg: models.SyncConfig, columns: Mapping[str, ColumnInfo]) -> DriftForm | None:
    """The drift form of a sync's destination rows, or None when its key cannot be digested."""
    try:
        return DriftForm(list(cfg.key.to), owned_columns(cfg), columns)
    except ValueError:
        return None


class DriftForm:
    """The drift form of one sync's destination rows (built once from the catalog)."""

    def __init__(self, key: list[str], owned: list[str], columns: Mapping[str, ColumnInfo]) -> None:
        self.key = list(key)
        self.notes: list[str] = []
        self._cols: dict[str, _Column] = {}
        for name in dict.fromkeys([*key, *owned]):
            info = columns[name]
            kind = kind_of(info)
            if kind is None:
                if name in key:
                    raise ValueError(f"key column {name!r} ({info.type_name}) cannot be digested")
                self.notes.append(f"column {name} ({info.type_name}) is not digested (drift not compared)")
                continue
            self._cols[name] = _Column(info, kind)
        self.owned = sorted(n for n in dict.fromkeys([*key, *owned]) if n in self._cols)  # digest order

    def texts(self, values: Mapping[str, Any], names: Sequence[str]) -> list[str | None]:
        return [self._cols[n].text(values[n]) for n in names]

    def covers(self, values: Mapping[str, Any]) -> bool:
        """Whether a written row holds every digested column (`on_null: omit` may leave some out)."""
        return all(n in values for n in self.owned)

    def of(self, values: Mapping[str, Any]) -> tuple[str, str]:
        """(dkey, digest) of a row as mapsync writes it (every owned column present)."""
        return (
            md5_hex(frame(self.texts(values, self.key))),
            md5_hex(frame(self.texts(values, self.owned))),
        )

    def form_sql(self, dialect: str, col: Col, names: Sequence[str]) -> sa.ColumnElement[Any]:
        """The joined text form of `names` in SQL."""
        return _join(
            dialect, [_text_sql(dialect, self._cols[n].kind, self._cols[n].info, col(n)) for n in names]
        )

    def sql(self, dialect: str, col: Col) -> tuple[sa.ColumnElement[Any], sa.ColumnElement[Any], bool]:
        """(dkey expr, digest expr, client_hash): md5 hex server-side on PostgreSQL and MariaDB;
        on SQLite the joined texts, which the client hashes (`md5_hex`)."""
        key, owned = self.form_sql(dialect, col, self.key), self.form_sql(dialect, col, self.owned)
        if dialect == "sqlite":
            return key, owned, True
        return _md5(dialect, key), _md5(dialect, owned), False

    def bucket_sql(self, dialect: str, col: Col, buckets: int) -> sa.ColumnElement[Any]:
        """The bucket of a row server-side (= `bucket(dkey, buckets)`); not on SQLite (no md5)."""
        if dialect not in ("postgresql", "mysql"):
            raise ValueError(f"bucket_sql: {dialect} computes no md5; hash the form in Python (bucket())")
        return hex_int_sql(self.sql(dialect, col)[0], 8) % buckets


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
