"""What monitors look at: plain data gathered by `mapsync.watch` (from the state store, and for a
few monitors from the source database), so a monitor is a pure function and a test crafts a
history by hand. A field left None is unknown (not gathered, or its system could not be asked):
a monitor that needs it returns None (cannot tell) rather than a finding or an all-clear."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from mapsync.sheet.models import SyncConfig
from mapsync.sheet.monitor_models import Thresholds


@dataclasses.dataclass(frozen=True)
class SyncFacts:
    """One sync, at `now` (the state store's clock)."""

    sync: str
    cfg: SyncConfig
    thresholds: Thresholds
    now: dt.datetime
    # the sync's runs, newest first (rows as `History.runs` gives them: id, kind, trigger, status,
    # failure_class, reason, message, counts, started_at, finished_at, scheduled_at, slot,
    # lateness_ms, coalesced, worker), as far back as the monitors need
    runs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    lease_ttl: dt.timedelta = dt.timedelta(minutes=10)
    # the sync's lease, if held: {"expires_at": datetime, "host": …, "pid": …}
    lease: dict[str, Any] | None = None
    paused: bool = False
    seeded: bool = True
    # the sheet's `alerts.include_values`: a finding may then quote a failed run's message (which
    # can carry a record's values); otherwise findings hold names and counts only
    include_values: bool = False
    # more facts are added by the modules that need them (record errors, unmapped values, capture
    # health, backlog, async batches, budgets, the source's newest change …), each None = unknown
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


# the statuses of a run that ran to an end of its own (not `running`, `skipped` or `stopped`)
ENDED = ("success", "partial", "failed")
COMPLETED = ("success", "partial")  # it delivered what it could: rejections are records' own


def at(value: Any) -> dt.datetime | None:
    """A run row's time (a stamp text as the stores keep it, or a datetime) as an aware UTC
    datetime; None for None."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    text = str(value)
    try:
        return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    except ValueError:
        parsed = dt.datetime.fromisoformat(text)
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def ended(facts: SyncFacts) -> list[dict[str, Any]]:
    """The runs that ran to an end (success, partial, failed), newest first."""
    return [r for r in facts.runs if r.get("status") in ENDED]


def latest_ended(facts: SyncFacts) -> dict[str, Any] | None:
    """The newest run that ran to an end: what the sync's last word is (a running run, a skipped
    slot or a run stopped by a shutdown says nothing yet)."""
    runs = ended(facts)
    return runs[0] if runs else None


def count(run: dict[str, Any], name: str) -> int:
    return int(run.get(name) or 0)


@dataclasses.dataclass(frozen=True)
class SheetFacts:
    """The whole sheet, at `now`: what is not one sync's (the state store, clocks, disk, alert
    channels)."""

    now: dt.datetime
    thresholds: Thresholds
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    # the sheet's `alerts.include_values` (as `SyncFacts.include_values`): a sheet finding may
    # then quote values (a check's groups and error text)
    include_values: bool = False
