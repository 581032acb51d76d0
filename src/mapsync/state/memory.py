"""MemoryStore: the state store in plain dicts under a lock, for unit tests.

It implements every port of `StateStore` (`Store`, state/ports.py) with the same semantics, held
to them by the contract suite (tests/contract/), which runs every test against SQLite,
PostgreSQL and this store: the lease-fenced batch commit (a stale token is refused and nothing
is written), the ledger, cursors with their audit, runs, record errors and unmapped values, call
budgets, leases, the inbox and async jobs, operator controls (pause, run requests), and the
history views. Values are kept as the SQL
store keeps them (typed JSON text, key text, stamps; state/memory_tables.py), and the shared
rules (unmapped values, record error rows, the page comparison) are the SQL store's own
functions, so what a test reads back is what the SQL store would give.

Not in memory: nothing survives the process, there is no `open` (no migrations, no repair of
abandoned runs; `StateStore.open` is the one that repairs) and no store faults to retry.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from mapsync import crash, errors, records
from mapsync.state import memory_attempts, unmapped, values
from mapsync.state.clock import stamp, utcnow
from mapsync.state.data import Attempt, Counts, LedgerEntry
from mapsync.state.ledger import DELETED_HASH, Buckets, bucket_test, compare_found
from mapsync.state.memory_budget import MemoryBudgetMixin
from mapsync.state.memory_controls import MemoryControlsMixin
from mapsync.state.memory_incidents import MemoryIncidents
from mapsync.state.memory_observations import MemoryObservations
from mapsync.state.memory_ports import MemoryHistory, MemoryInbox, MemoryJobs, MemoryLeases
from mapsync.state.memory_reconciliation import MemoryReconciliation
from mapsync.state.memory_rollups import MemoryRollups
from mapsync.state.memory_runs import COUNTS, MemoryRunsMixin
from mapsync.state.memory_sessions import MemoryAudit, MemorySessions
from mapsync.state.memory_tables import Memory, Tables
from mapsync.state.memory_workers import MemoryWorkers
from mapsync.state.record_errors import error_row, kept_dead
from mapsync.state.runs import default_worker
from mapsync.state.unmapped import GONE


class MemoryStore(MemoryRunsMixin, MemoryBudgetMixin, MemoryControlsMixin):
    """A state store in memory (port `Store`): one per test, gone with the process."""

    def __init__(self) -> None:
        self.memory = Memory()
        self.worker: str | None = default_worker()
        self.fingerprint: str | None = None
        self.leases = MemoryLeases(self.memory)
        self.inbox = MemoryInbox(self.memory)
        self.jobs = MemoryJobs(self.memory)
        self.history = MemoryHistory(self.memory)
        self.workers = MemoryWorkers(self.memory)
        self.incidents = MemoryIncidents(self.memory)
        self.observations = MemoryObservations(self.memory)
        self.attempts = memory_attempts.MemoryAttempts(self.memory)
        self.rollups = MemoryRollups(self.memory)
        self.reconciliation = MemoryReconciliation(self.memory)
        self.sessions = MemorySessions(self.memory)
        self.audit = MemoryAudit(self.memory)

    def close(self) -> None:
        """Nothing to release (the tables stay readable)."""

    def ping(self) -> None:
        """Always reachable."""

    # ----------------------------------------------------------------- cursors

    def cursor(self, sync: str, name: str) -> Any:
        with self.memory.read() as t:
            return values.decode(t.cursors.get((sync, name)))

    def cursors(self, sync: str) -> dict[str, Any]:
        with self.memory.read() as t:
            return {name: values.decode(text) for (s, name), text in t.cursors.items() if s == sync}

    def set_cursors(self, sync: str, new: dict[str, Any], run_id: int | None = None) -> None:
        with self.memory.tx() as t:
            _set_cursors(t, sync, run_id, new, stamp())

    # ----------------------------------------------------------------- ledger

    def ledger(self, sync: str, keys: Iterable[records.Key]) -> dict[records.Key, LedgerEntry]:
        wanted = {records.key_text(k): k for k in keys}
        with self.memory.read() as t:
            found = {text: t.ledger.get((sync, text)) for text in wanted}
        return {
            wanted[text]: LedgerEntry(values.decode(e[0]), e[1], e[2], e[3])
            for text, e in found.items()
            if e is not None
        }

    def ledger_count(self, sync: str) -> int:
        with self.memory.read() as t:
            return sum(1 for (s, _), e in t.ledger.items() if s == sync and not e[3])

    def ledger_page(self, sync: str, texts: list[str]) -> dict[str, tuple[str | None, bool]]:
        with self.memory.read() as t:
            found = {text: t.ledger.get((sync, text)) for text in texts}
        return {k: (e[0], e[3] or e[1] == DELETED_HASH) for k, e in found.items() if e is not None}

    def _live(self, sync: str) -> list[tuple[str, str | None]]:
        with self.memory.read() as t:
            return [
                (k, e[0]) for (s, k), e in t.ledger.items() if s == sync and not e[3] and e[1] != DELETED_HASH
            ]

    def live_count(self, sync: str) -> int:
        return len(self._live(sync))

    def live_scan(self, sync: str, page: int, *, versions: bool) -> Iterator[list[Any]]:
        live = [row if versions else row[:1] for row in self._live(sync)]  # one snapshot
        for i in range(0, len(live), page):
            yield live[i : i + page]

    def compare_page(
        self, sync: str, texts: list[str], hashes: Sequence[str | None], *, hashed: bool
    ) -> list[tuple[int, bool]]:
        if not texts:
            return []
        return compare_found(self.ledger_page(sync, texts), texts, hashes, hashed=hashed)

    def ledger_owners(self, sync: str, dest_ids: Sequence[str]) -> dict[str, records.Key]:
        wanted = set(dest_ids)
        with self.memory.read() as t:
            return {
                e[2]: tuple(values.decode(k))
                for (s, k), e in t.ledger.items()
                if s == sync and e[2] in wanted and not e[3]
            }

    def drift_scan(
        self, sync: str, page: int, buckets: Buckets | None = None
    ) -> Iterator[list[tuple[str, str | None, str | None, bool]]]:
        with self.memory.read() as t:  # one snapshot
            rows = [
                (k, *t.ledger_drift.get((s, k), (None, None)), e[3] or e[1] == DELETED_HASH)
                for (s, k), e in t.ledger.items()
                if s == sync
            ]
        if buckets is not None:
            keep = bucket_test(buckets)
            rows = [r for r in rows if keep(r[1])]
        for i in range(0, len(rows), page):
            yield rows[i : i + page]

    def set_drift(self, sync: str, entries: Mapping[str, tuple[str, str, str]]) -> int:
        with self.memory.tx() as t:
            held = [
                k
                for k, (_, _, hash_) in entries.items()
                if (e := t.ledger.get((sync, k))) is not None
                and e[1] == hash_
                and (sync, k) not in t.ledger_drift
            ]
            for k in held:
                t.ledger_drift[(sync, k)] = entries[k][:2]
        return len(held)

    # ----------------------------------------------------------------- the commit

    def commit(
        self,
        *,
        sync: str,
        token: str,
        run_id: int,
        delivered: Sequence[records.Delivered],
        rejected: Sequence[records.Rejection],
        cursors: dict[str, Any],
        counts: Counts,
        lease_ttl: dt.timedelta,
        attempts: Sequence[Attempt] = (),
        columns: records.DeliveredColumns | None = None,
    ) -> list[dict[str, Any]]:
        """One batch's outcome, all or nothing, fenced by the lease token (see StateStore.commit)."""
        now = stamp()
        new_values: list[dict[str, Any]] = []
        with self.memory.tx() as t:
            lease = t.leases.get(sync)
            if lease is None or lease["token"] != token:
                raise errors.LeaseLost(f"sync {sync}: lease lost to another process; batch result discarded")
            t.leases[sync] = {**lease, "expires_at": stamp(utcnow() + lease_ttl)}
            if delivered:
                latest = {records.key_text(d.key): d for d in delivered}  # last wins
                for key, d in latest.items():
                    t.ledger[(sync, key)] = (values.encode(d.version), d.hash, d.dest_id, d.op == "delete")
                    t.ledger_at[(sync, key)] = now
                    if d.drift == records.NO_DRIFT and d.op != "delete":  # written undigested
                        t.ledger_drift.pop((sync, key), None)
                    elif d.drift is not None and d.op != "delete":  # else the stored pair is kept
                        t.ledger_drift[(sync, key)] = d.drift
                    error = t.errors.get((sync, key))
                    if error is not None and error["resolved_at"] is None:
                        t.errors[(sync, key)] = {**error, "resolved_at": now}
            for key, version, hash_, dest_id, pair in (
                zip(
                    columns.keys,
                    columns.versions,
                    columns.hashes,
                    columns.dest_ids,
                    columns.drift,
                    strict=True,
                )
                if columns
                else ()
            ):
                t.ledger[(sync, key)] = (values.encode(version), hash_, dest_id, False)
                t.ledger_at[(sync, key)] = now
                if pair == records.NO_DRIFT:
                    t.ledger_drift.pop((sync, key), None)
                elif pair is not None:  # else the stored pair is kept
                    t.ledger_drift[(sync, key)] = pair
                error = t.errors.get((sync, key))
                if error is not None and error["resolved_at"] is None:
                    t.errors[(sync, key)] = {**error, "resolved_at": now}
            if rejected:
                new_values = _record_unmapped(t, sync, rejected, now)  # before the errors: see there
                by_key = {records.key_text(r.key): r for r in rejected}
                rows = []
                for key, r in by_key.items():
                    old = t.errors.get((sync, key))
                    row = error_row(sync, key, r, (old["attempts"] if old else 0) + 1, run_id, now)
                    kept = {"first_seen": old["first_seen"]} if old else {}
                    rows.append({**row, **kept, "dead_at": kept_dead(old)})
                crash.point("during_error_record")
                for row in rows:
                    t.errors[(sync, row["key"])] = row
            if delivered or columns:
                _resolve_unmapped(t, sync, now)
            memory_attempts.write(t, sync, run_id, attempts, now)
            _set_cursors(t, sync, run_id, cursors, now)
            run = t.runs.get(run_id)
            if run is not None:
                t.runs[run_id] = {**run, **{c: run[c] + getattr(counts, c) for c in COUNTS}}
            crash.point("during_state_write")
        return new_values

    # ----------------------------------------------------------------- record errors

    def open_error_versions(self, sync: str) -> dict[str, str | None]:
        with self.memory.read() as t:
            return {
                records.key_text(tuple(values.decode(k))): e["version"]
                for (s, k), e in t.errors.items()
                if s == sync and e["resolved_at"] is None
            }

    def open_error_keys(
        self, sync: str, field: str | None = None, *, live_only: bool = False
    ) -> list[records.Key]:
        with self.memory.read() as t:
            texts = sorted(
                k
                for (s, k), e in t.errors.items()
                if s == sync
                and e["resolved_at"] is None
                and (field is None or e["field"] == field)
                and not (live_only and e["dead_at"] is not None)
            )
        return [tuple(values.decode(k)) for k in texts]

    def bury(self, sync: str, max_attempts: int) -> int:
        now = stamp()
        with self.memory.tx() as t:
            due = [
                key
                for key, e in t.errors.items()
                if key[0] == sync
                and e["resolved_at"] is None
                and e["dead_at"] is None
                and e["attempts"] >= max_attempts
            ]
            for key in due:
                t.errors[key] = {**t.errors[key], "dead_at": now}
        return len(due)

    def resolve_errors(self, sync: str, keys: Sequence[str] | None, by: str, note: str) -> int:
        change = {"resolved_at": stamp(), "resolved_by": by, "resolved_note": note}
        wanted = None if keys is None else set(keys)
        with self.memory.tx() as t:
            due = [
                key
                for key, e in t.errors.items()
                if key[0] == sync and e["resolved_at"] is None and (wanted is None or key[1] in wanted)
            ]
            for key in due:
                t.errors[key] = {**t.errors[key], **change}
        return len(due)

    def note_gone(self, sync: str, keys: Sequence[records.Key]) -> None:
        now = stamp()
        with self.memory.tx() as t:
            for text in {records.key_text(k) for k in keys}:
                e = t.errors.get((sync, text))
                if e is not None and e["resolved_at"] is None:
                    t.errors[(sync, text)] = {**e, "message": f"{GONE} ({now})", "last_seen": now}

    def unmapped_values(self, sync: str | None, include_resolved: bool = False) -> list[dict[str, Any]]:
        with self.memory.read() as t:
            rows = [
                dict(u)
                for u in t.unmapped.values()
                if (sync is None or u["sync"] == sync) and (include_resolved or u["resolved_at"] is None)
            ]
        rows.sort(key=lambda u: u["value"])
        rows.sort(key=lambda u: u["count"], reverse=True)
        rows.sort(key=lambda u: (u["sync"], u["field"]))
        return rows


# --------------------------------------------------------------------- inside a transaction


def _set_cursors(t: Tables, sync: str, run_id: int | None, new: dict[str, Any], now: str) -> None:
    """Cursor values that changed, each with an audit row (as StateStore._set_cursors)."""
    for name, value in new.items():
        text = values.encode(value) if value is not None else None
        old = t.cursors.get((sync, name))
        if old == text:
            continue
        t.cursors[(sync, name)] = text
        audit_id = t.next_id("audit")
        t.audit[audit_id] = {
            "id": audit_id,
            "sync": sync,
            "run_id": run_id,
            "name": name,
            "old_value": old,
            "new_value": text,
            "committed_at": now,
        }


def _record_unmapped(
    t: Tables, sync: str, rejected: Sequence[records.Rejection], now: str
) -> list[dict[str, Any]]:
    """Count the batch's unmapped values (unmapped.record); the ones seen for the first time."""
    relevant = [r for r in rejected if unmapped.is_unmapped(r)]
    if not relevant:
        return []
    keys = {records.key_text(r.key) for r in relevant}
    blocked = {
        (k, e["field"] or "", e["rule"] or "", e["value"])
        for (s, k), e in t.errors.items()
        if s == sync and k in keys and e["resolved_at"] is None and e["value"] is not None
    }
    batch = unmapped.tally(sync, relevant, blocked, now)
    fresh = []
    for ident, row in batch.items():
        old = t.unmapped.get((sync, *ident))
        if old is None:
            t.unmapped[(sync, *ident)] = dict(row)
            fresh.append(row)
        else:
            change = {"count": old["count"] + row["count"], "last_seen": now, "resolved_at": None}
            t.unmapped[(sync, *ident)] = {**old, **change}
    return fresh


def _resolve_unmapped(t: Tables, sync: str, now: str) -> None:
    """Close the open values of `sync` that no open record error carries any more."""
    carried = {
        (e["field"] or "", e["rule"] or "", e["value"])
        for (s, _), e in t.errors.items()
        if s == sync and e["resolved_at"] is None
    }
    for ident, u in list(t.unmapped.items()):
        if ident[0] == sync and u["resolved_at"] is None and ident[1:] not in carried:
            t.unmapped[ident] = {**u, "resolved_at": now}
