"""Daily rollups of the runs (schema v7 `mapsync_rollups`; port `Rollups`, as `store.rollups`).

Before the retention purge deletes run rows it folds them, in the same transaction, into one row
per sync and UTC day (the day the run started): runs, success, partial, failed, skipped, late,
read, written, rejected, deleted, p95_ms and max_ms of the durations. A crash between folding and
deleting is impossible (one transaction per batch), so a run is counted exactly once.

- **Durations** are `finished_at - started_at` of the runs that ran (a skipped run has none).
- **Late**: `lateness_ms` above the sync's `schedule.start_within` (60 s when it has none).
- **p95** is the nearest-rank 95th percentile of the day's durations, exact when the day is
  folded in one batch (the purge rounds its cutoff down to a UTC midnight, so a day's runs age out
  together). A day folded again later (the sync's latest run, kept until a newer one exists, or a
  day with more runs than a batch) is merged: counts add, `max_ms` is the larger, and `p95_ms` the
  larger of the two p95s: an upper bound of the true p95, never below it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from mapsync.state import schema
from mapsync.state.clock import unstamp
from mapsync.state.faults import guarded

DEFAULT_LATE_MS = 60_000  # a run starting more than this after its slot is late (no start_within)
COUNTED = (
    "runs",
    "success",
    "partial",
    "failed",
    "skipped",
    "late",
    "read",
    "written",
    "rejected",
    "deleted",
)
# the run columns a fold reads (the purge's DELETE … RETURNING hands back exactly these)
FOLDED = (
    "sync",
    "status",
    "started_at",
    "finished_at",
    "lateness_ms",
    "read",
    "written",
    "rejected",
    "deleted",
)


@dataclasses.dataclass
class Rollup:
    """One sync's runs of one UTC day, folded."""

    sync: str
    day: str  # YYYY-MM-DD
    runs: int = 0
    success: int = 0
    partial: int = 0
    failed: int = 0
    skipped: int = 0
    late: int = 0
    read: int = 0
    written: int = 0
    rejected: int = 0
    deleted: int = 0
    p95_ms: int | None = None
    max_ms: int | None = None

    def row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def p95(durations: Iterable[int]) -> int | None:
    """The nearest-rank 95th percentile (the smallest value ≥ 95 % of them); None for none."""
    ordered = sorted(durations)
    if not ordered:
        return None
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


def duration_ms(run: Mapping[str, Any]) -> int | None:
    """How long a run took, in ms (None: skipped, or not finished)."""
    if run["status"] == "skipped" or not run["finished_at"]:
        return None
    took = unstamp(run["finished_at"]) - unstamp(run["started_at"])
    return max(0, round(took / dt.timedelta(milliseconds=1)))


def fold(runs: Iterable[Mapping[str, Any]], late_ms: Mapping[str, int] | None = None) -> list[Rollup]:
    """The finished run rows folded per (sync, UTC start day); `late_ms`: sync → its threshold."""
    late_ms = late_ms or {}
    days: dict[tuple[str, str], Rollup] = {}
    durations: dict[tuple[str, str], list[int]] = {}
    for run in runs:
        at = (run["sync"], str(run["started_at"])[:10])
        r = days.setdefault(at, Rollup(*at))
        r.runs += 1
        if run["status"] in ("success", "partial", "failed", "skipped"):
            setattr(r, run["status"], getattr(r, run["status"]) + 1)
        lateness = run["lateness_ms"]
        if lateness is not None and lateness > late_ms.get(run["sync"], DEFAULT_LATE_MS):
            r.late += 1
        for name in ("read", "written", "rejected", "deleted"):
            setattr(r, name, getattr(r, name) + int(run[name] or 0))
        took = duration_ms(run)
        if took is not None:
            durations.setdefault(at, []).append(took)
    for at, r in days.items():
        r.p95_ms = p95(durations.get(at, ()))
        r.max_ms = max(durations[at]) if at in durations else None
    return sorted(days.values(), key=lambda r: (r.sync, r.day))


def _larger(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def merge(old: Mapping[str, Any] | None, new: Rollup) -> dict[str, Any]:
    """A stored rollup row with a new fold of the same (sync, day) merged in (see the module)."""
    if old is None:
        return new.row()
    out = {**dict(old), **{name: int(old[name]) + getattr(new, name) for name in COUNTED}}
    out["p95_ms"] = _larger(old["p95_ms"], new.p95_ms)
    out["max_ms"] = _larger(old["max_ms"], new.max_ms)
    return out


def add(conn: sa.Connection, folded: Iterable[Rollup]) -> None:
    """Merge folds into `mapsync_rollups` inside the caller's transaction (an upsert: two purgers
    folding the same day at once both count, each its own deleted runs)."""
    t = schema.rollups
    pg = conn.dialect.name == "postgresql"
    for r in folded:
        insert = (postgresql if pg else sqlite).insert(t).values(**r.row())
        ex = insert.excluded
        larger = sa.func.greatest if pg else sa.func.max  # SQLite's two-argument max is scalar
        set_: dict[str, Any] = {name: t.c[name] + ex[name] for name in COUNTED}
        for name in ("p95_ms", "max_ms"):
            set_[name] = sa.func.coalesce(
                larger(sa.func.coalesce(t.c[name], ex[name]), sa.func.coalesce(ex[name], t.c[name])),
                t.c[name],
            )
        conn.execute(insert.on_conflict_do_update(index_elements=["sync", "day"], set_=set_))


def since_day(since: dt.datetime | dt.date) -> str:
    day = since.astimezone(dt.UTC).date() if isinstance(since, dt.datetime) else since
    return day.isoformat()


class SqlRollups:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    @guarded
    def rollups(self, sync: str | None, since: dt.datetime | dt.date) -> list[dict[str, Any]]:
        """The daily rollups of one sync (or all) from `since`'s UTC day on, oldest first."""
        t = schema.rollups
        query = sa.select(t).where(t.c.day >= since_day(since)).order_by(t.c.sync, t.c.day)
        if sync is not None:
            query = query.where(t.c.sync == sync)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]
