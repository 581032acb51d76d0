"""Retention: how long each kind of history is kept (`state.retention`, one duration or one per
table: `StateConfig.retention_of`) and the two purges that apply it (the SQL is in
state/history.py, the rollup math in state/rollups.py):

- after each run the engine purges that sync's runs (rolled up first), cursor audit and resolved
  record errors (`purge_after_run`: cheap, three small deletes);
- once a day a daemon (one of those sharing the store, under the `mapsync:purge` lease) and
  `mapsync purge SHEET` purge every table of `RETENTION_TABLES` (`purge_all`).

The operator audit log (schema v9) goes with the runs, by the runs' age (not counted in the
result), and so do web sessions that expired or were revoked before it (in the purge of every
sync only).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence

from mapsync.sheet.models import RETENTION_TABLES, Sheet, StateConfig
from mapsync.state.history import PER_RUN
from mapsync.state.ports import Store
from mapsync.state.rollups import DEFAULT_LATE_MS

log = logging.getLogger("mapsync.retention")
DAILY = dt.timedelta(days=1)  # how often a daemon purges every table


def purge(store: Store, sync: str, retention: dt.timedelta) -> dict[str, int]:
    """Drop history older than `retention`: finished runs (the latest run is always kept),
    cursor audit rows and resolved record errors. Open errors, cursors and the ledger stay."""
    return store.history.purge(sync, retention)


def ages(state: StateConfig, tables: Sequence[str] = RETENTION_TABLES) -> dict[str, dt.timedelta]:
    """Table → how long it is kept, from the sheet's `state.retention`."""
    return {table: state.retention_of(table) for table in tables}


def late_after(sheet: Sheet) -> dict[str, int]:
    """Sync → the lateness (ms) past which a rollup counts its run late: `schedule.start_within`,
    60 s without one."""
    out = {}
    for name, cfg in sheet.syncs.items():
        within = cfg.schedule.start_within
        out[name] = DEFAULT_LATE_MS if within is None else int(within / dt.timedelta(milliseconds=1))
    return out


def purge_after_run(store: Store, sheet: Sheet, sync: str) -> dict[str, int]:
    """The engine's purge after a run of `sync`: its runs, cursor audit and resolved errors."""
    return store.history.purge_tables(ages(sheet.state, PER_RUN), syncs=[sync], late_ms=late_after(sheet))


def purge_all(
    store: Store, sheet: Sheet, *, syncs: Sequence[str] | None = None, dry_run: bool = False
) -> dict[str, int]:
    """Every retention table purged by its own age (of `syncs`, or every sync in the store, those
    gone from the sheet too): table → rows deleted, or with `dry_run` that would be."""
    return store.history.purge_tables(
        ages(sheet.state), syncs=syncs, late_ms=late_after(sheet), dry_run=dry_run
    )


def total(counts: Mapping[str, int]) -> int:
    return sum(counts.values())


def daily(sheet: Callable[[], Sheet]) -> Callable[[Store], None]:
    """The daemon's daily purge chore over the sheet it runs now (`sheet()`, after a reload the
    new one): every table, every sync; logs `retention_purged` with the rows per table."""

    def chore(store: Store) -> None:
        counts = purge_all(store, sheet())
        log.info("retention_purged", extra={"action": "retention_purged", "rows": total(counts), **counts})

    return chore
