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
  column's own fitting: sql_time.time_fitter; timestamptz in UTC — a naive value written into a
  timestamptz column is taken as UTC, so a server whose TimeZone is not UTC shows such rows as
  changed); time `HH:MM:SS.ffffff`
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
from typing import Any, NamedTuple

import sqlalchemy as sa

from mapsync.casts import plain_decimal as _plain
from mapsync.columns import ColumnInfo
from mapsync.connectors import drift_sql
from mapsync.connectors.drift_sql import NULL, SEP
from mapsync.connectors.drift_sql import hex_int_sql as hex_int_sql
from mapsync.sheet import models
from mapsync.sql_time import time_fitter

FORM_VERSION = 1

Col = Callable[[str], sa.ColumnElement[Any]]

_INT_TYPES = ("INT", "SERIAL")
# what reading a value the form cannot take raises (a missing column, a type the mapping did not
# coerce): `of_written` and `dkey` return None for such a row
UNREADABLE = (KeyError, TypeError, ValueError, AttributeError, ArithmeticError)


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


class _Column:
    """One column's Python text form (the stored value's, as the form documents it): `text` is
    the kind's own function, chosen once (the digest is computed for every delivered row)."""

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
        self.convert: Callable[[Any], str] = getattr(self, f"_{kind}")

    def text(self, value: Any) -> str | None:
        return None if value is None else self.convert(value)

    @staticmethod
    def _text(value: Any) -> str:
        return value if type(value) is str else str(value)

    @staticmethod
    def _char(value: Any) -> str:
        return (value if type(value) is str else str(value)).rstrip(" ")

    @staticmethod
    def _int(value: Any) -> str:
        return str(int(value))

    _bool = _int

    def _decimal(self, value: Any) -> str:
        number = value if isinstance(value, decimal.Decimal) else decimal.Decimal(str(value))
        if self.quantum is not None:
            number = number.quantize(self.quantum, rounding=decimal.ROUND_HALF_UP)
        return _plain(number)

    def _timestamp(self, value: dt.datetime) -> str:
        if self.fit is not None:
            value, _ = self.fit(value)
        if value.tzinfo is not None:  # a timestamptz column keeps the instant: shown in UTC
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.isoformat(" ", "microseconds")

    @staticmethod
    def _date(value: Any) -> str:
        return str((value.date() if isinstance(value, dt.datetime) else value).isoformat())

    @staticmethod
    def _time(value: Any) -> str:
        # a text the mapping passed through ('10:30:00' from SQLite): the database parses it
        time = dt.time.fromisoformat(value) if isinstance(value, str) else value
        return str(time.replace(tzinfo=None).isoformat("microseconds"))

    @staticmethod
    def _binary(value: Any) -> str:
        # a text written into a binary column is stored as its UTF-8 bytes
        return (value.encode() if isinstance(value, str) else bytes(value)).hex()

    @staticmethod
    def _uuid(value: Any) -> str:
        return str(value).lower()


class ColumnForm(NamedTuple):
    """One digested column's form, for a caller that computes it a column at a time
    (connectors/drift_columns.py): the form's kind, its text of a non-null value (which may
    raise as `DriftForm.of` does), and whether a timestamp is fitted (`time_fitter` is not the
    identity: the column has a zone for naive times or keeps fewer than 6 fraction digits), and
    the scale a decimal is rounded to (None: not rounded); `cuts`: the fit cuts fraction digits
    (a fitted column that does not cut leaves a naive time as it is: it converts aware ones)."""

    kind: str
    convert: Callable[[Any], str]
    fitted: bool
    scale: int | None
    cuts: bool = False


def frame(texts: Sequence[str | None]) -> str:
    """The joined form of column texts (None: NULL)."""
    return SEP.join(NULL if t is None else f"{len(t)}:{t}" for t in texts)


def _builtin_md5() -> Callable[..., Any]:
    """CPython's own md5 (HACL*) where it is built in: about a third faster than OpenSSL's on
    texts this short (the context set-up dominates); the same digest."""
    try:
        from _md5 import md5  # type: ignore[import-not-found]
    except ImportError:  # a Python built without its own hashes
        return hashlib.md5
    return md5  # type: ignore[no-any-return]


MD5 = _builtin_md5()  # every drift digest's md5, per record (`of_written`) and column-wise


def md5_hex(text: str) -> str:
    return MD5(text.encode("utf-8"), usedforsecurity=False).hexdigest()  # type: ignore[no-any-return]


def bucket(dkey: str, buckets: int) -> int:
    """The bucket of a row by its dkey, as `DriftForm.bucket_sql` computes it."""
    return int(dkey[:8], 16) % buckets


def omittable(cfg: models.SyncConfig) -> list[str]:
    """The `fields:` columns a write may leave out (`on_null: omit`, the field's or the sync's):
    the destination then keeps what it had, which is not what mapsync delivered."""
    return [
        name
        for name, rule in cfg.fields.items()
        if name not in cfg.key.to and (rule.on_null if rule.on_null is not None else cfg.on_null) == "omit"
    ]


def owned_columns(cfg: models.SyncConfig) -> list[str]:
    """The columns a sync owns in its destination's main table: the key and every `fields:`
    column a write always sets. (`deletes.field` is left out: upserts do not write it, so the
    destination's value is not what mapsync delivered; so are the fields `on_null: omit` may
    leave out; child tables are not compared.)"""
    left = set(omittable(cfg))
    return list(dict.fromkeys([*cfg.key.to, *(f for f in cfg.fields if f not in left)]))


def for_sync(cfg: models.SyncConfig, columns: Mapping[str, ColumnInfo]) -> DriftForm | None:
    """The drift form of a sync's destination rows, or None when its key cannot be digested."""
    try:
        form = DriftForm(list(cfg.key.to), owned_columns(cfg), columns)
    except ValueError:
        return None
    form.notes.extend(
        f"column {n} is not compared: `on_null: omit` may leave it out of a write" for n in omittable(cfg)
    )
    return form


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
        self._key_fns = [(n, self._cols[n].convert) for n in self.key]
        self._owned_fns = [(n, self._cols[n].convert) for n in self.owned]

    def column_form(self, name: str) -> ColumnForm:
        """The form of a digested column (a name of `key` or `owned`)."""
        column = self._cols[name]
        scale = column.info.scale if column.quantum is not None else None
        fraction = column.info.fraction
        cuts = column.fit is not None and fraction is not None and fraction < 6
        return ColumnForm(column.kind, column.convert, column.fit is not None, scale, cuts)

    def texts(self, values: Mapping[str, Any], names: Sequence[str]) -> list[str | None]:
        return [self._cols[n].text(values[n]) for n in names]

    @staticmethod
    def _md5(values: Mapping[str, Any], columns: list[tuple[str, Callable[[Any], str]]]) -> str:
        """md5 hex of the framed form (`frame` inlined: it runs for every delivered row)."""
        framed = SEP.join(
            [NULL if (v := values[n]) is None else f"{len(t := convert(v))}:{t}" for n, convert in columns]
        )  # one list comprehension: converting and framing in one pass (a generator costs more)
        return MD5(framed.encode(), usedforsecurity=False).hexdigest()  # type: ignore[no-any-return]

    def covers(self, values: Mapping[str, Any]) -> bool:
        """Whether a written row holds every digested column (`on_null: omit` may leave some out)."""
        return all(n in values for n in self.owned)

    def of(self, values: Mapping[str, Any]) -> tuple[str, str]:
        """(dkey, digest) of a row as mapsync writes it (every owned column present)."""
        return self._md5(values, self._key_fns), self._md5(values, self._owned_fns)

    def dkey(self, values: Mapping[str, Any]) -> str | None:
        """The dkey of a row (None when its key cannot be read: never raises)."""
        try:
            return self._md5(values, self._key_fns)
        except UNREADABLE:
            return None

    def of_written(self, values: Mapping[str, Any]) -> tuple[str, str] | None:
        """`of` a written row, None when it leaves a digested column out (`on_null: omit`) or
        holds a value the form cannot read (a type the mapping did not coerce): the row is
        written already, so this never raises — the entry is stored undigested instead."""
        try:
            return self.of(values)
        except UNREADABLE:
            return None

    def form_sql(self, dialect: str, col: Col, names: Sequence[str]) -> sa.ColumnElement[Any]:
        """The joined text form of `names` in SQL."""
        return drift_sql.join(
            dialect,
            [drift_sql.text_sql(dialect, self._cols[n].kind, self._cols[n].info, col(n)) for n in names],
        )

    def sql(self, dialect: str, col: Col) -> tuple[sa.ColumnElement[Any], sa.ColumnElement[Any], bool]:
        """(dkey expr, digest expr, client_hash): md5 hex server-side on PostgreSQL and MariaDB;
        on SQLite the joined texts, which the client hashes (`md5_hex`)."""
        key, owned = self.form_sql(dialect, col, self.key), self.form_sql(dialect, col, self.owned)
        if dialect == "sqlite":
            return key, owned, True
        return drift_sql.md5(dialect, key), drift_sql.md5(dialect, owned), False

    def bucket_sql(self, dialect: str, col: Col, buckets: int) -> sa.ColumnElement[Any]:
        """The bucket of a row server-side (= `bucket(dkey, buckets)`); not on SQLite (no md5)."""
        if dialect not in ("postgresql", "mysql"):
            raise ValueError(f"bucket_sql: {dialect} computes no md5; hash the form in Python (bucket())")
        return hex_int_sql(self.sql(dialect, col)[0], 8) % buckets
