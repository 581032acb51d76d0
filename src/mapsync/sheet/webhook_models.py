"""Sheet models of inbound webhooks (`webhook:` of a sync) and the `inbox` capture method."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, field_validator

from mapsync.sheet.base import ChangesModel, Model
from mapsync.sheet.duration import Duration

_HEADER = r"^[A-Za-z0-9-]{1,100}$"


class WebhookConfig(Model):
    """Push from the source application to `mapsync serve`: `POST /webhooks/<sync>`, signed with
    HMAC-SHA256 over `<timestamp>.<body>` with a shared secret. Accepted events are appended to
    the state store's inbox (read by `changes: {method: inbox}`) before the 202 is sent."""

    secret: str = Field(
        description=(
            "The shared signing secret, at least 16 characters. Write it as a `${VAR}` "
            "reference, never in the file."
        ),
    )
    signature_header: str = Field(
        "X-Mapsync-Signature",
        pattern=_HEADER,
        description=(
            "Header carrying the hex HMAC-SHA256 of `<timestamp>.<body>` (an optional `sha256=` "
            "prefix is accepted)."
        ),
    )
    timestamp_header: str = Field(
        "X-Mapsync-Timestamp",
        pattern=_HEADER,
        description="Header carrying the signing time in Unix seconds.",
    )
    event_id_header: str | None = Field(
        "X-Mapsync-Event-Id",
        pattern=_HEADER,
        description=(
            "Header carrying the sender's unique event id: an event seen before is answered "
            "`200 duplicate` and stored once. Without the header, the signature itself is the id."
        ),
    )
    tolerance: Duration = Field(
        dt.timedelta(minutes=5),
        description=(
            "How far the signing time may be from the receiver's clock (replays of old requests fail)."
        ),
    )
    max_body: int = Field(
        1_048_576, gt=0, le=64 * 1_048_576, description="Largest accepted request body, in bytes."
    )

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: str) -> str:
        if len(value) < 16:  # never echo the value: it is a secret
            raise ValueError("the secret needs at least 16 characters")
        return value


class InboxChanges(ChangesModel):
    """Changes pushed into the state store's inbox (by webhooks; `mapsync serve`). Each inbox
    item is `{"op": "upsert"|"delete", "key": {...}, "data": {...}}` or the whole source record;
    an upsert without `data` reads the row from the source by key (gone there → a delete)."""

    method: Literal["inbox"] = Field(description="`inbox`.")
    max_items: int = Field(
        10_000,
        gt=0,
        le=1_000_000,
        description=(
            "The most inbox items one run takes (in arrival order); the rest wait for the next run."
        ),
    )
    version_field: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description=(
            "A field of the pushed record (in `data`, the whole record, or the row read from the "
            "source; else the payload's `version`) whose value orders the events of one key: "
            "numbers, or timestamps as ISO text, larger is newer. Without it the signed timestamp "
            "orders them. An event older than the one last delivered for its key is not applied "
            "(inbox status `stale`)."
        ),
    )
