"""Silent-error monitors over crafted histories and source facts: counts that cannot add up,
success with rejections, the rejection rate, nothing written while a backlog waits, a watermark
that does not move, lag; each None (cannot tell) when a fact it needs is unknown."""

from __future__ import annotations

import datetime as dt

from mapsync.monitors import silent
from tests.unit.monitors.crafted import NOW, facts, run

H = dt.timedelta(hours=1)


def test_counts_mismatch_fires_only_for_counts_that_cannot_add_up() -> None:
    ok = run(read=10, written=6, skipped=2, rejected=1, deleted=1)
    assert silent.counts_mismatch(facts([ok])) == []
    fewer = run(read=10, written=5)  # ignored deletes, unsettled async deliveries: allowed
    assert silent.counts_mismatch(facts([fewer])) == []
    (found,) = silent.counts_mismatch(facts([run(read=10, written=9, skipped=2)])) or []
    assert found.failure_class == "tool" and found.numbers["read"] == 10 and found.numbers["skipped"] == 2
    assert "do not add up" in found.message
    assert silent.counts_mismatch(facts([run(read=3, written=3, missed=4)])) != []  # missed ⊂ read
    # only the latest run that ended, and only one that completed
    assert silent.counts_mismatch(facts([run(read=1, written=2), run(read=5, written=5)])) == []
    assert silent.counts_mismatch(facts([run("failed", read=1, written=2)])) is None  # says nothing


def test_success_with_rejections_fires_when_a_completed_run_rejected_records() -> None:
    (found,) = silent.success_with_rejections(facts([run("partial", read=10, written=7, rejected=3)])) or []
    assert found.numbers == {"run_id": found.numbers["run_id"], "rejected": 3, "read": 10, "written": 7}
    assert "ended partial but rejected 3 of 10" in found.message
    assert silent.success_with_rejections(facts([run("success", read=4, written=3, rejected=1)])) != []
    cleared = [run("partial", rejected=3, written=7), run("success", read=5, written=5)]
    assert silent.success_with_rejections(facts(cleared)) == []
    assert silent.success_with_rejections(facts([run("failed", rejected=3)])) is None  # failed_run's
    assert silent.success_with_rejections(facts([])) == []  # no run yet: all clear


def test_rejection_rate_sums_recent_runs_against_the_threshold() -> None:
    history = [run(read=100, written=96, rejected=4), run(read=100, written=90, rejected=10)]
    (found,) = silent.rejection_rate(facts(history)) or []
    assert found.numbers["rate"] == 0.07 and found.numbers["rejected"] == 14 and found.numbers["runs"] == 2
    assert silent.rejection_rate(facts(history, monitors={"rejection_rate": 0.1})) == []
    assert silent.rejection_rate(facts([run(read=10, rejected=5)])) is None  # too few reads to tell
    assert silent.rejection_rate(facts([])) == []


def test_nothing_written_with_backlog_needs_the_backlog_and_fires_when_nothing_moves() -> None:
    stale = [run(ago=3600, written=5), run(ago=600, written=0, read=0)]
    assert silent.nothing_written_with_backlog(facts(stale)) is None  # backlog unknown
    (found,) = silent.nothing_written_with_backlog(facts(stale, extra={"backlog_rows": 42})) or []
    assert found.numbers["backlog_rows"] == 42 and "42 row(s) wait" in found.message
    assert silent.nothing_written_with_backlog(facts(stale, extra={"backlog_rows": 0})) == []
    fresh = [run(ago=300, written=5)]
    assert silent.nothing_written_with_backlog(facts(fresh, extra={"backlog_rows": 42})) == []
    assert silent.nothing_written_with_backlog(facts([], extra={"backlog_rows": 1})) != []  # nothing ever


def test_watermark_stuck_fires_when_runs_since_the_newest_change_left_the_cursor_behind() -> None:
    cursor, newest = NOW - 2 * H, NOW - H
    extra = {"cursor_at": cursor, "source_newest": newest, "source_now": NOW}
    assert silent.watermark_stuck(facts([run(ago=60)], extra={"cursor_at": cursor})) is None
    (found,) = silent.watermark_stuck(facts([run(ago=60)], extra=extra)) or []
    assert found.numbers == {"behind_s": 3600.0, "runs_since": 1}
    # no run started since the newest change: not stuck (yet)
    assert silent.watermark_stuck(facts([run(ago=7200)], extra=extra)) == []
    assert silent.watermark_stuck(facts([run(ago=60)], extra={**extra, "cursor_at": newest})) == []
    # the source's clock 2 h behind the store's: the run started before the change on its clock
    skewed = {**extra, "source_now": NOW - 2 * H}
    assert silent.watermark_stuck(facts([run(ago=60)], extra=skewed)) == []


def test_lag_is_the_source_clock_minus_the_cursor_while_the_source_has_newer_rows() -> None:
    extra = {"cursor_at": NOW - 2 * H, "source_newest": NOW - H / 2, "source_now": NOW}
    (found,) = silent.lag(facts([], extra=extra)) or []
    assert found.numbers == {"lag_s": 7200.0, "limit_s": 3600.0} and found.severity == "warning"
    assert silent.lag(facts([], extra=extra, monitors={"lag": "3h"})) == []
    assert silent.lag(facts([], extra={**extra, "source_newest": NOW - 3 * H})) == []  # nothing newer
    assert silent.lag(facts([], extra={k: v for k, v in extra.items() if k != "source_now"})) is None
    assert silent.lag(facts([], extra={**extra, "cursor_at": None})) is None


def test_a_syncs_rejection_rate_wins_over_the_sheets() -> None:
    history = [run(read=100, written=97, rejected=3)]
    assert silent.rejection_rate(facts(history, sheet_monitors={"rejection_rate": 0.5})) == []
    tight = facts(history, sheet_monitors={"rejection_rate": 0.5}, monitors={"rejection_rate": 0.01})
    assert [f.numbers["limit"] for f in silent.rejection_rate(tight) or []] == [0.01]
