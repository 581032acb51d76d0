"""Fakes for the page tests: read and action modules swapped in the page modules, a client as a role."""

from __future__ import annotations

import types
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from mapsync.sheet.export_models import ExportFlagChanges
from mapsync.web import auth, pages, pages_actions, pages_read

EVIL = "<script>alert(1)</script>"
CSRF = "csrf-token-abc"
NOW = "2026-12-04T10:00:00+00:00"


def _fake_readmodel() -> types.ModuleType:
    rm = types.ModuleType("mapsync.web.readmodel")
    last_run = {
        "id": 7,
        "kind": "run",
        "status": "failed",
        "started_at": NOW,
        "finished_at": NOW,
        "duration_s": 42.0,
        "read": 10,
        "written": 8,
        "failed": 2,
    }
    rm.overview = lambda loaded, store: [  # type: ignore[attr-defined]
        {
            "sync": "customers",
            "kind": "erp→shop",
            "last_run": last_run,
            "on_time": False,
            "late_by_s": 600,
            "window_s": 300,
            "backlog": 12,
            "lag_s": 900,
            "open_errors": 2,
            "dead_errors": 1,
            "unmapped": 3,
            "open_alerts": 1,
            "last_reconcile": {"check": "counts", "status": "ok", "at": NOW},
            "paused": None,
            "export": False,
            "requests": [{"id": 5, "kind": "retry", "status": "queued"}],
        },
        {
            "sync": "orders",
            "kind": "shop→erp",
            "last_run": None,
            "on_time": None,
            "late_by_s": None,
            "window_s": None,
            "backlog": None,
            "lag_s": None,
            "open_errors": 0,
            "dead_errors": 0,
            "unmapped": 0,
            "open_alerts": 0,
            "last_reconcile": None,
            "paused": {"by": "bob", "at": NOW, "note": EVIL},
            "export": True,
            "requests": [],
        },
    ]
    rm.runs = lambda loaded, store, sync, limit=50: [{**last_run, "message": EVIL}]  # type: ignore[attr-defined]
    rm.run = lambda loaded, store, run_id: (  # type: ignore[attr-defined]
        None
        if run_id != 7
        else {
            **last_run,
            "sync": "customers",
            "records": [{"key": "C/1", "outcome": "failed", "message": EVIL, "at": NOW}],
        }
    )
    rm.errors = lambda loaded, store, sync=None, include_resolved=False, limit=200: [  # type: ignore[attr-defined]
        {
            "sync": "customers",
            "key": "C/1",
            "field": "email",
            "rule": "required",
            "message": EVIL,
            "attempts": 3,
            "first_seen": NOW,
            "last_seen": NOW,
            "dead": False,
            "resolved_at": None,
            "resolved_by": None,
            "resolved_note": None,
        },
        {
            "sync": "orders",
            "key": "SO-9",
            "field": None,
            "rule": None,
            "message": "ERP said no",
            "attempts": 1,
            "first_seen": NOW,
            "last_seen": NOW,
            "dead": True,
            "resolved_at": None,
            "resolved_by": None,
            "resolved_note": None,
        },
    ]
    rm.trace = lambda loaded, store, sync, key: {"key": key, "ledger": {"dest_id": EVIL}, "attempts": []}  # type: ignore[attr-defined]
    rm.unmapped = lambda loaded, store, sync=None: [  # type: ignore[attr-defined]
        {
            "sync": "customers",
            "field": "country",
            "value": "Deutschland",
            "count": 4,
            "last_seen": NOW,
            "snippet": "lookups:\n  country:\n    Deutschland: DE\n",
        }
    ]
    rm.orders = lambda loaded, store, sync=None: [  # type: ignore[attr-defined]
        {
            "sync": "orders",
            "pending": 2,
            "oldest_pending_s": 120,
            "failed": [{"key": "SO-9", "message": "ERP: customer blocked", "at": NOW}],
            "recent": [{"key": "SO-8", "outcome": "delivered", "at": NOW}],
        }
    ]
    rm.queues = lambda loaded, store: [  # type: ignore[attr-defined]
        {"sync": "customers", "inbox": {"new": 3, "done": 10}, "batches": 1, "oldest_pending_s": 30}
    ]
    rm.requests = lambda loaded, store: [  # type: ignore[attr-defined]
        {
            "id": 5,
            "sync": "customers",
            "kind": "retry",
            "status": "queued",
            "by": "alice",
            "keys": ["C/1"],
            "requested_at": NOW,
        }
    ]
    rm.alerts = lambda loaded, store, include_closed=False, limit=200: [  # type: ignore[attr-defined]
        {
            "id": 3,
            "monitor": "late_run",
            "sync": "customers",
            "severity": "critical",
            "status": "open",
            "message": EVIL,
            "opened_at": NOW,
            "last_seen_at": NOW,
            "acked_by": None,
            "silenced_until": None,
        }
    ]
    rm.reconcile = lambda loaded, store: [  # type: ignore[attr-defined]
        {
            "check": "counts",
            "sync": "customers",
            "latest": {"status": "ok", "at": NOW, "message": "equal"},
            "trend": [{"status": "ok", "at": NOW}, {"status": "failed", "at": NOW}],
        }
    ]
    rm.workers = lambda loaded, store: {  # type: ignore[attr-defined]
        "now": NOW,
        "claims": {},
        "workers": [
            {
                "id": "w1",
                "host": "box",
                "pid": 42,
                "alive": True,
                "heartbeat_age_s": 3,
                "started_at": NOW,
                "owns": ["customers"],
                "running": [],
            }
        ],
    }
    rm.budgets = lambda loaded, store: [{"credential": "erp", "used": 10, "limit": 100}]  # type: ignore[attr-defined]
    rm.audit = lambda loaded, store, sync=None, limit=200: [  # type: ignore[attr-defined]
        {"at": NOW, "user": "alice", "action": "pause", "sync": "orders", "detail": {"note": EVIL}}
    ]
    return rm


class ActionError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _fake_actions(calls: list[tuple[Any, ...]]) -> types.ModuleType:
    act = types.ModuleType("mapsync.web.actions")
    act.ActionError = ActionError  # type: ignore[attr-defined]

    def record(name: str, answer: dict[str, Any]) -> Any:
        def action(loaded: Any, store: Any, who: auth.Principal, *args: Any) -> dict[str, Any]:
            if args and args[0] == "nosuch":
                raise ActionError(404, "unknown sync nosuch")
            calls.append((name, who.user, *args))
            return answer

        return action

    for name in ("pause", "resume", "resolve", "ack_alert", "silence_alert"):
        setattr(act, name, record(name, {"ok": True, "resolved": 1}))
    for name in ("run_now", "retry", "reexport"):
        setattr(act, name, record(name, {"request": 11}))
    return act


def _loaded() -> Any:
    syncs = {
        "customers": types.SimpleNamespace(changes=None),
        "orders": types.SimpleNamespace(changes=ExportFlagChanges.model_construct()),  # type: ignore[call-arg]
    }
    return types.SimpleNamespace(sheet=types.SimpleNamespace(syncs=syncs), secrets=())


def _client(role: str) -> TestClient:
    app = FastAPI()
    app.include_router(pages.router)
    app.state.loaded = _loaded()
    app.state.store = object()
    who = auth.Principal(user="alice", role=role, csrf=CSRF, via="session")

    def operator() -> auth.Principal:
        if role != "operator":
            from fastapi import HTTPException

            raise HTTPException(status_code=403, detail="operators only")
        return who

    app.dependency_overrides[auth.require_viewer] = lambda: who
    app.dependency_overrides[auth.require_operator] = operator
    return TestClient(app, follow_redirects=False)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    made: list[tuple[Any, ...]] = []
    monkeypatch.setattr(pages_read, "readmodel", _fake_readmodel())
    monkeypatch.setattr(pages_actions, "actions", _fake_actions(made))
    return made


PAGES = [
    "/",
    "/syncs/customers",
    "/runs/7",
    "/errors",
    "/errors?sync=orders&all=true",
    "/errors/customers/C/1",
    "/unmapped",
    "/orders",
    "/queues",
    "/alerts",
    "/alerts?all=true",
    "/reconcile",
    "/workers",
    "/audit",
]
ACTIONS = (
    "pause",
    "resume",
    "run",
    "retry",
    "resolve",
    "reexport",
    "ack",
    "silence",
    "retry-all",
    "resolve-all",
)
