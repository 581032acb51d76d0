"""Rendering a notice (alerts/render.py): what happened, whose problem it is, since when, the
numbers, the runbook, the ack/silence commands; resolved and reminder titles; every text redacted
with the sheet's secrets; nothing but the incident's own fields (no values added)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

from mapsync.alerts.render import duration, owner, render
from mapsync.sheet.loader import LoadedSheet
from mapsync.state.data import Incident
from tests.alert_world import alerts_sheet, load

OPENED = dt.datetime(2026, 12, 3, 9, 0, tzinfo=dt.UTC)
INCIDENT = Incident(
    id=7,
    key="failed_run|items|",
    monitor="failed_run",
    sync="items",
    subject="",
    severity="critical",
    failure_class="source",
    message="3 runs of items failed: the source refused the login",
    numbers={"failures": 3, "rejected": 0},
    runbook="`mapsync runs SHEET --sync items`; check the ERP's credentials",
    channels=("ops",),
    status="open",
    opened_at=OPENED,
    last_seen_at=OPENED + dt.timedelta(minutes=30),
)


def _loaded(tmp_path: Path, env: dict[str, str] | None = None) -> LoadedSheet:
    alerts = {"channels": {"chat": {"webhook": {"url": "${CHAT_URL}"}}}}
    return load(alerts_sheet(tmp_path, alerts), env or {"CHAT_URL": "https://hooks.example.test/T0ken-42"})


def test_opened_says_what_whose_since_numbers_runbook_and_how_to_ack(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path)
    notice = render(INCIDENT, "opened", loaded, now=OPENED + dt.timedelta(hours=2, minutes=5))
    assert (
        notice.subject == "CRITICAL failed_run on items: 3 runs of items failed: the source refused the login"
    )
    text = notice.text
    assert "Failure class: source (the source system's owner)" in text
    assert "Since:         2026-12-03T09:00:00+00:00 (2h 5m)" in text
    assert "Numbers:       failures=3, rejected=0" in text
    assert "Runbook:       `mapsync runs SHEET --sync items`" in text
    sheet = tmp_path / "sheet.yaml"
    assert f"Acknowledge: mapsync alerts {sheet.resolve()} ack 7" in text
    assert f"Silence:     mapsync alerts {sheet.resolve()} silence 7 --for 2h" in text
    p = notice.payload
    assert (p["incident"], p["kind"], p["owner"], p["duration_s"]) == (
        7,
        "opened",
        "the source system's owner",
        7500.0,
    )
    assert p["numbers"] == {"failures": 3, "rejected": 0} and p["resolved_at"] is None


def test_reminder_and_resolved(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path)
    reminder = render(INCIDENT, "reminder", loaded)
    assert reminder.subject.startswith("still open: CRITICAL failed_run on items")
    done = dataclasses.replace(INCIDENT, status="resolved", resolved_at=OPENED + dt.timedelta(minutes=45))
    resolved = render(done, "resolved", loaded, now=OPENED + dt.timedelta(days=1))
    assert resolved.subject.startswith("resolved: CRITICAL failed_run on items")
    assert "Since:         2026-12-03T09:00:00+00:00 (45m)" in resolved.text  # lasted until resolved
    assert "Resolved:      2026-12-03T09:45:00+00:00" in resolved.text
    assert "Acknowledge" not in resolved.text and resolved.payload["ack"] is None


def test_whose_problem_and_durations() -> None:
    assert owner("destination") == "the destination system's owner"
    assert {owner(c) for c in ("tool", "config", "state", "lease", "alerts")} == {"mapsync's operator"}
    assert [duration(dt.timedelta(seconds=s)) for s in (0, 12, 250, 3900, 90061)] == [
        "0s",
        "12s",
        "4m 10s",
        "1h 5m",
        "1d 1h",
    ]


def test_secrets_are_redacted_everywhere(tmp_path: Path) -> None:
    password, url = "hunter2-s3cret", "https://hooks.example.test/T0ken-42"
    mail = {"host": "127.0.0.1", "tls": "none", "from": "a@b.test", "to": "c@d.test"}
    alerts = {
        "channels": {
            "chat": {"webhook": {"url": "${CHAT_URL}"}},
            "ops": {"email": {**mail, "username": "u", "password": "${SMTP_PASSWORD}"}},
        }
    }
    loaded = load(alerts_sheet(tmp_path, alerts), {"CHAT_URL": url, "SMTP_PASSWORD": password})
    leaky = dataclasses.replace(
        INCIDENT,
        message=f"login refused for password {password}; posting to {url} failed",
        runbook=f"rotate {password}",
        numbers={password: 1, "n": url},
        subject=password,
    )
    notice = render(leaky, "opened", loaded)
    shown = notice.subject + notice.text + json.dumps(notice.payload)
    assert password not in shown and url not in shown and "***" in notice.subject
    assert notice.payload["numbers"] == {"***": 1, "n": "***"}


def test_only_the_incidents_own_fields(tmp_path: Path) -> None:
    notice = render(INCIDENT, "opened", _loaded(tmp_path))
    assert set(notice.payload) == {
        "kind", "incident", "monitor", "sync", "subject", "severity", "failure_class", "owner", "message",
        "numbers", "runbook", "opened_at", "last_seen_at", "resolved_at", "duration_s", "sheet", "ack",
        "silence",
    }  # fmt: skip
    assert render(dataclasses.replace(INCIDENT, id=0), "opened", _loaded(tmp_path)).payload["ack"] is None
