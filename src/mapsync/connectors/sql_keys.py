"""KeyProbe: which keys of a batch the destination itself takes for the same key.

A `_ci` or PAD SPACE collation (MariaDB's defaults), a nondeterministic PostgreSQL collation, a
`citext` or `CHAR(n)` column, or a SQLite `NOCASE`/`RTRIM` key makes keys that differ only in
case, accents or trailing spaces one row. Python cannot tell which keys those are; the database
can: one query per batch groups the batch's keys under the key columns' own collation (`MIN(i)
OVER (PARTITION BY …)`) and joins them to the rows already stored, comparing those byte for byte.
A key column whose collation equates only identical strings (PostgreSQL's deterministic
collations, SQLite `BINARY`, MariaDB `*_nopad_bin`, numbers, dates) needs no probe: when no key
column needs one, `KeyProbe.active` is false and nothing is sent.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from mapsync import records
from mapsync.connectors.sql import SqlDatabase

MAX_PARAMS = 30_000  # below SQLite's 32,766 bound values per statement
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
        self.active = any(c.loose for c in self.cols)
        self.description = ", ".join(c.name for c in self.cols if c.loose)

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
                ).one()
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
                charset, collation = conn.execute(
                    sa.text(
                        "SELECT CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLUMNS "
                        "WHERE TABLE_SCHEMA = COALESCE(:schema, DATABASE()) AND TABLE_NAME = :tab "
                        "AND COLUMN_NAME = :col"
                    ),
                    {"schema": table.schema, "tab": table.name, "col": name},
                ).one()
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
        the same, and the stored key it would land on when that is not byte-equal. One query
        for up to MAX_PARAMS bound values (30,000 one-column keys); a larger batch is probed in
        parts, and keys of different parts are not grouped with each other."""
        size = max(1, MAX_PARAMS // len(self.cols))
        out: list[Probed] = []
        for start in range(0, len(keys), size):
            part = self._probe(keys[start : start + size])
            out += [Probed(p.group + start, p.stored) for p in part]
        return out

    def _probe(self, keys: Sequence[records.Key]) -> list[Probed]:
        if not keys:
            return []
        q = self.quote
        names = [q(c.name) for c in self.cols]
        params: dict[str, Any] = {}
        selects = []
        for i, key in enumerate(keys):
            parts = [f"{i} AS i"]
            for j, (col, value) in enumerate(zip(self.cols, key, strict=True)):
                params[f"k{i}_{j}"] = value
                parts.append(col.value.format(p=f":k{i}_{j}") + f" AS {names[j]}")
            selects.append("SELECT " + ", ".join(parts))
        join = " AND ".join(f"t.{n} = v.{n}" for n in names)
        exact = " AND ".join(c.exact for c in self.cols)
        sql = (
            f"SELECT v.i, MIN(v.i) OVER (PARTITION BY {', '.join(f'v.{n}' for n in names)}), "  # noqa: S608 (identifiers quoted from the catalog; values bound)
            f"{', '.join(f't.{n}' for n in names)}, CASE WHEN {exact} THEN 1 ELSE 0 END "
            f"FROM ({' UNION ALL '.join(selects)}) v LEFT JOIN {self.qualified} t ON {join}"
        )
        out: dict[int, Probed] = {}
        with self.db.engine.connect() as conn:
            for row in conn.execute(sa.text(sql), params):
                i, group, *stored, same = row
                found = tuple(stored) if stored[0] is not None and not same else None
                if i not in out or found is not None:
                    out[i] = Probed(int(group), found)
        return [out[i] for i in range(len(keys))]


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
