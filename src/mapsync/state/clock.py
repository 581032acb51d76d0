"""The state store's clock: UTC now, and stamps as fixed-width text (text order is time order)."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def stamp(moment: dt.datetime | None = None) -> str:
    """ISO UTC text with fixed width, so that text order is time order."""
    return (moment or utcnow()).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
