"""`mapsync trace SHEET --sync NAME KEY`: one record's journey (src/mapsync/trace.py). It reads the
state store (which must exist) and, for a queue sync, the source's queue table."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mapsync import trace as tracing
from mapsync.cli.common import JsonOpt, SheetArg, app, fail, handled, json_out, load_sheet, open_store, out


@app.command()
def trace(
    sheet: SheetArg,
    key: Annotated[
        str,
        typer.Argument(
            help="The record's source key: `KEY`, or `col=value,col=value` for a compound key "
            "(escape `\\`, `,` and `=` with a backslash).",
            show_default=False,
        ),
    ],
    sync: Annotated[str, typer.Option("--sync", "-s", help="The sync the record belongs to.")],
    as_json: JsonOpt = False,
    show_payload: Annotated[
        bool,
        typer.Option(
            "--show-payload",
            help="Also show the mapped record of rejected attempts (customer data: off by default).",
        ),
    ] = False,
) -> None:
    """One record's journey: its status (delivered, rejected, deleted, pending in queue, in inbox),
    the runs that touched it and the sync's capture method and cursors, its delivery attempts
    (the last 3, with the destination's answer; a hash for a delivered one), its ledger entry, its
    record error, and the queue rows or inbox items that carry it. Exit 1 when nothing knows the
    key. A seed records no delivered attempts: the ledger entry says what it delivered."""
    loaded = load_sheet(sheet)
    with handled(loaded.secrets):
        want = tracing.wanted(loaded, sync, key)
    store = open_store(loaded, create=False)
    try:
        with handled(loaded.secrets):
            found = tracing.trace(loaded, store, want, show_payload=show_payload)
    finally:
        store.close()
    if found is None:
        raise fail(f"no trace of {key} in sync {sync}", 1)
    if as_json:
        json_out(found)
        return
    _print(found, show_payload)


def _line(text: str) -> None:
    out.print(text, highlight=False, markup=False)


def _print(t: dict[str, Any], show_payload: bool) -> None:
    _line(f"{t['sync']} {t['key_arg']}: {t['status']}")
    cap = t["capture"]
    cursors = ", ".join(f"{k}={v}" for k, v in cap["cursors"].items()) or "-"
    _line(f"capture: {cap['method']}; cursors: {cursors}")
    for r in cap["runs"]:
        if r.get("purged"):
            _line(f"  run {r['id']}: purged")
        else:
            _line(f"  run {r['id']}: {r['kind']} ({r['trigger']}) started {r['started_at']}: {r['status']}")
    if not t["attempts"]:
        _line("attempts: none kept (a seed records none for delivered records)")
    for a in t["attempts"]:
        what = a["answer"] or (f"dest id {a['dest_id']}" if a["dest_id"] else "")
        head = f"attempt {a['at']} run {a['run_id']}: {a['outcome']} version {a['version']}"
        _line(f"{head} hash {a['hash'] or '-'}")
        if what:
            _line(f"  answer: {what}")
        if "payload" in a:
            _line(f"  payload: {a['payload']}")
        elif "payload_chars" in a and not show_payload:
            _line(f"  payload: {a['payload_chars']} characters kept (--show-payload)")
        elif a["outcome"] == "rejected":
            _line("  payload: none (refused by the mapping, before any write)")
    led = t["ledger"]
    if led is None:
        _line("ledger: no entry")
    else:
        _line(
            f"ledger: version {led['version']} hash {led['hash']} dest id {led['dest_id']} "
            f"deleted {led['deleted']} at {led['updated_at']} digest {led['digest'] or 'none'}"
        )
    err = t["error"]
    if err is not None:
        state = "open" if err["open"] else f"resolved {err['resolved_at']}"
        _line(
            f"record error ({state}, {err['attempts']} attempt(s), since {err['first_seen']}): "
            f"{err['field'] or '-'} {err['rule'] or '-'}: {err['message']}"
        )
    if t["queue"] is not None:
        q = t["queue"]
        if q.get("error"):
            _line(f"queue {q['table']}: not readable: {q['error']}")
        for r in q["rows"]:
            _line(
                f"queue row {r['id']} {r['created_at']} {r['change']}: {r['status']}, {r['attempts']} retries"
            )
    for i in t["inbox"] or []:
        _line(f"inbox item {i['id']} ({i['event_id']}) received {i['received_at']}: {i['status']}")
    if t["children_note"]:
        _line(t["children_note"])
