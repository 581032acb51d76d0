"""The in-memory store's workers and claims (port `Workers`): the semantics of state/workers.py
over the tables of state/memory_tables.py (one process, the machine's clock)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from mapsync.state import clock
from mapsync.state.claim_plan import plan
from mapsync.state.clock import stamp
from mapsync.state.data import Beat, WorkerInfo
from mapsync.state.memory_tables import Memory, Tables
from mapsync.state.workers import age, gone, one_daemon, worker_row


class MemoryWorkers:
    def __init__(self, memory: Memory) -> None:
        self.memory = memory

    def now(self) -> dt.datetime:
        return clock.utcnow()

    def register(self, me: WorkerInfo, ttl: dt.timedelta, *, alone: bool = False) -> str:
        token = uuid.uuid4().hex
        now = self.now()
        with self.memory.tx() as t:
            dead = [w for w, r in t.workers.items() if w != me.id and gone(r, now)]
            if alone:
                for w, row in t.workers.items():
                    if w != me.id and w not in dead:
                        raise one_daemon(row)
            _drop(t, [me.id, *dead])
            t.workers[me.id] = {**worker_row(me, token, now, ttl), "started_at": stamp(now)}
        return token

    def beat(self, me: WorkerInfo, token: str, ttl: dt.timedelta, busy: set[str]) -> Beat:
        now = self.now()
        with self.memory.tx() as t:
            row = t.workers.get(me.id)
            rejoined = row is None or row["token"] != token
            if rejoined:
                token = uuid.uuid4().hex
                _drop(t, [me.id])
                t.workers[me.id] = {**worker_row(me, token, now, ttl), "started_at": stamp(now)}
            else:
                t.workers[me.id] = {**worker_row(me, token, now, ttl), "started_at": row["started_at"]}  # type: ignore[index]
            expired = [w for w, r in t.workers.items() if w != me.id and gone(r, now)]
            _drop(t, expired)
            live = {w: set(json.loads(r["syncs"])) for w, r in t.workers.items()}
            claims = {s: r["worker"] for s, r in t.claims.items()}
            release, claim = plan(me.id, me.syncs, claims, live, busy)
            for s in release:
                t.claims.pop(s, None)
            for s in claim:
                t.claims.setdefault(s, {"sync": s, "worker": me.id, "token": token, "claimed_at": stamp(now)})
            owns = frozenset(s for s, r in t.claims.items() if r["worker"] == me.id and r["token"] == token)
        return Beat(token, owns, len(live), now, rejoined, tuple(expired))

    def leave(self, me: WorkerInfo, token: str) -> None:
        with self.memory.tx() as t:
            row = t.workers.get(me.id)
            if row is not None and row["token"] == token:
                _drop(t, [me.id])

    def overview(self) -> dict[str, Any]:
        now = stamp(self.now())
        with self.memory.read() as t:
            workers = [
                {
                    **{k: v for k, v in r.items() if k != "token"},
                    "syncs": json.loads(r["syncs"]),
                    "heartbeat_age_s": age(now, r["heartbeat_at"]),
                    "alive": r["expires_at"] >= now,
                    "owns": sorted(s for s, c in t.claims.items() if c["worker"] == r["id"]),
                    "running": [
                        {"sync": x["sync"], "run_id": i, "started_at": x["started_at"]}
                        for i, x in sorted(t.runs.items())
                        if x["status"] == "running" and x.get("worker") == r["id"]
                    ],
                }
                for r in sorted(t.workers.values(), key=lambda r: (r["started_at"], r["id"]))
            ]
            return {
                "now": now,
                "workers": workers,
                "claims": {s: c["worker"] for s, c in sorted(t.claims.items())},
            }


def _drop(t: Tables, ids: list[str]) -> None:
    """As `SqlWorkers._drop`: claims freed, unfinished requests back to the queue."""
    for w in ids:
        t.workers.pop(w, None)
    for s in [s for s, c in t.claims.items() if c["worker"] in ids]:
        del t.claims[s]
    for i, r in list(t.requests.items()):
        if r["status"] == "taken" and r["taken_by"] in ids:
            t.requests[i] = {**r, "status": "new", "taken_at": None, "taken_by": None}
