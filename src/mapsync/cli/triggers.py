"""`mapsync triggers install|remove|status|purge`: the trigger-fed change queue in the source."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.table import Table

from mapsync.capture import queue_admin, triggers
from mapsync.cli.common import (
    Exit,
    JsonOpt,
    SheetArg,
    SyncOpt,
    app,
    fail,
    handled,
    json_out,
    load_sheet,
    out,
    sync_names,
)

triggers_app = typer.Typer(
    no_args_is_help=True,
    help=(
        "The change queue of `changes: {method: queue}` syncs: a queue table and AFTER "
        "INSERT/UPDATE/DELETE triggers in the source database. Install before the first seed."
    ),
)
app.add_typer(triggers_app, name="triggers")

PrintOpt = Annotated[
    bool, typer.Option("--print", help="Write the DDL (for a DBA to apply) instead of executing it.")
]
DialectOpt = Annotated[
    str | None,
    typer.Option(
        "--dialect",
        help="With --print: postgresql, mysql (MariaDB), sqlite or mssql (SQL Server, generated only). "
        "Default: the source connection's.",
    ),
]


def _queues(sheet: Any, sync: str | None) -> tuple[Any, list[queue_admin.Queue]]:
    loaded = load_sheet(sheet)
    names = sync_names(loaded, sync)
    with handled(loaded.secrets):
        return loaded, queue_admin.queues(loaded, names)


def _ddl(
    loaded: Any, queue: queue_admin.Queue, dialect: str | None, build: Any, printing: bool
) -> tuple[str, list[str]]:
    """The statements of `build(dialect, targets)`, executed unless `printing`."""
    if dialect is not None and dialect not in triggers.DIALECTS:
        raise fail(f"--dialect: one of {', '.join(triggers.DIALECTS)}", 2)
    if dialect is not None and not printing:
        raise fail("--dialect goes with --print", 2)
    with handled(loaded.secrets):
        if dialect == "mssql":  # no connection: SQL Server needs no column list
            return dialect, build(dialect, queue_admin.targets(queue, None))
        db = queue_admin.connect(loaded, queue.connection)
        try:
            actual = queue_admin.dialect_of(db)
            statements = build(dialect or actual, queue_admin.targets(queue, db))
            if not printing:
                queue_admin.execute(db, statements)
            return dialect or actual, statements
        finally:
            db.close()


@triggers_app.command()
def install(
    sheet: SheetArg,
    sync: SyncOpt = None,
    print_: PrintOpt = False,
    dialect: DialectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create the queue table if missing and (re)create the triggers; rerunnable, queued rows kept."""
    loaded, queues = _queues(sheet, sync)
    report = _apply(
        loaded,
        queues,
        dialect,
        lambda d, t, q: triggers.install_statements(d, q.table, t, q.archive),
        print_,
        as_json,
        header=True,
    )
    if not print_ and not as_json:
        for r in report:
            out.print(f"installed queue {r['queue']} on {r['connection']} for {', '.join(r['syncs'])}")


@triggers_app.command()
def remove(
    sheet: SheetArg,
    sync: SyncOpt = None,
    drop_table: Annotated[
        bool,
        typer.Option(
            "--drop-table", help="Also drop the queue table and its archive (queued rows are lost)."
        ),
    ] = False,
    print_: PrintOpt = False,
    dialect: DialectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Drop the triggers (with --drop-table also the queue table); later changes are not captured."""
    loaded, queues = _queues(sheet, sync)
    report = _apply(
        loaded,
        queues,
        dialect,
        lambda d, t, q: triggers.remove_statements(d, q.table, t, drop_table),
        print_,
        as_json,
    )
    if not print_ and not as_json:
        what = "triggers and queue table" if drop_table else "triggers"
        for r in report:
            out.print(
                f"removed {what} of queue {r['queue']} on {r['connection']} for {', '.join(r['syncs'])}"
            )


def _apply(
    loaded: Any,
    queues: list[queue_admin.Queue],
    dialect: str | None,
    build: Callable[[str, Any, queue_admin.Queue], list[str]],
    print_: bool,
    as_json: bool,
    *,
    header: bool = False,
) -> list[dict[str, Any]]:
    """Run (or with --print, write) the DDL `build` gives for each queue; what was done, per
    queue, for the report (`--json` prints it here)."""
    report = []
    for q in queues:
        used, statements = _ddl(loaded, q, dialect, lambda d, t, q=q: build(d, t, q), print_)
        if print_ and not as_json:
            if header:
                out.print(
                    f"-- mapsync queue {q.table!r} on connection {q.connection} ({used})", highlight=False
                )
            out.print(triggers.script(used, statements), markup=False, highlight=False, end="")
        report.append(
            {"connection": q.connection, "queue": q.table, "syncs": list(q.syncs), "ddl": statements}
        )
    if as_json:
        json_out(report)
    return report


@triggers_app.command()
def status(sheet: SheetArg, sync: SyncOpt = None, as_json: JsonOpt = False) -> None:
    """Per sync: triggers installed, queue rows per status, age of the oldest `new` row."""
    loaded, queues = _queues(sheet, sync)
    rows: list[dict[str, Any]] = []
    with handled(loaded.secrets):
        for q in queues:
            rows.extend(queue_admin.status(loaded, q))
    if as_json:
        json_out(rows)
    else:
        _status_table(rows)
    if any(r["triggers"] != "installed" or not r["queue_table"] for r in rows):
        raise Exit(1)


def _status_table(rows: list[dict[str, Any]]) -> None:
    table = Table("sync", "queue", "triggers", *triggers.STATUSES, "oldest new")
    for r in rows:
        age = r["oldest_new_seconds"]
        table.add_row(
            r["sync"],
            r["queue"] if r["queue_table"] else f"{r['queue']} (missing)",
            r["triggers"],
            *[str(r["counts"][s]) for s in triggers.STATUSES],
            "-" if age is None else f"{age:.0f}s",
        )
    out.print(table)


@triggers_app.command()
def purge(sheet: SheetArg, sync: SyncOpt = None, as_json: JsonOpt = False) -> None:
    """Delete (or archive) completed/superseded rows older than `retention`; safe beside a run."""
    loaded, queues = _queues(sheet, sync)
    purged: dict[str, int] = {}
    with handled(loaded.secrets):
        for q in queues:
            purged.update(queue_admin.purge(loaded, q))
    if as_json:
        json_out(purged)
        return
    for name, n in purged.items():
        out.print(f"{name}: purged {n} queue row(s)")
