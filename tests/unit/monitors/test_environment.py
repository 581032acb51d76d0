"""The sheet monitors over crafted facts: clocks, disk, the state store, failing alert channels;
and `store_trouble`, the finding for a store that cannot hold its own incident."""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import Any

import sqlalchemy as sa

from mapsync.monitors import REGISTRY
from mapsync.monitors.environment import store_trouble
from mapsync.monitors.facts import SheetFacts
from mapsync.sheet.monitor_models import MonitorsConfig, resolve
from mapsync.state import faults

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)


def facts(monitors: dict[str, Any] | None = None, **extra: Any) -> SheetFacts:
    return SheetFacts(NOW, resolve(MonitorsConfig.model_validate(monitors or {})), extra=extra)


def check(name: str, f: SheetFacts) -> Any:
    return REGISTRY[name].check(f)


def test_clock_skew_per_connection_either_way() -> None:
    assert check("clock_skew", facts()) is None
    assert check("clock_skew", facts(clocks={"erp": 29.0, "state": -1.0})) == []
    found = check(
        "clock_skew", facts({"clock_skew": "10s"}, clocks={"erp": 600.2, "state": -12.0, "crm": 3.0})
    )
    assert [(x.subject, x.sync) for x in found] == [("erp", None), ("state", None)]
    assert "connection erp's clock is 600.2s ahead of" in found[0].message
    assert "the state store's clock is 12.0s behind" in found[1].message
    assert found[0].numbers == {"skew_s": 600.2} and found[0].key == "clock_skew|*|erp"


def test_disk_free_below_the_threshold() -> None:
    assert check("disk_free", facts()) is None
    assert check("disk_free", facts({"disk_free_mb": 100}, disk_free_mb=100.0)) == []
    (found,) = check("disk_free", facts({"disk_free_mb": 100}, disk_free_mb=42.4))
    assert "only 42 MB free" in found.message and found.failure_class == "state"


def test_state_store_trouble_while_gathering() -> None:
    assert check("state_store", facts()) is None
    assert check("state_store", facts(store_trouble=None)) == []
    (found,) = check("state_store", facts(store_trouble="locked"))
    assert found.message.startswith("the state store is locked by another process")
    assert found.severity == "critical" and found.failure_class == "state"


def test_store_trouble_turns_a_store_failure_into_a_finding_without_its_text() -> None:
    cause = sa.exc.OperationalError("UPDATE x", {}, sqlite3.OperationalError("database is locked"))
    fault = faults.StoreFault("state store sqlite:////secret/path/state.db is locked", "locked", cause)
    found = store_trouble(fault)
    assert found.monitor == "state_store" and found.sync is None and found.key == "state_store|*|"
    assert "locked by another process" in found.message and "secret" not in found.message
    assert "locked by another" in store_trouble(cause).message  # classified from the driver's error
    assert "failed (unknown)" in store_trouble(RuntimeError("boom")).message


def test_channel_failing_after_n_in_a_row() -> None:
    assert check("channel_failing", facts()) is None
    assert (
        check("channel_failing", facts({"channel_failures": 3}, channel_failures={"ops": 2, "chat": 0})) == []
    )
    (found,) = check(
        "channel_failing", facts({"channel_failures": 3}, channel_failures={"ops": 3, "chat": 1})
    )
    assert (
        found.subject == "ops"
        and found.failure_class == "alerts"
        and "last 3 notice(s) failed" in found.message
    )
