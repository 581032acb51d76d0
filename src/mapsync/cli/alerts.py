"""`mapsync alerts SHEET [ack|silence ID]`: the incidents of a sheet's monitors (open ones, and the
recent resolved ones with `--all`) with the last notice to each channel; acknowledge one (no more
reminders) or silence it for a while. Opens nothing but the state store."""

from __future__ import annotations

import enum
from typing import Annotated, Any

import typer

from mapsync.cli.common import (
    JsonOpt,
    SheetArg,
    SyncOpt,
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
from mapsync.redact import redact
from mapsync.sheet.duration import parse_silence
from mapsync.sheet.loader import LoadedSheet
from mapsync.state.clock import utcnow
from mapsync.state.data import Incident, Notification
from mapsync.state.ports import Store


class Action(enum.StrEnum):
    LIST = "list"
    ACK = "ack"
    SILENCE = "silence"


def _when(moment: Any) -> str | None:
    return moment.isoformat(timespec="seconds") if moment is not None else None


def last_notices(notices: list[Notification]) -> dict[str, dict[str, Any]]:
    """Per channel, its latest notice (`notices` newest first, as the store hands them out)."""
    out_: dict[str, dict[str, Any]] = {}
    for n in notices:
        if n.channel in out_:
            continue
        out_[n.channel] = {
            "kind": n.kind,
            "status": n.status,
            "attempts": n.attempts,
            "sent_at": _when(n.sent_at),
            "next_at": _when(n.next_at) if n.status == "pending" else None,
            "last_error": n.last_error,
        }
    return dict(sorted(out_.items()))


def entry(loaded: LoadedSheet, store: Store, incident: Incident) -> dict[str, Any]:
    def clean(text: str) -> str:
        return redact(text, loaded.secrets)

    channels = last_notices(store.incidents.notifications(incident.id, limit=500))
    for notice in channels.values():
        if notice["last_error"]:
            notice["last_error"] = clean(notice["last_error"])
    return {
        "id": incident.id,
        "status": incident.status,
        "monitor": incident.monitor,
        "sync": incident.sync,
        "subject": incident.subject or None,
        "severity": incident.severity,
        "failure_class": incident.failure_class,
        "message": clean(incident.message),
        "numbers": incident.numbers,
        "runbook": clean(incident.runbook) or None,
        "opened_at": _when(incident.opened_at),
        "last_seen_at": _when(incident.last_seen_at),
        "resolved_at": _when(incident.resolved_at),
        "acked_by": incident.acked_by,
        "acked_at": _when(incident.acked_at),
        "silenced_by": incident.silenced_by,
        "silenced_until": _when(incident.silenced_until),
        "channels": channels,
    }


def _show(row: dict[str, Any]) -> None:
    where = row["sync"] or "*"
    state = row["status"].upper()
    if row["acked_by"]:
        state += f", acked by {row['acked_by']}"
    if row["silenced_until"] and row["status"] == "open":
        state += f", silenced until {row['silenced_until']} by {row['silenced_by']}"
    head = (
        f"#{row['id']} {state} {row['severity']} {row['monitor']} on {where}"
        f"{' (' + row['subject'] + ')' if row['subject'] else ''}: since {row['opened_at']}, "
        f"last seen {row['last_seen_at']}"
    )
    if row["resolved_at"]:
        head += f", resolved {row['resolved_at']}"
    lines = [head, f"    {row['message']}"]
    if row["runbook"]:
        lines.append(f"    runbook: {row['runbook']}")
    for name, n in row["channels"].items():
        text = f"    {name}: {n['kind']} {n['status']}"
        if n["status"] != "sent" and n["attempts"]:
            text += f" after {n['attempts']} attempt(s)"
        if n["last_error"] and n["status"] != "sent":
            text += f": {n['last_error']}"
        if n["next_at"]:
            text += f" (next try {n['next_at']})"
        lines.append(text)
    for line in lines:
        out.print(line, highlight=False, markup=False)


@app.command("alerts")
def alerts_cmd(
    sheet: SheetArg,
    action: Annotated[
        Action, typer.Argument(help="`list` (default), `ack ID` or `silence ID --for 2h`.")
    ] = Action.LIST,
    incident_id: Annotated[
        int | None, typer.Argument(metavar="ID", help="The incident (ack, silence).", show_default=False)
    ] = None,
    for_: Annotated[
        str | None, typer.Option("--for", help="How long to silence it (e.g. 30m, 2h, 1d).")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Also the recent resolved incidents.")] = False,
    sync: SyncOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Incidents of the sheet's monitors and their alerts; acknowledge or silence one.

    `mapsync alerts SHEET` lists the open incidents (`--all`: the recent resolved ones too), each
    with the last notice to each channel. `ack ID` stops its reminders; `silence ID --for 2h` stops
    them for that long. An unknown or resolved incident is exit 1.
    """
    loaded = load_sheet(sheet)
    if sync is not None:
        sync_names(loaded, sync)
    if action is not Action.LIST and incident_id is None:
        raise fail(f"`alerts {action.value}` needs the incident's ID (see `mapsync alerts SHEET`)", 2)
    if action is Action.LIST and incident_id is not None:
        raise fail("an ID goes with `ack` or `silence`", 2)
    until = None
    if action is Action.SILENCE:
        if for_ is None:
            raise fail("`alerts silence` needs --for (e.g. --for 2h)", 2)
        try:
            until = utcnow() + parse_silence(for_)
        except ValueError as exc:
            raise fail(f"--for: {exc}", 2) from None
    elif for_ is not None:
        raise fail("--for goes with `silence`", 2)
    store = open_store(loaded, create=False)
    try:
        with handled(loaded.secrets):
            if action is Action.LIST:
                incidents = store.incidents.incidents(sync=sync, limit=200, include_resolved=all_)
                rows = [entry(loaded, store, i) for i in sorted(incidents, key=lambda i: i.id)]
            else:
                assert incident_id is not None
                row = _act(loaded, store, action, incident_id, until)
    finally:
        store.close()
    if action is not Action.LIST:
        if as_json:
            json_out(row)
        elif action is Action.ACK:
            out.print(
                f"acknowledged incident {row['id']} (by {row['acked_by']})", highlight=False, markup=False
            )
        else:
            out.print(
                f"silenced incident {row['id']} until {row['silenced_until']} (by {row['silenced_by']})",
                highlight=False,
                markup=False,
            )
        return
    if as_json:
        json_out(rows)
    elif not rows:
        out.print("no open incidents" if not all_ else "no incidents", highlight=False, markup=False)
    else:
        for row in rows:
            _show(row)


def _act(loaded: LoadedSheet, store: Store, action: Action, incident_id: int, until: Any) -> dict[str, Any]:
    incident = store.incidents.incident(incident_id)
    if incident is None:
        raise fail(f"no incident {incident_id} (see `mapsync alerts SHEET --all`)", 1)
    if incident.status != "open":
        raise fail(
            f"incident {incident_id} was resolved at {_when(incident.resolved_at)}: "
            f"nothing to {action.value}",
            1,
        )
    who = operator()
    done = (
        store.incidents.ack(incident_id, who)
        if action is Action.ACK
        else store.incidents.silence(incident_id, until, who)
    )
    if not done:  # resolved meanwhile
        raise fail(f"incident {incident_id} was resolved meanwhile: nothing to {action.value}", 1)
    detail: dict[str, Any] = {"incident": incident_id, "via": "cli"}
    if action is Action.SILENCE:
        detail["until"] = until.isoformat()
    store.audit.record_action(who, action.value, incident.sync, detail)
    found = store.incidents.incident(incident_id)
    assert found is not None
    return entry(loaded, store, found)
