"""Sheet monitors over what surrounds the syncs (gathered by `mapsync.watch_sources.sheet_extra`
into `SheetFacts.extra`; an absent key is unknown): clocks against each database (RELIABILITY E4),
the disk under a SQLite state store (J5), the state store itself, and alert channels that keep
failing.

The state store's limit: when the store cannot be reached at all, no incident can be written to
it. `state_store` reports what gathering saw (a `locked` SQLite store, a slow PostgreSQL one) when
the store is usable again, and `store_trouble(exc)` turns the store's failure into a Finding that
the daemon or the alert sender can send directly, without the store."""

from __future__ import annotations

from typing import Any

from mapsync.monitors.base import REGISTRY, finding, monitor
from mapsync.monitors.facts import SheetFacts
from mapsync.state import faults
from mapsync.state.data import Finding


@monitor(
    "clock_skew",
    severity="warning",
    failure_class="tool",
    runbook="synchronise this host's clock (NTP) or the database server's: cursors use the database's "
    "clock, but schedules, leases and call budgets use this host's",
    scope="sheet",
)
def clock_skew(facts: SheetFacts) -> list[Finding] | None:
    """This host's clock and a database's (the state store's, each SQL connection's) are apart by
    more than `clock_skew`, measured as the database's `now()` against the middle of the query's
    round trip. One incident per connection (`state` for the state store)."""
    clocks: dict[str, float] | None = facts.extra.get("clocks")
    if clocks is None:
        return None
    limit = facts.thresholds.clock_skew.total_seconds()
    out = []
    for name, skew in sorted(clocks.items()):
        if abs(skew) > limit:
            side = "ahead of" if skew > 0 else "behind"
            what = "the state store" if name == "state" else f"connection {name}"
            out.append(
                finding(
                    "clock_skew",
                    facts,
                    f"{what}'s clock is {abs(skew):.1f}s {side} this host's (limit {limit:.0f}s)",
                    subject=name,
                    numbers={"skew_s": round(skew, 3)},
                )
            )
    return out


@monitor(
    "disk_free",
    severity="critical",
    failure_class="state",
    runbook="free space on the state store's disk (or move `state.url`): with a full disk no run can "
    "record its progress",
    scope="sheet",
)
def disk_free(facts: SheetFacts) -> list[Finding] | None:
    """Free disk under a SQLite state store below `disk_free_mb` (no finding for PostgreSQL)."""
    free = facts.extra.get("disk_free_mb")
    if free is None:
        return None
    limit = facts.thresholds.disk_free_mb
    if free >= limit:
        return []
    return [
        finding(
            "disk_free",
            facts,
            f"only {free:.0f} MB free on the state store's disk (limit {limit} MB)",
            numbers={"free_mb": round(free, 1)},
        )
    ]


@monitor(
    "state_store",
    severity="critical",
    failure_class="state",
    runbook="see what holds the state store (another process holding SQLite's lock, a PostgreSQL "
    "server down or overloaded); `mapsync check SHEET` names it",
    scope="sheet",
)
def state_store(facts: SheetFacts) -> list[Finding] | None:
    """Gathering the facts met a failure of the state store (`locked`, `unreachable`, `cut`, …,
    as `state.faults` classifies it). An unreachable store cannot record its own incident: the
    daemon sends `store_trouble(exc)` directly."""
    reason = facts.extra.get("store_trouble")
    if "store_trouble" not in facts.extra:
        return None
    if reason is None:
        return []
    return [_store_finding(str(reason), finding_of=lambda m: finding("state_store", facts, m, subject=""))]


def _store_finding(reason: str, finding_of: Any) -> Finding:
    what = faults.WHAT.get(reason, f"failed ({reason})")
    todo = faults.TODO.get(reason)
    message = f"the state store {what}" + (f": {todo}" if todo else "")
    result: Finding = finding_of(message)
    return result


def store_trouble(exc: BaseException) -> Finding:
    """A `state_store` finding for a failure of the state store met outside the monitors (the
    daemon's loop, the alert sender), for an alert sent without the store. The message names the
    reason only (never the store's URL or the driver's text)."""
    reason = getattr(exc, "reason", None) or faults.classify(exc) or "unknown"
    spec = REGISTRY["state_store"]

    def make(message: str) -> Finding:
        return Finding(
            monitor=spec.name,
            sync=None,
            severity=spec.severity,
            failure_class=spec.failure_class,
            message=message,
            runbook=spec.runbook,
        )

    return _store_finding(str(reason), make)


@monitor(
    "channel_failing",
    severity="warning",
    failure_class="alerts",
    runbook="`mapsync alerts SHEET` shows the notices' last errors: check the channel's server, "
    "credentials and URL (the notices are retried)",
    scope="sheet",
)
def channel_failing(facts: SheetFacts) -> list[Finding] | None:
    """An alert channel whose last `channel_failures` notices all failed (tried, not sent), newest
    first. One incident per channel; it is sent through the other channels."""
    runs: dict[str, int] | None = facts.extra.get("channel_failures")
    if runs is None:
        return None
    limit = facts.thresholds.channel_failures
    return [
        finding(
            "channel_failing",
            facts,
            f"alert channel {name}: its last {n} notice(s) failed",
            subject=name,
            numbers={"failed_in_row": n},
        )
        for name, n in sorted(runs.items())
        if n >= limit
    ]
