"""Setting up and looking after trigger queues: which syncs feed which queue table, installing
and removing the DDL, status counts and purge (behind `mapsync triggers …`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa

from mapsync import connectors, db_errors, errors
from mapsync.capture import queue_table as qt
from mapsync.capture import triggers
from mapsync.connectors.sql import SqlDatabase
from mapsync.ports import Handle
from mapsync.sheet.export_models import ExportFlagChanges
from mapsync.sheet.loader import LoadedSheet
from mapsync.sheet.queue_model import QueueChanges


@dataclasses.dataclass
class Queue:
    """One queue table of one connection and the syncs (source tables) feeding it."""

    connection: str
    table: str
    syncs: dict[str, QueueChanges]  # sync name → its `changes`
    sources: dict[str, str]  # sync name → source table
    keys: dict[str, tuple[str, ...]]  # source table → key columns
    # source table → columns an export_flag sync's write-back sets there (the triggers ignore them)
    ignore: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    @property
    def archive(self) -> bool:
        return any(c.archive for c in self.syncs.values())


def queues(loaded: LoadedSheet, names: list[str]) -> list[Queue]:
    """The queues of these syncs (those with `changes.method: queue`); ConfigError when a named
    sync is not a queue sync, reads a query, or shares its source table and queue with another."""
    out: dict[tuple[str, str], Queue] = {}
    for name in names:
        cfg = loaded.sheet.syncs[name]
        changes = cfg.changes
        if not isinstance(changes, QueueChanges):
            if len(names) == 1:
                raise errors.ConfigError(f"sync {name} does not use `changes: {{method: queue}}`")
            continue
        if cfg.from_.table is None:
            raise errors.ConfigError(
                f"sync {name}: changes.method queue needs `from.table` (triggers watch a table, not a query)"
            )
        conn = cfg.from_.connection
        q = out.setdefault((conn, changes.table), Queue(conn, changes.table, {}, {}, {}))
        key = tuple(cfg.key.from_)
        for other, table in q.sources.items():
            if table == cfg.from_.table:
                raise errors.ConfigError(
                    f"syncs {other} and {name} both read table {table!r} through queue {changes.table!r}: "
                    "give one of them its own `changes.table` (each sync completes the rows it claims)"
                )
        q.syncs[name] = changes
        q.sources[name] = cfg.from_.table
        q.keys[cfg.from_.table] = key
        q.ignore[cfg.from_.table] = written_back(loaded, conn, cfg.from_.table)
    if not out:
        raise errors.ConfigError("no sync of this sheet uses `changes: {method: queue}`")
    return list(out.values())


def written_back(loaded: LoadedSheet, connection: str, table: str) -> tuple[str, ...]:
    """The columns of this table that the write-back of any `export_flag` sync reading it sets
    (whichever syncs were named): an update of only these is no edit to a queue sync."""
    out: dict[str, None] = {}
    for cfg in loaded.sheet.syncs.values():
        if (
            isinstance(cfg.changes, ExportFlagChanges)
            and cfg.from_.connection == connection
            and cfg.from_.table == table
        ):
            out.update(dict.fromkeys(cfg.changes.written_columns()))
    return tuple(out)


def connect(loaded: LoadedSheet, name: str) -> Handle:
    conn = loaded.sheet.connections[name]
    return connectors.REGISTRY[conn.kind].connect(name, conn, loaded.folder)


def targets(queue: Queue, db: Any | None) -> list[triggers.Target]:
    """The queue's source tables, checked against the catalog (`db`; None: no check, no columns)."""
    out = []
    for sync, table in queue.sources.items():
        key = queue.keys[table]
        ignore = queue.ignore.get(table, ())
        columns: tuple[str, ...] = ()
        if db is not None:
            reflected = db.table(table, f"sync {sync}: from.table")
            columns = tuple(c.name for c in reflected.columns)
            missing = [k for k in key if k not in columns]
            if missing:
                raise errors.ConfigError(
                    f"sync {sync}: key column(s) {', '.join(missing)} not in table {table!r}"
                )
            missing = [c for c in ignore if c not in columns]
            if missing:
                raise errors.ConfigError(
                    f"sync {sync}: column(s) {', '.join(missing)}, written back by an export_flag sync "
                    f"of the same table, not in table {table!r}"
                )
        out.append(triggers.Target(table, key, columns, ignore))
    return out


def sql_of(db: Handle) -> SqlDatabase:
    """The SQL database behind a connection's handle; ConfigError where triggers cannot run."""
    if not isinstance(db, SqlDatabase) or db.dialect not in ("postgresql", "mysql", "sqlite"):
        raise errors.ConfigError(
            f"connection {db.name}: trigger queues run on PostgreSQL, MariaDB and SQLite "
            "(for SQL Server: `mapsync triggers install --print --dialect mssql`)"
        )
    return db


def dialect_of(db: Handle) -> str:
    return sql_of(db).dialect


def execute(db: Any, statements: list[str]) -> None:
    """Run DDL: in one transaction on PostgreSQL and SQLite (a re-install swaps the triggers
    atomically); MariaDB commits each statement and replaces triggers with CREATE OR REPLACE."""
    try:
        if db.dialect == "sqlite":
            raw = db.engine.raw_connection()
            try:
                raw.driver_connection.executescript(
                    "BEGIN IMMEDIATE;\n" + triggers.script("sqlite", statements) + "COMMIT;\n"
                )
            except Exception:
                raw.driver_connection.rollback()
                raise
            finally:
                raw.close()
            return
        with db.engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    except (sa.exc.DBAPIError, OSError) as exc:
        raise errors.TransientError(
            f"connection {db.name}: the DDL failed: {db_errors.describe_error(exc)} "
            "(does the user have the rights to create tables and triggers? `--print` writes the DDL "
            "for a DBA)",
            failure_class="source",
        ) from None
    except Exception as exc:  # sqlite3.Error from executescript
        raise db_errors.transient(f"connection {db.name}: the DDL failed", exc, "source") from None


def installed_triggers(db: Any, names: list[str]) -> set[str]:
    sql = {
        "postgresql": "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgname IN :names",
        "mysql": "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS "
        "WHERE TRIGGER_SCHEMA = DATABASE() AND TRIGGER_NAME IN :names",
        "sqlite": "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name IN :names",
    }[db.dialect]
    query = sa.text(sql).bindparams(sa.bindparam("names", expanding=True))
    with db.engine.connect() as conn:
        return {str(r[0]) for r in conn.execute(query, {"names": names})}


def status(loaded: LoadedSheet, queue: Queue) -> list[dict[str, Any]]:
    """Per sync: queue table, triggers installed, rows per status, age of the oldest `new` row."""
    handle = connect(loaded, queue.connection)
    try:
        db = sql_of(handle)
        d = db.dialect
        exists = queue.table in sa.inspect(db.engine).get_table_names()
        out = []
        for sync, target in zip(queue.sources, targets(queue, db), strict=True):
            expected = triggers.trigger_names(d, queue.table, target)
            present = installed_triggers(db, expected)
            counts: dict[str, int] = {}
            age = None
            if exists:
                with db.engine.connect() as conn:
                    counts, age = qt.counts(conn, queue.table, target.table)
            out.append(
                {
                    "sync": sync,
                    "connection": queue.connection,
                    "queue": queue.table,
                    "table": target.table,
                    "queue_table": exists,
                    "triggers": "installed"
                    if len(present) == len(expected)
                    else ("partial" if present else "missing"),
                    "counts": {s: counts.get(s, 0) for s in triggers.STATUSES},
                    "oldest_new_seconds": None if age is None else round(age, 3),
                }
            )
        return out
    finally:
        handle.close()


def purge(loaded: LoadedSheet, queue: Queue) -> dict[str, int]:
    """Purge each sync's final rows older than its retention; sync name → rows purged."""
    handle = connect(loaded, queue.connection)
    try:
        db = sql_of(handle)
        known = sa.inspect(db.engine).get_table_names()
        if queue.table not in known:
            raise errors.ConfigError(
                f"connection {queue.connection}: queue table {queue.table!r} does not exist "
                "(`mapsync triggers install`)"
            )
        out = {}
        for sync, cfg in queue.syncs.items():
            if cfg.archive and triggers.archive_name(queue.table) not in known:
                raise errors.ConfigError(
                    f"sync {sync}: `archive: true` but {triggers.archive_name(queue.table)!r} does not "
                    "exist: rerun `mapsync triggers install`"
                )
            try:
                out[sync] = qt.purge(db.engine, queue.table, queue.sources[sync], cfg.retention, cfg.archive)
            except sa.exc.DBAPIError as exc:
                raise db_errors.transient(
                    f"sync {sync}: purging {queue.table} failed", exc, "source"
                ) from None
        return out
    finally:
        handle.close()
