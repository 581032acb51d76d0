"""Facts of the whole sheet for `SheetFacts.extra` (the environment monitors): the state store's
trouble, each alert channel's failures in a row, the clocks of the state store and of each SQL
connection against this host's, and the free disk of a SQLite state store."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from mapsync.sheet import models
from mapsync.sheet.loader import LoadedSheet
from mapsync.state import faults
from mapsync.state.ports import Store
from mapsync.watch_handles import gather, sql

log = logging.getLogger("mapsync.watch")
_MB = 1024 * 1024
_clock = time.time  # this host's clock (a test moves it, as `faketime` would)


def sheet_extra(loaded: LoadedSheet, store: Store, handles: dict[str, Any]) -> dict[str, Any]:
    """Facts of the whole sheet for `SheetFacts.extra`."""
    out: dict[str, Any] = {}
    try:
        out["channel_failures"] = _channels(store)
        out["reconcile"] = reconcile_latest(loaded, store)
        out["store_trouble"] = None
    except faults.StoreFault as exc:
        out["store_trouble"] = exc.reason
    except Exception as exc:  # an unknown failure of the store: its facts stay unknown
        log.debug("watch: the state store could not be read: %s", type(exc).__name__)
    clocks: dict[str, float] = {}
    engine = getattr(store, "engine", None)
    if isinstance(engine, sa.Engine) and engine.dialect.name != "sqlite":
        gather(loaded, "the state store's clock", out, lambda: _clock_into(clocks, "state", engine))
    for name, cfg in loaded.sheet.connections.items():
        if isinstance(cfg, models.SqlConnection) and not cfg.url.startswith("sqlite"):
            gather(
                loaded, f"connection {name}'s clock", out, _conn_clock(loaded, store, name, handles, clocks)
            )
    out["clocks"] = clocks
    if isinstance(engine, sa.Engine) and engine.dialect.name == "sqlite":
        gather(loaded, "the state store's disk", out, lambda: _disk(store, engine))
    return out


def reconcile_latest(loaded: LoadedSheet, store: Store) -> dict[str, dict[str, Any]]:
    """Check → its latest result row, for the checks of the sheet and the implicit drift checks
    (`drift:SYNC`, `mapsync reconcile --sync`) of its syncs writing to a SQL connection (only those
    have one): a check gone from the sheet, or the implicit check of a sync gone or writing to an
    API now, is no longer judged (its incident resolves)."""
    sheet = loaded.sheet
    found = store.reconciliation.latest()
    implicit = {
        f"drift:{s}"
        for s, cfg in sheet.syncs.items()
        if isinstance(sheet.connections.get(cfg.to.connection), models.SqlConnection)
    }
    return {c: r for c, r in found.items() if c in sheet.reconcile or c in implicit}


def _channels(store: Store) -> dict[str, int]:
    """Alert channel → its notices that failed in a row (tried, not sent), newest first."""
    runs: dict[str, int] = {}
    done: set[str] = set()
    for n in store.incidents.notifications(limit=1000):
        if n.channel in done:
            continue
        if n.status == "sent":
            done.add(n.channel)
            runs.setdefault(n.channel, 0)
        elif n.attempts > 0:
            runs[n.channel] = runs.get(n.channel, 0) + 1
    return runs


_NOW = {
    "postgresql": "SELECT clock_timestamp()",
    "mysql": "SELECT UTC_TIMESTAMP(6)",
}


def _clock_into(clocks: dict[str, float], name: str, engine: sa.Engine) -> dict[str, Any]:
    """The database's clock minus this host's, against the middle of the query's round trip (on a
    connection already open, so the connect time is not in it)."""
    sql = _NOW.get(engine.dialect.name)
    if sql is None:
        return {}
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
        before = _clock()
        value = conn.execute(sa.text(sql)).scalar_one()
        after = _clock()
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    clocks[name] = value.timestamp() - (before + after) / 2
    return {}


def _conn_clock(
    loaded: LoadedSheet, store: Store, name: str, handles: dict[str, Any], clocks: dict[str, float]
) -> Callable[[], dict[str, Any]]:
    def read() -> dict[str, Any]:
        db = sql(loaded, store, name, handles)
        return {} if db is None or db.dialect == "sqlite" else _clock_into(clocks, name, db.engine)

    return read


def _disk(store: Store, engine: sa.Engine) -> dict[str, Any]:
    database = engine.url.database
    if not database or database == ":memory:":
        return {}
    free = shutil.disk_usage(Path(database).resolve().parent).free / _MB
    store.observations.observe("*", {"disk_free_mb": round(free, 1)})
    return {"disk_free_mb": free}
