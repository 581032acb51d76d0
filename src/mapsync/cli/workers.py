"""`mapsync workers`: the daemons sharing the state store, their heartbeats, and what each runs
(state/workers.py). It opens nothing but the state store, which must exist already."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from mapsync.cli.common import JsonOpt, SheetArg, app, handled, json_out, load_sheet, open_store, out


@app.command()
def workers(sheet: SheetArg, as_json: JsonOpt = False) -> None:
    """The daemons (workers) on this sheet's state store: id (host:pid), mapsync version, sheet
    fingerprint, last heartbeat (the database's clock), alive or expired, the syncs each one
    runs (its claims) and the runs under way; then the sheet's syncs that no live worker runs.
    A worker silent for longer than `state.lease_ttl` is expired: the others take its syncs at
    their next heartbeat."""
    loaded = load_sheet(sheet)
    store = open_store(loaded, create=False)
    try:
        with handled(loaded.secrets):
            view: dict[str, Any] = store.workers.overview()
    finally:
        store.close()
    alive = {w["id"] for w in view["workers"] if w["alive"]}
    claims: dict[str, str] = view.pop("claims")
    view["unclaimed"] = [s for s in loaded.sheet.syncs if claims.get(s) not in alive]
    if as_json:
        json_out(view)
        return
    if not view["workers"]:
        out.print("no daemon has registered on this state store (none is running)", highlight=False)
    else:
        table = Table("worker", "version", "sheet", "heartbeat", "state", "runs", "running now")
        for w in view["workers"]:
            table.add_row(
                w["id"],
                f"{w['version']} (schema {w['schema_version']})",
                w["sheet_fingerprint"] or "-",
                f"{w['heartbeat_at']} ({w['heartbeat_age_s']:g} s ago)",
                "alive" if w["alive"] else "expired",
                ", ".join(w["owns"]) or "-",
                ", ".join(f"{r['sync']} (run {r['run_id']})" for r in w["running"]) or "-",
            )
        out.print(table)
    if view["unclaimed"]:
        out.print(f"run by no live worker: {', '.join(view['unclaimed'])}", highlight=False, markup=False)
