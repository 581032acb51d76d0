"""The dashboard's operational reads (orders, queues, alerts, reconciliation, workers, budgets,
audit, requests): over the state store's ports only, plain JSON-ready dicts."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from mapsync.sheet.loader import LoadedSheet
from mapsync.state.ports import Store
from mapsync.web.read_common import arg_key, clean, is_export, iso, with_arg_keys

_US = 1_000_000


def orders(loaded: LoadedSheet, store: Store, sync: str | None = None) -> list[dict[str, Any]]:
    """Per export sync: what the monitors observed pending, its failed imports (open record
    errors) and its recent runs."""
    names = [s for s in loaded.sheet.syncs if is_export(loaded, s) and (sync is None or s == sync)]
    seen = store.observations.observations(None)
    out = []
    for name in names:
        pending = seen.get((name, "backlog_rows"))
        oldest = seen.get((name, "oldest_pending_s"))
        failed = store.history.record_errors(name, False, 200)
        out.append(
            {
                "sync": name,
                "pending": None if pending is None else pending[0],
                "oldest_pending_s": None if oldest is None else oldest[0],
                "failed": [
                    {
                        "key": arg_key(loaded, name, r["key"]),
                        "message": r.get("message"),
                        "at": iso(r.get("last_seen")),
                    }
                    for r in failed
                ],
                "recent": with_arg_keys(loaded, name, _recent(store, name)),
            }
        )
    return [clean(loaded, r) for r in out]


RECENT = 50  # records shown of an export's latest runs


def _recent(store: Store, sync: str) -> list[dict[str, Any]]:
    """The records the export's latest runs touched (key, outcome, message, at, run_id), newest
    run first: what an operator may want to export again."""
    out: list[dict[str, Any]] = []
    for r in store.history.runs(sync, 5, without=("skipped",)):
        for rec in store.history.run_records(r["id"], RECENT):
            out.append({**rec, "run_id": r["id"]})
            if len(out) >= RECENT:
                return out
    return out


def _failed(r: dict[str, Any]) -> dict[str, Any]:
    return {"key": r["key"], "message": r.get("message"), "at": iso(r.get("last_seen"))}


def queues(loaded: LoadedSheet, store: Store) -> list[dict[str, Any]]:
    seen = store.observations.observations(None)
    out = []
    for sync in loaded.sheet.syncs:
        batches = store.jobs.unfinished(sync)
        by_status: dict[str, int] = {}
        for b in batches:
            by_status[str(b["status"])] = by_status.get(str(b["status"]), 0) + 1
        oldest = seen.get((sync, "oldest_pending_s"))
        backlog = seen.get((sync, "backlog_rows"))
        out.append(
            {
                "sync": sync,
                "inbox": store.inbox.counts(sync),
                "async_unfinished": len(batches),
                "async": by_status,
                "async_oldest": iso(batches[0].get("created_at")) if batches else None,
                "backlog": None if backlog is None else backlog[0],
                "oldest_pending_s": None if oldest is None else oldest[0],
            }
        )
    return [clean(loaded, r) for r in out]


def _incident(i: Any) -> dict[str, Any]:
    row = dataclasses.asdict(i)
    row.pop("channels", None)
    return dict(row)


def alerts(
    loaded: LoadedSheet, store: Store, include_closed: bool = False, limit: int = 200
) -> list[dict[str, Any]]:
    rows = store.incidents.incidents(limit=limit, include_resolved=include_closed)
    return [clean(loaded, _incident(i)) for i in rows]


def reconcile(loaded: LoadedSheet, store: Store) -> list[dict[str, Any]]:
    out = []
    for check, row in sorted(store.reconciliation.latest(None).items()):
        trend = store.reconciliation.results(check, 20)
        out.append(
            {
                "check": check,
                "sync": row.get("sync"),
                "status": row.get("status"),
                "at": iso(row.get("finished_at")),
                "compared": row.get("compared"),
                "differences": row.get("differences"),
                "trend": [
                    {
                        "status": r.get("status"),
                        "at": iso(r.get("finished_at")),
                        "differences": r.get("differences"),
                    }
                    for r in trend
                ],
            }
        )
    return [clean(loaded, r) for r in out]


def workers(loaded: LoadedSheet, store: Store) -> dict[str, Any]:
    out: dict[str, Any] = clean(loaded, store.workers.overview())
    return out


def budgets(loaded: LoadedSheet, store: Store) -> list[dict[str, Any]]:
    """Per API connection with a call budget: calls of the last hour the store holds and what the
    server said (no call is made)."""
    now_us = int(dt.datetime.now(dt.UTC).timestamp() * _US)
    out = []
    for name, cfg in loaded.sheet.connections.items():
        if not getattr(cfg, "budget", None):
            continue
        calls, row = store.budget_read(name, now_us - 3600 * _US)
        out.append(
            {
                "connection": name,
                "name": name,
                "calls_last_hour": len(calls),
                "blocked_until": None
                if row is None or row.blocked_until_us is None
                else _when(row.blocked_until_us),
                "server_remaining": None if row is None else row.server_remaining,
                "server_reset": None
                if row is None or row.server_reset_us is None
                else _when(row.server_reset_us),
            }
        )
    return [clean(loaded, r) for r in out]


def _when(us: int | None) -> str | None:
    if us is None:
        return None
    return dt.datetime.fromtimestamp(us / _US, dt.UTC).isoformat()


def audit(
    loaded: LoadedSheet, store: Store, sync: str | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    rows = store.audit.actions(sync, limit)
    return [clean(loaded, dict(r)) for r in rows]


def requests(loaded: LoadedSheet, store: Store) -> list[dict[str, Any]]:
    out = []
    for r in store.requests(None, 100):
        row = dataclasses.asdict(r)
        row["by"] = r.requested_by
        row.setdefault("keys", None)
        row.setdefault("note", None)
        out.append(clean(loaded, row))
    return out
