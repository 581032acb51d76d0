"""Read-only views of the state store for `status`, `errors` and `state show` (over the port
`History`, state/history.py), and the plain forms of cursor values they show."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from mapsync.state import values
from mapsync.state.ports import Store


def sync_status(store: Store, sync: str) -> dict[str, Any]:
    """A sync's last run (not counting skipped slots, which come as `skipped_since`), cursors,
    ledger size, open and dead record errors, whether it is paused
    (by, at, note) and its pending run requests (new or taken, newest first)."""
    # the last run that ran: slots the daemon skipped since (busy, paused, backing off) are
    # counted beside it, so a skip never hides the failure before it
    recent = store.history.runs(sync, 50)  # newest first
    ran = next((r for r in recent if r["status"] != "skipped"), None)
    last = ran if ran is not None else store.history.last_run(sync)
    skips = [r for r in recent if r["status"] == "skipped" and (ran is None or r["id"] > ran["id"])]
    open_errors = store.history.count_record_errors(sync, False)
    cursors = {k: v for k, v in store.cursors(sync).items() if v is not None}
    pause = store.paused().get(sync)
    return {
        "sync": sync,
        "last_run": last,
        # skipped slots after that run (counted among the newest 50 runs), and the newest of them
        "skipped_since": {"count": len(skips), "last": skips[0]} if skips else None,
        "cursors": {k: plain(v) for k, v in cursors.items()},
        "ledger_keys": store.ledger_count(sync),
        "open_errors": int(open_errors),
        "dead_errors": store.history.count_dead(sync),
        "paused": None if pause is None else {"by": pause.by, "at": pause.at.isoformat(), "note": pause.note},
        "requests": [plain(dataclasses.asdict(r)) for r in store.requests(sync, 20, pending=True)],
    }


def record_errors(store: Store, sync: str | None, include_resolved: bool, limit: int) -> list[dict[str, Any]]:
    return store.history.record_errors(sync, include_resolved, limit)


def count_record_errors(store: Store, sync: str | None, include_resolved: bool) -> int:
    """How many record errors `record_errors` would list without its limit."""
    return store.history.count_record_errors(sync, include_resolved)


def runs(store: Store, sync: str | None, limit: int) -> list[dict[str, Any]]:
    return store.history.runs(sync, limit)


def audit(store: Store, sync: str, limit: int) -> list[dict[str, Any]]:
    return store.history.audit(sync, limit)


def audit_plain(store: Store, sync: str, limit: int) -> list[dict[str, Any]]:
    """`audit` with the old and new values as plain JSON data (for `state show`)."""
    return [
        {**row, "old_value": decoded(row["old_value"]), "new_value": decoded(row["new_value"])}
        for row in audit(store, sync, limit)
    ]


def decoded(text: str | None) -> Any:
    """An audited cursor value as plain JSON data (the stored text is typed-tagged JSON)."""
    if text is None or text == "reset":
        return text
    try:
        return plain(values.decode(text))
    except (ValueError, TypeError):
        return text


def plain(value: Any) -> Any:
    """Cursor data as plain JSON values: timestamps and decimals as text, structures kept."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def reset(store: Store, sync: str) -> dict[str, int]:
    """Forget a sync's cursors, ledger and errors (run history and audit are kept)."""
    return store.history.reset(sync)
