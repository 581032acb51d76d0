"""Event monitors: what the latest run's end says at once (a failure, a guard trip, a refused
credential, a spent call budget). `mapsync.watch` evaluates them right after each run (the
daemon's worker, `mapsync run`) as well as every minute, so their incidents open and clear
without waiting. Each looks at the newest run that ran to an end (success, partial, failed) and
clears on the next one that did not fail.

The specific ones read the run's `reason` (`errors.REASONS`, set where the failure is known);
`failed_run` leaves a failure to the specific monitor that covers it (one alert per condition),
unless that monitor is disabled."""

from __future__ import annotations

import re
from typing import Any

from mapsync import errors
from mapsync.monitors.base import finding, monitor
from mapsync.monitors.facts import SyncFacts, latest_ended
from mapsync.state.data import Finding

# reason → the monitor that covers it
SPECIFIC = {
    errors.REASON_GUARD: "guard_tripped",
    errors.REASON_AUTH: "auth_refused",
    errors.REASON_BUDGET: "budget_exhausted",
}
_CONNECTION = re.compile(r"\bconnection ([A-Za-z_][A-Za-z0-9_.-]*)")


def _failed(facts: SyncFacts) -> dict[str, Any] | None:
    run = latest_ended(facts)
    return run if run is not None and run.get("status") == "failed" else None


def _reason(run: dict[str, Any]) -> str | None:
    why = run.get("reason")
    if why is None and run.get("failure_class") == errors.FailureClass.GUARD:
        return errors.REASON_GUARD  # a run recorded before reasons were
    return str(why) if why else None


def connection_of(facts: SyncFacts, run: dict[str, Any]) -> str:
    """The connection a failure names (`connection NAME` in its message), else the sync's end of
    the run's failure class (source or destination). A name only, never a value."""
    found = _CONNECTION.search(str(run.get("message") or ""))
    names = {facts.cfg.from_.connection, facts.cfg.to.connection}
    if found is not None and found.group(1).rstrip(".:") in names:
        return found.group(1).rstrip(".:")
    if run.get("failure_class") == errors.FailureClass.SOURCE:
        return facts.cfg.from_.connection
    return facts.cfg.to.connection


def _detail(facts: SyncFacts, run: dict[str, Any]) -> str:
    """The run's own message only when the sheet allows record values in alerts (a driver's
    error may quote one); else where to read it."""
    if facts.include_values and run.get("message"):
        return ": " + str(run["message"]).splitlines()[0][:300]
    return f" (see `mapsync status` for the sync {facts.sync})"


@monitor(
    "failed_run",
    severity="critical",
    failure_class="tool",
    runbook="Read the failure: `mapsync status SHEET --sync NAME`; the daemon retries with backoff, "
    "`mapsync run SHEET --sync NAME` tries at once.",
)
def failed_run(facts: SyncFacts) -> list[Finding] | None:
    """The latest run that ended failed. Its failure class is the run's (source, destination:
    the system owner's; tool, config, state, lease, unseeded: ours). A failure whose reason a
    specific monitor covers (guard, auth, budget) is left to that one unless it is disabled.
    Clears on the next run that succeeds (or ends partial)."""
    run = _failed(facts)
    if run is None:
        return []
    why = _reason(run)
    covered = SPECIFIC.get(why or "")
    if covered is not None and covered not in facts.thresholds.disabled:
        return []
    cls = str(run.get("failure_class") or errors.FailureClass.TOOL)
    because = f", {why}" if why else ""
    return [
        finding(
            "failed_run",
            facts,
            f"sync {facts.sync}: run {run.get('id')} ({run.get('kind')}) failed ({cls}{because})"
            + _detail(facts, run),
            numbers={"run_id": run.get("id"), "kind": run.get("kind"), "reason": why},
            failure_class=cls,
        )
    ]


def _specific(facts: SyncFacts, name: str, reason: str, what: str, **kw: Any) -> list[Finding]:
    run = _failed(facts)
    if run is None or _reason(run) != reason:
        return []
    connection = connection_of(facts, run)
    subject = connection if kw.pop("by_connection", False) else ""
    return [
        finding(
            name,
            facts,
            f"sync {facts.sync}: run {run.get('id')} failed: {what.format(connection=connection)}",
            numbers={"run_id": run.get("id"), "connection": connection},
            subject=subject,
            **kw,
        )
    ]


@monitor(
    "guard_tripped",
    severity="critical",
    failure_class="source",
    runbook="The source lost many rows at once: check it; if the deletes are real run "
    "`mapsync run SHEET --sync NAME --force-deletes` (or raise `deletes.max_delete_ratio`).",
)
def guard_tripped(facts: SyncFacts) -> list[Finding] | None:
    """The latest run that ended was refused by the mass-delete guard (nothing was deleted).
    Clears on the next run that does not fail."""
    return _specific(facts, "guard_tripped", errors.REASON_GUARD, "the mass-delete guard refused its deletes")


@monitor(
    "auth_refused",
    severity="critical",
    failure_class="destination",
    runbook="Renew or correct the credential of the connection named (its `${VAR}` in the environment), "
    "then `mapsync check SHEET`.",
)
def auth_refused(facts: SyncFacts) -> list[Finding] | None:
    """The latest run that ended failed because a credential was refused (HTTP 401/403/407, a
    database login refused). Subject: the connection's name (never the credential). Its failure
    class is the run's (the source's or the destination's owner renews it)."""
    run = _failed(facts)
    cls = str(run.get("failure_class") or "destination") if run is not None else "destination"
    return _specific(
        facts,
        "auth_refused",
        errors.REASON_AUTH,
        "connection {connection} refused the credential",
        by_connection=True,
        failure_class=cls,
    )


@monitor(
    "budget_exhausted",
    severity="warning",
    failure_class="destination",
    runbook="The API's call budget ran out (rate limited longer than a run waits): lower the sync's "
    "frequency or raise the connection's `limits`; `mapsync check SHEET` shows what is left.",
)
def budget_exhausted(facts: SyncFacts) -> list[Finding] | None:
    """The latest run that ended failed because the call budget ran out (the server kept
    answering HTTP 429, or asked to wait longer than a run waits). Subject: the connection."""
    return _specific(
        facts,
        "budget_exhausted",
        errors.REASON_BUDGET,
        "the call budget of connection {connection} ran out",
        by_connection=True,
    )
