"""Time values in one place: parsing every stored form, fixed-width UTC text, writing into columns.

- `parse_time` reads a cursor or version value (a datetime, a date, or ISO text in any of the
  forms found in SQLite files and in the state store: `T` or space, any fraction digits, no
  zone, `Z`, `±HH:MM`, `±HHMM`, `±HH`).
- `utc_text` is the one comparable form: `YYYY-MM-DDTHH:MM:SS.ffffffZ`, fixed width, so text
  order is time order (the state store's `stamp()` writes the same form).
- `register_sqlite` adds `mapsync_utc(value, zone)` to a SQLite connection: the watermark
  compares and orders by it, so rows stamped in mixed forms are all seen.
- `time_fitter` is the one rule for datetimes written into a timestamp column: an aware
  value bound for a naive column is converted to the column's zone, and fractions the column
  cannot keep are cut (and counted by the caller, like a truncation).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import zoneinfo
from collections.abc import Callable
from typing import Any

from mapsync import errors

_FORM = re.compile(
    r"\s*(\d{4})-(\d\d)-(\d\d)"
    r"(?:[T ](\d\d):(\d\d)(?::(\d\d)(?:[.,](\d+))?)?)?"
    r"\s*(Z|z|UTC|GMT|[+-]\d\d(?::?\d\d)?)?\s*"
)
_OFFSET = re.compile(r"([+-])(\d\d):?(\d\d)?")
UTC_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def _parse_text(text: str) -> dt.datetime | None:
    match = _FORM.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, frac, offset = match.groups()
    micro = int((frac or "")[:6].ljust(6, "0"))  # cut (never round) digits past the sixth
    try:
        moment = dt.datetime(  # noqa: DTZ001 (the zone, if any, is attached below)
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0), micro
        )
    except ValueError:
        return None
    if offset is None:
        return moment
    if offset.upper() in ("Z", "UTC", "GMT"):
        return moment.replace(tzinfo=dt.UTC)
    sign, hours, minutes = _OFFSET.fullmatch(offset).groups()  # type: ignore[union-attr]
    delta = dt.timedelta(hours=int(hours), minutes=int(minutes or 0))
    if delta >= dt.timedelta(hours=24):
        return None
    return moment.replace(tzinfo=dt.timezone(delta if sign == "+" else -delta))


def parse_time(value: Any, zone: dt.tzinfo | None = None) -> dt.datetime:
    """A cursor value as a time; a naive one is taken to be in `zone` when given.

    `…:02` equals `…:02.000000`; `…Z` and `…+00:00` come back aware (UTC).
    """
    moment: dt.datetime | None = None
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime(value.year, value.month, value.day)  # noqa: DTZ001
    elif isinstance(value, str):
        moment = _parse_text(value)
    if moment is None:
        raise errors.PermanentError(f"cursor value {value!r} is not a timestamp", failure_class="source")
    if zone is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment


def utc_text(value: Any, zone: dt.tzinfo = dt.UTC) -> str:
    """`value` (naive ones in `zone`) as fixed-width UTC text: text order is time order."""
    return _utc_format(parse_time(value, zone).astimezone(dt.UTC))


def utc_naive(value: Any, zone: dt.tzinfo = dt.UTC) -> dt.datetime:
    """`value` (naive ones in `zone`) as a naive UTC datetime."""
    return parse_time(value, zone).astimezone(dt.UTC).replace(tzinfo=None)


def later(a: Any, b: Any, zone: dt.tzinfo = dt.UTC) -> Any:
    """The later of two cursor values, compared as times (never as text); None is no value."""
    if a is None:
        return b
    if b is None:
        return a
    return b if parse_time(b, zone) > parse_time(a, zone) else a


_UTC_KEYS = frozenset({"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/Universal", "Universal", "Etc/Zulu", "Zulu"})


def zone_name(zone: dt.tzinfo) -> str:
    """A name `named_zone` turns back into `zone` (an IANA key, or a fixed `±HH:MM`); `UTC` for
    every spelling of UTC (`mapsync_utc` reads naive text as UTC without a conversion then)."""
    if isinstance(zone, zoneinfo.ZoneInfo):
        return "UTC" if zone.key in _UTC_KEYS else zone.key
    offset = zone.utcoffset(None) or dt.timedelta(0)
    if not offset:
        return "UTC"
    sign = "-" if offset < dt.timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


@functools.lru_cache(maxsize=64)
def named_zone(name: str) -> dt.tzinfo:
    match = _OFFSET.fullmatch(name)
    if match:
        sign, hours, minutes = match.groups()
        delta = dt.timedelta(hours=int(hours), minutes=int(minutes or 0))
        return dt.timezone(delta if sign == "+" else -delta)
    return zoneinfo.ZoneInfo(name)


# --------------------------------------------------------------------------- SQLite


def text_floor(bound: Any) -> str:
    """Text that every stored form of a time at or after the instant `bound`, in any zone (no
    offset reaches 24 hours), sorts at or after: `bound` minus 24 hours cut to the minute."""
    try:
        return utc_floor(parse_time(bound, dt.UTC) - dt.timedelta(days=1), seconds=False)
    except OverflowError:
        return "0001-01-01"


def utc_floor(bound: Any, *, seconds: bool = True) -> str:
    """Text that every UTC form (`Z`, `+00:00` or naive UTC) of a time at or after `bound` sorts
    at or after: the bound cut to the second (to the minute when not `seconds`) as
    `YYYY-MM-DD HH:MM:SS`, shorter where the rest is zero (`…HH:MM`; the bare date at
    midnight), since text with fewer parts sorts before the longer text of the same instant."""
    m = parse_time(bound, dt.UTC).astimezone(dt.UTC)
    date = f"{m.year:04d}-{m.month:02d}-{m.day:02d}"
    if (m.hour, m.minute) == (0, 0) and (not seconds or (m.second, m.microsecond) == (0, 0)):
        return date
    if not seconds or (m.second, m.microsecond) == (0, 0):
        return f"{date} {m.hour:02d}:{m.minute:02d}"
    return f"{date} {m.hour:02d}:{m.minute:02d}:{m.second:02d}"


def utc_exact(bound: Any) -> str | None:
    """The bound's UTC text `YYYY-MM-DD HH:MM:SS.f…` with its fraction's trailing zeros
    dropped, or None when it falls on a whole second. Text in the space form with a `.`
    fraction sorts at or after it exactly when its time is at or after the bound: the digits
    of two fractions compare as their values do once the bound's has no trailing zero (and the
    parse cuts digits past the sixth, never rounds)."""
    m = parse_time(bound, dt.UTC).astimezone(dt.UTC)
    if not m.microsecond:
        return None
    return f"{utc_floor(m)}.{m.microsecond:06d}".rstrip("0")


_FIXED = re.compile(
    r"(\d{4}-\d\d-\d\d)[ T]((?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d)(?:\.(\d{6}|\d{3}))?(Z?)", re.ASCII
)


@functools.lru_cache(maxsize=4096)
def _real_date(text: str) -> bool:
    """`YYYY-MM-DD` (ASCII digits) names a day Python's calendar has (year 1 to 9999)."""
    try:
        dt.date(int(text[:4]), int(text[5:7]), int(text[8:10]))
    except ValueError:
        return False
    return True


def _sqlite_utc(value: Any, zone: Any) -> str | None:
    """`mapsync_utc(value, zone)`: stored time text as fixed-width UTC text; NULL for NULL,
    numbers and text that is no timestamp (such rows never match a time bound).

    It runs for every row a SQLite watermark read compares (two to four times a row), so the
    forms nearly every value has are turned into the UTC text by slicing, without building a
    datetime: `YYYY-MM-DD[ T]HH:MM:SS` with no fraction or 3 or 6 digits, then `Z`, or nothing
    when naive values are UTC (SQLite's `datetime('now')`, `strftime('%f')`, Python's
    `str(datetime)`, mapsync's own `utc_text`). Every other value takes the general parse;
    both give the same text (a property test holds them to it)."""
    if type(value) is str:
        m = _FIXED.fullmatch(value)
        if m is not None and (m[4] or zone == "UTC") and _real_date(m[1]):
            return f"{m[1]}T{m[2]}.{(m[3] or '').ljust(6, '0')}Z"
    return _sqlite_utc_general(value, zone)


def _sqlite_utc_general(value: Any, zone: Any) -> str | None:
    """`_sqlite_utc` for every stored form (the parse `parse_time` uses)."""
    if not isinstance(value, str):
        return None
    moment = _parse_text(value)
    if moment is None:
        return None
    if moment.tzinfo is None:
        if zone == "UTC":  # the common case (SQLite's default): no conversion
            return _utc_format(moment)
        try:
            moment = moment.replace(tzinfo=named_zone(str(zone)))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return None
    try:
        return _utc_format(moment.astimezone(dt.UTC))
    except (OverflowError, ValueError):  # year 1 or 9999 shifted off the calendar
        return None


def _utc_format(m: dt.datetime) -> str:
    """`UTC_FORMAT` of a UTC time, without strftime's cost (this runs once per row and bound)."""
    date = f"{m.year:04d}-{m.month:02d}-{m.day:02d}"
    return f"{date}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}.{m.microsecond:06d}Z"


def register_sqlite(dbapi_conn: Any) -> None:
    """Add `mapsync_utc(value, zone)` to a sqlite3 connection."""
    dbapi_conn.create_function("mapsync_utc", 2, _sqlite_utc, deterministic=True)


# --------------------------------------------------------------------------- writing


Fitter = Callable[[dt.datetime], tuple[dt.datetime, bool]]


def time_fitter(field: str, *, zone: dt.tzinfo | None, fraction: int | None) -> Fitter | None:
    """The one rule for a datetime written into a timestamp column, whatever the write path
    (PostgreSQL COPY or upsert, MariaDB, SQLite): returns `fit(value) -> (value, precision_lost)`,
    or None when the column takes every datetime as it is.

    `zone`: the zone the column's naive times are in (`SqlDatabase.zone()`; UTC for MariaDB
    TIMESTAMP, which the session reads in UTC); an aware value is converted to it and made
    naive. None: the column keeps zones itself (timestamptz), or no zone is known (a REST
    column; a server whose zone cannot be told): values go as they are. `fraction`: the fraction digits the
    column keeps; the rest is cut, never rounded (a cut is reported like a truncation).
    """
    cut = 10 ** (6 - fraction) if fraction is not None and fraction < 6 else None
    if cut is None and zone is None:
        return None

    def fit(value: dt.datetime) -> tuple[dt.datetime, bool]:
        if value.tzinfo is not None and zone is not None:
            try:
                value = value.astimezone(zone).replace(tzinfo=None)
            except (OverflowError, ValueError):
                raise errors.RecordRejected(
                    f"field `{field}`: {value.isoformat()} is out of range in the column's time zone",
                    field,
                    "type",
                ) from None
        if cut is not None and value.microsecond % cut:
            return value.replace(microsecond=value.microsecond - value.microsecond % cut), True
        return value, False

    return fit
