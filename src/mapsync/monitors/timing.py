"""Timing monitors: did the sync start on time, finish within its window, finish at all, and
succeed lately? Over the run history and the sync's schedule (`mapsync.schedules`); a paused sync
is not late (its operator stopped it)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from mapsync import schedules
from mapsync.monitors.base import finding, monitor
from mapsync.monitors.facts import COMPLETED, SyncFacts, at, ended
from mapsync.state.data import Finding

_US = dt.timedelta(microseconds=1)


def _seconds(d: dt.timedelta) -> float:
    return round(d.total_seconds(), 3)


def scheduled(facts: SyncFacts) -> schedules.Schedule | None:
    """The sync's `every`/`cron` schedule (None: it follows, or runs only when started)."""
    return schedules.of(facts.cfg.schedule)


def _slot_rows(facts: SyncFacts) -> list[tuple[dt.datetime, dict[str, Any]]]:
    """The rows of the sync's scheduled `run` slots (any status), with their slot time, newest first."""
    out = []
    for r in facts.runs:
        when = at(r.get("scheduled_at"))
        if r.get("slot") == "run" and when is not None:
            out.append((when, r))
    return sorted(out, key=lambda x: x[0], reverse=True)


@monitor(
    "late_start",
    severity="warning",
    failure_class="tool",
    runbook="Is a daemon running and does it own the sync? `mapsync workers SHEET`, `mapsync status SHEET`.",
)
def late_start(facts: SyncFacts) -> list[Finding] | None:
    """A scheduled sync (`every`/`cron`) with `schedule.start_within` set, whose latest slot that
    should have started by now (slot + `start_within` <= now) has no run at all (and no later slot
    ran either: a later slot's run stands for the ones it coalesced), or whose run of it started
    more than `start_within` late. Only for syncs that have run a scheduled slot before (a new sync
    waits for its first slot); not while paused. Clears when a slot starts on time."""
    within = facts.cfg.schedule.start_within
    sched = scheduled(facts)
    if within is None or sched is None or facts.paused:
        return []
    slot = sched.slot_at_or_before(facts.now - within)
    rows = _slot_rows(facts)
    if slot is None or not rows:
        return []
    handled = [(when, r) for when, r in rows if when >= slot]
    if not handled:
        newest = rows[0][0]
        missed = len(schedules.slots_between(sched, newest, facts.now - within, limit=1000))
        return [
            finding(
                "late_start",
                facts,
                f"sync {facts.sync}: the slot of {slot:%Y-%m-%d %H:%M:%S} UTC has not started "
                f"({missed} slot(s) without a run; start_within {_seconds(within)}s)",
                numbers={
                    "slot": slot.isoformat(),
                    "missed_slots": missed,
                    "start_within_s": _seconds(within),
                },
            )
        ]
    when, row = handled[-1]  # the run of that slot itself, else the earliest later one
    late_ms = row.get("lateness_ms")
    if late_ms is None or dt.timedelta(milliseconds=int(late_ms)) <= within:
        return []
    late = dt.timedelta(milliseconds=int(late_ms))
    return [
        finding(
            "late_start",
            facts,
            f"sync {facts.sync}: run {row.get('id')} of the slot of {when:%Y-%m-%d %H:%M:%S} UTC started "
            f"{_seconds(late)}s late (start_within {_seconds(within)}s)",
            numbers={
                "slot": when.isoformat(),
                "run_id": row.get("id"),
                "late_s": _seconds(late),
                "start_within_s": _seconds(within),
            },
        )
    ]


@monitor(
    "overran",
    severity="warning",
    failure_class="tool",
    runbook="Why is the run slow (source query, destination, call budget)? "
    "`mapsync state show SHEET --sync NAME`.",
)
def overran(facts: SyncFacts) -> list[Finding] | None:
    """With `schedule.finish_within` set: a run still running for longer than that, or the latest
    run that ended took longer. Clears when the latest run ended within the window."""
    within = facts.cfg.schedule.finish_within
    if within is None:
        return []
    out: list[Finding] = []
    for r in facts.runs:
        start = at(r.get("started_at"))
        if r.get("status") == "running" and start is not None and facts.now - start > within:
            took = facts.now - start
            out.append(
                finding(
                    "overran",
                    facts,
                    f"sync {facts.sync}: run {r.get('id')} has been running for {_seconds(took)}s "
                    f"(finish_within {_seconds(within)}s)",
                    numbers={
                        "run_id": r.get("id"),
                        "running_s": _seconds(took),
                        "finish_within_s": _seconds(within),
                    },
                )
            )
            return out
    runs = ended(facts)
    if not runs:
        return out
    last = runs[0]
    start, end = at(last.get("started_at")), at(last.get("finished_at"))
    if start is not None and end is not None and end - start > within:
        out.append(
            finding(
                "overran",
                facts,
                f"sync {facts.sync}: run {last.get('id')} took {_seconds(end - start)}s "
                f"(finish_within {_seconds(within)}s)",
                numbers={
                    "run_id": last.get("id"),
                    "took_s": _seconds(end - start),
                    "finish_within_s": _seconds(within),
                },
            )
        )
    return out


@monitor(
    "never_finished",
    severity="critical",
    failure_class="tool",
    runbook="The process running it died or hangs: check the worker (`mapsync workers SHEET`); the next run "
    "takes the lease over.",
)
def never_finished(facts: SyncFacts) -> list[Finding] | None:
    """A run still `running` whose lease was not renewed for `monitors.stale_run` (default: the
    lease TTL, i.e. the lease expired), or whose lease is gone or held by another run while it
    started longer ago than that. Clears once the run is marked failed (the next run or start
    does) or finishes."""
    stale = facts.thresholds.stale_run or facts.lease_ttl
    out: list[Finding] = []
    for r in facts.runs:
        if r.get("status") != "running":
            continue
        start = at(r.get("started_at"))
        lease = facts.lease
        if lease is not None and lease.get("token") == r.get("lease_token"):
            expires = at(lease.get("expires_at"))
            if expires is None:
                continue
            silent = facts.now - (expires - facts.lease_ttl)  # since its last renewal
            why = f"its lease was not renewed for {_seconds(silent)}s"
        else:
            if start is None:
                continue
            silent = facts.now - start
            why = "its lease is gone (or held by another run)"
        if silent <= stale:
            continue
        out.append(
            finding(
                "never_finished",
                facts,
                f"sync {facts.sync}: run {r.get('id')} is still marked running but {why} "
                f"(stale_run {_seconds(stale)}s)",
                numbers={"run_id": r.get("id"), "silent_s": _seconds(silent), "stale_run_s": _seconds(stale)},
            )
        )
    return out


def interval(sched: schedules.Schedule, now: dt.datetime) -> dt.timedelta | None:
    """The schedule's interval: `every`'s period; for `cron`, the gap between its two latest slots."""
    if isinstance(sched, schedules.Every):
        return sched.period
    last = sched.slot_at_or_before(now)
    before = sched.slot_at_or_before(last - _US) if last is not None else None
    return None if last is None or before is None else last - before


@monitor(
    "no_success",
    severity="critical",
    failure_class="tool",
    runbook="Read the failures: `mapsync state show SHEET --sync NAME`, `mapsync status SHEET`.",
)
def no_success(facts: SyncFacts) -> list[Finding] | None:
    """A scheduled sync (`every`/`cron`; not `follow`, whose idle passes leave no run) with no
    successful run (success or partial) for `monitors.no_success_after` × its interval, counted
    from its last success, or from its first run when it never succeeded. A sync that never ran
    is `late_start`'s; a paused one is left alone. Its class is the latest failure's."""
    sched = scheduled(facts)
    if sched is None or facts.paused or not facts.runs:
        return []
    step = interval(sched, facts.now)
    if step is None:
        return []
    limit = step * facts.thresholds.no_success_after
    ok = next((r for r in facts.runs if r.get("status") in COMPLETED), None)
    since = at(ok.get("finished_at") or ok.get("started_at")) if ok else at(facts.runs[-1].get("started_at"))
    if since is None or facts.now - since <= limit:
        return []
    failed = next((r for r in facts.runs if r.get("status") == "failed"), None)
    cls = str(failed.get("failure_class") or "tool") if failed else "tool"
    what = f"since {since:%Y-%m-%d %H:%M:%S} UTC" if ok else f"in any run since {since:%Y-%m-%d %H:%M:%S} UTC"
    return [
        finding(
            "no_success",
            facts,
            f"sync {facts.sync}: no successful run {what} ({_seconds(facts.now - since)}s; "
            f"limit {facts.thresholds.no_success_after} × {_seconds(step)}s)",
            numbers={
                "since": since.isoformat(),
                "for_s": _seconds(facts.now - since),
                "limit_s": _seconds(limit),
            },
            failure_class=cls,
        )
    ]
