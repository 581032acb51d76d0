"""The watch loop's reconcile (watch.py) on the MemoryStore: a finding raises its incident once
and refreshes it after, an empty answer resolves it, None (cannot tell) keeps it; a disabled
monitor never raises; a sync's thresholds win over the sheet's; incidents of syncs gone from the
sheet are resolved; findings are redacted and routed; a dry run records nothing."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from mapsync import watch
from mapsync.sheet.loader import LoadedSheet
from mapsync.state.data import Finding
from mapsync.state.memory import MemoryStore
from tests.unit.monitors.crafted import sheet


def _loaded(secrets: tuple[str, ...] = (), sync: dict[str, Any] | None = None, **top: Any) -> LoadedSheet:
    return LoadedSheet(sheet(sync=sync, **top), Path("sheet.yaml"), {}, secrets)


def _fail(
    store: MemoryStore, cls: str = "destination", message: str = "boom", reason: str | None = None
) -> int:
    return store.record_failed_run("orders", "run", "cli", cls, message, reason=reason)


def _succeed(store: MemoryStore) -> None:
    run_id = store.start_run("orders", "run", "cli", "t")
    store.finish_run(run_id, "success")


def _open(store: MemoryStore) -> list[tuple[str, str | None, str]]:
    return [(i.monitor, i.sync, i.subject) for i in store.incidents.open_incidents()]


def test_a_finding_raises_once_refreshes_then_resolves(caplog: pytest.LogCaptureFixture) -> None:
    loaded, store = _loaded(), MemoryStore()
    assert watch.evaluate(loaded, store, ["orders"]).opened == []
    _fail(store)
    with caplog.at_level(logging.INFO, logger="mapsync.watch"):
        first = watch.evaluate(loaded, store, ["orders"])
        assert [(i.monitor, i.failure_class) for i in first.opened] == [("failed_run", "destination")]
        assert first.changed and _open(store) == [("failed_run", "orders", "")]
        again = watch.evaluate(loaded, store, ["orders"])
        assert again.opened == [] and again.refreshed == 1 and not again.changed
        _succeed(store)
        done = watch.evaluate(loaded, store, ["orders"])
    assert [i.monitor for i in done.resolved] == ["failed_run"] and _open(store) == []
    opened = [r for r in caplog.records if r.getMessage() == "incident_opened"]
    resolved = [r for r in caplog.records if r.getMessage() == "incident_resolved"]
    assert len(opened) == 1 and opened[0].levelno == logging.WARNING and len(resolved) == 1
    assert (opened[0].__dict__["monitor"], opened[0].__dict__["sync"]) == ("failed_run", "orders")


def test_none_keeps_the_incident_and_an_empty_answer_clears_it() -> None:
    loaded, store = _loaded(), MemoryStore()
    kept = Finding("lag", "orders", "warning", "tool", "sync orders: 7200s behind the source")
    store.incidents.raise_incident(kept, [])
    report = watch.evaluate(loaded, store, ["orders"])  # no source facts: lag cannot tell
    assert "lag" in report.unknown["orders"] and ("lag", "orders", "") in _open(store)
    stale = Finding("overran", "orders", "warning", "tool", "took too long")
    store.incidents.raise_incident(stale, [])
    watch.evaluate(loaded, store, ["orders"])  # overran answers [] (no finish_within): resolved
    assert ("overran", "orders", "") not in _open(store)


def test_a_disabled_monitor_never_raises_and_its_open_incident_resolves() -> None:
    store = MemoryStore()
    _fail(store)
    watch.evaluate(_loaded(), store, ["orders"])
    assert _open(store) == [("failed_run", "orders", "")]
    off = _loaded(monitors={"disabled": ["failed_run"]})
    report = watch.evaluate(off, store, ["orders"])
    assert report.opened == [] and _open(store) == []
    _fail(store)
    assert watch.evaluate(off, store, ["orders"]).opened == [] and _open(store) == []
    per_sync = _loaded(sync={"monitors": {"disabled": ["failed_run"]}})  # per sync, the same
    assert watch.evaluate(per_sync, store, ["orders"]).opened == []


def test_a_syncs_thresholds_win_over_the_sheets() -> None:
    loaded = _loaded(
        monitors={"rejection_rate": 0.5, "severity": {"failed_run": "warning"}},
        sync={"monitors": {"rejection_rate": 0.01, "severity": {"failed_run": "info"}}},
    )
    assert watch.thresholds(loaded, "orders").rejection_rate == 0.01
    store = MemoryStore()
    _fail(store)
    (incident,) = watch.evaluate(loaded, store, ["orders"]).opened
    assert incident.severity == "info"
    sheet_only = _loaded(monitors={"severity": {"failed_run": "warning"}})
    _succeed(store)
    watch.evaluate(sheet_only, store, ["orders"])
    _fail(store)
    assert [i.severity for i in watch.evaluate(sheet_only, store, ["orders"]).opened] == ["warning"]


def test_incidents_of_syncs_gone_from_the_sheet_resolve() -> None:
    store = MemoryStore()
    store.incidents.raise_incident(Finding("failed_run", "old_sync", "critical", "tool", "failed"), [])
    report = watch.evaluate(_loaded(), store, ["orders"])
    assert [i.sync for i in report.resolved] == ["old_sync"] and _open(store) == []


def test_findings_are_redacted_and_routed_to_their_channels() -> None:
    alerts = {
        "channels": {"ops": {"log": {"level": "warning"}}, "owners": {"log": {"level": "error"}}},
        "routes": [{"match": {"failure_class": ["destination"]}, "to": ["owners"]}, {"to": ["ops"]}],
        "include_values": True,
    }
    loaded = _loaded(secrets=("hunter2-secret",), alerts=alerts)
    store = MemoryStore()
    _fail(store, message="login as admin/hunter2-secret refused")
    (incident,) = watch.evaluate(loaded, store, ["orders"]).opened
    assert "hunter2-secret" not in incident.message and "***" in incident.message
    assert incident.channels == ("owners",)
    _succeed(store)
    watch.evaluate(loaded, store, ["orders"])
    _fail(store, cls="tool")
    assert [i.channels for i in watch.evaluate(loaded, store, ["orders"]).opened] == [("ops",)]


def test_a_dry_run_records_nothing_and_only_limits_the_monitors() -> None:
    loaded, store = _loaded(), MemoryStore()
    _fail(store, reason="auth", message="connection shop: access refused (HTTP 401)")
    dry = watch.evaluate(loaded, store, ["orders"], record=False)
    assert [f.key for f in dry.firing()] == ["auth_refused|orders|shop"] and _open(store) == []
    limited = watch.evaluate(loaded, store, ["orders"], only=["failed_run"])
    assert limited.opened == []  # failed_run leaves auth to auth_refused, which was not asked
    after = watch.after_run(loaded, store, "orders")
    assert after is not None and [i.key for i in after.opened] == ["auth_refused|orders|shop"]


def test_after_run_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    store.close()

    class Broken(MemoryStore):
        def paused(self) -> Any:
            raise RuntimeError("store away")

    with caplog.at_level(logging.WARNING, logger="mapsync.watch"):
        assert watch.after_run(_loaded(), Broken(), "orders") is None
    assert any(r.getMessage() == "watch_failed" for r in caplog.records)


def test_a_daemons_running_run_is_judged_by_the_daemons_lease_not_the_one_off_default() -> None:
    from mapsync import daemon_process

    assert watch.DAEMON_LEASE == daemon_process.LEASE
    loaded = _loaded()  # state.lease_ttl left out: 10 minutes for a one-off command
    by_daemon = [{"status": "running", "trigger": "schedule"}]
    by_hand = [{"status": "running", "trigger": "cli"}]
    assert watch.lease_ttl(loaded, by_daemon) == daemon_process.LEASE
    assert watch.lease_ttl(loaded, by_hand) == loaded.sheet.state.lease_ttl
    assert watch.lease_ttl(_loaded(state={"lease_ttl": "5m"}), by_daemon).total_seconds() == 300


def test_a_long_run_of_skipped_slots_never_hides_the_failure() -> None:
    """A sync backing off after a failure records a skipped row per slot: hundreds of them must not
    push the failed run out of the monitors' sight (which would resolve its incident, falsely)."""
    import datetime as dt

    loaded, store = _loaded(), MemoryStore()
    _fail(store)
    watch.evaluate(loaded, store, ["orders"])
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for i in range(watch.RUNS + 50):
        store.record_skipped_run(
            "orders", "run", "schedule", start + dt.timedelta(seconds=i), "run", "backoff", "backing off"
        )
    report = watch.evaluate(loaded, store, ["orders"])
    assert report.resolved == [] and _open(store) == [("failed_run", "orders", "")]


def test_uneventful_runs_need_no_after_run_evaluation() -> None:
    from mapsync.state.data import Counts

    loaded = _loaded()
    clean = Counts(read=10, written=8, skipped=2)
    assert watch.uneventful(loaded, "orders", "success", clean)
    assert not watch.uneventful(loaded, "orders", "partial", clean)
    assert not watch.uneventful(loaded, "orders", "success", Counts(read=10, written=9, rejected=1))
    assert not watch.uneventful(loaded, "orders", "success", Counts(read=1, written=2))  # cannot add up
    timed = _loaded(sync={"schedule": {"every": "1m", "start_within": "10s"}})
    assert not watch.uneventful(timed, "orders", "success", clean)  # a late start is judged from the row
