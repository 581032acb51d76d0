"""How a run ends other than in success, and what each end leaves in the run history.

`Engine._scoped` (engine.py) decides which end a run meets; these functions write it:

- `stopped`: a graceful stop between batches (the daemon's SIGTERM). The plan's end is not run,
  so the cursors stay at the last committed batch and the next run goes on from there; a follow
  pass that changed nothing leaves no row at all (`discard`), with its cursors put back first
  (`cursors_back`: the next pass reads those rows again and skips them as unchanged);
- `failed`: a run stopped on purpose (a systemic failure, a lost lease, the breaker, a call cut
  at the lease deadline): one redacted message and the failure class, cursor kept;
- `crashed`: an unexpected error (a bug, or Ctrl-C), recorded before the caller re-raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mapsync import errors
from mapsync.records import RunStatus
from mapsync.run_types import RunReport
from mapsync.state.ports import Store

log = logging.getLogger("mapsync.engine")
Redact = Callable[[str], str]


def stopped(store: Store, report: RunReport, done: int, discard: bool) -> RunReport:
    """The run ends `stopped` after `done` committed batches; `discard` (follow mode, nothing
    changed): no row is left, as for an idle pass."""
    report.status = RunStatus.STOPPED
    report.message = f"stopped by a shutdown request after {done} batch(es); the next run goes on from there"
    if discard:
        store.discard_run(report.run_id or 0)
        report.run_id = None
        return report
    store.finish_run(report.run_id or 0, RunStatus.STOPPED, None, report.message)
    log.info(
        "run_stopped",
        extra={"action": "run_stopped", "sync": report.sync, "run_id": report.run_id, "batches": done},
    )
    return report


def cursors_back(store: Store, name: str, cursors: dict[str, Any], run_id: int | None) -> None:
    """Put the sync's cursors back to `cursors` (what they were when the run started)."""
    now = store.cursors(name)
    back = {k: cursors.get(k) for k in now.keys() | cursors.keys() if now.get(k) != cursors.get(k)}
    if back:
        store.set_cursors(name, back, run_id)


def failed(store: Store, report: RunReport, redact: Redact, exc: Exception) -> RunReport:
    """A run stopped on purpose: one message, cursor kept."""
    report.status, report.message = RunStatus.FAILED, redact(str(exc))
    report.failure_class = getattr(exc, "failure_class", "tool")
    why = getattr(exc, "reason", None)
    report.reason = why if isinstance(why, str) and why in errors.REASONS else None
    store.finish_run(
        report.run_id or 0, RunStatus.FAILED, report.failure_class, report.message, reason=report.reason
    )
    log.error(
        "run_failed",
        extra={"action": "run_failed", "sync": report.sync, "run_id": report.run_id, "error": report.message},
    )
    return report


def crashed(store: Store, report: RunReport, redact: Redact, exc: BaseException) -> None:
    """An unexpected error: recorded as a `tool` failure; the caller re-raises."""
    store.finish_run(report.run_id or 0, RunStatus.FAILED, "tool", redact(f"{type(exc).__name__}: {exc}"))


def close_batches(batches: object) -> None:
    """A run's batches left before the end (a generator may hold a read open)."""
    close = getattr(batches, "close", None)
    if callable(close):
        close()


def message(report: RunReport) -> str | None:
    """A finished run's message in the history: source rows gone, a sweep's plan and outcome."""
    parts = [f"{len(report.gone)} source row(s) gone"] if report.gone else []
    return "; ".join(parts + report.notes)[:2000] or None
