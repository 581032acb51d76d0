"""`mapsync seed` and `mapsync run` (with `--follow`, the command-line side of `mapsync.follow`)."""

from __future__ import annotations

from typing import Annotated

import typer

from mapsync.cli.common import (
    JsonOpt,
    SheetArg,
    SyncOpt,
    app,
    execute,
    fail,
    load_sheet,
    open_store,
    serve_daemon,
    sync_names,
)
from mapsync.sheet.duration import parse_duration
from mapsync.sheet.loader import LoadedSheet


@app.command()
def seed(
    sheet: SheetArg,
    sync: SyncOpt = None,
    again: Annotated[
        bool,
        typer.Option(
            "--again", help="Re-read every row of an already seeded sync (unchanged rows are skipped)."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """First load: record the starting cursor, then load all rows (or `seed.where`); resumable."""
    loaded = load_sheet(sheet)
    names = sync_names(loaded, sync)
    store = open_store(loaded, create=True)
    execute(loaded, store, names, "seed", as_json, again=again, progress=not as_json)


@app.command()
def run(
    sheet: SheetArg,
    sync: SyncOpt = None,
    overlap: Annotated[
        bool,
        typer.Option(
            "--overlap", help="Re-read the recent window and report rows the incremental runs missed."
        ),
    ] = False,
    window: Annotated[
        str | None, typer.Option(help="Overlap window, e.g. 24h (default: the sheet's).")
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", help="Keep running passes until SIGTERM/Ctrl-C (low-latency syncs); see --poll."
        ),
    ] = False,
    poll: Annotated[
        str, typer.Option(help="With --follow: the longest wait between passes, e.g. 200ms, 2s.")
    ] = "1s",
    deletes: Annotated[
        bool,
        typer.Option(
            "--deletes",
            help="Also check for deleted rows (watermark syncs): every source key is compared with "
            "the key ledger and the missing ones are sent as deletes.",
        ),
    ] = False,
    force_deletes: Annotated[
        bool,
        typer.Option(
            "--force-deletes",
            help="Let this run past the mass-delete guard (deletes above `deletes.max_delete_ratio`, "
            "or a source that reads empty or partial).",
        ),
    ] = False,
    ignore_pause: Annotated[
        bool,
        typer.Option(
            "--ignore-pause", help="Run syncs paused by `mapsync pause` too (this run only; the pause stays)."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """One pass of every sync (or --sync NAME): deliver what changed since the last run. A paused
    sync is not run (exit 1) unless --ignore-pause."""
    loaded = load_sheet(sheet)
    names = sync_names(loaded, sync)
    if follow:
        if overlap:
            raise fail("--follow does not go with --overlap", 2)
        if deletes or force_deletes:
            raise fail("--follow does not go with --deletes or --force-deletes", 2)
        run_follow(loaded, names, poll, as_json)
        return
    if window is not None and not overlap:
        raise fail("--window goes with --overlap", 2)
    try:
        span = parse_duration(window) if window is not None else None
    except ValueError as exc:
        raise fail(f"--window: {exc}", 2) from None
    store = open_store(loaded, create=False)
    execute(
        loaded,
        store,
        names,
        "overlap" if overlap else "run",
        as_json,
        window=span,
        deletes=deletes,
        force_deletes=force_deletes,
        ignore_pause=ignore_pause,
    )


def run_follow(loaded: LoadedSheet, names: list[str], poll: str, as_json: bool) -> None:
    """`run --follow`: the daemon (`mapsync.daemon`) with every named sync following, whatever
    its schedule: passes until SIGTERM/SIGINT, each pass that did something printing its report
    (one JSON object per line with --json). Exits 0 after a clean stop, whatever the passes
    reported: failed runs are in the history and `mapsync status`."""
    try:
        interval = parse_duration(poll)
    except ValueError as exc:
        raise fail(f"--poll: {exc}", 2) from None
    if interval.total_seconds() <= 0:
        raise fail("--poll must be more than 0", 2)
    code = serve_daemon(loaded, names, as_json, poll=interval, named=True, follow_all=interval)
    if code:
        raise fail("stopped with runs cut at the end of the grace period, or a state store to fix", code)
