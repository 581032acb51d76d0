"""The in-memory store's retention purge and daily rollups (`History.purge_tables`, port
`Rollups`): the semantics of state/history.py and state/rollups.py over state/memory_tables.py.
One transaction per table (memory has no locks to hold for long, so no batches)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mapsync.state import rollups
from mapsync.state.clock import stamp, utcnow
from mapsync.state.history import BATCHES_SETTLED, INBOX_DONE, KEEP_ENDED, cutoff_of
from mapsync.state.ledger import DELETED_HASH
from mapsync.state.memory_tables import Memory, Row, Tables

Goes = Callable[[Tables, str], list[Any]]  # the keys of a table's rows that may go


class MemoryRollups:
    def __init__(self, memory: Memory) -> None:
        self.memory = memory

    def rollups(self, sync: str | None, since: dt.datetime | dt.date) -> list[dict[str, Any]]:
        day = rollups.since_day(since)
        with self.memory.read() as t:
            rows = [dict(r) for (s, d), r in t.rollups.items() if d >= day and sync in (None, s)]
        return sorted(rows, key=lambda r: (r["sync"], r["day"]))


def purge_tables(
    memory: Memory,
    ages: Mapping[str, dt.timedelta],
    *,
    syncs: Sequence[str] | None = None,
    late_ms: Mapping[str, int] | None = None,
    dry_run: bool = False,
) -> dict[str, int]:
    now = utcnow()
    out: dict[str, int] = {}
    for table, age in ages.items():
        cutoff = cutoff_of(table, now, age)
        goes = GOES[table]
        with memory.tx() as t:
            keys = [k for k in goes(t, cutoff) if syncs is None or _sync_of(t, table, k) in syncs]
            out[table] = len(keys)
            if not dry_run:
                _delete(t, table, keys, late_ms)
    if "runs" in ages and not dry_run:  # the audit log goes with the run history (not counted)
        cutoff = stamp(now - ages["runs"])
        with memory.tx() as t:
            for i in [
                i for i, r in t.actions.items() if r["at"] < cutoff and (syncs is None or r["sync"] in syncs)
            ]:
                del t.actions[i]
            if syncs is None:
                ended = (
                    k
                    for k, r in t.web_sessions.items()
                    if min(r["expires_at"], r["revoked_at"] or "~") < cutoff
                )
                for k in list(ended):
                    del t.web_sessions[k]
    return out


def _runs(t: Tables, cutoff: str) -> list[Any]:
    kept: set[int] = set()
    for statuses in (None, KEEP_ENDED, ("success",)):
        latest: dict[str, int] = {}
        for i, r in t.runs.items():
            if statuses is None or r["status"] in statuses:
                latest[r["sync"]] = max(i, latest.get(r["sync"], i))
        kept.update(latest.values())
    return [
        i
        for i, r in t.runs.items()
        if r["finished_at"] is not None and r["finished_at"] < cutoff and i not in kept
    ]


def _older(table: Callable[[Tables], dict[Any, Row]], column: str, ok: Callable[[Row], bool]) -> Goes:
    def goes(t: Tables, cutoff: str) -> list[Any]:
        return [k for k, r in table(t).items() if ok(r) and r[column] is not None and r[column] < cutoff]

    return goes


def _tombstones(t: Tables, cutoff: str) -> list[Any]:
    return [
        k
        for k, (_, hash_, _, deleted) in t.ledger.items()
        if (deleted or hash_ == DELETED_HASH) and t.ledger_at.get(k, "") < cutoff
    ]


def _alerts(t: Tables, cutoff: str) -> list[Any]:
    pending = {n["incident_id"] for n in t.notifications.values() if n["status"] == "pending"}
    return [
        i
        for i, r in t.incidents.items()
        if r["status"] == "resolved" and (r["resolved_at"] or "") < cutoff and i not in pending
    ]


def _attempts(t: Tables) -> dict[Any, Row]:
    found: dict[Any, Row] = getattr(t, "attempts", {})  # memory keeps them once `trace` records them
    return found


def _reconcile(t: Tables, cutoff: str) -> list[Any]:
    latest: dict[str, int] = {}
    for i, r in t.reconcile_results.items():
        latest[r["check"]] = max(i, latest.get(r["check"], i))
    kept = set(latest.values())
    return [i for i, r in t.reconcile_results.items() if r["finished_at"] < cutoff and i not in kept]


def _always(_: Row) -> bool:
    return True


GOES: dict[str, Goes] = {
    "runs": _runs,
    "record_errors": _older(lambda t: t.errors, "resolved_at", _always),
    "cursor_audit": _older(lambda t: t.audit, "committed_at", _always),
    "inbox": _older(lambda t: t.inbox, "processed_at", lambda r: r["status"] in INBOX_DONE),
    "async_batches": _older(lambda t: t.jobs, "updated_at", lambda r: r["status"] in BATCHES_SETTLED),
    "unmapped": _older(lambda t: t.unmapped, "resolved_at", _always),
    "tombstones": _tombstones,
    "alerts": _alerts,
    "attempts": _older(_attempts, "at", _always),
    "rollups": lambda t, cutoff: [k for k in t.rollups if k[1] < cutoff],
    "reconcile": _reconcile,
}


def _sync_of(t: Tables, table: str, key: Any) -> str | None:
    if table == "runs":
        return str(t.runs[key]["sync"])
    if table == "reconcile":
        return t.reconcile_results[key]["sync"]  # type: ignore[no-any-return]
    if table in ("cursor_audit", "inbox", "async_batches", "alerts", "attempts"):
        rows: dict[str, dict[Any, Row]] = {
            "cursor_audit": t.audit,
            "inbox": t.inbox,
            "async_batches": t.jobs,
            "alerts": t.incidents,
        }
        row = rows[table][key] if table in rows else _attempts(t)[key]
        return row["sync"]  # type: ignore[no-any-return]
    return str(key[0])  # record errors, unmapped, ledger and rollups: keyed by (sync, …)


def _delete(t: Tables, table: str, keys: list[Any], late_ms: Mapping[str, int] | None) -> None:
    if table == "runs":
        for r in rollups.fold([t.runs[i] for i in keys], late_ms):
            merged = rollups.merge(t.rollups.get((r.sync, r.day)), r)
            t.rollups[(r.sync, r.day)] = merged
    if table == "alerts":
        gone = set(keys)
        for n in [i for i, n in t.notifications.items() if n["incident_id"] in gone]:
            del t.notifications[n]
    tables: dict[str, dict[Any, Any]] = {
        "runs": t.runs,
        "record_errors": t.errors,
        "cursor_audit": t.audit,
        "inbox": t.inbox,
        "async_batches": t.jobs,
        "unmapped": t.unmapped,
        "tombstones": t.ledger,
        "alerts": t.incidents,
        "rollups": t.rollups,
        "reconcile": t.reconcile_results,
    }
    rows = tables[table] if table in tables else _attempts(t)
    for k in keys:
        del rows[k]
        if table == "tombstones":
            t.ledger_drift.pop(k, None)  # the purged entry's drift columns
