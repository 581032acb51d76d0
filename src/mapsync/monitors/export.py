"""Monitors of the transaction export (`changes: {method: export_flag}`), over the facts
`watch_export` gathers into `SyncFacts.extra` (a key that is absent is unknown: the monitor that
needs it cannot tell):

- `export_pickup`: transactions not picked up within `monitors.export_pickup` of their creation
  (needs `changes.created`);
- `export_failed`: one incident per failed import (an open record error of the export sync), so
  a worker fixes the data and re-exports it; it resolves once the transaction is delivered.

An ERP's message and the transaction's key are record data: a finding quotes them only when the
sheet's `alerts.include_values` allows (as `failed_run` quotes a run's message); otherwise its
subject is an opaque tag of the failure and the message says where to read it."""

from __future__ import annotations

import hashlib
from typing import Any

from mapsync.monitors.base import finding, monitor
from mapsync.monitors.facts import SyncFacts
from mapsync.sheet.export_models import ExportFlagChanges
from mapsync.state.data import Finding

MAX_FAILED = 20  # failed imports alerted one by one; the rest are one summary incident
MORE = "(more)"  # the summary's subject
SAMPLE = 1000  # the oldest pending creation times gathered (watch_export): the late ones among them


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def is_export(facts: SyncFacts) -> bool:
    return isinstance(facts.cfg.changes, ExportFlagChanges)


@monitor(
    "export_pickup",
    severity="warning",
    failure_class="tool",
    runbook="is the export running (`mapsync status SHEET --sync NAME`)? a paused, failing or unscheduled "
    "sync leaves transactions waiting; `mapsync run SHEET --sync NAME` picks them up now",
)
def export_pickup(facts: SyncFacts) -> list[Finding] | None:
    """Transactions still pending (flag not set, not marked failed) longer than
    `monitors.export_pickup` (default 15m) after their creation (`changes.created`, on the source's
    clock). Without `changes.created`, or with the source away: cannot tell. Not while the sync
    is paused (the operator stopped the pickup). Without a `status` column, a transaction refused
    under `on_failure: retry` stays pending and counts here too."""
    if not is_export(facts) or facts.paused:
        return []
    changes = facts.cfg.changes
    assert isinstance(changes, ExportFlagChanges)
    if changes.created is None:
        return None
    created = facts.extra.get("export_created")
    now = facts.extra.get("export_now")
    if created is None or now is None:
        return None
    limit = facts.thresholds.export_pickup
    late = [c for c in created if now - c > limit]
    if not late:
        return []
    oldest = (now - late[0]).total_seconds()
    many = f"{len(late)}+" if len(created) >= SAMPLE and len(late) == len(created) else str(len(late))
    return [
        finding(
            "export_pickup",
            facts,
            f"sync {facts.sync}: {many} transaction(s) not picked up within "
            f"{_age(limit.total_seconds())} of their creation (oldest {_age(oldest)} old; "
            f"{facts.extra.get('export_pending', '?')} pending in all)",
            numbers={
                "late": len(late),
                "oldest_s": round(oldest, 1),
                "pending": facts.extra.get("export_pending"),
                "limit_s": round(limit.total_seconds(), 3),
            },
        )
    ]


def _tag(facts: SyncFacts, failure: dict[str, Any]) -> str:
    """An opaque, stable name of one failure (the key itself is record data)."""
    seed = f"{facts.sync}\0{failure['key']}\0{failure.get('first_seen')}"
    return "import-" + hashlib.sha256(seed.encode()).hexdigest()[:12]


@monitor(
    "export_failed",
    severity="warning",
    failure_class="destination",
    runbook="read the destination's message (`mapsync errors SHEET --sync NAME`), fix the transaction's "
    "data at the source, then `mapsync reexport SHEET --sync NAME KEY` (or `--failed` for all)",
)
def export_failed(facts: SyncFacts) -> list[Finding] | None:
    """One incident per failed import of an export sync (an open record error: the destination or
    the mapping refused the transaction), carrying the destination's message when
    `alerts.include_values` allows (class `destination`, or `config` when the mapping refused it);
    at most 20, the rest summed up in one more (subject `(more)`).
    Each resolves when its transaction is delivered (its record error resolved)."""
    if not is_export(facts):
        return []
    failures: list[dict[str, Any]] | None = facts.extra.get("export_failures")
    if failures is None:
        return None
    total = max(int(facts.extra.get("export_failures_total") or 0), len(failures))
    out = []
    for f in failures[:MAX_FAILED]:
        dead = " (tried its max_attempts: automatic retries skip it)" if f.get("dead") else ""
        if facts.include_values:
            message = str(f.get("message") or "").splitlines()[0][:300] if f.get("message") else ""
            text = (
                f"sync {facts.sync}: transaction {f['arg']} failed to import: {message}{dead}; fix it and "
                f"`mapsync reexport SHEET --sync {facts.sync} {f['arg']}`"
            )
            subject = str(f["arg"])
        else:
            text = (
                f"sync {facts.sync}: a transaction failed to import{dead} (attempts {f.get('attempts')}; "
                f"`mapsync errors SHEET --sync {facts.sync}` shows its key and the destination's message); "
                f"fix it and `mapsync reexport SHEET --sync {facts.sync} KEY`"
            )
            subject = _tag(facts, f)
        out.append(
            finding(
                "export_failed",
                facts,
                text,
                subject=subject,
                # the destination refused it (its owner's data rules), or the mapping did (ours)
                failure_class="destination"
                if f.get("rule") in (None, "destination", "on_exists")
                else "config",
                numbers={"attempts": f.get("attempts"), "dead": bool(f.get("dead"))},
            )
        )
    if total > MAX_FAILED:
        rest = total - MAX_FAILED
        out.append(
            finding(
                "export_failed",
                facts,
                f"sync {facts.sync}: {rest} more failed import(s) ({total} in all): "
                f"`mapsync errors SHEET --sync {facts.sync}` lists them; "
                f"`mapsync reexport SHEET --sync {facts.sync} --failed` sends every failed one again",
                subject=MORE,
                numbers={"more": rest, "failed": total},
            )
        )
    return out
