"""The e-mail channel (alerts/channels.py) against a real SMTP server on loopback (aiosmtpd):
STARTTLS and SSL with the server's certificate verified against the sheet's `ca_file`, AUTH, plain
SMTP on loopback; an untrusted certificate is a failure that is recorded (redacted) and retried."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mapsync.alerts import channels as ch
from mapsync.alerts.render import render
from mapsync.alerts.sender import send_due
from mapsync.state.clock import utcnow
from tests.alert_world import CA, SmtpServer, alerts_sheet, load, make_ca, make_due, open_store, raise_finding

SmtpFactory = Callable[..., SmtpServer]


def _world(tmp_path: Path, channel: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    sheet = alerts_sheet(tmp_path, {"channels": {"ops": channel}}, state=f"sqlite:///{tmp_path}/state.db")
    loaded = load(sheet, env)
    return loaded, open_store(loaded)


def test_starttls_with_the_sheets_ca_delivers_one_message_per_notice(
    tmp_path: Path, smtp_server: SmtpFactory
) -> None:
    server = smtp_server("starttls")
    loaded, store = _world(tmp_path, server.channel(subject_prefix="[acme]"))
    try:
        incident = raise_finding(loaded, store)
        assert send_due(loaded, store, "a") == 1
        assert send_due(loaded, store, "a") == 0  # sent: never again
        (msg,) = server.messages
        assert msg["Subject"].startswith("[acme] CRITICAL failed_run on items: the last 3 runs")
        assert (msg["From"], msg["To"]) == ("mapsync@example.test", "ops@example.test")
        assert msg["X-Mapsync-Incident"] == str(incident.id) and msg["X-Mapsync-Kind"] == "opened"
        text = msg.get_content()
        assert "the destination system's owner" in text and "failures=3" in text
        assert f"mapsync alerts {loaded.path} ack {incident.id}" in text
        (sent,) = store.incidents.notifications(incident.id)
        assert (sent.status, sent.attempts, sent.last_error) == ("sent", 1, None)
    finally:
        store.close()


def test_an_untrusted_certificate_fails_redacted_and_is_retried_later(
    tmp_path: Path, smtp_server: SmtpFactory, tls_ca: CA
) -> None:
    other = make_ca(tmp_path, "other")
    server = smtp_server("starttls", ca=other)  # signed by a CA the sheet does not name
    loaded, store = _world(tmp_path, server.channel())
    try:
        incident = raise_finding(loaded, store)
        before = utcnow()
        assert send_due(loaded, store, "a") == 0
        assert server.messages == []
        (failed,) = store.incidents.notifications(incident.id)
        assert (failed.status, failed.attempts) == ("pending", 1)
        assert failed.last_error is not None and "CERTIFICATE_VERIFY_FAILED" in failed.last_error
        assert failed.next_at - before >= dt.timedelta(seconds=20)  # backoff: 30 s ± 20 %
        assert send_due(loaded, store, "a") == 0  # not due yet: no second try at once
        assert store.incidents.notifications(incident.id)[0].attempts == 1
        # the operator fixes the sheet (the right CA); the retry delivers it
        fixed, _ = _world(tmp_path, server.channel(ca_file=str(other.pem)))
        make_due(store)
        assert send_due(fixed, store, "a") == 1
        assert len(server.messages) == 1
        assert store.incidents.notifications(incident.id)[0].status == "sent"
    finally:
        store.close()


def test_ssl_from_the_first_byte(tmp_path: Path, smtp_server: SmtpFactory) -> None:
    server = smtp_server("ssl")
    loaded, store = _world(tmp_path, server.channel())
    try:
        raise_finding(loaded, store)
        assert send_due(loaded, store, "a") == 1
        assert len(server.messages) == 1
    finally:
        store.close()


def test_auth_password_is_never_shown(
    tmp_path: Path, smtp_server: SmtpFactory, canary: Callable[..., Any]
) -> None:
    password = "Sm7p-pa55:c4n@ry/x"
    server = smtp_server("starttls", auth=("alerts", password))
    channel = server.channel(username="alerts", password="${SMTP_PASSWORD}")
    loaded, store = _world(tmp_path, channel, {"SMTP_PASSWORD": password})
    c = canary(password)
    try:
        assert password in loaded.secrets
        raise_finding(loaded, store)
        assert send_due(loaded, store, "a") == 1
        assert len(server.messages) == 1 and server.refused_logins == []
        # a wrong password: refused by the server, recorded without the password
        wrong, _ = _world(tmp_path, channel, {"SMTP_PASSWORD": password + "-old"})
        c2 = canary(password + "-old")
        incident = raise_finding(wrong, store, _other())
        assert send_due(wrong, store, "a") == 0
        (failed,) = store.incidents.notifications(incident.id)
        assert failed.last_error is not None and "SMTPAuthenticationError" in failed.last_error
        assert server.refused_logins
        for check in (c, c2):
            check.text("last_error", failed.last_error)
            check.store(f"sqlite:///{tmp_path}/state.db")
            check.assert_clean()
    finally:
        store.close()


def test_plain_smtp_on_loopback(tmp_path: Path, smtp_server: SmtpFactory) -> None:
    server = smtp_server("none")
    loaded, store = _world(tmp_path, server.channel())
    try:
        raise_finding(loaded, store)
        assert send_due(loaded, store, "a") == 1
        assert len(server.messages) == 1
    finally:
        store.close()


def test_a_closed_port_is_a_channel_error_naming_the_server(tmp_path: Path, smtp_server: SmtpFactory) -> None:
    server = smtp_server("none")
    loaded, store = _world(tmp_path, {**server.channel(), "email": {**server.channel()["email"], "port": 1}})
    try:
        incident = raise_finding(loaded, store)
        notice = render(incident, "opened", loaded)
        channel = loaded.sheet.alerts.channels["ops"]
        try:
            ch.send("ops", channel, notice, loaded.folder, loaded.secrets)
        except ch.ChannelError as exc:
            assert "email via 127.0.0.1:1: ConnectionRefusedError" in str(exc)
        else:
            raise AssertionError("a closed port must fail")
    finally:
        store.close()


def _other() -> Any:
    import dataclasses

    from tests.alert_world import FAILED

    return dataclasses.replace(FAILED, monitor="auth_refused", subject="shop")
