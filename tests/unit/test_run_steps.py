"""effective_kind: a `run` becomes `overlap` when `changes.overlap` is due (`every` or `cron`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from mapsync import errors
from mapsync.run_steps import effective_kind
from mapsync.sheet import models
from mapsync.state.clock import stamp

UTC = dt.UTC
SEEDED: dict[str, Any] = {"seed": {"status": "done", "at": "2026-01-01T00:00:00Z"}}


def sheet(overlap: dict[str, Any]) -> models.Sheet:
    return models.Sheet.model_validate(
        {
            "version": 1,
            "connections": {"erp": {"url": "sqlite:///erp.db"}, "portal": {"url": "sqlite:///portal.db"}},
            "syncs": {
                "customers": {
                    "from": {"connection": "erp", "table": "customers"},
                    "to": {"connection": "portal", "table": "accounts"},
                    "key": {"from": "id", "to": "erp_id"},
                    "fields": {"nm": "name"},
                    "changes": {"method": "watermark", "column": "updated_at", "overlap": overlap},
                }
            },
        }
    )


def kind(s: models.Sheet, overlap_at: dt.datetime | None, now: dt.datetime) -> str:
    cursors = {**SEEDED, **({} if overlap_at is None else {"overlap_at": stamp(overlap_at)})}
    return effective_kind(s, "customers", "run", cursors, again=False, now=now)


def test_cron_overlap_is_due_once_a_slot_has_passed_since_the_last() -> None:
    s = sheet({"cron": "0 2 * * *", "timezone": "Europe/Berlin", "window": "26h"})
    last = dt.datetime(2026, 1, 10, 1, 0, 5, tzinfo=UTC)  # 02:00:05 Berlin: just after a slot
    assert kind(s, None, last) == "overlap"  # never ran: due
    assert kind(s, last, dt.datetime(2026, 1, 11, 0, 59, tzinfo=UTC)) == "run"  # 01:59 Berlin
    assert kind(s, last, dt.datetime(2026, 1, 11, 1, 0, tzinfo=UTC)) == "overlap"  # 02:00 Berlin
    # a daemon down for days still runs one overlap, not one per missed slot
    assert kind(s, last, dt.datetime(2026, 1, 15, 12, tzinfo=UTC)) == "overlap"


def test_every_overlap_counts_from_the_last_one_as_before() -> None:
    s = sheet({"every": "1d"})
    last = dt.datetime(2026, 1, 10, 13, 7, tzinfo=UTC)
    assert kind(s, last, last + dt.timedelta(hours=23, minutes=59)) == "run"
    assert kind(s, last, last + dt.timedelta(days=1)) == "overlap"


def test_no_automatic_overlap_and_other_kinds_are_left_alone() -> None:
    s = sheet({"window": "24h"})
    assert kind(s, None, dt.datetime(2026, 1, 1, tzinfo=UTC)) == "run"
    cron = sheet({"cron": "* * * * *"})
    now = dt.datetime(2026, 1, 1, tzinfo=UTC)
    assert effective_kind(cron, "customers", "retry", dict(SEEDED), again=False, now=now) == "retry"
    with pytest.raises(errors.StateError, match="has not been seeded"):
        effective_kind(cron, "customers", "run", {}, again=False, now=now)
