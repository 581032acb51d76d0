"""Facts for the monitors that only a sync's ends (or the machine) can give: the source's newest
change and row count, capture health, backlogs, clocks, disk. `mapsync.watch` calls `sync_extra`
for each sync and `sheet_extra` once per evaluation and puts the dicts into `SyncFacts.extra` and
`SheetFacts.extra`. A fact that could not be read is left out (never an exception): the monitor
that needs it cannot tell, and the reason is logged at debug level, secrets removed.

`sync_extra` keys (each only where the sync has it):
- `backlog_rows` (int), `oldest_pending_s` (float), `backlog_kind` (`queue` | `inbox`): pending
  rows of a trigger queue (`new`) or of the webhook inbox, and the age of the oldest;
- `queue_table` (bool), `triggers` (`installed` | `partial` | `missing`), `triggers_disabled`
  (int, PostgreSQL's `pg_trigger.tgenabled = 'D'`; MariaDB cannot disable a trigger): queue syncs;
- `slot_state` (`ok` | `missing` | `lost`), `wal_retained_mb` (float): log syncs (PostgreSQL
  slot; on MariaDB `lost` means the committed binlog file was purged);
- `source_newest` (aware UTC datetime: the newest value of the watermark column, under the sync's
  filter), `cursor_at` (the committed watermark as an aware UTC time), `source_now` (the source
  database's clock): watermark syncs on SQL;
- `source_rows` (int): the source table's rows (SQL tables). Counting must stay cheap: the
  catalog's estimate is read first (PostgreSQL `pg_class.reltuples`, MariaDB
  `information_schema.TABLES.TABLE_ROWS`); below `SMALL_TABLE` rows (or with no estimate, as on
  SQLite) the rows are counted exactly, but never more than `SMALL_TABLE + 1` of them; a bigger
  table keeps its estimate (which moves when the server analyses the table: autovacuum, ANALYZE);
- `source_newest_seen`, `source_rows_ref`: the references `source_regression` compares with (the
  newest change seen so far; the row count before a drop), from the observations;
- `unmapped`: per field with open unmapped values `{field, values, records, newest}`;
- `async_created`: creation times of the sync's unsettled asynchronous batches;
- `export_*`: export syncs (`changes.method: export_flag`), see `watch_export`;
- `budgets`: per API connection of the sync with a call budget `{remaining, server_remaining,
  blocked_for, side}` (`remaining`: the fewest calls left in any of its windows).

`sheet_extra` keys: `reconcile` (check → its latest result row), `clocks` (name → seconds the
database's clock is ahead of this host's; `state` is the state store; SQLite shares this host's
clock and is left out), `disk_free_mb` (SQLite state store), `store_trouble` (None, or the reason
the state store failed while gathering), `channel_failures` (alert channel → notices that failed
in a row, newest first).

Gauges kept in the observations (`store.observations`) for `/metrics`, per sync, when known:
`lag_s` (seconds the watermark is behind the source clock while the source has newer rows, or
the age of the oldest pending queue/inbox row; 0 when caught up), `backlog_rows`,
`oldest_pending_s`, `wal_retained_mb`, `source_rows`, `source_newest` (and the references
`source_newest_seen`, `source_rows_ref`), `export_pending`, `export_oldest_pending_s`; for the
sheet (`*`): `disk_free_mb`.

Connections: a handle in `handles` (by connection name) is used as it is; any other is opened
here with short timeouts, added to `handles` (so the next sync reuses it) and named in
`handles[OPENED]`: `release(handles)` closes those at the end of the evaluation."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import sqlalchemy as sa

from mapsync import watch_export
from mapsync.capture import queue_admin, triggers
from mapsync.capture import queue_table as qt
from mapsync.connectors.sql import SqlDatabase
from mapsync.connectors.sql_source import SqlSource
from mapsync.ports import Handle
from mapsync.sheet import models
from mapsync.sheet.loader import LoadedSheet
from mapsync.sheet.log_models import LogChanges
from mapsync.sheet.queue_model import QueueChanges
from mapsync.sheet.webhook_models import InboxChanges
from mapsync.sql_time import parse_time
from mapsync.state.clock import unstamp
from mapsync.state.ports import Store
from mapsync.watch_environment import sheet_extra as sheet_extra
from mapsync.watch_handles import OPENED as OPENED
from mapsync.watch_handles import gather, handle, sql
from mapsync.watch_handles import release as release

log = logging.getLogger("mapsync.watch")

SMALL_TABLE = 100_000  # counted exactly below this many (estimated) rows
_MB = 1024 * 1024
ROWS_DROP_SHARE = 0.1  # as monitors.signals: a drop below the reference by more than this share


# --------------------------------------------------------------------------- per sync


def sync_extra(
    loaded: LoadedSheet, store: Store, sync: str, handles: dict[str, Any], *, observe: bool = True
) -> dict[str, Any]:
    """Facts of one sync for `SyncFacts.extra` (a fact that could not be read is left out);
    `observe=False` (a dry run) compares with the stored observations without writing new ones."""
    cfg = loaded.sheet.syncs[sync]
    out: dict[str, Any] = {}
    where = f"sync {sync}"
    gather(loaded, f"{where}: unmapped values", out, lambda: unmapped_facts(store, sync))
    gather(loaded, f"{where}: asynchronous batches", out, lambda: _async(store, sync))
    gather(loaded, f"{where}: call budgets", out, lambda: _budgets(loaded, store, cfg, handles))
    changes = cfg.changes
    src = cfg.from_.connection
    is_sql = isinstance(loaded.sheet.connections[src], models.SqlConnection)
    if isinstance(changes, QueueChanges):
        gather(loaded, f"{where}: change queue", out, lambda: _queue(loaded, store, sync, handles))
    elif isinstance(changes, LogChanges):
        gather(loaded, f"{where}: change log", out, lambda: _log(loaded, store, sync, handles))
    elif isinstance(changes, InboxChanges) or (isinstance(changes, models.ExportFlagChanges) and not is_sql):
        # an API's order export waits in the inbox too (pages not split, orders not delivered)
        gather(loaded, f"{where}: inbox", out, lambda: _inbox(store, sync))
    if is_sql:
        if isinstance(changes, models.WatermarkChanges):
            gather(loaded, f"{where}: watermark", out, lambda: _watermark(loaded, store, sync, handles))
        if cfg.from_.table is not None:
            gather(loaded, f"{where}: source rows", out, lambda: _rows(loaded, store, sync, handles))
        if watch_export.from_table(loaded, sync):
            gather(loaded, f"{where}: export", out, lambda: _export(loaded, store, sync, handles))
    gather(loaded, f"{where}: failed imports", out, lambda: watch_export.failures(loaded, store, sync))
    gather(loaded, f"{where}: observations", out, lambda: _observe(store, sync, out, write=observe))
    return out


def unmapped_facts(store: Store, sync: str) -> dict[str, Any]:
    fields: dict[str, dict[str, Any]] = {}
    for row in store.unmapped_values(sync):
        f = fields.setdefault(
            row["field"], {"field": row["field"], "values": 0, "records": 0, "newest": None}
        )
        f["values"] += 1
        f["records"] += int(row["count"])
        seen = unstamp(row["first_seen"]) if isinstance(row["first_seen"], str) else row["first_seen"]
        if f["newest"] is None or seen > f["newest"]:
            f["newest"] = seen
    return {"unmapped": [fields[k] for k in sorted(fields)]}


def _async(store: Store, sync: str) -> dict[str, Any]:
    created = []
    for batch in store.jobs.unfinished(sync):
        at = batch["created_at"]
        created.append(unstamp(at) if isinstance(at, str) else at)
    return {"async_created": created}


def _budgets(
    loaded: LoadedSheet, store: Store, cfg: models.SyncConfig, handles: dict[str, Any]
) -> dict[str, Any]:
    sides = {cfg.from_.connection: "source", cfg.to.connection: "destination"}
    out: dict[str, dict[str, Any]] = {}
    for name, side in sides.items():
        if isinstance(loaded.sheet.connections[name], models.SqlConnection):
            continue
        opened: Handle = handle(loaded, store, name, handles)  # opened with the store: a shared budget
        budget = opened.budget
        if budget is None:
            continue
        left = budget.remaining()
        limits = left.get("limits") or []
        out[name] = {
            "remaining": min((int(x["remaining"]) for x in limits), default=None),
            "server_remaining": left.get("server_remaining"),
            "blocked_for": left.get("blocked_for") or 0.0,
            "side": side,
        }
    return {"budgets": out} if out else {}


def _queue(loaded: LoadedSheet, store: Store, sync: str, handles: dict[str, Any]) -> dict[str, Any]:
    (queue,) = queue_admin.queues(loaded, [sync])
    db = sql(loaded, store, queue.connection, handles)
    if db is None:
        return {}
    target = next(t for s, t in zip(queue.sources, queue_admin.targets(queue, db), strict=True) if s == sync)
    expected = triggers.trigger_names(db.dialect, queue.table, target)
    present = queue_admin.installed_triggers(db, expected)
    out: dict[str, Any] = {
        "triggers": "installed" if len(present) == len(expected) else ("partial" if present else "missing"),
        "triggers_disabled": len(_disabled_triggers(db, sorted(present))),
    }
    exists = sa.inspect(db.engine).has_table(queue.table)
    out["queue_table"] = exists
    if exists:
        with db.engine.connect() as conn:
            counts, age = qt.counts(conn, queue.table, target.table)
        out.update(backlog_kind="queue", backlog_rows=int(counts.get("new", 0)))
        if age is not None:
            out["oldest_pending_s"] = float(age)
    return out


def _disabled_triggers(db: SqlDatabase, names: list[str]) -> list[str]:
    """PostgreSQL: the triggers among `names` that are DISABLED (`ALTER TABLE … DISABLE TRIGGER`;
    `tgenabled` is `D`). MariaDB and SQLite cannot disable a trigger."""
    if db.dialect != "postgresql" or not names:
        return []
    query = sa.text(
        "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgenabled = 'D' AND tgname IN :names"
    ).bindparams(sa.bindparam("names", expanding=True))
    with db.engine.connect() as conn:
        return [str(r[0]) for r in conn.execute(query, {"names": names})]


def _log(loaded: LoadedSheet, store: Store, sync: str, handles: dict[str, Any]) -> dict[str, Any]:
    cfg = loaded.sheet.syncs[sync]
    changes = cfg.changes
    assert isinstance(changes, LogChanges)
    db = sql(loaded, store, cfg.from_.connection, handles)
    if db is None:
        return {}
    if db.dialect == "postgresql":
        with db.engine.connect() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT CAST(wal_status AS text), "
                    "CAST(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) AS bigint) "
                    "FROM pg_replication_slots WHERE slot_name = :s"
                ),
                {"s": changes.slot_name(sync)},
            ).first()
        if row is None:
            return {"slot_state": "missing"}
        wal_status, retained = row
        return {
            "slot_state": "lost" if wal_status == "lost" else "ok",
            "wal_retained_mb": int(retained or 0) / _MB,
        }
    if db.dialect == "mysql":
        committed = store.cursor(sync, "log")
        if not committed or not committed.get("file"):
            return {}
        with db.engine.connect() as conn:
            files = {str(r[0]) for r in conn.exec_driver_sql("SHOW BINARY LOGS")}
        return {"slot_state": "ok" if committed["file"] in files else "lost"}
    return {}


def _inbox(store: Store, sync: str) -> dict[str, Any]:
    counts = store.inbox.counts(sync)
    out: dict[str, Any] = {"backlog_kind": "inbox", "backlog_rows": int(counts.get("new", 0))}
    oldest = store.inbox.new_items(sync, 0, 1)
    if oldest:
        received = unstamp(oldest[0].received_at)
        out["oldest_pending_s"] = max(0.0, (dt.datetime.now(dt.UTC) - received).total_seconds())
    return out


def _export(loaded: LoadedSheet, store: Store, sync: str, handles: dict[str, Any]) -> dict[str, Any]:
    db = sql(loaded, store, loaded.sheet.syncs[sync].from_.connection, handles)
    return {} if db is None else watch_export.source_facts(loaded, store, sync, db)


def _watermark(loaded: LoadedSheet, store: Store, sync: str, handles: dict[str, Any]) -> dict[str, Any]:
    cfg = loaded.sheet.syncs[sync]
    changes = cfg.changes
    assert isinstance(changes, models.WatermarkChanges)
    db = sql(loaded, store, cfg.from_.connection, handles)
    if db is None:
        return {}
    source = SqlSource(db, sync, cfg, changes.column)
    zone = db.zone(changes.timezone)
    where = [sa.text(f"({cfg.filter})")] if cfg.filter else []
    cursor = store.cursor(sync, "watermark")
    newest_of = sa.select(sa.func.max(source.ts_expr(zone))).select_from(source.relation)
    with db.engine.connect() as conn:
        newest = None
        bound = None if cursor is None else source.ts_bound(cursor, zone, lower=True)
        near = [] if bound is None else source.ts_since(bound, zone)  # SQLite only
        if near:  # `ts_expr` converts each row it reads there: if a row is at or after the
            # watermark, the newest is among the rows the raw-text condition keeps
            newest = conn.execute(newest_of.where(*near, *where)).scalar()
            if newest is not None and newest < bound:  # both fixed-width UTC text
                newest = None  # only older rows near the bound: the newest may be elsewhere
        if newest is None:
            newest = conn.execute(newest_of.where(*where)).scalar()
    out: dict[str, Any] = {"source_now": db.now()}
    if newest is not None:
        out["source_newest"] = parse_time(newest, zone).astimezone(dt.UTC)
    if cursor is not None:
        out["cursor_at"] = parse_time(cursor, zone).astimezone(dt.UTC)
    return out


def _rows(loaded: LoadedSheet, store: Store, sync: str, handles: dict[str, Any]) -> dict[str, Any]:
    cfg = loaded.sheet.syncs[sync]
    db = sql(loaded, store, cfg.from_.connection, handles)
    if db is None or cfg.from_.table is None:
        return {}
    table = db.table(cfg.from_.table, f"sync {sync}: from.table")
    estimate = _estimate(db, table)
    if estimate is not None and estimate > SMALL_TABLE:
        return {"source_rows": estimate}
    capped = sa.select(sa.literal(1)).select_from(table).limit(SMALL_TABLE + 1).subquery()
    with db.engine.connect() as conn:
        counted = int(conn.execute(sa.select(sa.func.count()).select_from(capped)).scalar_one())
    if counted > SMALL_TABLE:
        return {} if estimate is None else {"source_rows": estimate}
    return {"source_rows": counted}


def _estimate(db: SqlDatabase, table: sa.Table) -> int | None:
    """The catalog's row estimate (None: none, or never analysed)."""
    with db.engine.connect() as conn:
        if db.dialect == "postgresql":
            preparer = db.engine.dialect.identifier_preparer
            name = preparer.format_table(table)
            value = conn.execute(
                sa.text("SELECT CAST(reltuples AS bigint) FROM pg_class WHERE oid = to_regclass(:n)"),
                {"n": name},
            ).scalar()
        elif db.dialect == "mysql":
            value = conn.execute(
                sa.text(
                    "SELECT TABLE_ROWS FROM information_schema.TABLES "
                    "WHERE TABLE_SCHEMA = COALESCE(:s, DATABASE()) AND TABLE_NAME = :t"
                ),
                {"s": table.schema, "t": table.name},
            ).scalar()
        else:
            return None
    return None if value is None or int(value) < 0 else int(value)


def _observe(store: Store, sync: str, out: dict[str, Any], *, write: bool = True) -> dict[str, Any]:
    """Keep this evaluation's gauges and references; the regression references for the monitor."""
    measured: dict[str, Any] = {}
    for name in ("backlog_rows", "oldest_pending_s", "wal_retained_mb", "source_rows", "source_newest"):
        if out.get(name) is not None:
            measured[name] = out[name]
    measured.update(watch_export.observed(out))
    lag = _lag(out)
    if lag is not None:
        measured["lag_s"] = lag
    newest, rows = out.get("source_newest"), out.get("source_rows")
    if newest is not None:
        measured["source_newest_seen"] = newest  # replaced below by the higher of the two
    if rows is not None:
        measured["source_rows_ref"] = rows
    if not measured:
        return {}
    previous = {
        k: v[0]
        for k, v in store.observations.observations(sync).items()
        if k[1] in ("source_newest_seen", "source_rows_ref")
    }
    extra: dict[str, Any] = {}
    seen = previous.get((sync, "source_newest_seen"))
    if newest is not None and isinstance(seen, dt.datetime):
        extra["source_newest_seen"] = seen
        measured["source_newest_seen"] = max(seen, newest)
    ref = previous.get((sync, "source_rows_ref"))
    # measured before but not this time (a query timed out): the monitor cannot tell, and must not
    # resolve that subject's incident on the strength of the other one alone
    if newest is None and isinstance(seen, dt.datetime):
        extra["source_newest_unknown"] = True
    if rows is None and isinstance(ref, int):
        extra["source_rows_unknown"] = True
    if rows is not None and isinstance(ref, int):
        extra["source_rows_ref"] = ref
        if rows < ref * (1 - ROWS_DROP_SHARE):
            measured["source_rows_ref"] = ref  # the drop stays visible until the rows come back
    if write:
        store.observations.observe(sync, measured)
    return extra


def _lag(out: dict[str, Any]) -> float | None:
    """Seconds behind: the source's clock minus the watermark while the source has newer rows
    (0 when it has none), or the age of the oldest pending queue/inbox row (0 when none)."""
    now, cursor, newest = out.get("source_now"), out.get("cursor_at"), out.get("source_newest")
    if now is not None and cursor is not None:
        if newest is None or newest <= cursor:
            return 0.0
        return max(0.0, float((now - cursor).total_seconds()))
    if "backlog_rows" in out:
        return float(out.get("oldest_pending_s") or 0.0)
    return None


# --------------------------------------------------------------------------- the sheet
