"""The in-memory store's web sessions and audit log (ports `Sessions`, `Audit`): the semantics
of state/sessions.py over the tables of state/memory_tables.py."""

from __future__ import annotations

import datetime as dt
from typing import Any

from mapsync.state.clock import stamp
from mapsync.state.memory_tables import Memory
from mapsync.state.sessions import audit_entry, audit_row, live_view, new_session, token_hash


class MemorySessions:
    def __init__(self, memory: Memory) -> None:
        self.memory = memory

    def open_session(self, user: str, ttl: dt.timedelta) -> tuple[str, str]:
        token, row = new_session(user, ttl)
        with self.memory.tx() as t:
            t.web_sessions[row["id_hash"]] = row
        return token, row["csrf"]

    def session(self, token: str) -> dict[str, Any] | None:
        with self.memory.read() as t:
            row = t.web_sessions.get(token_hash(token))
        return live_view(row, stamp())

    def touch_session(self, token: str) -> None:
        key = token_hash(token)
        with self.memory.tx() as t:
            if key in t.web_sessions:
                t.web_sessions[key] = {**t.web_sessions[key], "last_seen": stamp()}

    def close_session(self, token: str) -> None:
        key = token_hash(token)
        with self.memory.tx() as t:
            row = t.web_sessions.get(key)
            if row is not None and row["revoked_at"] is None:
                t.web_sessions[key] = {**row, "revoked_at": stamp()}

    def close_sessions(self, user: str | None = None) -> int:
        now = stamp()
        with self.memory.tx() as t:
            due = [
                k
                for k, r in t.web_sessions.items()
                if r["revoked_at"] is None and r["expires_at"] > now and (user is None or r["user"] == user)
            ]
            for k in due:
                t.web_sessions[k] = {**t.web_sessions[k], "revoked_at": now}
        return len(due)


class MemoryAudit:
    def __init__(self, memory: Memory) -> None:
        self.memory = memory

    def record_action(self, user: str, action: str, sync: str | None, detail: dict[str, Any]) -> int:
        row = audit_row(user, action, sync, detail)
        with self.memory.tx() as t:
            action_id = t.next_id("actions")
            t.actions[action_id] = {"id": action_id, **row}
        return action_id

    def actions(self, sync: str | None, limit: int) -> list[dict[str, Any]]:
        with self.memory.read() as t:
            rows = [r for r in t.actions.values() if sync is None or r["sync"] == sync]
        rows.sort(key=lambda r: -int(r["id"]))
        return [audit_entry(r) for r in rows[:limit]]
