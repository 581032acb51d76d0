"""Pydantic models of the JSON API's answers and bodies (its OpenAPI schema). Answers name the
fields the dashboard relies on and allow more (`extra="allow"`): the read functions may grow."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

MAX_NOTE = 2000  # characters of an operator's note (pause, resolve)
Id = Annotated[int, Path(ge=1, le=2**63 - 1, description="a stored id (a positive 64-bit integer)")]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Run(_Open):
    id: int
    sync: str | None = None
    kind: str | None = None
    trigger: str | None = None
    status: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_s: float | None = None
    read: int = 0
    written: int = 0
    failed: int = 0
    message: str | None = None


class RunDetail(Run):
    records: list[dict[str, Any]] = []


class Pause(_Open):
    by: str
    at: str
    note: str | None = None


class Check(_Open):
    check: str
    status: str | None = None
    at: str | None = None


class Request(_Open):
    id: int
    sync: str
    kind: str
    requested_by: str
    requested_at: str
    status: str
    run_id: int | None = None
    message: str | None = None
    keys: list[str] | None = None
    note: str | None = None


class SyncOverview(_Open):
    sync: str
    kind: str
    last_run: Run | None = None
    on_time: bool | None = None
    late_by_s: float | None = None
    start_within_s: float | None = None
    window_s: float | None = None
    backlog: float | None = None
    lag_s: float | None = None
    open_errors: int
    dead_errors: int
    unmapped: int
    open_alerts: int
    last_reconcile: Check | None = None
    paused: Pause | None = None
    export: bool
    requests: list[Request] = []


class RecordError(_Open):
    sync: str
    key: str
    field: str | None = None
    rule: str | None = None
    message: str | None = None
    attempts: int
    first_seen: str | None = None
    last_seen: str | None = None
    dead: bool
    resolved_at: str | None = None
    resolved_by: str | None = None
    resolved_note: str | None = None


class Trace(_Open):
    sync: str
    status: str | None = None


class Unmapped(_Open):
    sync: str
    field: str
    rule: str
    value: str
    count: int
    snippet: str
    suggestions: list[str] = []


class Failed(_Open):
    key: str
    message: str | None = None
    at: str | None = None


class Touched(_Open):
    key: str
    outcome: str | None = None
    message: str | None = None
    at: str | None = None
    run_id: int | None = None


class Orders(_Open):
    sync: str
    pending: float | None = None
    oldest_pending_s: float | None = None
    failed: list[Failed] = []
    recent: list[Touched] = []


class Queue(_Open):
    sync: str
    inbox: dict[str, int]
    async_unfinished: int
    async_: dict[str, int] = Field(default_factory=dict, alias="async")
    async_oldest: str | None = None
    backlog: float | None = None
    oldest_pending_s: float | None = None


class Alert(_Open):
    id: int
    monitor: str
    sync: str | None = None
    severity: str
    status: str
    message: str
    opened_at: str
    acked_by: str | None = None
    silenced_until: str | None = None


class Reconcile(_Open):
    check: str
    sync: str | None = None
    status: str | None = None
    at: str | None = None
    trend: list[dict[str, Any]] = []


class Workers(_Open):
    pass


class BudgetInfo(_Open):
    connection: str
    calls_last_hour: int
    blocked_until: str | None = None
    server_remaining: int | None = None
    server_reset: str | None = None


class AuditRow(_Open):
    user: str
    action: str
    sync: str | None = None


class Queued(BaseModel):
    request: int


class Done(_Open):
    pass


class ErrorAnswer(BaseModel):
    error: str


class PauseBody(_Body):
    note: str | None = Field(default=None, max_length=MAX_NOTE)


class RunBody(_Body):
    kind: str = Field(default="run", pattern="^(run|overlap)$")


class KeysBody(_Body):
    keys: list[str] | None = Field(default=None, max_length=10_000)


class ResolveBody(KeysBody):
    note: str = Field(min_length=1, max_length=MAX_NOTE)


class SilenceBody(_Body):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    for_: str = Field(alias="for", min_length=1, max_length=40)
