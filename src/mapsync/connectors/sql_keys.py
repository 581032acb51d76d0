"""KeyProbe: which keys of a batch the destination itself takes for the same key.

A `_ci` or PAD SPACE collation (MariaDB's defaults), a nondeterministic PostgreSQL collation, a
`citext` or `CHAR(n)` column, or a SQLite `NOCASE`/`RTRIM` key makes keys that differ only in
case, accents or trailing spaces one row. Python cannot tell which keys those are; the database
can: one query per batch groups the batch's keys under the key columns' own collation (`GROUP BY
… HAVING COUNT(*) > 1`) and looks them up among the rows already stored, comparing what it finds
byte for byte; only colliding keys come back.
A key column whose collation equates only identical strings (PostgreSQL's deterministic
collations, SQLite `BINARY`, MariaDB `*_nopad_bin`, numbers, dates) needs no probe: when no key
column needs one, `KeyProbe.active` is false and nothing is sent.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from mapsync import db_errors, records
from mapsync.connectors.sql import SqlDatabase

log = logging.getLogger("mapsync.destination")
_NAME = re.compile(r"[A-Za-z0-9_]+")  # MariaDB character set and collation names


@dataclasses.dataclass(frozen=True)
class _Col:
    name: str
    value: str  # SQL for the bound value `{p}` under the column's type and collation
    exact: str  # SQL comparing the stored value `t.{c}` with `v.{c}` byte for byte
    loose: bool  # the collation equates different strings


@dataclasses.dataclass(frozen=True)
class Probed:
    """One key of the batch as the destination sees it."""

    group: int  # index of the first key of the batch that the destination takes as equal
    stored: records.Key | None  # the key of a stored row equal under the collation, not byte-equal


class KeyProbe:
    """The key columns of one destination table, with the SQL to probe a batch of keys."""

    def __init__(self, db: SqlDatabase, table: sa.Table, key: list[str]) -> None:
        self.db = db
        prep = db.engine.dialect.identifier_preparer
        self.qualified = prep.format_table(table)
        self.quote = prep.quote
        self.key = key
        self.cols = [self._column(table, c) for c in key]
        self.active = any(c.loose for c in self.cols) and self._json_table()
        self.description = ", ".join(c.name for c in self.cols if c.loose)
        self.sql: str | None = None  # built on first use

    def _json_table(self) -> bool:
        """MariaDB before 10.6 (MySQL before 8.0.4) has no JSON_TABLE: no probe there."""
        dialect = self.db.engine.dialect
        if self.db.dialect != "mysql":
            return True
        version = tuple(v for v in (dialect.server_version_info or ()) if isinstance(v, int))
        enough = version >= ((10, 6) if getattr(dialect, "is_mariadb", False) else (8, 0, 4))
        if not enough:
            log.warning(
                "key_probe_unavailable",
                extra={"action": "key_probe_unavailable", "connection": self.db.name, "version": version},
            )
        return enough

    # ----------------------------------------------------------------- catalog

    def _column(self, table: sa.Table, name: str) -> _Col:
        q = self.quote(name)
        with self.db.engine.connect() as conn:
            if self.db.dialect == "postgresql":
                row = conn.execute(
                    sa.text(
                        "SELECT CASE WHEN t.typname = 'bpchar' THEN 'pg_catalog.bpchar' "
                        "ELSE a.atttypid::regtype::text END, "
                        "a.attcollation <> 0 AS collatable, quote_ident(n.nspname) || '.' || "
                        "quote_ident(c.collname), NOT COALESCE(c.collisdeterministic, true), t.typname "
                        "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
                        "LEFT JOIN pg_collation c ON c.oid = a.attcollation "
                        "LEFT JOIN pg_namespace n ON n.oid = c.collnamespace "
                        "WHERE a.attrelid = to_regclass(:rel) AND a.attname = :col"
                    ),
                    {"rel": self.qualified, "col": name},
                ).one_or_none()
                if row is None:  # not found in the catalog (cannot happen for a checked table)
                    return _Col(name, "{p}", f"t.{q} = v.{q}", False)
                type_, collatable, collation, nondeterministic, typname = row
                if not collatable:
                    return _Col(name, f"CAST({{p}} AS {type_})", f"t.{q} = v.{q}", typname == "citext")
                return _Col(
                    name,
                    f"CAST({{p}} AS {type_}) COLLATE {collation}",
                    f't.{q}::text COLLATE "C" = v.{q}::text COLLATE "C"'
                    if typname != "bpchar"
                    else f'rtrim(t.{q}) COLLATE "C" = rtrim(v.{q}) COLLATE "C"',
                    bool(nondeterministic) or typname in ("bpchar", "citext"),
                )
            if self.db.dialect == "mysql":
                found = conn.execute(
                    sa.text(
                        "SELECT CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLUMNS "
                        "WHERE TABLE_SCHEMA = COALESCE(:schema, DATABASE()) AND TABLE_NAME = :tab "
                        "AND COLUMN_NAME = :col"
                    ),
                    {"schema": table.schema, "tab": table.name, "col": name},
                ).one_or_none()
                charset, collation = found if found is not None else (None, None)
                if not collation or not _NAME.fullmatch(collation) or not _NAME.fullmatch(charset or ""):
                    return _Col(name, "{p}", f"t.{q} = v.{q}", False)
                return _Col(
                    name,
                    f"CONVERT({{p}} USING {charset}) COLLATE {collation}",
                    f"BINARY t.{q} = BINARY v.{q}",
                    not collation.endswith("_nopad_bin"),
                )
            # SQLite: the collation of the unique index that makes the key a key
            coll = _sqlite_collation(conn, table, name, set(self.key), self.quote)
            if coll is None:
                return _Col(name, "{p}", f"t.{q} = v.{q}", False)
            return _Col(
                name, f"{{p}} COLLATE {self.quote(coll)}", f"t.{q} = v.{q} COLLATE BINARY", coll != "BINARY"
            )

    # ----------------------------------------------------------------- probing

    def probe(self, keys: Sequence[records.Key]) -> list[Probed]:
        """For each key (distinct, in order): the first key of `keys` the destination takes as
        the same, and the stored key it would land on when that is not byte-equal. One query,
        the keys bound as one array (PostgreSQL) or JSON text (MariaDB, SQLite)."""
        if not keys:
            return []
        if self.sql is None:
            self.sql = self._sql()
        if self.db.dialect == "postgresql":  # text arrays, cast to each column's type in SQL
            params: dict[str, Any] = {
                f"k{j}": [None if k[j] is None else str(k[j]) for k in keys] for j in range(len(self.cols))
            }
        else:
            text = self.db.dialect == "mysql"
            params = {"keys": json.dumps([[_plain(v, text) for v in k] for k in keys])}
        try:
            groups, stored = self._query(params)
        except sa.exc.DBAPIError:  # not an error to report: the probe bisects instead
            # a key the column's type refuses: probe the halves; a key alone is left to the
            # write, which rejects it with the database's own message
            if len(keys) == 1:
                return [Probed(0, None)]
            mid = len(keys) // 2
            left, right = self.probe(keys[:mid]), self.probe(keys[mid:])
            return left + [Probed(p.group + mid, p.stored) for p in right]
        return [Probed(groups.get(i, i), stored.get(i)) for i in range(len(keys))]

    def _query(self, params: dict[str, Any]) -> tuple[dict[int, int], dict[int, records.Key]]:
        """The probe's rows; a lost connection is tried 4 times (pauses 0.5, 1, 2 s) like a write."""
        assert self.sql is not None
        delay = 0.5
        for attempt in range(4):
            groups: dict[int, int] = {}
            stored: dict[int, records.Key] = {}
            try:
                with self.db.engine.connect() as conn:  # only the keys that collide come back
                    for i, group, *found in conn.exec_driver_sql(self.sql, params):
                        if found[0] is None:
                            groups[int(i)] = int(group)
                        else:
                            stored[int(i)] = tuple(found)
                return groups, stored
            except db_errors.CONNECTION_ERRORS as exc:
                if attempt == 3:
                    what = f"destination {self.db.name}: checking keys for collisions failed after 4 attempts"
                    raise db_errors.transient(what, exc, "destination") from None
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _sql(self) -> str:
        q = self.quote
        names = [q(c.name) for c in self.cols]
        n = len(names)
        raw = [f"u.x{j}" for j in range(n)]
        values = ", ".join(
            c.value.format(p=r) + f" AS {m}" for c, r, m in zip(self.cols, raw, names, strict=True)
        )
        if self.db.dialect == "postgresql":
            arrays = ", ".join(f"CAST(%(k{j})s AS text[])" for j in range(n))
            rows = (
                f"SELECT (u.o - 1)::int AS i, {values} "  # noqa: S608 (catalog identifiers, quoted)
                f"FROM unnest({arrays}) WITH ORDINALITY AS u({', '.join(f'x{j}' for j in range(n))}, o)"
            )
        elif self.db.dialect == "mysql":
            cols = ", ".join(f"x{j} TEXT PATH '$[{j}]'" for j in range(n))
            rows = (
                f"SELECT u.i - 1 AS i, {values} "  # noqa: S608 (catalog identifiers, quoted)
                f"FROM JSON_TABLE(%(keys)s, '$[*]' COLUMNS (i FOR ORDINALITY, {cols})) AS u"
            )
        else:
            picks = ", ".join(f"json_extract(e.value, '$[{j}]') AS x{j}" for j in range(n))
            rows = (
                f"SELECT CAST(u.key AS INTEGER) AS i, {values} "  # noqa: S608 (catalog identifiers, quoted)
                f"FROM (SELECT e.key, {picks} FROM json_each(:keys) AS e) AS u"
            )
        match = " AND ".join(f"t.{m} = v.{m}" for m in names)
        stored = ", ".join(f"t.{m}" for m in names)
        if self.db.dialect == "postgresql":  # one index probe per key, whatever the planner thinks
            join = (
                f"CROSS JOIN LATERAL (SELECT {stored} FROM {self.qualified} t "  # noqa: S608 (quoted)
                f"WHERE {match} LIMIT 1) t"
            )
        else:
            join = f"JOIN {self.qualified} t ON {match}"
        exact = " AND ".join(c.exact for c in self.cols)
        listed = ", ".join(f"v.{m}" for m in names)
        same = " AND ".join(f"g.{m} = v.{m}" for m in names)
        nulls = ", ".join("NULL" for _ in names)
        # keys of the batch the collation groups together, then keys that land on a stored row
        # spelled otherwise; nothing comes back for a batch without collisions
        return (
            f"WITH v AS ({rows}) "  # noqa: S608 (catalog identifiers, quoted; values bound)
            f"SELECT v.i, g.f, {nulls} FROM v JOIN (SELECT {listed}, MIN(v.i) AS f FROM v "
            f"GROUP BY {listed} HAVING COUNT(*) > 1) g ON {same} "
            f"UNION ALL SELECT v.i, v.i, {stored} FROM v {join} WHERE NOT ({exact})"
        )


def _plain(value: Any, text: bool) -> Any:
    """A key value for the JSON array: text (MariaDB casts it by comparison), else as JSON has it."""
    if value is None or (not text and isinstance(value, int | float | str)):
        return value
    return str(value)


def _sqlite_collation(conn: sa.Connection, table: sa.Table, column: str, key: set[str], q: Any) -> str | None:
    """The collation of `column` in the unique index on exactly the key columns (None when the
    key is the rowid or no such index names one)."""
    pre = f"{q(table.schema)}." if table.schema else ""
    for idx in conn.exec_driver_sql(f"PRAGMA {pre}index_list({q(table.name)})").mappings():
        if not idx["unique"]:
            continue
        cols = list(conn.exec_driver_sql(f"PRAGMA {pre}index_xinfo({q(idx['name'])})").mappings())
        named = {c["name"]: c["coll"] for c in cols if c["key"] and c["name"]}
        if set(named) == key and column in named:
            return str(named[column]).upper() if named[column] else None
    return None
