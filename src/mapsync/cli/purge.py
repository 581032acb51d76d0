"""`mapsync purge SHEET [--dry-run] [--json]`: the retention purge of every state store table by its
own age (`state.retention`; state/retention.py), as a daemon does once a day. It opens nothing but
the state store, which must exist already."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from mapsync.cli.common import (
    JsonOpt,
    SheetArg,
    SyncOpt,
    app,
    handled,
    json_out,
    load_sheet,
    open_store,
    out,
    sync_names,
)
from mapsync.sheet.models import RETENTION_TABLES
from mapsync.state import retention

DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")]


@app.command()
def purge(
    sheet: SheetArg, sync: SyncOpt = None, dry_run: DryRunOpt = False, as_json: JsonOpt = False
) -> None:
    """Delete history older than `state.retention`, per table: finished runs (rolled up per day
    first; a sync's latest run stays), resolved record errors, cursor audit, processed or stale
    inbox items, settled async batches, resolved unmapped values, ledger tombstones, resolved
    incidents with nothing left to send, delivery attempts and old rollups. Open errors, `new` and
    `error` inbox items, unsettled batches and open incidents are never purged. Every sync in the
    store (or `--sync`); safe beside running syncs (5,000 rows per transaction). A daemon does this
    once a day. The change queue in a source database has its own `mapsync triggers purge`."""
    loaded = load_sheet(sheet)
    if sync is not None:
        sync_names(loaded, sync)  # an unknown sync is a config error
    ages = retention.ages(loaded.sheet.state)
    store = open_store(loaded, create=False)
    try:
        with handled(loaded.secrets):
            counts = retention.purge_all(
                store, loaded.sheet, syncs=None if sync is None else [sync], dry_run=dry_run
            )
    finally:
        store.close()
    if as_json:
        json_out(
            {
                "dry_run": dry_run,
                "tables": {
                    t: {"rows": counts[t], "retention_s": int(ages[t].total_seconds())}
                    for t in RETENTION_TABLES
                },
            }
        )
        return
    table = Table("table", "kept for", "would delete" if dry_run else "deleted")
    for name in RETENTION_TABLES:
        table.add_row(name, _days(ages[name].total_seconds()), str(counts[name]))
    out.print(table)
    verb = "would delete" if dry_run else "deleted"
    out.print(f"{verb} {retention.total(counts)} row(s)", highlight=False)


def _days(seconds: float) -> str:
    return f"{seconds / 86400:g}d" if seconds % 86400 == 0 else f"{seconds:g}s"
