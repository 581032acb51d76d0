"""`mapsync check --ddl`: a suggested `CREATE TABLE` for each missing SQL destination table.

mapsync never creates destination tables (docs/operations.md): they must exist, with a unique
key on the sync's `key.to` columns. For a table that is missing, this writes a statement to
start from, in the destination's dialect (PostgreSQL, MariaDB/MySQL, SQLite), built with
SQLAlchemy so names are quoted the database's way:

- the key columns as the PRIMARY KEY (NOT NULL);
- each column's type from what the sheet implies: `truncate: N` → VARCHAR(N), `country:
  iso2|iso3` → CHAR(2|3), `cast` → its type (`decimal` with `scale`), a `map` of numbers →
  INTEGER, a `map` of text → VARCHAR(longest), `required: true` → NOT NULL; otherwise the type
  of the source column it copies (when the source is a reachable SQL table), else text;
- the `deletes.field` of a `disable`/`by_reason` sync, and each child table the same way.

It is a suggestion: review the types and lengths before running it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from mapsync import errors
from mapsync.connectors.sql import SqlDatabase
from mapsync.sheet import models
from mapsync.sheet.fields import FieldRule
from mapsync.sheet.loader import LoadedSheet

TEXT_KEY_LENGTH = 255  # MariaDB cannot index TEXT: a text key column is VARCHAR(255) there


@dataclasses.dataclass
class Suggestion:
    sync: str
    connection: str
    table: str
    statement: str


def missing(loaded: LoadedSheet) -> list[Suggestion]:
    """A CREATE TABLE for every SQL destination table (parent or child) that does not exist."""
    sheet = loaded.sheet
    dbs: dict[str, SqlDatabase | None] = {}

    def db(name: str) -> SqlDatabase | None:
        if name not in dbs:
            cfg: Any = sheet.connections[name]
            try:
                dbs[name] = SqlDatabase(name, cfg.url, loaded.folder) if cfg.kind == "sql" else None
            except (errors.ConfigError, ModuleNotFoundError):  # (`check` itself names both)
                dbs[name] = None
        return dbs[name]

    out: list[Suggestion] = []
    try:
        for name, cfg in sheet.syncs.items():
            dest = db(cfg.to.connection)
            if dest is None or not cfg.to.table:
                continue
            source = db(cfg.from_.connection)
            parts: list[tuple[str, str | None, models.KeyMap, dict[str, FieldRule], list[str]]] = [
                (cfg.to.table, cfg.from_.table, cfg.key, cfg.fields, _delete_columns(cfg))
            ]
            for child in cfg.children.values():
                extra = [c for c in child.parent.to if c not in child.key.to]
                parts.append((child.to.table, child.from_.table, child.key, child.fields, extra))
            for table, source_table, key, fields, extra in parts:
                if _exists(dest, table):
                    continue
                source_types = _source_types(source, source_table)
                statement = create_table(dest.engine.dialect, table, key, fields, extra, source_types)
                out.append(Suggestion(name, cfg.to.connection, table, statement))
    finally:
        for handle in dbs.values():
            if handle is not None:
                handle.close()
    return out


def create_table(
    dialect: sa.Dialect,
    table: str,
    key: models.KeyMap,
    fields: dict[str, FieldRule],
    extra: list[str],
    source_types: dict[str, sa.types.TypeEngine[Any]],
) -> str:
    """The CREATE TABLE statement for one destination table, in `dialect`."""
    schema, _, bare = table.rpartition(".")
    columns: dict[str, sa.Column[Any]] = {}
    for src, dst in zip(key.from_, key.to, strict=True):
        rule = fields.get(dst)
        kind = _type(rule, dialect, source_types.get(src), is_key=True) if rule else None
        kind = kind or _generic(source_types.get(src), dialect, is_key=True)
        columns[dst] = sa.Column(dst, kind, primary_key=True, nullable=False, autoincrement=False)
    for name, rule in fields.items():
        if name in columns:
            continue
        src_type = source_types.get(rule.from_) if rule.from_ else None
        kind = _type(rule, dialect, src_type, is_key=False) or _generic(src_type, dialect, is_key=False)
        columns[name] = sa.Column(name, kind, nullable=not rule.required)
    for name in extra:
        columns.setdefault(name, sa.Column(name, _generic(None, dialect, is_key=False)))
    sa_table = sa.Table(bare, sa.MetaData(), *columns.values(), schema=schema or None)
    text = str(sa.schema.CreateTable(sa_table).compile(dialect=dialect)).strip()
    return "\n".join(line.rstrip().replace("\t", "    ") for line in text.splitlines()) + ";"


def _delete_columns(cfg: models.SyncConfig) -> list[str]:
    field = cfg.deletes.field
    return [field] if field and cfg.deletes.policy in ("disable", "by_reason") else []


def _exists(db: SqlDatabase, table: str) -> bool:
    schema, _, bare = table.rpartition(".")
    try:
        return sa.inspect(db.engine).has_table(bare, schema=schema or None)
    except sa.exc.SQLAlchemyError:
        return True  # unreachable: `check` says so; nothing to suggest


def _source_types(db: SqlDatabase | None, table: str | None) -> dict[str, sa.types.TypeEngine[Any]]:
    if db is None or not table:
        return {}
    schema, _, bare = table.rpartition(".")
    try:
        found = sa.inspect(db.engine).get_columns(bare, schema=schema or None)
    except sa.exc.SQLAlchemyError:  # unreachable: `check` says so; no types to suggest from
        return {}
    return {c["name"]: c["type"] for c in found}


def _type(
    rule: FieldRule, dialect: sa.Dialect, source: sa.types.TypeEngine[Any] | None, is_key: bool
) -> sa.types.TypeEngine[Any] | None:
    """The type a field's rules imply (None: they imply none)."""
    if isinstance(rule.truncate, int):
        return sa.String(rule.truncate)
    country = rule.country if isinstance(rule.country, str) else getattr(rule.country, "to", None)
    if country in ("iso2", "iso3"):
        return sa.CHAR(2 if country == "iso2" else 3)
    if rule.cast is not None:
        return _cast_type(rule.cast, rule.scale, dialect, is_key)
    if rule.map:
        targets = [v for v in rule.map.values() if v is not None]
        if targets and all(isinstance(v, bool) for v in targets):
            return sa.Boolean()
        if targets and all(isinstance(v, int) and not isinstance(v, bool) for v in targets):
            return sa.Integer()
        longest = max((len(str(v)) for v in targets), default=0)
        return sa.String(max(longest, 1)) if rule.on_unknown != "keep" else None
    if country == "name":
        return sa.String(100)
    return None


def _cast_type(cast: str, scale: int | None, dialect: sa.Dialect, is_key: bool) -> sa.types.TypeEngine[Any]:
    if cast == "int":
        return sa.BigInteger()
    if cast == "decimal":
        return sa.Numeric(18, scale if scale is not None else 4)
    if cast == "float":
        return sa.Float()
    if cast == "bool":
        return sa.Boolean()
    if cast == "date":
        return sa.Date()
    if cast == "datetime":
        return mysql.DATETIME(fsp=6) if dialect.name == "mysql" else sa.DateTime()
    return _text(dialect, is_key)


def _generic(
    source: sa.types.TypeEngine[Any] | None, dialect: sa.Dialect, is_key: bool
) -> sa.types.TypeEngine[Any]:
    """The source column's type in generic form, or text when it is not known."""
    if source is None:
        return _text(dialect, is_key)
    try:
        generic = source.as_generic()
    except NotImplementedError:
        return _text(dialect, is_key)
    if isinstance(generic, sa.String) and not generic.length:
        return _text(dialect, is_key)
    if isinstance(generic, sa.DateTime) and dialect.name == "mysql":
        return mysql.DATETIME(fsp=6)
    return generic


def _text(dialect: sa.Dialect, is_key: bool) -> sa.types.TypeEngine[Any]:
    if dialect.name == "mysql":
        return sa.String(TEXT_KEY_LENGTH) if is_key else sa.Text()
    return sa.Text()
