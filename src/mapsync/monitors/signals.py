"""Sync monitors over the signals a sync's ends give (gathered by `mapsync.watch_sources` into
`SyncFacts.extra`; a key that is absent is unknown and the monitor that needs it cannot tell):
new unmapped values, capture health (replication slot, triggers, queue table), backlogs, async
batches that never settle, call budgets at zero, and a source that went backwards (a restore).

Messages hold names and counts only: never a record value, a credential or a URL."""

from __future__ import annotations

import datetime as dt
from typing import Any

from mapsync.monitors.base import finding, monitor
from mapsync.monitors.facts import SyncFacts
from mapsync.state.data import Finding

# a source table that lost more than this share of its rows since the reference count went
# backwards (a few deletes are normal; a restore or a truncate is not)
ROWS_DROP_SHARE = 0.1


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


@monitor(
    "unmapped_new",
    severity="warning",
    failure_class="config",
    runbook="`mapsync unmapped SHEET` lists the values; add each to the field's map (or a default): "
    "the blocked records go through on the next run",
)
def unmapped_new(facts: SyncFacts) -> list[Finding] | None:
    """Source values a field's map does not know block records (one incident per field; the
    message names the field and counts, never the values). Clears when none is open."""
    fields: list[dict[str, Any]] | None = facts.extra.get("unmapped")
    if fields is None:
        return None
    out = []
    for f in fields:
        newest = f.get("newest")
        since = f" (newest first seen {newest:%Y-%m-%d %H:%M} UTC)" if isinstance(newest, dt.datetime) else ""
        out.append(
            finding(
                "unmapped_new",
                facts,
                f"sync {facts.sync}: field {f['field']} has {f['values']} unmapped value(s) "
                f"blocking {f['records']} record(s){since}",
                subject=str(f["field"]),
                numbers={"values": f["values"], "records": f["records"]},
            )
        )
    return out


@monitor(
    "capture_health",
    severity="critical",
    failure_class="source",
    runbook="`mapsync check SHEET` shows the capture's state: `mapsync changelog install` for a missing "
    "slot (a lost one: re-install and `mapsync seed --again`), run or remove the sync for retained "
    "WAL, `mapsync triggers install` for missing triggers or queue table, ENABLE a disabled trigger",
)
def capture_health(facts: SyncFacts) -> list[Finding] | None:
    """The change capture no longer captures (or hurts the source): a replication slot retaining
    more WAL than `wal_retained_mb`, a slot missing or lost (log syncs); a queue table missing,
    triggers missing or DISABLED (queue syncs; MariaDB cannot disable a trigger, only drop it).
    One incident per subject (`wal`, `slot`, `queue`, `triggers`)."""
    x = facts.extra
    known = [k for k in ("wal_retained_mb", "slot_state", "queue_table", "triggers") if k in x]
    if not known:
        # a log or queue sync whose capture could not be read: cannot tell; any other has no
        # capture of its own to watch (one moved off log/queue: its incidents clear)
        return None if facts.cfg.changes.method in ("log", "queue") else []
    out = []
    name = facts.sync
    slot_state = x.get("slot_state")
    if slot_state in ("missing", "lost"):
        what = "does not exist" if slot_state == "missing" else "lost WAL it needed (changes are lost)"
        out.append(
            finding("capture_health", facts, f"sync {name}: the replication slot {what}", subject="slot")
        )
    wal = x.get("wal_retained_mb")
    if wal is not None and wal > facts.thresholds.wal_retained_mb:
        out.append(
            finding(
                "capture_health",
                facts,
                f"sync {name}: the replication slot retains {wal:.0f} MB of WAL "
                f"(above {facts.thresholds.wal_retained_mb} MB): the source's disk fills",
                subject="wal",
                numbers={"wal_retained_mb": round(wal, 1)},
            )
        )
    if x.get("queue_table") is False:
        out.append(
            finding(
                "capture_health",
                facts,
                f"sync {name}: the change queue table does not exist (no change is captured)",
                subject="queue",
            )
        )
    triggers = x.get("triggers")
    disabled = int(x.get("triggers_disabled") or 0)
    if triggers in ("missing", "partial") or disabled:
        parts = []
        if triggers in ("missing", "partial"):
            parts.append(f"triggers {triggers}")
        if disabled:
            parts.append(f"{disabled} trigger(s) disabled")
        out.append(
            finding(
                "capture_health",
                facts,
                f"sync {name}: {', '.join(parts)} on the source table (changes are not captured)",
                subject="triggers",
                numbers={"disabled": disabled},
            )
        )
    return out


@monitor(
    "backlog",
    severity="warning",
    failure_class="tool",
    runbook="is the sync running (`mapsync status SHEET`)? a failing or paused sync leaves its queue or "
    "inbox growing; raise `monitors.backlog_rows`/`backlog_age` if the load is expected",
)
def backlog(facts: SyncFacts) -> list[Finding] | None:
    """A change queue or webhook inbox whose pending rows exceed `backlog_rows`, or whose oldest
    pending row is older than `backlog_age`."""
    rows = facts.extra.get("backlog_rows")
    age = facts.extra.get("oldest_pending_s")
    if rows is None and age is None:
        return None
    t = facts.thresholds
    kind = facts.extra.get("backlog_kind", "queue")
    over_rows = rows is not None and rows > t.backlog_rows
    over_age = age is not None and age > t.backlog_age.total_seconds()
    if not (over_rows or over_age):
        return []
    said = [f"{rows} pending row(s)" if rows is not None else "", f"oldest {_age(age)} old" if age else ""]
    limits = f"limits {t.backlog_rows} rows, {_age(t.backlog_age.total_seconds())}"
    return [
        finding(
            "backlog",
            facts,
            f"sync {facts.sync}: {kind} backlog of {', '.join(s for s in said if s)} ({limits})",
            subject=str(kind),
            numbers={"rows": rows, "oldest_s": None if age is None else round(age, 1)},
        )
    ]


@monitor(
    "async_unsettled",
    severity="warning",
    failure_class="destination",
    runbook="the destination has not answered for its asynchronous batches: check the API's job "
    "status; each run polls them again",
)
def async_unsettled(facts: SyncFacts) -> list[Finding] | None:
    """Asynchronous batches (submitted to an API that answers later) not settled after
    `async_unsettled`."""
    created: list[dt.datetime] | None = facts.extra.get("async_created")
    if created is None:
        return None
    limit = facts.thresholds.async_unsettled
    late = [a for a in created if facts.now - a > limit]
    if not late:
        return []
    age = (facts.now - min(late)).total_seconds()
    return [
        finding(
            "async_unsettled",
            facts,
            f"sync {facts.sync}: {len(late)} asynchronous batch(es) unsettled past "
            f"{_age(limit.total_seconds())} (oldest {_age(age)})",
            numbers={"batches": len(late), "oldest_s": round(age, 1)},
        )
    ]


@monitor(
    "budget_low",
    severity="warning",
    failure_class="source",
    runbook="the API's call budget is used up or the server asked for a pause: runs wait until it "
    "refills; lower the load, spread the schedules, or ask the API's owner for more",
)
def budget_low(facts: SyncFacts) -> list[Finding] | None:
    """A connection of the sync whose call budget has no call left in a window, or whose server
    imposed a pause (`Retry-After`, a `RateLimit-Remaining` of 0). One incident per connection
    name (the budget's credential is never named)."""
    budgets: dict[str, dict[str, Any]] | None = facts.extra.get("budgets")
    if budgets is None:
        return None
    out = []
    for conn, b in sorted(budgets.items()):
        why = []
        if b.get("remaining") == 0:
            why.append("no call left in its window")
        if b.get("server_remaining") == 0:
            why.append("the server says 0 calls left")
        if (b.get("blocked_for") or 0) > 0:
            why.append(f"the server asked for a pause of {_age(float(b['blocked_for']))}")
        if why:
            out.append(
                finding(
                    "budget_low",
                    facts,
                    f"sync {facts.sync}: connection {conn}'s call budget is exhausted: {'; '.join(why)}",
                    subject=conn,
                    failure_class=b.get("side", "source"),
                    numbers={
                        "blocked_for_s": b.get("blocked_for"),
                        "server_remaining": b.get("server_remaining"),
                    },
                )
            )
    return out


@monitor(
    "source_regression",
    severity="critical",
    failure_class="source",
    runbook="the source went backwards (restored from a backup, truncated, newest rows deleted): find "
    "out what happened before the next run; after a restore, `mapsync seed --again` re-reads it",
)
def source_regression(facts: SyncFacts) -> list[Finding] | None:
    """The source's newest change time is behind the newest seen before (`source_newest_seen`), or
    its row count fell more than 10% below the reference count (`source_rows_ref`): a restore of
    an older copy, a truncate (RELIABILITY C8). Newest: open until the source passes the newest
    seen again; rows: until the count is back within 10% of the reference. SQL sources only."""
    x = facts.extra
    newest, seen = x.get("source_newest"), x.get("source_newest_seen")
    rows, ref = x.get("source_rows"), x.get("source_rows_ref")
    if (newest is None or seen is None) and (rows is None or ref is None):
        return None
    if x.get("source_newest_unknown") or x.get("source_rows_unknown"):
        return None  # one of its two measures failed this time: its incident stays as it is
    out = []
    if newest is not None and seen is not None and newest < seen:
        out.append(
            finding(
                "source_regression",
                facts,
                f"sync {facts.sync}: the source's newest change went back from {seen:%Y-%m-%d %H:%M:%S} "
                f"to {newest:%Y-%m-%d %H:%M:%S} UTC (a restore, or the newest rows deleted?)",
                subject="newest",
                numbers={"behind_s": round((seen - newest).total_seconds(), 3)},
            )
        )
    if rows is not None and ref is not None and rows < ref * (1 - ROWS_DROP_SHARE):
        out.append(
            finding(
                "source_regression",
                facts,
                f"sync {facts.sync}: the source's rows fell from about {ref} to about {rows} "
                "(a restore or a truncate?)",
                subject="rows",
                numbers={"rows": rows, "before": ref},
            )
        )
    return out
