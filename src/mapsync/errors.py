"""Errors grouped by what the caller can do about them."""

from __future__ import annotations

import enum
from typing import Any


class FailureClass(enum.StrEnum):
    """Why a run failed: `mapsync_runs.failure_class`, `RunReport.failure_class`, `status --json`."""

    CONFIG = "config"  # the sheet does not match the databases (a dropped table or column …)
    SOURCE = "source"  # reading the source failed (unreachable, refused, timed out)
    DESTINATION = "destination"  # writing the destination failed
    STATE = "state"  # the state store failed (locked, full, read-only, cut, corrupt)
    LEASE = "lease"  # another run holds the sync's lease
    UNSEEDED = "unseeded"  # `run` before `seed` finished
    GUARD = "guard"  # the mass-delete guard refused the run
    TOOL = "tool"  # mapsync itself (a bug), or the process died mid-run


class MapsyncError(Exception):
    """Base of every error mapsync raises on purpose."""


class ConfigError(MapsyncError):
    """The sheet or the command line is wrong: fix the input (exit code 2)."""

    def __init__(
        self, message: str, problems: list[str] | None = None, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.problems = problems or []
        # each problem as {file, line, column, path, message} (None where not known), for --json
        self.details = details or []

    def __str__(self) -> str:
        head = super().__str__()
        if not self.problems:
            return head
        return head + "\n" + "\n".join(f"  {p}" for p in self.problems)


class StateError(MapsyncError):
    """The state store is missing, unreadable, locked or from a newer version.

    `reason` says what happened (see `state.faults`: locked, full, readonly, unreachable, cut,
    corrupt, conflict; or `unseeded` for a sync that has no finished seed)."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason

    @property
    def failure_class(self) -> str:
        return FailureClass.UNSEEDED if self.reason == "unseeded" else FailureClass.STATE


class UsageError(ConfigError):
    """The command asks for something the sync's state does not allow (`seed` of a seeded sync
    without `--again`): no run is recorded for it."""


class LeaseHeld(MapsyncError):
    """Another process runs this sync right now."""

    failure_class = FailureClass.LEASE


class LeaseLost(MapsyncError):
    """Our lease was taken over (we paused too long); our results must be discarded."""


class IdentityChanged(MapsyncError):
    """The sync's state was seeded as another sync (its source, destination, key or fields
    differ from the sheet's: `sheet/identity.py`); the daemon does not run it under this sheet."""

    failure_class = FailureClass.CONFIG


class SlotTaken(MapsyncError):
    """A scheduled slot (sync, slot, scheduled time) was run already, by this or another process:
    not a failure, nothing is recorded for the second try (the state store's unique slot index)."""

    def __init__(self, sync: str, slot: str, scheduled_at: str, run_id: int | None) -> None:
        super().__init__(f"sync {sync}: the {slot} slot of {scheduled_at} was already run (run id {run_id})")
        self.sync, self.slot, self.scheduled_at, self.run_id = sync, slot, scheduled_at, run_id


class SlotGone(SlotTaken):
    """A scheduled slot whose run could not start because its lease was taken over or expired
    first (a process frozen in between: the worker that took over counts that slot): like
    SlotTaken, neither a run nor a failure."""

    def __init__(self, sync: str, slot: str, scheduled_at: str) -> None:
        super().__init__(sync, slot, scheduled_at, None)
        self.args = (
            f"sync {sync}: its lease was taken over or expired before the run of the {slot} slot of "
            f"{scheduled_at} could start; nothing recorded",
        )


# why a failed run failed, finer than its class (`mapsync_runs.reason`, the event monitors): a
# small vocabulary, set on the error where the failure is known
REASON_AUTH = "auth"  # a credential was refused (HTTP 401/403/407, a database login refused)
REASON_BUDGET = "budget"  # the call budget ran out (rate-limited past what a run waits for)
REASON_GUARD = "guard"  # the mass-delete guard refused the run
REASON_BREAKER = "breaker"  # the destination's breaker tripped
REASON_DEADLINE = "deadline"  # a call was cut at the lease's deadline
REASONS = (REASON_AUTH, REASON_BUDGET, REASON_GUARD, REASON_BREAKER, REASON_DEADLINE)


class TransientError(MapsyncError):
    """Worth retrying later: connection lost, timeout, deadlock, rate limit."""

    def __init__(self, message: str, failure_class: str = "destination", reason: str | None = None) -> None:
        super().__init__(message)
        self.failure_class = failure_class
        self.reason = reason  # one of REASONS, or None


class PermanentError(MapsyncError):
    """Stops the run and keeps the cursor: the failure hits every record (systemic)."""

    def __init__(self, message: str, failure_class: str = "destination", reason: str | None = None) -> None:
        super().__init__(message)
        self.failure_class = failure_class
        self.reason = reason  # one of REASONS, or None


class RecordRejected(MapsyncError):
    """One record cannot be translated or written; it becomes a record error."""

    def __init__(
        self, message: str, field: str | None = None, rule: str | None = None, value: Any = None
    ) -> None:
        super().__init__(message)
        self.field = field
        self.rule = rule
        self.value = value  # the value a translating rule could not place (an unmapped value)
