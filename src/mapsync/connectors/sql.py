"""A SQL database through SQLAlchemy 2: SQLite, PostgreSQL (psycopg 3), MariaDB/MySQL (PyMySQL).

`SqlDatabase` owns one engine per connection: session settings, the catalog (identifiers from the
sheet must exist there and are always quoted), the database's own clock and time zone.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
import warnings
import zoneinfo
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import quoted_name

from mapsync import db_errors, deadline, errors
from mapsync.columns import ColumnInfo as ColumnInfo  # the catalog facts live below the layers
from mapsync.connectors import sqlite_text
from mapsync.connectors.sql_allowed import allowed_values
from mapsync.db_errors import describe_error as describe_error  # below the layers too
from mapsync.db_timeouts import connect_args, listen, resolved
from mapsync.records import Key
from mapsync.sheet.timeout_models import Timeouts
from mapsync.sql_time import register_sqlite

MARIADB_SQL_MODE = (
    "STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"
)


URL_HINT = (
    " (a password holding `@ : / # %` must be percent-encoded; written as `${VAR}` inside "
    "`user:password@` in the sheet, mapsync encodes it)"
)


KEY_CHUNK = 500  # keys per `IN (…)` query


def key_in(cols: Sequence[Any], keys: Sequence[Key]) -> sa.ColumnElement[bool]:
    """`cols` among these keys: `col IN (…)` for one column, `(a, b) IN ((…), …)` for more."""
    if len(cols) == 1:
        return cols[0].in_([k[0] for k in keys])  # type: ignore[no-any-return]
    return sa.tuple_(*cols).in_([sa.tuple_(*k) for k in keys])


def chunked(keys: Sequence[Key]) -> Iterator[Sequence[Key]]:
    """`keys` in slices of `KEY_CHUNK`, one query each."""
    for i in range(0, len(keys), KEY_CHUNK):
        yield keys[i : i + KEY_CHUNK]


def normalize_url(url: str, folder: Path) -> sa.URL:
    """Pick our drivers and resolve a relative SQLite path against the sheet's folder."""
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):  # never quote it: a password is in there
        raise errors.ConfigError(f"connection url is not a valid SQLAlchemy URL{URL_HINT}") from None
    backend = parsed.get_backend_name()
    if backend == "postgresql" and parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend in ("mysql", "mariadb"):
        parsed = parsed.set(drivername=f"{backend}+pymysql")
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    elif backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database)
        if not path.is_absolute():
            parsed = parsed.set(database=str((folder / path).resolve()))
    return parsed


class SqlDatabase:
    """One configured SQL connection."""

    def __init__(
        self,
        name: str,
        url: str,
        folder: Path,
        timezone: str | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.name = name
        self.url = normalize_url(url, folder)
        self.safe_url = self.url.render_as_string(hide_password=True)
        self.timezone = timezone
        if self.url.get_backend_name() == "sqlite":
            db = self.url.database
            if db not in (None, "", ":memory:") and not Path(db).exists():
                raise errors.ConfigError(f"connection {name}: SQLite database {db} does not exist")
        self.timeouts = resolved(timeouts)  # unset ones: below the lease (Engine.database fills them)
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        args = connect_args(self.url.get_backend_name(), self.timeouts)
        if args:
            kwargs["connect_args"] = args
        self.engine = sa.create_engine(self.url, **kwargs)
        listen(self.engine, self.timeouts)
        deadline.track(self.engine)
        self.dialect = self.engine.dialect.name  # sqlite | postgresql | mysql
        if self.dialect == "mysql":
            sa.event.listen(self.engine, "connect", _mariadb_session)
        elif self.dialect == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_session)
        self._tables: dict[str, sa.Table] = {}
        self._server_zone: str | None = None  # the server's own time zone, read once per handle

    budget: None = None  # a database has no call budget (the `Handle` role)

    def check(self) -> None:
        """None: `mapsync check` runs its own query on a SQL connection (checkup.py)."""
        return None

    def close(self) -> None:
        self.engine.dispose()

    # ----------------------------------------------------------------- catalog

    def table(self, name: str, where: str) -> sa.Table:
        """The reflected table `name` (optionally `schema.table`), or a ConfigError naming `where`."""
        if name in self._tables:
            return self._tables[name]
        schema, _, table = name.rpartition(".")
        try:
            with self.engine.connect() as conn:
                insp = sa.inspect(conn)
                known = insp.get_table_names(schema=schema or None) + insp.get_view_names(
                    schema=schema or None
                )
                if table not in known:
                    raise errors.ConfigError(
                        f"{where}: unknown table {name!r} in connection {self.name}" + _near(table, known)
                    )
                metadata = sa.MetaData()
                if self.dialect == "mysql":
                    sa.event.listen(metadata, "column_reflect", _mysql_column_name)
                with warnings.catch_warnings():
                    # SQLAlchemy rebuilds a reflected PostgreSQL `CHECK … NOT VALID` as
                    # CheckConstraint(**entry), passing the entry's `dialect_options` as an
                    # argument it then cannot validate: a warning about its own reflection,
                    # nothing about the table (mapsync reads check constraints itself)
                    warnings.filterwarnings(
                        "ignore", "Can't validate argument 'dialect_options'", sa.exc.SAWarning
                    )
                    reflected = sa.Table(
                        quoted_name(table, True),
                        metadata,
                        schema=quoted_name(schema, True) if schema else None,
                        autoload_with=conn,
                    )
        except sa.exc.OperationalError as exc:
            raise db_errors.transient(f"connection {self.name}: cannot connect", exc, "destination") from None
        self._tables[name] = reflected
        return reflected

    def rows_by_key(self, table: sa.Table, key: list[str], keys: Sequence[Key]) -> list[dict[str, Any]]:
        """The stored rows of `table` with these keys (one query per 500); missing keys are absent."""
        cols, out = [table.c[k] for k in key], []
        with self.engine.connect() as conn:
            for chunk in chunked(keys):
                out += [dict(r) for r in conn.execute(sa.select(table).where(key_in(cols, chunk))).mappings()]
        return out

    def columns(self, table: sa.Table) -> dict[str, ColumnInfo]:
        with self.engine.connect() as conn:
            allowed = allowed_values(conn, table)
        out = {}
        naive_zone: Any = ...  # resolved once, for the first timestamp column
        for col in table.columns:
            try:
                py: type | None = col.type.python_type
            except NotImplementedError:
                py = None
            length = getattr(col.type, "length", None)
            aware = bool(getattr(col.type, "timezone", False))
            if self.dialect == "mysql" and type(col.type).__name__ == "TIMESTAMP":
                aware = True  # converted through the session time zone, which we set to UTC
            zone, fraction = None, None
            if py is dt.datetime:
                if naive_zone is ...:
                    naive_zone = self._naive_zone()
                zone, fraction = self._time_fit(col.type, aware, naive_zone)
            out[col.name] = ColumnInfo(
                name=col.name,
                python_type=py,
                length=length if isinstance(length, int) else None,
                nullable=bool(col.nullable),
                aware=aware,
                type_name=str(col.type),
                has_default=col.server_default is not None
                or bool(col.autoincrement is True and col.primary_key),
                precision=getattr(col.type, "precision", None) if py is decimal.Decimal else None,
                scale=getattr(col.type, "scale", None) if py is decimal.Decimal else None,
                text_nul_forbidden=self.dialect == "postgresql",
                allowed=allowed.get(col.name),
                time_zone=zone,
                fraction=fraction,
            )
        return out

    def _naive_zone(self) -> dt.tzinfo | None:
        try:
            return self.zone(None)
        except errors.ConfigError:
            return None  # aware values then go as they are (the watermark reports the error)

    def _time_fit(self, kind: Any, aware: bool, naive_zone: dt.tzinfo | None) -> tuple[Any, int | None]:
        """(zone, fraction digits) of a timestamp column, as sql_time.time_fitter takes them."""
        if self.dialect == "mysql":
            fsp = getattr(kind, "fsp", None)
            return (dt.UTC if aware else naive_zone), int(fsp or 0)
        if self.dialect == "postgresql":
            precision = getattr(kind, "precision", None)
            return (None if aware else naive_zone), (None if precision is None else int(precision))
        return (None if aware else naive_zone), None

    def unique_sets(self, table: sa.Table) -> list[set[str]]:
        """Column sets that are unique in `table` (primary key, unique constraints and indexes)."""
        with self.engine.connect() as conn:
            insp = sa.inspect(conn)
            sets = [set(insp.get_pk_constraint(table.name, schema=table.schema)["constrained_columns"] or [])]
            sets += [
                set(u["column_names"]) for u in insp.get_unique_constraints(table.name, schema=table.schema)
            ]
            sets += [
                {c for c in i["column_names"] if c}
                for i in insp.get_indexes(table.name, schema=table.schema)
                if i.get("unique")
            ]
            if self.dialect == "sqlite":  # SQLAlchemy misses a column's inline UNIQUE (an autoindex)
                q = self.engine.dialect.identifier_preparer.quote
                pre = f"{q(table.schema)}." if table.schema else ""
                for idx in conn.exec_driver_sql(f"PRAGMA {pre}index_list({q(table.name)})").mappings():
                    if idx["unique"]:
                        info = conn.exec_driver_sql(f"PRAGMA {pre}index_info({q(idx['name'])})").mappings()
                        sets.append({c["name"] for c in info if c["name"]})
        if self.dialect == "mysql":  # as in _mysql_column_name
            sets = [{c.replace("``", "`") for c in s} for s in sets]
        return [s for s in sets if s]

    def query_columns(self, query: str, where: str) -> list[str]:
        try:
            with self.engine.connect() as conn:
                result = conn.execute(
                    sa.select(sa.text("*")).select_from(sa.text(f"({query}) AS q")).limit(0)
                )
                return list(result.keys())
        except sa.exc.OperationalError as exc:
            raise db_errors.transient(f"connection {self.name}", exc, "destination") from None
        except sa.exc.DBAPIError as exc:
            raise db_errors.refused(f"{where}: the query fails", exc) from None

    # ----------------------------------------------------------------- clock

    def now(self) -> dt.datetime:
        """The database server's current time, as an aware UTC datetime."""
        sql = {
            "postgresql": "SELECT clock_timestamp()",
            "mysql": "SELECT UTC_TIMESTAMP(6)",
            "sqlite": "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')",
        }[self.dialect]
        with self.engine.connect() as conn:
            value = conn.execute(sa.text(sql)).scalar_one()
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)  # type: ignore[no-any-return]

    def zone(self, declared: str | None) -> zoneinfo.ZoneInfo | dt.timezone:
        """The zone naive timestamps of this database are written in."""
        name = declared or self.timezone or self._server_zone
        if name is None:
            if self.dialect == "sqlite":
                return dt.UTC
            sql = {
                "postgresql": "SELECT reset_val FROM pg_settings WHERE name = 'TimeZone'",
                "mysql": "SELECT IF(@@global.time_zone = 'SYSTEM', @@system_time_zone, @@global.time_zone)",
            }[self.dialect]
            with self.engine.connect() as conn:
                name = self._server_zone = str(conn.execute(sa.text(sql)).scalar_one())
        match = re.fullmatch(r"([+-])(\d\d):(\d\d)", name)
        if match:
            sign = 1 if match.group(1) == "+" else -1
            return dt.timezone(sign * dt.timedelta(hours=int(match.group(2)), minutes=int(match.group(3))))
        try:
            return zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise errors.ConfigError(
                f"connection {self.name}: cannot tell the time zone {name!r}: set `timezone` "
                "(an IANA name such as Europe/Berlin) on the connection or the sync's `changes`"
            ) from None


def _mysql_column_name(_inspector: Any, _table: Any, column_info: dict[str, Any]) -> None:
    """SQLAlchemy's MySQL reflection keeps a backtick in a column name doubled (a``b): undo it."""
    column_info["name"] = column_info["name"].replace("``", "`")


def _near(name: str, known: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, known, n=1)
    if close and not name.isascii() and close[0].isascii():  # a look-alike (homoglyph) spelling
        return f" (did you mean {close[0]!r}? the name given is {name!a})"
    return f" (did you mean {close[0]!r}?)" if close else ""


def _mariadb_session(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("SET NAMES utf8mb4")
    cur.execute("SET SESSION time_zone = '+00:00'")
    cur.execute(f"SET SESSION sql_mode = '{MARIADB_SQL_MODE}'")
    # a streamed read pauses while each batch is delivered: do not let the server give up on it
    cur.execute("SET SESSION net_write_timeout = 3600")
    cur.close()


def _sqlite_session(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.text_factory = sqlite_text.decode  # text that is not UTF-8: a record error, not a crash
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
    register_sqlite(dbapi_conn)  # mapsync_utc(): mixed time text compared as instants


def quoted(name: str) -> quoted_name:
    return quoted_name(name, True)
