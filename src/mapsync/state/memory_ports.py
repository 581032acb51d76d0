"""The in-memory store's leases, inbox, async jobs and history (ports `Leases`, `Inbox`, `Jobs`,
`History`): the semantics of state/lease.py, state/inbox.py, state/async_batches.py and
state/history.py over the tables of state/memory_tables.py."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from mapsync import records
from mapsync.state import run_records, schema
from mapsync.state.async_batches import check_final, decoded, new_batch_id
from mapsync.state.clock import stamp, utcnow
from mapsync.state.data import Item, Lease
from mapsync.state.history import BATCH, PER_RUN
from mapsync.state.lease import held_by_other, holder_of, lost, new_token
from mapsync.state.memory_rollups import purge_tables
from mapsync.state.memory_tables import Memory, Row, fail_stale
from mapsync.state.runs import alive


class MemoryLeases:
    def __init__(self, memory: Memory) -> None:
        self.memory = memory

    def acquire(self, sync: str, ttl: dt.timedelta) -> Lease:
        token = new_token()
        host, pid = socket.gethostname(), os.getpid()
        row = {
            "sync": sync,
            "token": token,
            "host": host,
            "pid": pid,
            "acquired_at": stamp(),
            "expires_at": stamp(utcnow() + ttl),
        }
        with self.memory.tx() as t:
            held = t.leases.get(sync)
            if held is not None:
                dead = held["host"] == host and not alive(int(held["pid"]))
                if not (dead or held["expires_at"] < stamp()):
                    raise held_by_other(sync, held)
                fail_stale(t, sync, held["token"], stamp())
            t.leases[sync] = row
        return Lease(sync, token, ttl)

    def release(self, lease: Lease) -> None:
        with self.memory.tx() as t:
            held = t.leases.get(lease.sync)
            if held is not None and held["token"] == lease.token:
                del t.leases[lease.sync]

    @contextlib.contextmanager
    def held(self, sync: str, ttl: dt.timedelta) -> Iterator[Lease]:
        lease = self.acquire(sync, ttl)
        try:
            yield lease
        finally:
            self.release(lease)

    def renew(self, lease: Lease) -> None:
        with self.memory.tx() as t:
            held = t.leases.get(lease.sync)
            if held is None or held["token"] != lease.token:
                raise lost(lease)
            t.leases[lease.sync] = {**held, "expires_at": stamp(utcnow() + lease.ttl)}

    def holder(self, sync: str) -> dict[str, Any] | None:
        with self.memory.read() as t:
            row = t.leases.get(sync)
        return None if row is None else holder_of(dict(row))

    def renew_retried(self, lease: Lease) -> None:
        self.renew(lease)  # nothing transient to retry in memory


class MemoryInbox:
    def __init__(self, memory: Memory) -> None:
        self.memory = memory

    def append(
        self,
        sync: str,
        event_id: str,
        payload: str,
        source: str | None = None,
        *,
        signature: str | None = None,
        signed_at: int | None = None,
    ) -> int | None:
        with self.memory.tx() as t:
            return _insert(t, sync, event_id, payload, source, stamp(), signature, signed_at)

    def new_items(self, sync: str, after: int, limit: int) -> list[Item]:
        with self.memory.read() as t:
            rows = sorted(
                (
                    r
                    for r in t.inbox.values()
                    if r["sync"] == sync and r["status"] == "new" and r["id"] > after
                ),
                key=lambda r: int(r["id"]),
            )[:limit]
        return [Item(r["id"], r["event_id"], r["received_at"], r["payload"], r["signed_at"]) for r in rows]

    def finish(
        self, processed: Iterable[int], failed: dict[int, str], stale: dict[int, str] | None = None
    ) -> None:
        now = stamp()
        stale = stale or {}
        done = set(processed) - set(failed) - set(stale)
        with self.memory.tx() as t:

            def mark(item_id: int, status: str, error: str | None) -> None:
                row = t.inbox.get(item_id)
                if row is not None and row["status"] == "new":
                    t.inbox[item_id] = {**row, "status": status, "processed_at": now, "error": error}

            for item_id in done:
                mark(item_id, "processed", None)
            for status, messages in (("error", failed), ("stale", stale)):
                for item_id, message in messages.items():
                    mark(item_id, status, message[:2000])

    def split(
        self, sync: str, done: int, items: Sequence[tuple[str, str]], source: str | None = None
    ) -> None:
        now = stamp()
        with self.memory.tx() as t:
            for event_id, payload in items:
                _insert(t, sync, event_id, payload, source, now)
            row = t.inbox.get(done)
            if row is not None and row["status"] == "new":
                t.inbox[done] = {**row, "status": "processed", "processed_at": now, "error": None}

    def latest(
        self, sync: str, prefixes: Sequence[str], status: str | None = None
    ) -> dict[str, tuple[Item, str]]:
        out: dict[str, tuple[Item, str]] = {}
        with self.memory.read() as t:
            rows = sorted(
                (r for r in t.inbox.values() if r["sync"] == sync and status in (None, r["status"])),
                key=lambda r: int(r["id"]),
            )
        for r in rows:
            for p in prefixes:
                if r["event_id"].startswith(p):
                    item = Item(r["id"], r["event_id"], r["received_at"], r["payload"], r["signed_at"])
                    out[p] = (item, r["status"])
        return out

    def counts(self, sync: str | None = None) -> dict[str, int]:
        out: dict[str, int] = {}
        with self.memory.read() as t:
            for row in t.inbox.values():
                if sync is None or row["sync"] == sync:
                    out[row["status"]] = out.get(row["status"], 0) + 1
        return out


def _insert(
    t: Any,
    sync: str,
    event_id: str,
    payload: str,
    source: str | None,
    now: str,
    signature: str | None = None,
    signed_at: int | None = None,
) -> int | None:
    """One `new` item in the transaction `t`; None for a replay (either unique key)."""
    event_hash = schema.digest(event_id)
    signature_hash = schema.digest(signature) if signature is not None else None
    for row in t.inbox.values():
        if row["sync"] == sync and (
            row["event_hash"] == event_hash
            or (signature_hash is not None and row["signature_hash"] == signature_hash)
        ):
            return None
    item_id: int = t.next_id("inbox")
    t.inbox[item_id] = {
        "id": item_id,
        "sync": sync,
        "source": source,
        "event_id": event_id[:255],
        "event_hash": event_hash,
        "signature_hash": signature_hash,
        "signed_at": signed_at,
        "received_at": now,
        "payload": payload,
        "status": "new",
        "processed_at": None,
        "error": None,
    }
    return item_id


class MemoryJobs:
    def __init__(self, memory: Memory) -> None:
        self.memory = memory

    def record(
        self,
        sync: str,
        keys: Sequence[records.Key],
        batch_id: str | None = None,
        sent: dict[str, str] | None = None,
    ) -> str:
        batch_id = batch_id or new_batch_id()
        now = stamp()
        with self.memory.tx() as t:
            if batch_id in t.jobs:
                raise ValueError(f"async batch {batch_id} is recorded already")
            t.jobs[batch_id] = {
                "batch_id": batch_id,
                "sync": sync,
                "keys": records.canonical_json([list(k) for k in keys]),
                "job_id": None,
                "created_at": now,
                "submitted_at": None,
                "status": "pending",
                "results": records.canonical_json({"sent": sent}) if sent is not None else None,
                "updated_at": now,
            }
        return batch_id

    def _update(self, batch_id: str, **change: Any) -> None:
        with self.memory.tx() as t:
            row = t.jobs.get(batch_id)
            if row is not None:
                t.jobs[batch_id] = {**row, **change}

    def submitted(self, batch_id: str, job_id: str | None) -> None:
        now = stamp()
        self._update(batch_id, job_id=job_id, submitted_at=now, status="submitted", updated_at=now)

    def finish(self, batch_id: str, status: str, results: Any = None) -> None:
        check_final(status)
        text = records.canonical_json(results) if results is not None else None
        self._update(batch_id, status=status, results=text, updated_at=stamp())

    def unfinished(self, sync: str) -> list[dict[str, Any]]:
        columns = ("batch_id", "keys", "job_id", "status", "created_at", "submitted_at", "results")
        with self.memory.read() as t:
            rows = sorted(
                (r for r in t.jobs.values() if r["sync"] == sync and r["status"] in ("pending", "submitted")),
                key=lambda r: (r["created_at"], r["batch_id"]),
            )
        return [decoded({c: r[c] for c in columns}) for r in rows]

    def get(self, batch_id: str) -> dict[str, Any] | None:
        with self.memory.read() as t:
            row = t.jobs.get(batch_id)
        return decoded(dict(row)) if row is not None else None


class MemoryHistory:
    def __init__(self, memory: Memory) -> None:
        self.memory = memory

    def last_run(self, sync: str) -> dict[str, Any] | None:
        runs = self.runs(sync, 1)
        return runs[0] if runs else None

    def runs(self, sync: str | None, limit: int, *, without: Sequence[str] = ()) -> list[dict[str, Any]]:
        with self.memory.read() as t:
            rows = [
                dict(r)
                for r in t.runs.values()
                if (not sync or r["sync"] == sync) and r["status"] not in without
            ]
        return sorted(rows, key=lambda r: -int(r["id"]))[:limit]

    def _errors(self, sync: str | None, include_resolved: bool) -> list[Row]:
        with self.memory.read() as t:
            return [
                dict(r)
                for r in t.errors.values()
                if (not sync or r["sync"] == sync) and (include_resolved or r["resolved_at"] is None)
            ]

    def record_errors(self, sync: str | None, include_resolved: bool, limit: int) -> list[dict[str, Any]]:
        return sorted(self._errors(sync, include_resolved), key=lambda r: r["last_seen"], reverse=True)[
            :limit
        ]

    def run_records(self, run_id: int, limit: int) -> list[dict[str, Any]]:
        with self.memory.read() as t:
            tried = sorted((r for r in t.attempts.values() if r["run_id"] == run_id), key=lambda r: r["id"])
            failed = [e for e in t.errors.values() if e["run_id"] == run_id]
        return run_records.merge(tried[:limit], failed, limit)

    def count_record_errors(self, sync: str | None, include_resolved: bool) -> int:
        return len(self._errors(sync, include_resolved))

    def sync_gauges(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        with self.memory.read() as t:
            for row in t.runs.values():
                if row["status"] == "success" and row["finished_at"]:
                    seen = out.setdefault(row["sync"], {})
                    seen["last_success"] = max(seen.get("last_success", ""), row["finished_at"])
        for row in self._errors(None, False):
            seen = out.setdefault(row["sync"], {})
            seen["open_errors"] = seen.get("open_errors", 0) + 1
        return out

    def count_dead(self, sync: str | None) -> int:
        return sum(1 for r in self._errors(sync, False) if r["dead_at"] is not None)

    def audit(self, sync: str, limit: int) -> list[dict[str, Any]]:
        with self.memory.read() as t:
            rows = [dict(r) for r in t.audit.values() if r["sync"] == sync]
        return sorted(rows, key=lambda r: -int(r["id"]))[:limit]

    def reset(self, sync: str) -> dict[str, int]:
        with self.memory.tx() as t:
            tables: list[tuple[str, dict[Any, Row] | dict[Any, Any], Any]] = [
                (schema.cursors.name, t.cursors, lambda k, v: k[0] == sync),
                (schema.ledger.name, t.ledger, lambda k, v: k[0] == sync),
                (schema.record_errors.name, t.errors, lambda k, v: k[0] == sync),
                (schema.unmapped.name, t.unmapped, lambda k, v: k[0] == sync),
                (schema.attempts.name, t.attempts, lambda k, v: v["sync"] == sync),
                (schema.leases.name, t.leases, lambda k, v: k == sync),
            ]
            out = {}
            for name, table, match in tables:
                gone = [k for k, v in table.items() if match(k, v)]
                for k in gone:
                    del table[k]
                out[name] = len(gone)
            for k in [k for k in t.ledger_drift if k[0] == sync]:  # the ledger's drift columns
                del t.ledger_drift[k]
            audit_id = t.next_id("audit")
            t.audit[audit_id] = {
                "id": audit_id,
                "sync": sync,
                "run_id": None,
                "name": "*",
                "old_value": None,
                "new_value": "reset",
                "committed_at": stamp(),
            }
        return out

    def purge(self, sync: str, retention: dt.timedelta) -> dict[str, int]:
        done = self.purge_tables(dict.fromkeys(PER_RUN, retention), syncs=[sync])
        return {"runs": done["runs"], "audit": done["cursor_audit"], "errors": done["record_errors"]}

    def purge_tables(
        self,
        ages: Mapping[str, dt.timedelta],
        *,
        syncs: Sequence[str] | None = None,
        late_ms: Mapping[str, int] | None = None,
        dry_run: bool = False,
        batch: int = BATCH,
    ) -> dict[str, int]:
        return purge_tables(self.memory, ages, syncs=syncs, late_ms=late_ms, dry_run=dry_run)
