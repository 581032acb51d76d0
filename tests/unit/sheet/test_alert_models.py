"""The `alerts:` models (sheet/alert_models.py): what the sheet may say of channels."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mapsync.sheet.alert_models import EmailChannel, WebhookChannel


def test_a_plain_http_webhook_only_on_loopback() -> None:
    assert WebhookChannel(url="http://127.0.0.1:9000/hook").url.startswith("http://")
    assert WebhookChannel(url="https://hooks.example.com/services/T/B/x").url.startswith("https://")
    with pytest.raises(ValidationError, match="only on loopback") as refused:
        WebhookChannel(url="http://hooks.example.com/services/T/B/s3cr3tTOKEN")
    assert "s3cr3tTOKEN" not in refused.value.errors()[0]["msg"]


def test_plain_smtp_only_on_loopback_and_login_in_pairs() -> None:
    base = {"from": "m@example.com", "to": "ops@example.com"}
    assert EmailChannel(host="127.0.0.1", tls="none", **base).smtp_port() == 25
    with pytest.raises(ValidationError, match="allowed only for a relay on loopback"):
        EmailChannel(host="smtp.example.com", tls="none", **base)
    with pytest.raises(ValidationError, match="together"):
        EmailChannel(host="smtp.example.com", username="u", **base)
    assert EmailChannel(host="smtp.example.com", tls="ssl", **base).smtp_port() == 465
