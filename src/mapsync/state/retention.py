"""Retention: history older than `state.retention` is removed after each run (`History.purge`;
the SQL is in state/history.py)."""

from __future__ import annotations

import datetime as dt

from mapsync.state.ports import Store


def purge(store: Store, sync: str, retention: dt.timedelta) -> dict[str, int]:
    """Drop history older than `retention`: finished runs (the latest run is always kept),
    cursor audit rows and resolved record errors. Open errors, cursors and the ledger stay."""
    return store.history.purge(sync, retention)
