"""The alert channels: `log` (one structured line), `email` (SMTP, STARTTLS or SSL with the
server's certificate and host name verified, AUTH when given) and `webhook` (a JSON POST, Slack's
`text` body by default, optionally signed with HMAC-SHA256).

A failed send raises `ChannelError` with a text that is safe to show and store: redacted with the
sheet's secrets, and for a webhook never the URL (it carries a token) nor any piece of it."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import smtplib
import ssl
import time
import urllib.parse
from collections.abc import Iterable
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from mapsync.alerts.render import Notice
from mapsync.redact import redact
from mapsync.sheet.alert_models import Channel, EmailChannel, LogChannel, WebhookChannel

log = logging.getLogger("mapsync.alerts")
LEVELS = {"error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO}
SIGNATURE = "X-Mapsync-Signature"
DOMAIN = "mapsync.invalid"  # of the Message-IDs
TOKEN_LENGTH = 16  # a webhook URL's path segment this long is taken for a token


class ChannelError(Exception):
    """A send failed; the text is redacted (no secret, no webhook URL)."""


def context(ca_file: str | None, folder: Path) -> ssl.SSLContext:
    """A verifying TLS context: the system's CAs, or `ca_file` (relative to the sheet's folder)."""
    cafile = str(folder / ca_file) if ca_file else None
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ChannelError(f"cannot read ca_file {ca_file}: {type(exc).__name__}: {exc}") from None


def send(name: str, channel: Channel, notice: Notice, folder: Path, secrets: Iterable[str]) -> None:
    """Send `notice` through channel `name`; raises `ChannelError` (redacted) when it fails."""
    secrets = tuple(secrets)
    try:
        if channel.email is not None:
            send_email(channel.email, notice, folder)
        elif channel.webhook is not None:
            send_webhook(channel.webhook, notice, folder)
        elif channel.log is not None:
            send_log(name, channel.log, notice)
    except ChannelError as exc:
        raise ChannelError(_safe(str(exc), channel, secrets)) from None
    except Exception as exc:  # any failure of a channel is that channel's
        raise ChannelError(_safe(f"{type(exc).__name__}: {exc}", channel, secrets)) from None


def _safe(text: str, channel: Channel, secrets: tuple[str, ...]) -> str:
    """`text` redacted; for a webhook also without its URL's long path segments and query (a token
    as `/hooks/<token>` or `?token=`), even where the URL is not quoted whole."""
    extra: list[str] = []
    if channel.webhook is not None:
        url = urllib.parse.urlsplit(channel.webhook.url)
        extra = [channel.webhook.url, *(p for p in url.path.split("/") if len(p) >= TOKEN_LENGTH)]
        if len(url.query) >= TOKEN_LENGTH // 2:
            extra.append(url.query)
    return redact(text, (*secrets, *extra), cap=500)


def send_log(name: str, cfg: LogChannel, notice: Notice) -> None:
    p = notice.payload
    log.log(
        LEVELS[cfg.level],
        "alert",
        extra={
            "action": "alert",
            "channel": name,
            "kind": p["kind"],
            "incident": p["incident"],
            "monitor": p["monitor"],
            "sync": p["sync"],
            "severity": p["severity"],
            "failure_class": p["failure_class"],
            "owner": p["owner"],
            "alert": notice.subject,
            "runbook": p["runbook"],
        },
    )


def message(cfg: EmailChannel, notice: Notice) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = f"{cfg.subject_prefix} {notice.subject}".strip()
    msg["From"] = cfg.from_
    msg["To"] = ", ".join(cfg.to)
    msg["Date"] = formatdate(localtime=False)
    thread = thread_id(notice)
    if thread is not None and notice.payload["kind"] == "opened":
        msg["Message-ID"] = thread
    else:
        msg["Message-ID"] = make_msgid(domain=DOMAIN)
    if thread is not None and notice.payload["kind"] != "opened":  # a mail client threads them
        msg["In-Reply-To"] = thread
        msg["References"] = thread
    if notice.payload.get("incident"):
        msg["X-Mapsync-Incident"] = str(notice.payload["incident"])
    msg["X-Mapsync-Kind"] = str(notice.payload["kind"])
    msg.set_content(notice.text)
    return msg


def thread_id(notice: Notice) -> str | None:
    """The Message-ID of an incident's opening e-mail (its reminders and resolution refer to it):
    the same for every sender, unique per sheet and incident."""
    p = notice.payload
    if not p.get("incident"):
        return None
    digest = hashlib.sha256(
        f"{p['sheet']}|{p['incident']}|{p['monitor']}|{p['sync']}|{p['subject']}".encode()
    ).hexdigest()[:20]
    return f"<incident-{p['incident']}.{digest}@{DOMAIN}>"


def send_email(cfg: EmailChannel, notice: Notice, folder: Path) -> None:
    timeout = cfg.timeout.total_seconds()
    port = cfg.smtp_port()
    where = f"{cfg.host}:{port}"
    smtp: smtplib.SMTP
    try:
        if cfg.tls == "ssl":
            smtp = smtplib.SMTP_SSL(cfg.host, port, timeout=timeout, context=context(cfg.ca_file, folder))
        else:
            smtp = smtplib.SMTP(cfg.host, port, timeout=timeout)
        with smtp:
            if cfg.tls == "starttls":
                smtp.starttls(context=context(cfg.ca_file, folder))  # certificate and host name verified
            if cfg.username is not None and cfg.password is not None:
                smtp.login(cfg.username, cfg.password)
            refused = smtp.send_message(message(cfg, notice))
    except ChannelError:
        raise
    except (smtplib.SMTPException, OSError) as exc:
        raise ChannelError(f"email via {where}: {type(exc).__name__}: {exc}") from None
    if refused:
        raise ChannelError(f"email via {where}: refused recipients {', '.join(sorted(refused))}")


def body(cfg: WebhookChannel, notice: Notice) -> bytes:
    """The POST body: Slack's `{"text": …}` plus the fields, or the fields alone (`format: json`)."""
    data = (
        {"text": f"{notice.subject}\n\n{notice.text}", **notice.payload}
        if cfg.format == "slack"
        else notice.payload
    )
    return json.dumps(data, separators=(",", ":"), sort_keys=True, default=str).encode()


def signature(secret: str, content: bytes, at: int) -> str:
    """`t=<unix>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>`."""
    digest = hmac.new(secret.encode(), f"{at}.".encode() + content, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def send_webhook(cfg: WebhookChannel, notice: Notice, folder: Path) -> None:
    import httpx  # only when a webhook is sent: `--help` and `validate` load no HTTP client

    content = body(cfg, notice)
    headers = {"Content-Type": "application/json", "User-Agent": "mapsync-alerts"}
    if cfg.secret:
        headers[SIGNATURE] = signature(cfg.secret, content, int(time.time()))
    timeout = cfg.timeout.total_seconds()
    try:
        with httpx.Client(
            timeout=timeout, verify=context(cfg.ca_file, folder), follow_redirects=False, trust_env=False
        ) as client:
            answer = client.post(cfg.url, content=content, headers=headers)
    except httpx.HTTPError as exc:
        # the exception may name the request's URL: only its class and a redacted text are kept
        raise ChannelError(f"webhook: {type(exc).__name__}: {exc}") from None
    if not 200 <= answer.status_code < 300:
        raise ChannelError(f"webhook answered HTTP {answer.status_code}")
