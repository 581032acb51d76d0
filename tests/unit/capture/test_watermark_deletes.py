"""When `deletes_every` makes the watermark capture run its key-set delete check: a duration
since the last check, or a slot of its cron form since it."""

from __future__ import annotations

import datetime as dt
from typing import Any

from mapsync.capture.watermark import WatermarkCapture
from mapsync.sheet import models
from mapsync.state.clock import stamp

UTC = dt.UTC


def capture(deletes_every: Any) -> WatermarkCapture:
    """The capture's due-logic only: no source is needed to decide whether the check is due."""
    cap = WatermarkCapture.__new__(WatermarkCapture)
    cap.cfg = models.WatermarkChanges.model_validate(
        {"method": "watermark", "column": "updated_at", "deletes_every": deletes_every}
    )
    cap.ctx = None
    return cap


def test_cron_form_is_due_after_each_slot() -> None:
    cap = capture({"cron": "0 3 * * 0", "timezone": "Europe/Berlin"})  # Sundays 03:00 Berlin
    last = {"deletes_at": stamp(dt.datetime(2026, 1, 4, 2, 30, tzinfo=UTC))}  # Sunday, after the slot
    assert cap._deletes_due({}, now=dt.datetime(2026, 1, 5, tzinfo=UTC))  # never checked
    assert not cap._deletes_due(last, now=dt.datetime(2026, 1, 11, 1, 59, tzinfo=UTC))
    assert cap._deletes_due(last, now=dt.datetime(2026, 1, 11, 2, 0, tzinfo=UTC))


def test_duration_form_and_none() -> None:
    cap = capture("1d")
    at = dt.datetime(2026, 1, 4, 13, tzinfo=UTC)
    assert not cap._deletes_due({"deletes_at": stamp(at)}, now=at + dt.timedelta(hours=23))
    assert cap._deletes_due({"deletes_at": stamp(at)}, now=at + dt.timedelta(days=1))
    assert not capture(None)._deletes_due({}, now=at)
