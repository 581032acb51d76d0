"""`mapsync monitor SHEET`: evaluate every monitor once (`mapsync.watch`), record and clear the
incidents, send the alerts due, and say what is firing (exit 1) or that all is clear (exit 0)."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer

from mapsync import watch
from mapsync.alerts import sender
from mapsync.cli.common import (
    Exit,
    JsonOpt,
    SheetArg,
    app,
    fail,
    handled,
    json_out,
    load_sheet,
    open_store,
    out,
)
from mapsync.redact import redact
from mapsync.sheet.loader import LoadedSheet
from mapsync.state.data import Finding, Incident
from mapsync.state.ports import Store

log = logging.getLogger("mapsync.watch")

SyncsOpt = Annotated[
    list[str] | None, typer.Option("--sync", "-s", help="Only this sync (may be given more than once).")
]
DryRunOpt = Annotated[
    bool,
    typer.Option("--dry-run", help="Evaluate and show what fires, but record, clear and send nothing."),
]


def incident_dict(i: Incident) -> dict[str, Any]:
    """An open incident as `--json` shows it."""
    return {
        "id": i.id,
        "monitor": i.monitor,
        "sync": i.sync,
        "subject": i.subject,
        "severity": i.severity,
        "failure_class": i.failure_class,
        "since": i.opened_at.isoformat(),
        "last_seen": i.last_seen_at.isoformat(),
        "message": i.message,
        "numbers": i.numbers,
        "runbook": i.runbook,
        "acked_by": i.acked_by,
        "silenced_until": i.silenced_until.isoformat() if i.silenced_until else None,
    }


def finding_dict(f: Finding) -> dict[str, Any]:
    """A finding of a dry run as `--json` shows it (not recorded: no id, no since)."""
    return {
        "id": None,
        "monitor": f.monitor,
        "sync": f.sync,
        "subject": f.subject,
        "severity": f.severity,
        "failure_class": f.failure_class,
        "since": None,
        "last_seen": None,
        "message": f.message,
        "numbers": f.numbers,
        "runbook": f.runbook,
        "acked_by": None,
        "silenced_until": None,
    }


def _names(loaded: LoadedSheet, syncs: list[str] | None) -> list[str]:
    known = loaded.sheet.syncs
    for name in syncs or []:
        if name not in known:
            raise fail(f"unknown sync {name!r} (known: {', '.join(known)})", 2)
    return list(dict.fromkeys(syncs)) if syncs else list(known)


def _flush(loaded: LoadedSheet, store: Store) -> int:
    """Send what is due; a failing channel never fails the command (the outbox keeps it)."""
    try:
        return sender.flush(loaded, store)
    except Exception as exc:
        log.warning(
            "alerts_flush_failed",
            extra={
                "action": "alerts_flush_failed",
                "error": redact(f"{type(exc).__name__}: {exc}", loaded.secrets, cap=300),
            },
        )
        return 0


@app.command()
def monitor(
    sheet: SheetArg, sync: SyncsOpt = None, dry_run: DryRunOpt = False, as_json: JsonOpt = False
) -> None:
    """Evaluate the monitors once: record and clear incidents, send due alerts, list what fires.

    Each sync's firing incidents with their monitor, severity, since when, message and runbook
    line (and, without --sync, the sheet-wide ones). Exit 1 while anything fires, 0 when all is
    clear, 2 for a sheet error; an unreachable state store is one line, exit 1. With --json: an
    object with firing, recorded, opened, resolved, sent, syncs (each sync's incidents), sheet
    (the sheet-wide ones) and unknown (the monitors that could not tell, per sync).
    """
    loaded = load_sheet(sheet)
    names = _names(loaded, sync)
    store = open_store(loaded, create=False)
    sent = 0
    try:
        with handled(loaded.secrets):
            report = watch.evaluate(loaded, store, names, record=not dry_run)
            if dry_run:
                rows = [finding_dict(f) for f in report.firing()]
            else:
                sent = _flush(loaded, store)
                wanted = set(names)
                rows = [
                    incident_dict(i)
                    for i in store.incidents.open_incidents()
                    if i.sync in wanted or (i.sync is None and not sync)
                ]
    finally:
        store.close()
    per_sync: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    whole: list[dict[str, Any]] = []
    for row in rows:
        per_sync.get(row["sync"], whole).append(row)
    firing = bool(rows)
    if as_json:
        json_out(
            {
                "firing": firing,
                "recorded": not dry_run,
                "opened": len(report.opened),
                "resolved": len(report.resolved),
                "sent": sent,
                "syncs": per_sync,
                "sheet": whole,
                "unknown": {k or "*": v for k, v in report.unknown.items()},
            }
        )
    else:
        _print(per_sync, whole, dry_run)
    if firing:
        raise Exit(1)


def _print(per_sync: dict[str, list[dict[str, Any]]], whole: list[dict[str, Any]], dry_run: bool) -> None:
    def show(rows: list[dict[str, Any]]) -> None:
        for r in rows:
            since = f" since {r['since'][:19].replace('T', ' ')} UTC" if r["since"] else ""
            out.print(
                f"  {r['severity'].upper()} {r['monitor']}{since}: {r['message']}",
                markup=False,
                highlight=False,
            )
            if r["runbook"]:
                out.print(f"    runbook: {r['runbook']}", markup=False, highlight=False)

    for name, rows in per_sync.items():
        out.print(f"sync {name}: {'all clear' if not rows else f'{len(rows)} firing'}", markup=False)
        show(rows)
    if whole:
        out.print(f"sheet: {len(whole)} firing", markup=False)
        show(whole)
    total = sum(len(r) for r in per_sync.values()) + len(whole)
    note = " (dry run: nothing recorded)" if dry_run else ""
    out.print(f"all clear{note}" if not total else f"{total} incident(s) firing{note}", markup=False)
