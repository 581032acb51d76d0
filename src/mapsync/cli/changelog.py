"""`mapsync changelog install|remove|status`: the database change log (`changes: {method: log}`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mapsync import connectors, errors
from mapsync.capture import log_setup
from mapsync.cli.common import Exit, JsonOpt, SheetArg, SyncOpt, app, fail, handled, json_out, load_sheet, out
from mapsync.connectors.sql import SqlDatabase
from mapsync.ports import Handle
from mapsync.sheet import loader
from mapsync.sheet.log_models import LogChanges, format_size
from mapsync.state.store import StateStore

changelog_app = typer.Typer(
    no_args_is_help=True,
    help=(
        "Set up, check and remove the database change log of `changes: {method: log}` syncs: "
        "PostgreSQL logical replication slots, MariaDB/MySQL row binlog."
    ),
)
app.add_typer(changelog_app, name="changelog")
PrintOpt = Annotated[
    bool, typer.Option("--print", help="Only print the checks and SQL (for a DBA to apply); change nothing.")
]


def _log_syncs(loaded: loader.LoadedSheet, sync: str | None) -> list[str]:
    names = [n for n, s in loaded.sheet.syncs.items() if isinstance(s.changes, LogChanges)]
    if sync is not None:
        if sync not in loaded.sheet.syncs:
            raise fail(f"unknown sync {sync!r} (known: {', '.join(loaded.sheet.syncs)})", 2)
        if sync not in names:
            raise fail(f"sync {sync} does not use `changes: {{method: log}}`", 2)
        return [sync]
    if not names:
        raise fail("no sync of this sheet uses `changes: {method: log}`", 2)
    return names


def _db(loaded: loader.LoadedSheet, name: str, opened: dict[str, Handle]) -> SqlDatabase:
    conn_name = loaded.sheet.syncs[name].from_.connection
    if conn_name not in opened:
        conn = loaded.sheet.connections[conn_name]
        opened[conn_name] = connectors.REGISTRY[conn.kind].connect(conn_name, conn, loaded.folder)
    db = opened[conn_name]
    if not isinstance(db, SqlDatabase):
        raise errors.ConfigError(f"sync {name}: the source is not a SQL database: it has no change log")
    return db


def _setup(sheet: Any, sync: str | None, show: bool, as_json: bool, action: str) -> None:
    loaded = load_sheet(sheet)
    opened: dict[str, Handle] = {}
    results = []
    names = _log_syncs(loaded, sync)
    shared = log_setup.clashes(loaded.sheet, names)
    if shared and action == "install":
        raise fail("the change log cannot be set up:\n  " + "\n  ".join(shared), 2)
    try:
        with handled(loaded.secrets):
            for name in names:
                db = _db(loaded, name, opened)
                plan = log_setup.plan(db, name, loaded.sheet.syncs[name], action)
                if not show:
                    log_setup.apply(db, plan)
                results.append(plan)
    finally:
        for handle in opened.values():
            handle.close()
    if as_json:
        json_out([{**vars(p), "applied": not show} for p in results])
        return
    for p in results:
        out.print(f"[bold]{p.sync}[/bold] ({p.dialect})", highlight=False)
        for problem in p.problems:
            out.print(f"  [red]problem:[/red] {problem}", highlight=False)
        for stmt in p.statements:
            out.print(f"  {stmt};" if show else f"  done: {stmt}", highlight=False, markup=False)
        for note in p.notes:
            out.print(f"  {note}", highlight=False, markup=False)
    if show and any(p.problems for p in results):
        raise Exit(1)


@changelog_app.command()
def install(sheet: SheetArg, sync: SyncOpt = None, show: PrintOpt = False, as_json: JsonOpt = False) -> None:
    """Prepare the source's change log (idempotent; run it before the first `mapsync seed`).

    PostgreSQL: checks wal_level, REPLICATION and the output plugin, sets REPLICA IDENTITY FULL
    on the watched tables and creates the sync's logical replication slot. MariaDB/MySQL: checks
    log_bin, binlog_format=ROW, binlog_row_image=FULL and the replication grants.
    """
    _setup(sheet, sync, show, as_json, "install")


@changelog_app.command()
def remove(sheet: SheetArg, sync: SyncOpt = None, show: PrintOpt = False, as_json: JsonOpt = False) -> None:
    """Drop the sync's replication slot (PostgreSQL), releasing the WAL it holds.

    The sync then needs `install` and `mapsync seed --again` before it runs again.
    """
    _setup(sheet, sync, show, as_json, "remove")


@changelog_app.command()
def status(sheet: SheetArg, sync: SyncOpt = None, as_json: JsonOpt = False) -> None:
    """Where each log sync stands; exit 1 on a warning.

    PostgreSQL: slot, confirmed and committed position, retained WAL (a warning above
    `max_retained_wal`). MariaDB/MySQL: current versus committed binlog position.
    """
    loaded = load_sheet(sheet)
    names = _log_syncs(loaded, sync)
    store: StateStore | None
    try:
        store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=False)
    except errors.MapsyncError:
        store = None  # never run: no committed positions yet
    opened: dict[str, Handle] = {}
    results = []
    try:
        with handled(loaded.secrets):
            for name in names:
                committed = store.cursor(name, "log") if store is not None else None
                db = _db(loaded, name, opened)
                results.append(log_setup.status(db, name, loaded.sheet.syncs[name], committed))
    finally:
        for handle in opened.values():
            handle.close()
        if store is not None:
            store.close()
    if as_json:
        json_out(results)
    else:
        for r in results:
            _print_status(r)
    if any(r["warnings"] for r in results):
        raise Exit(1)


def _print_status(r: dict[str, Any]) -> None:
    out.print(f"[bold]{r['sync']}[/bold] ({r['dialect']})", highlight=False)
    committed = r.get("committed")
    if "slot" in r:
        out.print(f"  slot {r['slot']}", highlight=False, markup=False)
    if "confirmed_lsn" in r:
        out.print(
            f"  plugin {r['plugin']}, active {r['active']}, confirmed {r['confirmed_lsn']}, "
            f"current {r['current_lsn']}, retained WAL {format_size(r['retained_wal_bytes'])} "
            f"(warn above {format_size(r['max_retained_wal'])})",
            highlight=False,
            markup=False,
        )
    if "current" in r:
        cur = r["current"]
        out.print(
            f"  binlog now {cur['file']}:{cur['pos']} ({r['binlog_files']} files), "
            f"replica server_id {r['server_id']}",
            highlight=False,
            markup=False,
        )
    if committed:
        where = committed.get("lsn") or f"{committed.get('file')}:{committed.get('pos')}"
        out.print(f"  committed {where}", highlight=False, markup=False)
    else:
        out.print("  committed: none yet (run `mapsync seed`)", highlight=False, markup=False)
    for w in r["warnings"]:
        out.print(f"  [yellow]warning:[/yellow] {w}", highlight=False)
