"""An in-process dashboard app over a real SQLite state store, for the tests of mapsync.web.

`web_world(tmp_path, web=...)` writes a sheet (one tiny sync; a PostgreSQL destination whose DSN
password is a `${VAR}` secret, never connected to), loads it, opens the state store and builds
`mapsync.web.app.create_app`; `client()` is a Starlette TestClient on `https://127.0.0.1` (an
allowed host; https so the Secure session cookie is sent back). Users: `alice` (operator) and
`bob` (viewer) with passwords, `grafana` (viewer) and `robot` (operator) with bearer tokens.

Probe routes (the auth tests' own, beside the real pages and API routes): `GET /api/probe` and
`GET /probe` need a viewer, `POST /api/probe` and `POST /actions/probe` an operator.

Sessions are the SQLite state store's own (`store.sessions`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Form
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from starlette.routing import Route
from starlette.testclient import TestClient

from mapsync.sheet import loader
from mapsync.state.store import StateStore
from mapsync.web import app as web_app
from mapsync.web import auth, passwords

DSN_PW = "dsnC4nary-pw-7731"
GRAFANA_TOKEN = "tokC4nary-grafana-0123456789abcdef"
ROBOT_TOKEN = "tokC4nary-robot-0123456789abcdef01"
PASSWORDS = {"alice": "alice-C4nary-pw-1", "bob": "bob-C4nary-pw-22"}
HASHES = {u: passwords.hash_password(pw, n=1024) for u, pw in PASSWORDS.items()}  # cheap for tests
ENV = {"DSN_PW": DSN_PW, "GRAFANA_TOKEN": GRAFANA_TOKEN, "ROBOT_TOKEN": ROBOT_TOKEN}
BASE = "https://127.0.0.1"

DEFAULT_WEB = f"""
  users:
    alice: {{role: operator, password_hash: "{HASHES["alice"]}"}}
    bob: {{role: viewer, password_hash: "{HASHES["bob"]}"}}
    grafana: {{role: viewer, token: "${{GRAFANA_TOKEN}}"}}
    robot: {{role: operator, token: "${{ROBOT_TOKEN}}"}}
  hosts: [dash.example.com]
  max_body: 2048
  login_attempts: 3
"""


@dataclasses.dataclass
class WebWorld:
    app: FastAPI
    loaded: loader.LoadedSheet
    store: StateStore

    @property
    def sessions(self) -> auth.SessionStore:
        found = self.app.state.auth.sessions
        assert found is not None
        return found  # type: ignore[no-any-return]

    def client(self, **kw: Any) -> TestClient:
        return TestClient(self.app, base_url=kw.pop("base_url", BASE), follow_redirects=False, **kw)

    def login(self, user: str, password: str | None = None) -> tuple[TestClient, str]:
        """A client logged in as `user`, and its session's CSRF token."""
        c = self.client()
        answer = c.post("/login", data={"user": user, "password": password or PASSWORDS[user], "next": "/"})
        assert answer.status_code == 303, answer.text
        found = self.sessions.session(c.cookies[auth.COOKIE])
        assert found is not None
        return c, str(found["csrf"])


def add_probes(app: FastAPI) -> None:
    @app.get("/api/probe")
    def read(who: Annotated[auth.Principal, Depends(auth.require_viewer)]) -> dict[str, str]:
        return {"user": who.user, "role": who.role, "via": who.via}

    @app.post("/api/probe")
    def act(who: Annotated[auth.Principal, Depends(auth.require_operator)]) -> dict[str, str]:
        return {"acted": who.user}

    @app.get("/probe")
    def page(who: Annotated[auth.Principal, Depends(auth.require_viewer)]) -> HTMLResponse:
        return HTMLResponse(f"<p>hello {who.user}</p>")

    @app.post("/actions/probe")
    def form_act(
        who: Annotated[auth.Principal, Depends(auth.require_operator)], note: Annotated[str, Form()] = ""
    ) -> HTMLResponse:
        return HTMLResponse(f"<p>done by {who.user}{': ' + note if note else ''}</p>")


def web_world(
    tmp_path: Path, web: str | None = DEFAULT_WEB, *, host: str = "127.0.0.1", hook: bool = False
) -> Iterator[WebWorld]:
    """The world (a generator: the store closes after the test); `hook`: the sync takes webhooks."""
    sheet = tmp_path / "sheet.yaml"
    web_block = f"web:{web}" if web is not None else ""
    changes = (
        '{method: inbox}\n    deletes: {policy: hard}\n    webhook: {secret: "whsec-0123456789abcdef"}'
        if hook
        else "{method: full}"
    )
    sheet.write_text(f"""
version: 1
connections:
  erp: {{url: "sqlite:///erp.db"}}
  portal: {{url: "postgresql://sync:${{DSN_PW}}@127.0.0.1:1/portal"}}
syncs:
  items:
    from: {{connection: erp, table: items}}
    to: {{connection: portal, table: products}}
    key: {{from: sku, to: sku}}
    fields: {{nm: descr}}
    changes: {changes}
{web_block}
""")
    loaded = loader.load(sheet, env=ENV)
    store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)
    try:
        app = web_app.create_app(loaded, store, host=host)
        add_probes(app)
        yield WebWorld(app, loaded, store)
    finally:
        store.close()


def all_routes(app: Any, prefix: str = "") -> list[tuple[str, set[str]]]:
    """(path, methods) of every route of `app`, those of included routers too: FastAPI keeps an
    included router as one entry of `app.routes` (`_IncludedRouter`), so iterating `app.routes`
    alone misses the API's and the pages' routes."""
    out: list[tuple[str, set[str]]] = []
    for route in app.routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            out += all_routes(inner, prefix + route.include_context.prefix)
        elif isinstance(route, APIRoute | Route):
            out.append((prefix + route.path, set(route.methods or ())))
    return out
