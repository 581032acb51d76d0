"""An incident notice (opened, reminder, resolved) as a subject, a text and a JSON payload.

A notice says what happened (monitor, sync, message), how bad (severity), whose problem it is
(the failure class: a source or destination being down is that system's owner's; a tool, config
or state failure is mapsync's operator's), since when, the numbers, the runbook line, and how to
acknowledge or silence it. Names and counts only: a finding's message already holds record
values only when the sheet's `alerts.include_values` says so, and nothing here adds any. Every
text goes through `redact` with the sheet's secrets.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from mapsync.redact import redact
from mapsync.sheet.loader import LoadedSheet
from mapsync.state.clock import utcnow
from mapsync.state.data import Incident

OWNERS = {
    "source": "the source system's owner",
    "destination": "the destination system's owner",
}
OPERATOR = "mapsync's operator"
TITLES = {"opened": "", "reminder": "still open: ", "resolved": "resolved: "}


@dataclasses.dataclass(frozen=True)
class Notice:
    """What a channel sends: `subject` (one line), `text` (plain, several lines), `payload` (JSON)."""

    subject: str
    text: str
    payload: dict[str, Any]


def owner(failure_class: str) -> str:
    """Whose problem a failure class is."""
    return OWNERS.get(failure_class, OPERATOR)


def duration(delta: dt.timedelta) -> str:
    """`2d 3h`, `1h 5m`, `4m 10s`, `12s`: the two largest units."""
    seconds = max(0, int(delta.total_seconds()))
    parts = [(seconds // 86400, "d"), (seconds % 86400 // 3600, "h"), (seconds % 3600 // 60, "m")]
    parts.append((seconds % 60, "s"))
    shown = [f"{n}{unit}" for n, unit in parts if n]
    return " ".join(shown[:2]) or "0s"


def _clean(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {redact(str(k), secrets): _clean(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v, secrets) for v in value]
    return value


def render(incident: Incident, kind: str, loaded: LoadedSheet, now: dt.datetime | None = None) -> Notice:
    """The notice of `kind` (opened | reminder | resolved) for `incident` (id 0: not recorded yet,
    as the daemon's direct alert while the state store is away: no ack line)."""
    now = now or utcnow()
    until = incident.resolved_at if kind == "resolved" and incident.resolved_at else now
    lasted = until - incident.opened_at
    where = incident.sync or "the whole sheet"
    first = incident.message.splitlines()[0] if incident.message else incident.monitor
    subject = f"{TITLES.get(kind, '')}{incident.severity.upper()} {incident.monitor} on {where}: {first}"
    whose = owner(incident.failure_class)
    numbers = ", ".join(f"{k}={v}" for k, v in sorted(incident.numbers.items())) or "none"
    sheet = str(loaded.path)
    lines = [
        f"{'RESOLVED' if kind == 'resolved' else incident.severity.upper()}: {incident.monitor} on {where}",
        "",
        incident.message,
        "",
        f"Failure class: {incident.failure_class} ({whose})",
        f"Since:         {incident.opened_at.isoformat(timespec='seconds')} ({duration(lasted)})",
        f"Last seen:     {incident.last_seen_at.isoformat(timespec='seconds')}",
    ]
    if kind == "resolved" and incident.resolved_at is not None:
        lines.append(f"Resolved:      {incident.resolved_at.isoformat(timespec='seconds')}")
    lines.append(f"Numbers:       {numbers}")
    if incident.runbook:
        lines.append(f"Runbook:       {incident.runbook}")
    ack = silence = None
    if incident.id:
        lines.append(f"Incident:      {incident.id}")
    if incident.id and kind != "resolved":
        ack = f"mapsync alerts {sheet} ack {incident.id}"
        silence = f"mapsync alerts {sheet} silence {incident.id} --for 2h"
        lines += ["", f"Acknowledge: {ack}", f"Silence:     {silence}"]
    payload: dict[str, Any] = {
        "kind": kind,
        "incident": incident.id or None,
        "monitor": incident.monitor,
        "sync": incident.sync,
        "subject": incident.subject or None,
        "severity": incident.severity,
        "failure_class": incident.failure_class,
        "owner": whose,
        "message": incident.message,
        "numbers": incident.numbers,
        "runbook": incident.runbook or None,
        "opened_at": incident.opened_at.isoformat(),
        "last_seen_at": incident.last_seen_at.isoformat(),
        "resolved_at": incident.resolved_at.isoformat() if incident.resolved_at else None,
        "duration_s": round(lasted.total_seconds(), 3),
        "sheet": sheet,
        "ack": ack,
        "silence": silence,
    }
    secrets = loaded.secrets
    return Notice(
        subject=redact(subject, secrets, cap=200),
        text=redact("\n".join(lines), secrets),
        payload=_clean(payload, secrets),
    )
