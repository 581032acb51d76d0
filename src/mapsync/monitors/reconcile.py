"""The sheet monitor over reconciliation checks (`mapsync reconcile`, the daemon's scheduled
checks): what each check found last, as the state store keeps it (`store.reconciliation.latest`,
gathered by `watch_environment` into `SheetFacts.extra["reconcile"]`: check → its latest result
row; absent: unknown). It works on those dicts alone (monitors never import the checks)."""

from __future__ import annotations

from typing import Any

from mapsync.monitors.base import finding, monitor
from mapsync.monitors.facts import SheetFacts
from mapsync.state.data import Finding

# the lists of a result, as the message names them
WHAT = {
    "mismatched": "mismatched",
    "missing_source": "missing at the source",
    "missing_dest": "missing at the destination",
    "changed": "changed",
    "missing": "missing from the destination",
    "extra": "extra in the destination",
}
VALUES = 3  # groups quoted (with `alerts.include_values`)


@monitor(
    "reconcile_mismatch",
    severity="warning",
    failure_class="destination",
    runbook="`mapsync reconcile SHEET --check NAME` shows what differs; `--repair` re-sends it and "
    "checks again",
    scope="sheet",
)
def reconcile_mismatch(facts: SheetFacts) -> list[Finding] | None:
    """A reconciliation check whose latest result differs (groups or rows found different,
    missing or extra), is incomplete (ledger entries without a drift digest not compared) or
    could not run. One incident per check (subject: its name),
    resolved when a later result is clean (`ok`, or `repaired`: clean after `--repair`). The
    message holds the check's counts; the values of the first groups and the error's text only
    with `alerts.include_values`."""
    latest: dict[str, dict[str, Any]] | None = facts.extra.get("reconcile")
    if latest is None:
        return None
    values = facts.include_values
    out = []
    for check, row in sorted(latest.items()):
        detail = row.get("detail") or {}
        if row["status"] == "error":
            error = (
                f": {detail.get('error')}"
                if values and detail.get("error")
                else f" (`mapsync reconcile SHEET --check {check}` says why)"
            )
            out.append(
                finding(
                    "reconcile_mismatch",
                    facts,
                    f"check {check} could not run{error}",
                    subject=check,
                    failure_class="tool",
                    numbers={"differences": 0, "compared": 0},
                )
            )
        elif row["status"] == "differs":
            out.append(_differs(facts, check, row, detail, values))
        elif row["status"] == "incomplete":  # nothing found, but not everything compared: not clean
            out.append(_incomplete(facts, check, row, detail))
    return out


def _incomplete(facts: SheetFacts, check: str, row: dict[str, Any], detail: dict[str, Any]) -> Finding:
    undigested = int(detail.get("undigested") or 0)
    sync = detail.get("sync") or "SYNC"
    message = (
        f"check {check}: {undigested} ledger entries have no drift digest and were not compared "
        f"({row['compared']} rows compared, no difference); run `mapsync reconcile SHEET --sync {sync} "
        "--backfill`"
    )
    numbers = {"differences": 0, "compared": row["compared"], "undigested": undigested}
    return finding("reconcile_mismatch", facts, message, subject=check, numbers=numbers)


def _differs(
    facts: SheetFacts, check: str, row: dict[str, Any], detail: dict[str, Any], values: bool
) -> Finding:
    counts: dict[str, int] = detail.get("counts") or {}
    found = ", ".join(f"{n} {WHAT.get(name, name)}" for name, n in counts.items() if n)
    what = "groups" if row.get("kind") == "business" else "rows"
    message = (
        f"check {check}: {row['differences']} difference(s) ({found}) of {row['compared']} {what} compared"
    )
    if values and row.get("kind") == "business":
        shown = [
            f"{'/'.join(g['group'])}: {g['source']} vs {g['dest']}"
            for name in ("mismatched", "missing_dest", "missing_source")
            for g in detail.get(name, [])
        ][:VALUES]
        if shown:
            message += "; " + "; ".join(shown)
    numbers = {"differences": row["differences"], "compared": row["compared"], **counts}
    return finding("reconcile_mismatch", facts, message, subject=check, numbers=numbers)
