"""Facts of the transaction export (`changes: {method: export_flag}`) for its monitors
(`monitors.export`), `mapsync status` and `/metrics`. `watch_sources.sync_extra` calls
`source_facts` with the sync's source database (opened there with short timeouts; a source that
does not answer leaves these facts out: the monitors cannot tell) and `failures` with the state
store; `watch.sync_facts` calls `failures` alone after a run.

Keys (each only for an export sync, and only where it could be read):
- `export_pending` (int): rows waiting to be exported: the flag pending (NULL or a `pending`
  value), beyond the seed's starting point (`cursors["export"]["since"]`), under the sync's
  `filter`, and not marked failed by the write-back (those are `export_failed_rows`);
- `export_failed_rows` (int): rows beyond the starting point whose `status` is `statuses.failed`
  (or, with `on_failure: hold` and no status column, whose flag is `failed_value`);
- `export_now` (the source database's clock), and with `changes.created`: `export_created` (the
  creation times of the oldest pending rows, oldest first, at most `SAMPLE`) and
  `export_oldest_created` (the first of them);
- `export_failures` (from the state store): the open record errors of the sync, oldest first, at
  most `FAILURES_READ`, each `{key, arg, message, rule, first_seen, attempts, dead}` (`arg`: the key as
  `mapsync reexport` takes it), and `export_failures_total` (how many are open).

Gauges kept in the observations for `/metrics` (`observed`): `export_pending`,
`export_oldest_pending_s` (the source clock minus the oldest pending creation time; 0 when
nothing is pending)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from mapsync import db_errors, keys
from mapsync.capture.export_base import CURSOR
from mapsync.capture.export_writeback import as_flag
from mapsync.connectors.sql import SqlDatabase
from mapsync.monitors.export import SAMPLE
from mapsync.redact import redact
from mapsync.sheet.export_models import ExportFlagChanges
from mapsync.sheet.loader import LoadedSheet
from mapsync.sheet.models import SqlConnection
from mapsync.sql_time import parse_time
from mapsync.state import values
from mapsync.state.clock import unstamp
from mapsync.state.ports import Store

SHORT = {"connect": dt.timedelta(seconds=3), "statement": dt.timedelta(seconds=5)}  # as watch_sources
FAILURES_READ = 500  # open record errors read per evaluation (the oldest are shown)


def is_export(loaded: LoadedSheet, sync: str) -> bool:
    return isinstance(loaded.sheet.syncs[sync].changes, ExportFlagChanges)


def from_table(loaded: LoadedSheet, sync: str) -> bool:
    """An export from a SQL table: its pending rows can be counted there (an API's order export
    has no such count; its failed imports are record errors all the same)."""
    return is_export(loaded, sync) and loaded.sheet.syncs[sync].from_.table is not None


def source_facts(loaded: LoadedSheet, store: Store, sync: str, db: SqlDatabase) -> dict[str, Any]:
    """The backlog, the failed rows and the oldest pending creation times, read from the source."""
    cfg = loaded.sheet.syncs[sync]
    changes = cfg.changes
    assert isinstance(changes, ExportFlagChanges) and cfg.from_.table is not None
    table = db.table(cfg.from_.table, f"sync {sync}: from.table")
    col = table.c
    scope: list[Any] = [sa.text(f"({cfg.filter})")] if cfg.filter else []
    since = changes.since or (cfg.key.from_[0] if len(cfg.key.from_) == 1 else None)
    start = store.cursors(sync).get(CURSOR) or {}
    if since is not None and isinstance(start, dict) and start.get("since") is not None:
        scope.append(col[since] > sa.literal(values.decode(start["since"])))
    boolean = _boolean(col[changes.flag])  # 0/1 of the sheet are false/true on a boolean column
    failed = _failed(changes, col, boolean)
    flags = [as_flag(v, boolean) for v in changes.pending]
    pending = [*scope, sa.or_(col[changes.flag].is_(None), col[changes.flag].in_(flags))]
    if failed is not None and changes.status is not None:  # (a held row's flag is not pending)
        pending.append(sa.or_(col[changes.status].is_(None), sa.not_(failed)))
    out: dict[str, Any] = {"export_now": db.now()}
    with db.engine.connect() as conn:
        out["export_pending"] = int(
            conn.execute(sa.select(sa.func.count()).select_from(table).where(*pending)).scalar_one()
        )
        if failed is not None:
            out["export_failed_rows"] = int(
                conn.execute(sa.select(sa.func.count()).select_from(table).where(*scope, failed)).scalar_one()
            )
        if changes.created is not None:
            created = col[changes.created]
            query = sa.select(created).where(*pending, created.is_not(None)).order_by(created).limit(SAMPLE)
            zone = db.zone(None)
            times = [parse_time(v, zone).astimezone(dt.UTC) for (v,) in conn.execute(query)]
            out["export_created"] = times
            if times:
                out["export_oldest_created"] = times[0]
    return out


def _boolean(column: Any) -> bool:
    try:
        return column.type.python_type is bool
    except NotImplementedError:
        return False


def _failed(changes: ExportFlagChanges, col: Any, boolean: bool) -> sa.ColumnElement[bool] | None:
    """What marks a row failed: its status, else (`on_failure: hold`) its flag; None: nothing."""
    if changes.status is not None:
        return col[changes.status] == changes.statuses.failed  # type: ignore[no-any-return]
    if changes.on_failure == "hold":
        return col[changes.flag] == as_flag(changes.failed_value, boolean)  # type: ignore[no-any-return]
    return None


def failures(loaded: LoadedSheet, store: Store, sync: str) -> dict[str, Any]:
    """The open record errors of an export sync (each a failed import), oldest first."""
    if not is_export(loaded, sync):
        return {}
    rows = store.history.record_errors(sync, False, FAILURES_READ)
    total = len(rows)
    if total >= FAILURES_READ:
        total = store.history.count_record_errors(sync, False)
    columns = keys.columns_of(loaded.sheet, sync)
    found = []
    for row in sorted(rows, key=lambda r: (str(r["first_seen"]), str(r["key"]))):
        key = keys.from_text(row["key"])
        first = row["first_seen"]
        found.append(
            {
                "key": row["key"],
                "arg": keys.to_arg(key, columns),
                "message": str(row["message"] or ""),
                "rule": row.get("rule"),
                "first_seen": unstamp(first) if isinstance(first, str) else first,
                "attempts": int(row["attempts"] or 0),
                "dead": row.get("dead_at") is not None,
            }
        )
    return {"export_failures": found, "export_failures_total": total}


def observed(out: dict[str, Any]) -> dict[str, Any]:
    """The gauges of this evaluation for the observations (`/metrics`)."""
    if out.get("export_pending") is None:
        return {}
    measured: dict[str, Any] = {"export_pending": out["export_pending"]}
    now, oldest = out.get("export_now"), out.get("export_oldest_created")
    if isinstance(now, dt.datetime) and "export_created" in out:
        age = (now - oldest).total_seconds() if isinstance(oldest, dt.datetime) else 0.0
        measured["export_oldest_pending_s"] = round(max(0.0, age), 3)
    return measured


def age_text(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def status(loaded: LoadedSheet, store: Store, names: list[str]) -> dict[str, dict[str, Any]]:
    """For `mapsync status`: per export sync of `names`, `{"summary", "pending", "failed",
    "oldest_pending_s", "error"}`, read now from its source (short timeouts; a source that does
    not answer gives `error` and no numbers)."""
    out: dict[str, dict[str, Any]] = {}
    opened: dict[str, SqlDatabase] = {}
    try:
        for sync in names:
            if not from_table(loaded, sync):
                continue
            try:
                db = _open(loaded, loaded.sheet.syncs[sync].from_.connection, opened)
                facts = source_facts(loaded, store, sync, db)
            except Exception as exc:  # the source away: said, not raised
                text = (
                    db_errors.describe_error(exc, loaded.secrets)
                    if isinstance(exc, sa.exc.SQLAlchemyError)
                    else str(exc)
                )
                out[sync] = {
                    "summary": "export: could not read the source",
                    "error": redact(text, loaded.secrets, cap=300),
                }
                continue
            seen = observed(facts)
            row: dict[str, Any] = {
                "pending": facts["export_pending"],
                "failed": facts.get("export_failed_rows"),
                "oldest_pending_s": seen.get("export_oldest_pending_s"),
                "error": None,
            }
            text = f"export: {row['pending']} pending"
            if row["oldest_pending_s"] is not None and row["pending"]:
                text += f", oldest unexported {age_text(row['oldest_pending_s'])} old"
            if row["failed"] is not None:
                text += f", {row['failed']} failed"
            out[sync] = {"summary": text, **row}
    finally:
        for db in opened.values():
            db.close()
    return out


def _open(loaded: LoadedSheet, name: str, opened: dict[str, SqlDatabase]) -> SqlDatabase:
    if name not in opened:
        cfg = loaded.sheet.connections[name]
        assert isinstance(cfg, SqlConnection)  # an export sync's source is SQL (the capture says so)
        timeouts = cfg.timeouts.model_copy(update=SHORT)
        opened[name] = SqlDatabase(name, cfg.url, loaded.folder, cfg.timezone, timeouts)
    return opened[name]
