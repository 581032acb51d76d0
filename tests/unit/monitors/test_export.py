"""The export monitors over crafted facts: `export_pickup` counts the transactions pending past
`monitors.export_pickup` after their creation (cannot tell without `changes.created` or the
source), `export_failed` raises one incident per failed import (the key and the destination's
message only with `alerts.include_values`), capped at 20 plus a summary; `success_with_rejections`
leaves an export's rejections to it; the other monitors stay quiet on an export sync."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from mapsync.monitors import REGISTRY, evaluate_sync
from mapsync.monitors.facts import SyncFacts
from mapsync.sheet import models
from mapsync.sheet.monitor_models import MonitorsConfig, resolve

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)


def _sheet(created: bool = True) -> models.Sheet:
    changes: dict[str, Any] = {"method": "export_flag", "flag": "exported", "status": "erp_status"}
    if created:
        changes["created"] = "created_at"
    return models.Sheet.model_validate(
        {
            "version": 1,
            "connections": {"portal": {"url": "sqlite:///portal.db"}, "erp": {"url": "sqlite:///erp.db"}},
            "syncs": {
                "orders": {
                    "from": {"connection": "portal", "table": "orders"},
                    "to": {"connection": "erp", "table": "erp_orders"},
                    "key": {"from": "order_no", "to": "order_no"},
                    "fields": {"total": "total"},
                    "changes": changes,
                },
                "items": {
                    "from": {"connection": "portal", "table": "items"},
                    "to": {"connection": "erp", "table": "items"},
                    "key": {"from": "id", "to": "id"},
                    "fields": {"name": "name"},
                    "changes": {"method": "full"},
                },
            },
        }
    )


def facts(
    monitors: dict[str, Any] | None = None,
    *,
    sync: str = "orders",
    created: bool = True,
    include_values: bool = False,
    runs: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> SyncFacts:
    thresholds = resolve(MonitorsConfig.model_validate(monitors or {}))
    cfg = _sheet(created).syncs[sync]
    return SyncFacts(sync, cfg, thresholds, NOW, runs=runs or [], include_values=include_values, extra=extra)


def check(name: str, f: SyncFacts) -> Any:
    return REGISTRY[name].check(f)


def ago(minutes: float) -> dt.datetime:
    return NOW - dt.timedelta(minutes=minutes)


def test_export_pickup_counts_the_late_ones_and_the_oldest_age() -> None:
    f = facts(export_now=NOW, export_created=[ago(130), ago(20), ago(5)], export_pending=3)
    (found,) = check("export_pickup", f)
    assert found.sync == "orders" and found.subject == "" and found.failure_class == "tool"
    assert "2 transaction(s) not picked up within 15m" in found.message
    assert "oldest 2.2h old" in found.message and "3 pending in all" in found.message
    assert found.numbers["late"] == 2 and found.numbers["oldest_s"] == 130 * 60
    # a threshold of its own: none late; nothing pending at all: all clear
    assert (
        check("export_pickup", facts({"export_pickup": "3h"}, export_now=NOW, export_created=[ago(130)]))
        == []
    )
    assert check("export_pickup", facts(export_now=NOW, export_created=[], export_pending=0)) == []
    paused = dataclasses.replace(f, paused=True)
    assert check("export_pickup", paused) == []  # the operator stopped the pickup


def test_export_pickup_cannot_tell_without_created_or_the_source() -> None:
    assert check("export_pickup", facts(created=False, export_now=NOW, export_created=[ago(99)])) is None
    assert check("export_pickup", facts()) is None  # the source did not answer
    assert check("export_pickup", facts(sync="items")) == []  # not an export sync


def _failure(n: int, **kw: Any) -> dict[str, Any]:
    return {
        "key": f'["SO-{n}"]',
        "arg": f"SO-{n}",
        "message": "zip 1234 refused: CHECK (length(zip) = 5)\nDETAIL: more",
        "first_seen": ago(100 - n),
        "attempts": 1,
        "rule": "destination",
        "dead": False,
        **kw,
    }


def test_export_failed_one_incident_per_failure_with_the_message_when_values_are_allowed() -> None:
    f = facts(
        include_values=True, export_failures=[_failure(1), _failure(2, dead=True)], export_failures_total=2
    )
    one, two = check("export_failed", f)
    assert (one.subject, two.subject) == ("SO-1", "SO-2")
    assert one.key == "export_failed|orders|SO-1" and one.failure_class == "destination"
    assert "zip 1234 refused: CHECK (length(zip) = 5)" in one.message and "DETAIL" not in one.message
    assert "`mapsync reexport SHEET --sync orders SO-1`" in one.message
    assert "max_attempts" in two.message and two.numbers["dead"] is True
    (mapped,) = check("export_failed", facts(export_failures=[_failure(3, rule="map")]))
    assert mapped.failure_class == "config"  # refused by the mapping, not by the destination
    assert check("export_failed", facts(export_failures=[], export_failures_total=0)) == []
    assert check("export_failed", facts()) is None  # the store's errors unknown
    assert check("export_failed", facts(sync="items", export_failures=[_failure(1)])) == []


def test_export_failed_without_include_values_names_neither_key_nor_message() -> None:
    f = facts(export_failures=[_failure(1), _failure(2)], export_failures_total=2)
    one, two = check("export_failed", f)
    for found in (one, two):
        assert "SO-" not in found.message + found.subject and "1234" not in found.message
        assert found.subject.startswith("import-") and "mapsync errors SHEET --sync orders" in found.message
    assert one.subject != two.subject
    again = check("export_failed", facts(export_failures=[_failure(2)], export_failures_total=1))
    assert [x.subject for x in again] == [two.subject]  # stable: the same failure, the same incident


def test_export_failed_caps_at_twenty_plus_one_summary() -> None:
    failures = [_failure(n) for n in range(25)]
    found = check(
        "export_failed", facts(include_values=True, export_failures=failures, export_failures_total=600)
    )
    assert len(found) == 21 and [x.subject for x in found[:20]] == [f"SO-{n}" for n in range(20)]
    more = found[20]
    assert more.subject == "(more)" and more.numbers == {"more": 580, "failed": 600}
    assert "580 more failed import(s) (600 in all)" in more.message and "--failed" in more.message
    exactly = check("export_failed", facts(export_failures=failures[:20], export_failures_total=20))
    assert len(exactly) == 20 and all(x.subject != "(more)" for x in exactly)


def _run(**counts: Any) -> dict[str, Any]:
    return {
        "id": 7,
        "kind": "incremental",
        "status": "partial",
        "started_at": ago(2),
        "finished_at": ago(1),
        **counts,
    }


def test_success_with_rejections_leaves_an_exports_rejections_to_export_failed() -> None:
    run = _run(read=3, written=2, rejected=1)
    assert check("success_with_rejections", facts(runs=[run])) == []
    (found,) = check("success_with_rejections", facts({"disabled": ["export_failed"]}, runs=[run]))
    assert "rejected 1 of 3" in found.message
    assert len(check("success_with_rejections", facts(sync="items", runs=[run]))) == 1  # others as before


def test_no_other_monitor_fires_on_an_export_sync_with_a_backlog_and_failures() -> None:
    """An export sync's facts (a backlog, failed rows, no watermark or queue facts) raise nothing
    but its own monitors: the watermark, lag and backlog monitors cannot tell or stay clear."""
    run = _run(read=1, written=1, rejected=0, status="success")
    f = facts(
        runs=[run],
        export_now=NOW,
        export_created=[ago(1)],
        export_pending=5000,
        export_failed_rows=3,
        export_failures=[],
        export_failures_total=0,
        source_rows=10,
    )
    results = evaluate_sync(f)
    firing = {name: found for name, found in results.items() if found}
    assert firing == {}
    for name in ("watermark_stuck", "lag", "nothing_written_with_backlog", "backlog"):
        assert results[name] is None, name
    assert results["capture_health"] == []
