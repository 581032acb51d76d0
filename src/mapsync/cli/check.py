"""`mapsync check`: connect to every connection of a sheet and report, changing nothing."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import typer

from mapsync import ddl as ddl_mod
from mapsync.checkup import Checkup
from mapsync.cli.common import Exit, JsonOpt, SheetArg, app, json_out, load_sheet, out


@app.command()
def check(
    sheet: SheetArg,
    ddl: Annotated[
        bool,
        typer.Option(
            "--ddl",
            help="Also print a suggested CREATE TABLE (unique key, lengths the sheet implies) for "
            "each SQL destination table that is missing.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Connect to every connection and report what is wrong, changing nothing.

    Reachability, login, the tables and mapped columns of each sync, write permission where
    cheap to tell, the call budget left; change capture too: a log sync's slot (retained WAL
    against `max_retained_wal`) or binlog, a queue sync's queue table, triggers and backlog.
    Exit 0 when all is well, 1 when something is unreachable or missing or a warning is shown.
    """
    loaded = load_sheet(sheet)
    checkup = Checkup(loaded)
    found = checkup.run()
    suggested = []
    if ddl:
        suggested = ddl_mod.missing(loaded)
    if as_json:
        data = {"ok": checkup.ok, "checks": [dataclasses.asdict(f) for f in found]}
        if ddl:
            data["ddl"] = [dataclasses.asdict(s) for s in suggested]
        json_out(data)
    else:
        style = {
            "ok": "[green]ok  [/green]",
            "fail": "[red]FAIL[/red]",
            "note": "[yellow]note[/yellow]",
            "warn": "[yellow]WARN[/yellow]",
        }
        for f in found:
            detail = f.detail.replace("[", r"\[")
            out.print(f"{style[f.status]}  {f.subject}: {detail}", highlight=False, soft_wrap=True)
        problems = sum(1 for f in found if f.status in ("fail", "warn"))
        out.print(f"{problems} problem(s)" if problems else "all checks passed", highlight=False)
        if ddl:
            _print_ddl(suggested)
    if not checkup.ok:
        raise Exit(1)


def _print_ddl(suggested: list[Any]) -> None:
    if not suggested:
        out.print("--ddl: every SQL destination table exists", highlight=False)
        return
    out.print(
        "\n-- suggested DDL for the missing destination tables: mapsync never creates them; review "
        "the types and lengths, run it, then `mapsync check` again",
        highlight=False,
        markup=False,
    )
    for s in suggested:
        out.print(
            f"\n-- sync {s.sync}: {s.table} in connection {s.connection}", highlight=False, markup=False
        )
        out.print(s.statement, highlight=False, markup=False)
