"""Silent-error monitors: a run that "worked" while records went missing. Over the counts of the
run history and, for the backlog, watermark and lag, over facts of the source that
`watch_sources.sync_extra` reads into `SyncFacts.extra`:

- `backlog_rows` (int | None): rows waiting at the source (a change queue's pending rows, the
  inbox's new items);
- `source_newest` (datetime | None): the newest change time at the source;
- `cursor_at` (datetime | None): the sync's committed watermark as a time;
- `source_now` (datetime | None): the source database's clock.

A monitor whose key is absent (or None) cannot tell and returns None: its incidents stay.

What the engine's counts promise (engine.py `_step`, run_steps.py): every record read is counted
once as `written` (upserts, and deletes written as an update), `deleted`, `skipped` (unchanged,
or mapped to nothing) or `rejected`, except a delete the policy ignores and an asynchronous
delivery not settled yet, which are none of these. `missed` (an overlap run's rows the
incremental runs missed) counts records read; `truncated` and `defaulted` count values, several
per record, so they are no part of the sum."""

from __future__ import annotations

import datetime as dt
from typing import Any

from mapsync.monitors.base import finding, monitor
from mapsync.monitors.facts import COMPLETED, SyncFacts, at, count, ended, latest_ended
from mapsync.sheet.export_models import ExportFlagChanges
from mapsync.state.data import Finding

OUTCOMES = ("written", "skipped", "rejected", "deleted")
RECENT_RUNS = 10  # the runs `rejection_rate` sums over
MIN_READ = 20  # fewer records read than this over those runs: too few to judge a rate


def _latest_completed(facts: SyncFacts) -> dict[str, Any] | None:
    run = latest_ended(facts)
    return run if run is not None and run.get("status") in COMPLETED else None


@monitor(
    "counts_mismatch",
    severity="critical",
    failure_class="tool",
    runbook="A mapsync bug or a changed destination answer: compare "
    "`mapsync state show SHEET --sync NAME --json` with the destination and report it.",
)
def counts_mismatch(facts: SyncFacts) -> list[Finding] | None:
    """The latest run that ended in success or partial counts more outcomes than records read
    (written + skipped + rejected + deleted > read), or more `missed` than read: counts that
    cannot add up. (Fewer outcomes than reads is allowed: ignored deletes, unsettled async
    deliveries.)"""
    run = _latest_completed(facts)
    if run is None:
        return [] if latest_ended(facts) is None else None  # a failed latest run says nothing here
    read = count(run, "read")
    outcomes = sum(count(run, k) for k in OUTCOMES)
    if outcomes <= read and count(run, "missed") <= read:
        return []
    numbers = {"run_id": run.get("id"), "read": read, **{k: count(run, k) for k in (*OUTCOMES, "missed")}}
    return [
        finding(
            "counts_mismatch",
            facts,
            f"sync {facts.sync}: run {run.get('id')} counts do not add up: read {read}, "
            + ", ".join(f"{k} {count(run, k)}" for k in (*OUTCOMES, "missed")),
            numbers=numbers,
        )
    ]


@monitor(
    "success_with_rejections",
    severity="warning",
    failure_class="config",
    runbook="See the rejected records: `mapsync errors SHEET --sync NAME`; fix the mapping or the data, "
    "then `mapsync retry SHEET --sync NAME`.",
)
def success_with_rejections(facts: SyncFacts) -> list[Finding] | None:
    """The latest run that ended finished (status `success` or `partial`: nothing stopped it)
    while it rejected records: the run "worked" but those records are not at the destination.
    Clears when a later run ends without rejections. An export sync's rejections are failed
    imports, each its own `export_failed` incident: left to that one unless it is disabled."""
    if isinstance(facts.cfg.changes, ExportFlagChanges) and "export_failed" not in facts.thresholds.disabled:
        return []
    run = _latest_completed(facts)
    if run is None:
        # no run yet: all clear; the latest one failed: it says nothing of rejections (the
        # failure is failed_run's): the incident stays as it is until a run completes
        return [] if latest_ended(facts) is None else None
    if count(run, "rejected") == 0:
        return []
    rejected, read = count(run, "rejected"), count(run, "read")
    return [
        finding(
            "success_with_rejections",
            facts,
            f"sync {facts.sync}: run {run.get('id')} ended {run.get('status')} but rejected {rejected} of "
            f"{read} record(s) read (written {count(run, 'written')})",
            numbers={
                "run_id": run.get("id"),
                "rejected": rejected,
                "read": read,
                "written": count(run, "written"),
            },
        )
    ]


@monitor(
    "rejection_rate",
    severity="warning",
    failure_class="config",
    runbook="See what is rejected: `mapsync errors SHEET --sync NAME`, `mapsync unmapped SHEET`.",
)
def rejection_rate(facts: SyncFacts) -> list[Finding] | None:
    """Over the last 10 runs that ended, rejected / read above `monitors.rejection_rate`
    (default 0.05). Fewer than 20 records read over them: cannot tell (None)."""
    runs = ended(facts)[:RECENT_RUNS]
    read = sum(count(r, "read") for r in runs)
    rejected = sum(count(r, "rejected") for r in runs)
    if read < MIN_READ:
        return None if runs else []
    rate = rejected / read
    limit = facts.thresholds.rejection_rate
    if rate <= limit:
        return []
    return [
        finding(
            "rejection_rate",
            facts,
            f"sync {facts.sync}: {rejected} of {read} record(s) rejected over the last {len(runs)} run(s) "
            f"({rate:.1%}; limit {limit:.1%})",
            numbers={
                "rejected": rejected,
                "read": read,
                "runs": len(runs),
                "rate": round(rate, 4),
                "limit": limit,
            },
        )
    ]


def _known(facts: SyncFacts, *keys: str) -> bool:
    return all(facts.extra.get(k) is not None for k in keys)


@monitor(
    "nothing_written_with_backlog",
    severity="critical",
    failure_class="tool",
    runbook="Rows wait at the source but nothing is delivered: is the sync running (`mapsync status SHEET`)? "
    "Check the queue (`mapsync triggers status SHEET`) and the last runs.",
)
def nothing_written_with_backlog(facts: SyncFacts) -> list[Finding] | None:
    """Rows wait at the source (`extra["backlog_rows"]` > 0) while no run wrote or deleted
    anything for `monitors.backlog_age` (default 15m): the last run that changed something ended
    longer ago (or none did). Unknown backlog: None."""
    if not _known(facts, "backlog_rows"):
        return None
    backlog = int(facts.extra["backlog_rows"])
    if backlog <= 0 or facts.paused:
        return []
    age = facts.thresholds.backlog_age
    changed = next((r for r in ended(facts) if count(r, "written") + count(r, "deleted") > 0), None)
    last = at(changed.get("finished_at")) if changed else None
    if last is not None and facts.now - last <= age:
        return []
    since = (
        "no run in the history wrote anything"
        if last is None
        else f"the last write ended at {last:%H:%M:%S} UTC"
    )
    return [
        finding(
            "nothing_written_with_backlog",
            facts,
            f"sync {facts.sync}: {backlog} row(s) wait at the source and nothing was written for "
            f"{round(age.total_seconds())}s ({since})",
            numbers={"backlog_rows": backlog, "backlog_age_s": round(age.total_seconds(), 3)},
        )
    ]


def _offset(facts: SyncFacts) -> dt.timedelta:
    """The source's clock minus the state store's (0 when the source clock is unknown)."""
    source_now = facts.extra.get("source_now")
    return source_now - facts.now if isinstance(source_now, dt.datetime) else dt.timedelta(0)


@monitor(
    "watermark_stuck",
    severity="critical",
    failure_class="tool",
    runbook="The sync runs but its cursor does not pass the source's newest change: check the cursor column "
    "and its zone (`mapsync state show SHEET --sync NAME`).",
)
def watermark_stuck(facts: SyncFacts) -> list[Finding] | None:
    """The source has rows newer than the sync's watermark (`extra["source_newest"]` >
    `extra["cursor_at"]`) although a run that ended in success or partial started after that
    newest change (on the source's clock, via `extra["source_now"]` when known): the run read
    past it and the watermark did not move. Unknown source facts: None."""
    if not _known(facts, "source_newest", "cursor_at"):
        return None
    newest: dt.datetime = facts.extra["source_newest"]
    cursor: dt.datetime = facts.extra["cursor_at"]
    if newest <= cursor:
        return []
    offset = _offset(facts)
    after = [
        r
        for r in ended(facts)
        if r.get("status") in COMPLETED
        and (start := at(r.get("started_at"))) is not None
        and start + offset > newest + dt.timedelta(seconds=1)
    ]
    if not after:
        return []
    behind = newest - cursor
    return [
        finding(
            "watermark_stuck",
            facts,
            f"sync {facts.sync}: the source has changes up to {round(behind.total_seconds(), 3)}s past the "
            f"watermark and {len(after)} run(s) since did not move it",
            numbers={"behind_s": round(behind.total_seconds(), 3), "runs_since": len(after)},
        )
    ]


@monitor(
    "lag",
    severity="warning",
    failure_class="tool",
    runbook="The sync falls behind the source: check its run times and schedule "
    "(`mapsync state show SHEET --sync NAME`).",
)
def lag(facts: SyncFacts) -> list[Finding] | None:
    """The source has rows newer than the watermark and the source's clock is more than
    `monitors.lag` (default 1h) past the watermark (`extra["source_now"]` − `extra["cursor_at"]`).
    Unknown source facts: None."""
    if not _known(facts, "source_newest", "cursor_at", "source_now"):
        return None
    newest: dt.datetime = facts.extra["source_newest"]
    cursor: dt.datetime = facts.extra["cursor_at"]
    source_now: dt.datetime = facts.extra["source_now"]
    if newest <= cursor:
        return []
    behind = source_now - cursor
    limit = facts.thresholds.lag
    if behind <= limit:
        return []
    return [
        finding(
            "lag",
            facts,
            f"sync {facts.sync}: {round(behind.total_seconds())}s behind the source "
            f"(limit {round(limit.total_seconds())}s)",
            numbers={"lag_s": round(behind.total_seconds(), 3), "limit_s": round(limit.total_seconds(), 3)},
        )
    ]
