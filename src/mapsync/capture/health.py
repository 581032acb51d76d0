"""Change-capture health for `mapsync check` and `mapsync status`.

Per sync with `changes.method: log`: the slot (PostgreSQL) or binlog (MariaDB) status from
`log_setup.status`, with its warnings (retained WAL above `max_retained_wal`, a missing or lost
slot, a purged binlog file). Per `queue` sync: whether the queue table and triggers are
installed and the backlog (`new` and `error` rows, age of the oldest `new`) from
`queue_admin.status`; a missing queue table or missing/partial triggers is a warning. Other
methods have nothing to report here. Nothing is changed.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from mapsync import connectors, db_errors, errors
from mapsync.capture import log_setup, queue_admin
from mapsync.connectors.sql import SqlDatabase
from mapsync.sheet.loader import LoadedSheet
from mapsync.sheet.log_models import LogChanges, format_size
from mapsync.sheet.queue_model import QueueChanges


def report(
    loaded: LoadedSheet, names: list[str], store: Any = None, handles: dict[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """sync name → `{"method", "summary", "warnings", "detail"}` for each log or queue sync of
    `names`. `handles` are open connections by name (SQL ones are used for the log status);
    any other needed one is opened here and closed again. `store` gives the committed cursor."""
    given = handles or {}
    opened: dict[str, Any] = {}
    out: dict[str, dict[str, Any]] = {}
    try:
        for name in names:
            changes = loaded.sheet.syncs[name].changes
            if isinstance(changes, LogChanges):
                out[name] = _log(loaded, name, store, given, opened)
            elif isinstance(changes, QueueChanges):
                out[name] = _queue(loaded, name)
    finally:
        for handle in opened.values():
            handle.close()
    return out


def _problem(method: str, text: str) -> dict[str, Any]:
    return {"method": method, "summary": "could not check", "warnings": [text], "detail": {}}


def _log(
    loaded: LoadedSheet, name: str, store: Any, given: dict[str, Any], opened: dict[str, Any]
) -> dict[str, Any]:
    cfg = loaded.sheet.syncs[name]
    conn_name = cfg.from_.connection
    try:
        db = given.get(conn_name) or opened.get(conn_name)
        if db is None:
            conn = loaded.sheet.connections[conn_name]
            db = opened[conn_name] = connectors.REGISTRY[conn.kind].connect(conn_name, conn, loaded.folder)
        if not isinstance(db, SqlDatabase):
            raise errors.ConfigError(f"connection {conn_name} is not a SQL database: it has no change log")
        committed = store.cursor(name, "log") if store is not None else None
        result = log_setup.status(db, name, cfg, committed)
    except errors.MapsyncError as exc:
        return _problem("log", f"could not read the change log's status: {exc}")
    except sa.exc.SQLAlchemyError as exc:  # the source is unreachable
        return _problem(
            "log", f"could not read the change log's status: {db_errors.describe_error(exc, loaded.secrets)}"
        )
    return {
        "method": "log",
        "summary": _log_summary(result),
        "warnings": result["warnings"],
        "detail": result,
    }


def _log_summary(r: dict[str, Any]) -> str:
    committed = r.get("committed")
    where = "none yet"
    if committed:
        where = committed.get("lsn") or f"{committed.get('file')}:{committed.get('pos')}"
    if "retained_wal_bytes" in r:
        return (
            f"slot {r['slot']} ({r['plugin']}, {'active' if r['active'] else 'inactive'}), retained WAL "
            f"{format_size(r['retained_wal_bytes'])} (warn above {format_size(r['max_retained_wal'])}), "
            f"committed {where}"
        )
    if "slot" in r:
        return f"slot {r['slot']}: not there"
    if r.get("current"):
        cur = r["current"]
        files = r.get("binlog_files")
        return f"binlog now {cur.get('file')}:{cur.get('pos')} ({files} files), committed {where}"
    return f"{r.get('dialect')}: no change-log position"


def _queue(loaded: LoadedSheet, name: str) -> dict[str, Any]:
    try:
        (queue,) = queue_admin.queues(loaded, [name])
        rows = queue_admin.status(loaded, queue)
    except errors.MapsyncError as exc:
        return _problem("queue", f"could not read the queue's status: {exc}")
    except sa.exc.SQLAlchemyError as exc:  # the source is unreachable
        return _problem(
            "queue", f"could not read the queue's status: {db_errors.describe_error(exc, loaded.secrets)}"
        )
    (row,) = [r for r in rows if r["sync"] == name]
    warnings = []
    if not row["queue_table"]:
        warnings.append(
            f"queue table {row['queue']} does not exist: run `mapsync triggers install` "
            "(no change is captured)"
        )
    if row["triggers"] != "installed":
        warnings.append(
            f"triggers on {row['table']} are {row['triggers']}: run `mapsync triggers install` "
            "(changes are not captured)"
        )
    counts = row["counts"]
    age = row["oldest_new_seconds"]
    backlog = f"{counts.get('new', 0)} new, {counts.get('error', 0)} error"
    if age is not None:
        backlog += f", oldest new {_age(age)} old"
    summary = (
        f"queue {row['queue']} ({'there' if row['queue_table'] else 'missing'}), triggers {row['triggers']}"
    )
    return {
        "method": "queue",
        "summary": f"{summary}; backlog {backlog}",
        "warnings": warnings,
        "detail": row,
    }


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
