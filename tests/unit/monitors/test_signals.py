"""The sync signal monitors over crafted facts: each finds its condition, names the subject and
counts (never a value or a credential), clears when the condition is gone, and cannot tell
(None) when its facts are unknown."""

from __future__ import annotations

import datetime as dt
from typing import Any

from mapsync.monitors import REGISTRY, evaluate_sync
from mapsync.monitors.facts import SyncFacts
from mapsync.sheet import models
from mapsync.sheet.monitor_models import MonitorsConfig, resolve

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
SHEET = models.Sheet.model_validate(
    {
        "version": 1,
        "connections": {"erp": {"url": "sqlite:///erp.db"}, "shop": {"url": "sqlite:///shop.db"}},
        "syncs": {
            "items": {
                "from": {"connection": "erp", "table": "items"},
                "to": {"connection": "shop", "table": "items_dst"},
                "key": {"from": "id", "to": "id"},
                "fields": {"name": "name"},
                "changes": {"method": "full"},
            }
        },
    }
)


def facts(monitors: dict[str, Any] | None = None, **extra: Any) -> SyncFacts:
    thresholds = resolve(MonitorsConfig.model_validate(monitors or {}))
    return SyncFacts("items", SHEET.syncs["items"], thresholds, NOW, extra=extra)


def check(name: str, f: SyncFacts) -> Any:
    return REGISTRY[name].check(f)


def test_unmapped_new_names_the_field_and_counts_never_the_value() -> None:
    seen = NOW - dt.timedelta(minutes=5)
    f = facts(unmapped=[{"field": "country", "values": 2, "records": 7, "newest": seen}])
    (found,) = check("unmapped_new", f)
    assert found.subject == "country" and found.sync == "items" and found.failure_class == "config"
    assert "2 unmapped value(s) blocking 7 record(s)" in found.message
    assert found.numbers == {"values": 2, "records": 7} and found.key == "unmapped_new|items|country"
    assert check("unmapped_new", facts(unmapped=[])) == []
    assert check("unmapped_new", facts()) is None


def test_capture_health_wal_slot_queue_and_triggers() -> None:
    assert check("capture_health", facts()) == []  # a `full` sync: no capture of its own to watch
    assert check("capture_health", facts(slot_state="ok", wal_retained_mb=10.0)) == []
    over = check("capture_health", facts({"wal_retained_mb": 5}, slot_state="ok", wal_retained_mb=12.5))
    assert [x.subject for x in over] == ["wal"] and "retains 12 MB" in over[0].message
    lost = check("capture_health", facts(slot_state="lost"))
    assert [x.subject for x in lost] == ["slot"] and "lost WAL" in lost[0].message
    assert "does not exist" in check("capture_health", facts(slot_state="missing"))[0].message
    queue = check("capture_health", facts(queue_table=False, triggers="missing", triggers_disabled=0))
    assert [x.subject for x in queue] == ["queue", "triggers"]
    (disabled,) = check("capture_health", facts(queue_table=True, triggers="installed", triggers_disabled=2))
    assert disabled.subject == "triggers" and "2 trigger(s) disabled" in disabled.message
    assert disabled.severity == "critical" and disabled.failure_class == "source"
    assert check("capture_health", facts(queue_table=True, triggers="installed", triggers_disabled=0)) == []


def test_backlog_rows_or_age_over_the_thresholds() -> None:
    limits = {"backlog_rows": 100, "backlog_age": "10m"}
    assert check("backlog", facts(limits)) is None
    assert check("backlog", facts(limits, backlog_rows=100, oldest_pending_s=600.0)) == []
    (rows,) = check("backlog", facts(limits, backlog_rows=101, backlog_kind="queue"))
    assert rows.subject == "queue" and "101 pending row(s)" in rows.message and rows.numbers["rows"] == 101
    (age,) = check("backlog", facts(limits, backlog_rows=3, oldest_pending_s=601.0, backlog_kind="inbox"))
    assert age.subject == "inbox" and "oldest 10m old" in age.message


def test_async_unsettled_past_the_limit() -> None:
    assert check("async_unsettled", facts()) is None
    young = [NOW - dt.timedelta(minutes=30)]
    assert check("async_unsettled", facts({"async_unsettled": "1h"}, async_created=young)) == []
    old = [NOW - dt.timedelta(hours=3), NOW - dt.timedelta(hours=2), *young]
    (found,) = check("async_unsettled", facts({"async_unsettled": "1h"}, async_created=old))
    assert "2 asynchronous batch(es)" in found.message and found.numbers == {
        "batches": 2,
        "oldest_s": 10800.0,
    }


def test_budget_low_per_connection_with_its_side() -> None:
    assert check("budget_low", facts()) is None
    fine = {"api": {"remaining": 3, "server_remaining": None, "blocked_for": 0.0, "side": "source"}}
    assert check("budget_low", facts(budgets=fine)) == []
    low = {
        "api": {"remaining": 0, "server_remaining": None, "blocked_for": 0.0, "side": "destination"},
        "crm": {"remaining": 5, "server_remaining": 0, "blocked_for": 30.0, "side": "source"},
    }
    found = check("budget_low", facts(budgets=low))
    assert [(x.subject, x.failure_class) for x in found] == [("api", "destination"), ("crm", "source")]
    assert "no call left" in found[0].message
    assert "server says 0" in found[1].message and "pause of 30s" in found[1].message


def test_source_regression_newest_back_or_rows_dropped() -> None:
    newest = NOW - dt.timedelta(hours=1)
    assert check("source_regression", facts(source_newest=newest)) is None  # nothing to compare with
    assert check("source_regression", facts(source_newest=newest, source_newest_seen=newest)) == []
    (back,) = check(
        "source_regression", facts(source_newest=newest, source_newest_seen=newest + dt.timedelta(days=2))
    )
    assert back.subject == "newest" and back.numbers["behind_s"] == 172800.0 and back.severity == "critical"
    assert check("source_regression", facts(source_rows=91, source_rows_ref=100)) == []  # a few deletes
    (rows,) = check("source_regression", facts(source_rows=89, source_rows_ref=100))
    assert rows.subject == "rows" and "from about 100 to about 89" in rows.message
    # the newest change could not be read this time (it was before): rows alone must not clear
    assert (
        check("source_regression", facts(source_rows=95, source_rows_ref=100, source_newest_unknown=True))
        is None
    )


def test_a_disabled_monitor_is_not_evaluated_and_severity_is_overridden() -> None:
    f = facts({"disabled": ["backlog"], "severity": {"capture_health": "warning"}}, slot_state="missing")
    results = evaluate_sync(f)
    assert "backlog" not in results
    (found,) = results["capture_health"] or []
    assert found.severity == "warning"
