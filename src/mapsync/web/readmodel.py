"""What the dashboard and the JSON API show: read functions over the state store's ports and the
sheet, returning plain JSON-ready dicts (times as ISO-8601 text, every text redacted with the
sheet's secrets). Nothing here reads a source or destination database."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

from sqlalchemy import exc as sa_exc

from mapsync import errors as config_errors
from mapsync import keys, schedules, watch
from mapsync import trace as tracing
from mapsync.monitors import timing
from mapsync.monitors.facts import at
from mapsync.sheet.loader import LoadedSheet
from mapsync.state.ports import Store
from mapsync.web import read_unmapped
from mapsync.web.read_common import arg_key, clean, is_export, iso, run_row, with_arg_keys
from mapsync.web.read_ops import alerts, audit, budgets, orders, queues, reconcile, requests, workers

__all__ = [
    "alerts",
    "audit",
    "budgets",
    "errors",
    "orders",
    "overview",
    "queues",
    "reconcile",
    "requests",
    "run",
    "runs",
    "trace",
    "unmapped",
    "workers",
]


def _kind(loaded: LoadedSheet, sync: str) -> str:
    cfg = loaded.sheet.syncs[sync]
    src = getattr(cfg.from_, "connection", None) or "?"
    dst = getattr(cfg.to, "connection", None) or "?"
    return f"{src}→{dst}"


def _timing(loaded: LoadedSheet, store: Store, sync: str, paused: bool) -> dict[str, Any]:
    """on_time / late_by_s as the `late_start` monitor judges them against `start_within`
    (`start_within_s`; None: no schedule or start window, so nothing is late), and `window_s`:
    how long a run may take (`finish_within`, what the `overran` monitor judges)."""
    cfg = loaded.sheet.syncs[sync]
    within = cfg.schedule.start_within
    finish = cfg.schedule.finish_within
    out: dict[str, Any] = {
        "on_time": None,
        "late_by_s": None,
        "start_within_s": within.total_seconds() if within else None,
        "window_s": finish.total_seconds() if finish else None,
    }
    if within is None or schedules.of(cfg.schedule) is None:
        return out
    facts = watch.sync_facts(loaded, store, sync, paused=[sync] if paused else [], extra=False, record=False)
    found = timing.late_start(facts)
    if found is None:
        return out
    out["on_time"] = not found
    if found:
        numbers = found[0].numbers
        late = numbers.get("late_s")
        if late is None and numbers.get("slot"):
            slot = at(numbers["slot"])
            late = round((facts.now - slot - within).total_seconds(), 3) if slot else None
        out["late_by_s"] = late
    return out


def overview(loaded: LoadedSheet, store: Store) -> list[dict[str, Any]]:
    paused = store.paused()
    observed = store.observations.observations(None)
    latest = store.reconciliation.latest(None)
    open_alerts = store.incidents.open_incidents(None)
    unmapped_rows = store.unmapped_values(None, False)
    pending = store.requests(None, 200, pending=True)
    out = []
    for sync in loaded.sheet.syncs:
        last = next((r for r in store.history.runs(sync, 20) if r.get("status") != "skipped"), None)
        pause = paused.get(sync)
        checks = [r for r in latest.values() if r.get("sync") == sync]
        newest = max(checks, key=lambda r: int(r.get("id") or 0)) if checks else None

        def obs(name: str, sync: str = sync) -> Any:
            hit = observed.get((sync, name))
            return None if hit is None else hit[0]

        out.append(
            {
                "sync": sync,
                "kind": _kind(loaded, sync),
                "last_run": run_row(last) if last else None,
                **_timing(loaded, store, sync, pause is not None),
                "backlog": obs("backlog_rows"),
                "lag_s": obs("lag_s"),
                "open_errors": store.history.count_record_errors(sync, False),
                "dead_errors": store.history.count_dead(sync),
                "unmapped": sum(1 for u in unmapped_rows if u.get("sync") == sync),
                "open_alerts": sum(1 for i in open_alerts if i.sync == sync),
                "last_reconcile": None
                if newest is None
                else {
                    "check": newest["check"],
                    "status": newest.get("status"),
                    "at": iso(newest.get("finished_at")),
                },
                "paused": None if pause is None else {"by": pause.by, "at": pause.at, "note": pause.note},
                "export": is_export(loaded, sync),
                "requests": [_request(r) for r in pending if r.sync == sync],
            }
        )
    return [clean(loaded, row) for row in out]


def _check(row: dict[str, Any]) -> dict[str, Any]:
    return {"check": row["check"], "status": row.get("status"), "at": iso(row.get("finished_at"))}


def _request(r: Any) -> dict[str, Any]:
    row = dataclasses.asdict(r)
    row.setdefault("keys", None)
    row.setdefault("note", None)
    return row


def runs(loaded: LoadedSheet, store: Store, sync: str, limit: int = 50) -> list[dict[str, Any]]:
    return [clean(loaded, run_row(r)) for r in store.history.runs(sync, limit)]


def run(loaded: LoadedSheet, store: Store, run_id: int) -> dict[str, Any] | None:
    try:
        row = store.run(run_id)
    except (KeyError, LookupError, sa_exc.NoResultFound):  # the memory store: KeyError
        return None
    if not row or row.get("sync") not in loaded.sheet.syncs:
        return None
    records = with_arg_keys(loaded, row["sync"], store.history.run_records(run_id, 200))
    out: dict[str, Any] = clean(loaded, {**run_row(row), "records": records})
    return out


def errors(
    loaded: LoadedSheet,
    store: Store,
    sync: str | None = None,
    include_resolved: bool = False,
    limit: int = 200,
) -> list[dict[str, Any]]:
    out = []
    for row in store.history.record_errors(sync, include_resolved, limit):
        out.append(
            {
                "sync": row["sync"],
                "key": arg_key(loaded, row["sync"], row["key"]),
                "field": row.get("field"),
                "rule": row.get("rule"),
                "message": row.get("message"),
                "attempts": int(row.get("attempts") or 0),
                "first_seen": iso(row.get("first_seen")),
                "last_seen": iso(row.get("last_seen")),
                "dead": row.get("dead_at") is not None,
                "resolved_at": iso(row.get("resolved_at")),
                "resolved_by": row.get("resolved_by"),
                "resolved_note": row.get("resolved_note"),
            }
        )
    return [clean(loaded, r) for r in out]


def trace(loaded: LoadedSheet, store: Store, sync: str, key: str) -> dict[str, Any] | None:
    """The record's journey (`mapsync trace`), the key as its stored text (`records.key_text`) or
    as typed on the command line; None: nothing knows it (or the key is not in the sync's shape).
    Only the state store is read: a queue sync's queue rows (in its source) are left out."""
    columns = keys.columns_of(loaded.sheet, sync)
    text = key
    with contextlib.suppress(ValueError, TypeError, KeyError):
        text = keys.to_arg(keys.from_text(key), columns)
    try:
        want = tracing.wanted(loaded, sync, text)
    except config_errors.ConfigError:
        return None
    found = tracing.trace(loaded, store, want, source=False)
    if found is None:
        return None
    out: dict[str, Any] = clean(loaded, found)
    return out


def unmapped(loaded: LoadedSheet, store: Store, sync: str | None = None) -> list[dict[str, Any]]:
    rows = read_unmapped.entries(loaded, store.unmapped_values(sync, False))
    return [clean(loaded, {**r, "count": int(r.get("count") or 0)}) for r in rows]
