"""`mapsync audit SHEET`: the operator audit log, newest first: who did what to which sync and
when, from the web app or the CLI (pause, resume, run requests, retry, re-export, resolve,
alert ack and silence). Opens nothing but the state store."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

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
from mapsync.redact import redact


@app.command("audit")
def audit_cmd(
    sheet: SheetArg,
    sync: SyncOpt = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many (the newest first).")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """What operators did: when, who, the action, the sync and its detail (keys, note …)."""
    loaded = load_sheet(sheet)
    if sync is not None:
        sync_names(loaded, sync)
    store = open_store(loaded, create=False)
    try:
        with handled(loaded.secrets):
            rows = store.audit.actions(sync, limit)
    finally:
        store.close()
    if as_json:
        json_out(rows)
        return
    if not rows:
        out.print("no operator actions recorded", highlight=False, markup=False)
        return
    table = Table("at", "user", "action", "sync", "detail")
    for row in rows:  # notes are an operator's text: never read as rich markup
        detail = redact(json.dumps(row["detail"], sort_keys=True), loaded.secrets)
        cells = (row["at"], row["user"], row["action"], row["sync"] or "", detail)
        table.add_row(*(Text(cell) for cell in cells))
    out.print(table, highlight=False, markup=False)
