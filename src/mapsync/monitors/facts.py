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
    # more facts are added by the modules that need them (record errors, unmapped values, capture
    # health, backlog, async batches, budgets, the source's newest change …), each None = unknown
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class SheetFacts:
    """The whole sheet, at `now`: what is not one sync's (the state store, clocks, disk, alert
    channels)."""

    now: dt.datetime
    thresholds: Thresholds
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
