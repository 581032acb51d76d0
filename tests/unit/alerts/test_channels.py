"""The channels' in-process parts (alerts/channels.py): the log channel's one structured line at
its level, the webhook bodies and signature, and the redaction of a failure's text (a webhook's
URL and its token-like path segments never survive, even when only the path is quoted)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from pathlib import Path

import pytest

from mapsync.alerts import channels as ch
from mapsync.alerts.render import Notice
from mapsync.sheet.alert_models import Channel, WebhookChannel

NOTICE = Notice(
    subject="CRITICAL lag on items: 12 minutes behind",
    text="CRITICAL: lag on items\n\n12 minutes behind",
    payload={
        "kind": "opened",
        "incident": 3,
        "monitor": "lag",
        "sync": "items",
        "severity": "critical",
        "failure_class": "source",
        "owner": "the source system's owner",
        "runbook": "look at the source",
    },
)


def test_the_log_channel_writes_one_line_at_its_level(caplog: pytest.LogCaptureFixture) -> None:
    channel = Channel.model_validate({"log": {"level": "error"}})
    with caplog.at_level(logging.INFO, logger="mapsync.alerts"):
        ch.send("journal", channel, NOTICE, Path("."), ())
    (record,) = caplog.records
    assert (record.getMessage(), record.levelno) == ("alert", logging.ERROR)
    fields = vars(record)
    assert fields["channel"] == "journal" and fields["incident"] == 3 and fields["monitor"] == "lag"
    assert fields["alert"] == NOTICE.subject and fields["owner"] == "the source system's owner"


def test_bodies_and_signature() -> None:
    slack = json.loads(ch.body(WebhookChannel.model_validate({"url": "https://h.test/x"}), NOTICE))
    assert slack["text"].startswith(NOTICE.subject + "\n\n") and slack["monitor"] == "lag"
    plain = json.loads(
        ch.body(WebhookChannel.model_validate({"url": "https://h.test/x", "format": "json"}), NOTICE)
    )
    assert plain == NOTICE.payload
    content = b'{"a":1}'
    sig = ch.signature("k3y-s3cret", content, 1700000000)
    expected = hmac.new(b"k3y-s3cret", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    assert sig == f"t=1700000000,v1={expected}"


def test_a_failure_never_shows_the_webhook_url_or_its_token(tmp_path: Path) -> None:
    token = "B07XYZ/abcdefghijklmnopqrstuvwx"
    url = f"https://hooks.slack.test/services/T000/{token}"
    channel = Channel.model_validate({"webhook": {"url": url, "ca_file": "missing.pem"}})
    with pytest.raises(ch.ChannelError) as failed:
        ch.send("chat", channel, NOTICE, tmp_path, (url,))
    assert "cannot read ca_file missing.pem" in str(failed.value)
    shown = ch._safe(f"POST {url} and /services/T000/{token} failed", channel, (url,))
    assert "abcdefghijklmnopqrstuvwx" not in shown and "hooks.slack.test/services" not in shown
    assert shown.startswith("POST *** and /services/T000/B07XYZ/***")
