"""Incidents and the alert outbox (schema v7; port `Incidents`), as `store.incidents`.

- **One incident per condition.** `raise_incident` opens the incident of a finding's key
  (monitor, sync, subject), or refreshes the open one (last seen, message, numbers). `open_key` is
  the key while the incident is open (NULL once resolved) and unique: two processes that find the
  same condition at once open one incident, and only the one that opened it queues its notices.
- **The outbox.** Opening, each reminder and the resolution queue one notification per channel in
  the same transaction as the incident's change, so a notice is never lost nor queued twice. A
  sender claims due notices for a while (`claim_notifications`: pending, due, not held by another
  claimer, and no earlier notice of the same incident to the same channel still pending: a
  channel hears "resolved" after "opened"), sends, and marks each sent or failed (with its next
  try, or given up). A sender that dies holding a claim lets it lapse; another sends it again.
- **Reminders** (`queue_reminders`): an open incident, neither acknowledged nor silenced, whose
  last notice is older than the interval; a conditional update, so one process reminds.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from mapsync import errors
from mapsync.state import schema
from mapsync.state.clock import stamp, unstamp, utcnow
from mapsync.state.data import Finding, Incident, Notification
from mapsync.state.faults import guarded


def _time(text: str | None) -> dt.datetime | None:
    return unstamp(text) if text else None


def incident_of(row: Any) -> Incident:
    """An incident row as the port hands it out."""
    return Incident(
        id=int(row["id"]),
        key=row["key"],
        monitor=row["monitor"],
        sync=row["sync"],
        subject=row["subject"] or "",
        severity=row["severity"],
        failure_class=row["failure_class"],
        message=row["message"],
        numbers=json.loads(row["numbers"]) if row["numbers"] else {},
        runbook=row["runbook"] or "",
        channels=tuple(json.loads(row["channels"] or "[]")),
        status=row["status"],
        opened_at=unstamp(row["opened_at"]),
        last_seen_at=unstamp(row["last_seen_at"]),
        resolved_at=_time(row["resolved_at"]),
        reminded_at=_time(row["reminded_at"]),
        acked_by=row["acked_by"],
        acked_at=_time(row["acked_at"]),
        silenced_by=row["silenced_by"],
        silenced_until=_time(row["silenced_until"]),
    )


def notification_of(row: Any) -> Notification:
    return Notification(
        id=int(row["id"]),
        incident_id=int(row["incident_id"]),
        kind=row["kind"],
        channel=row["channel"],
        status=row["status"],
        attempts=int(row["attempts"]),
        next_at=unstamp(row["next_at"]),
        created_at=unstamp(row["created_at"]),
        last_error=row["last_error"],
        sent_at=_time(row["sent_at"]),
    )


def new_incident_row(finding: Finding, channels: Sequence[str], now: str) -> dict[str, Any]:
    return {
        "key": finding.key,
        "open_key": finding.key,
        "monitor": finding.monitor,
        "sync": finding.sync,
        "subject": finding.subject or None,
        "severity": finding.severity,
        "failure_class": finding.failure_class,
        "message": finding.message,
        "numbers": json.dumps(finding.numbers, default=str, sort_keys=True),
        "runbook": finding.runbook or None,
        "channels": json.dumps(list(channels)),
        "status": "open",
        "opened_at": now,
        "last_seen_at": now,
        "resolved_at": None,
        "reminded_at": None,
        "acked_by": None,
        "acked_at": None,
        "silenced_by": None,
        "silenced_until": None,
    }


def refresh_of(finding: Finding, now: str) -> dict[str, Any]:
    """What a finding of an open incident updates (not its channels, its opening or its acks)."""
    return {
        "last_seen_at": now,
        "severity": finding.severity,
        "message": finding.message,
        "numbers": json.dumps(finding.numbers, default=str, sort_keys=True),
        "runbook": finding.runbook or None,
    }


def notice_rows(incident_id: int, kind: str, channels: Sequence[str], now: str) -> list[dict[str, Any]]:
    return [
        {
            "incident_id": incident_id,
            "kind": kind,
            "channel": channel,
            "status": "pending",
            "attempts": 0,
            "next_at": now,
            "last_error": None,
            "created_at": now,
            "sent_at": None,
            "claimed_by": None,
            "claimed_until": None,
        }
        for channel in channels
    ]


def remind_due(row: Any, now: str, cutoff: str) -> bool:
    """An open incident whose last notice is older than `cutoff`, neither acknowledged nor silenced."""
    last = row["reminded_at"] or row["opened_at"]
    silenced = row["silenced_until"] is not None and row["silenced_until"] > now
    return row["status"] == "open" and row["acked_at"] is None and not silenced and last < cutoff


def claimable(rows: Sequence[Any], now: str, limit: int) -> list[Any]:
    """Of the pending notices (in id order), those a sender may claim now: due, not held, and no
    earlier notice of the same incident to the same channel still pending."""
    blocked: set[tuple[int, str]] = set()
    out: list[Any] = []
    for row in rows:
        pair = (int(row["incident_id"]), row["channel"])
        held = row["claimed_until"] is not None and row["claimed_until"] > now
        if pair not in blocked and row["next_at"] <= now and not held:
            out.append(row)
        blocked.add(pair)
        if len(out) >= limit:
            break
    return out


class SqlIncidents:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def _insert_open(self, conn: sa.Connection, row: dict[str, Any]) -> int | None:
        """Insert an open incident unless one with its key is open already; its id, or None."""
        t = schema.incidents
        stmt: Any
        if self.engine.dialect.name == "postgresql":
            stmt = postgresql.insert(t).values(**row).on_conflict_do_nothing(index_elements=["open_key"])
        else:
            stmt = sqlite.insert(t).values(**row).on_conflict_do_nothing(index_elements=["open_key"])
        got = conn.execute(stmt.returning(t.c.id)).scalar()
        return int(got) if got is not None else None

    @guarded
    def raise_incident(self, finding: Finding, channels: Sequence[str]) -> tuple[Incident, bool]:
        t, now = schema.incidents, stamp()
        with self.engine.begin() as conn:
            for _ in range(3):  # an open one resolved between our insert and update: insert again
                new_id = self._insert_open(conn, new_incident_row(finding, channels, now))
                if new_id is not None:
                    rows = notice_rows(new_id, "opened", channels, now)
                    if rows:
                        conn.execute(sa.insert(schema.notifications), rows)
                    found = conn.execute(sa.select(t).where(t.c.id == new_id)).mappings().one()
                    return incident_of(found), True
                refresh = sa.update(t).where(t.c.open_key == finding.key).values(**refresh_of(finding, now))
                if conn.execute(refresh).rowcount:
                    found = conn.execute(sa.select(t).where(t.c.open_key == finding.key)).mappings().one()
                    return incident_of(found), False
        raise errors.StateError(
            f"incident {finding.key}: opened and resolved by others three times over", "conflict"
        )

    @guarded
    def clear_incident(self, key: str) -> Incident | None:
        t, now = schema.incidents, stamp()
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(t).where(t.c.open_key == key)).mappings().first()
            if row is None:
                return None
            done = conn.execute(
                sa.update(t)
                .where(t.c.id == row["id"], t.c.open_key == key)
                .values(open_key=None, status="resolved", resolved_at=now)
            ).rowcount
            if not done:
                return None  # another process resolved it first
            rows = notice_rows(int(row["id"]), "resolved", json.loads(row["channels"] or "[]"), now)
            if rows:
                conn.execute(sa.insert(schema.notifications), rows)
            return incident_of(conn.execute(sa.select(t).where(t.c.id == row["id"])).mappings().one())

    @guarded
    def open_incidents(self, sync: str | None = None) -> list[Incident]:
        t = schema.incidents
        q = sa.select(t).where(t.c.status == "open").order_by(t.c.id)
        if sync is not None:
            q = q.where(t.c.sync == sync)
        with self.engine.connect() as conn:
            return [incident_of(r) for r in conn.execute(q).mappings()]

    @guarded
    def incidents(
        self, *, sync: str | None = None, limit: int = 100, include_resolved: bool = True
    ) -> list[Incident]:
        t = schema.incidents
        q = sa.select(t).order_by(t.c.id.desc()).limit(limit)
        if sync is not None:
            q = q.where(t.c.sync == sync)
        if not include_resolved:
            q = q.where(t.c.status == "open")
        with self.engine.connect() as conn:
            return [incident_of(r) for r in conn.execute(q).mappings()]

    @guarded
    def incident(self, incident_id: int) -> Incident | None:
        t = schema.incidents
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.id == incident_id)).mappings().first()
        return incident_of(row) if row is not None else None

    @guarded
    def ack(self, incident_id: int, by: str) -> bool:
        t = schema.incidents
        with self.engine.begin() as conn:
            return bool(
                conn.execute(
                    sa.update(t)
                    .where(t.c.id == incident_id, t.c.status == "open")
                    .values(acked_by=by, acked_at=stamp())
                ).rowcount
            )

    @guarded
    def silence(self, incident_id: int, until: dt.datetime, by: str) -> bool:
        t = schema.incidents
        with self.engine.begin() as conn:
            return bool(
                conn.execute(
                    sa.update(t)
                    .where(t.c.id == incident_id, t.c.status == "open")
                    .values(silenced_by=by, silenced_until=stamp(until))
                ).rowcount
            )

    @guarded
    def queue_reminders(self, every: dt.timedelta) -> list[int]:
        t, now = schema.incidents, stamp()
        cutoff = stamp(utcnow() - every)
        reminded: list[int] = []
        with self.engine.begin() as conn:
            rows = conn.execute(sa.select(t).where(t.c.status == "open", t.c.acked_at.is_(None))).mappings()
            for row in [r for r in rows if remind_due(r, now, cutoff)]:
                same = (
                    t.c.reminded_at.is_(None)
                    if row["reminded_at"] is None
                    else t.c.reminded_at == row["reminded_at"]
                )
                moved = conn.execute(
                    sa.update(t)
                    .where(t.c.id == row["id"], t.c.status == "open", same)
                    .values(reminded_at=now)
                ).rowcount
                if not moved:
                    continue  # another process reminded first
                rows_ = notice_rows(int(row["id"]), "reminder", json.loads(row["channels"] or "[]"), now)
                if rows_:
                    conn.execute(sa.insert(schema.notifications), rows_)
                reminded.append(int(row["id"]))
        return reminded

    @guarded
    def claim_notifications(self, claimer: str, hold: dt.timedelta, limit: int) -> list[Notification]:
        n, now = schema.notifications, stamp()
        until = stamp(utcnow() + hold)
        claimed: list[Notification] = []
        with self.engine.begin() as conn:
            pending = (
                conn.execute(sa.select(n).where(n.c.status == "pending").order_by(n.c.id)).mappings().all()
            )
            for row in claimable(pending, now, limit):
                free = sa.or_(n.c.claimed_until.is_(None), n.c.claimed_until <= now)
                if conn.execute(
                    sa.update(n)
                    .where(n.c.id == row["id"], n.c.status == "pending", free)
                    .values(claimed_by=claimer, claimed_until=until)
                ).rowcount:
                    claimed.append(notification_of(row))
        return claimed

    @guarded
    def notification_sent(self, notification_id: int, claimer: str) -> bool:
        n = schema.notifications
        with self.engine.begin() as conn:
            return bool(
                conn.execute(
                    sa.update(n)
                    .where(n.c.id == notification_id, n.c.status == "pending", n.c.claimed_by == claimer)
                    .values(
                        status="sent",
                        sent_at=stamp(),
                        attempts=n.c.attempts + 1,
                        claimed_by=None,
                        claimed_until=None,
                    )
                ).rowcount
            )

    @guarded
    def notification_failed(
        self, notification_id: int, claimer: str, error: str, retry_at: dt.datetime | None
    ) -> bool:
        n = schema.notifications
        values: dict[str, Any] = {
            "attempts": n.c.attempts + 1,
            "last_error": error,
            "claimed_by": None,
            "claimed_until": None,
        }
        if retry_at is None:
            values["status"] = "failed"
        else:
            values["next_at"] = stamp(retry_at)
        with self.engine.begin() as conn:
            return bool(
                conn.execute(
                    sa.update(n)
                    .where(n.c.id == notification_id, n.c.status == "pending", n.c.claimed_by == claimer)
                    .values(**values)
                ).rowcount
            )

    @guarded
    def notifications(self, incident_id: int | None = None, limit: int = 100) -> list[Notification]:
        n = schema.notifications
        q = sa.select(n).order_by(n.c.id.desc()).limit(limit)
        if incident_id is not None:
            q = q.where(n.c.incident_id == incident_id)
        with self.engine.connect() as conn:
            return [notification_of(r) for r in conn.execute(q).mappings()]
