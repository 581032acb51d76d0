"""`mapsync pause`, `resume` and `request`: operator controls kept in the state store, so every
process (the daemon, `mapsync run`, another host) sees them. They open nothing but the state
store, which must exist already."""

from __future__ import annotations

import enum
import getpass
import socket
from typing import Annotated

import typer

from mapsync.cli.common import (
    JsonOpt,
    SheetArg,
    app,
    handled,
    json_out,
    load_sheet,
    open_store,
    out,
    sync_names,
)

SyncReq = Annotated[str, typer.Option("--sync", "-s", help="The sync (required).", show_default=False)]


class Kind(enum.StrEnum):
    RUN = "run"
    OVERLAP = "overlap"
    RETRY = "retry"


def operator() -> str:
    """Who asks: the login name @ this host."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


@app.command()
def pause(
    sheet: SheetArg,
    sync: SyncReq,
    note: Annotated[str | None, typer.Option(help="Why (shown by `status` and in skipped runs).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Pause a sync: the daemon records its scheduled slots as `skipped` and keeps its requests
    waiting, and `mapsync run` leaves it out (unless `--ignore-pause`), until `resume`."""
    loaded = load_sheet(sheet)
    sync_names(loaded, sync)
    store = open_store(loaded, create=False)
    try:
        with handled(loaded.secrets):
            store.pause(sync, operator(), note)
            info = store.paused()[sync]
    finally:
        store.close()
    if as_json:
        json_out({"sync": sync, "paused": True, "by": info.by, "at": info.at.isoformat(), "note": info.note})
        return
    out.print(f"paused {sync} (by {info.by})", highlight=False, markup=False)


@app.command()
def resume(sheet: SheetArg, sync: SyncReq, as_json: JsonOpt = False) -> None:
    """Resume a paused sync: its next scheduled slot runs again."""
    loaded = load_sheet(sheet)
    sync_names(loaded, sync)
    store = open_store(loaded, create=False)
    try:
        with handled(loaded.secrets):
            was = store.resume(sync)
    finally:
        store.close()
    if as_json:
        json_out({"sync": sync, "paused": False, "was_paused": was})
        return
    out.print(f"resumed {sync}" if was else f"{sync} was not paused", highlight=False, markup=False)


@app.command()
def request(
    sheet: SheetArg,
    sync: SyncReq,
    kind: Annotated[Kind, typer.Option(help="The kind of run asked for.")] = Kind.RUN,
    as_json: JsonOpt = False,
) -> None:
    """Ask the daemon for a run of a sync now; prints the request's id. A running daemon
    takes it within one poll (`mapsync status` lists requests not yet done)."""
    loaded = load_sheet(sheet)
    sync_names(loaded, sync)
    store = open_store(loaded, create=False)
    try:
        with handled(loaded.secrets):
            request_id = store.request_run(sync, kind.value, operator())
    finally:
        store.close()
    if as_json:
        json_out({"id": request_id, "sync": sync, "kind": kind.value})
        return
    out.print(f"request {request_id}: {kind.value} of {sync}", highlight=False, markup=False)
