"""Web sessions and the operator audit log of a SQL state store (schema v9; ports `Sessions`,
`Audit`: `store.sessions`, `store.audit`). A session's token is handed to the browser once: only
its sha256 hex is stored, so a copy of the store opens no session. Times are the store's clock
(state/clock.py)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from typing import Any

import sqlalchemy as sa

from mapsync.state import schema
from mapsync.state.clock import stamp, unstamp, utcnow
from mapsync.state.faults import guarded


def token_hash(token: str) -> str:
    """The stored id of a session: the sha256 hex of its token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_session(user: str, ttl: dt.timedelta) -> tuple[str, dict[str, Any]]:
    """A new session's token and its row (token and CSRF token: `secrets.token_urlsafe(32)`)."""
    if ttl <= dt.timedelta(0):
        raise ValueError("a session lives for a positive time")
    token, now = secrets.token_urlsafe(32), utcnow()
    row = {
        "id_hash": token_hash(token),
        "user": user,
        "csrf": secrets.token_urlsafe(32),
        "created_at": stamp(now),
        "expires_at": stamp(now + ttl),
        "last_seen": stamp(now),
        "revoked_at": None,
    }
    return token, row


def live_view(row: Any, now: str) -> dict[str, Any] | None:
    """What `session()` hands out of a row: None when revoked or expired."""
    if row is None or row["revoked_at"] is not None or row["expires_at"] <= now:
        return None
    return {"user": row["user"], "csrf": row["csrf"], "expires_at": unstamp(row["expires_at"])}


def audit_entry(row: Any) -> dict[str, Any]:
    """An audit row as `actions()` hands it out (`detail` decoded)."""
    return {
        "id": int(row["id"]),
        "at": row["at"],
        "user": row["user"],
        "action": row["action"],
        "sync": row["sync"],
        "detail": json.loads(row["detail"]),
    }


def audit_row(user: str, action: str, sync: str | None, detail: dict[str, Any]) -> dict[str, Any]:
    if not action or len(action) > 64:
        raise ValueError("an audit action is 1 to 64 characters")
    return {
        "at": stamp(),
        "user": user,
        "action": action,
        "sync": sync,
        "detail": json.dumps(detail, default=str),
    }


class SqlSessions:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    @guarded
    def open_session(self, user: str, ttl: dt.timedelta) -> tuple[str, str]:
        """A new session of `user` for `ttl`: (token, csrf token)."""
        token, row = new_session(user, ttl)
        with self.engine.begin() as conn:
            conn.execute(sa.insert(schema.web_sessions).values(row))
        return token, row["csrf"]

    @guarded
    def session(self, token: str) -> dict[str, Any] | None:
        """{user, csrf, expires_at} of a live session (None: unknown, expired or revoked)."""
        s = schema.web_sessions
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(s).where(s.c.id_hash == token_hash(token))).mappings().first()
        return live_view(row, stamp())

    @guarded
    def touch_session(self, token: str) -> None:
        s = schema.web_sessions
        with self.engine.begin() as conn:
            conn.execute(sa.update(s).where(s.c.id_hash == token_hash(token)).values(last_seen=stamp()))

    @guarded
    def close_session(self, token: str) -> None:
        s = schema.web_sessions
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(s)
                .where(s.c.id_hash == token_hash(token), s.c.revoked_at.is_(None))
                .values(revoked_at=stamp())
            )

    @guarded
    def close_sessions(self, user: str | None = None) -> int:
        """Revoke every live session (of `user`, or all): how many."""
        s = schema.web_sessions
        where = [s.c.revoked_at.is_(None), s.c.expires_at > stamp()]
        if user is not None:
            where.append(s.c.user == user)
        with self.engine.begin() as conn:
            return int(conn.execute(sa.update(s).where(*where).values(revoked_at=stamp())).rowcount)


class SqlAudit:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    @guarded
    def record_action(self, user: str, action: str, sync: str | None, detail: dict[str, Any]) -> int:
        """Append what `user` did; the row's id."""
        with self.engine.begin() as conn:
            result = conn.execute(sa.insert(schema.audit_log).values(audit_row(user, action, sync, detail)))
            return int(result.inserted_primary_key[0])  # type: ignore[index]

    @guarded
    def actions(self, sync: str | None, limit: int) -> list[dict[str, Any]]:
        """Audit rows, newest first (of one sync, or all)."""
        a = schema.audit_log
        query = sa.select(a).order_by(a.c.id.desc()).limit(limit)
        if sync is not None:
            query = query.where(a.c.sync == sync)
        with self.engine.connect() as conn:
            return [audit_entry(row) for row in conn.execute(query).mappings()]
