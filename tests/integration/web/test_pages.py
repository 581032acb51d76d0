"""The dashboard pages (mapsync.web.pages): every page renders for a viewer, the action buttons only
for an operator, forms carry the CSRF token, values are escaped, form posts redirect with a flash.

The read and action functions are faked here (`sys.modules`), so the pages are tested alone; the
last test renders against the real `mapsync.web.readmodel` once it exists.
"""

from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from mapsync.sheet.export_models import ExportFlagChanges
from mapsync.web import auth, pages

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
        "orders": types.SimpleNamespace(changes=ExportFlagChanges.model_construct()),
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
    monkeypatch.setitem(__import__("sys").modules, "mapsync.web.readmodel", _fake_readmodel())
    monkeypatch.setitem(__import__("sys").modules, "mapsync.web.actions", _fake_actions(made))
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
ACTIONS = ("pause", "resume", "run", "retry", "resolve", "reexport", "ack", "silence")


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_for_a_viewer_without_action_buttons(calls: list[Any], path: str) -> None:
    page = _client("viewer").get(path)
    assert page.status_code == 200, page.text
    assert "<nav>" in page.text and 'href="/static/app.css"' in page.text
    assert EVIL not in page.text
    assert 'method="post" action="/actions' not in page.text
    assert not re.search(r'data-action="(' + "|".join(ACTIONS) + ')"', page.text)


@pytest.mark.parametrize("path", PAGES)
def test_pages_escape_values(calls: list[Any], path: str) -> None:
    page = _client("operator").get(path)
    assert page.status_code == 200
    assert "<script>alert" not in page.text


def test_operator_sees_every_action_and_each_form_carries_the_csrf_token(calls: list[Any]) -> None:
    client = _client("operator")
    seen: set[str] = set()
    for path in PAGES:
        html = client.get(path).text
        seen |= set(re.findall(r'data-action="(\w+)"', html))
        for form in re.findall(r'<form method="post".*?</form>', html, flags=re.S):
            assert f'name="csrf" value="{CSRF}"' in form, form
        assert f'data-csrf="{CSRF}"' in html
    assert seen == set(ACTIONS)


def test_overview_shows_states_hooks_and_numbers(calls: list[Any]) -> None:
    html = _client("operator").get("/").text
    assert 'id="sync-customers"' in html and 'data-sync="customers"' in html
    assert 'class="state-failing"' in html and 'class="state-paused"' in html
    assert "late by 10m 00s" in html and "15m 00s" in html  # late_by_s and lag_s
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # the pause note, escaped


def test_errors_rows_have_key_hooks_and_unmapped_shows_the_snippet(calls: list[Any]) -> None:
    client = _client("operator")
    html = client.get("/errors").text
    assert 'data-sync="customers" data-key="C/1"' in html
    assert 'formaction="/actions/orders/orders/reexport"' in html  # orders is an export sync
    assert 'formaction="/actions/orders/customers/reexport"' not in html
    assert "Deutschland: DE" in client.get("/unmapped").text
    orders = client.get("/orders").text
    assert "ERP: customer blocked" in orders and 'data-key="SO-9"' in orders


def test_unknown_run_and_sync_are_404(calls: list[Any]) -> None:
    client = _client("viewer")
    assert client.get("/runs/99").status_code == 404
    assert client.get("/syncs/nosuch").status_code == 404


def test_form_posts_redirect_back_with_a_flash(calls: list[Any]) -> None:
    client = _client("operator")
    answer = client.post("/actions/errors/customers/retry", data={"csrf": CSRF, "key": ["C/1", "C/2"]})
    assert answer.status_code == 303 and answer.headers["location"] == "/errors?sync=customers"
    assert calls == [("retry", "alice", "customers", ["C/1", "C/2"])]
    page = client.get("/errors?sync=customers")
    assert re.search(
        r'<div id="flash" class="flash ok"[^>]*>Retry of 2 record\(s\) queued \(request 11\)', page.text
    )
    assert "mapsync_flash" not in client.cookies  # read once
    assert 'id="flash"' not in client.get("/errors").text


@pytest.mark.parametrize(
    ("path", "data", "call"),
    [
        ("/actions/syncs/customers/pause", {"note": "deploy"}, ("pause", "alice", "customers", "deploy")),
        ("/actions/syncs/customers/resume", {}, ("resume", "alice", "customers")),
        ("/actions/syncs/customers/run", {"kind": "overlap"}, ("run_now", "alice", "customers", "overlap")),
        (
            "/actions/errors/customers/resolve",
            {"key": "C/1", "note": "fixed"},
            ("resolve", "alice", "customers", ["C/1"], "fixed"),
        ),
        ("/actions/orders/orders/reexport", {}, ("reexport", "alice", "orders", None)),
        ("/actions/alerts/3/ack", {}, ("ack_alert", "alice", 3)),
        ("/actions/alerts/3/silence", {"for": "4h"}, ("silence_alert", "alice", 3, "4h")),
    ],
)
def test_each_action_calls_its_function(
    calls: list[Any], path: str, data: dict[str, str], call: tuple[Any, ...]
) -> None:
    answer = _client("operator").post(path, data={"csrf": CSRF, **data})
    assert answer.status_code == 303
    assert calls == [call]


def test_refusals_flash_an_error_and_act_on_nothing(calls: list[Any]) -> None:
    client = _client("operator")
    assert (
        client.post("/actions/errors/customers/resolve", data={"csrf": CSRF, "key": "C/1"}).status_code == 303
    )
    assert client.post("/actions/errors/customers/retry", data={"csrf": CSRF}).status_code == 303
    assert calls == []
    answer = client.post("/actions/syncs/nosuch/pause", data={"csrf": CSRF, "next": "//evil.example/"})
    assert answer.headers["location"] == "/"  # never an off-site redirect
    assert "unknown sync nosuch" in client.get("/").text
    assert _client("viewer").post("/actions/syncs/customers/pause", data={"csrf": CSRF}).status_code == 403
    assert calls == []


def test_static_files_are_served_and_nothing_else() -> None:
    client = _client("viewer")
    assert client.get("/static/htmx.min.js").status_code == 200
    css = client.get("/static/app.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert client.get("/static/..%2Fpages.py").status_code == 404
    assert client.get("/static/htmx.LICENSE").status_code == 404


def test_templates_hold_no_inline_script_or_style() -> None:
    folder = Path(pages.__file__).parent / "templates"
    for template in folder.glob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), template.name
        assert "<style" not in text and " style=" not in text, template.name
        assert not re.search(r"\son[a-z]+=", text), template.name  # no onclick= handlers
        assert "http://" not in text and "https://" not in text, template.name  # no CDN


REAL_SHEET = """
version: 1
connections:
  erp: {url: "sqlite:///erp.db"}
  shop: {url: "sqlite:///shop.db"}
state: {url: "sqlite:///state.db"}
syncs:
  customers:
    from: {connection: erp, table: customers}
    to: {connection: shop, table: web_customers}
    key: {from: id, to: ref}
    changes: {method: watermark, column: changed_at, lag: 0s}
    fields:
      name: name
"""


def test_pages_render_over_the_real_readmodel_and_store(tmp_path: Path) -> None:
    """With h-api's read functions merged: every page renders over a real sheet and SQLite store."""
    pytest.importorskip("mapsync.web.readmodel", reason="mapsync.web.readmodel is not merged yet")
    from mapsync.sheet.loader import load
    from mapsync.state.store import StateStore

    (tmp_path / "sheet.yaml").write_text(REAL_SHEET)
    loaded = load(tmp_path / "sheet.yaml")
    store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)
    store.pause("customers", "bob", EVIL)
    client = _client("operator")
    client.app.state.loaded = loaded  # type: ignore[attr-defined]
    client.app.state.store = store  # type: ignore[attr-defined]
    for path in [p for p in PAGES if p not in ("/runs/7",) and "orders" not in p]:
        page = client.get(path)
        assert page.status_code == 200, (path, page.text)
        assert "<script>alert" not in page.text
    overview = client.get("/").text
    assert 'id="sync-customers"' in overview and 'class="state-paused"' in overview
    assert client.get("/runs/999").status_code == 404


def test_login_template_has_the_hooks_and_escapes() -> None:
    """`login.html` for h-auth's GET /login: `#login` with user/password/next, escaped values."""
    from mapsync.web.templating import templates

    html = templates.get_template("login.html").render(next="/errors", error=EVIL, user=EVIL)
    assert '<form id="login" method="post" action="/login">' in html
    assert 'name="user"' in html and 'name="password" type="password"' in html
    assert 'type="submit"' in html and 'name="next" value="/errors"' in html
    assert "<script>alert" not in html and 'id="flash"' in html


def test_a_forged_flash_cookie_is_escaped_and_a_broken_one_ignored(calls: list[Any]) -> None:
    import base64
    import json

    client = _client("viewer")
    forged = base64.urlsafe_b64encode(json.dumps({"kind": "<b>", "text": EVIL}).encode()).decode()
    client.cookies.set("mapsync_flash", forged)
    html = client.get("/").text
    assert '<div id="flash" class="flash ok"' in html and "&lt;script&gt;" in html and EVIL not in html
    client.cookies.set("mapsync_flash", "%%%not-base64")
    assert client.get("/").status_code == 200


def test_the_flash_cookie_follows_the_sheets_secure_cookies(calls: list[Any]) -> None:
    client = _client("operator")
    client.app.state.loaded.sheet.web = types.SimpleNamespace(secure_cookies=True)  # type: ignore[attr-defined]
    answer = client.post("/actions/syncs/customers/resume", data={"csrf": CSRF})
    cookie = answer.headers["set-cookie"].lower()
    assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    client.app.state.loaded.sheet.web = types.SimpleNamespace(secure_cookies=False)  # type: ignore[attr-defined]
    answer = client.post("/actions/syncs/customers/resume", data={"csrf": CSRF})
    assert "secure" not in answer.headers["set-cookie"].lower()
