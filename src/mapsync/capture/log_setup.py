"""Setup, teardown and health of the change-log method (`mapsync changelog …`).

PostgreSQL: checks `wal_level`, the REPLICATION privilege and the output plugin; sets REPLICA
IDENTITY FULL on the watched tables (so deletes carry the old row and key changes are seen);
creates or drops the sync's logical replication slot. MariaDB/MySQL: checks the binlog settings
and grants; nothing is created.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa

from mapsync import db_errors, errors
from mapsync.capture.binlog import BinlogReader
from mapsync.capture.log import watched_tables
from mapsync.capture.pg_logical import PgLog, lsn_int
from mapsync.connectors.sql import SqlDatabase
from mapsync.sheet import models
from mapsync.sheet.log_models import LogChanges, format_size


@dataclasses.dataclass
class Plan:
    """What `install`/`remove` found and would do for one sync."""

    sync: str
    dialect: str
    problems: list[str] = dataclasses.field(default_factory=list)  # stop: fix the server first
    statements: list[str] = dataclasses.field(default_factory=list)  # SQL to run, in order
    notes: list[str] = dataclasses.field(default_factory=list)


class _Source:
    """Just enough of a SqlSource for `watched_tables`."""

    def __init__(self, db: SqlDatabase) -> None:
        self.db = db


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _pg_quoted(conn: sa.Connection, table: sa.Table) -> str:
    return str(
        conn.execute(
            sa.text("SELECT format('%I.%I', CAST(coalesce(:s, current_schema()) AS text), CAST(:t AS text))"),
            {"s": table.schema, "t": table.name},
        ).scalar_one()
    )


def plan(db: SqlDatabase, sync: str, cfg: models.SyncConfig, action: str) -> Plan:
    """Checks and statements of `install` or `remove` for one log sync."""
    changes = cfg.changes
    assert isinstance(changes, LogChanges)
    if db.dialect not in ("postgresql", "mysql"):
        raise errors.ConfigError(
            f"sync {sync}: the source ({db.dialect}) has no change log: use `changes: {{method: queue}}`"
        )
    tables = watched_tables(_Source(db), cfg, sync)
    out = Plan(sync, db.dialect)
    try:
        if db.dialect == "postgresql":
            _pg_plan(db, sync, changes, tables, action, out)
        else:
            _mariadb_plan(db, sync, changes, tables, action, out)
    except sa.exc.DBAPIError as exc:
        raise db_errors.transient(f"sync {sync}", exc, "source") from None
    return out


def _pg_plan(
    db: SqlDatabase, sync: str, cfg: LogChanges, tables: dict[str, sa.Table], action: str, out: Plan
) -> None:
    slot = cfg.slot_name(sync)
    with db.engine.connect() as conn:
        exists = conn.execute(
            sa.text(
                "SELECT plugin, database = current_database(), database "
                "FROM pg_replication_slots WHERE slot_name = :s"
            ),
            {"s": slot},
        ).first()
        if exists and not exists[1]:
            out.problems.append(
                f"slot {slot} belongs to database {exists[2]} (slot names are per server): "
                "give this sync another `changes.slot`"
            )
            return
        if action == "remove":
            if exists:
                out.statements.append(f"SELECT pg_drop_replication_slot({_literal(slot)})")
            else:
                out.notes.append(f"slot {slot} does not exist")
            out.notes.append("REPLICA IDENTITY of the tables is left as it is")
            return
        wal_level = conn.execute(sa.text("SHOW wal_level")).scalar_one()
        if wal_level != "logical":
            out.problems.append(
                f"wal_level is {wal_level}: set `wal_level = logical` in postgresql.conf and restart"
            )
        allowed = conn.execute(sa.text("SELECT current_setting('output_plugin_libraries', true)")).scalar()
        if allowed is not None and cfg.plugin not in [p.strip() for p in str(allowed).split(",")]:
            out.problems.append(
                f"this server allows only the output plugins {allowed} (output_plugin_libraries): "
                f"add {cfg.plugin} there, or set `changes.plugin` to one of them"
            )
        privileged = conn.execute(
            sa.text("SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user")
        ).scalar()
        if not privileged:
            out.problems.append(
                "the connection's role needs the REPLICATION attribute (ALTER ROLE … REPLICATION)"
            )
        if exists and exists[0] != cfg.plugin:
            out.problems.append(
                f"slot {slot} exists with plugin {exists[0]}: `mapsync changelog remove` it first"
            )
        for table in tables.values():
            name = _pg_quoted(conn, table)
            identity = conn.execute(
                sa.text("SELECT relreplident FROM pg_class WHERE oid = to_regclass(:n)"), {"n": name}
            ).scalar()
            if identity != "f":
                out.statements.append(f"ALTER TABLE {name} REPLICA IDENTITY FULL")
        if not exists:
            out.statements.append(
                f"SELECT pg_create_logical_replication_slot({_literal(slot)}, {_literal(cfg.plugin)})"
            )
        else:
            out.notes.append(f"slot {slot} exists")


def _mariadb_plan(
    db: SqlDatabase, sync: str, cfg: LogChanges, tables: dict[str, sa.Table], action: str, out: Plan
) -> None:
    if action == "remove":
        out.notes.append("nothing to remove: mapsync creates nothing on MariaDB/MySQL")
        return
    reader = BinlogReader(db, cfg, sync, tables)
    out.problems.extend(reader.problems())
    with db.engine.connect() as conn:
        grants = " ".join(str(r[0]).upper() for r in conn.execute(sa.text("SHOW GRANTS FOR CURRENT_USER")))
    if "ALL PRIVILEGES ON *.*" not in grants:
        if "REPLICATION SLAVE" not in grants and "REPLICATION REPLICA" not in grants:
            out.problems.append("the user needs `GRANT REPLICATION SLAVE ON *.* TO …`")
        if not any(g in grants for g in ("BINLOG MONITOR", "REPLICATION CLIENT", "SUPER")):
            out.problems.append(
                "the user needs `GRANT BINLOG MONITOR ON *.* TO …` (MySQL: REPLICATION CLIENT)"
            )
    out.notes.append(f"replica server_id {cfg.replica_id(sync)}; nothing to create")


def clashes(sheet: models.Sheet, names: list[str]) -> list[str]:
    """Log syncs that would share a PostgreSQL slot or a MariaDB replica id on one connection."""
    seen: dict[tuple[str, str, Any], str] = {}
    found = []
    for name, cfg in sheet.syncs.items():
        changes = cfg.changes
        if not isinstance(changes, LogChanges):
            continue
        conn = cfg.from_.connection
        for what, value in (("slot", changes.slot_name(name)), ("server_id", changes.replica_id(name))):
            other = seen.setdefault((conn, what, value), name)
            if other != name and name in names:
                found.append(
                    f"syncs {other} and {name} share the {what} {value}: give one its own `changes.{what}`"
                )
    return found


def apply(db: SqlDatabase, p: Plan) -> None:
    """Run the statements of a plan (outside any transaction: slots need that)."""
    if p.problems:
        raise errors.ConfigError(f"sync {p.sync}: cannot set up the change log", p.problems)
    try:
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for stmt in p.statements:
                conn.execute(sa.text(stmt))
    except sa.exc.DBAPIError as exc:
        raise db_errors.refused(f"sync {p.sync}", exc) from None


def status(db: SqlDatabase, sync: str, cfg: models.SyncConfig, committed: Any) -> dict[str, Any]:
    """Where the log and the committed cursor stand; `warnings` says what needs attention."""
    changes = cfg.changes
    assert isinstance(changes, LogChanges)
    tables = watched_tables(_Source(db), cfg, sync)
    out: dict[str, Any] = {"sync": sync, "dialect": db.dialect, "committed": committed, "warnings": []}
    try:
        if db.dialect == "postgresql":
            _pg_status(db, sync, changes, tables, out)
        elif db.dialect == "mysql":
            _mariadb_status(db, sync, changes, tables, out)
        else:
            out["warnings"].append(f"the source ({db.dialect}) has no change log")
    except sa.exc.DBAPIError as exc:  # a status report: the failure is one of its warnings
        out["warnings"].append(db_errors.describe_error(exc))
    return out


def _pg_status(
    db: SqlDatabase, sync: str, cfg: LogChanges, tables: dict[str, sa.Table], out: dict[str, Any]
) -> None:
    slot = cfg.slot_name(sync)
    out["slot"] = slot
    with db.engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT plugin, active, CAST(confirmed_flush_lsn AS text), CAST(restart_lsn AS text), "
                "CAST(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) AS bigint), "
                "CAST(wal_status AS text), CAST(pg_current_wal_lsn() AS text) "
                "FROM pg_replication_slots WHERE slot_name = :s"
            ),
            {"s": slot},
        ).first()
    if row is None:
        out["warnings"].append(f"slot {slot} does not exist: run `mapsync changelog install`")
        return
    plugin, active, confirmed, restart, retained, wal_status, current = row
    out.update(
        plugin=plugin,
        active=active,
        confirmed_lsn=confirmed,
        restart_lsn=restart,
        current_lsn=current,
        retained_wal_bytes=int(retained or 0),
        wal_status=wal_status,
        max_retained_wal=cfg.max_retained_wal,
    )
    if int(retained or 0) > cfg.max_retained_wal:
        out["warnings"].append(
            f"slot {slot} retains {format_size(int(retained))} of WAL (more than max_retained_wal "
            f"{format_size(cfg.max_retained_wal)}): run the sync, or `mapsync changelog remove` it if "
            "the sync is abandoned, before the server's disk fills"
        )
    if wal_status == "lost":
        out["warnings"].append(f"slot {slot} lost WAL it needed: re-install and `mapsync seed --again`")
    committed = out["committed"]
    if committed and lsn_int(confirmed) > lsn_int(committed["lsn"]):
        out["warnings"].append("the slot is past the committed cursor: changes may be lost, re-seed")
    PgLog(db, cfg, sync, tables)  # checks the tables resolve


def _mariadb_status(
    db: SqlDatabase, sync: str, cfg: LogChanges, tables: dict[str, sa.Table], out: dict[str, Any]
) -> None:
    reader = BinlogReader(db, cfg, sync, tables)
    out["warnings"].extend(reader.problems())
    out["server_id"] = cfg.replica_id(sync)
    out["current"] = reader.current()
    files = reader.files()
    out["binlog_files"] = len(files)
    committed = out["committed"]
    if committed and committed.get("file") not in files:
        out["warnings"].append(
            f"binlog file {committed.get('file')} is purged: changes are lost, `mapsync seed --again`"
        )
