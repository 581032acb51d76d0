"""Sending alerts: the outbox's notices to their channels. (Being written: issue 15's alert work
replaces this placeholder; `flush` is its interface for `mapsync monitor` and `mapsync run`.)"""

from __future__ import annotations

from mapsync.sheet.loader import LoadedSheet
from mapsync.state.ports import Store


def flush(loaded: LoadedSheet, store: Store) -> int:
    """Send every due notice once, now (a one-off command's end); returns how many were sent."""
    del loaded, store
    return 0
