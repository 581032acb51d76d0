"""`mapsync unmapped` (values a rule could not place, with hints) and `mapsync retry`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from mapsync import keys
from mapsync.cli.common import (
    Exit,
    JsonOpt,
    SheetArg,
    SyncOpt,
    app,
    execute,
    fail,
    json_out,
    load_sheet,
    open_store,
    out,
    sync_names,
)
from mapsync.web.read_unmapped import entries, field_rule, merged_snippet


@app.command("unmapped")
def unmapped_cmd(
    sheet: SheetArg,
    sync: SyncOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="Include resolved values.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Values a `map`, `country` or lookup rule could not place, with near misses.

    Each with the sheet text that would map it; exit 1 while any is open, 0 when none.
    """
    loaded = load_sheet(sheet)
    if sync is not None:
        sync_names(loaded, sync)
    store = open_store(loaded, create=False)
    try:
        rows = entries(loaded, store.unmapped_values(sync, all_))
    finally:
        store.close()
    if as_json:
        json_out(rows)
    elif not rows:
        out.print("no open unmapped values")
    else:
        table = Table("sync", "field", "rule", "value", "count", "first seen", "last seen", "did you mean")
        for row in rows:
            table.add_row(
                row["sync"],
                row["field"],
                row["rule"],
                repr(row["value"]),
                str(row["count"]),
                row["first_seen"],
                row["last_seen"],
                ", ".join(row["suggestions"]),
            )
        out.print(table)
        by_field: dict[tuple[str, str, str], list[str]] = {}
        for row in rows:
            if row["resolved_at"] is None:
                by_field.setdefault((row["sync"], row["field"], row["rule"]), []).append(row["value"])
        for (sync_name, field, rule), values in by_field.items():  # one pasteable snippet per field
            cfg = loaded.sheet.syncs.get(sync_name)
            spec = field_rule(cfg, field) if cfg is not None else None
            out.print(f"  {sync_name}.{field} ({rule}):", highlight=False, markup=False)
            for line in merged_snippet(rule, values, spec):
                out.print(f"    {line}", highlight=False, markup=False)
    if any(row["resolved_at"] is None for row in rows):
        raise Exit(1)


@app.command()
def retry(
    sheet: SheetArg,
    sync: SyncOpt = None,
    field: Annotated[
        str | None, typer.Option("--field", "-f", help="Only records rejected for this field.")
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            "-k",
            help="Only the record of this key (with --sync): `KEY`, or `col=value,col=value` for a "
            "compound key.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-send the records of open record errors, read afresh from the source by key.

    For after a sheet fix; the capture cursor stays where it is. Exit 1 when some are still
    rejected or gone.
    """
    loaded = load_sheet(sheet)
    names = sync_names(loaded, sync)
    wanted = None
    if key is not None:
        if sync is None:
            raise fail("--key goes with --sync", 2)
        try:
            wanted = keys.parse_arg(key, keys.columns_of(loaded.sheet, sync))
        except ValueError as exc:
            raise fail(f"--key: {exc}", 2) from None
    store = open_store(loaded, create=False)
    execute(loaded, store, names, "retry", as_json, field=field, key=wanted)
