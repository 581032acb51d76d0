"""`mapsync status`, `errors` and `state show|reset`: views of the state store; `errors
--resolve` closes record errors with a note (written to the audit log)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from mapsync import keys, records, watch_export
from mapsync.capture import health
from mapsync.capture.export_base import LOST
from mapsync.cli.common import (
    Exit,
    JsonOpt,
    SheetArg,
    SyncOpt,
    app,
    err,
    fail,
    handled,
    json_out,
    load_sheet,
    open_store,
    operator,
    out,
    state_app,
    sync_names,
)
from mapsync.sheet.loader import LoadedSheet
from mapsync.sheet.models import Sheet
from mapsync.state import report as state_report


@app.command()
def status(sheet: SheetArg, sync: SyncOpt = None, as_json: JsonOpt = False) -> None:
    """Each sync: last run, cursor, counts, open record errors and change-capture health.

    For log and queue syncs, the health is the slot and retained WAL or binlog, or the queue
    table, triggers and backlog, with warnings (`--json` carries `capture` and `warnings`).
    A paused sync is shown with who paused it, when and why, and the run requests not yet done
    are listed (`--json`: `paused`, `requests`, and `dead_errors`). For export syncs
    (`changes.method: export_flag`): the transactions waiting to be exported, the age of the
    oldest (with `changes.created`) and those marked failed (`--json`: `export`); for an export
    from an API, whether a lost-order sweep is due (`--json`: `sweep_due`).
    """
    loaded = load_sheet(sheet)
    store = open_store(loaded, create=False)
    try:
        names = sync_names(loaded, sync)
        rows = [state_report.sync_status(store, name) for name in names]
        capture = health.report(loaded, names, store)
        export = watch_export.status(loaded, store, names)
        lost = {n: store.inbox.latest(n, [LOST], status="new").get(LOST) for n in names}
    finally:
        store.close()
    for row in rows:
        row["capture"] = capture.get(row["sync"])
        row["export"] = export.get(row["sync"])
        row["warnings"] = list(capture[row["sync"]]["warnings"]) if row["capture"] else []
        marker = lost.get(row["sync"])  # a destructive GET whose answer was lost, not swept yet
        row["sweep_due"] = marker is not None and marker[1] == "new"
    if as_json:
        json_out(rows)
        return
    table = Table("sync", "last run", "status", "read", "written", "rejected", "cursor", "open errors")
    for row in rows:
        last = row["last_run"] or {}
        cursors = row["cursors"]
        seed = cursors.get("seed")
        running = isinstance(seed, dict) and seed.get("status") == "running"
        cursor = (
            _text(cursors.get("watermark"))
            if cursors.get("watermark")
            else "seed running"
            if running
            else "-"
        )
        table.add_row(
            row["sync"],
            f"{last.get('kind', '-')} {last.get('started_at', '')}",
            last.get("status", "never"),
            str(last.get("read", "")),
            str(last.get("written", "")),
            str(last.get("rejected", "")),
            str(cursor),
            str(row["open_errors"]),
        )
    out.print(table)
    for row in rows:  # change capture: slot / binlog / queue backlog, and what needs attention
        if row["capture"]:
            out.print(f"{row['sync']}: {row['capture']['summary']}", highlight=False, markup=False)
        if row["export"]:  # an export's backlog, its oldest unexported transaction, the failed ones
            why = f": {row['export']['error']}" if row["export"]["error"] else ""
            out.print(f"{row['sync']}: {row['export']['summary']}{why}", highlight=False, markup=False)
        for warning in row["warnings"]:
            out.print(f"warning: {row['sync']}: {warning}", highlight=False, markup=False)
        if row["sweep_due"]:
            out.print(
                f"warning: {row['sync']}: a destructive GET's answer was lost: a sweep is due "
                f"(`mapsync sweep SHEET --sync {row['sync']}`; the daemon sweeps before its next run)",
                highlight=False,
                markup=False,
            )
    for row in rows:  # why a last run failed (the mass-delete guard's numbers, say); a scheduled one
        last = row["last_run"] or {}
        if last.get("status") == "failed" and last.get("message"):
            text = f"{row['sync']}: {last.get('failure_class')} failure: {last['message']}"
            out.print(text, highlight=False, markup=False)
        elif last.get("status") == "stopped" and last.get("message"):  # a graceful stop
            text = f"{row['sync']}: stopped: {last['message']}"
            out.print(text, highlight=False, markup=False)
        if last.get("scheduled_at") or last.get("status") == "skipped":  # the daemon's runs
            out.print(
                f"{row['sync']}: last run #{last['id']}{_scheduled(last)}", highlight=False, markup=False
            )
        if skipped := row.get("skipped_since"):  # slots not run since: busy, paused, backing off
            out.print(
                f"{row['sync']}: {skipped['count']} slot(s) skipped since; the latest "
                f"({skipped['last'].get('scheduled_at')}): {skipped['last'].get('message')}",
                highlight=False,
                markup=False,
            )
    for row in rows:  # operator controls: paused syncs and runs asked for
        if pause := row["paused"]:
            note = f": {pause['note']}" if pause["note"] else ""
            out.print(
                f"{row['sync']}: paused by {pause['by']} at {pause['at']}{note}",
                highlight=False,
                markup=False,
            )
        for r in reversed(row["requests"]):  # oldest first
            taken = f", taken by {r['taken_by']}" if r["taken_by"] else ""
            out.print(
                f"{row['sync']}: request {r['id']} ({r['kind']}) by {r['requested_by']} at "
                f"{r['requested_at']}: {r['status']}{taken}",
                highlight=False,
                markup=False,
            )


@app.command("errors")
def errors_cmd(
    sheet: SheetArg,
    sync: SyncOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="Include resolved errors.")] = False,
    limit: Annotated[
        int,
        typer.Option(min=0, help="At most this many (the newest first); the rest are counted, not shown."),
    ] = 100,
    as_json: JsonOpt = False,
    key: Annotated[
        list[str] | None,
        typer.Argument(
            help="With --resolve: the keys, `KEY` or `col=value,col=value` for a compound key.",
            show_default=False,
        ),
    ] = None,
    resolve: Annotated[
        bool, typer.Option("--resolve", help="Resolve open errors of --sync (the KEYs, or --all-open).")
    ] = False,
    note: Annotated[str | None, typer.Option(help="Why they are resolved (with --resolve).")] = None,
    all_open: Annotated[
        bool, typer.Option("--all-open", help="With --resolve: every open error of the sync.")
    ] = False,
) -> None:
    """Record errors: which key, field and rule, the message, attempts, first and last seen.

    A record error marked `dead` was tried `max_attempts` times: the daemon's automatic retries
    skip it; a manual `mapsync retry` sends it again (`--json`: `dead_at`).

    `--resolve --sync S KEY... --note TEXT` (or `--all-open` for every open one) closes them:
    no retry sends them again, `errors --all` shows who resolved them and why; written to the
    audit log (`mapsync audit`)."""
    loaded = load_sheet(sheet)
    if resolve or key or note is not None or all_open:
        _resolve(loaded, sync, key or [], note, all_open, as_json)
        return
    if sync is not None:
        sync_names(loaded, sync)
    store = open_store(loaded, create=False)
    try:
        rows = state_report.record_errors(store, sync, all_, limit)
        total = state_report.count_record_errors(store, sync, all_) if len(rows) >= limit else len(rows)
        dead = store.history.count_dead(sync)
    finally:
        store.close()
    if as_json:
        json_out([_error_json(loaded.sheet, row) for row in rows])
    else:
        _errors_table(loaded.sheet, rows)
    if total > len(rows):  # with --json on stderr, so stdout stays one JSON document
        (err if as_json else out).print(
            f"… {total - len(rows)} more not shown ({total} in all): "
            f"`mapsync errors {sheet}{f' --sync {sync}' if sync else ''} --limit {total}` shows them all",
            highlight=False,
            markup=False,
        )
    if dead and not as_json:
        out.print(
            f"{dead} of the open record errors are dead (tried max_attempts times): automatic "
            f"retries skip them; `mapsync retry {sheet}` sends them",
            highlight=False,
            markup=False,
        )
    if rows and not all_ and not as_json:  # (as before: --json exits 0 with the list)
        raise Exit(1)


def _error_json(sheet: Sheet, row: dict[str, Any]) -> dict[str, Any]:
    """A record error with its key as an object by key column and its version as plain data."""
    version = state_report.decoded(row["version"])
    return {
        **row,
        "key": keys.text_as_json(row["key"], keys.columns_of(sheet, row["sync"])),
        "version": version,
    }


def _errors_table(sheet: Sheet, rows: list[dict[str, Any]]) -> None:
    table = Table("sync", "key", "field", "rule", "message", "attempts", "last seen", "resolved")
    for row in rows:  # keys and messages quote source data: never read as rich markup
        table.add_row(
            row["sync"],
            escape(keys.to_arg(keys.from_text(row["key"]), keys.columns_of(sheet, row["sync"]))),
            escape(row["field"] or ""),
            row["rule"] or "",
            escape(row["message"]),
            f"{row['attempts']} dead" if row.get("dead_at") else str(row["attempts"]),
            row["last_seen"],
            row["resolved_at"] or "",
        )
    out.print(table if rows else "no open record errors")


@state_app.command("show")
def state_show(sheet: SheetArg, sync: SyncOpt = None, as_json: JsonOpt = False) -> None:
    """Cursors, ledger size, recent runs and cursor audit of each sync."""
    loaded = load_sheet(sheet)
    store = open_store(loaded, create=False)
    try:
        data = [
            {
                **state_report.sync_status(store, name),
                "runs": state_report.runs(store, name, 5),
                "audit": state_report.audit_plain(store, name, 5),
            }
            for name in sync_names(loaded, sync)
        ]
    finally:
        store.close()
    if as_json:
        json_out(data)
        return
    for item in data:
        out.print(
            f"[bold]{item['sync']}[/bold]: {item['ledger_keys']} keys in the ledger, "
            f"{item['open_errors']} open errors"
        )
        for name, value in item["cursors"].items():
            out.print(f"  cursor {name}: {_text(value)}", highlight=False, markup=False)
        for r in item["runs"]:
            out.print(
                f"  run #{r['id']} {r['kind']} {r['started_at']} {r['status']}"
                + (f" ({r['failure_class']})" if r["failure_class"] else "")
                + f" read {r['read']} written {r['written']}"
                + _scheduled(r),
                highlight=False,
            )
        for a in item["audit"]:  # newest first, like the runs
            run = f" run #{a['run_id']}" if a["run_id"] is not None else ""
            change = f"{_text(a['old_value'])} → {_text(a['new_value'])}"
            out.print(
                f"  cursor change {a['committed_at']}{run} {a['name']}: {change}",
                highlight=False,
                markup=False,
            )


def _scheduled(run: dict[str, Any]) -> str:
    """What a run row says of its schedule and worker (schema v5; nothing for older runs)."""
    text = ""
    if run.get("scheduled_at"):
        slot = f" {run['slot']} slot" if run.get("slot") else ""
        late = f", {run['lateness_ms'] / 1000:.1f} s late" if run.get("lateness_ms") is not None else ""
        more = f", {run['coalesced']} missed slot(s) with it" if run.get("coalesced") else ""
        text += f";{slot} scheduled {run['scheduled_at']}{late}{more}"
    if run.get("worker"):
        text += f"; worker {run['worker']}"
    if run.get("status") == "skipped" and run.get("message"):
        text += f"; {run['message']}"
    return text


def _text(value: Any) -> str:
    return "-" if value is None else value if isinstance(value, str) else json.dumps(value)


@state_app.command("reset")
def state_reset(
    sheet: SheetArg,
    sync: Annotated[str, typer.Option("--sync", "-s", help="The sync to reset (required).")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
) -> None:
    """Forget a sync's cursors, key ledger and errors, so the next `seed` starts over."""
    loaded = load_sheet(sheet)
    sync_names(loaded, sync)
    if not yes and not typer.confirm(f"Forget cursors, ledger and errors of {sync}?"):
        raise Exit(1)
    store = open_store(loaded, create=False)
    try:
        removed = state_report.reset(store, sync)
    finally:
        store.close()
    out.print(f"reset {sync}: " + ", ".join(f"{k} {v}" for k, v in removed.items()))


def _resolve(
    loaded: LoadedSheet, sync: str | None, given: list[str], note: str | None, all_open: bool, as_json: bool
) -> None:
    """`errors --resolve`: the named open errors of `sync` (or all of them) resolved with `note`."""
    if sync is None or note is None or not note.strip():
        raise fail("--resolve needs --sync and a --note saying why", 2)
    if bool(given) == all_open:
        raise fail("name the keys to resolve, or --all-open (not both)", 2)
    sync_names(loaded, sync)
    try:
        wanted = [keys.parse_arg(k, keys.columns_of(loaded.sheet, sync)) for k in given]
    except ValueError as exc:
        raise fail(f"KEY: {exc}", 2) from None
    store = open_store(loaded, create=False)
    try:
        with handled(loaded.secrets):
            texts: list[str] | None = None
            named: list[str] | None = None
            if not all_open:
                hits = keys.find(store.open_error_keys(sync), wanted)
                for arg, hit in zip(given, hits, strict=True):
                    if hit is None:
                        raise fail(f"KEY {arg}: no open record error of {sync} has this key", 2)
                found = list(dict.fromkeys(hit for hit in hits if hit is not None))
                texts = [records.key_text(hit) for hit in found]
                named = [keys.to_arg(hit, keys.columns_of(loaded.sheet, sync)) for hit in found]
            who = operator()
            done = store.resolve_errors(sync, texts, who, note)
            detail = {"keys": named, "note": note, "resolved": done, "via": "cli"}
            store.audit.record_action(who, "resolve", sync, detail)
    finally:
        store.close()
    if as_json:
        json_out({"sync": sync, "resolved": done, "keys": named, "note": note, "by": who})
        return
    out.print(f"resolved {done} record error(s) of {sync} (by {who})", highlight=False, markup=False)
