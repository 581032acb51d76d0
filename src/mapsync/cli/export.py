"""`mapsync reexport` and `mapsync sweep`: an export's transactions sent again, lost orders found."""

from __future__ import annotations

from typing import Annotated

import typer

from mapsync import keys, sweep_plan
from mapsync.cli.common import JsonOpt, SheetArg, app, err, execute, fail, load_sheet, open_store
from mapsync.sheet.export_rest_models import ExportSweep
from mapsync.sheet.models import ExportFlagChanges


@app.command()
def reexport(
    sheet: SheetArg,
    sync: Annotated[str, typer.Option("--sync", "-s", help="The export sync.")],
    key: Annotated[
        list[str] | None,
        typer.Argument(
            help="Keys of the transactions: `KEY`, or `col=value,col=value` for a compound key.",
            show_default=False,
        ),
    ] = None,
    failed: Annotated[
        bool, typer.Option("--failed", help="Every transaction whose import failed (status `failed`).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Set transactions pending again at the source and send them now, past the key ledger.

    The destination looks each one up by its natural key: it is updated (or, by
    `changes.on_exists`, left alone and marked `already imported`), never inserted twice; one
    deleted there by hand is written again. Exit 1 when some are refused or gone.
    """
    loaded = load_sheet(sheet)
    cfg = loaded.sheet.syncs.get(sync)
    if cfg is None:
        raise fail(f"no sync {sync!r} in the sheet (it has: {', '.join(loaded.sheet.syncs)})", 2)
    if not isinstance(cfg.changes, ExportFlagChanges):
        raise fail(f"sync {sync} is no export: `reexport` needs `changes: {{method: export_flag}}`", 2)
    if bool(key) == failed:
        raise fail("name the keys to export again, or --failed (not both)", 2)
    wanted = None
    if key:
        try:
            wanted = [keys.parse_arg(k, keys.columns_of(loaded.sheet, sync)) for k in key]
        except ValueError as exc:
            raise fail(f"KEY: {exc}", 2) from None
    store = open_store(loaded, create=False)
    execute(loaded, store, [sync], "reexport", as_json, reexport=wanted)


@app.command()
def sweep(
    sheet: SheetArg,
    sync: Annotated[str, typer.Option("--sync", "-s", help="The export sync (an API's order export).")],
    as_json: JsonOpt = False,
) -> None:
    """Find orders the API marked exported but mapsync never received, and reset or report them.

    Reads CIMcloud's Orders resource for orders with the flag `done` created within
    `changes.sweep.window` (never before the export's start); those in neither the key ledger
    nor the inbox are lost. `on_lost: reset` sets them pending (`exported = 0`) and delivers them
    in the same run; `on_lost: alert` records an open record error for each. Says first how many
    calls it will take (at most `max_calls`) and what the budget has left, then the calls used,
    orders seen, lost, reset or alerted, delivered. Exit 1 when lost orders were alerted.
    """
    loaded = load_sheet(sheet)
    cfg = loaded.sheet.syncs.get(sync)
    if cfg is None:
        raise fail(f"no sync {sync!r} in the sheet (it has: {', '.join(loaded.sheet.syncs)})", 2)
    if not isinstance(cfg.changes, ExportFlagChanges):
        raise fail(f"sync {sync} is no export: `sweep` needs `changes: {{method: export_flag}}`", 2)
    store = open_store(loaded, create=False)
    if not as_json and cfg.from_.resource is not None:
        # said before the first call (the run's report repeats it with the budget left); 50: the
        # orders of one CIMcloud page (a generic REST export has no sweep: the run says so)
        settings = cfg.changes.sweep or ExportSweep()
        since = sweep_plan.window_start(settings.window, store.cursors(sync))
        line = sweep_plan.estimate(since, store.ledger_count(sync), 50, settings.max_calls)
        err.print(line, markup=False, highlight=False)
    execute(loaded, store, [sync], "sweep", as_json)
