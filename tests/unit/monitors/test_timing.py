"""Timing monitors over crafted histories: late start (a late run, and a slot with no run at
all), overran, never finished, no success; each clears when the history says all is well."""

from __future__ import annotations

import datetime as dt

from mapsync.monitors import timing
from tests.unit.monitors.crafted import NOW, facts, run

EVERY = {"every": "5m", "start_within": "1m"}
S1150 = dt.datetime(2026, 12, 3, 11, 50, tzinfo=dt.UTC)
S1155 = dt.datetime(2026, 12, 3, 11, 55, tzinfo=dt.UTC)
S1200 = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)


def _lease(expires_in: float, token: str = "t1") -> dict[str, object]:
    return {"token": token, "host": "h", "pid": 1, "expires_at": NOW + dt.timedelta(seconds=expires_in)}


def test_late_start_fires_for_a_run_that_started_later_than_start_within() -> None:
    on_time = [run(slot_at=S1150, ago=600, late_s=2), run(slot_at=S1155, ago=300, late_s=3)]
    assert timing.late_start(facts(on_time, schedule=EVERY)) == []
    late = [run(slot_at=S1150, ago=600, late_s=2), run(slot_at=S1155, ago=240, late_s=90)]
    (found,) = timing.late_start(facts(late, schedule=EVERY)) or []
    assert found.monitor == "late_start" and found.severity == "warning" and found.failure_class == "tool"
    assert found.numbers["late_s"] == 90.0 and found.numbers["slot"] == S1155.isoformat()
    assert "started 90.0s late" in found.message


def test_late_start_fires_for_a_slot_with_no_run_at_all() -> None:
    history = [run(slot_at=S1150 - dt.timedelta(minutes=5), ago=900), run(slot_at=S1150, ago=600)]
    (found,) = timing.late_start(facts(history, schedule=EVERY)) or []
    # 11:55 + 1m has passed (now 12:00:30) and nothing ran it, nor a later slot
    assert found.numbers == {"slot": S1155.isoformat(), "missed_slots": 1, "start_within_s": 60.0}
    assert "has not started" in found.message
    # the slot of 12:00 is not due yet (12:01): only 11:55 counts; a later run that stood for it
    # (coalesced after downtime) and started in time clears it
    recovered = [*history, run(slot_at=S1200, ago=25, late_s=5, coalesced=1)]
    assert timing.late_start(facts(recovered, schedule=EVERY)) == []


def test_late_start_watches_only_scheduled_syncs_with_start_within_that_ran_a_slot_and_are_not_paused() -> (
    None
):
    history = [run(slot_at=S1150, ago=600)]
    assert timing.late_start(facts(history, schedule={"every": "5m"})) == []  # no start_within
    assert timing.late_start(facts(history, schedule={"follow": True, "start_within": "1m"})) == []
    assert timing.late_start(facts(history, schedule=EVERY, paused=True)) == []
    assert timing.late_start(facts([run(ago=600)], schedule=EVERY)) == []  # never ran a slot
    assert timing.late_start(facts(history, schedule=EVERY)) != []


def test_late_start_follows_a_cron_schedule() -> None:
    cron = {"cron": "*/5 * * * *", "start_within": "1m"}
    assert timing.late_start(facts([run(slot_at=S1150, ago=600)], schedule=cron)) != []
    ok = [run(slot_at=S1150, ago=600), run(slot_at=S1155, ago=290, late_s=10)]
    assert timing.late_start(facts(ok, schedule=cron)) == []


def test_overran_fires_for_a_long_run_running_or_ended() -> None:
    window = {"every": "5m", "finish_within": "30s"}
    running = [run(ago=45, took=None, status="running")]
    (found,) = timing.overran(facts(running, schedule=window)) or []
    assert found.numbers["running_s"] == 45.0 and "has been running for 45.0s" in found.message
    (ended,) = timing.overran(facts([run(ago=100, took=40)], schedule=window)) or []
    assert ended.numbers["took_s"] == 40.0
    assert timing.overran(facts([run(ago=100, took=40), run(ago=50, took=10)], schedule=window)) == []
    assert timing.overran(facts([run(ago=100, took=40)], schedule={"every": "5m"})) == []  # no window


def test_never_finished_fires_for_a_running_run_whose_lease_was_not_renewed() -> None:
    ttl = dt.timedelta(seconds=60)
    stuck = [run(ago=300, took=None, status="running")]
    (found,) = timing.never_finished(facts(stuck, lease=_lease(-10), lease_ttl=ttl)) or []
    assert found.severity == "critical" and found.numbers["silent_s"] == 70.0
    assert timing.never_finished(facts(stuck, lease=_lease(50), lease_ttl=ttl)) == []  # renewed 10s ago
    # a stricter stale_run than the TTL
    strict = facts(stuck, lease=_lease(20), lease_ttl=ttl, monitors={"stale_run": "30s"})
    assert [f.numbers["silent_s"] for f in timing.never_finished(strict) or []] == [40.0]
    # its lease gone (or another run's): stale once it started longer ago than stale_run
    assert timing.never_finished(facts(stuck, lease=None, lease_ttl=ttl)) != []
    assert timing.never_finished(facts(stuck, lease=_lease(50, token="t2"), lease_ttl=ttl)) != []
    young = [run(ago=5, took=None, status="running")]
    assert timing.never_finished(facts(young, lease=None, lease_ttl=ttl)) == []
    assert timing.never_finished(facts([run(ago=300)], lease=None, lease_ttl=ttl)) == []  # it ended


def test_no_success_fires_after_n_intervals_without_a_success_with_the_failures_class() -> None:
    every = {"every": "5m"}
    history = [
        run(ago=1200),
        run("failed", ago=600, failure_class="source"),
        run("failed", ago=300, failure_class="destination"),
    ]
    (found,) = timing.no_success(facts(history, schedule=every)) or []
    assert found.failure_class == "destination" and found.numbers["limit_s"] == 900.0
    assert found.numbers["for_s"] == 1195.0  # since the success ended (20 min ago, took 5 s)
    assert timing.no_success(facts(history, schedule=every, monitors={"no_success_after": 5})) == []
    recent = [run(ago=600), run("failed", ago=300, failure_class="source")]
    assert timing.no_success(facts(recent, schedule=every)) == []
    never = [run("failed", ago=1000, failure_class="config"), run("failed", ago=100, failure_class="config")]
    (first,) = timing.no_success(facts(never, schedule=every)) or []
    assert "in any run since" in first.message and first.failure_class == "config"
    assert timing.no_success(facts(history, schedule={"follow": True})) == []
    assert timing.no_success(facts(history)) == []  # not scheduled
    assert timing.no_success(facts([], schedule=every)) == []  # never ran: late_start's
