"""`mapsync pause`, `resume` and `request`: operator controls kept in the state store, so every
process (the daemon, `mapsync run`, another host) sees them. They open nothing but the state
store, which must exist already. Each is written to the operator audit log (`mapsync audit`) as
`login@host`, as the web app writes its users' actions."""

from __future__ import annotations

import enum
from typing import Annotated

import typer

from mapsync import keys
from mapsync.cli.common import (
    JsonOpt,
    SheetArg,
    app,
    fail,
    handled,
    json_out,
    load_sheet,
    open_store,
    operator,
    out,
    sync_names,
)
from mapsync.sheet.loader import LoadedSheet
from mapsync.sheet.models import ExportFlagChanges
from mapsync.state.ports import Store

SyncReq = Annotated[str, typer.Option("--sync", "-s", help="The sync (required).", show_default=False)]


class Kind(enum.StrEnum):
    RUN = "run"
    OVERLAP = "overlap"
    RETRY = "retry"
    REEXPORT = "reexport"


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
            store.audit.record_action(info.by, "pause", sync, {"note": note, "via": "cli"})
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
            store.audit.record_action(operator(), "resume", sync, {"was_paused": was, "via": "cli"})
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
    key: Annotated[
        list[str] | None,
        typer.Option(
            "--key",
            "-k",
            help="Only this record (repeatable; retry: an open record error's key; reexport: a "
            "transaction's): `KEY`, or `col=value,col=value` for a compound key.",
            show_default=False,
        ),
    ] = None,
    note: Annotated[str | None, typer.Option(help="Why (kept with the request and audited).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Ask the daemon for a run of a sync now; prints the request's id. A running daemon
    takes it within one poll (`mapsync status` lists requests not yet done). `--kind retry`
    sends the open record errors again (only the `--key`s given), `--kind reexport` an export's
    failed transactions (or the `--key`s given), as `mapsync reexport` does."""
    loaded = load_sheet(sheet)
    sync_names(loaded, sync)
    if key and kind not in (Kind.RETRY, Kind.REEXPORT):
        raise fail(f"--key goes with --kind retry or reexport, not {kind.value}", 2)
    if kind is Kind.REEXPORT and not isinstance(loaded.sheet.syncs[sync].changes, ExportFlagChanges):
        raise fail(f"sync {sync} is no export: a reexport needs `changes: {{method: export_flag}}`", 2)
    store = open_store(loaded, create=False)
    try:
        with handled(loaded.secrets):
            texts = _key_texts(loaded, store, sync, kind, key) if key else None
            who = operator()
            request_id = store.request_run(sync, kind.value, who, keys=texts, note=note)
            detail = {"request": request_id, "kind": kind.value, "keys": texts, "note": note, "via": "cli"}
            store.audit.record_action(who, _ACTION[kind], sync, detail)
    finally:
        store.close()
    if as_json:
        json_out({"id": request_id, "sync": sync, "kind": kind.value, "keys": texts, "note": note})
        return
    only = f" ({len(texts)} keys)" if texts is not None else ""
    out.print(f"request {request_id}: {kind.value} of {sync}{only}", highlight=False, markup=False)


_ACTION = {Kind.RUN: "run", Kind.OVERLAP: "run", Kind.RETRY: "retry", Kind.REEXPORT: "reexport"}


def _key_texts(loaded: LoadedSheet, store: Store, sync: str, kind: Kind, given: list[str]) -> list[str]:
    """The keys a request carries, in their command-line form (`keys.to_arg`, as the daemon
    parses them): for a retry the key of each open record error named (one that is not open is
    refused), for a reexport each key as given, normalised."""
    columns = keys.columns_of(loaded.sheet, sync)
    try:
        wanted = [keys.parse_arg(k, columns) for k in given]
    except ValueError as exc:
        raise fail(f"--key: {exc}", 2) from None
    if kind is Kind.REEXPORT:
        return list(dict.fromkeys(keys.to_arg(w, columns) for w in wanted))
    hits = keys.find(store.open_error_keys(sync), wanted)
    for arg, hit in zip(given, hits, strict=True):
        if hit is None:
            raise fail(f"--key {arg}: no open record error of {sync} has this key (see `mapsync errors`)", 2)
    texts = [keys.to_arg(hit, columns) for hit in hits if hit is not None]
    return list(dict.fromkeys(texts))
