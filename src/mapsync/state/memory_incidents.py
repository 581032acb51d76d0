"""The in-memory store's incidents and alert outbox (port `Incidents`): the semantics of
state/incidents.py over the tables of state/memory_tables.py."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

from mapsync.state.clock import stamp, utcnow
from mapsync.state.data import Finding, Incident, Notification
from mapsync.state.incidents import (
    claimable,
    incident_of,
    new_incident_row,
    notice_rows,
    notification_of,
    refresh_of,
    remind_due,
)
from mapsync.state.memory_tables import Memory, Tables


def _queue(t: Tables, incident_id: int, kind: str, channels: Sequence[str], now: str) -> None:
    for row in notice_rows(incident_id, kind, channels, now):
        nid = t.next_id("notifications")
        t.notifications[nid] = {"id": nid, **row}


def _open_id(t: Tables, key: str) -> int | None:
    return next((i for i, r in t.incidents.items() if r["open_key"] == key), None)


class MemoryIncidents:
    def __init__(self, memory: Memory) -> None:
        self.memory = memory

    def raise_incident(self, finding: Finding, channels: Sequence[str]) -> tuple[Incident, bool]:
        now = stamp()
        with self.memory.tx() as t:
            found = _open_id(t, finding.key)
            if found is not None:
                t.incidents[found] = {**t.incidents[found], **refresh_of(finding, now)}
                return incident_of(t.incidents[found]), False
            iid = t.next_id("incidents")
            t.incidents[iid] = {"id": iid, **new_incident_row(finding, channels, now)}
            _queue(t, iid, "opened", channels, now)
            return incident_of(t.incidents[iid]), True

    def clear_incident(self, key: str) -> Incident | None:
        now = stamp()
        with self.memory.tx() as t:
            found = _open_id(t, key)
            if found is None:
                return None
            row = {**t.incidents[found], "open_key": None, "status": "resolved", "resolved_at": now}
            t.incidents[found] = row
            _queue(t, found, "resolved", json.loads(row["channels"] or "[]"), now)
            return incident_of(row)

    def open_incidents(self, sync: str | None = None) -> list[Incident]:
        with self.memory.read() as t:
            rows = [r for _, r in sorted(t.incidents.items()) if r["status"] == "open"]
        return [incident_of(r) for r in rows if sync is None or r["sync"] == sync]

    def incidents(
        self, *, sync: str | None = None, limit: int = 100, include_resolved: bool = True
    ) -> list[Incident]:
        with self.memory.read() as t:
            rows = [r for _, r in sorted(t.incidents.items(), reverse=True)]
        rows = [
            r
            for r in rows
            if (sync is None or r["sync"] == sync) and (include_resolved or r["status"] == "open")
        ]
        return [incident_of(r) for r in rows[:limit]]

    def incident(self, incident_id: int) -> Incident | None:
        with self.memory.read() as t:
            row = t.incidents.get(incident_id)
        return incident_of(row) if row is not None else None

    def _set_open(self, incident_id: int, **values: object) -> bool:
        with self.memory.tx() as t:
            row = t.incidents.get(incident_id)
            if row is None or row["status"] != "open":
                return False
            t.incidents[incident_id] = {**row, **values}
            return True

    def ack(self, incident_id: int, by: str) -> bool:
        return self._set_open(incident_id, acked_by=by, acked_at=stamp())

    def silence(self, incident_id: int, until: dt.datetime, by: str) -> bool:
        return self._set_open(incident_id, silenced_by=by, silenced_until=stamp(until))

    def queue_reminders(self, every: dt.timedelta) -> list[int]:
        now, cutoff = stamp(), stamp(utcnow() - every)
        reminded: list[int] = []
        with self.memory.tx() as t:
            for iid, row in sorted(t.incidents.items()):
                if remind_due(row, now, cutoff):
                    t.incidents[iid] = {**row, "reminded_at": now}
                    _queue(t, iid, "reminder", json.loads(row["channels"] or "[]"), now)
                    reminded.append(iid)
        return reminded

    def claim_notifications(self, claimer: str, hold: dt.timedelta, limit: int) -> list[Notification]:
        now, until = stamp(), stamp(utcnow() + hold)
        with self.memory.tx() as t:
            pending = [r for _, r in sorted(t.notifications.items()) if r["status"] == "pending"]
            got = claimable(pending, now, limit)
            for row in got:
                t.notifications[row["id"]] = {**row, "claimed_by": claimer, "claimed_until": until}
        return [notification_of(r) for r in got]

    def _finish(self, notification_id: int, claimer: str, **values: object) -> bool:
        with self.memory.tx() as t:
            row = t.notifications.get(notification_id)
            if row is None or row["status"] != "pending" or row["claimed_by"] != claimer:
                return False
            t.notifications[notification_id] = {
                **row,
                "attempts": row["attempts"] + 1,
                "claimed_by": None,
                "claimed_until": None,
                **values,
            }
            return True

    def notification_sent(self, notification_id: int, claimer: str) -> bool:
        return self._finish(notification_id, claimer, status="sent", sent_at=stamp())

    def notification_failed(
        self, notification_id: int, claimer: str, error: str, retry_at: dt.datetime | None
    ) -> bool:
        if retry_at is None:
            return self._finish(notification_id, claimer, status="failed", last_error=error)
        return self._finish(notification_id, claimer, last_error=error, next_at=stamp(retry_at))

    def notifications(self, incident_id: int | None = None, limit: int = 100) -> list[Notification]:
        with self.memory.read() as t:
            rows = [r for _, r in sorted(t.notifications.items(), reverse=True)]
        rows = [r for r in rows if incident_id is None or r["incident_id"] == incident_id]
        return [notification_of(r) for r in rows[:limit]]
