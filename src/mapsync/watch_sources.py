"""Facts for the monitors that only a sync's ends (or the machine) can give: the source's newest
change and row count, capture health, backlogs, clocks, disk. (Being written: issue 15's signal
monitors fill these in; `mapsync.watch` calls them.)"""

from __future__ import annotations

from typing import Any

from mapsync.sheet.loader import LoadedSheet
from mapsync.state.ports import Store


def sync_extra(loaded: LoadedSheet, store: Store, sync: str, handles: dict[str, Any]) -> dict[str, Any]:
    """Facts of one sync for `SyncFacts.extra` (a fact that could not be read is left out)."""
    del loaded, store, sync, handles
    return {}


def sheet_extra(loaded: LoadedSheet, store: Store, handles: dict[str, Any]) -> dict[str, Any]:
    """Facts of the whole sheet for `SheetFacts.extra`."""
    del loaded, store, handles
    return {}
