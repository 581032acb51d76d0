"""The connections the watch reads the sources through: a handle given by the caller is used as
it is; any other is opened here with short timeouts, kept in `handles` (the next sync reuses it)
and named in `handles[OPENED]`; `release(handles)` closes those at the end of an evaluation. And
`gather`: one gatherer run so that its failure leaves its facts out (logged, redacted)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from mapsync import connectors, db_errors
from mapsync.connectors.sql import SqlDatabase
from mapsync.redact import redact
from mapsync.sheet import models
from mapsync.sheet.loader import LoadedSheet
from mapsync.state.ports import Store

log = logging.getLogger("mapsync.watch")
OPENED = "__watch_sources_opened__"  # key in `handles`: the names of the handles opened here
_SHORT = {"connect": dt.timedelta(seconds=3), "statement": dt.timedelta(seconds=5)}


def handle(loaded: LoadedSheet, store: Store, name: str, handles: dict[str, Any]) -> Any:
    """The open handle of connection `name`: a given one, or one opened here (kept for reuse)."""
    if name in handles:
        return handles[name]
    cfg = loaded.sheet.connections[name]
    if isinstance(cfg, models.SqlConnection):
        timeouts = cfg.timeouts.model_copy(update=_SHORT)
        handle: Any = SqlDatabase(name, cfg.url, loaded.folder, cfg.timezone, timeouts)
    else:
        handle = connectors.REGISTRY[cfg.kind].connect(name, cfg, loaded.folder, store)
    handles[name] = handle
    handles.setdefault(OPENED, set()).add(name)
    return handle


def release(handles: dict[str, Any]) -> None:
    """Close the handles `sync_extra`/`sheet_extra` opened (those given stay open)."""
    for name in sorted(handles.pop(OPENED, set())):
        handle = handles.pop(name, None)
        if handle is not None:
            try:
                handle.close()
            except Exception as exc:  # closing is best effort
                log.debug("watch: closing connection %s failed: %s", name, type(exc).__name__)


def sql(loaded: LoadedSheet, store: Store, name: str, handles: dict[str, Any]) -> SqlDatabase | None:
    opened = handle(loaded, store, name, handles)
    return opened if isinstance(opened, SqlDatabase) else None


def gather(loaded: LoadedSheet, what: str, out: dict[str, Any], fn: Callable[[], dict[str, Any]]) -> None:
    """Run one gatherer; its failure leaves its facts out and is logged at debug (redacted)."""
    try:
        out.update(fn())
    except Exception as exc:  # any failure of a source or the store: the fact stays unknown
        text = (
            db_errors.describe_error(exc, loaded.secrets)
            if isinstance(exc, sa.exc.SQLAlchemyError)
            else str(exc)
        )
        log.debug(
            "watch: %s could not be read: %s", what, redact(f"{type(exc).__name__}: {text}", loaded.secrets)
        )
