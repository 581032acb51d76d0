"""The webhook channel (alerts/channels.py) against a real HTTP(S) server on loopback: the Slack
body, the plain JSON body, the HMAC signature as a receiver checks it, TLS verified against the
sheet's `ca_file`; a non-2xx answer (a redirect too: none is followed) or a timeout is a failure,
retried with backoff; the URL (it carries a token) never shows in an error, a log or the store."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mapsync.alerts.channels import SIGNATURE
from mapsync.alerts.sender import send_due
from mapsync.state.clock import utcnow
from tests.alert_world import WebhookReceiver, alerts_sheet, load, make_due, open_store, raise_finding

Receivers = Callable[..., WebhookReceiver]
TOKEN = "T0k3nC4n4ryZq81xY7wV"


def _world(tmp_path: Path, hook: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    sheet = alerts_sheet(
        tmp_path, {"channels": {"chat": {"webhook": hook}}}, f"sqlite:///{tmp_path}/state.db"
    )
    loaded = load(sheet, env)
    return loaded, open_store(loaded)


def test_slack_body_carries_text_and_fields(tmp_path: Path, webhook_receiver: Receivers) -> None:
    receiver = webhook_receiver()
    loaded, store = _world(tmp_path, {"url": receiver.url()})
    try:
        incident = raise_finding(loaded, store)
        assert send_due(loaded, store, "a") == 1
        (req,) = receiver.requests
        body = req.json()
        assert body["text"].startswith("CRITICAL failed_run on items: the last 3 runs of items failed")
        assert "Runbook:" in body["text"] and f"ack {incident.id}" in body["text"]
        assert (body["incident"], body["kind"], body["monitor"], body["sync"]) == (
            incident.id,
            "opened",
            "failed_run",
            "items",
        )
        assert body["owner"] == "the destination system's owner" and body["numbers"] == {"failures": 3}
        assert req.headers["Content-Type"] == "application/json" and SIGNATURE not in req.headers
    finally:
        store.close()


def test_json_body_is_the_fields_and_the_hmac_verifies(tmp_path: Path, webhook_receiver: Receivers) -> None:
    receiver = webhook_receiver()
    secret = "s1gn-th1s-s3cr3t"
    loaded, store = _world(
        tmp_path,
        {"url": receiver.url(), "format": "json", "secret": "${HOOK_SECRET}"},
        {"HOOK_SECRET": secret},
    )
    try:
        raise_finding(loaded, store)
        assert send_due(loaded, store, "a") == 1
        (req,) = receiver.requests
        assert "text" not in req.json() and req.json()["severity"] == "critical"
        parts = dict(p.split("=", 1) for p in req.headers[SIGNATURE].split(","))
        expected = hmac.new(
            secret.encode(), parts["t"].encode() + b"." + req.body, hashlib.sha256
        ).hexdigest()
        assert hmac.compare_digest(parts["v1"], expected)
        assert abs(int(parts["t"]) - utcnow().timestamp()) < 60
        wrong = hmac.new(b"other", parts["t"].encode() + b"." + req.body, hashlib.sha256).hexdigest()
        assert parts["v1"] != wrong
    finally:
        store.close()


def test_https_verified_with_the_sheets_ca(tmp_path: Path, webhook_receiver: Receivers, tls_ca: Any) -> None:
    receiver = webhook_receiver(tls=True)
    loaded, store = _world(tmp_path, {"url": receiver.url(), "ca_file": str(tls_ca.pem)})
    try:
        raise_finding(loaded, store)
        assert send_due(loaded, store, "a") == 1
        assert len(receiver.requests) == 1
    finally:
        store.close()
    unverified, store = _world(tmp_path / "..", {"url": receiver.url()})  # the system's CAs: refused
    try:
        incident = raise_finding(unverified, store)
        assert send_due(unverified, store, "a") == 0
        (failed,) = store.incidents.notifications(incident.id)
        assert failed.last_error is not None and "CERTIFICATE_VERIFY_FAILED" in failed.last_error
    finally:
        store.close()


def test_a_500_is_retried_with_backoff_then_sent(tmp_path: Path, webhook_receiver: Receivers) -> None:
    receiver = webhook_receiver()
    loaded, store = _world(tmp_path, {"url": receiver.url()})
    try:
        incident = raise_finding(loaded, store)
        receiver.answer(500)
        before = utcnow()
        assert send_due(loaded, store, "a") == 0
        (failed,) = store.incidents.notifications(incident.id)
        assert (failed.status, failed.attempts, failed.last_error) == (
            "pending",
            1,
            "webhook answered HTTP 500",
        )
        assert 20 <= (failed.next_at - before).total_seconds() <= 40
        receiver.answer(503)
        make_due(store)
        assert send_due(loaded, store, "a") == 0
        second = store.incidents.notifications(incident.id)[0]
        assert second.attempts == 2 and (second.next_at - utcnow()).total_seconds() >= 45  # doubled
        make_due(store)
        assert send_due(loaded, store, "a") == 1
        assert len(receiver.requests) == 3
        assert store.incidents.notifications(incident.id)[0].status == "sent"
    finally:
        store.close()


def test_a_redirect_is_not_followed(tmp_path: Path, webhook_receiver: Receivers) -> None:
    receiver = webhook_receiver()
    loaded, store = _world(tmp_path, {"url": receiver.url()})
    try:
        incident = raise_finding(loaded, store)
        receiver.answer(302)
        assert send_due(loaded, store, "a") == 0
        assert store.incidents.notifications(incident.id)[0].last_error == "webhook answered HTTP 302"
        assert len(receiver.requests) == 1
    finally:
        store.close()


def test_the_url_and_its_token_never_show(
    tmp_path: Path, webhook_receiver: Receivers, canary: Callable[..., Any]
) -> None:
    receiver = webhook_receiver()
    url = receiver.url(f"/services/hooks/{TOKEN}")
    dead = f"http://127.0.0.1:1/services/hooks/{TOKEN}"  # nothing listens: a connection error
    sheet = alerts_sheet(
        tmp_path,
        {
            "channels": {
                "chat": {"webhook": {"url": "${CHAT_URL}", "timeout": "0.5s"}},
                "dead": {"webhook": {"url": "${DEAD_URL}"}},
            }
        },
        f"sqlite:///{tmp_path}/state.db",
    )
    loaded = load(sheet, {"CHAT_URL": url, "DEAD_URL": dead})
    store = open_store(loaded)
    c = canary(url, dead)
    try:
        receiver.answer(500)
        incident = raise_finding(loaded, store)
        assert send_due(loaded, store, "a") == 0
        receiver.stall(1.0)  # past the channel's timeout
        make_due(store)
        assert send_due(loaded, store, "a") == 0
        errors = [n.last_error or "" for n in store.incidents.notifications(incident.id)]
        assert any("ReadTimeout" in e for e in errors) and any("ConnectError" in e for e in errors)
        for error in errors:
            c.text("last_error", error)
            assert TOKEN not in error
        c.store(f"sqlite:///{tmp_path}/state.db")
        assert not any(TOKEN in line for line in c.logs())
        c.assert_clean()
    finally:
        store.close()
