"""The rollup math: nearest-rank p95, the fold of run rows per sync and UTC day, late runs, and the
merge of a day folded twice (counts add, p95 and max the larger: never below the truth)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from mapsync.state.clock import stamp
from mapsync.state.rollups import DEFAULT_LATE_MS, Rollup, duration_ms, fold, merge, p95

START = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def run(
    took_ms: int | None,
    *,
    sync: str = "s",
    status: str = "success",
    at: dt.datetime = START,
    late: int | None = None,
    **counts: int,
) -> dict[str, Any]:
    return {
        "sync": sync,
        "status": status,
        "started_at": stamp(at),
        "finished_at": None if took_ms is None else stamp(at + dt.timedelta(milliseconds=took_ms)),
        "lateness_ms": late,
        "read": counts.get("read", 0),
        "written": counts.get("written", 0),
        "rejected": counts.get("rejected", 0),
        "deleted": counts.get("deleted", 0),
    }


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], None),
        ([7], 7),
        (list(range(1, 21)), 19),  # ceil(0.95 × 20) = 19th
        (list(range(1, 101)), 95),
        (list(range(100, 0, -1)), 95),  # order does not matter
        ([1, 1000], 1000),  # ceil(1.9) = 2nd: with few runs p95 is the max
        (list(range(1, 22)), 20),  # ceil(19.95) = 20th
    ],
)
def test_p95_is_the_nearest_rank(values: list[int], expected: int | None) -> None:
    assert p95(values) == expected


def test_durations_are_in_milliseconds_and_a_skipped_run_has_none() -> None:
    assert duration_ms(run(1500)) == 1500
    assert duration_ms(run(1500, status="skipped")) is None
    assert duration_ms(run(None, status="running")) is None


def test_a_fold_is_per_sync_and_utc_start_day() -> None:
    late_night = dt.datetime(2026, 3, 1, 23, 59, 59, tzinfo=dt.UTC)
    rows = [
        run(100, read=5, written=4, rejected=1),
        run(300, status="partial", read=2, written=1, rejected=1),
        run(200, status="failed", deleted=3),
        run(None, status="skipped"),
        run(5000, at=late_night),  # ends the next day: counted on the day it started
        run(50, sync="t", at=START + dt.timedelta(days=1)),
    ]
    s1, t = fold(rows)
    assert (t.sync, t.day, t.runs) == ("t", "2026-03-02", 1)
    assert s1 == Rollup(
        "s", "2026-03-01", runs=5, success=2, partial=1, failed=1, skipped=1, late=0,
        read=7, written=5, rejected=2, deleted=3, p95_ms=5000, max_ms=5000,
    )  # fmt: skip


def test_p95_of_a_day_ignores_skipped_runs() -> None:
    rows = [run(ms) for ms in range(10, 1010, 10)] + [run(None, status="skipped")] * 50
    (day,) = fold(rows)
    assert (day.runs, day.skipped, day.p95_ms, day.max_ms) == (150, 50, 950, 1000)


def test_late_is_above_the_syncs_threshold_or_a_minute() -> None:
    rows = [run(1, late=DEFAULT_LATE_MS), run(1, late=DEFAULT_LATE_MS + 1), run(1, late=None)]
    assert fold(rows)[0].late == 1
    rows += [run(1, sync="t", late=2_000), run(1, sync="t", late=500)]
    assert {r.sync: r.late for r in fold(rows, {"t": 1_000})} == {"s": 1, "t": 1}


def test_a_merge_adds_counts_and_keeps_the_larger_p95_and_max() -> None:
    (first,) = fold([run(100, read=1), run(900, read=2)])
    (again,) = fold([run(400, read=10, status="failed")])
    merged = merge(first.row(), again)
    assert (merged["runs"], merged["read"], merged["success"], merged["failed"]) == (3, 13, 2, 1)
    assert (merged["p95_ms"], merged["max_ms"]) == (900, 900)  # exact p95 of 100, 400, 900 is 900
    assert merge(None, again) == again.row()
    (skipped,) = fold([run(None, status="skipped")])
    assert merge(skipped.row(), again)["p95_ms"] == 400  # None is no value
    # the merged p95 is never below the p95 of all the runs together
    durations = [5, 6, 7, 8, 1000]
    parts = [fold([run(ms) for ms in durations[:3]])[0], fold([run(ms) for ms in durations[3:]])[0]]
    assert merge(parts[0].row(), parts[1])["p95_ms"] >= p95(durations)
